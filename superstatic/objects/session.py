"""A session: one replica, one connection, and the transaction loop between them.

`Session.run(body)` is how every write happens: method calls on shared objects, lone writes
outside any transaction, `transaction()` blocks used as decorators, root creation and singleton
creation. It runs the body holding the replica lock (a consistent prefix of the log), releases
the lock, commits reads + ops in one entry, and on "conflict" waits until its replica has applied
the conflicting entry and re-runs the body, within a bounded budget with jittered backoff.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from superstatic.objects import node as _node
from superstatic.objects import proxy_object as _proxy_object
from superstatic.objects import stats as _stats
from superstatic.objects import trace as _trace
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.replica import ROOTS_OID, Replica
from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import ConflictError, Error, Unavailable

T = TypeVar("T")

# Attempts of one transaction before ConflictError. Each attempt after a conflict first waits
# until the replica has applied the conflicting entry, so an attempt only fails again if yet
# another writer committed in between.
TXN_ATTEMPTS_MAX = 64
# Backoff before attempt k (k >= 2): uniform in [0, min(BACKOFF_S_MAX, BACKOFF_S_BASE * 2**k)].
BACKOFF_S_BASE = 0.0005
BACKOFF_S_MAX = 0.05
# How long a caller waits for its own committed entry to apply locally (read-your-writes), or
# for sync()'s barrier index. Past it a committed write raises Unavailable(outcome_known=False)
# saying it COMMITTED (never True: that promises it did not; see _not_applied_here).
TIMEOUT_S_APPLY = 30.0
# A singleton's creation claim older than this (its creator died or hangs in __init__) is taken
# over by a process waiting for it; waiters poll (sync()) between these bounds.
CREATE_CLAIM_S = 30.0
CREATE_POLL_S_MIN = 0.005
CREATE_POLL_S_MAX = 0.2
ROOT_KINDS = {dict: "dict", list: "list", set: "set"}
CLOSED_REASON = (
    "its superstatic connection was closed (superstatic.close()), so it is no longer kept "
    "current; after superstatic.connect(), get it again (Cls(), superstatic.root(...))"
)


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
    def __init__(
        self,
        replica: Replica,
        connection: ConnectionLike,
        reconnect: Callable[[Replica], ConnectionLike] | None = None,
    ) -> None:
        assert replica.session is None, "a replica serves one session"
        self.replica = replica
        replica.session = self
        self._connection: ConnectionLike | None = connection
        # Makes a new connection for this replica (a forked child needs its own: after_fork).
        self._reconnect = reconnect
        self._reconnect_lock = threading.Lock()
        self._oid_prefix = connection.client_id[:16]
        self._oid_counter = itertools.count(1)
        self._rng = random.Random()
        self.closed = False

    @property
    def connection(self) -> ConnectionLike:
        connection = self._connection
        if connection is None:
            connection = self._connect_again()
        return connection

    def _connect_again(self) -> ConnectionLike:
        with self._reconnect_lock:
            if self._connection is None:
                if self._reconnect is None or self.closed:
                    raise Error("this superstatic connection is closed; call superstatic.connect()")
                connection = self._reconnect(self.replica)
                # A new client id: ids of objects made from now on cannot collide with those of
                # the parent process, which keeps counting under the old prefix.
                self._oid_prefix = connection.client_id[:16]
                self._oid_counter = itertools.count(1)
                self._connection = connection
            return self._connection

    def after_fork(self, pin: int | None) -> ConnectionLike | None:
        """In a forked child: the parent's connection (its socket, its I/O thread) is not ours.
        It is dropped, unclosed (closing it would end the parent's session); the replica, a
        valid prefix of the log, is kept, so objects the parent handed down stay the same
        objects, and a new connection (a new session) feeds it from where it is. Returns the
        dropped connection (the caller keeps it referenced; it must never be used)."""
        old = self._connection
        self._connection = None
        self._reconnect_lock = threading.Lock()
        self.replica.reset_after_fork(pin)
        return old

    # ------------------------------------------------------------------ ids

    def new_oid(self) -> str:
        # Unique without a round trip: the client id is random per connection (architecture 4).
        if self._connection is None:
            # A forked child before its own connection (after_fork): the prefix is still the
            # parent's, and the entry will be proposed under the child's new client id, which
            # rules 3 holds the prefix to (review 38). The connection sets the prefix; a read
            # fault in a body connects the same way (Replica._load_after_fork).
            _ = self.connection
        return f"{self._oid_prefix}.{next(self._oid_counter):x}"

    # ------------------------------------------------------------------ transactions

    def run(self, body: Callable[[], T]) -> T:
        """Runs `body` as one serializable transaction (or joins the running one)."""
        current = _txn.current()
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
            try:
                result = _txn.run_body(txn, body)
            except _txn.Doomed:
                continue  # entries applied under the body changed what it read: re-run
            except Exception:
                if txn.moved:
                    # Raised from a state that has since changed (consistent, but old): re-run
                    # on the current one, as a conflict would, rather than report it.
                    continue
                raise
            if txn.doomed:  # the body swallowed Doomed: its view was inconsistent
                continue
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
        assert _txn.current() is None and not txn.active
        new_nodes = list(txn.new_nodes.values())
        wire_ops: list[list[Any]] = [_new_op(node) for node in new_nodes]
        wire_ops.extend(_wire_op(op) for op in txn.ops)
        body = _ops.encode_txn_v2(txn.base, _wire_reads(txn), wire_ops)
        new_oids = [node.oid for node in new_nodes]
        self.replica.expect_new(new_nodes)
        try:
            started_s = time.monotonic()
            committed = self.connection.submit(body)
            self.replica.contention.record_round_trip(time.monotonic() - started_s)
            if committed.outcome in ("ok", "conflict"):
                # ok: read-your-writes. conflict: the retry must see the entry that beat us.
                try:
                    self.connection.wait_applied(committed.index, TIMEOUT_S_APPLY)
                except Unavailable as exc:
                    raise _not_applied_here(committed, exc) from exc
                if _trace.ENABLED:
                    _trace.finish_committed(committed, getattr(self.connection, "endpoint", ""))
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
            txn = _txn.current()
            assert txn is not None
            roots = self._roots_node()
            found = txn.view_key(roots, name).get(name)
            txn.stable()
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
        """The cluster-wide singleton of a @clustered class: attach, or create it once.

        Outside a transaction, creation is claimed first (a claim record in the root table,
        committed on its own), so however many processes call `Cls()` at once, one runs
        `__init__` and the others wait for its commit: the constructor's side effects happen
        once. A claim whose owner does not finish within CREATE_CLAIM_S (it died) is taken
        over. Inside a transaction the singleton is created as part of that transaction
        (claiming needs commits of its own); if the transaction is re-run, so is `__init__`."""
        name: str = cls.__superstatic_name__  # type: ignore[attr-defined]
        kwargs = kwargs or {}
        ref = self._find_root(name)
        if ref is None:
            if _txn.current() is None:
                ref = self._create_claimed(cls, name, args, kwargs)
            else:
                ref = self.run(lambda: self._create_in_txn(cls, name, args, kwargs))
        if not isinstance(ref, cls):
            raise Error(
                f"root {name!r} holds a {_kind_label(ref)}, not a {cls.__qualname__}; give the "
                "class another name with @superstatic.clustered(name=...)"
            )
        return ref

    def _construct(
        self, txn: _txn.Txn, cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A new private instance of `cls`, its constructor run inside `txn`."""
        node = self.replica.new_node(self.new_oid(), "obj", name, txn)
        txn.add_new([node])
        instance = node.ref
        cls.__init__(instance, *args, **kwargs)
        _proxy_object.adopt_constructor_writes(txn, instance, node)
        return instance

    def _create_in_txn(
        self, cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        txn = _txn.current()
        assert txn is not None
        roots = self._roots_node()
        found = txn.view_key(roots, name).get(name)
        claim = txn.view_key(roots, _claim_key(name)).get(_claim_key(name))
        txn.stable()
        if found is not None:
            return found
        if claim is not None and claim.get("owner") != self.connection.client_id:
            raise Error(
                f"the singleton {name!r} is being created by another process right now; create "
                f"it outside any transaction (call {cls.__qualname__}() once at start-up), where "
                "creators wait for each other"
            )
        instance = self._construct(txn, cls, name, args, kwargs)
        txn.emit(roots, ["set", ROOTS_OID, name, instance])
        return instance

    def _create_claimed(
        self, cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        key = _claim_key(name)
        me = self.connection.client_id
        seen: tuple[Any, Any] | None = None  # (claim record, its owner) while waiting on it
        seen_since = 0.0
        pause_s = CREATE_POLL_S_MIN
        while True:
            stale = None
            if seen is not None and time.monotonic() - seen_since >= CREATE_CLAIM_S:
                stale = seen  # unchanged for that long: its claimer died or hangs
            state, found = self.run(lambda stale=stale: self._claim(name, key, me, stale))
            if state == "exists":
                return found
            if state == "claimed":
                return self._create_as_claimer(cls, name, args, kwargs, found)
            owner = _claim_owner(found)
            if seen is None or seen[0] is not found or seen[1] != owner:
                seen, seen_since = (found, owner), time.monotonic()
            time.sleep(pause_s)  # the claimer is running __init__: wait for its commit
            pause_s = min(CREATE_POLL_S_MAX, pause_s * 2)
            self.sync()

    def _claim(
        self, name: str, key: tuple[str, str], me: str, stale: tuple[Any, Any] | None
    ) -> tuple[str, Any]:
        """Body: ("exists", singleton) | ("claimed", claim record) | ("wait", claim record)."""
        txn = _txn.current()
        assert txn is not None
        roots = self._roots_node()
        found = txn.view_key(roots, name).get(name)
        current = txn.view_key(roots, key).get(key)
        txn.stable()
        if found is not None:
            return "exists", found
        if current is None:
            record = _values.store(txn, {"owner": me}, roots, _values.item(key))
            txn.emit(roots, ["set", ROOTS_OID, key, record])
            return "claimed", record
        if current.get("owner") == me:  # (reads the claim: a take-over conflicts with this)
            return "claimed", current
        if stale is not None and current is stale[0] and current.get("owner") == stale[1]:
            current["owner"] = me  # take the claim over (conflicts if it moved meanwhile)
            return "claimed", current
        return "wait", current

    def _create_as_claimer(
        self, cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], claim: Any
    ) -> Any:
        key = _claim_key(name)
        me = self.connection.client_id

        def create() -> Any:
            txn = _txn.current()
            assert txn is not None
            claim_node = _node.node_of(claim)
            if claim_node is None or claim_node.dead:
                return None  # taken over, and the singleton made, while this one waited
            owner = claim.get("owner")  # read: a take-over makes this commit conflict
            if owner != me:
                return None
            roots = self._roots_node()
            instance = self._construct(txn, cls, name, args, kwargs)
            # Blind writes to the root table: other roots created meanwhile must not make this
            # commit conflict (it would run __init__ again); the claim guards the name.
            txn.emit(roots, ["set", ROOTS_OID, name, instance])
            txn.emit(roots, ["del", ROOTS_OID, key])
            return instance

        try:
            created = self.run(create)
        except BaseException:
            self._release_claim(key, claim)
            raise
        if created is None:  # taken over meanwhile: the new claimer creates it
            return self.attach(cls, args, kwargs)
        return created

    def _release_claim(self, key: tuple[str, str], claim: Any) -> None:
        me = self.connection.client_id

        def release() -> None:
            txn = _txn.current()
            assert txn is not None
            if claim.get("owner") == me:
                txn.emit(self._roots_node(), ["del", ROOTS_OID, key])

        # If it cannot be released now, waiters take the claim over after CREATE_CLAIM_S.
        with contextlib.suppress(Error):
            self.run(release)

    def _find_root(self, name: str) -> Any:
        txn = _txn.current()
        if txn is not None:
            roots = self.replica.roots_node()
            if roots is None:
                return None
            ref = txn.view_key(roots, name).get(name)
            txn.stable()
            return ref
        ref = self.replica.root_ref(name)
        if ref is None:
            # It may exist in the cluster and not have reached us yet: a barrier is cheaper
            # than running a constructor whose effects would be thrown away.
            self.sync()
            ref = self.replica.root_ref(name)
        return ref

    def _roots_node(self) -> Any:
        """The root table, for a transaction body. On a cluster that has never stored anything
        it does not exist yet: the first transaction that binds a root creates it, recording
        a whole read of it (absent), so two racing first creators conflict instead of one
        overwriting the other."""
        txn = _txn.current()
        assert txn is not None
        roots = self.replica.roots_node()
        if roots is not None:
            return roots
        pending = txn.new_nodes.get(ROOTS_OID)
        if pending is not None:
            return pending
        roots = self.replica.new_node(ROOTS_OID, "dict", None, txn)
        txn.add_new([roots])
        txn.reads[ROOTS_OID] = _ops.READ_CONTENT
        return roots

    # ------------------------------------------------------------------ barrier, lifecycle

    def sync(self) -> None:
        """Linearizable barrier: afterwards the replica includes every write committed anywhere
        before the call began."""
        if _txn.current() is not None:
            raise Error(
                "sync() inside a transaction: the transaction reads the state it started from "
                "and is validated at commit, so a barrier inside it means nothing; call "
                "superstatic.sync() before the transaction"
            )
        self._check_open()
        index = self.connection.read_index()
        self.connection.wait_applied(index, TIMEOUT_S_APPLY)

    def close(self) -> None:
        """Ends the session. Its objects become unusable (each use raises, saying so): they
        would otherwise show a state that silently goes stale."""
        if not self.closed:
            self.closed = True
            connection = self._connection
            if connection is not None:
                connection.close()
            self.replica.detach(CLOSED_REASON)

    def _check_open(self) -> None:
        if self.closed:
            raise Error(f"superstatic session: {CLOSED_REASON}")


class TransactionBlock:
    """`with superstatic.transaction():` (one commit at the end of the block),
    `async with superstatic.transaction():` (the same; the commit is awaited in a worker thread,
    so the event loop keeps running meanwhile) and `@superstatic.transaction()` (a function run
    as a transaction, re-run on conflict)."""

    def __init__(self, session_of: Callable[[], Session]) -> None:
        self._session_of = session_of
        self._txn: _txn.Txn | None = None
        self._joined = False
        self._entered = False
        self._session: Session | None = None

    def __enter__(self) -> TransactionBlock:
        if self._entered:
            raise Error(
                "this superstatic.transaction() object was already entered; call "
                "superstatic.transaction() again for each block"
            )
        self._entered = True
        session = self._session_of()
        current = _txn.current()
        if current is not None:
            if current.session is not session:
                raise Error("a transaction cannot span two superstatic connections")
            self._joined = True
            return self
        session._check_open()
        txn = _txn.Txn(session)
        _txn.body_enter(txn)
        self._session = session
        self._txn = txn
        return self

    def _end_body(self, exc_type: Any) -> _txn.Txn | None:
        """Ends the block's body; the transaction to commit, or None (nothing to commit)."""
        if self._joined:
            return None
        txn = self._txn
        assert txn is not None
        _txn.body_exit(txn)
        if exc_type is not None:
            txn.abandon()
            if issubclass(exc_type, _txn.Doomed):
                raise _block_conflict() from None
            return None
        if txn.doomed:  # the block swallowed Doomed: what it read is gone
            txn.abandon()
            raise _block_conflict()
        if txn.read_only:
            return None
        return txn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        txn = self._end_body(exc_type)
        if txn is not None:
            assert self._session is not None
            if self._session.commit(txn) == "conflict":
                raise _block_conflict()
        return False

    async def __aenter__(self) -> TransactionBlock:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        import asyncio

        txn = self._end_body(exc_type)
        if txn is not None:
            session = self._session
            assert session is not None
            # The commit is a blocking round trip (quorum + local apply): in a worker thread,
            # so other tasks keep running. The body has ended, so no task can join it.
            outcome = await asyncio.get_running_loop().run_in_executor(None, session.commit, txn)
            if outcome == "conflict":
                raise _block_conflict()
        return False

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        import functools
        import inspect

        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise Error(
                f"@superstatic.transaction() cannot wrap the async function {fn.__qualname__}: "
                "a transaction function is re-run on conflict and must not await. Use "
                "`async with superstatic.transaction():` inside it (committed once, "
                "ConflictError on conflict), or call a synchronous transaction function with "
                "`await asyncio.to_thread(...)`"
            )
        session_of = self._session_of

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            return session_of().run(lambda: fn(*args, **kwargs))

        return run


def _block_conflict() -> ConflictError:
    return ConflictError(
        "a concurrent writer changed what this `with superstatic.transaction():` block "
        "read, so nothing was applied. A with-block cannot be re-run automatically: put "
        "read-modify-write in a method of a shared class or in a function decorated "
        "with @superstatic.transaction(), which are re-run on conflict"
    )


def _claim_owner(claim: Any) -> Any:
    """Who holds a singleton's creation claim as this replica sees it (outside any
    transaction: a peek, no read recorded). A claim whose owner stays the same for
    CREATE_CLAIM_S is stale; a take-over changes the owner."""
    found = _node.node_of(claim)
    assert found is not None
    return found.live.get("owner")


def _wire_reads(txn: _txn.Txn) -> dict[str, tuple[int, list[Any]]]:
    """The body's read set in wire form. A key that cannot travel as it is (not storable, so
    it cannot be a stored key either: an instance with a custom __eq__, a NaN) makes its node
    a whole read instead (READ_CONTENT covers every key)."""
    out: dict[str, tuple[int, list[Any]]] = {}
    for oid, (flags, keys) in txn.read_set().items():
        wired: list[Any] = []
        for key in keys:
            ok, value = _values.read_key(key)
            if not ok:
                flags, wired = flags | _ops.READ_CONTENT, []
                break
            wired.append(value)
        out[oid] = (flags, wired)
    return out


def _claim_key(name: str) -> tuple[str, str]:
    """The root-table key of a singleton's creation claim (a tuple: never a root's name)."""
    return ("@creating", name)


def _kind_label(ref: Any) -> str:
    found = _node.node_of(ref)
    if found is None:
        return type(ref).__name__
    return found.class_name or found.kind


def _not_applied_here(committed: Committed, exc: Unavailable) -> Unavailable:
    """The error for a transaction whose fate the cluster decided but this replica has not
    applied in time. Its flag must agree with that fate: outcome_known=True promises that the
    write did not commit (a caller may then retry it), so a committed write never carries it."""
    if committed.outcome == "ok":
        return Unavailable(
            f"the transaction COMMITTED (entry {committed.index}) but is not applied in this "
            f"process yet ({exc}). Do not retry it: it is durable and applies here once this "
            "process's stream catches up (superstatic.sync() waits for that)",
            outcome_known=False,
            halted=exc.halted,
        )
    return Unavailable(
        f"the transaction was NOT applied: it conflicted with entry {committed.index}, which "
        f"this process has not applied yet ({exc}). Nothing of it was written; retry it later",
        outcome_known=True,
        halted=exc.halted,
    )


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
