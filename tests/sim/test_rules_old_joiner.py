"""An agent older than rules versions must never join a cluster past rules 1 (docs/agent.md,
"Rules versions"): it cannot refuse what it does not know. Old code reads a "rules" entry as an
invalid payload (outcome "error", no version stored) and goes on applying the log with rules 1:
it would diverge from the cluster, silently. An agent that knows versions says which rules it
applies (a RULES frame) with every JOIN; the leader of a cluster past rules 1 adds no joiner
that said nothing. The old agent is played by a joiner whose RULES frames are never sent (the
only frame old code lacks that a JOIN involves)."""

from __future__ import annotations

import pytest
from agent_sim import JOINER_ID, World, quiet_agents
from superstatic_agent.rules import RULES_NEWEST
from test_agent_sim_review9 import calm

JOIN_AT_MS = 1_500
RUN_MS = 6_000


def run_with_joiner(old: bool) -> World:
    """A calm new cluster (it moves to the newest rules before its first request); at JOIN_AT_MS a
    joiner whose --peers names the leader; `old`: it never says which rules it applies. The
    world after RUN_MS."""
    world = World(calm(41, chaos_ms=RUN_MS))
    if old:
        world.net.rules_unsaid.add(JOINER_ID)
    for node in world.nodes.values():
        node.start()
    for now in range(1, RUN_MS + 1):
        if now == JOIN_AT_MS:
            world.add_joiner(contact=world.leader())
        world.chaos(now)
        world.tick(now)
    return world


@pytest.mark.parametrize("old", [True, False], ids=["older_than_versions", "knows_versions"])
def test_a_leader_past_rules_1_adds_only_a_joiner_that_said_its_rules(old: bool) -> None:
    with quiet_agents():
        world = run_with_joiner(old)
        try:
            leader = world.leader()
            assert leader is not None
            lead = world.nodes[leader].server
            assert lead is not None
            assert lead.rules.version == RULES_NEWEST
            members = lead.node.conf.members()
            refused = lead.drops.snapshot().get("peer_join_refused", 0)
            if old:
                assert JOINER_ID not in members, members
                assert refused > 0
            else:
                assert JOINER_ID in members, members
                assert refused == 0
        finally:
            world.close()
