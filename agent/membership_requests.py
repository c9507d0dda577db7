"""MEMBERS requests from operators (`superstatic members`): configuration changes proposed to
the core and answered once their CONF entry applies here, leadership transfers answered once
the target leads. See docs/agent.md, Membership.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from superstatic_agent.config import NODE_ID_CHARS_MAX, AgentConfig
from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.types import (
    ADDRESS_BYTES_MAX,
    ConfChange,
    ConfState,
    Dropped,
    EntryKind,
    Ready,
    Role,
)

from superstatic.protocol import wire

log = logging.getLogger("superstatic.agent")

# MEMBERS requests waiting for their CONF entry to apply or their transfer to happen. The core
# takes one configuration change at a time, but several operators may wait on one transfer.
MEMBERS_WAITING_MAX = 16

# A learner is promoted only once the leader replicates to it (not probing, no snapshot out)
# and its log is within this many entries of the leader's commit. Promoting one that holds
# nothing makes it count towards the quorum before it can vote or acknowledge: with a voter
# down, that left a cluster without a leader (docs/agent.md, Membership; thesis 4.2.1). The
# refusal is `busy`, so `superstatic members promote` retries until it caught up or
# --timeout-ms. 256 entries is a few batches under load: a learner keeping pace is always
# within it.
PROMOTE_LAG_ENTRIES_MAX = 256
LEARNER_BEHIND = "it has not caught up"

# The wire bounds a MEMBERS request by the same limits the core and config enforce.
assert wire.MEMBER_ID_CHARS_MAX == NODE_ID_CHARS_MAX
assert wire.MEMBER_ADDRESS_BYTES_MAX == ADDRESS_BYTES_MAX

# Answers an operator with a REPLY frame.
SendReply = Callable[[bytes, int, dict[str, Any]], None]


class SendError(Protocol):
    """Answers an operator with an ERROR frame naming `leader` (default: the one we know)."""

    def __call__(
        self,
        identity: bytes,
        req_id: int,
        code: wire.ErrorCode,
        message: str,
        leader: str | None = None,
    ) -> None: ...


@dataclass(slots=True)
class MembersWait:
    """An operator waiting for a MEMBERS request: a configuration change until its CONF entry
    (index, term) applies here, a transfer until its target leads."""

    identity: bytes
    req_id: int
    request: wire.MembersRequest
    deadline: float
    index: int = 0
    term: int = 0


class MembershipRequests:
    """The operators waiting on this agent, at most MEMBERS_WAITING_MAX."""

    def __init__(
        self, config: AgentConfig, node: RaftNode, reply: SendReply, error: SendError
    ) -> None:
        self.config = config
        self.id = config.node_id
        self.node = node
        self._reply = reply
        self._error = error
        self._waits: list[MembersWait] = []

    def waiting(self) -> bool:
        return bool(self._waits)

    def on_request(self, identity: bytes, frame: wire.Frame, now: float) -> None:
        request = wire.parse_members(frame)
        if len(self._waits) >= MEMBERS_WAITING_MAX:
            self._error(
                identity,
                frame.req_id,
                wire.ErrorCode.BUSY,
                f"MEMBERS_WAITING_MAX={MEMBERS_WAITING_MAX} requests already wait; retry later",
            )
            return
        node = self.node
        if node.role is not Role.LEADER:
            # The operator's command knows every agent's client endpoint, we only know peer
            # endpoints: it retries at the leader we name.
            where = f"agent {node.leader} leads" if node.leader else "no leader is known yet"
            self._error(
                identity,
                frame.req_id,
                wire.ErrorCode.NOT_LEADER,
                f"membership changes go to the leader; {where}",
                node.leader,
            )
            return
        wait = MembersWait(
            identity, frame.req_id, request, now + self.config.timeout_ms_proposal / 1000.0
        )
        try:
            if request.op == "transfer":
                if request.node == self.id:
                    self._reply(identity, frame.req_id, self._members_reply(request, 0))
                    return
                node.transfer_leadership(request.node)
            else:
                reason = members_refusal(node.conf, request) or promote_refusal(
                    node.progress(), node.commit, request
                )
                if reason is not None:
                    raise Dropped(reason, self.id)
                change = ConfChange(request.op, request.node, request.address)
                node.propose_conf_change(change)
                wait.index, wait.term = node.last_index, node.term
        except Dropped as exc:
            self._error(
                identity,
                frame.req_id,
                members_dropped_code(exc.reason),
                f"{request.op} {request.node} refused: {exc.reason}",
                exc.leader,
            )
            return
        if wait.index:
            log.info(
                "operator asked to %s %s: CONF entry %d proposed",
                request.op,
                request.node,
                wait.index,
            )
        else:
            log.info("operator asked to transfer leadership to %s", request.node)
        self._waits.append(wait)

    def _members_reply(self, request: wire.MembersRequest, index: int) -> dict[str, Any]:
        conf = self.node.conf
        return {
            "op": request.op,
            "node": request.node,
            "index": index,
            "leader": self.node.leader,
            "term": self.node.term,
            "voters": list(conf.voters),
            "learners": list(conf.learners),
        }

    def settle_applied(self, ready: Ready) -> None:
        """Answers the changes whose index this Ready applied: done if the entry there is
        still ours (same term), refused if a new leader's log replaced it."""
        committed = ready.committed
        first = committed[0].index
        for wait in list(self._waits):
            if not wait.index or not first <= wait.index <= committed[-1].index:
                continue
            self._waits.remove(wait)
            entry = committed[wait.index - first]
            assert entry.index == wait.index, (entry.index, wait.index)
            request = wait.request
            if entry.term == wait.term and entry.kind is EntryKind.CONF:
                log.info("%s %s applied at index %d", request.op, request.node, entry.index)
                self._reply(wait.identity, wait.req_id, self._members_reply(request, entry.index))
            else:
                self._error(
                    wait.identity,
                    wait.req_id,
                    wire.ErrorCode.NOT_LEADER,
                    f"{request.op} {request.node} not applied: leadership changed and a new "
                    f"leader's entry replaced index {wait.index}; retry",
                )

    def settle(self, now: float, applied: int) -> None:
        """Transfers done or abandoned, changes past their deadline (housekeeping)."""
        node = self.node
        for wait in list(self._waits):
            request = wait.request
            message = ""
            if wait.index:
                if applied >= wait.index:
                    # A snapshot carried this agent past the entry without showing it.
                    message = (
                        f"{request.op} {request.node}: index {wait.index} was applied from a "
                        "snapshot; the outcome is unknown here: see `superstatic members list`"
                    )
                elif now >= wait.deadline:
                    message = (
                        f"{request.op} {request.node} not applied within timeout_ms_proposal="
                        f"{self.config.timeout_ms_proposal}; the outcome is unknown: see "
                        "`superstatic members list`"
                    )
            elif node.leader == request.node:
                self._waits.remove(wait)
                self._reply(wait.identity, wait.req_id, self._members_reply(request, 0))
                continue
            elif node.role is Role.LEADER and node.transferee != request.node:
                message = (
                    f"transfer to {request.node} abandoned: it did not take over within an "
                    "election timeout (is it up and caught up?)"
                )
            elif node.leader is not None and node.role is not Role.LEADER:
                message = f"transfer to {request.node} failed: {node.leader} leads instead"
            elif now >= wait.deadline:
                message = (
                    f"transfer to {request.node} not done within timeout_ms_proposal="
                    f"{self.config.timeout_ms_proposal}"
                )
            if message:
                self._waits.remove(wait)
                self._error(wait.identity, wait.req_id, wire.ErrorCode.UNAVAILABLE, message)


