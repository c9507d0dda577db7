"""Review 23: a hostile Raft review of commit-only APPENDs going unanswered (branch `ackless`,
docs/raft.md, "Commit-only APPENDs go unanswered"). Each test drives one suspicion through the
core (directed schedules on the seeded simulation's World, or a follower stepped alone); what
each found is in docs/data-model-v2.md 8.9, "Review 23"."""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent import peer_codec
from superstatic_agent.raft.core import UNACKED_CONTEXT, RaftNode
from superstatic_agent.raft.types import (
    ConfChange,
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
CATCHUP_TICKS_MAX = 400


def record(world: World, drop: set[tuple[MsgType, str]] | None = None) -> list[Message]:
    """Every message the network carries from now on; (type, sender) pairs in `drop` are
    lost (the set may change while the world runs)."""
    carried: list[Message] = []
    lost = drop if drop is not None else set()

    def keep(m: Message) -> bool:
        if (m.type, m.frm) in lost:
            return False
        carried.append(m)
        return True

    world.network.filter = keep
    return carried


def caught_up(world: World, leader: str, node: str) -> bool:
    """The leader knows `node` holds its whole log, and `node` committed all of it."""
    raft = world.raft(leader)
    follower = world.nodes[node].raft
    return (
        follower is not None
        and raft.progress()[node][0] == raft.last_index
        and follower.commit == raft.commit == raft.last_index
    )


# -- the follower's side: marked and unmarked differ only by the spared answer ---------------

FOLLOWER_TERM = 3
# Logs the follower may hold (terms of entries 1..n): empty, short, with a tail from an older
# term that a newer leader's log does not have, and ahead of the leader.
FOLLOWER_LOGS = ((), (1,), (1, 1, 2), (1, 2, 2, 2), (1, 1, 3, 3))


def follower(terms: tuple[int, ...], commit: int, config: RaftConfig) -> RaftNode:
    entries = tuple(Entry(i, t, EntryKind.NORMAL, b"f%d" % i) for i, t in enumerate(terms, start=1))
    return RaftNode(
        "b",
        config,
        random.Random(1),
        hard_state=HardState(FOLLOWER_TERM, None, commit),
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=entries,
        applied=0,
    )


def outcome(node: RaftNode, m: Message) -> tuple[object, ...]:
    """What stepping `m` does: an assertion it trips, or the node's state and messages."""
    try:
        node.step(m)
    except AssertionError:
        return ("refused",)
    ready = node.ready()
    node.advance(ready)
    log = node.entries_between(node.first_index, node.last_index) if node.last_index else ()
    return (node.term, node.leader, node.role, node.commit, log, ready.messages)


def appends() -> list[Message]:
    """APPENDs of every term around the follower's, every prev index and term, with and
    without one entry, committing anywhere from 0 to past the end."""
    out = []
    for term, prev, prev_term, commit, with_entry in itertools.product(
        (2, 3, 4), range(0, 6), (0, 1, 2, 3), (0, 1, 2, 3, 4, 6), (False, True)
    ):
        if (prev == 0) != (prev_term == 0) or prev_term > term:
            continue
        entries = (Entry(prev + 1, term, EntryKind.NORMAL, b"l"),) if with_entry else ()
        out.append(
            Message(
                MsgType.APPEND,
                "a",
                "b",
                term,
                log_term=prev_term,
                index=prev,
                entries=entries,
                commit=commit,
            )
        )
    return out


@pytest.mark.parametrize("check_quorum", [False, True])
def test_a_mark_changes_nothing_but_the_one_answer_an_accepted_empty_append_repeats(
    check_quorum: bool,
) -> None:
    """Every follower log and commit against every APPEND (stale, current and newer terms,
    matching or not, below or above the follower's commit, with or without entries): the
    marked one leaves the follower exactly as the unmarked one does (log, commit, term,
    leader, role), and sends the same messages, except that an accepted APPEND without
    entries spares its one answer, a success at the APPEND's prev index in the APPEND's
    term. Nothing else is ever spared: rejections, stale terms and entries are answered."""
    config = RaftConfig(
        ticks_election=10, ticks_heartbeat=2, check_quorum=check_quorum, pre_vote=check_quorum
    )
    spared = 0
    for terms, m in itertools.product(FOLLOWER_LOGS, appends()):
        for commit in range(len(terms) + 1):
            plain = outcome(follower(terms, commit, config), m)
            marked_m = Message(
                m.type,
                m.frm,
                m.to,
                m.term,
                log_term=m.log_term,
                index=m.index,
                entries=m.entries,
                commit=m.commit,
                context=UNACKED_CONTEXT,
            )
            marked = outcome(follower(terms, commit, config), marked_m)
            if plain == marked:
                continue
            assert plain[:-1] == marked[:-1], (terms, commit, m)
            plain_msgs, marked_msgs = plain[-1], marked[-1]
            assert isinstance(plain_msgs, tuple) and isinstance(marked_msgs, tuple)
            assert marked_msgs == (), (terms, commit, m, marked_msgs)
            (answer,) = plain_msgs
            assert not m.entries, (terms, commit, m)
            assert answer == Message(MsgType.APPEND_RESP, "b", "a", m.term, index=m.index)
            spared += 1
    assert spared > 0  # the rule did apply somewhere


def test_a_marked_heartbeat_is_answered_as_an_unmarked_one() -> None:
    """A hostile or confused peer's mark on a HEARTBEAT changes nothing: it is answered."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2)
    plain = Message(MsgType.HEARTBEAT, "a", "b", FOLLOWER_TERM, commit=1, index=7)
    marked = Message(
        MsgType.HEARTBEAT, "a", "b", FOLLOWER_TERM, commit=1, index=7, context=UNACKED_CONTEXT
    )
    plain_outcome = outcome(follower((1, 1, 2), 0, config), plain)
    marked_outcome = outcome(follower((1, 1, 2), 0, config), marked)
    assert plain_outcome == marked_outcome
    messages = marked_outcome[-1]
    assert isinstance(messages, tuple)
    assert [m.type for m in messages] == [MsgType.HEARTBEAT_RESP]


def test_a_marked_append_with_entries_from_the_wire_is_answered() -> None:
    """The mark crosses the wire on any APPEND; one with entries is still acknowledged."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2)
    m = Message(
        MsgType.APPEND,
        "a",
        "b",
        FOLLOWER_TERM,
        log_term=2,
        index=3,
        entries=(Entry(4, 3, EntryKind.NORMAL, b"x"),),
        commit=4,
        context=UNACKED_CONTEXT,
    )
    decoded = peer_codec.decode(peer_codec.encode_message(m))
    assert isinstance(decoded, Message) and decoded == m
    node = follower((1, 1, 2), 0, config)
    node.step(decoded)
    ready = node.ready()
    node.advance(ready)
    assert ready.messages == (Message(MsgType.APPEND_RESP, "b", "a", FOLLOWER_TERM, index=4),)
    assert node.commit == 4


def test_a_pre_candidate_in_the_leaders_term_follows_a_marked_append() -> None:
    """A follower whose timer fired (pre-candidate, same term) and that then gets the
    leader's marked APPEND follows the leader again and takes the commit, unanswered."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=True)
    node = follower((1, 1, 3), 2, config)
    node.step(Message(MsgType.HEARTBEAT, "a", "b", FOLLOWER_TERM, commit=2, index=1))
    node.advance(node.ready())
    for _ in range(30):
        node.tick()
        if node.role is Role.PRE_CANDIDATE:
            break
    assert node.role is Role.PRE_CANDIDATE and node.term == FOLLOWER_TERM
    node.advance(node.ready())  # the PRE_VOTEs
    node.step(
        Message(
            MsgType.APPEND,
            "a",
            "b",
            FOLLOWER_TERM,
            log_term=3,
            index=3,
            commit=3,
            context=UNACKED_CONTEXT,
        )
    )
    ready = node.ready()
    node.advance(ready)
    assert node.role is Role.FOLLOWER and node.leader == "a" and node.commit == 3
    assert ready.messages == ()


# -- the leader's side: its view of each follower never goes stale for good ------------------


def test_a_follower_that_lost_its_storage_is_caught_up_again() -> None:
    """The leader holds a follower in replicate state at its last index when the follower's
    data directory is lost. The leader's next commit-only APPENDs are marked (its view is
    stale), the follower rejects them, and a rejection is always answered: the leader
    re-learns where the follower's log ends (through the heartbeat's answer), and the
    follower gets everything again."""
    world = World(11, ["a", "b", "c"])
    leader = elect(world)
    gone = next(n for n in "abc" if n != leader)
    for i in range(3):
        world.propose(leader, [b"x%d" % i])
        world.stabilize()
    raft = world.raft(leader)
    assert raft.progress()[gone] == (raft.last_index, raft.last_index + 1, "replicate")
    world.nodes[gone].crash()
    world.nodes[gone].wipe()
    world.nodes[gone].start()
    carried = record(world)
    world.propose(leader, [b"after"])
    world.run_until(lambda: caught_up(world, leader, gone), CATCHUP_TICKS_MAX)
    marked_to_gone = [m for m in carried if m.to == gone and m.context == UNACKED_CONTEXT]
    rejections = [m for m in carried if m.frm == gone and m.reject]
    assert marked_to_gone and rejections
    assert world.applied_datas(gone) == world.applied_datas(leader)


def test_a_follower_whose_tail_a_new_leader_overwrote_is_marked_only_after_it_answered() -> None:
    """An old leader cut off with entries of its own; the others elect a new leader that
    commits others at those indexes. After the heal, the new leader marks nothing to the old
    one before the old one accepted an APPEND of the new term (its progress starts in probe
    state), and the old leader's tail is replaced."""
    world = World(12, ["a", "b", "c"])
    old = elect(world)
    world.propose(old, [b"base"])
    world.stabilize()
    world.network.groups = {old: 1}
    world.propose(old, [b"lost1", b"lost2"])
    others = [n for n in "abc" if n != old]
    world.run_until(
        lambda: any(world.raft(n).role is Role.LEADER for n in others), ELECTION_TICKS_MAX
    )
    new = next(n for n in others if world.raft(n).role is Role.LEADER)
    for i in range(3):
        world.propose(new, [b"kept%d" % i])
        world.stabilize()
    term = world.raft(new).term
    carried = record(world)
    world.network.groups = {}
    world.run_until(lambda: caught_up(world, new, old), CATCHUP_TICKS_MAX)
    first_accept = next(
        i
        for i, m in enumerate(carried)
        if m.type is MsgType.APPEND_RESP and m.frm == old and m.term == term and not m.reject
    )
    marked = [
        i
        for i, m in enumerate(carried)
        if m.type is MsgType.APPEND and m.to == old and m.context == UNACKED_CONTEXT
    ]
    assert all(i > first_accept for i in marked)
    datas = [d for _, d in world.applied_datas(old)]
    assert b"lost1" not in datas and b"kept2" in datas
    # Caught up, it is marked like any other follower.
    carried.clear()
    world.propose(new, [b"more"])
    world.stabilize()
    assert any(m.to == old and m.context == UNACKED_CONTEXT for m in carried)


