"""How fast the checker is on simulated histories (a measurement, never a test).

    python -m tests.support.checker.bench [--operations 1000] [--processes 5] [--seed 1]

One key, every model: a linearizable history, then the same with one read corrupted (the
search must then exhaust everything before that read), each without and with info/fail
operations. Prints the verdict, search steps and wall time of check_events.
"""

from __future__ import annotations

import argparse
import random
import time

from .check import check_events
from .models import MODELS
from .simulate import corrupt_read, simulate


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.checker.bench")
    parser.add_argument("--operations", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--info-percent", type=int, default=3)
    parser.add_argument(
        "--unique-writes", action="store_true", help="a register writes fresh values"
    )
    args = parser.parse_args()
    print(f"{args.operations} operations, {args.processes} processes, one key, seed {args.seed}")
    print(f"{'model':12} {'history':22} {'verdict':8} {'steps':>9} {'seconds':>8}")
    for name in sorted(MODELS):
        for info_percent in (0, args.info_percent):
            sim = simulate(
                random.Random(args.seed),
                name,
                processes=args.processes,
                operations=args.operations,
                fail_percent=info_percent,
                info_percent=info_percent,
                unique_writes=args.unique_writes,
            )
            corrupted = corrupt_read(sim.events, name, args.operations // 2)
            for label, events in (("linearizable", sim.events), ("one read corrupted", corrupted)):
                if events is None:
                    continue
                start = time.perf_counter()
                verdict = check_events(events, name)
                elapsed_s = time.perf_counter() - start
                steps = sum(k.steps for k in verdict.keys)
                history = f"{label}{f' +{info_percent}% info' if info_percent else ''}"
                print(
                    f"{name:12} {history:22} {verdict.result.value:8} {steps:>9} {elapsed_s:>8.3f}"
                )


if __name__ == "__main__":
    main()
