"""Raft core: learners, single-server membership changes, leadership transfer."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent.raft.core import REMOVED_NOTIFY_ELECTIONS, RaftNode
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Dropped,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    RaftConfig,
    Role,
)

ELECTION_TICKS_MAX = 200


def change(world: World, leader: str, op: str, node: str) -> None:
    world.raft(leader).propose_conf_change(ConfChange(op, node, f"sim://{node}"))
    world.nodes[leader].process()


def test_learner_receives_the_log_but_is_never_counted() -> None:
    world = World(1, ["a", "b", "c"], ["l"])
    leader = elect(world)
    assert world.raft("l").role is Role.FOLLOWER
    world.propose(leader, [b"x"])
    world.run(5)
    assert world.applied_datas("l") == world.applied_datas(leader)
    # With both other voters gone, the leader plus the learner are not a quorum.
    others = [n for n in "abc" if n != leader]
    for node in others:
        world.nodes[node].crash()
    commit = world.raft(leader).commit
    world.propose(leader, [b"y"])
    world.run(5)
    assert world.raft(leader).commit == commit
    assert world.raft("l").last_index > commit  # it holds the entry, but does not count


def test_learner_never_campaigns() -> None:
    world = World(2, ["a", "b", "c"], ["l"])
    elect(world)
    for node in "abc":
        world.nodes[node].crash()
    world.run(20 * world.config.ticks_election)
    assert world.raft("l").role is Role.FOLLOWER
    assert world.raft("l").term <= 2


def test_add_learner_then_promote_grows_the_quorum() -> None:
    world = World(3, ["a", "b", "c"])
    leader = elect(world)
    world.add_node("d")
    change(world, leader, "add_learner", "d")
    world.run(10)
    assert world.raft(leader).conf.learners == ("d",)
    change(world, leader, "promote", "d")
    world.run(10)
    assert world.raft(leader).conf.voters == ("a", "b", "c", "d")
    assert world.raft("d").conf.voters == ("a", "b", "c", "d")
    # Four voters: a quorum is three, so two nodes down stops commits.
    down = [n for n in "abcd" if n != leader][:2]
    for node in down:
        world.nodes[node].crash()
    commit = world.raft(leader).commit
    world.propose(leader, [b"x"])
    world.run(5)
    assert world.raft(leader).commit == commit


def test_one_uncommitted_conf_change_at_a_time() -> None:
    world = World(4, ["a", "b", "c"])
    leader = elect(world)
    world.network.groups = {leader: 1}  # nothing commits
    world.add_node("d")
    change(world, leader, "add_learner", "d")
    # Takes effect when appended, even though not committed.
    assert world.raft(leader).conf.learners == ("d",)
    with pytest.raises(Dropped) as info:
        change(world, leader, "add_learner", "e")
    assert "uncommitted" in info.value.reason


def test_conf_change_refusals_name_the_reason() -> None:
    world = World(5, ["a", "b", "c"])
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    with pytest.raises(Dropped, match="not a learner"):
        change(world, leader, "promote", follower)
    with pytest.raises(Dropped, match="already a member"):
        change(world, leader, "add_learner", follower)
    with pytest.raises(Dropped, match="not leader"):
        change(world, follower, "add_learner", "z")


def test_removed_follower_is_forgotten_once_told_and_quorum_shrinks() -> None:
    world = World(6, ["a", "b", "c", "d"])
    leader = elect(world)
    gone = next(n for n in "abcd" if n != leader)
    change(world, leader, "remove", gone)
    world.run(10)
    assert gone not in world.raft(leader).conf.voters
    assert gone not in world.raft(leader).progress()
    world.nodes[gone].crash()
    # Three voters left: one more down still leaves a quorum of two.
    other = next(n for n in "abcd" if n not in (leader, gone))
    world.nodes[other].crash()
    world.propose(leader, [b"x"])
    world.run(5)
    assert (b"x") in [d for _, d in world.applied_datas(leader)]


def test_removed_leader_steps_down_after_committing_its_removal() -> None:
    world = World(7, ["a", "b", "c"])
    leader = elect(world)
    change(world, leader, "remove", leader)
    # Still leading (and replicating) until the removal commits.
    assert world.raft(leader).role is Role.LEADER
    world.run(3)
    raft = world.raft(leader)
    assert raft.role is Role.FOLLOWER and raft.commit >= raft.last_index - 1
    world.run_until(lambda: world.leader() not in (None, leader), ELECTION_TICKS_MAX)
    new_leader = world.leader()
    assert new_leader is not None
    assert world.raft(new_leader).conf.voters == tuple(n for n in "abc" if n != leader)
    world.propose(new_leader, [b"after"])
    world.run(5)
    assert (b"after") in [d for _, d in world.applied_datas(new_leader)]
    # The removed node never campaigns again.
    world.run(10 * world.config.ticks_election)
    assert world.raft(leader).role is Role.FOLLOWER


def test_leadership_transfer_hands_over_and_blocks_proposals_meanwhile() -> None:
    world = World(8, ["a", "b", "c"])
    leader = elect(world)
    target = next(n for n in "abc" if n != leader)
    world.network.groups = {target: 1}  # the target lags: transfer must wait for it
    world.propose(leader, [b"x"])
    world.run(2)
    world.raft(leader).transfer_leadership(target)
    world.nodes[leader].process()
    assert world.raft(leader).transferee == target
    with pytest.raises(Dropped, match="transfer"):
        world.propose(leader, [b"y"])
    world.network.groups = {}
    world.run_until(lambda: world.leader() == target, 3 * world.config.ticks_election)
    assert world.raft(leader).role is Role.FOLLOWER
    # The target's log was brought up to date first: nothing committed is lost.
    assert (b"x") in [d for _, d in world.applied_datas(target)]


def test_leadership_transfer_aborts_after_an_election_timeout() -> None:
    world = World(9, ["a", "b", "c"])
    leader = elect(world)
    target = next(n for n in "abc" if n != leader)
    world.nodes[target].crash()
    world.raft(leader).transfer_leadership(target)
    world.nodes[leader].process()
    world.run(world.config.ticks_election + 1)
    raft = world.raft(leader)
    assert raft.role is Role.LEADER and raft.transferee is None
    world.propose(leader, [b"accepted again"])


def test_timeout_now_makes_a_voter_campaign_despite_leader_lease() -> None:
    world = World(10, ["a", "b", "c"])
    leader = elect(world)
    target = next(n for n in "abc" if n != leader)
    term = world.raft(leader).term
    world.raft(target).step(Message(MsgType.TIMEOUT_NOW, leader, target, term))
    world.nodes[target].process()
    world.stabilize()
    assert world.leader() == target and world.raft(target).term == term + 1


def test_truncated_conf_entry_is_undone_even_after_a_restart() -> None:
    initial = ConfState.make(["a", "b", "c"])
    add_d = ConfChange("add_learner", "d", "sim://d")
    node = RaftNode(
        "b",
        RaftConfig(),
        random.Random(1),
        hard_state=HardState(1, None, 1),
        conf=initial,  # the configuration at the start of the log (docs/raft.md, Restart)
        snapshot=None,
        entries=(Entry(1, 1, EntryKind.NOOP, b""), Entry(2, 1, EntryKind.CONF, add_d.encode())),
        applied=1,
    )
    assert node.conf.learners == ("d",)  # replayed from the log: in effect when appended
    # A new leader of term 2 never had the change: its entry 2 replaces ours.
    node.step(
        Message(
            MsgType.APPEND,
            "a",
            "b",
            2,
            index=1,
            log_term=1,
            entries=(Entry(2, 2, EntryKind.NOOP, b""),),
            commit=2,
        )
    )
    assert node.conf == initial
    ready = node.ready()
    assert [(e.index, e.term) for e in ready.entries] == [(2, 2)]
    assert [(e.index, e.term) for e in ready.committed] == [(2, 2)]


def test_base_conf_is_what_a_restart_needs() -> None:
    world = World(12, ["a", "b", "c"])
    leader = elect(world)
    world.add_node("d")
    change(world, leader, "add_learner", "d")
    world.run(5)
    raft = world.raft(leader)
    assert raft.base_conf == world.initial_conf  # no snapshot yet: the initial configuration
    assert raft.conf.learners == ("d",)
    world.nodes[leader].compact()
    assert raft.base_conf == raft.conf  # the change is now inside the snapshot


def test_a_removed_server_learns_its_removal_and_stops_campaigning() -> None:
    """Thesis 4.2.3 (disruptive servers). Issue 9, bug 6a: the leader stopped replicating to a
    follower the moment it appended the follower's removal, so the follower never held that
    entry, still believed it was a voter, and pre-voted forever. Now the leader keeps sending
    to it until it holds the entry (a configuration takes effect when appended)."""
    world = World(11, ["a", "b", "c", "d"])
    leader = elect(world)
    gone = next(n for n in "abcd" if n != leader)
    change(world, leader, "remove", gone)
    world.run(10)
    assert gone not in world.raft(leader).conf.voters
    assert gone not in world.raft(gone).conf.voters, "the removed node must learn its removal"
    assert gone not in world.raft(leader).progress(), "told: the leader forgets it"
    term = world.raft(gone).term
    world.run(10 * world.config.ticks_election)
    raft = world.raft(gone)
    assert raft.role is Role.FOLLOWER and raft.term == term  # it never campaigned


def test_removed_server_that_never_learned_does_not_disturb_the_cluster() -> None:
    """Thesis 4.2.3 and 9.6: a removed server that never learned of its removal (cut off for
    the whole time the leader kept telling it) times out and campaigns. Its log lacks the
    removal, which a majority holds once committed, so with PreVote its pre-votes are refused
    and no term moves, even without CheckQuorum's lease. (Without PreVote it bumps terms, like
    any node rejoining after a partition; PreVote is the default.)"""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=True, check_quorum=False)
    world = World(12, ["a", "b", "c", "d"], config=config)
    leader = elect(world)
    gone = next(n for n in "abcd" if n != leader)
    world.network.groups = {gone: 1}
    change(world, leader, "remove", gone)
    # Long enough for the leader to give up telling it (REMOVED_NOTIFY_ELECTIONS).
    world.run((REMOVED_NOTIFY_ELECTIONS + 1) * world.config.ticks_election)
    assert gone not in world.raft(leader).progress()
    assert gone in world.raft(gone).conf.voters  # it never heard
    term = world.raft(leader).term
    world.network.groups = {}
    world.run(10 * world.config.ticks_election)
    assert world.raft(gone).term == term  # it tried (pre-votes), in vain
    assert world.leader() == leader and world.raft(leader).term == term
    world.propose(leader, [b"undisturbed"])
    world.run(5)
    assert b"undisturbed" in [d for _, d in world.applied_datas(leader)]