def test_a_full_window_whose_acks_were_all_lost_drains_and_commits_reach_the_follower() -> None:
    """inflight_max=1 and every ack of one follower lost while several writes commit (on
    the other follower's acks): that follower's window is full, so it gets no commit-only
    APPEND at all, marked or not. Once its acks flow again, the heartbeat's answer frees the
    slot and an unmarked APPEND's answer restores its match; it commits everything."""
    config = RaftConfig(ticks_election=20, ticks_heartbeat=2, inflight_max=1)
    world = World(13, ["a", "b", "c"], config=config)
    leader = elect(world)
    quiet = next(n for n in "abc" if n != leader)
    drop = {(MsgType.APPEND_RESP, quiet), (MsgType.HEARTBEAT_RESP, quiet)}
    carried = record(world, drop)
    for i in range(4):
        world.propose(leader, [b"w%d" % i])
        world.stabilize()
    raft = world.raft(leader)
    assert raft.commit == raft.last_index
    assert raft.progress()[quiet][0] < raft.last_index
    drop.clear()
    world.run_until(lambda: caught_up(world, leader, quiet), CATCHUP_TICKS_MAX)
    assert world.applied_datas(quiet) == world.applied_datas(leader)
    marked = [m for m in carried if m.context == UNACKED_CONTEXT and m.to == quiet]
    assert all(not m.entries for m in marked)