def members_refusal(conf: ConfState, request: wire.MembersRequest) -> str | None:
    """Operator mistakes named plainly, before the core's own (terser) refusal rules."""
    node = request.node
    if request.op == "promote" and node in conf.voters:
        return f"{node} is already a voter"
    if request.op in ("promote", "remove") and node not in conf.members():
        return f"{node} is not a member (members: {', '.join(conf.members())})"
    if request.op == "remove" and conf.voters == (node,):
        return "cannot remove the last voter"
    return None


def promote_refusal(
    progress: dict[str, tuple[int, int, str]], commit: int, request: wire.MembersRequest
) -> str | None:
    """Why the learner `request.node` cannot be promoted yet (the leader's view), or None."""
    if request.op != "promote":
        return None
    match, _next, state = progress.get(request.node, (0, 0, "probe"))
    behind = max(0, commit - match)
    if state == "replicate" and behind <= PROMOTE_LAG_ENTRIES_MAX:
        return None
    return (
        f"{LEARNER_BEHIND}: it is {behind} entries behind the commit index (at most "
        f"PROMOTE_LAG_ENTRIES_MAX={PROMOTE_LAG_ENTRIES_MAX}) and the leader holds it in "
        f"{state} state (replicate needed); is its agent up? `superstatic members list` shows "
        "its lag"
    )


def members_dropped_code(reason: str) -> wire.ErrorCode:
    """Wire code for a MEMBERS request the core refused: a retry helps only when another
    change or transfer is under way, or leadership moves."""
    if reason in ("not leader", "no leader"):
        return wire.ErrorCode.NOT_LEADER
    if reason in ("a configuration change is still uncommitted", "leadership transfer in progress"):
        return wire.ErrorCode.BUSY
    if reason.startswith(LEARNER_BEHIND):
        return wire.ErrorCode.BUSY  # it may catch up: the command asks again
    return wire.ErrorCode.BAD_REQUEST
