"""Cluster membership: applying single-server changes, and the majority arithmetic over voters.

Changes are applied with "set the status of one node" semantics, so replaying a CONF entry
on a configuration that already contains it is harmless (a restart may replay entries onto the
configuration storage held).
"""

from __future__ import annotations

from collections.abc import Mapping

from superstatic_agent.raft.types import ConfChange, ConfState


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    voters = set(conf.voters)
    learners = set(conf.learners)
    addresses = dict(conf.addresses)
    node = change.node
    voters.discard(node)
    learners.discard(node)
    if change.op == "remove":
        addresses.pop(node, None)
    elif change.op == "add_learner":
        learners.add(node)
    else:  # "promote" / "add_voter"
        voters.add(node)
    if change.address:
        addresses[node] = change.address
    return ConfState.make(voters, learners, addresses)


def refusal(conf: ConfState, change: ConfChange) -> str | None:
    """Why the leader refuses to propose this change now (None: it may)."""
    node = change.node
    if change.op == "add_learner":
        if node in conf.voters or node in conf.learners:
            return f"{node} is already a member"
        if not change.address:
            return "add_learner needs the peer address"
    elif change.op == "promote":
        if node not in conf.learners:
            return f"{node} is not a learner"
    elif change.op == "add_voter":
        if node in conf.voters:
            return f"{node} is already a voter"
        if node not in conf.learners and not change.address:
            return "add_voter of a new node needs the peer address"
    elif change.op == "remove":
        if node not in conf.voters and node not in conf.learners:
            return f"{node} is not a member"
        if conf.voters == (node,):
            return "cannot remove the last voter"
    return None


def quorum(voters_count: int) -> int:
    assert voters_count >= 1
    return voters_count // 2 + 1


def committed_index(voters: tuple[str, ...], matches: Mapping[str, int]) -> int:
    """The largest index a majority of voters hold (missing voters count as 0)."""
    ordered = sorted((matches.get(voter, 0) for voter in voters), reverse=True)
    return ordered[quorum(len(voters)) - 1]


def vote_result(voters: tuple[str, ...], votes: Mapping[str, bool]) -> bool | None:
    """True: won, False: lost, None: still undecided."""
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    needed = quorum(len(voters))
    if granted >= needed:
        return True
    if rejected > len(voters) - needed:
        return False
    return None
