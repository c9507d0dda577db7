"""`superstatic inspect`: a browser of the object graph, read from one agent's applied state.

    superstatic inspect --agent EP                       the roots, with kind, items and size
    superstatic inspect 'config.users[3].name' --agent EP   a node or value by root and path
    superstatic inspect --ref OID --agent EP             a node by object id (follow a reference)
    superstatic inspect PATH --watch [--count N] [--seconds S]   then print changes as they commit

PATH is a root name followed by steps: `.name` (a dict key or an attribute), `[3]` (a list
index or an int key), `["any key"]` (a str key that is not a Python name). Root names may hold
dots themselves (`billing.ledger`): the longest root name that starts PATH is taken.

A node is printed as JSON on stdout (its description on stderr, so stdout stays parseable);
nodes deeper than `--depth`, and nodes already printed, appear as `{"__ref__": OID}`: follow one
with `--ref OID`. Answers are bounded by the agent (items per container, nodes, bytes; see
docs/operations.md): `truncated` says when it cut.

`--watch` subscribes to the agent's stream from the index it answered at and prints each
committed operation that touches the node shown (or a container on its path), then shows the
node again when `--show-values` is given. It keeps only the set of object ids it watches
(bounded by the agent's answer), acknowledges the stream like an app does, and stops after
`--count` matching commits or `--seconds` (default: until Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import zmq

from superstatic.client import keys as client_keys
from superstatic.client import oneshot
from superstatic.protocol import codec, ops, wire
from superstatic.protocol.errors import Error, ProtocolError, Unavailable
from superstatic.tools.status import add_keys_argument, use_keys

TIMEOUT_MS_DEFAULT = 5_000
# How often --watch acknowledges its stream (the agent drops a silent subscriber after 15 s and
# pauses one that leaves too much unacknowledged).
WATCH_PING_MS = 500
# Resubscriptions (after `lagging`) before --watch gives up.
WATCH_RESUBSCRIBES_MAX = 10
# Characters of one printed value in a --watch line.
WATCH_VALUE_CHARS_MAX = 200

_STEP = re.compile(
    r"""\.(?P<name>[^.\[\]]+)|\[(?P<int>-?\d+)\]|\[(?P<q>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\]"""
)


class PathError(Error):
    """PATH does not parse."""


def parse_steps(text: str) -> list[str | int]:
    """`.users[3].name` -> ["users", 3, "name"]; `["a b"]` -> ["a b"]."""
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None:
            raise PathError(
                f'cannot read the path at {text[pos:]!r}: steps are .name, [3] or ["key"]'
            )
        if match.group("name") is not None:
            steps.append(match.group("name"))
        elif match.group("int") is not None:
            steps.append(int(match.group("int")))
        else:
            steps.append(json.loads('"' + match.group("q")[1:-1].replace('\\"', '"') + '"'))
        pos = match.end()
    if len(steps) > wire.INSPECT_PATH_STEPS_MAX:
        raise PathError(f"the path has {len(steps)} steps, above {wire.INSPECT_PATH_STEPS_MAX}")
    return steps


def split_path(text: str, roots: Sequence[str]) -> tuple[str, list[str | int]]:
    """(root, steps): the longest root name PATH starts with (followed by `.`, `[` or the
    end); with none, the part before the first `.` or `[` (or all of it, as a root name: the
    agent then says there is no such root)."""
    best = ""
    for name in roots:
        if text.startswith(name) and len(name) > len(best):
            rest = text[len(name) :]
            if not rest or rest[0] in ".[":
                best = name
    if not best:
        return text, []
    return best, parse_steps(text[len(best) :])


def _request(agent: str, body: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
    return oneshot.request(agent, wire.FrameType.INSPECT, body, timeout_ms=timeout_ms)


def root_names(agent: str, timeout_ms: int) -> list[str]:
    listing = _request(agent, {"list": True}, timeout_ms)
    return [str(r["name"]) for r in listing.get("roots", [])]


def describe(answer: dict[str, Any]) -> str:
    if answer.get("kind") == "value":
        return f"{answer['path']}: a plain value (its container is shown by the path above it)"
    kind = answer.get("class") or answer.get("kind")
    return (
        f"{answer['path']}: {kind}, {answer['items']} items, {answer['bytes']} bytes, "
        f"version {answer['version']}, id {answer['oid']}, as of index {answer['applied']}"
        + (
            " (truncated: see --depth, or follow a reference with --ref)"
            if answer.get("truncated")
            else ""
        )
    )


def print_roots(listing: dict[str, Any]) -> None:
    rows = [("root", "kind", "items", "bytes", "version", "id")]
    for r in listing["roots"]:
        rows.append(
            (
                r["name"],
                str(r.get("class") or r["kind"]),
                str(r["items"]),
                str(r["bytes"]),
                str(r["version"]),
                str(r.get("oid", "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())
    more = " (more: raise --limit)" if listing.get("truncated") else ""
    print(f"{listing['count']} roots, as of index {listing['applied']}{more}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="superstatic inspect",
        description="Browse the object graph: roots, nodes by path or id, changes as they commit.",
    )
    parser.add_argument("path", nargs="?", help='ROOT[.key][3]["key"]...; none: list the roots')
    parser.add_argument(
        "--agent",
        default=os.environ.get("SUPERSTATIC_AGENT", "").split(",")[0] or None,
        help="client endpoint, e.g. tcp://127.0.0.1:7501 (default: $SUPERSTATIC_AGENT's first)",
    )
    parser.add_argument("--ref", metavar="OID", help="show the node with this object id")
    parser.add_argument(
        "--depth",
        type=int,
        default=wire.INSPECT_DEPTH_MAX,
        help='levels of nodes to expand below the one shown (deeper ones: {"__ref__": id})',
    )
    parser.add_argument("--limit", type=int, default=wire.INSPECT_ROOTS_MAX, help="roots listed")
    parser.add_argument("--json", action="store_true", help="print the agent's whole answer")
    parser.add_argument("--watch", action="store_true", help="then print changes as they commit")
    parser.add_argument("--count", type=int, default=0, help="--watch: stop after N commits")
    parser.add_argument("--seconds", type=float, default=0.0, help="--watch: stop after S s")
    parser.add_argument(
        "--show-values", action="store_true", help="--watch: print the node again after a change"
    )
    parser.add_argument("--timeout-ms", type=int, default=TIMEOUT_MS_DEFAULT)
    add_keys_argument(parser)
    args = parser.parse_args(argv)
    use_keys(args.keys)
    if not args.agent:
        parser.error("give --agent ENDPOINT (or set SUPERSTATIC_AGENT)")
    if not 0 <= args.depth <= wire.INSPECT_DEPTH_MAX:
        parser.error(f"--depth must be in 0..{wire.INSPECT_DEPTH_MAX}")
    if not 1 <= args.limit <= wire.INSPECT_ROOTS_MAX:
        parser.error(f"--limit must be in 1..{wire.INSPECT_ROOTS_MAX}")
    if args.path is None and args.ref is None:
        if args.watch:
            parser.error("--watch needs a PATH or --ref")
        listing = _request(args.agent, {"list": True, "limit": args.limit}, args.timeout_ms)
        if args.json:
            print(json.dumps(listing, indent=2, sort_keys=True))
        else:
            print_roots(listing)
        return 0
    if args.path is not None and args.ref is not None:
        parser.error("give a PATH or --ref, not both")
    body = _body(args)
    answer = _request(args.agent, body, args.timeout_ms)
    if not answer.get("found"):
        print(f"superstatic inspect: {answer.get('missing')}", file=sys.stderr)
        return 1
    _print_answer(answer, as_json=args.json)
    if args.watch:
        return Watch(args.agent, body, answer, args).run()
    return 0


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.ref is not None:
        return {"oid": args.ref, "depth": args.depth}
    try:
        names = root_names(args.agent, args.timeout_ms)
    except ProtocolError:  # an older agent: {"root": name} only
        names = []
    root, steps = split_path(args.path, names)
    return {"root": root, "path": steps, "depth": args.depth}


def _print_answer(answer: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return
    print(describe(answer), file=sys.stderr)
    print(json.dumps(answer.get("value"), indent=2, sort_keys=True, default=str))


def render_value(value: Any) -> str:
    def plain(v: Any) -> Any:
        if type(v) is codec.Ref:
            return f"<node {v.oid}>"
        if isinstance(v, bytes):
            return {"__bytes__": v.hex()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, frozenset):
            return sorted((plain(x) for x in v), key=str)
        return v

    text = json.dumps(plain(value), default=str)
    if len(text) > WATCH_VALUE_CHARS_MAX:
        text = text[: WATCH_VALUE_CHARS_MAX - 3] + "..."
    return text


def _sub(where: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{where}.{key}"
    return f"{where}[{render_value(key)}]"


def render_op(op: list[Any], where: str) -> str:
    tag = op[0]
    if tag == "set":
        return f"{_sub(where, op[2])} = {render_value(op[3])}"
    if tag == "del":
        return f"del {_sub(where, op[2])}"
    if tag == "clear":
        return f"{where}.clear()"
    if tag == "splice":
        return f"{where}[{op[2]}:{op[3]}] = {render_value(op[4])}"
    if tag == "extend":
        return f"{where}.extend({render_value(op[2])})"
    if tag == "add":
        return f"{where}.update({render_value(op[2])})"
    if tag == "discard":
        return f"{where}.difference_update({render_value(op[2])})"
    return f"{tag} {render_value(op[1:])}"


class Watch:
    """Follows one agent's stream and prints the commits that touch what is shown."""

    def __init__(
        self, agent: str, body: dict[str, Any], answer: dict[str, Any], args: argparse.Namespace
    ) -> None:
        self.agent = agent
        self.body = body
        self.args = args
        self.timeout_ms = args.timeout_ms
        self.printed = 0
        self.watched: dict[str, str] = {}  # oid -> path: any change to it is printed
        self.ancestors: dict[str, tuple[str, Any]] = {}  # oid -> (path, the key taken there)
        self.applied = int(answer["applied"])
        self._learn(answer)

    def _learn(self, answer: dict[str, Any]) -> None:
        """Which object ids matter: the node's subtree (as expanded), and the containers on
        the path, where only a change to the key the path takes counts."""
        base = str(answer.get("path", ""))
        self.watched = {oid: base + rel for oid, rel in answer.get("oids", {}).items()}
        self.ancestors = {
            oid: (where, step)
            for oid, where, step in answer.get("ancestors", [])
            if oid not in self.watched
        }

    def _matters(self, op: list[Any]) -> str | None:
        """The path to print `op` against, or None if it cannot change what is shown."""
        oid = op[1]
        if op[0] == "new":
            return None
        if oid in self.watched:
            return self.watched[oid]
        if oid not in self.ancestors:
            return None
        where, step = self.ancestors[oid]
        tag = op[0]
        if tag in ("set", "del") and op[2] == step and type(op[2]) is type(step):
            return where
        if tag in ("clear", "splice"):  # a splice may move the index the path takes
            return where
        return None

    def run(self) -> int:
        deadline = time.monotonic() + self.args.seconds if self.args.seconds > 0 else None
        print(f"watching from index {self.applied} (Ctrl-C stops)", file=sys.stderr)
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        keys = client_keys.resolve(None)  # --keys / $SUPERSTATIC_KEYS: CURVE for a keyed agent
        if keys is not None:
            keys.apply(sock)
        sock.connect(self.agent)
        req_ids = iter(range(1, 1 << 62))
        try:
            sub_id = next(req_ids)
            sock.send(
                wire.encode(
                    wire.FrameType.SUBSCRIBE,
                    sub_id,
                    {"from": self.applied, "model": wire.DATA_MODEL},
                )
            )
            received = 0
            resubscribes = 0
            next_ping = time.monotonic()
            last_heard = time.monotonic()
            while deadline is None or time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_ping:
                    next_ping = now + WATCH_PING_MS / 1000.0
                    ping = {"stream": [sub_id, received]}
                    sock.send(wire.encode(wire.FrameType.PING, next(req_ids), ping))
                if now - last_heard > self.timeout_ms / 1000.0 + 1.0:
                    raise Unavailable(
                        f"agent at {self.agent} stopped answering (no PING reply within "
                        f"{self.timeout_ms} ms)",
                        outcome_known=True,
                    )
                if not sock.poll(WATCH_PING_MS // 2, zmq.POLLIN):
                    continue
                data = sock.recv()
                last_heard = time.monotonic()
                frame = wire.decode(data, wire.AGENT_TO_CLIENT)
                if frame.type is wire.FrameType.ERROR:
                    if frame.req_id != sub_id or frame.body.get("code") != "lagging":
                        raise ProtocolError(
                            f"agent at {self.agent}: {frame.body.get('code')}: "
                            f"{frame.body.get('message')}"
                        )
                    resubscribes += 1
                    if resubscribes > WATCH_RESUBSCRIBES_MAX:
                        raise Unavailable("the stream lagged too often", outcome_known=True)
                    sub_id = next(req_ids)
                    received = 0
                    sock.send(
                        wire.encode(
                            wire.FrameType.SUBSCRIBE,
                            sub_id,
                            {"from": self.applied, "model": wire.DATA_MODEL},
                        )
                    )
                    continue
                if frame.req_id == sub_id:
                    received += len(data)
                is_events = frame.type is wire.FrameType.EVENTS and frame.req_id == sub_id
                if is_events and self._on_events(frame.body.get("ev", [])):
                    return 0
                # SNAPSHOT frames (the index was compacted meanwhile) carry no changes to
                # print: the events after them do.
        except KeyboardInterrupt:
            return 0
        finally:
            sock.close(linger=0)
        return 0

    def _on_events(self, events: list[Any]) -> bool:
        """Prints the matching commits; True once --count is reached."""
        for event in events:
            index, client, _seq, outcome, body, _collected = event[:6]
            if index <= self.applied:
                continue
            self.applied = index
            if outcome != "ok" or not body:
                continue
            try:
                _reads, txn_ops = ops.decode_txn(body)
            except Exception:  # not ours to judge: the agent applied it
                continue
            lines = []
            for op in txn_ops:
                where = self._matters(op)
                if where is not None:
                    lines.append(render_op(op, where))
            if not lines:
                continue
            who = f" by {str(client)[:8]}" if client else ""
            print(f"#{index}{who}: " + "; ".join(lines), flush=True)
            self.printed += 1
            # The shape may have changed (new nodes, a container replaced): ask again.
            answer = _request(self.agent, self.body, self.timeout_ms)
            if answer.get("found"):
                self._learn(answer)
                if self.args.show_values:
                    print(json.dumps(answer.get("value"), sort_keys=True, default=str), flush=True)
            else:
                print(f"  now: {answer.get('missing')}", flush=True)
            if self.args.count and self.printed >= self.args.count:
                return True
        return False
