"""Review 28: --rules-max 1 does not hold a new cluster at rules 1.

docs/agent.md says a lower --rules-max "holds the cluster at older rules", and a new
cluster's leader proposes its newest rules at once "unless a member already said it knows
less". But a member tells its leader only while the version in force is below its own
--rules-max (RulesGate.tell): one held at 1 in a cluster at 1 never says anything, so the
leader of a new cluster cannot learn of the hold and moves to 2 in its first entry; every
held member then halts at it (rules_unknown). Held voters that are a majority leave the new
cluster without a quorum. (No divergence: availability, and an operator's hold overridden.)
Fixed on rulesnew: a member tells a new leader what it applies at once, at its cap too, and
a new cluster's leader holds client proposals until every member said so (agent/rules_gate.py).
"""

from __future__ import annotations

from superstatic_agent.rules_gate import RulesGate


def test_a_member_held_at_rules_1_keeps_a_new_clusters_leader_at_rules_1() -> None:
    leader = RulesGate("a", rules_max=2, version=1)
    leader.start_new(1, 0.0)
    held = RulesGate("b", rules_max=1, version=1)
    known = held.tell("a", 1, 0.0)
    if known is not None:
        leader.heard(known, 0.0)
    assert leader.to_propose_new(1, ("a", "b"), 0.0) is None
    # Decided at once from the held member's word (not left to the wait's end): the client
    # proposals held meanwhile go in under rules 1.
    assert not leader.holding(1)
    assert leader.silent == ()
