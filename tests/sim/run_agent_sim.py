"""Run many seeded schedules of the glue simulation and report schedules/second.

    .venv/bin/python tests/sim/run_agent_sim.py --seeds 200 [--start 0] [--chaos-ms 6000]

Exits non-zero on the first failing seed (printing how to rerun it), else prints totals.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_sim import SimFailure, SimParams, run_schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--chaos-ms", type=int, default=6_000)
    args = parser.parse_args(argv)
    totals: dict[str, int] = {"ok": 0, "fail": 0, "info": 0, "crashes": 0, "power_losses": 0}
    totals |= {"sessions_expired": 0, "leaders": 0, "simulated_ms": 0, "unknown": 0}
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        try:
            outcome = run_schedule(SimParams.random(seed, args.chaos_ms))
        except SimFailure as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            return 1
        for status, count in outcome.ops.items():
            totals[status] += count
        for name in ("crashes", "power_losses", "sessions_expired", "leaders", "simulated_ms"):
            totals[name] += getattr(outcome, name)
        totals["unknown"] += outcome.linearizable == "unknown"
    took = time.perf_counter() - started
    print(
        f"{args.seeds} schedules in {took:.1f} s ({args.seeds / took:.2f} schedules/s, "
        f"{totals['simulated_ms'] / 1000 / took:.1f} simulated s per s): {totals}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
