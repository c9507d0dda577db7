"""`superstatic members`: list the cluster's members and change them through the leader.

    superstatic members list                          --agent EP[,EP...]
    superstatic members add-learner NODE --address tcp://HOST:PORT
    superstatic members promote NODE                  (learner -> voter)
    superstatic members remove NODE                   (voter or learner)
    superstatic members transfer NODE                 (leadership to a voter)

A change is one MEMBERS frame (docs/agent.md, "Membership"), answered by the leader once the
CONF entry applied there (a transfer: once the target leads). Only the leader acts; any other
agent answers `not_leader` naming the leader. Agents know each other's peer endpoints, not their
client endpoints, so this command asks STATUS of every agent given in --agent (or
$SUPERSTATIC_AGENT) to learn which id answers where, and follows the leader hint among them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Error, Unavailable
from superstatic.tools.status import add_keys_argument, format_table, use_keys

TIMEOUT_MS_MEMBERS_DEFAULT = 30_000
# STATUS of one agent while mapping ids to endpoints: a dead agent must not eat the whole budget.
TIMEOUT_MS_STATUS_PROBE = 2_000
# Pause before asking again after "busy" (another change pending) or "no leader known yet".
RETRY_MS_MEMBERS = 200
# Requests one command sends before giving up, whatever the time left: redirects, busy retries.
ATTEMPTS_MAX = 100
# Endpoints one command accepts in --agent.
AGENT_ENDPOINTS_MAX = 64

# Command-line op names -> MEMBERS ops.
OPS = {
    "add-learner": "add_learner",
    "promote": "promote",
    "remove": "remove",
    "transfer": "transfer",
}


class MembersRefused(Error):
    """The leader refused the request; `code` is the wire error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool  # REPLY (True) or ERROR (False)
    body: dict[str, Any]


def exchange(
    ctx: zmq.Context[Any],
    endpoint: str,
    frame_type: wire.FrameType,
    body: dict[str, Any],
    timeout_ms: int,
) -> Answer:
    """One request on a fresh DEALER; the REPLY or ERROR body (ERROR carries the leader hint,
    which oneshot.request does not return). Unavailable if nothing answers in time, AuthError
    if the agent refuses our key ($SUPERSTATIC_KEYS or --keys) or its role (admin needed)."""
    frame = oneshot.exchange(endpoint, frame_type, body, timeout_ms=timeout_ms, context=ctx)
    return Answer(frame.type is wire.FrameType.REPLY, frame.body)


def ms_left(deadline: float) -> int:
    """Whole milliseconds until `deadline` (monotonic), rounded up: zmq polls in milliseconds."""
    return math.ceil((deadline - time.monotonic()) * 1000)


@dataclass
class Directory:
    """Which agent id answers at which client endpoint, learned from STATUS."""

    endpoints: list[str]
    ctx: zmq.Context[Any]
    by_id: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # endpoint -> STATUS

    def probe(self, deadline: float) -> None:
        self.statuses.clear()
        for endpoint in self.endpoints:
            left_ms = ms_left(deadline)
            if left_ms <= 0:
                break
            try:
                answer = exchange(
                    self.ctx,
                    endpoint,
                    wire.FrameType.STATUS,
                    {},
                    min(TIMEOUT_MS_STATUS_PROBE, left_ms),
                )
            except Unavailable:
                continue  # down or partitioned: another agent may answer
            if answer.ok and isinstance(answer.body.get("id"), str):
                self.by_id[answer.body["id"]] = endpoint
                self.statuses[endpoint] = answer.body

    def leader_endpoint(self) -> str | None:
        """The endpoint of the leader the reachable agents name (a leader's own word first)."""
        for endpoint, status in self.statuses.items():
            if status.get("role") == "leader":
                return endpoint
        for status in self.statuses.values():
            leader = status.get("leader")
            if isinstance(leader, str) and leader in self.by_id:
                return self.by_id[leader]
        return None


