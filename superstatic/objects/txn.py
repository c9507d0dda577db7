"""Transactions: recorded reads (keys, shape, content), buffered writes, copy-on-write shadows.

Which transaction is running is a `contextvars` variable, so each thread and each asyncio task
has its own: a task that is not inside a transaction never sees (or joins) another task's, even
in the same thread. A transaction also belongs to the thread that opened it: a thread that
inherited the context (`asyncio.to_thread`, `copy_context().run`) runs outside it, like any
other thread, so one `Txn` is never used by two threads at once.

A body does not hold the replica's lock (a body that waits for another thread, or an asyncio
task that awaits inside `transaction()`, would then block the log for everyone: issue 10 rows 2
and 4). Instead it *pins* the replica (`Replica.pin`): the I/O thread holds entries back while
bodies run, for at most `replica.PIN_MS_MAX`, then applies them anyway. So a body normally reads
one prefix of the log; when entries do apply under it, every read validates the body's read set
(`Txn.stable`) against what those entries touched (`Replica.reads_unchanged`): if one changed
something the body read, the body is *doomed* (`Doomed`, a BaseException): a method or
`@transaction()` function re-runs on the new state, a `with` block raises ConflictError; if none
did, the body's read base advances to the new applied index. A body never acts on an
inconsistent view (opacity), and the commit is validated by the cluster as before.

What a body read is recorded per node, as the model-2 transaction body carries it
(docs/data-model-v2.md section 4): keys read one by one (`d[k]`, `d.get(k)`, `k in d`, `x in s`,
`obj.attr`, an absent attribute included) and whole-node flags, `READ_SHAPE` for membership
and length (`len`, `bool`, iterating a dict's keys or a set) and `READ_CONTENT` for anything
that depends on the values (`values()`, `==`, `repr`, every list read but `len`). The body's
`base` is the replica's applied index its reads reflect; the leader checks that nothing read
changed after it. Each key is recorded once per node; past `TXN_READ_KEYS_MAX` keys in one body
the node whose key overflows is recorded as `READ_CONTENT` instead (its keys dropped): safe,
since content covers every key, and bounded.

Writes to an existing node are buffered; the first read of the node after a write copies it
into a private *shadow* with the buffered writes applied; every later read and write of that
node in this transaction goes to the shadow, so the body sees its own writes while other threads
keep reading the replica untouched. Nodes created in the transaction are private until commit.

Read recording must not slow reads outside transactions. Proxy classes and generated shared
classes therefore register *overlays* (Python read methods that consult the current transaction)
which are installed on the classes only while at least one transaction body executes in this
process, and removed when none does: setting or deleting a dunder on a class updates its type
slots, so outside transactions item reads go through wrapt's C slots and attribute reads are
native. Toggling costs a few microseconds per body (docs/library.md). The count is of bodies,
not threads: asyncio tasks suspended inside `transaction()` blocks each count until they exit.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from superstatic.objects.node import PARTIAL
from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import Error, LimitExceeded
from superstatic.protocol.ops import READ_CONTENT, READ_SHAPE, TXN_READ_KEYS_MAX

if TYPE_CHECKING:
    from superstatic.objects.node import Node
    from superstatic.objects.replica import Replica
    from superstatic.objects.session import Session

# Bounds one transaction's buffered work: each op and each new node costs memory until commit
# and bytes on the wire; a body that writes more than this is almost certainly a runaway loop.
TXN_OPS_MAX = 100_000
TXN_NEW_NODES_MAX = 100_000
# How long a body that raised waits for the barrier that says whether its reads were stale
# (_moved_at_the_cluster); past it (the cluster unreachable) its exception stands as raised.
STALE_CHECK_S = 5.0

_CURRENT: contextvars.ContextVar[Txn | None] = contextvars.ContextVar(
    "superstatic_txn", default=None
)
_get_current = _CURRENT.get
_thread_id = threading.get_ident


def current() -> Txn | None:
    """The transaction whose body the running thread/task executes, if any."""
    txn = _get_current()
    if txn is None or (txn.active and txn.thread == _thread_id()):
        return txn
    # Inherited through a copied context by another thread, or by a task that outlived the
    # block that created it: not this code's transaction.
    return None


class Doomed(BaseException):
    """Raised inside a body whose earlier reads were overwritten by entries applied since: the
    body would otherwise go on with an inconsistent view. A BaseException so that a body's
    `except Exception` does not swallow it; the transaction loop re-runs the body."""


class Txn:
    """One attempt of a transaction body."""

    __slots__ = (
        "active",
        "base",
        "doomed",
        "gen",
        "keys_read",
        "moved",
        "new_nodes",
        "ops",
        "peeked",
        "pending",
        "pin",
        "read_keys",
        "reads",
        "replica",
        "session",
        "shadows",
        "stored",
        "thread",
        "token",
    )

    def __init__(self, session: Session) -> None:
        self.session = session
        self.replica: Replica = session.replica
        self.thread = _thread_id()
        self.active = False
        self.token: contextvars.Token[Txn | None] | None = None
        self.pin = 0  # the replica pin held while the body runs (Replica.pin)
        # The replica's apply generation and applied index the reads so far are consistent
        # with (see stable()); `base` is the read base index the commit sends.
        self.gen = 0
        self.base = 0
        self.doomed = False
        # Set when the body raised: whether what it read had moved by then (judged while the
        # body still held its pin, which keeps the replica's record of what entries touched).
        self.moved = False
        # Nodes read: oid -> READ_SHAPE / READ_CONTENT flags (0: only keys of it were read).
        self.reads: dict[str, int] = {}
        # Keys read one by one: oid -> {key: None} (a dict: Python's own key equality, in
        # reading order), and how many in all (bounded by TXN_READ_KEYS_MAX).
        self.read_keys: dict[str, dict[Any, None]] = {}
        self.keys_read = 0
        # Nodes seen without a recorded read (view_peek): not in the commit's read set, but
        # the body saw them at its base, so a base moved past a change of one re-runs it
        # (a fault lets entries apply under the body: docs/virtual-heap.md section 12).
        self.peeked: dict[str, None] = {}
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
        # alive so its id cannot be reused, the new node's ref, and a shallow snapshot of the
        # value's contents when it was converted: values.py reuses the node only while the
        # plain value still has those contents).
        self.stored: dict[int, tuple[Any, Any, Any]] = {}

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
            if node.replica.detached is not None:
                raise Error(f"object {node.oid}: {node.replica.detached}")
            if self.reads_moved():
                # Collected by an entry applied under this body: what led the body to it has
                # changed too, so the body re-runs on the current state instead.
                self.doomed = True
                raise Doomed()
            raise Error(
                f"object {node.oid} no longer exists in the cluster (it was unreachable from "
                "every root and was collected, or its transaction did not commit); get it "
                "again from its root"
            )
        if node.txn is not None and node.txn is not self:
            raise Error(
                f"object {node.oid} was created by another transaction that has not committed; "
                "use it only after that transaction returns"
            )

    # ------------------------------------------------------------------ reads

    def view(self, node: Node, flags: int = READ_CONTENT) -> Any:
        """The container a read of `node` sees (shadow, private contents or the replica's),
        the read recorded with `flags` (READ_CONTENT: a whole-content read, READ_SHAPE:
        membership or length only). The caller reads from it and then calls stable()."""
        if node.txn is self:
            return node.live
        if node.replica is not self.replica or node.dead or node.txn is not None:
            self.check(node)
        oid = node.oid
        # Recorded BEFORE the data is read: an entry that changes the node in between is one
        # stable() (or the commit) then finds among those applied after the body's base.
        reads = self.reads
        old = reads.get(oid)
        if old is None:
            reads[oid] = flags
        elif old | flags != old:
            reads[oid] = old | flags
        # After the read is recorded (the eviction clock's EVICTING handshake): not held here
        # means load it first (docs/virtual-heap.md 3.4).
        if node.state:
            self._fault(node)
        node.bit = True
        shadow = self.shadows.get(oid)
        if shadow is None:
            return node.live if oid not in self.pending else self._materialize(node)
        return shadow

    def view_key(self, node: Node, key: Any) -> Any:
        """Like view() for a read of the single key `key` (a dict key, a set member, an
        attribute name; absent or not): only that key is recorded."""
        if node.txn is self:
            return node.live
        if node.replica is not self.replica or node.dead or node.txn is not None:
            self.check(node)
        oid = node.oid
        flags = self.reads.get(oid)
        if flags is None:
            self.reads[oid] = 0
            self._record_key(oid, key)
        elif not flags & READ_CONTENT:  # a content read already covers every key
            self._record_key(oid, key)
        if node.state:
            self._fault(node, (key,))
        node.bit = True
        shadow = self.shadows.get(oid)
        if shadow is None:
            return node.live if oid not in self.pending else self._materialize(node)
        return shadow

    def _fault(self, node: Node, key: tuple[Any] | None = None) -> None:
        """Loads `node` (or, for a node held per key, the one key `key[0]`) for this body
        (Replica.fault). The install bumps the generation, so the caller's stable() checks
        every entry applied while waiting: those that touched what the body read doom it;
        otherwise its base advances to the load's index or later, which is what the commit's
        read base then says."""
        replica = node.replica
        try:
            if node.state != PARTIAL:
                replica.fault(node)  # held after it, or per key (a big dict)
            if node.state == PARTIAL:
                if key is not None:
                    replica.fault_key(node, key[0])
                elif not node.live.fixed:
                    # A read of its shape or content: held whole from now on. (The root
                    # table is read by key only: a whole read sees the keys held.)
                    replica.fault_whole(node)
                    self._rebuild_shadow(node)
        except Error:
            if node.dead:
                self.check(node)  # Doomed if what led the body here moved, else the error
            raise

    def _record_key(self, oid: str, key: Any) -> None:
        keys = self.read_keys.get(oid)
        if keys is None:
            keys = self.read_keys[oid] = {}
        elif key in keys:
            return
        if self.keys_read >= TXN_READ_KEYS_MAX:
            # Past the bound the node is recorded whole: READ_CONTENT covers every key.
            self._whole(oid)
            return
        try:
            keys[key] = None
        except TypeError:
            # Unhashable (a plain set looked up in a set: Python retries it as a frozenset),
            # so not recordable as a key: the whole node then.
            self._whole(oid)
            return
        self.keys_read += 1

    def _whole(self, oid: str) -> None:
        self.reads[oid] = self.reads.get(oid, 0) | READ_CONTENT
        dropped = self.read_keys.pop(oid, None)
        if dropped:
            self.keys_read -= len(dropped)

    def _rebuild_shadow(self, node: Node) -> None:
        """A shadow of a per-key node held only its known keys: after the node was loaded
        whole, it is made again from the whole node and this body's writes to it."""
        if node.oid not in self.shadows:
            return
        shadow = node.live.copy()
        for op in self.ops:
            if op[1] == node.oid:
                _ops.apply_op(node.kind, shadow, op)
        self.shadows[node.oid] = shadow

    def _materialize(self, node: Node) -> Any:
        live = node.live
        shadow = live.partial_copy() if node.state == PARTIAL else live.copy()
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
        if node.state:
            self._fault(node)
        self.peeked[node.oid] = None
        shadow = self.shadows.get(node.oid)
        if shadow is None:
            return node.live if node.oid not in self.pending else self._materialize(node)
        return shadow

    def record_read(self, node: Node, flags: int = READ_CONTENT) -> None:
        if node.txn is self:
            return
        if node.replica is not self.replica or node.dead or node.txn is not None:
            self.check(node)
        self.reads[node.oid] = self.reads.get(node.oid, 0) | flags

    def note_ref(self, node: Node) -> None:
        """A reference to `node` is being stored. Recording a read of it makes the commit
        conflict (instead of failing) if the node was collected meanwhile: a collected node
        is absent at the leader, and a node read but absent conflicts (shape: any change of
        its contents is no reason to conflict)."""
        self.record_read(node, READ_SHAPE)

    def read_set(self) -> dict[str, tuple[int, list[Any]]]:
        """What the body read, as the model-2 body carries it: oid -> (flags, keys). Keys in
        live form (the caller converts them to wire form)."""
        keys = self.read_keys
        out: dict[str, tuple[int, list[Any]]] = {}
        for oid, flags in self.reads.items():
            found = keys.get(oid)
            out[oid] = (flags, [] if found is None or flags & READ_CONTENT else list(found))
        return out

    # ------------------------------------------------------------------ consistency

    def stable(self) -> None:
        """Call after reading: raises Doomed if an entry applied since the body's reads began
        changed something the body read (the value just read may belong to another state)."""
        if self.replica.gen != self.gen:
            self._revalidate()

    def _revalidate(self) -> None:
        replica = self.replica
        # Under the lock no entry is half-applied: what entries touched matches the contents.
        with replica.lock:
            if not replica.reads_unchanged(self.base, self._seen(), self.read_keys):
                self.doomed = True
                raise Doomed()
            self.gen = replica.gen
            self.base = replica.applied_index

    def _seen(self) -> dict[str, int]:
        """What the body read, and what it peeked at as read whole: the base may move only
        past entries that changed neither (a peek is unrecorded at the leader, not unseen)."""
        if not self.peeked:
            return self.reads
        seen = dict(self.reads)
        for oid in self.peeked:
            seen[oid] = seen.get(oid, 0) | READ_CONTENT
        return seen

    def reads_moved(self) -> bool:
        """Whether anything this body read (or peeked at) has changed in the replica since it
        was read. Only meaningful while the body holds its pin (the replica forgets what
        entries touched once no body needs it)."""
        if self.doomed:
            return True
        with self.replica.lock:
            return not self.replica.reads_unchanged(self.base, self._seen(), self.read_keys)

    # ------------------------------------------------------------------ writes

    def emit(self, node: Node, op: list[Any]) -> None:
        """Applies a write (live values) to what this transaction sees, and buffers it."""
        if node.txn is self:
            _ops.apply_op(node.kind, node.live, op)
            return
        self.check(node)
        # On the wire each new object is one more op ("new"): bound the sum, so a body the
        # library builds always fits the agent's TXN_OPS_MAX.
        if len(self.ops) + len(self.new_nodes) >= TXN_OPS_MAX:
            raise LimitExceeded(
                "TXN_OPS_MAX",
                TXN_OPS_MAX,
                len(self.ops) + len(self.new_nodes) + 1,
                "ops in one transaction (its writes plus one per new object)",
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
        if len(self.ops) + total > TXN_OPS_MAX:
            raise LimitExceeded(
                "TXN_OPS_MAX",
                TXN_OPS_MAX,
                len(self.ops) + total,
                "ops in one transaction (its writes plus one per new object)",
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
        self.stored.clear()


def view_of(node: Node) -> Any:
    """The container the current thread should read for `node` (records the read in a
    transaction; the caller calls settle() after reading)."""
    txn = current()
    if txn is None or node.replica is not txn.replica:
        # Reads of another connection's objects are not part of this transaction.
        return held_live(node)
    return txn.view(node)


def held_live(node: Node) -> Any:
    """`node.live` for a read outside transactions, loaded first if the node is not held (a
    hollow container's `live` faults by itself; a hollow object's attribute store is empty)."""
    if node.state:
        node.replica.fault(node)
    return node.live


def settle() -> None:
    """After a read made through view_of(): validates the running transaction, if any."""
    txn = current()
    if txn is not None and txn.replica.gen != txn.gen:
        txn._revalidate()


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
    """`txn`'s body starts in this thread/task: pin the replica, install the overlays."""
    global _bodies_active
    assert current() is None and not txn.active
    txn.pin, txn.gen, txn.base = txn.replica.pin(txn)
    try:
        with _toggle_lock:
            if _bodies_active == 0:
                for cls, attrs in _overlays:
                    for name, value in attrs.items():
                        setattr(cls, name, value)
            _bodies_active += 1
    except BaseException:
        txn.replica.unpin(txn.pin)
        raise
    txn.active = True
    txn.token = _CURRENT.set(txn)


def body_exit(txn: Txn) -> None:
    global _bodies_active
    assert txn.active and txn.token is not None
    txn.active = False
    # Exited in another context than it was entered in (a `with` block split across tasks):
    # the variable still names `txn` there, which is inactive and so ignored.
    with contextlib.suppress(ValueError):
        _CURRENT.reset(txn.token)
    txn.token = None
    with _toggle_lock:
        assert _bodies_active > 0
        _bodies_active -= 1
        if _bodies_active == 0:
            for cls, attrs in _overlays:
                for name in attrs:
                    delattr(cls, name)
    txn.replica.unpin(txn.pin)


def _moved_at_the_cluster(txn: Txn, exc: Exception) -> bool:
    """A body raised from reads that had not moved in this replica. The replica may still be
    behind the cluster: a stale view can raise where the current one would not (a field a
    newer write set, read as its older value: `None + 1`), and the plain program, which never
    sees an old state, would not raise. So one barrier (ReadIndex, then the replica applies up
    to it, entries recorded under the body's pin) says whether what it read had changed; if
    so the caller re-runs the body like a conflict. Paid only by a body that read something
    and raised an exception of its own (the library's errors are not from a stale view), at
    most STALE_CHECK_S; if the barrier fails, the exception stands as raised."""
    if isinstance(exc, Error) or not (txn.reads or txn.read_keys):
        return False
    connection = txn.session.connection
    try:
        with txn.replica.applying_under(txn.pin):
            connection.wait_applied(connection.read_index(), STALE_CHECK_S)
    except Error:
        return False
    return txn.reads_moved()


def run_body(txn: Txn, body: Callable[[], Any]) -> Any:
    """Runs `body` as the body of `txn`: replica pinned, overlays installed."""
    body_enter(txn)
    try:
        return body()
    except Exception as exc:
        # Judged now, while the pin keeps the replica's record of what entries touched: the
        # caller re-runs a body that raised from a state that has since changed.
        txn.moved = txn.reads_moved() or _moved_at_the_cluster(txn, exc)
        txn.abandon()
        raise
    except BaseException:
        txn.abandon()
        raise
    finally:
        body_exit(txn)


def reset_after_fork(in_body: Txn | None) -> None:
    """In a forked child: only the forking thread survives, so only its body (if any) counts."""
    global _toggle_lock, _bodies_active
    _toggle_lock = threading.Lock()
    active = 1 if in_body is not None else 0
    if _bodies_active and not active:
        for cls, attrs in _overlays:
            for name in attrs:
                if name in cls.__dict__:
                    delattr(cls, name)
    _bodies_active = active
