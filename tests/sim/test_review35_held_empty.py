"""Review 35 (Low): a new cluster's leader counted only the entries' bytes of the PROPOSE
messages it held for its members' word on the rules, so a member forwarding PROPOSEs with no
entries (0 bytes each) grew the held list without bound for as long as the hold lasted. Each
held message now counts a fixed cost besides its entries (HELD_MESSAGE_BYTES), and one with no
entries is not held at all (it proposes nothing)."""

from __future__ import annotations

import dataclasses

from agent_sim import World, quiet_agents
from superstatic_agent.raft.types import Entry, EntryKind, Message, MsgType
from superstatic_agent.server import HELD_MESSAGE_BYTES
from test_agent_sim_review9 import calm

RUN_MS_MAX = 4_000
FORWARDS = 5_000


def test_forwarded_proposes_held_for_the_rules_are_bounded_in_number() -> None:
    with quiet_agents():
        world = World(calm(35, clients=0, chaos_ms=RUN_MS_MAX, rules_frames=False))
        try:
            for node in world.nodes.values():
                node.start()
            lead = None
            for now in range(1, RUN_MS_MAX + 1):
                world.tick(now)
                leader = world.leader()
                if leader is not None:
                    server = world.nodes[leader].server
                    if server is not None and server.rules.holding(server.node.term):
                        lead = server
                        break
            assert lead is not None, "no new cluster's leader ever held"
            follower = next(n for n in world.member_ids() if n != lead.id)
            cap_bytes = 64 * HELD_MESSAGE_BYTES
            lead.config = dataclasses.replace(lead.config, proposals_waiting_bytes_max=cap_bytes)
            empty = Message(MsgType.PROPOSE, follower, lead.id, lead.node.term)
            for _ in range(FORWARDS):
                lead._on_peer_message(follower, empty)
            assert lead._held_forwarded == [], "a PROPOSE with no entries was held"
            one = Entry(0, 0, EntryKind.NORMAL, b"x")
            tiny = dataclasses.replace(empty, entries=(one,))
            for _ in range(FORWARDS):
                lead._on_peer_message(follower, tiny)
            assert len(lead._held_forwarded) <= cap_bytes // HELD_MESSAGE_BYTES
            assert lead._held_forwarded_bytes <= cap_bytes
        finally:
            world.close()
