"""Run many seeded simulation schedules and report schedules/second.

    scripts/sim --seeds 10000 [--start 0] [--chaos-ticks 400]
    (= .venv/bin/python tests/sim/run_sim.py ...)

Exits non-zero on the first failing seed (printing how to rerun it), else prints totals.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_schedule import CHAOS_TICKS, SafetyViolation, run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--chaos-ticks", type=int, default=CHAOS_TICKS)
    args = parser.parse_args(argv)
    totals: dict[str, int] = {}
    faults: Counter[str] = Counter()
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        try:
            outcome = run_seed(seed, args.chaos_ticks)
        except SafetyViolation as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            return 1
        for name in (
            "ticks",
            "proposals",
            "committed",
            "reads_answered",
            "crashes",
            "snapshots_installed",
            "conf_changes",
            "leaders",
        ):
            totals[name] = totals.get(name, 0) + getattr(outcome, name)
        faults.update(outcome.faults)
    elapsed_s = time.perf_counter() - started
    print(
        f"{args.seeds} schedules (seeds {args.start}..{args.start + args.seeds - 1}, "
        f"{args.chaos_ticks} chaos ticks each) passed in {elapsed_s:.1f} s: "
        f"{args.seeds / elapsed_s:.1f} schedules/s"
    )
    print("totals: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    print("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
