"""Raft core: ReadIndex at the leader, forwarded from followers and learners, and its guards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World
from superstatic_agent.raft.types import Dropped, Message, MsgType

ELECTION_TICKS_MAX = 200


def elect(world: World) -> str:
    world.run_until(lambda: world.leader() is not None, ELECTION_TICKS_MAX)
    world.run(5)
    leader = world.leader()
    assert leader is not None
    return leader


def test_single_voter_answers_at_once() -> None:
    world = World(1, ["a"])
    elect(world)
    world.request_read("a", b"r1")
    assert world.nodes["a"].read_answers == [(b"r1", world.raft("a").commit)]


def test_leader_answers_only_after_a_heartbeat_quorum() -> None:
    world = World(2, ["a", "b", "c"])
    leader = elect(world)
    heartbeats: list[Message] = []

    def watch(m: Message) -> bool:
        if m.type is MsgType.HEARTBEAT:
            heartbeats.append(m)
        return True

    world.network.filter = watch
    world.request_read(leader, b"r1")
    assert world.nodes[leader].read_answers == []  # not before confirmation
    assert {m.context for m in heartbeats} == {b"r1"}
    world.stabilize()
    assert world.nodes[leader].read_answers == [(b"r1", world.raft(leader).commit)]


def test_cut_off_leader_never_answers() -> None:
    world = World(3, ["a", "b", "c"])
    leader = elect(world)
    world.network.groups = {leader: 1}
    world.request_read(leader, b"r1")
    world.run(3 * world.config.ticks_election)
    assert world.nodes[leader].read_answers == []


def test_follower_and_learner_reads_are_forwarded() -> None:
    world = World(4, ["a", "b", "c"], ["l"])
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    world.propose(leader, [b"x"])
    world.run(3)
    for node, context in ((follower, b"rf"), ("l", b"rl")):
        world.request_read(node, context)
        world.stabilize()
        ((got_context, index),) = world.nodes[node].read_answers
        assert got_context == context and index == world.raft(leader).commit


def test_read_before_the_terms_first_commit_waits_for_it() -> None:
    world = World(5, ["a", "b", "c"])
    world.run_until(lambda: world.leader() is not None, ELECTION_TICKS_MAX)
    leader = world.leader()
    assert leader is not None
    raft = world.raft(leader)
    assert raft.term_at(raft.commit) != raft.term, "setup: the NOOP must not be committed yet"
    world.request_read(leader, b"early")
    assert world.nodes[leader].read_answers == []
    world.run(5)
    ((context, index),) = world.nodes[leader].read_answers
    assert context == b"early" and raft.term_at(index) == raft.term


def test_read_without_leader_is_dropped_and_contexts_are_checked() -> None:
    world = World(6, ["a", "b", "c"])
    with pytest.raises(Dropped, match="no leader"):
        world.raft("a").read_index(b"r")
    leader = elect(world)
    with pytest.raises(Dropped, match="empty read context"):
        world.raft(leader).read_index(b"")
    world.network.groups = {leader: 1}
    world.raft(leader).read_index(b"dup")
    with pytest.raises(Dropped, match="READS_PENDING_MAX"):
        world.raft(leader).read_index(b"dup")
