"""Transactions: recorded read versions, buffered writes, copy-on-write shadows.

A transaction body runs in one thread holding its replica's apply lock, so it reads a consistent
prefix of the log. Reads of an existing node record the node's version (once). Writes to an
existing node are buffered; the first read of the node after a write copies it into a private
*shadow* with the buffered writes applied; every later read and write of that node in this
transaction goes to the shadow, so the body sees its own writes while other threads keep
reading the replica untouched. Nodes created in the transaction are private until commit.

Read recording must not slow reads outside transactions. Proxy classes and generated shared
classes therefore register *overlays* (Python read methods that consult the current transaction)
which are installed on the classes only while at least one transaction body executes in this
process, and removed when none does: setting or deleting a dunder on a class updates its type
slots, so outside transactions item reads go through wrapt's C slots and attribute reads are
native. Toggling costs a few microseconds per body (docs/library.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import Error, LimitExceeded

if TYPE_CHECKING:
    from superstatic.objects.node import Node
    from superstatic.objects.replica import Replica
    from superstatic.objects.session import Session

# Bounds one transaction's buffered work: each op and each new node costs memory until commit
# and bytes on the wire; a body that writes more than this is almost certainly a runaway loop.
TXN_OPS_MAX = 100_000
TXN_NEW_NODES_MAX = 100_000


class _State(threading.local):
    """The transaction whose body the current thread is executing, if any."""

    txn: Txn | None = None


state = _State()


def current() -> Txn | None:
    return state.txn


class Txn:
    """One attempt of a transaction body. Never shared between threads."""

    __slots__ = (
        "new_nodes",
        "ops",
        "pending",
        "reads",
        "replica",
        "session",
        "shadows",
        "stored",
    )

    def __init__(self, session: Session) -> None:
        self.session = session
        self.replica: Replica = session.replica
        self.reads: dict[str, int] = {}
        self.shadows: dict[str, Any] = {}
        # Writes to a node that this transaction has not read since: the shadow copy (O(size of
        # the node)) is made only when the body reads the node after writing it, so write-only
        # bodies (lone writes, blind updates) never copy a container.
        self.pending: dict[str, list[list[Any]]] = {}
        # Ops on existing nodes, in program order, with live values (proxies, shared instances).
        self.ops: list[list[Any]] = []
        # Nodes created by this attempt, private until the commit's entry applies.
        self.new_nodes: dict[str, Node] = {}
        # Plain values already converted to new nodes by this attempt: id -> (the value, kept
        # alive so its id cannot be reused, and the new node's ref). Storing one plain value
        # twice in a transaction (`d.update({"x": v, "y": v})`) then gives one shared node.
        self.stored: dict[int, tuple[Any, Any]] = {}

    @property
    def read_only(self) -> bool:
        return not self.ops and not self.new_nodes

    def check(self, node: Node) -> None:
        """Raises if this transaction may not touch `node`."""
        if node.replica is not self.replica:
            raise Error(
                "this object belongs to another superstatic connection than the running "
                "transaction; use objects of one connection per transaction"
            )
        if node.dead:
            raise Error(
                f"object {node.oid} no longer exists in the cluster (it was unreachable from "
                "every root and was collected, or its transaction did not commit)"
            )
        if node.txn is not None and node.txn is not self:
            raise Error(
                f"object {node.oid} was created by another transaction that has not committed; "
                "use it only after that transaction returns"
            )

    def view(self, node: Node) -> Any:
        """The container a read of `node` sees: shadow, private contents or the replica's."""
        if node.txn is self:
            return node.live
        if node.replica is not self.replica or node.dead or node.txn is not None:
            self.check(node)
        oid = node.oid
        if oid not in self.reads:
            self.reads[oid] = node.version
        shadow = self.shadows.get(oid)
        if shadow is None:
            return node.live if oid not in self.pending else self._materialize(node)
        return shadow

    def _materialize(self, node: Node) -> Any:
        shadow = node.live.copy()
        for op in self.pending.pop(node.oid):
            _ops.apply_op(node.kind, shadow, op)
        self.shadows[node.oid] = shadow
        return shadow

    def view_peek(self, node: Node) -> Any:
        """Like view() without recording a read (the caller records it if it reads state)."""
        if node.txn is not self and (
            node.replica is not self.replica or node.dead or node.txn is not None
        ):
            self.check(node)
        shadow = self.shadows.get(node.oid)
        if shadow is None:
            return node.live if node.oid not in self.pending else self._materialize(node)
        return shadow

    def record_read(self, node: Node) -> None:
        if node.txn is self:
            return
        if node.replica is not self.replica or node.dead or node.txn is not None:
            self.check(node)
        if node.oid not in self.reads:
            self.reads[node.oid] = node.version

    def note_ref(self, node: Node) -> None:
        """A reference to `node` is being stored. Recording its version makes the commit
        conflict (instead of failing) if the node was collected meanwhile."""
        self.record_read(node)

    def emit(self, node: Node, op: list[Any]) -> None:
        """Applies a write (live values) to what this transaction sees, and buffers it."""
        if node.txn is self:
            _ops.apply_op(node.kind, node.live, op)
            return
        self.check(node)
        if len(self.ops) >= TXN_OPS_MAX:
            raise LimitExceeded(
                "TXN_OPS_MAX", TXN_OPS_MAX, len(self.ops) + 1, "ops in one transaction"
            )
        oid = node.oid
        shadow = self.shadows.get(oid)
        if shadow is None:
            self.pending.setdefault(oid, []).append(op)
        else:
            _ops.apply_op(node.kind, shadow, op)
        self.ops.append(op)

    def add_new(self, nodes: list[Node]) -> None:
        total = len(self.new_nodes) + len(nodes)
        if total > TXN_NEW_NODES_MAX:
            raise LimitExceeded(
                "TXN_NEW_NODES_MAX", TXN_NEW_NODES_MAX, total, "new objects in one transaction"
            )
        for node in nodes:
            assert node.txn is self
            self.new_nodes[node.oid] = node

    def abandon(self) -> None:
        """The attempt will never commit: its private nodes die, so a leaked reference to one
        raises instead of silently writing into nothing."""
        for node in self.new_nodes.values():
            if node.txn is self:  # not adopted by the replica (its entry did not apply here)
                node.dead = True
                node.txn = None
        self.new_nodes.clear()
        self.shadows.clear()
        self.pending.clear()
        self.ops.clear()


