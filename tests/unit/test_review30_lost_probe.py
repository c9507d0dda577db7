"""Review 30 (hostile review of the `raftfix` rules), found while probing rule "a probe rejected
at the match waits" against a follower that really lost its data: a voter restarted with an
empty data directory (`storage_lost`) acknowledges a deposed leader that has not stepped down
yet, and that leader counts the acknowledgement. docs/raft.md, "Empty storage", lists what
stays open outside the stable-storage model; this is the sharpest case, pinned here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import SafetyViolation, World, elect
from superstatic_agent.raft.types import RaftConfig, Role

# Without CheckQuorum a partitioned leader keeps leading its term (Raft allows it: alone it
# cannot commit). With CheckQuorum the same holds for the rest of its lease.
PLAIN = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=False, check_quorum=False)


@pytest.mark.xfail(
    strict=True,
    raises=SafetyViolation,
    reason="outside the stable-storage model: a wiped voter forgot the term it acknowledged, "
    "so a deposed leader of an older term gets a second majority (docs/raft.md, Empty storage; "
    "the agent refuses such a start when a peer remembers it, DataLost)",
)
def test_a_wiped_voter_does_not_give_a_deposed_leader_a_majority() -> None:
    world = World(41, ["a", "b", "c"], config=PLAIN)
    stale = elect(world)
    world.stabilize()
    others = [n for n in ("a", "b", "c") if n != stale]
    # The leader is cut off and takes a proposal it cannot commit alone.
    world.network.groups = {stale: 1}
    world.propose(stale, [b"x1"])
    world.run_until(lambda: any(world.raft(n).role is Role.LEADER for n in others), 200)
    current = next(n for n in others if world.raft(n).role is Role.LEADER)
    follower = next(n for n in others if n != current)
    world.propose(current, [b"y1"])
    world.run(10)
    # The entry after the common prefix is committed by `current` and `follower`.
    assert world.raft(follower).commit == world.raft(current).commit > world.raft(stale).commit
    # `follower` loses its data directory and, restarted, hears only the deposed leader: its
    # acknowledgement plus the deposed leader's own make a majority of the old term's voters.
    world.nodes[follower].crash()
    world.nodes[follower].wipe()
    world.network.groups = {stale: 1, follower: 1}
    world.nodes[follower].start()
    world.run(20)  # the Checker raises SafetyViolation if two entries commit at one index
    world.network.groups = {}
    world.run(10 * PLAIN.ticks_election)
    assert world.applied_datas(stale) == world.applied_datas(current)


def test_a_wiped_follower_does_not_commit_a_deposed_leaders_entries_from_heartbeats() -> None:
    """Five voters, so the deposed leader and the wiped follower are no majority: nothing wrong
    commits there. The follower's log then ends inside the current leader's commit, so it
    rejects the heartbeat and the leader lowers its match (`Progress.lost_beyond`). That match
    used to be the follower's last index, whose entries are the deposed leader's: the next
    heartbeat's `commit = min(match, commit)` committed them on the follower. Now the match is
    0 until a probe verifies the log, which walks back over the foreign entries."""
    names = ["a", "b", "c", "d", "e"]
    world = World(42, names, config=PLAIN)
    stale = elect(world)
    world.stabilize()
    others = [n for n in names if n != stale]
    world.network.groups = {stale: 1}
    world.propose(stale, [b"x1"])
    world.run_until(lambda: any(world.raft(n).role is Role.LEADER for n in others), 300)
    current = next(n for n in others if world.raft(n).role is Role.LEADER)
    follower = next(n for n in others if n != current)
    for data in (b"y1", b"y2"):
        world.propose(current, [data])
    world.run(10)
    world.nodes[follower].crash()
    world.nodes[follower].wipe()
    world.network.groups = {stale: 1, follower: 1}
    world.nodes[follower].start()
    world.run(20)
    wiped = world.raft(follower)
    assert wiped.leader == stale and wiped.last_index == world.raft(stale).last_index
    assert wiped.last_index < world.raft(current).commit  # so it rejects the heartbeat
    world.network.groups = {stale: 1}
    # The Checker raises SafetyViolation if the follower applies x1 where the others have
    # the current leader's NOOP.
    world.run(40 * PLAIN.ticks_election)
    assert world.raft(current).progress()[follower][0] == world.raft(current).last_index
    assert world.applied_datas(follower) == world.applied_datas(current)
