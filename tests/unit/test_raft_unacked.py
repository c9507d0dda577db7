"""Raft core: a commit-only APPEND to a follower that was sent the leader's whole log goes
unanswered when accepted (docs/raft.md, "Commit-only APPENDs go unanswered"; docs/data-model-v2.md
8.9). Each test is one rule of it."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent import peer_codec
from superstatic_agent.raft.core import UNACKED_CONTEXT, RaftNode
from superstatic_agent.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    RaftConfig,
    Role,
)

ELECTION_TICKS_MAX = 200


def record(world: World) -> list[Message]:
    """Every message the world's network carries from now on (delivered as usual)."""
    carried: list[Message] = []

    def keep(m: Message) -> bool:
        carried.append(m)
        return True

    world.network.filter = keep
    return carried


def follower_node(entries: tuple[Entry, ...], commit: int) -> RaftNode:
    """Node b, following term 2, holding `entries` with `commit` committed."""
    return RaftNode(
        "b",
        RaftConfig(ticks_election=10, ticks_heartbeat=2),
        random.Random(1),
        hard_state=HardState(2, None, commit),
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=entries,
        applied=0,
    )


LOG = tuple(Entry(i, 2, EntryKind.NORMAL, b"e%d" % i) for i in (1, 2, 3))


def commit_only(index: int, commit: int, *, marked: bool, term: int = 2) -> Message:
    return Message(
        MsgType.APPEND,
        "a",
        "b",
        term,
        log_term=2,
        index=index,
        commit=commit,
        context=UNACKED_CONTEXT if marked else b"",
    )


def answers(node: RaftNode) -> list[Message]:
    ready = node.ready()
    node.advance(ready)
    return [m for m in ready.messages if m.type is MsgType.APPEND_RESP]


def test_commit_only_append_to_a_caught_up_follower_goes_unanswered() -> None:
    world = World(1, ["a", "b", "c"])
    leader = elect(world)
    followers = [n for n in "abc" if n != leader]
    carried = record(world)
    world.propose(leader, [b"x"])
    world.stabilize()
    index = world.raft(leader).last_index
    # Two APPENDs with the entry, two acks, then the commit index alone, marked, unanswered
    # (also to the follower whose ack the commit did not wait for: its ack is on the way).
    with_entry = [m for m in carried if m.type is MsgType.APPEND and m.entries]
    assert sorted(m.to for m in with_entry) == followers
    commit_only_sent = [m for m in carried if m.type is MsgType.APPEND and not m.entries]
    assert sorted(m.to for m in commit_only_sent) == followers
    assert all(m.context == UNACKED_CONTEXT and m.commit == index for m in commit_only_sent)
    acks = [m for m in carried if m.type is MsgType.APPEND_RESP]
    assert sorted(m.frm for m in acks) == followers
    assert all(m.index == index for m in acks)
    # ... and the followers learned the commit from it.
    for node in followers:
        assert world.raft(node).commit == index
        assert world.applied_datas(node)[-1] == (index, b"x")


def test_an_unmarked_commit_only_append_is_still_answered() -> None:
    """A leader of the previous version marks nothing: its APPENDs are all acknowledged."""
    b = follower_node(LOG, 1)
    b.step(commit_only(3, 3, marked=False))
    (answer,) = answers(b)
    assert answer.index == 3 and not answer.reject
    assert b.commit == 3


def test_a_marked_append_is_answered_when_the_log_does_not_match() -> None:
    """A rejection always answers: the leader's view was wrong (here: the follower lost its
    tail), and only the answer tells it where to replicate from."""
    b = follower_node(LOG[:2], 1)
    b.step(commit_only(3, 3, marked=True))
    (answer,) = answers(b)
    assert answer.reject and answer.index == 3 and answer.reject_hint == 2
    assert b.commit == 1


def test_a_marked_append_below_the_followers_commit_is_answered() -> None:
    b = follower_node(LOG, 3)
    b.step(commit_only(2, 3, marked=True))
    (answer,) = answers(b)
    assert not answer.reject and answer.index == 3


def test_a_marked_append_with_entries_is_answered() -> None:
    """The mark only ever spares the answer to an APPEND without entries: new entries are
    always acknowledged, or they could never commit."""
    b = follower_node(LOG[:2], 1)
    marked = Message(
        MsgType.APPEND,
        "a",
        "b",
        2,
        log_term=2,
        index=2,
        entries=(LOG[2],),
        commit=2,
        context=UNACKED_CONTEXT,
    )
    b.step(marked)
    (answer,) = answers(b)
    assert not answer.reject and answer.index == 3


def test_a_marked_append_of_a_stale_term_is_answered_with_our_term() -> None:
    """A deposed leader learns the new term from any follower, marked or not."""
    b = follower_node(LOG, 1)
    b.step(commit_only(3, 3, marked=True, term=1))
    (answer,) = answers(b)
    assert answer.term == 2