def view_of(node: Node) -> Any:
    """The container the current thread should read for `node`."""
    txn = state.txn
    if txn is None or node.replica is not txn.replica:
        # Reads of another connection's objects are not part of this transaction.
        return node.live
    return txn.view(node)


# ----------------------------------------------------------------------------- overlay toggling

_toggle_lock = threading.Lock()
_bodies_active = 0
# Overlays declared by classes, and those enabled: a class's overlay is toggled only once an
# instance of it exists in this process, so the toggle costs only for the kinds the app uses.
_declared: dict[type, dict[str, Any]] = {}
_overlays: list[tuple[type, dict[str, Any]]] = []
OVERLAYS_ENABLED: set[type] = set()


def register_overlay(cls: type, attrs: dict[str, Any]) -> None:
    """`attrs` will be installed on `cls` while any transaction body runs in this process, once
    `enable_overlay(cls)` has been called (when the first instance is made)."""
    with _toggle_lock:
        for name in attrs:
            assert name not in cls.__dict__, (cls, name)
        assert cls not in _declared, cls
        _declared[cls] = attrs


def enable_overlay(cls: type) -> None:
    with _toggle_lock:
        if cls in OVERLAYS_ENABLED:
            return
        attrs = _declared[cls]
        _overlays.append((cls, attrs))
        OVERLAYS_ENABLED.add(cls)
        if _bodies_active:
            for name, value in attrs.items():
                setattr(cls, name, value)


def overlays_active() -> bool:
    return _bodies_active > 0


def body_enter(txn: Txn) -> None:
    global _bodies_active
    assert state.txn is None
    with _toggle_lock:
        if _bodies_active == 0:
            for cls, attrs in _overlays:
                for name, value in attrs.items():
                    setattr(cls, name, value)
        _bodies_active += 1
    state.txn = txn


def body_exit(txn: Txn) -> None:
    global _bodies_active
    assert state.txn is txn
    state.txn = None
    with _toggle_lock:
        assert _bodies_active > 0
        _bodies_active -= 1
        if _bodies_active == 0:
            for cls, attrs in _overlays:
                for name in attrs:
                    delattr(cls, name)


def run_body(txn: Txn, body: Callable[[], Any]) -> Any:
    """Runs `body` as the body of `txn`: replica lock held, overlays installed."""
    with txn.replica.lock:
        body_enter(txn)
        try:
            return body()
        except BaseException:
            txn.abandon()
            raise
        finally:
            body_exit(txn)
