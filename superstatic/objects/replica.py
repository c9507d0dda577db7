"""The local replica: every node of the cluster's object graph, kept current from the log.

Implements `ReplicaSink` (docs/architecture.md section 6). The connection's I/O thread calls
`load_snapshot` and `apply_events`; each log entry is applied atomically with respect to
transaction bodies, which run holding the same lock, so a body always sees a prefix of the log.
Ops are applied with `superstatic.protocol.ops.apply_op`, the function the agent's state machine
uses, so both reach the same state by construction. Refs in values are resolved to the proxy or
shared instance of their target; nodes created together (a snapshot, or the "new" ops of one
entry) are allocated in a first pass so they can reference each other, cycles included.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from superstatic.objects.factory import make_node
from superstatic.objects.fairness import ContentionTracker
from superstatic.objects.node import Node, node_of
from superstatic.protocol import codec as _codec
from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import ProtocolError

if TYPE_CHECKING:
    from superstatic.objects.session import Session
    from superstatic.objects.txn import Txn

ROOTS_OID = "@roots"
# describe() walks the graph to name a node in an error message; it gives up past this many
# nodes and names the node by its id instead.
DESCRIBE_NODES_MAX = 100_000

Event = tuple[int, "str | None", "int | None", str, "bytes | None", Sequence[str]]


class Replica:
    """The app's copy of the object graph (a prefix of the log)."""

    def __init__(self) -> None:
        # Re-entrant: a transaction body holds it and may call plain(), which takes it too.
        self.lock = threading.RLock()
        self.applied_index = 0
        self.nodes: dict[str, Node] = {}
        self.session: Session | None = None
        # Who keeps losing optimistic races, from the stream's outcomes (superstatic/fairness.py).
        self.contention = ContentionTracker()
        # Private nodes of a transaction being committed: when the entry creating them applies,
        # the replica adopts these very objects, so references the body handed out stay valid.
        self._adopt: dict[str, Node] = {}

    # ------------------------------------------------------------------ ReplicaSink

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, bytes]]) -> None:
        """Replaces everything with the snapshot at `index`. Nodes that survive keep their
        identity (same proxy / instance), refilled in place."""
        records: list[tuple[str, int, str, Any]] = []
        for oid, data in nodes:
            version, kind, contents = _codec.decode_record(data)
            records.append((oid, version, kind, contents))
        with self.lock:
            fresh: dict[str, Node] = {}
            for oid, version, kind, contents in records:
                class_name = contents[0] if kind == "obj" else None
                node = self._claim(oid, kind, class_name, fresh_from=self.nodes)
                node.version = version
                fresh[oid] = node
            for oid, node in self.nodes.items():
                if oid not in fresh:
                    node.dead = True
            self.nodes = fresh
            for oid, _version, kind, contents in records:
                self._fill(fresh[oid], kind, contents, {})
            self.applied_index = index

    def apply_events(self, events: Sequence[Event]) -> None:
        for event in events:
            index, client, _seq, outcome, body, collected = event
            with self.lock:
                if index <= self.applied_index:
                    continue  # already covered by a snapshot or an earlier delivery
                self.contention.observe(client, outcome)
                if outcome == "ok" and body:
                    _reads, wire_ops = _ops.decode_txn(body)
                    self._apply_ops(index, wire_ops)
                for oid in collected:
                    self._drop(oid)
                self.applied_index = index

    # ------------------------------------------------------------------ library side

    def roots_node(self) -> Node | None:
        return self.nodes.get(ROOTS_OID)

    def root_ref(self, name: str) -> Any:
        roots = self.nodes.get(ROOTS_OID)
        return None if roots is None else roots.live.get(name)

    def expect_new(self, nodes: Iterable[Node]) -> None:
        with self.lock:
            for node in nodes:
                self._adopt[node.oid] = node

    def forget_new(self, oids: Iterable[str]) -> None:
        with self.lock:
            for oid in oids:
                self._adopt.pop(oid, None)

    def new_node(self, oid: str, kind: str, class_name: str | None, owner: Txn | None) -> Node:
        """A new node of this replica (empty; private to `owner` until its entry applies)."""
        return make_node(self, oid, kind, class_name, owner)

    def describe(self, node: Node) -> str:
        """A readable path to `node` from a root, for error messages."""
        if node.txn is not None:
            return f"a new {node.kind} created in this transaction"
        with self.lock:
            roots = self.nodes.get(ROOTS_OID)
            if roots is None or node.dead:
                return f"object {node.oid}"
            paths: dict[str, str] = {}
            queue: deque[Node] = deque()
            for name, ref in list(roots.live.items()):
                target = node_of(ref)
                if target is not None and target.oid not in paths:
                    paths[target.oid] = f"root {name!r}"
                    queue.append(target)
            while queue and len(paths) < DESCRIBE_NODES_MAX:
                current = queue.popleft()
                if current is node:
                    return paths[current.oid]
                for step, value in _children(current):
                    target = node_of(value)
                    if target is not None and target.oid not in paths:
                        paths[target.oid] = paths[current.oid] + step
                        queue.append(target)
            return paths.get(node.oid, f"object {node.oid}")

    # ------------------------------------------------------------------ internals

    def _claim(
        self, oid: str, kind: str, class_name: str | None, fresh_from: dict[str, Node]
    ) -> Node:
        """The node object for `oid`: an adopted private node, a surviving one (emptied), or new."""
        adopted = self._adopt.pop(oid, None)
        if adopted is not None and adopted.kind == kind and adopted.class_name == class_name:
            adopted.txn = None
            adopted.live.clear()
            return adopted
        old = fresh_from.get(oid)
        if old is not None and old.kind == kind and old.class_name == class_name and not old.dead:
            old.live.clear()
            return old
        if old is not None:
            old.dead = True
        return make_node(self, oid, kind, class_name, None)

    def _fill(self, node: Node, kind: str, contents: Any, created: dict[str, Node]) -> None:
        live = node.live
        if kind == "dict":
            for key, value in contents:
                live[self._resolve(key, created)] = self._resolve(value, created)
        elif kind == "list":
            live.extend(self._resolve(v, created) for v in contents)
        elif kind == "set":
            live.update(self._resolve(v, created) for v in contents)
        else:
            for name, value in contents[1]:
                live[name] = self._resolve(value, created)

    def _resolve(self, value: Any, created: dict[str, Node]) -> Any:
        tp = type(value)
        if tp in _codec.SCALAR_TYPES:
            return value
        if tp is _codec.Ref:
            node = created.get(value.oid) or self.nodes.get(value.oid)
            if node is None:
                raise ProtocolError(
                    f"the log references object {value.oid}, unknown to this replica"
                )
            return node.ref
        if tp is tuple:
            return tuple(self._resolve(x, created) for x in value)
        if tp is frozenset:
            return frozenset(self._resolve(x, created) for x in value)
        return value

    def _resolve_list(self, values: Sequence[Any], created: dict[str, Node]) -> list[Any]:
        return [self._resolve(v, created) for v in values]

    def _apply_ops(self, index: int, wire_ops: Sequence[Sequence[Any]]) -> None:
        created: dict[str, Node] = {}
        for op in wire_ops:
            if op[0] == "new":
                _tag, oid, kind, contents = op
                class_name = contents[0] if kind == "obj" else None
                created[oid] = self._claim(oid, kind, class_name, fresh_from=self.nodes)
        for oid, node in created.items():
            self.nodes[oid] = node
        touched: list[Node] = []
        for op in wire_ops:
            tag = op[0]
            if tag == "new":
                node = created[op[1]]
                self._fill(node, op[2], op[3], created)
                touched.append(node)
                continue
            node = self.nodes[op[1]]
            if tag == "set":
                live_op: list[Any] = [
                    tag,
                    op[1],
                    self._resolve(op[2], created),
                    self._resolve(op[3], created),
                ]
            elif tag == "del":
                live_op = [tag, op[1], self._resolve(op[2], created)]
            elif tag == "splice":
                live_op = [tag, op[1], op[2], op[3], self._resolve_list(op[4], created)]
            elif tag in ("extend", "add", "discard"):
                live_op = [tag, op[1], self._resolve_list(op[2], created)]
            else:
                live_op = list(op)
            _ops.apply_op(node.kind, node.live, live_op)
            touched.append(node)
        for node in touched:
            node.version = index

    def _drop(self, oid: str) -> None:
        node = self.nodes.pop(oid, None)
        if node is not None:
            node.dead = True
        adopted = self._adopt.pop(oid, None)
        if adopted is not None:
            adopted.dead = True
            adopted.txn = None


def _children(node: Node) -> Iterable[tuple[str, Any]]:
    live = node.live
    if node.kind == "dict":
        for key, value in list(live.items()):
            yield f"[{key!r}]", value
    elif node.kind == "obj":
        for name, value in list(live.items()):
            yield f".{name}", value
    elif node.kind == "list":
        for i, value in enumerate(list(live)):
            yield f"[{i}]", value
    else:
        for value in list(live):
            yield " (a set element)", value
