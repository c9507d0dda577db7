"""Glue seeds 152 and 3740 (docs/raft.md, "Rules versions"): a late copy of an older OPEN
replaced the client's live session, and its setup write then met session_expired ("roots: the
setup's session expired"). They pass at the rules a cluster created by this code runs (2, from
its first entry), and still fail at rules 1 (every agent at --rules-max 1: no rules entry, no
RULES frame, the course the code before versions took): the seeds exercise the bug, and rules 1
keeps its old outcome.
"""

from __future__ import annotations

import dataclasses

import pytest
from agent_sim import SimParams, run_schedule

SEEDS = (152, 3740)
CHAOS_MS = 6_000


@pytest.mark.parametrize("seed", SEEDS)
def test_the_late_open_seeds_pass_at_the_newest_rules(seed: int) -> None:
    params = SimParams.random(seed, CHAOS_MS)
    assert params.rules_max == 2
    run_schedule(params)  # raises SimFailure (or the client's assertion) naming the seed


@pytest.mark.parametrize("seed", SEEDS)
def test_the_late_open_seeds_still_fail_at_rules_1(seed: int) -> None:
    params = dataclasses.replace(SimParams.random(seed, CHAOS_MS), rules_max=1)
    with pytest.raises(AssertionError, match="the setup's session expired"):
        run_schedule(params)