def change(
    endpoints: Sequence[str], op: str, node: str, address: str, timeout_ms: int
) -> dict[str, Any]:
    """Sends one MEMBERS request to the leader and returns its REPLY body.

    Follows `not_leader` hints and retries `busy` until timeout_ms; raises MembersRefused for a
    request the leader refuses, Unavailable when no leader answers in time.
    """
    assert op in wire.MEMBERS_OPS, op
    deadline = time.monotonic() + timeout_ms / 1000.0
    body: dict[str, Any] = {"op": op, "node": node}
    if address:
        body["address"] = address
    ctx: zmq.Context[Any] = zmq.Context.instance()
    directory = Directory(list(endpoints), ctx)
    directory.probe(deadline)
    target = directory.leader_endpoint() or next(iter(directory.statuses), None)
    last = "no agent in --agent answered STATUS"
    for _ in range(ATTEMPTS_MAX):
        left_ms = ms_left(deadline)
        if left_ms <= 0:
            break
        if target is None:
            time.sleep(min(RETRY_MS_MEMBERS, left_ms) / 1000.0)
            directory.probe(deadline)
            target = directory.leader_endpoint() or next(iter(directory.statuses), None)
            continue
        answer = exchange(ctx, target, wire.FrameType.MEMBERS, body, left_ms)
        if answer.ok:
            return answer.body
        code = str(answer.body.get("code"))
        message = str(answer.body.get("message"))
        leader = answer.body.get("leader")
        last = f"{code}: {message}"
        if code == wire.ErrorCode.NOT_LEADER:
            if isinstance(leader, str) and leader in directory.by_id:
                if directory.by_id[leader] != target:
                    target = directory.by_id[leader]
                    continue  # redirected: ask the leader at once
            elif isinstance(leader, str):
                directory.probe(deadline)  # a leader we have no endpoint for yet
                if leader not in directory.by_id:
                    raise MembersRefused(
                        f"{leader} leads, and none of the agents given ({', '.join(endpoints)}) "
                        f"is {leader}: add its client endpoint to --agent",
                        code,
                    )
                target = directory.by_id[leader]
                continue
            # No leader yet (an election), or the hint was stale: ask around again shortly.
            time.sleep(min(RETRY_MS_MEMBERS, left_ms) / 1000.0)
            directory.probe(deadline)
            target = directory.leader_endpoint() or target
            continue
        if code == wire.ErrorCode.BUSY:
            time.sleep(min(RETRY_MS_MEMBERS, left_ms) / 1000.0)
            continue
        raise MembersRefused(message, code)
    raise Unavailable(
        f"{op} {node} not done within --timeout-ms {timeout_ms} ({ATTEMPTS_MAX} attempts at "
        f"most); last answer: {last}",
        outcome_known=False,
    )


def members_status(endpoints: Sequence[str], timeout_ms: int) -> dict[str, Any]:
    """The leader's STATUS if a given agent leads or names one we can reach, else the first
    that answers (a follower's table lacks match and lag)."""
    deadline = time.monotonic() + timeout_ms / 1000.0
    directory = Directory(list(endpoints), zmq.Context.instance())
    directory.probe(deadline)
    endpoint = directory.leader_endpoint()
    if endpoint is not None:
        return directory.statuses[endpoint]
    if directory.statuses:
        return next(iter(directory.statuses.values()))
    raise Unavailable(
        f"none of the agents ({', '.join(endpoints)}) answered STATUS within {timeout_ms} ms",
        outcome_known=True,
    )


def format_reply(reply: dict[str, Any]) -> str:
    voters = ",".join(reply.get("voters") or []) or "-"
    learners = ",".join(reply.get("learners") or []) or "-"
    op, node = reply.get("op"), reply.get("node")
    if op == "transfer":
        return (
            f"leader is now {node} (term {reply.get('term')}); voters {voters}, learners {learners}"
        )
    return (
        f"{op} {node}: applied at index {reply.get('index')}; voters {voters}, learners {learners}"
    )


def parse_endpoints(value: str | None) -> list[str]:
    raw = value if value is not None else os.environ.get("SUPERSTATIC_AGENT", "")
    endpoints = [part.strip() for part in raw.split(",") if part.strip()]
    if not endpoints:
        raise argparse.ArgumentTypeError(
            "give --agent ENDPOINT[,ENDPOINT...] or $SUPERSTATIC_AGENT"
        )
    if len(endpoints) > AGENT_ENDPOINTS_MAX:
        raise argparse.ArgumentTypeError(
            f"--agent lists {len(endpoints)} endpoints, above AGENT_ENDPOINTS_MAX="
            f"{AGENT_ENDPOINTS_MAX}"
        )
    return endpoints


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="superstatic members",
        description="List the members, add a learner, promote, remove, transfer leadership.",
    )
    parser.add_argument("action", choices=["list", *OPS])
    parser.add_argument("node", nargs="?", help="the agent id the change is about")
    parser.add_argument(
        "--agent",
        default=None,
        help="client endpoints, comma-separated (default $SUPERSTATIC_AGENT); list every agent "
        "so the leader can be found among them",
    )
    parser.add_argument("--address", default="", help="add-learner: the new agent's peer endpoint")
    parser.add_argument("--timeout-ms", type=int, default=TIMEOUT_MS_MEMBERS_DEFAULT)
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    add_keys_argument(parser, "an admin key: only admin keys may change the membership")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    use_keys(args.keys)
    if args.timeout_ms < 1:
        parser.error("--timeout-ms must be positive")
    try:
        endpoints = parse_endpoints(args.agent)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.action == "list":
        if args.node is not None:
            parser.error("list takes no NODE")
        status = members_status(endpoints, args.timeout_ms)
        print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_table(status))
        return 0
    if not args.node:
        parser.error(f"{args.action} needs a NODE (an agent id)")
    if args.action == "add-learner" and not args.address:
        parser.error("add-learner needs --address tcp://HOST:PORT (the new agent's peer endpoint)")
    if args.action != "add-learner" and args.address:
        parser.error("--address is only for add-learner")
    reply = change(endpoints, OPS[args.action], args.node, args.address, args.timeout_ms)
    print(json.dumps(reply, indent=2, sort_keys=True) if args.json else format_reply(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
