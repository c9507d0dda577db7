"""Raft core: ReadIndex at the leader, forwarded from followers and learners, and its guards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import Envelope, World, elect
from superstatic_agent.raft.core import READ_CONTEXT_BYTES_MAX
from superstatic_agent.raft.types import Dropped, Message, MsgType, RaftConfig, Role

ELECTION_TICKS_MAX = 200


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
    rounds_before = {m.index for m in heartbeats}
    world.request_read(leader, b"r1")
    assert world.nodes[leader].read_answers == []  # not before confirmation
    # One new round, numbered above every round sent before the read was registered.
    (round_for_read,) = {m.index for m in heartbeats} - rounds_before
    assert round_for_read > max(rounds_before, default=0)
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
    with pytest.raises(Dropped, match="READ_CONTEXT_BYTES_MAX"):
        world.raft(leader).read_index(b"x" * (READ_CONTEXT_BYTES_MAX + 1))
    world.network.groups = {leader: 1}
    world.raft(leader).read_index(b"dup")
    with pytest.raises(Dropped, match="READS_PENDING_MAX"):
        world.raft(leader).read_index(b"dup")


def make_leader(world: World, node: str) -> None:
    """Make `node` lead a fresh cluster (TIMEOUT_NOW skips the election timer)."""
    raft = world.raft(node)
    raft.step(Message(MsgType.TIMEOUT_NOW, "nobody", node, raft.term))
    world.nodes[node].process()
    world.stabilize()
    world.run(3)
    assert world.leader() == node


def test_read_index_counts_only_acks_of_rounds_sent_after_the_read() -> None:
    """Thesis 6.4 step 3: the leader confirms a read with a NEW round of heartbeats, one sent
    after the read arrived. Issue 9, bug 4: the leader counted any heartbeat reply echoing a
    pending read context; contexts restarted at `{id}.1` after an agent restart, so a reply
    that was still in flight from before the restart confirmed a new read at a deposed leader
    (CheckQuorum off), which answered an index missing a newer leader's commit.
    """
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, check_quorum=False)
    world = World(9, ["a", "b", "c"], ["l"], config=config)
    make_leader(world, "a")
    world.propose("a", [b"before"])
    world.run(3)
    late: list[Message] = []

    def hold_c_reply(m: Message) -> bool:
        if m.type is MsgType.HEARTBEAT_RESP and m.frm == "c" and m.to == "a":
            late.append(m)
            return False
        return True

    # The learner's first read "l.1": confirmed by a and b; c's reply stays in the network.
    world.network.filter = hold_c_reply
    world.request_read("l", b"l.1")
    world.stabilize()
    assert [context for context, _ in world.nodes["l"].read_answers] == [b"l.1"]
    assert late, "setup: c's acknowledgement must be in flight"
    world.network.filter = None
    # a (with l) is cut off; b and c elect a leader of a later term that commits more.
    world.network.groups = {"a": 1, "l": 1}
    world.run_until(lambda: world.leader() in ("b", "c"), ELECTION_TICKS_MAX)
    new_leader = world.leader()
    assert new_leader is not None
    world.propose(new_leader, [b"after"])
    world.run_until(lambda: b"after" in [d for _, d in world.applied_datas(new_leader)], 20)
    # l restarts and, like the agent before the fix, names its next read "l.1" again.
    world.nodes["l"].crash()
    world.nodes["l"].start()
    world.run_until(lambda: world.raft("l").leader == "a", ELECTION_TICKS_MAX)
    assert world.raft("a").role is Role.LEADER  # deposed, but without CheckQuorum it stays
    world.request_read("l", b"l.1")  # forwarded to a, which registers it
    world.stabilize()
    for m in late:  # c's old acknowledgement finally arrives
        world.nodes["a"].deliver(Envelope(m))
    world.stabilize()
    # a must not answer: the World raises SafetyViolation (stale read) if it answers with its
    # old commit index. Only a itself acknowledged a round sent after this read.
    assert world.nodes["l"].read_answers == [world.nodes["l"].read_answers[0]]


def test_answer_to_a_read_of_an_earlier_incarnation_is_dropped() -> None:
    """Issue 9, bug 4 (the requester's side): the answer to a read forwarded before a restart
    may arrive after it, when the shell has reused the same context for a newer read. The core
    prefixes forwarded contexts with a nonce drawn per incarnation, so the late answer (older
    than the newer read) is dropped instead of answering it."""
    world = World(10, ["a", "b", "c"], ["l"])
    make_leader(world, "a")
    held: list[Message] = []

    def hold_answers(m: Message) -> bool:
        if m.type is MsgType.READ_INDEX_RESP:
            held.append(m)
            return False
        return True

    world.network.filter = hold_answers
    world.request_read("l", b"l.1")
    world.stabilize()
    (old_answer,) = held
    world.propose("a", [b"more"])
    world.run_until(lambda: b"more" in [d for _, d in world.applied_datas("a")], 20)
    world.nodes["l"].crash()
    world.nodes["l"].start()
    world.run_until(lambda: world.raft("l").leader == "a", ELECTION_TICKS_MAX)
    held.clear()
    world.request_read("l", b"l.1")  # the same context, as a restarted shell may choose
    world.stabilize()
    (new_answer,) = held
    assert new_answer.index > old_answer.index
    # The old answer arrives first. Delivered as a ReadState it would answer the new read with
    # an index that misses "more" (the World raises SafetyViolation: a stale read).
    world.nodes["l"].deliver(Envelope(old_answer))
    assert world.nodes["l"].read_answers == []
    world.nodes["l"].deliver(Envelope(new_answer))
    assert world.nodes["l"].read_answers == [(b"l.1", new_answer.index)]
