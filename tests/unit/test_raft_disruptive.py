"""Raft core: the rules for removed servers that campaign (thesis 4.2.3, disruptive servers)
and for probes a follower that lost its log rejects. docs/raft.md, "Removed candidates and
lost probes", names each rule after the test here that drives it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent.raft.core import REMOVED_NOTIFY_ELECTIONS
from superstatic_agent.raft.types import ConfChange, Message, MsgType, RaftConfig, Role

# Neither PreVote nor CheckQuorum: the world in which a removed server that never learned its
# removal raises every member's term with its VOTEs (core seeds 7246 and 7755).
PLAIN = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=False, check_quorum=False)


def remove(world: World, leader: str, node: str) -> None:
    world.raft(leader).propose_conf_change(ConfChange("remove", node, ""))
    world.nodes[leader].process()


def count_messages(world: World) -> list[Message]:
    sent: list[Message] = []

    def watch(m: Message) -> bool:
        sent.append(m)
        return True

    world.network.filter = watch
    return sent


# -- a removed candidate is told -------------------------------------------------------------


def test_a_removed_candidate_is_told_by_a_later_leader() -> None:
    """Seeds 7246/7755 of the core simulation, directed: d is removed while cut off, its
    remover is deposed before telling it, and the next leaders' configurations lack d, so no
    progress tracks it. Without PreVote, d's VOTEs raise every member's term for as long as
    it runs. A leader that d campaigns at, in a term not above the leader's, now replicates to
    d until it holds its removal; d then stops campaigning and the terms stop moving."""
    world = World(21, ["a", "b", "c", "d"], config=PLAIN)
    leader = elect(world)
    gone = "d" if leader != "d" else "c"
    world.network.groups = {gone: 1}
    remove(world, leader, gone)
    world.run(5)
    assert gone not in world.raft(leader).conf.members()
    assert gone in world.raft(gone).conf.voters  # never heard
    world.nodes[leader].crash()  # deposed before it told `gone`
    world.network.groups = {}
    later = elect(world)
    assert later != leader and gone not in world.raft(later).progress()

    def told() -> bool:
        raft = world.raft(gone)
        return gone not in raft.conf.members()

    world.run_until(told, 40 * world.config.ticks_election)
    world.nodes[leader].start()
    # Told: it no longer campaigns, so once a leader is settled no term moves.
    current = elect(world)
    term = world.raft(current).term
    world.run(20 * world.config.ticks_election)
    assert world.raft(gone).role is Role.FOLLOWER
    assert max(node.raft.term for node in world.live() if node.raft) == term


def test_a_removed_candidate_of_a_higher_term_is_not_tracked() -> None:
    """A node of a higher term would reject the leader's APPENDs (and, with PreVote or
    CheckQuorum, answer them with its term, deposing the leader): only a candidate whose term
    is not above the leader's is told. A pre-candidate's own term is one below the term it
    asks in."""
    world = World(22, ["a", "b", "c", "d"], config=PLAIN)
    leader = elect(world)
    gone = "d" if leader != "d" else "c"
    world.network.groups = {gone: 1}
    remove(world, leader, gone)
    world.run(5)
    raft = world.raft(leader)
    raft._prs.pop(gone)  # as if the leader had given up (REMOVED_NOTIFY_ELECTIONS)
    term = raft.term
    for kind, asked in ((MsgType.PRE_VOTE, term + 2), (MsgType.VOTE, term + 1)):
        sent = count_messages(world)
        raft.step(Message(kind, gone, leader, asked, index=1, log_term=1))
        world.nodes[leader].process()
        assert gone not in raft.progress()
        assert not [m for m in sent if m.to == gone and m.type is MsgType.APPEND]
    assert raft.role is Role.FOLLOWER and raft.term == term + 1  # Raft: the VOTE deposed it


def test_a_removed_pre_candidate_of_our_term_is_told() -> None:
    """With PreVote the removed node's term stays where it was; its PRE_VOTE asks for its
    term + 1. The leader tracks it as departing (at the entry that removed it) and probes it."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=True, check_quorum=True)
    world = World(23, ["a", "b", "c", "d"], config=config)
    leader = elect(world)
    gone = "d" if leader != "d" else "c"
    world.network.groups = {gone: 1}
    remove(world, leader, gone)
    world.run((REMOVED_NOTIFY_ELECTIONS + 1) * config.ticks_election)
    raft = world.raft(leader)
    assert gone not in raft.progress(), "given up"
    sent = count_messages(world)
    world.network.groups = {}
    raft.step(Message(MsgType.PRE_VOTE, gone, leader, raft.term + 1, index=1, log_term=1))
    assert gone in raft.progress()
    world.nodes[leader].process()
    assert [m for m in sent if m.to == gone and m.type is MsgType.APPEND]
    world.run_until(lambda: gone not in world.raft(gone).conf.members(), 100)
    world.run_until(lambda: gone not in world.raft(leader).progress(), 100)
    assert world.leader() == leader


