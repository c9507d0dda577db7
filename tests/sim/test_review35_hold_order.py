"""Review 35: a new cluster's leader holds client writes until its rules are decided, and the
rules entry goes in ahead of every one of them (docs/agent.md, "Rules versions").

The gate's decision is unit-tested (tests/unit/test_rules_gate.py); no test checked the order
in the log: with `_flush_proposals` flushing its own batch during the hold and
`_on_peer_message` stepping forwarded proposals in at once, every unit and sim test of
rulesnew passed while a new cluster's first requests applied under rules 1, before the rules
entry (only tests/cluster/test_rules_cluster.py's voter-down test failed, and only because the
wait's log line was not yet written when the write came back). Here the
members' first word on the rules is lost (no RULES frame goes out for LIFT_MS), so the leader
holds until their next word, RULES_ADVERTISE_MS later; the client's first writes arrive in
between. Every request entry must come after the rules entry, on every member."""

from __future__ import annotations

from agent_sim import World, quiet_agents
from superstatic_agent.payload import is_rules
from superstatic_agent.raft.types import EntryKind
from superstatic_agent.rules import RULES_NEWEST
from test_agent_sim_review9 import calm

LIFT_MS = 300  # the members' first word is lost; the next one is a full RULES_ADVERTISE_MS on
RUN_MS = 5_000


def test_a_new_clusters_first_requests_go_in_after_its_rules_entry() -> None:
    with quiet_agents():
        world = World(calm(35, clients=2, chaos_ms=RUN_MS))
        world.net.rules_unsaid.add("*")
        try:
            for node in world.nodes.values():
                node.start()
            held = False
            for now in range(1, RUN_MS + 1):
                if now == LIFT_MS:
                    world.net.rules_unsaid.clear()
                world.chaos(now)
                world.tick(now)
                leader = world.leader()
                server = world.nodes[leader].server if leader is not None else None
                if server is not None and server.rules.holding(server.node.term):
                    # A client write waits somewhere while the leader holds.
                    held = held or any(
                        n.server is not None and n.server._waiting > 0 for n in world.nodes.values()
                    )
            assert held, "no client write arrived during the hold: the test checks nothing"
            for node in world.nodes.values():
                server = node.server
                assert server is not None
                assert server.rules.version == RULES_NEWEST, (node.id, server.rules.version)
                entries = server.node.entries_between(server.node.first_index, server.applied)
                normal = [e for e in entries if e.kind is EntryKind.NORMAL and e.data]
                assert normal and is_rules(normal[0].data), (
                    f"{node.id}: a request at index {normal[0].index} before the rules entry"
                )
                assert len(normal) > 1, "no request applied"
        finally:
            world.close()
