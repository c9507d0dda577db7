"""Review 30 (hostile review of the `raftfix` rules): rule "a removed candidate is told"
(docs/raft.md) starts a departing progress from a campaign. If the leader adds that node back
while it tracks it so, the progress must become an ordinary member's (counted, never dropped
as told) and the node must end up a voter that knows it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent.raft.core import REMOVED_NOTIFY_ELECTIONS
from superstatic_agent.raft.types import ConfChange, Message, MsgType, RaftConfig

CONFIG = RaftConfig(ticks_election=10, ticks_heartbeat=2, pre_vote=True, check_quorum=True)


def test_a_removed_candidate_added_back_while_being_told_is_a_member_again() -> None:
    world = World(25, ["a", "b", "c", "d"], config=CONFIG)
    leader = elect(world)
    gone = "d" if leader != "d" else "c"
    world.network.groups = {gone: 1}
    raft = world.raft(leader)
    raft.propose_conf_change(ConfChange("remove", gone, ""))
    world.nodes[leader].process()
    world.run((REMOVED_NOTIFY_ELECTIONS + 1) * CONFIG.ticks_election)
    removed_at = raft.commit
    assert gone not in raft.conf.members() and gone not in raft.progress(), "given up"
    # It campaigns (still cut off: what the leader sends it waits), so the rule tracks it.
    raft.step(Message(MsgType.PRE_VOTE, gone, leader, raft.term + 1, index=1, log_term=1))
    assert raft.progress()[gone][0] == 0
    # Added back while departing: a member again, in the configuration and the progress.
    raft.propose_conf_change(ConfChange("add_learner", gone, f"sim://{gone}"))
    world.nodes[leader].process()
    assert gone in raft.conf.learners and gone in raft.progress()
    world.network.groups = {}
    world.run_until(lambda: raft.progress()[gone][0] == raft.last_index, 40 * CONFIG.ticks_election)
    # Its answers passed the removal entry without dropping it (the departing mark is gone).
    assert raft.progress()[gone][0] > removed_at
    raft.propose_conf_change(ConfChange("promote", gone, ""))
    world.nodes[leader].process()
    world.run_until(lambda: gone in world.raft(gone).conf.voters, 40 * CONFIG.ticks_election)
    world.run(5 * CONFIG.ticks_election)
    assert gone in raft.progress() and world.leader() == leader
    assert world.raft(gone).commit == raft.commit