def test_a_stranger_campaigning_at_the_leader_costs_it_nothing() -> None:
    """Hostile input: a node the leader's log never names (not a member, not removed by an
    entry it holds) gets no progress and nothing but the refusal of its request (one answer
    per request, as before), whatever it sends and however often."""
    world = World(24, ["a", "b", "c"], config=PLAIN)
    leader = elect(world)
    raft = world.raft(leader)
    sent = count_messages(world)
    for n in range(100):
        stranger = f"x{n}"
        for kind in (MsgType.PRE_VOTE, MsgType.VOTE):
            raft.step(Message(kind, stranger, leader, raft.term, index=1, log_term=1))
    world.nodes[leader].process()
    assert set(raft.progress()) == {"a", "b", "c"} - {leader}
    to_strangers = [m for m in sent if m.to.startswith("x")]
    assert len(to_strangers) == 200
    assert all(
        m.type in (MsgType.PRE_VOTE_RESP, MsgType.VOTE_RESP) and m.reject for m in to_strangers
    )


# -- a probe rejected at the match waits ------------------------------------------------------


def test_a_probe_rejected_at_the_match_waits_for_the_heartbeat() -> None:
    """A follower that lost what it acknowledged (its data directory emptied) rejects the
    leader's probe at match + 1. Resending the same probe at once repeats forever at network
    speed: a zero-delay stabilize never ended. The leader now waits for the heartbeat's
    answer, which tells it where the follower's log ends (Progress.lost_beyond)."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, inflight_max=8)
    world = World(25, ["a", "b", "c"], config=config)
    leader = elect(world)
    follower = "b" if leader != "b" else "c"
    world.propose(leader, [b"one"])
    world.stabilize()
    match = world.raft(leader).progress()[follower][0]
    assert match == world.raft(leader).last_index
    world.nodes[follower].crash()
    world.nodes[follower].wipe()
    world.nodes[follower].start()
    sent = count_messages(world)
    # Two APPENDs in flight: the first is rejected at prev = match (stale in replicate state),
    # the second at prev = match + 1, which puts the follower in probe state at match + 1.
    world.propose(leader, [b"two"])
    world.propose(leader, [b"three"])
    world.stabilize()  # ends: no ping-pong
    # The two pipelined APPENDs, the commit-only one sent with the second, and one probe at
    # the match (before the fix: a thousand rounds of that probe and its rejection).
    appends = [m for m in sent if m.to == follower and m.type is MsgType.APPEND]
    assert len(appends) == 4, appends
    assert world.raft(leader).progress()[follower][2] == "probe"
    # The heartbeat's answer lowers the match; the follower then gets the whole log.
    world.run_until(
        lambda: world.raft(follower).last_index == world.raft(leader).last_index,
        10 * config.ticks_election,
    )
    world.run(5)
    datas = [d for _, d in world.applied_datas(follower)]
    assert datas[-3:] == [b"one", b"two", b"three"]
