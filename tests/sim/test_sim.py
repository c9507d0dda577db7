"""Seeded simulation of the pure Raft core: SUPERSTATIC_SIM_SEEDS seeds (default 1,000).

Each seed is one random schedule (sim_schedule.py); safety is checked after every Ready,
liveness and durability after healing. Seeds run in batches so a run reports one line per
batch, and a failure names its seed and the command that reruns it alone.
"""

from __future__ import annotations

import pytest
from sim_schedule import run_seed, seeds_from_env

SEEDS = seeds_from_env()
BATCH_SEEDS = 50
BATCHES = [SEEDS[i : i + BATCH_SEEDS] for i in range(0, len(SEEDS), BATCH_SEEDS)]


@pytest.mark.parametrize(
    "seeds", BATCHES, ids=[f"seeds{batch[0]}-{batch[-1]}" for batch in BATCHES]
)
def test_seeded_schedules(seeds: list[int]) -> None:
    totals = {"committed": 0, "leaders": 0}
    for seed in seeds:
        outcome = run_seed(seed)  # raises SafetyViolation naming the seed on any failure
        totals["committed"] += outcome.committed
        totals["leaders"] += outcome.leaders
    # Every schedule heals and commits at least its liveness probe.
    assert totals["committed"] >= len(seeds)
    assert totals["leaders"] >= len(seeds)
