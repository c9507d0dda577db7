"""Run many seeded schedules of the glue simulation and report schedules/second.

    .venv/bin/python tests/sim/run_agent_sim.py --seeds 200 [--start 0] [--chaos-ms 6000]
        [--keep-going]

Exits non-zero on the first failing seed (printing how to rerun it), else prints totals. With
--keep-going it runs every seed, prints each failure as it happens and lists the failing seeds
at the end (exit status 1 if there were any).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_sim import SimFailure, SimParams, run_schedule

# With --keep-going, a progress line after every this many seeds (long runs go on for hours).
PROGRESS_SEEDS = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--chaos-ms", type=int, default=6_000)
    parser.add_argument("--keep-going", action="store_true", help="run past failing seeds")
    args = parser.parse_args(argv)
    failed: list[int] = []
    totals: dict[str, int] = {"ok": 0, "fail": 0, "info": 0, "crashes": 0, "power_losses": 0}
    totals |= {"sessions_expired": 0, "leaders": 0, "simulated_ms": 0, "unknown": 0}
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
            outcome = run_schedule(SimParams.random(seed, args.chaos_ms))
        except SimFailure as exc:
            print(f"FAILED {exc}", file=sys.stderr, flush=True)
            if not args.keep_going:
                return 1
            failed.append(seed)
            continue
        except Exception as exc:  # an agent or core assertion: a failing seed all the same
            print(f"FAILED seed {seed}: {exc!r}", file=sys.stderr, flush=True)
            if not args.keep_going:
                return 1
            failed.append(seed)
            continue
        for status, count in outcome.ops.items():
            totals[status] += count
        for name in ("crashes", "power_losses", "sessions_expired", "leaders", "simulated_ms"):
            totals[name] += getattr(outcome, name)
        totals["unknown"] += outcome.linearizable == "unknown"
    took = time.perf_counter() - started
    print(
        f"{args.seeds} schedules, {args.seeds - len(failed)} passed, in {took:.1f} s "
        f"({args.seeds / took:.2f} schedules/s, "
        f"{totals['simulated_ms'] / 1000 / took:.1f} simulated s per s): {totals}"
    )
    if failed:
        print(f"failed seeds: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