def test_a_transfer_to_a_target_whose_acks_were_lost_completes() -> None:
    """The transfer waits for the target's match; the target's ack was lost and its window
    is full, so the transfer's own APPEND cannot go. The heartbeat's answer frees the slot
    and sends an unmarked APPEND, whose answer completes the transfer within the election
    timeout that would abandon it."""
    config = RaftConfig(ticks_election=20, ticks_heartbeat=2, inflight_max=1)
    world = World(14, ["a", "b", "c"], config=config)
    leader = elect(world)
    target = next(n for n in "abc" if n != leader)
    drop = {(MsgType.APPEND_RESP, target)}
    carried = record(world, drop)
    world.propose(leader, [b"x"])
    world.stabilize()
    raft = world.raft(leader)
    assert raft.progress()[target][0] < raft.last_index
    # Its window is full, so it got no commit-only APPEND either.
    assert not any(m.to == target and m.context == UNACKED_CONTEXT for m in carried)
    drop.clear()
    carried.clear()
    raft.transfer_leadership(target)
    world.nodes[leader].process()
    world.run_until(lambda: world.leader() == target, config.ticks_election - 1)
    assert any(m.type is MsgType.TIMEOUT_NOW and m.to == target for m in carried)


def test_a_learner_whose_acks_were_lost_is_caught_up_and_counts_once_promoted() -> None:
    """A learner in replicate state gets marked commit-only APPENDs like a voter. With its
    acks lost, the leader's view of it lags; after they flow again the heartbeat's answer
    restores it, and once promoted it counts for commit (here it is needed: one voter is
    down)."""
    world = World(15, ["a", "b", "c"], learners=["d"])
    leader = elect(world)
    drop = {(MsgType.APPEND_RESP, "d")}
    carried = record(world, drop)
    for i in range(3):
        world.propose(leader, [b"l%d" % i])
        world.stabilize()
    raft = world.raft(leader)
    assert raft.progress()["d"][0] < raft.last_index
    assert any(m.to == "d" and m.context == UNACKED_CONTEXT for m in carried)
    assert world.raft("d").commit == raft.commit  # learned from the marked APPENDs
    drop.clear()
    world.run_until(lambda: caught_up(world, leader, "d"), CATCHUP_TICKS_MAX)
    raft.propose_conf_change(ConfChange("promote", "d", ""))
    world.nodes[leader].process()
    world.run_until(lambda: "d" in world.raft("d").conf.voters, CATCHUP_TICKS_MAX)
    world.run_until(lambda: caught_up(world, leader, "d"), CATCHUP_TICKS_MAX)
    down = next(n for n in "abc" if n != leader)
    world.nodes[down].crash()
    world.propose(leader, [b"needs-d"])
    world.run_until(lambda: caught_up(world, leader, "d"), CATCHUP_TICKS_MAX)
    assert world.applied_datas("d")[-1][1] == b"needs-d"
