"""Review 35: a new cluster's leader that halts while it holds forwarded proposals.

While a new cluster's leader waits for its members' word on the rules (RulesGate.holding), it
keeps the PROPOSE messages its followers forward (Server._held_forwarded, up to
proposals_waiting_bytes_max). Deposed, it drops them (their proposers propose again through
the new leader). Halted (poisoned, store_full, damaged, rules_unknown), it neither released
nor dropped them: `_flush_proposals` skips both while halted, so up to
proposals_waiting_bytes_max (128 MiB by default) stayed pinned in the halted process until
its restart, uncounted. The followers' waiters are unaffected (a halted core sends no
heartbeats: they elect another leader and propose again), so only the memory is at stake.
"""

from __future__ import annotations

from agent_sim import World, quiet_agents
from superstatic_agent.raft.types import Role
from test_agent_sim_review9 import calm

RUN_MS_MAX = 4_000


def test_a_leader_halting_while_it_holds_forwarded_proposals_lets_them_go() -> None:
    with quiet_agents():
        # No member ever says its rules: the leader holds for RULES_NEW_WAIT_MS; a client on
        # a follower (pinned below) has its writes forwarded into the hold.
        world = World(calm(35, clients=1, chaos_ms=RUN_MS_MAX, rules_frames=False))
        try:
            for node in world.nodes.values():
                node.start()
            lead = None
            for now in range(1, RUN_MS_MAX + 1):
                leader = world.leader()
                client = world.clients[0]
                if leader is not None and client.pinned is None:
                    follower = next(n for n in world.member_ids() if n != leader)
                    client.node_index = world.member_ids().index(follower)
                    client.connect()
                    client.pinned = follower
                world.chaos(now)
                world.tick(now)
                if leader is not None:
                    server = world.nodes[leader].server
                    if server is not None and server._held_forwarded:
                        lead = server
                        break
            assert lead is not None, "no forwarded proposal was ever held"
            assert lead.node.role is Role.LEADER and lead.rules.holding(lead.node.term)
            lead._halt("store_full", "review 35: halted while holding")
            halted_at = now
            for later in range(halted_at + 1, halted_at + 50):
                world.tick(later)
            assert lead._held_forwarded == [], "a halted leader still holds forwarded proposals"
            assert lead._held_forwarded_bytes == 0
            assert lead.drops.counts.get("propose_held_halted", 0) > 0
        finally:
            world.close()
