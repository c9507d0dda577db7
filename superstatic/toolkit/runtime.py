"""The toolkit's machinery for one session: change tracking, waiting, log time, liveness,
callbacks and cluster events.

* **Changes.** The replica tells its listeners, after each batch the stream applied, which nodes
  it touched. The runtime keeps, per node, the last index that touched it (`touched_at`), so a
  waiter can ask "did anything I read change after index e?" without a window between
  evaluating and starting to wait. Waiters sleep on one condition, notified only by a batch that
  touched a node some waiter watches (or reached a log-time deadline one waits for).
* **Log time.** `replica.log_time_ms` is the leader-stamped time of the last applied entry, the
  same on every replica. A wait for a log-time deadline (a lease running out) estimates when the
  deadline passes from when the replica last saw log time advance, and then appends an empty
  transaction (a *tick*): on an idle cluster log time only moves with entries.
* **Liveness.** A process that holds anything (a claimed job, a lock, a place in a lock's queue)
  keeps a record `live[holder] = alive_until_ms` in the root `superstatic.toolkit.live`,
  renewed every ttl/3 by a keeper thread, ttl = the agent's session TTL. What a holder holds is
  free for others once log time passes its `alive_until_ms`: exactly when its session would
  expire, since the session's keep-alive has the same cadence. Apps cannot see the agent's
  session table, so the toolkit keeps this one in the data, where transactions can read it.
* **Callbacks** (`watch`, cluster events) run on one dispatcher thread of the library, never on
  the connection's I/O thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from superstatic.client import default as _default_session
from superstatic.objects.replica import Change
from superstatic.objects.session import Session
from superstatic.protocol import ops as _ops
from superstatic.protocol import wire
from superstatic.protocol.errors import Error, Unavailable
from superstatic.toolkit import shared

log = logging.getLogger("superstatic.toolkit")

LIVE_ROOT = "superstatic.toolkit.live"
# Ticks (empty transactions that advance log time) one process appends at most this often.
TICK_INTERVAL_S_MIN = 0.2
# A tick goes out this long after the estimated moment a log-time deadline passes.
TICK_MARGIN_S = 0.05
# Longest single sleep of a waiter: conditions are re-checked at least this often.
WAIT_SLICE_S = 1.0
# Nodes whose last touching index is remembered; past it the table restarts from the current
# index and every waiter older than that is woken once (it re-evaluates, nothing is missed).
TOUCHED_TRACKED_MAX = 1_000_000
# Callbacks (watch notifications, cluster events) queued for the dispatcher thread.
CALLBACKS_PENDING_MAX = 10_000
# Expired liveness records of other holders the keeper deletes per round.
LIVE_CLEANUP_MAX = 64
# A liveness record is deleted this many ttls after it expired (what it held is long free).
LIVE_CLEANUP_AFTER_TTLS = 2
# Cluster status is polled at least this often while someone listens to cluster events
# (besides at every NOOP or CONF entry the stream shows: a new leader, a membership change).
STATUS_POLL_S = 5.0
TIMEOUT_MS_STATUS = 2_000
TIMEOUT_S_THREAD_JOIN = 5.0
# Waiting for one's own tick or renewal to apply locally.
TIMEOUT_S_APPLY = 30.0

LAPSED_DETAIL = (
    "this process's liveness lapsed (log time passed it before its renewal): jobs it had "
    "claimed, locks it held and its places in lock queues may have been taken over"
)
# Evaluations of a predicate in a row that entries applied under (a body is re-run then).
EVALUATIONS_MAX = 64

_EMPTY_TXN = _ops.encode_txn({}, [])


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """Something happened to the cluster or to this app's standing in it.

    kind: "leader_changed" (leader, term), "member_joined" / "member_left" (node, members),
    "session_expired" (this process's liveness lapsed: its claimed jobs, locks and places in
    lock queues may have been taken over; detail says what).
    """

    kind: str
    leader: str | None = None
    term: int = 0
    node: str | None = None
    members: tuple[str, ...] = ()
    detail: str = ""


class Waiter:
    """Waits for a change to a set of nodes (None: any change) after an index."""

    __slots__ = ("held", "log_deadline_ms", "oids", "rt", "since")

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.oids: frozenset[str] | None = frozenset()
        self.since = 0
        self.log_deadline_ms: int | None = None
        # Refs of the watched nodes, kept while waiting: a partial replica never evicts a node
        # user code references, and an evicted node's changes would not reach this process
        # (the agent sends events of held nodes only: docs/virtual-heap.md, section 10).
        self.held: tuple[Any, ...] = ()

    def __enter__(self) -> Waiter:
        with self.rt.cond:
            self.rt.waiters.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.rt.cond:
            self.rt.waiters.discard(self)
            self._count(-1)
        self.held = ()

    def watch(
        self, oids: Iterable[str] | None, since: int, held: tuple[Any, ...] | None = None
    ) -> None:
        """From now on, wake for changes to `oids` (None: anything) after index `since`.
        `held`: refs of those nodes taken while they were read (Runtime.evaluate), else they
        are taken now from the replica."""
        if held is None:
            nodes = self.rt.replica.nodes
            found = (nodes.get(oid) for oid in (oids or ()))
            held = tuple(node.ref for node in found if node is not None)
        with self.rt.cond:
            self._count(-1)
            self.oids = None if oids is None else frozenset(oids)
            self.since = since
            self.held = held
            self._count(+1)

    def _count(self, step: int) -> None:
        watched = self.rt.watched
        if self.oids is None:
            self.rt.watch_all += step
            return
        for oid in self.oids:
            n = watched.get(oid, 0) + step
            if n > 0:
                watched[oid] = n
            else:
                watched.pop(oid, None)

    def changed(self) -> bool:
        """Caller holds rt.cond."""
        rt = self.rt
        if rt.floor_index > self.since:
            return True  # the table restarted (or a snapshot loaded) after our evaluation
        if self.oids is None:
            return rt.replica.applied_index > self.since
        touched_at = rt.touched_at
        since = self.since
        return any(touched_at.get(oid, 0) > since for oid in self.oids)

    def wait(self, local_deadline_s: float | None, log_deadline_ms: int | None = None) -> bool:
        """Blocks until a watched node changes (True), or log time reaches `log_deadline_ms`,
        or the monotonic clock reaches `local_deadline_s` (False). Ticks when a log-time
        deadline should have passed but no entry came to say so."""
        rt = self.rt
        self.log_deadline_ms = log_deadline_ms
        try:
            while True:
                with rt.cond:
                    while True:
                        if self.changed():
                            return True
                        if rt.closed:
                            raise Error("the superstatic connection was closed while waiting")
                        now_log = rt.replica.log_time_ms
                        if log_deadline_ms is not None and now_log >= log_deadline_ms:
                            return False
                        now = time.monotonic()
                        if local_deadline_s is not None and now >= local_deadline_s:
                            return False
                        wake = now + WAIT_SLICE_S
                        if local_deadline_s is not None:
                            wake = min(wake, local_deadline_s)
                        tick_due = False
                        if log_deadline_ms is not None:
                            tick_at = rt.estimate_local_s(log_deadline_ms) + TICK_MARGIN_S
                            tick_at = max(tick_at, rt.last_tick_s + TICK_INTERVAL_S_MIN)
                            if now >= tick_at:
                                tick_due = True
                                break
                            wake = min(wake, tick_at)
                        rt.cond.wait(max(0.0, wake - now))
                if tick_due:
                    rt.tick()
        finally:
            self.log_deadline_ms = None


class Runtime:
    """The toolkit state of one session (module doc)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.replica = session.replica
        self.cond = threading.Condition(threading.Lock())
        self.waiters: set[Waiter] = set()
        self.watched: dict[str, int] = {}  # oid -> waiters watching it
        self.watch_all = 0  # waiters watching any change
        self.touched_at: dict[str, int] = {}
        self.floor_index = 0
        # Log time as last seen advancing, and when (monotonic): to estimate log time "now".
        self.seen_log_ms = self.replica.log_time_ms
        self.seen_at_s = time.monotonic()
        self.last_tick_s = 0.0
        self._tick_lock = threading.Lock()
        self.closed = False
        # Liveness (module doc).
        self._live_lock = threading.Lock()
        self.alive_until_ms = 0  # as last renewed by this process (0: not registered)
        self.renewed_at_s = 0.0  # monotonic, when the last renewal committed
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        # Callbacks on the dispatcher thread.
        self._callbacks: queue.Queue[Callable[[], None] | None] = queue.Queue(CALLBACKS_PENDING_MAX)
        self._dispatcher: threading.Thread | None = None
        self.callbacks_dropped = 0
        # Watches: oid -> watches (superstatic.toolkit.waiting.Watch).
        self.watches: dict[str, set[Any]] = {}
        # Cluster events.
        self.event_sinks: list[Callable[[ClusterEvent], None]] = []
        self._monitor: threading.Thread | None = None
        self._monitor_wake = threading.Event()
        self.replica.listeners.append(self._on_change)
        # The agent's own session expiry (issue 9: the connection opens a new session when the
        # agent answers "session_expired"): a connection that offers this list calls each
        # listener with the agent's message, on its I/O thread.
        hooks = getattr(session.connection, "session_expired_listeners", None)
        if isinstance(hooks, list):
            hooks.append(self._on_session_expired)

    def _on_session_expired(self, detail: str) -> None:
        """Connection hook (I/O thread): only queues the event."""
        message = f"the agent expired this connection's session: {detail}"
        self.emit(ClusterEvent("session_expired", detail=message))

    # ------------------------------------------------------------------ ids and time

    @property
    def holder(self) -> str:
        """This process's holder id in liveness records and claims: its client id."""
        return str(self.session.connection.client_id)

    def unique_id(self) -> str:
        """An id no other call, handle or process will produce: the session's next object
        id (its client id's prefix and a per-connection counter)."""
        return self.session.new_oid()

    @property
    def ttl_ms(self) -> int:
        """The liveness ttl: the agent's session ttl (what a session would last)."""
        ttl = getattr(self.session.connection, "session_ttl_ms", 60_000)
        return int(ttl)

    def log_now_ms(self) -> int:
        return self.replica.log_time_ms

    def estimate_local_s(self, log_ms: int) -> float:
        """The monotonic time at which log time should reach `log_ms` (log time advances with
        the leader's monotonic clock, so about as fast as ours)."""
        return self.seen_at_s + (log_ms - self.seen_log_ms) / 1000

    def tick(self) -> None:
        """Appends an empty transaction, so log time moves on an idle cluster (at most one
        per TICK_INTERVAL_S_MIN per process; waiters that need it at once share it)."""
        with self._tick_lock:
            now = time.monotonic()
            if now - self.last_tick_s < TICK_INTERVAL_S_MIN:
                return
            self.last_tick_s = now
            connection = self.session.connection
            try:
                committed = connection.submit(_EMPTY_TXN)
                connection.wait_applied(committed.index, TIMEOUT_S_APPLY)
            except Unavailable as exc:
                log.info("superstatic: a log-time tick failed (%s); waiting on", exc)

    # ------------------------------------------------------------------ changes

    def waiter(self) -> Waiter:
        """A waiter registered for its `with` block (watching nothing until `watch`)."""
        return Waiter(self)

    def _on_change(self, change: Change) -> None:
        """Replica listener: runs on the connection's I/O thread; notes and wakes, no more."""
        watches: list[Any] = []
        with self.cond:
            if change.log_time_ms > self.seen_log_ms:
                self.seen_log_ms = change.log_time_ms
                self.seen_at_s = time.monotonic()
            wake = False
            if change.touched is None:
                self.floor_index = change.index
                self.touched_at.clear()
                wake = bool(self.waiters)
                for found in self.watches.values():
                    watches.extend(found)
            else:
                touched_at = self.touched_at
                if len(touched_at) + len(change.touched) > TOUCHED_TRACKED_MAX:
                    touched_at.clear()
                    self.floor_index = change.index
                    wake = True
                for oid in change.touched:
                    touched_at[oid] = change.index
                    if oid in self.watched:
                        wake = True
                    found = self.watches.get(oid)
                    if found:
                        watches.extend(found)
                if self.watch_all:
                    wake = True
            if not wake:
                log_ms = change.log_time_ms
                wake = any(
                    w.log_deadline_ms is not None and w.log_deadline_ms <= log_ms
                    for w in self.waiters
                )
            if wake:
                self.cond.notify_all()
        for watch in watches:
            watch.notify(change.index)
        if change.noops and self.event_sinks:
            self._monitor_wake.set()  # a new leader's NOOP or a CONF entry went by

    # ------------------------------------------------------------------ evaluation

    def evaluate(
        self, predicate: Callable[[], Any]
    ) -> tuple[Any, frozenset[str] | None, int, tuple[Any, ...]]:
        """Runs `predicate` on one consistent state of the replica, recording what it reads:
        (its value, the node ids read (None: it read no node, so wake on anything), the
        applied index it saw, the refs of the nodes read for Waiter.watch to hold)."""
        from superstatic.objects import eviction as _eviction
        from superstatic.objects import node as _node
        from superstatic.objects import txn as _txn

        seen = [0]
        held: list[Any] = []

        def body() -> Any:
            seen[0] = self.replica.applied_index
            value = predicate()
            # Taken while the body still pins what it read: a partial replica could evict a
            # node between the body's end and the wait, and its changes would never arrive.
            nodes = self.replica.nodes
            found = (nodes.get(oid) for oid in (*txn.reads, *txn.shadows, *txn.pending))
            held[:] = [node.ref for node in found if node is not None]
            # and the keys it read of per-key dicts: the clock lets keys go whatever holds
            # the dict (a held node's ref above keeps all of it).
            per_key = {
                oid: keys
                for oid, keys in txn.read_keys.items()
                if (node := nodes.get(oid)) is not None and node.state == _node.PARTIAL
            }
            if per_key:
                held.append(_eviction.KeyPin(self.replica, per_key))
            return value

        for _attempt in range(EVALUATIONS_MAX):
            txn = _txn.Txn(self.session)
            try:
                value = _txn.run_body(txn, body)
            except _txn.Doomed:
                continue  # entries applied under it changed what it read: evaluate again
            if not txn.doomed:
                break
        else:
            raise Error(
                f"the predicate saw the state change under it {EVALUATIONS_MAX} times in a row "
                f"(EVALUATIONS_MAX={EVALUATIONS_MAX}); make it cheaper, or read less"
            )
        reads = frozenset(txn.reads) | frozenset(txn.shadows) | frozenset(txn.pending)
        if not txn.read_only:
            txn.abandon()
            raise Error(
                "a wait_for predicate wrote to shared state; predicates must only read (the "
                "writes were discarded)"
            )
        return value, (reads or None), seen[0], tuple(held)

    # ------------------------------------------------------------------ liveness

    def live_root(self) -> Any:
        return self.session.root(LIVE_ROOT, dict)

    def ensure_alive(self) -> None:
        """Registers this process's liveness (once) and starts the keeper that renews it."""
        if self.alive_until_ms and self._keeper is not None:
            return
        with self._live_lock:
            if not self.alive_until_ms:
                self.renew()
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep, name="superstatic-toolkit-keeper", daemon=True
                )
                self._keeper.start()

    def renew(self) -> None:
        live = self.live_root()
        holder = self.holder
        ttl_ms = self.ttl_ms
        until = [0]

        def body() -> None:
            until[0] = self.log_now_ms() + ttl_ms
            shared.blind_set(live, holder, until[0])

        self.session.run(body)
        self.alive_until_ms = until[0]
        self.renewed_at_s = time.monotonic()

    def alive_until(self, holder: str) -> int:
        """A holder's liveness (recording the read inside a transaction); 0 if unknown."""
        value = self.live_root().get(holder, 0)
        return value if isinstance(value, int) else 0

    def _keep(self) -> None:
        while not self._stop.wait(max(0.05, self.ttl_ms / 3000)):
            if self.session.closed:
                return
            try:
                self.session.sync()
                lapsed = self.log_now_ms() > self.alive_until_ms
                self.renew()
                if lapsed:
                    self.emit(ClusterEvent("session_expired", detail=LAPSED_DETAIL))
                self._cleanup_live()
            except Exception as exc:  # Unavailable, a closed session: try again next round
                if self.session.closed or self._stop.is_set():
                    return
                log.info("superstatic: liveness renewal failed (%s); retrying", exc)

    def _cleanup_live(self) -> None:
        live = self.live_root()
        horizon = self.log_now_ms() - LIVE_CLEANUP_AFTER_TTLS * self.ttl_ms
        stale = [h for h, until in list(shared.peek(live).items()) if until < horizon]
        if not stale:
            return

        def body() -> None:
            for holder in stale[:LIVE_CLEANUP_MAX]:
                if live.get(holder, horizon) < horizon:  # reads: a renewal meanwhile conflicts
                    del live[holder]

        self.session.run(body)

    # ------------------------------------------------------------------ callbacks

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Runs `fn` on the dispatcher thread (never the I/O thread). Dropped (and counted)
        if CALLBACKS_PENDING_MAX are queued: a callback that blocks must not grow memory."""
        if self._dispatcher is None:
            with self._live_lock:
                if self._dispatcher is None:
                    self._dispatcher = threading.Thread(
                        target=self._dispatch, name="superstatic-toolkit-callbacks", daemon=True
                    )
                    self._dispatcher.start()
        try:
            self._callbacks.put_nowait(fn)
        except queue.Full:
            self.callbacks_dropped += 1
            log.warning(
                "superstatic: a callback was dropped: CALLBACKS_PENDING_MAX=%d are queued "
                "(a callback is blocking the dispatcher thread)",
                CALLBACKS_PENDING_MAX,
            )

    def _dispatch(self) -> None:
        while True:
            fn = self._callbacks.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:
                log.exception("superstatic: a toolkit callback raised")

    # ------------------------------------------------------------------ cluster events

    def emit(self, event: ClusterEvent) -> None:
        for sink in list(self.event_sinks):
            self.call_soon(lambda sink=sink: sink(event))

    def add_event_sink(self, sink: Callable[[ClusterEvent], None]) -> None:
        with self._live_lock:
            self.event_sinks.append(sink)
            if self._monitor is None:
                self._monitor = threading.Thread(
                    target=self._watch_cluster, name="superstatic-toolkit-cluster", daemon=True
                )
                self._monitor.start()
        self._monitor_wake.set()

    def remove_event_sink(self, sink: Callable[[ClusterEvent], None]) -> None:
        with self._live_lock, contextlib.suppress(ValueError):
            self.event_sinks.remove(sink)

    def _watch_cluster(self) -> None:
        """Asks the agent for its STATUS at every NOOP/CONF entry (and every STATUS_POLL_S) and
        turns differences into events. Runs only while someone listens."""
        from superstatic.client import oneshot

        leader: str | None = None
        term = 0
        members: tuple[str, ...] | None = None
        while not self._stop.is_set() and not self.session.closed:
            self._monitor_wake.wait(STATUS_POLL_S)
            self._monitor_wake.clear()
            if self._stop.is_set():
                return
            endpoint = getattr(self.session.connection, "endpoint", None)
            if not endpoint:
                continue
            try:
                status = oneshot.request(
                    endpoint,
                    wire.FrameType.STATUS,
                    {},
                    timeout_ms=TIMEOUT_MS_STATUS,
                    keys=getattr(self.session.connection, "keys", None),  # the app's CURVE key
                )
            except Error as exc:
                log.debug("superstatic: STATUS for cluster events failed: %s", exc)
                continue
            now_members = tuple(
                sorted(str(m.get("id")) for m in status.get("members", []) if isinstance(m, dict))
            )
            now_leader = status.get("leader")
            now_term = status.get("term", 0)
            if not isinstance(now_term, int):
                now_term = 0
            if now_leader is not None and (now_leader != leader or now_term > term):
                if leader is not None or term:
                    self.emit(ClusterEvent("leader_changed", leader=now_leader, term=now_term))
                leader, term = now_leader, now_term
            if members is not None:
                for node in sorted(set(now_members) - set(members)):
                    self.emit(ClusterEvent("member_joined", node=node, members=now_members))
                for node in sorted(set(members) - set(now_members)):
                    self.emit(ClusterEvent("member_left", node=node, members=now_members))
            members = now_members

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Gives up what this process holds (its liveness record: claimed jobs and locks are
        free at once instead of after a ttl), stops the threads."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._monitor_wake.set()
        if self.alive_until_ms and not self.session.closed:
            live = self.live_root()
            holder = self.holder
            try:
                self.session.run(lambda: shared.blind_del(live, holder))
            except Error as exc:
                log.info("superstatic: could not release this process's liveness: %s", exc)
        with self.cond:
            self.cond.notify_all()
        with contextlib.suppress(queue.Full):
            self._callbacks.put_nowait(None)
        with contextlib.suppress(ValueError):
            self.replica.listeners.remove(self._on_change)
        for thread in (self._keeper, self._dispatcher, self._monitor):
            if thread is not None and thread is not threading.current_thread():
                thread.join(TIMEOUT_S_THREAD_JOIN)


_runtimes: weakref.WeakKeyDictionary[Session, Runtime] = weakref.WeakKeyDictionary()
_runtimes_lock = threading.Lock()


def runtime(session: Session | None = None) -> Runtime:
    """The toolkit runtime of `session` (the process's default session if None)."""
    if session is None:
        session = _default_session.get()
    with _runtimes_lock:
        rt = _runtimes.get(session)
        if rt is None or rt.closed:
            rt = Runtime(session)
            _runtimes[session] = rt
        return rt


def close_all() -> None:
    """Closes every runtime (superstatic.close() and exit call it before the sessions close)."""
    with _runtimes_lock:
        found = list(_runtimes.values())
    for rt in found:
        rt.close()


# Registered after the default session's own atexit handler (imported above), so it runs first:
# what this process holds is given up while its connection still works.
atexit.register(close_all)
