"""Raft core: elections, PreVote, CheckQuorum, leader stickiness, determinism."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World
from superstatic_agent.raft.core import RaftNode
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


def elect(world: World) -> str:
    world.run_until(lambda: world.leader() is not None, ELECTION_TICKS_MAX)
    world.run(5)  # let heartbeats tell everyone
    leader = world.leader()
    assert leader is not None
    return leader


def test_single_voter_elects_itself_and_commits() -> None:
    world = World(1, ["a"])
    leader = elect(world)
    assert leader == "a"
    world.propose("a", [b"x"])
    assert world.applied_datas("a") == [(2, b"x")]  # index 1 is the leader's NOOP


def test_three_nodes_elect_one_leader_everyone_follows() -> None:
    world = World(2, ["a", "b", "c"])
    leader = elect(world)
    rafts = [world.raft(n) for n in "abc"]
    assert sum(r.role is Role.LEADER for r in rafts) == 1
    assert {r.leader for r in rafts} == {leader}
    assert len({r.term for r in rafts}) == 1


def test_same_seed_same_run() -> None:
    def run(seed: int) -> tuple[str | None, int, int]:
        world = World(seed, ["a", "b", "c", "d", "e"])
        world.network.delay_ticks_max = 2
        world.network.drop_rate = 0.1
        world.run(120)
        leader = world.leader()
        return leader, world.raft("a").term, world.network.in_flight()

    assert run(7) == run(7)


def isolate(world: World, node: str) -> None:
    world.network.groups = {node: 1}


def test_prevote_keeps_a_rejoining_node_from_disrupting() -> None:
    world = World(3, ["a", "b", "c"])
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    term_before = world.raft(leader).term
    isolate(world, follower)
    world.run(10 * world.config.ticks_election)
    # Pre-votes fail while cut off, so the isolated node never bumps its term.
    assert world.raft(follower).term == term_before
    assert world.raft(follower).role is Role.PRE_CANDIDATE
    world.network.groups = {}
    world.run(3 * world.config.ticks_election)
    assert world.leader() == leader
    assert world.raft(leader).term == term_before


def test_without_prevote_a_rejoining_node_disrupts() -> None:
    # The contrast that shows the test above can fail: classic Raft bumps terms.
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=False, check_quorum=False)
    world = World(3, ["a", "b", "c"], config=config)
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    term_before = world.raft(leader).term
    isolate(world, follower)
    world.run(10 * config.ticks_election)
    assert world.raft(follower).term > term_before + 3
    world.network.groups = {}
    world.run(3 * config.ticks_election)
    assert world.raft(leader).term > term_before  # the old leader was deposed


def test_checkquorum_leader_steps_down_when_cut_off() -> None:
    world = World(4, ["a", "b", "c"])
    leader = elect(world)
    isolate(world, leader)
    world.run(2 * world.config.ticks_election + 1)
    assert world.raft(leader).role is Role.FOLLOWER
    assert world.raft(leader).leader is None


def test_without_checkquorum_cut_off_leader_stays_leader() -> None:
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=True, check_quorum=False)
    world = World(4, ["a", "b", "c"], config=config)
    leader = elect(world)
    isolate(world, leader)
    world.run(5 * config.ticks_election)
    assert world.raft(leader).role is Role.LEADER


def test_leader_stickiness_ignores_vote_from_higher_term() -> None:
    world = World(5, ["a", "b", "c"])
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    raft = world.raft(follower)
    term = raft.term
    other = next(n for n in "abc" if n not in (leader, follower))
    raft.step(
        Message(
            MsgType.VOTE,
            other,
            follower,
            term + 5,
            index=raft.last_index + 10,
            log_term=term + 4,
        )
    )
    assert raft.term == term  # not even the term moved
    assert not raft.has_ready() or all(
        m.type is not MsgType.VOTE_RESP for m in raft.ready().messages
    )


def test_vote_refused_to_a_candidate_with_an_older_log() -> None:
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2)
    node = RaftNode(
        "a",
        config,
        random.Random(1),
        hard_state=HardState(3, None, 0),
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=(),
        applied=0,
    )
    node.step(Message(MsgType.VOTE, "b", "a", 4, index=0, log_term=0))
    ready = node.ready()
    assert ready.hard_state is not None and ready.hard_state.vote == "b"
    (resp,) = ready.messages
    assert resp.type is MsgType.VOTE_RESP and not resp.reject
    node.advance(ready)
    # A second candidate in the same term is refused: one vote per term.
    node.step(Message(MsgType.VOTE, "c", "a", 4, index=0, log_term=0))
    (resp,) = node.ready().messages
    assert resp.reject


def test_randomized_timeouts_split_votes_resolve() -> None:
    # Five nodes started at once: randomized timeouts must produce a leader quickly.
    for seed in range(20):
        world = World(100 + seed, ["a", "b", "c", "d", "e"])
        world.network.delay_ticks_max = 1
        elect(world)


def voter(node_id: str, hard_state: HardState, entries: tuple[Entry, ...] = ()) -> RaftNode:
    return RaftNode(
        node_id,
        RaftConfig(ticks_election=10, ticks_heartbeat=2),
        random.Random(1),
        hard_state=hard_state,
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=entries,
        applied=0,
    )


def test_vote_refused_to_a_candidate_whose_log_is_less_up_to_date() -> None:
    """Thesis 3.6.1 (election restriction): a vote only for a candidate whose last entry has a
    higher term, or the same term and an index at least as high."""
    entries = (Entry(1, 2, EntryKind.NORMAL, b"x"), Entry(2, 2, EntryKind.NORMAL, b"y"))
    for index, log_term, granted in ((5, 1, False), (1, 2, False), (2, 2, True), (1, 3, True)):
        node = voter("a", HardState(3, None, 0), entries)
        node.step(Message(MsgType.VOTE, "b", "a", 4, index=index, log_term=log_term))
        (resp,) = node.ready().messages
        assert resp.type is MsgType.VOTE_RESP and resp.reject is not granted, (index, log_term)


def test_higher_term_heartbeat_teaches_its_term_even_past_our_log() -> None:
    """Figure 3.1, rules for all servers: a request with a term above ours sets our term and
    makes us a follower. Issue 9, bug 6b: a HEARTBEAT whose commit lay past our log (our data
    directory was emptied; the leader still believes we hold its entries) was dropped, so we
    never learned the term or the leader. Its commit is about entries we do not hold, so it
    moves nothing; the answer still goes back."""
    node = voter("b", HardState(0, None, 0))
    node.step(Message(MsgType.HEARTBEAT, "a", "b", 5, commit=10, index=7))
    assert (node.term, node.leader, node.commit) == (5, "a", 0)
    (resp,) = node.ready().messages
    assert (resp.type, resp.to, resp.term, resp.index) == (MsgType.HEARTBEAT_RESP, "a", 5, 7)
    assert resp.reject and resp.reject_hint == 0  # where our log really ends
    # Within our log, the commit is taken as before.
    follower = voter("b", HardState(2, None, 0), (Entry(1, 2, EntryKind.NORMAL, b"x"),))
    follower.step(Message(MsgType.HEARTBEAT, "a", "b", 5, commit=1, index=1))
    assert (follower.term, follower.commit) == (5, 1)


def test_at_most_one_vote_per_term_even_after_the_data_directory_is_lost() -> None:
    """Thesis 3.4 and figure 3.1: a server votes for at most one candidate per term, which is
    why votedFor is persisted. Issue 9, bug 6c: a voter restarted with an empty data directory
    knew neither its term nor its vote, and voted a second time in a term, electing a second
    leader. A node the shell starts with storage_lost grants no vote (and never campaigns) until
    a leader has given it log state (docs/raft.md, "Empty storage")."""
    world = World(13, ["a", "b", "c"])
    world.raft("a").step(Message(MsgType.TIMEOUT_NOW, "b", "a", 0))  # a campaigns at once
    world.nodes["a"].process()
    world.stabilize()
    world.propose("a", [b"x"])
    world.run(5)
    assert world.leader() == "a" and world.raft("c").last_index >= 2
    # c is cut off; b is elected for the next term with a's vote.
    term = world.raft("c").term
    world.network.groups = {"c": 1}
    world.raft("b").step(Message(MsgType.TIMEOUT_NOW, "a", "b", term))
    world.nodes["b"].process()
    world.stabilize()
    assert world.leader() == "b" and world.raft("b").term == term + 1
    assert world.nodes["a"].storage.hard_state.vote == "b"
    # a loses its data directory and restarts; c (still in the old term) campaigns, reaching
    # only a. Voting for c would make c a second leader of term + 1 (the World raises
    # SafetyViolation: election safety).
    world.nodes["a"].crash()
    world.nodes["a"].wipe()
    world.nodes["a"].start()
    assert world.raft("a").votes_withheld
    world.network.groups = {"b": 1}
    world.raft("c").step(Message(MsgType.TIMEOUT_NOW, "b", "c", term))
    world.nodes["c"].process()
    world.stabilize()
    assert world.raft("c").term == term + 1 and world.raft("c").role is Role.CANDIDATE
    assert world.raft("a").vote is None
    # Once a leader gave it log state, a is an ordinary voter again.
    world.network.groups = {}
    world.run(5)
    assert not world.raft("a").votes_withheld
    assert world.raft("a").last_index == world.raft("b").last_index
