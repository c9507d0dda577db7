"""Raft core: what the leader sends when a follower answers a heartbeat while entries are in
flight to it. Rule "acks that flow need no heartbeat APPEND" (docs/raft.md, "Removed
candidates and lost probes")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.types import Message, MsgType, RaftConfig

# Heartbeats only when the test steps their answers: ticks never run here.
CONFIG = RaftConfig(ticks_election=20, ticks_heartbeat=2, inflight_max=8)


def leader_with_two_appends_in_flight() -> tuple[World, RaftNode, str]:
    """A leader that sent follower `b` two APPENDs (one entry each) that `b` has not answered:
    its match is behind the last index, and everything was sent."""
    world = World(31, ["a", "b", "c"], config=CONFIG)
    leader = elect(world)
    world.stabilize()
    follower = "b" if leader != "b" else "c"
    world.network.filter = lambda m: m.to != follower  # what is sent to it stays unanswered
    for data in (b"x", b"y"):
        world.propose(leader, [data])
    raft = world.raft(leader)
    match, next_index, state = raft.progress()[follower]
    assert state == "replicate" and match == raft.last_index - 2 and next_index > raft.last_index
    return world, raft, follower


def step_and_collect(raft: RaftNode, m: Message) -> list[Message]:
    raft.step(m)
    ready = raft.ready()
    raft.advance(ready)
    return list(ready.messages)


def appends_to(messages: list[Message], node: str) -> list[Message]:
    return [m for m in messages if m.type is MsgType.APPEND and m.to == node]


def test_acks_that_flow_need_no_heartbeat_append() -> None:
    """Issue 11's 3-client row: followers sent 1.18-1.30 APPEND_RESPs per APPEND with entries,
    because the leader answered every heartbeat answer with an empty APPEND while the
    follower's match was behind its log (always, under load), and those were answered too.
    When the follower's answers moved its match since its previous heartbeat answer and
    everything was sent, no APPEND goes; when they did not, one does, as before."""
    world, raft, follower = leader_with_two_appends_in_flight()
    last = raft.last_index
    term = raft.term

    def heartbeat_answer() -> list[Message]:
        answer = Message(MsgType.HEARTBEAT_RESP, follower, raft.id, term, index=1)
        return appends_to(step_and_collect(raft, answer), follower)

    # Its match has not moved since it was elected's first answers: one empty APPEND (prev =
    # our last index), exactly as before the rule; it sets the baseline.
    sent = heartbeat_answer()
    assert [(m.index, m.entries) for m in sent] == [(last, ())]
    # The answer to the first APPEND arrives: match moves, the second is still in flight.
    ack = Message(MsgType.APPEND_RESP, follower, raft.id, term, index=last - 1)
    step_and_collect(raft, ack)
    assert raft.progress()[follower][0] == last - 1
    assert heartbeat_answer() == [], "its answers flow: nothing to add"
    # The second answer was lost: match stays put over a heartbeat, so the next answer brings
    # the empty APPEND whose answer restores it.
    sent = heartbeat_answer()
    assert [(m.index, m.entries, m.context) for m in sent] == [(last, (), b"")]
    step_and_collect(raft, Message(MsgType.APPEND_RESP, follower, raft.id, term, index=last))
    assert raft.progress()[follower][0] == last
    assert world.raft(follower).last_index < last  # (the follower itself never got them)


def test_unsent_entries_still_go_with_the_heartbeats_answer() -> None:
    """The rule spares only an APPEND that would be empty: a follower whose window had been
    full is sent the entries the heartbeat's answer made room for, whatever its match did."""
    config = RaftConfig(ticks_election=20, ticks_heartbeat=2, inflight_max=1, append_entries_max=1)
    world = World(32, ["a", "b", "c"], config=config)
    leader = elect(world)
    world.stabilize()
    follower = "b" if leader != "b" else "c"
    world.network.filter = lambda m: m.to != follower
    raft = world.raft(leader)
    for data in (b"x", b"y", b"z"):
        world.propose(leader, [data])
    last = raft.last_index
    term = raft.term
    # Window of 1: only x went. Its answer moves match and sends y; z waits for y's answer.
    step_and_collect(raft, Message(MsgType.APPEND_RESP, follower, raft.id, term, index=last - 2))
    assert raft.progress()[follower][:2] == (last - 2, last)
    answer = Message(MsgType.HEARTBEAT_RESP, follower, raft.id, term, index=1)
    sent = appends_to(step_and_collect(raft, answer), follower)
    # The window was full (y unanswered): the answer frees it and z goes, with entries.
    assert [(m.index, [e.data for e in m.entries]) for m in sent] == [(last - 1, [b"z"])]
