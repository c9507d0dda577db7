"""Review 28: a rolling upgrade under the glue simulation's chaos.

Every agent starts at --rules-max 1 (the cluster runs rules 1: no rules entry, no RULES
frame); early in the chaos each agent (the joiner too, if the schedule has one) is restarted
with --rules-max 2, so the cluster moves up (and from 2 to 3, rules 3's oids bound to their
creator: oidbind) mid-traffic through the RULES frames and the
leader's rules entry, under crashes, partitions, clock skew and compaction. The simulation's
own checks then hold the whole run: one leader per term, convergence, every member's tables
equal the leader's, no acknowledged write lost or applied twice, a linearizable history; here
also every member's stored rules version (the simulation compares no sm_meta) and what its
gate believes are one. The move must happen in most schedules (the test is not vacuous).
"""

from __future__ import annotations

import dataclasses
import functools

import agent_sim
import pytest
from agent_sim import SimParams, World, run_schedule

SEEDS = range(7000, 7010)
UPGRADE_AT_MS = (300, 600, 900, 1_200, 1_500)


def _upgrade(world: World, now: int, start: int, target: int) -> None:
    """One agent after another at UPGRADE_AT_MS; after the last, any agent still at `start`
    (a joiner the schedule created later: its operator starts it with the new code)."""
    if now < UPGRADE_AT_MS[-1] and now not in UPGRADE_AT_MS:
        return
    old = [node for _, node in sorted(world.nodes.items()) if node.config.rules_max == start]
    for node in old[: 1 if now <= UPGRADE_AT_MS[-1] else len(old)]:
        node.config = dataclasses.replace(node.config, rules_max=target)
        if node.up:  # a restart with the new code; a node down now starts with it
            node.crash(power_loss=False)
            node.start()


@pytest.mark.parametrize(("start", "target"), [(1, 2), (2, 3)])
def test_a_rolling_upgrade_under_chaos_moves_up_without_divergence(
    monkeypatch: pytest.MonkeyPatch, start: int, target: int
) -> None:
    """1 to 2: review 28's. 2 to 3: rules 3 (oids bound to their creator) switched on
    mid-traffic; the simulation compares every member's oid_marks with the leader's."""
    versions: list[set[int]] = []
    finish = agent_sim.finish

    def finishing(world: World, now: int, started: float) -> agent_sim.Outcome:
        leader = world.leader()
        assert leader is not None
        lead = world.nodes[leader].server
        assert lead is not None
        seen: set[int] = set()
        for member in lead.node.conf.members():  # each one applied everything (converged)
            server = world.nodes[member].server
            assert server is not None
            with server.storage.env.begin() as txn:
                seen.add(server.sm.rules_version(txn))  # the sim compares no sm_meta
            seen.add(server.rules.version)  # what its gate believes: the same
        versions.append(seen)
        return finish(world, now, started)

    monkeypatch.setattr(agent_sim, "finish", finishing)
    for seed in SEEDS:
        params = dataclasses.replace(
            SimParams.random(seed, 8_000),
            rules_max=start,
            script=functools.partial(_upgrade, start=start, target=target),
        )
        run_schedule(params)  # raises SimFailure naming the seed on any check
    assert len(versions) == len(SEEDS)
    assert all(len(v) == 1 for v in versions), versions  # every agent at one version
    assert sum(v == {target} for v in versions) >= len(SEEDS) // 2, versions
