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
