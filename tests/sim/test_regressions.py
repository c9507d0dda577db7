"""Failures the simulation found, kept as permanent named cases.

Each test states the seed/schedule that found it, the bug, and replays the situation directly
(schedules change as the generator grows, so a raw seed number would silently stop covering
the bug; the directed replay does not).
"""

from __future__ import annotations

from sim_harness import World
from sim_schedule import run_seed
from superstatic_agent.raft.types import ConfChange, Message, MsgType, Role


def test_leader_removing_itself_stops_when_an_ack_commits_the_removal() -> None:
    """Found by the first 50 seeds of the first schedule generator; with today's generator
    seeds 43, 49 and 55 hit it (see below).

    Bug: a leader that removed itself stepped down inside _maybe_commit() while handling an
    APPEND_RESP, then went on to fill that follower's pipeline from a progress table that
    _reset() had just emptied (KeyError). Fix: stop handling the response once not leader.
    """
    world = World(3, ["a", "b", "c"])
    world.run_until(lambda: world.leader() is not None, 200)
    world.run(5)
    leader = world.leader()
    assert leader is not None
    acks: list[Message] = []

    def watch(m: Message) -> bool:
        if m.type is MsgType.APPEND_RESP and m.to == leader:
            acks.append(m)
        return True

    world.network.filter = watch
    world.raft(leader).propose_conf_change(ConfChange("remove", leader, ""))
    world.propose(leader, [b"more"] * 3)  # entries after the removal keep the pipeline busy
    world.stabilize()
    raft = world.raft(leader)
    assert acks, "the removal must be committed by a follower's acknowledgement"
    assert raft.role is Role.FOLLOWER and raft.leader is None
    assert leader not in raft.conf.voters


def test_self_removal_seeds() -> None:
    """Schedules that fail (KeyError) without the fix above, under today's generator."""
    for seed in (43, 49, 55):
        run_seed(seed)
