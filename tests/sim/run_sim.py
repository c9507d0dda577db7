"""Run many seeded simulation schedules and report schedules/second.

    scripts/sim --seeds 10000 [--start 0] [--chaos-ticks 400] [--keep-going]
    (= .venv/bin/python tests/sim/run_sim.py ...)

Exits non-zero on the first failing seed (printing how to rerun it), else prints totals. With
--keep-going it runs every seed, prints each failure as it happens and lists the failing seeds
at the end (exit status 1 if there were any).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_schedule import CHAOS_TICKS, SafetyViolation, run_seed

# With --keep-going, a progress line after every this many seeds (long runs go on for hours).
PROGRESS_SEEDS = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--chaos-ticks", type=int, default=CHAOS_TICKS)
    parser.add_argument("--keep-going", action="store_true", help="run past failing seeds")
    args = parser.parse_args(argv)
    failed: list[int] = []
    totals: dict[str, int] = {}
    faults: Counter[str] = Counter()
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        if args.keep_going and seed > args.start and (seed - args.start) % PROGRESS_SEEDS == 0:
            took_s = time.perf_counter() - started
            print(
                f"progress: {seed - args.start} seeds in {took_s:.0f} s, failed {failed}",
                file=sys.stderr,
                flush=True,
            )
        try:
            outcome = run_seed(seed, args.chaos_ticks)
        except SafetyViolation as exc:
            print(f"FAILED {exc}", file=sys.stderr, flush=True)
            if not args.keep_going:
                return 1
            failed.append(seed)
            continue
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
        f"{args.chaos_ticks} chaos ticks each), {args.seeds - len(failed)} passed, in "
        f"{elapsed_s:.1f} s: {args.seeds / elapsed_s:.1f} schedules/s"
    )
    print("totals: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    print("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))
    if failed:
        print(f"failed seeds: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