def test_no_mark_to_a_follower_that_lags_or_is_being_probed() -> None:
    """The leader marks only a commit-only APPEND whose answer would repeat one it has or
    awaits: to a follower in replicate state that was sent its whole log. A follower that was
    cut off while the leader committed gets unmarked APPENDs until its acks say it holds
    everything."""
    world = World(2, ["a", "b", "c"])
    leader = elect(world)
    lagging, other = (n for n in "abc" if n != leader)
    world.network.groups = {lagging: 1}
    for i in range(3):
        world.propose(leader, [b"x%d" % i])
        world.stabilize()
    assert world.raft(leader).progress()[lagging][0] < world.raft(leader).last_index
    carried = record(world)
    world.network.groups = {}
    world.run_until(
        lambda: world.raft(leader).progress()[lagging][0] == world.raft(leader).last_index,
        ELECTION_TICKS_MAX,
    )
    to_lagging = [m for m in carried if m.type is MsgType.APPEND and m.to == lagging]
    assert to_lagging and not any(m.context == UNACKED_CONTEXT for m in to_lagging)
    # Now it is caught up: the next commit reaches it marked.
    carried.clear()
    world.propose(leader, [b"y"])
    world.stabilize()
    marked = [m.to for m in carried if m.context == UNACKED_CONTEXT]
    assert sorted(marked) == sorted([lagging, other])


def test_unanswered_commits_leave_no_inflight_slot_taken() -> None:
    """Empty APPENDs never occupy the inflight window, so the unanswered ones cannot fill it:
    more commits than the window holds still flow, each with its entries acknowledged."""
    config = RaftConfig(ticks_election=100, ticks_heartbeat=99, inflight_max=2)
    world = World(3, ["a", "b", "c"], config=config)
    leader = elect(world)
    carried = record(world)
    for i in range(10):
        world.propose(leader, [b"x%d" % i])
        world.stabilize()
    raft = world.raft(leader)
    assert raft.commit == raft.last_index
    assert sum(m.context == UNACKED_CONTEXT for m in carried) == 20
    for node in (n for n in "abc" if n != leader):
        assert raft.progress()[node] == (raft.last_index, raft.last_index + 1, "replicate")
        assert world.raft(node).commit == raft.last_index


def test_check_quorum_leader_keeps_leading_on_heartbeat_answers() -> None:
    """CheckQuorum counts any message from a voter; with commit-only APPENDs unanswered the
    heartbeats' answers keep the leader's quorum active across many election timeouts of
    steady writes."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, check_quorum=True)
    world = World(4, ["a", "b", "c"], config=config)
    leader = elect(world)
    term = world.raft(leader).term
    for i in range(100):
        world.propose(leader, [b"w%d" % i])
        world.tick()
    assert world.leader() == leader and world.raft(leader).term == term
    assert world.raft(leader).role is Role.LEADER


def test_transfer_to_a_caught_up_follower_completes() -> None:
    """A transfer waits for the target's match; a target that is caught up (its commit-only
    APPENDs unanswered) already has it, so TIMEOUT_NOW goes at once."""
    world = World(5, ["a", "b", "c"])
    leader = elect(world)
    world.propose(leader, [b"x"])
    world.stabilize()
    target = next(n for n in "abc" if n != leader)
    world.raft(leader).transfer_leadership(target)
    world.nodes[leader].process()
    world.run_until(lambda: world.leader() == target, ELECTION_TICKS_MAX)


def test_a_lost_ack_is_recovered_through_the_heartbeats_answer() -> None:
    """The ack a marked APPEND spares is the one already sent for the entries. If that one is
    lost, the heartbeat's answer shows the follower behind our last index and the leader sends
    an empty APPEND that is not commit-only, so never marked: its answer restores the match
    (what the answer to an unmarked commit-only APPEND did before)."""
    config = RaftConfig(ticks_election=20, ticks_heartbeat=2)
    world = World(6, ["a", "b", "c"], config=config)
    leader = elect(world)
    quiet = next(n for n in "abc" if n != leader)
    carried: list[Message] = []

    def lose_quiets_acks(m: Message) -> bool:
        carried.append(m)
        return not (m.type is MsgType.APPEND_RESP and m.frm == quiet)

    world.network.filter = lose_quiets_acks
    world.propose(leader, [b"x"])
    world.stabilize()
    raft = world.raft(leader)
    last = raft.last_index
    assert raft.commit == last  # the other follower's ack was enough
    assert raft.progress()[quiet][0] < last  # the quiet one's was lost
    assert any(m.to == quiet and m.context == UNACKED_CONTEXT for m in carried)
    carried = record(world)
    world.run_until(lambda: raft.progress()[quiet][0] == last, 4 * config.ticks_heartbeat)
    recovery = [m for m in carried if m.type is MsgType.APPEND and m.to == quiet]
    assert recovery and all(m.context == b"" for m in recovery)


def test_the_mark_crosses_the_peer_wire_in_the_appends_context() -> None:
    """No new field: the peer codec carries an APPEND's context, and a marked APPEND decoded
    from the wire is still unanswered."""
    marked = commit_only(3, 3, marked=True)
    decoded = peer_codec.decode(peer_codec.encode_message(marked))
    assert decoded == marked
    b = follower_node(LOG, 1)
    assert isinstance(decoded, Message)
    b.step(decoded)
    assert answers(b) == []
    assert b.commit == 3
