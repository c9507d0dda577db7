"""A session: one replica, one connection, and the transaction loop between them.

`Session.run(body)` is how every write happens: method calls on shared objects, lone writes
outside any transaction, `transaction()` blocks used as decorators, root creation and singleton
creation. It runs the body holding the replica lock (a consistent prefix of the log), releases
the lock, commits reads + ops in one entry, and on "conflict" waits until its replica has applied
the conflicting entry and re-runs the body, within a bounded budget with jittered backoff.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from superstatic.objects import node as _node
from superstatic.objects import stats as _stats
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.replica import ROOTS_OID, Replica
from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import ConflictError, Error

T = TypeVar("T")

# Attempts of one transaction before ConflictError. Each attempt after a conflict first waits
# until the replica has applied the conflicting entry, so an attempt only fails again if yet
# another writer committed in between.
TXN_ATTEMPTS_MAX = 64
# Backoff before attempt k (k >= 2): uniform in [0, min(BACKOFF_S_MAX, BACKOFF_S_BASE * 2**k)].
BACKOFF_S_BASE = 0.0005
BACKOFF_S_MAX = 0.05
# How long a caller waits for its own committed entry to apply locally (read-your-writes), or
# for sync()'s barrier index; past it the outcome is known (committed) but not yet visible.
TIMEOUT_S_APPLY = 30.0
ROOT_KINDS = {dict: "dict", list: "list", set: "set"}


class Committed(Protocol):
    index: int
    outcome: str
    error: str
    dup: bool


class ConnectionLike(Protocol):
    """What a session needs from superstatic.client.connection.Connection (or a test double)."""

    client_id: str

    def submit(self, body: bytes, kind: str = "txn") -> Committed: ...
    def read_index(self) -> int: ...
    def wait_applied(self, index: int, timeout_s: float) -> None: ...
    def close(self) -> None: ...


class Session:
    def __init__(self, replica: Replica, connection: ConnectionLike) -> None:
        assert replica.session is None, "a replica serves one session"
        self.replica = replica
        self.connection = connection
        replica.session = self
        self._oid_prefix = connection.client_id[:16]
        self._oid_counter = itertools.count(1)
        self._rng = random.Random()
        self.closed = False

    # ------------------------------------------------------------------ ids

    def new_oid(self) -> str:
        # Unique without a round trip: the client id is random per connection (architecture 4).
        return f"{self._oid_prefix}.{next(self._oid_counter):x}"

    # ------------------------------------------------------------------ transactions

    def run(self, body: Callable[[], T]) -> T:
        """Runs `body` as one serializable transaction (or joins the running one)."""
        current = _txn.state.txn
        if current is not None:
            if current.session is not self:
                raise Error("a transaction cannot span two superstatic connections")
            return body()
        self._check_open()
        contention = self.replica.contention
        for attempt in range(1, TXN_ATTEMPTS_MAX + 1):
            if attempt > 1:
                _stats.STATS.note("txn_retries")
                self._backoff(attempt)
            pause_s = contention.yield_s(self.connection.client_id)
            if pause_s > 0.0:
                time.sleep(pause_s)  # someone else keeps losing: leave them a window
            txn = _txn.Txn(self)
            result = _txn.run_body(txn, body)
            if txn.read_only:
                return result
            outcome = self.commit(txn)
            if outcome == "ok":
                return result
            assert outcome == "conflict"
        _stats.STATS.note("conflict_errors")
        raise ConflictError(
            f"the transaction conflicted with concurrent writers {TXN_ATTEMPTS_MAX} times "
            f"(TXN_ATTEMPTS_MAX={TXN_ATTEMPTS_MAX}); it was not applied. Retry later, or split "
            "hot shared state so fewer writers touch the same objects"
        )

    def commit(self, txn: _txn.Txn) -> str:
        """Commits a finished body; returns "ok" (applied locally) or "conflict"."""
        assert _txn.state.txn is None
        new_nodes = list(txn.new_nodes.values())
        wire_ops: list[list[Any]] = [_new_op(node) for node in new_nodes]
        wire_ops.extend(_wire_op(op) for op in txn.ops)
        body = _ops.encode_txn(dict(txn.reads), wire_ops)
        new_oids = [node.oid for node in new_nodes]
        self.replica.expect_new(new_nodes)
        try:
            started_s = time.monotonic()
            committed = self.connection.submit(body)
            self.replica.contention.record_round_trip(time.monotonic() - started_s)
            if committed.outcome in ("ok", "conflict"):
                # ok: read-your-writes. conflict: the retry must see the entry that beat us.
                self.connection.wait_applied(committed.index, TIMEOUT_S_APPLY)
        except BaseException:
            # Unavailable (maybe committed, maybe not) or an interrupt: nobody received the
            # private nodes, and if the entry did commit the replica builds them afresh.
            txn.abandon()
            raise
        finally:
            self.replica.forget_new(new_oids)
        if committed.outcome == "ok":
            for node in new_nodes:
                if node.txn is not None:  # created and collected by GC in the same entry
                    node.txn = None
                    node.dead = True
            return "ok"
        txn.abandon()
        if committed.outcome == "conflict":
            return "conflict"
        raise Error(
            f"the cluster rejected the transaction (outcome {committed.outcome!r}): "
            f"{committed.error or 'no detail'}; nothing was applied"
        )

    def _backoff(self, attempt: int) -> None:
        ceiling = min(BACKOFF_S_MAX, BACKOFF_S_BASE * (2 ** min(attempt, 20)))
        time.sleep(self._rng.uniform(0.0, ceiling))

    def transaction(self) -> TransactionBlock:
        return TransactionBlock(lambda: self)

    # ------------------------------------------------------------------ roots and singletons

    def root(self, name: str, kind: type) -> Any:
        """The named cluster-wide dict, list or set, created empty if absent."""
        if kind not in ROOT_KINDS:
            raise TypeError(f"a root is a dict, list or set, not {kind!r}")
        if not isinstance(name, str) or not name:
            raise TypeError("a root name is a non-empty str")
        kind_name = ROOT_KINDS[kind]

        def create() -> Any:
            txn = _txn.state.txn
            assert txn is not None
            roots = self._roots_node()
            found = txn.view(roots).get(name)
            if found is not None:
                return found
            ref = _values.store(txn, kind(), roots, _values.item(name))
            txn.emit(roots, ["set", ROOTS_OID, name, ref])
            return ref

        ref = self._find_root(name)
        if ref is None:
            ref = self.run(create)
        found = _node.node_of(ref)
        if found is None or found.kind != kind_name:
            raise Error(
                f"root {name!r} holds a {_kind_label(ref)}, not a {kind_name}; pick another name"
            )
        return ref

    def attach(
        self, cls: type, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        """The cluster-wide singleton of a @clustered class: attach, or create it once."""
        name: str = cls.__superstatic_name__  # type: ignore[attr-defined]

        def create() -> Any:
            txn = _txn.state.txn
            assert txn is not None
            roots = self._roots_node()
            found = txn.view(roots).get(name)
            if found is not None:
                return found
            node = self.replica.new_node(self.new_oid(), "obj", name, txn)
            txn.add_new([node])
            instance = node.ref
            cls.__init__(instance, *args, **(kwargs or {}))
            txn.emit(roots, ["set", ROOTS_OID, name, instance])
            return instance

        ref = self._find_root(name)
        if ref is None:
            ref = self.run(create)
        if not isinstance(ref, cls):
            raise Error(
                f"root {name!r} holds a {_kind_label(ref)}, not a {cls.__qualname__}; give the "
                "class another name with @superstatic.clustered(name=...)"
            )
        return ref

    def _find_root(self, name: str) -> Any:
        ref = self.replica.root_ref(name)
        if ref is None and _txn.state.txn is None:
            # It may exist in the cluster and not have reached us yet: a barrier is cheaper
            # than running a constructor whose effects would be thrown away.
            self.sync()
            ref = self.replica.root_ref(name)
        txn = _txn.state.txn
        roots = self.replica.roots_node()
        if ref is not None and txn is not None and roots is not None:
            txn.record_read(roots)
        return ref

    def _roots_node(self) -> Any:
        """The root table, for a transaction body. On a cluster that has never stored anything
        it does not exist yet: the first transaction that binds a root creates it, reading
        its version as 0 (absent), so two racing first creators conflict instead of one
        overwriting the other."""
        txn = _txn.state.txn
        assert txn is not None
        roots = self.replica.roots_node()
        if roots is not None:
            return roots
        pending = txn.new_nodes.get(ROOTS_OID)
        if pending is not None:
            return pending
        roots = self.replica.new_node(ROOTS_OID, "dict", None, txn)
        txn.add_new([roots])
        txn.reads[ROOTS_OID] = 0
        return roots

    # ------------------------------------------------------------------ barrier, lifecycle

    def sync(self) -> None:
        """Linearizable barrier: afterwards the replica includes every write committed anywhere
        before the call began."""
        if _txn.state.txn is not None:
            raise Error(
                "sync() inside a transaction would wait for log entries the transaction's lock "
                "holds back; call it before the transaction"
            )
        self._check_open()
        index = self.connection.read_index()
        self.connection.wait_applied(index, TIMEOUT_S_APPLY)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.connection.close()

    def _check_open(self) -> None:
        if self.closed:
            raise Error("this superstatic connection is closed; call superstatic.connect() again")


class TransactionBlock:
    """`with superstatic.transaction():` (one commit at the end of the block) and
    `@superstatic.transaction()` (a function run as a transaction, re-run on conflict)."""

    def __init__(self, session_of: Callable[[], Session]) -> None:
        self._session_of = session_of
        self._txn: _txn.Txn | None = None
        self._joined = False
        self._session: Session | None = None

    def __enter__(self) -> TransactionBlock:
        assert self._txn is None and not self._joined, "a transaction() block is entered once"
        session = self._session_of()
        current = _txn.state.txn
        if current is not None:
            if current.session is not session:
                raise Error("a transaction cannot span two superstatic connections")
            self._joined = True
            return self
        session._check_open()
        txn = _txn.Txn(session)
        session.replica.lock.acquire()
        try:
            _txn.body_enter(txn)
        except BaseException:
            session.replica.lock.release()
            raise
        self._session = session
        self._txn = txn
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._joined:
            return False
        txn, session = self._txn, self._session
        assert txn is not None and session is not None
        try:
            _txn.body_exit(txn)
        finally:
            session.replica.lock.release()
        if exc_type is not None:
            txn.abandon()
            return False
        if txn.read_only:
            return False
        if session.commit(txn) == "conflict":
            raise ConflictError(
                "a concurrent writer changed what this `with superstatic.transaction():` block "
                "read, so nothing was applied. A with-block cannot be re-run automatically: put "
                "read-modify-write in a method of a shared class or in a function decorated "
                "with @superstatic.transaction(), which are re-run on conflict"
            )
        return False

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        import functools

        session_of = self._session_of

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            return session_of().run(lambda: fn(*args, **kwargs))

        return run


def _kind_label(ref: Any) -> str:
    found = _node.node_of(ref)
    if found is None:
        return type(ref).__name__
    return found.class_name or found.kind


def _new_op(node: _node.Node) -> list[Any]:
    live = node.live
    if node.kind == "dict":
        contents: Any = [[_values.wire(k), _values.wire(v)] for k, v in live.items()]
    elif node.kind in ("list", "set"):
        contents = [_values.wire(v) for v in live]
    else:
        contents = [node.class_name, [[k, _values.wire(v)] for k, v in live.items()]]
    return ["new", node.oid, node.kind, contents]


def _wire_op(op: list[Any]) -> list[Any]:
    tag = op[0]
    if tag == "set":
        return [tag, op[1], _values.wire(op[2]), _values.wire(op[3])]
    if tag == "del":
        return [tag, op[1], _values.wire(op[2])]
    if tag == "splice":
        return [tag, op[1], op[2], op[3], [_values.wire(v) for v in op[4]]]
    if tag in ("extend", "add", "discard"):
        return [tag, op[1], [_values.wire(v) for v in op[2]]]
    assert tag == "clear", op
    return list(op)
