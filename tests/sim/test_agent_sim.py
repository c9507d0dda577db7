"""Seeded schedules of the glue simulation (agent_sim.py): real agent Servers, simulated world.

SUPERSTATIC_AGENT_SIM_SEEDS seeds (default 30, under a minute here); a failure names its seed
and the command that reruns it alone (SUPERSTATIC_AGENT_SIM_SEED=K). More seeds:
`.venv/bin/python tests/sim/run_agent_sim.py --seeds N`.
"""

from __future__ import annotations

import dataclasses

import pytest
from agent_sim import SimParams, run_schedule, seeds_from_env

SEEDS = seeds_from_env()
BATCH_SEEDS = 10
BATCHES = [SEEDS[i : i + BATCH_SEEDS] for i in range(0, len(SEEDS), BATCH_SEEDS)]


@pytest.mark.parametrize(
    "seeds", BATCHES, ids=[f"seeds{batch[0]}-{batch[-1]}" for batch in BATCHES]
)
def test_agent_schedules(seeds: list[int]) -> None:
    ops = {"ok": 0, "fail": 0, "info": 0}
    for seed in seeds:
        outcome = run_schedule(SimParams.random(seed))  # raises SimFailure naming the seed
        for status, count in outcome.ops.items():
            ops[status] += count
        assert outcome.leaders >= 1
    # Every schedule did work, and the checks had acknowledged writes to check.
    assert ops["ok"] >= 10 * len(seeds), ops


LAG_SEEDS = range(5)


def test_the_lag_rule_installs_snapshots_amid_crashes() -> None:
    """No compaction (the log holds every entry) and a lag limit of 4 entries: a follower that
    crashed or was cut off comes back by a peer snapshot (the table flip) and, as in every
    schedule, every replica's tables end equal to the leader's and the history linearizable."""
    installed = 0
    for seed in LAG_SEEDS:
        params = dataclasses.replace(
            SimParams.random(seed),
            crashes=True,
            log_retain_entries=100_000,
            snapshot_lag_entries_max=4,
            snapshot_lag_bytes_max=4 << 20,
        )
        installed += run_schedule(params).snapshots_installed
    assert installed >= 1
