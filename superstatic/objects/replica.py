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

import contextlib
import datetime
import itertools
import logging
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from superstatic.objects import eviction as _eviction
from superstatic.objects import hollow as _hollow
from superstatic.objects import inrefs as _inrefs
from superstatic.objects import stats as _stats
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.factory import make_node
from superstatic.objects.fairness import ContentionTracker
from superstatic.objects.node import HELD, HOLLOW, LOADING, PARTIAL, Node, node_of
from superstatic.objects.partial_dict import PartialDict
from superstatic.objects.proxy_base import NodeProxy
from superstatic.objects.snapshot_load import SnapshotLoad
from superstatic.protocol import codec as _codec
from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import Error, ProtocolError, Unavailable

if TYPE_CHECKING:
    from superstatic.objects.session import Session
    from superstatic.objects.txn import Txn

ROOTS_OID = "@roots"
# How long the I/O thread holds entries back while transaction bodies run (so a body normally
# reads one prefix of the log and never has to re-run). Past it the entries apply anyway and
# bodies whose reads they changed re-run (txn.Doomed): a body that waits for another thread's
# write, or an asyncio task awaiting inside `transaction()`, never blocks the log for longer.
PIN_MS_MAX = 100
# What entries applied while bodies run touched (Txn.stable checks a body's reads against it) is
# kept for the bodies running, bounded: past this many items (an entry, a node of it, a key of
# it count one each) the oldest entries are forgotten, and a body whose read base predates what
# is kept re-runs (it cannot tell whether they touched what it read). Pins are short (PIN_MS_MAX
# holds entries back), so only a body suspended for long (an asyncio task awaiting in a block)
# ever meets the bound.
TOUCHED_ITEMS_MAX = 50_000
# Keys of one node one entry touched kept one by one; past it the node counts as touched whole
# (a body that read any key of it re-runs), so one entry adding a million set members costs one
# item, not a million.
TOUCHED_NODE_KEYS_MAX = 256
# How long a fault waits for its contents at most. The connection gives up on a load earlier
# (its request timeout, Replica.load_failed); this only bounds a loader that never answers.
LOAD_WAIT_S_MAX = 60.0
# Events applied under one hold of `lock` (apply_events): a batch of a few takes it once, and a
# long one (a catch-up's frames) lets transaction bodies in between its chunks.
EVENTS_PER_LOCK_MAX = 64
# describe() walks the graph to name a node in an error message; it gives up past this many
# nodes and names the node by its id instead.
DESCRIBE_NODES_MAX = 100_000

# Decoded scalars that are already what this process holds (enum forms and zone stand-ins are
# not: values.live_of_wire turns them into members and ZoneInfo zones).
_AS_IS = _codec.SCALAR_TYPES - {
    _codec.EnumInt,
    _codec.EnumStr,
    _codec.EnumMember,
    datetime.datetime,
    datetime.time,
}

_intern = sys.intern

Event = tuple[Any, ...]  # [index, client, seq, outcome, body, collected(, log_time_ms, heads)]
# A node's head (oid, kind, class name or None): enough to make a hollow ref for it.
Head = tuple[str, str, "str | None"]
# Asks for the contents of nodes, and keys of per-key nodes as [(oid, [key, ...]), ...]; `whole`:
# dicts whole even when the agent holds them per key (a partial replica's loader, the
# connection's in a real app): returns once the request is sent; the answer arrives as
# Replica.install (or load_failed).
Loader = Callable[[list[str], list[tuple[str, list[Any]]], bool], None]
# One key run of a load's answer: (oid, [[key, value], ...] present, [key, ...] absent), in
# wire form.
KeyRun = tuple[str, list[Any], list[Any]]

log = logging.getLogger("superstatic.objects.replica")


@dataclass(frozen=True, slots=True)
class Change:
    """What one batch of the stream changed, for listeners (superstatic.toolkit): the nodes
    written or dropped (`touched`; None after a snapshot: anything may have changed), the index
    and log time reached, and how many NOOP/CONF entries (a new leader, a membership change)
    passed."""

    index: int
    log_time_ms: int
    touched: frozenset[str] | None
    noops: int


ChangeListener = Callable[[Change], None]


class Replica:
    """The app's copy of the object graph (a prefix of the log)."""

    def __init__(self) -> None:
        # Held while one entry (or a snapshot) is applied, and by readers that need a state
        # with no entry half-applied (plain(), describe(), a body revalidating its reads).
        # Re-entrant: plain() inside such a section takes it again.
        self.lock = threading.RLock()
        # Keys of per-key dicts the clock must not let go (eviction.KeyPin: a waiter's
        # predicate read them): (oid, key) -> pins. Their own lock: a pin is released from
        # __del__, which must never wait for `lock`.
        self.key_pins: dict[tuple[str, Any], int] = {}
        self.key_pins_lock = threading.Lock()
        # Bumped (under `lock`) before each entry or snapshot that changes nodes: a body that
        # sees it unchanged since its reads began read one consistent state (txn.Txn.stable).
        self.gen = 0
        # Bodies running (pins, by serial) and whether the I/O thread is waiting to apply: see
        # pin(). Pins up to `_overridden` already held entries back for PIN_MS_MAX once: later
        # entries do not wait for them again (an asyncio task suspended in a block for minutes
        # must not slow every entry by PIN_MS_MAX).
        self._gate = threading.Condition(threading.Lock())
        # Running bodies' pins: serial -> the applied index the body started from.
        self._pins: dict[int, int] = {}
        self._pin_serial = itertools.count(1)
        self._overridden = 0
        self._apply_waiting = 0
        self.applied_index = 0
        # What each entry applied while a body was pinned touched, oldest first:
        # (index, {oid: _Touch}); entries at or below `_touched_floor` are not kept (a body
        # whose base is below it cannot be validated and re-runs). `_trim_below`: entries at
        # or below it are no longer needed by any running body (set on unpin).
        self._touched: deque[tuple[int, dict[str, _Touch]]] = deque()
        self._touched_items = 0
        self._touched_floor = 0
        self._trim_below = 0
        # The log time of the last applied entry (leader-stamped, the same on every replica):
        # the toolkit's leases and expiries are judged by it, never by this host's clock.
        self.log_time_ms = 0
        # Called (on the connection's I/O thread, outside the lock) after each batch applied:
        # they must only note the change and wake someone, never block.
        self.listeners: list[ChangeListener] = []
        self.nodes: dict[str, Node] = {}
        self.session: Session | None = None
        # Who keeps losing optimistic races, from the stream's outcomes (superstatic/fairness.py).
        self.contention = ContentionTracker()
        # Private nodes of a transaction being committed: when the entry creating them applies,
        # the replica adopts these very objects, so references the body handed out stay valid.
        self._adopt: dict[str, Node] = {}
        # Set when the replica is abandoned (its session closed): why its objects are unusable.
        self.detached: str | None = None
        # ---- the virtual heap (docs/virtual-heap.md): a partial replica holds what it loaded.
        self.partial = False
        self.loader: Loader | None = None
        # The connection's I/O thread (it applies the stream: a fault there could never be
        # answered), set by the connection.
        self.io_thread: int | None = None
        # Loads in flight: oid (or (oid, key) for a key of a per-key node) -> what the faulting
        # threads wait on.
        self._loads: dict[Any, _LoadWait] = {}
        # Whether the cluster has a root table (a partial replica holds it per key, and asks
        # again while it has none: another app may create it at any time).
        self._roots_exist = False
        # Running bodies by pin serial (the clock never evicts what one read or wrote), and
        # pins whose body waits for a load (entries must not wait for them: Replica.fault).
        self._pin_txns: dict[int, Txn] = {}
        self._unblocked: set[int] = set()
        # The eviction clock over held nodes (oid -> node, oldest first), the estimated bytes
        # of held contents, their bound, and the oids hollowed since the connection last told
        # the agent (take_drops).
        self.cache_bytes = 0
        self.held_bytes = 0
        self._clock: OrderedDict[str, Node] = OrderedDict()
        self._drops: list[str] = []
        # Keys of per-key nodes let go (oid -> keys), for a DROP; and the (oid, key) a load
        # being installed brought, which its own sweep must not let go (their faulting threads
        # have not read them yet).
        self._key_drops: dict[str, list[Any]] = {}
        self._fresh_keys: set[tuple[str, Any]] = set()
        # Hollow nodes whose last reference from a held node went (eviction._forget_stubs).
        self._stub_candidates: list[Node] = []
        # Sweeps of the clock so far (a node remembers the one that hollowed it: refaults).
        self.sweeps = 0
        # Heads the entry being applied carries (apply_events), for refs to nodes not here.
        self._entry_heads: dict[str, Head] = {}
        self.stats = HeapStats()

    # ------------------------------------------------------------------ ReplicaSink

    def snapshot_builder(self) -> SnapshotLoad:
        """A snapshot to be loaded as its frames arrive (`objects/snapshot_load.py`): the
        stream's feeder gives it each node and run, and its `finish` swaps it in."""
        return SnapshotLoad(self)

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, int, str, Any]]) -> None:
        """Replaces everything with the snapshot at `index`: (oid, version, kind, contents)
        records in the shapes `client.stream.StreamFeeder` checks. Nodes that survive keep
        their identity (same proxy / instance), refilled in place. The records are consumed:
        each one's contents list is emptied once used."""
        load = SnapshotLoad(self)
        for oid, version, kind, contents in nodes:
            load.node(oid, version, kind, contents[0] if kind == "obj" else None)
            load.run(contents[1] if kind == "obj" else contents)
            contents.clear()
        load.finish(index)

    def note_log_time(self, log_time_ms: int) -> None:
        """The log time at a snapshot about to be loaded (the stream says it first)."""
        with self.lock:
            self.log_time_ms = max(self.log_time_ms, log_time_ms)

    def _swap_in(self, index: int, nodes: dict[str, Node], refills: list[tuple[Node, Any]]) -> None:
        """A snapshot's last step (SnapshotLoad.finish, which resolved everything first, so
        nothing here can fail half way): `nodes` becomes the node table at `index`, and each
        node that existed before it gets the contents resolved for it (`refills`: a fresh
        container of its kind), in place. Old nodes not in it die. Bodies that read the
        replaced state re-run."""
        self._hold_bodies()
        try:
            with self.lock:
                if self.detached is not None:
                    # The session closed while the snapshot arrived (close() waits for the I/O
                    # thread only so long): a detached replica is never updated again.
                    raise Error(self.detached)
                self.gen += 1
                if self._adopt:
                    # Adopted by the snapshot, or not of its kind: no entry will adopt them.
                    for oid in [oid for oid in self._adopt if oid in nodes]:
                        adopted = self._adopt.pop(oid)
                        if nodes[oid] is adopted:
                            adopted.txn = None
                old = self.nodes
                for oid, node in old.items():
                    if nodes.get(oid) is not node:
                        node.dead = True
                self.nodes = nodes
                for node, fresh in refills:
                    live = node.live
                    live.clear()
                    if node.kind == "list":
                        live.extend(fresh)
                    else:
                        live.update(fresh)  # (a dict's or set's stored hashes are reused)
                if self.partial:
                    for node in nodes.values():
                        _inrefs.add_contents(node.kind, node.live, 1)
                self.applied_index = index
                self._touched_reset(index)  # bodies that read the replaced state re-run
        finally:
            self._release_bodies()
        self._notify(Change(index, self.log_time_ms, None, 0))

    def apply_events(self, events: Sequence[Event]) -> None:
        applied = self.applied_index
        if not events or events[-1][0] <= applied:
            return
        # The bodies are decoded and checked first, before the lock is taken (a body waiting
        # for it does not wait for the decoding). A refused body ends the batch there: the
        # events before it apply, then its error is raised, as when each was decoded in turn.
        # Events already applied are skipped unread (a snapshot or an earlier delivery).
        batch: list[tuple[Event, list[list[Any]] | None]] = []
        refused: Exception | None = None
        for event in events:
            if event[0] <= applied:
                continue
            body = event[4]
            if event[3] == "ok" and body:
                try:
                    batch.append((event, _ops.decode_ops_fast(body)))
                except Exception as exc:
                    refused = exc
                    break
            else:
                batch.append((event, None))
        touched: set[str] | None = set() if self.listeners else None
        noops = 0
        self._hold_bodies()
        try:
            for first in range(0, len(batch), EVENTS_PER_LOCK_MAX):
                chunk = batch[first : first + EVENTS_PER_LOCK_MAX]
                with self.lock:
                    noops += self._apply_decoded(chunk, touched)
            if refused is not None:
                raise refused  # (no sweep, no listener: as when it was raised mid-batch)
            if self.partial and self.held_bytes > self.cache_bytes:
                with self.lock:
                    _eviction.sweep(self)
        finally:
            self._release_bodies()
        if self.listeners:
            frozen = frozenset(touched) if touched is not None else None
            self._notify(Change(self.applied_index, self.log_time_ms, frozen, noops))

    def _apply_decoded(
        self, batch: list[tuple[Event, list[list[Any]] | None]], touched: set[str] | None
    ) -> int:
        """Applies events whose bodies are decoded (apply_events); returns how many were NOOP
        entries. Call under `lock`."""
        noops = 0
        partial = self.partial
        observe = self.contention.observe
        for event, wire_ops in batch:
            index, client, _seq, outcome, _body, collected = event[:6]
            if index <= self.applied_index:
                continue  # (a duplicate within the batch)
            observe(client, outcome)
            if wire_ops is not None or collected:
                self.gen += 1
            record: dict[str, _Touch] | None = {} if self._pins else None
            if wire_ops is not None:
                if partial:
                    self._entry_heads = _heads_of(event)
                    try:
                        self._apply_ops(index, wire_ops, touched, record)
                    finally:
                        self._entry_heads = {}
                else:
                    self._apply_ops(index, wire_ops, touched, record)
            for oid in collected:
                self._drop(oid)
                if record is not None:
                    record[oid] = _Touch(True, None)
            if record:
                self._touched_add(index, record)
            elif record is None and self._touched:
                self._touched_reset(index)  # no body runs: nobody needs them
            if len(event) > 6 and event[6] > self.log_time_ms:
                self.log_time_ms = event[6]
            self.applied_index = index
            if outcome == "noop":
                noops += 1
            if touched is not None and collected:
                touched.update(collected)
        return noops

    def _notify(self, change: Change) -> None:
        for listener in list(self.listeners):
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the stream
                log.exception("superstatic: a replica change listener failed")

    # ------------------------------------------------------------------ lifecycle

    def detach(self, reason: str) -> None:
        """The replica will never be updated again (its session closed): every object of it
        raises `Error(reason)` when used, rather than serve a state that silently goes stale."""
        with self.lock:
            self.detached = reason
            nodes = list(self.nodes.values()) + list(self._adopt.values())
            self.nodes = {}
            self._adopt.clear()
            for node in nodes:
                node.dead = True
                _detach_ref(node.ref, reason)
                node.live = _Detached(reason)  # what the Python-level read paths consult

    def reset_after_fork(self, pin: int | None) -> None:
        """In a forked child (only the forking thread survives): fresh synchronization state.
        `pin`: the pin of the forking thread's transaction body, if it is inside one."""
        self._gate = threading.Condition(threading.Lock())
        self._pins = {} if pin is None else {pin: self.applied_index}
        self._pin_txns = {}
        self._unblocked = set()
        self._apply_waiting = 0
        # Loads in flight were the parent's threads': their nodes are hollow again here, and
        # the loader was the parent's connection's: the child's asks for its own.
        if self.partial:
            self.loader = self._load_after_fork
        for oid in list(self._loads):
            node = self.nodes.get(oid)
            if node is not None and node.state == LOADING:
                node.state = HOLLOW
        self._loads = {}
        self.contention = ContentionTracker()

    # ------------------------------------------------------------------ bodies vs applying

    def pin(self, txn: Txn | None = None) -> tuple[int, int, int]:
        """A transaction body starts: entries are held back while it runs (bounded by
        PIN_MS_MAX), and what entries applied meanwhile touched is kept for it. Returns the
        pin's serial (for unpin), the generation and the applied index its reads start from.
        If the I/O thread is waiting to apply, the body first lets it (new bodies would
        otherwise starve it)."""
        with self._gate:
            if self._apply_waiting:
                self._gate.wait_for(lambda: not self._apply_waiting, PIN_MS_MAX / 1000)
            serial = next(self._pin_serial)
            # Registered before the index is read below: an entry applied in between sees the
            # pin and records what it touched (apply_events decides under the lock).
            self._pins[serial] = self.applied_index
            if txn is not None:
                self._pin_txns[serial] = txn
        with self.lock:  # no entry half-applied: the generation matches the contents
            return serial, self.gen, self.applied_index

    @contextlib.contextmanager
    def applying_under(self, serial: int) -> Iterator[None]:
        """While the body pinned at `serial` waits (for a load's answer, or a barrier), entries
        apply under it instead of being held back for it, recorded for it as for any pinned
        body (Txn.stable and Txn.reads_moved judge them). Serial 0: no body, nothing to do."""
        if not serial:
            yield
            return
        with self._gate:
            self._unblocked.add(serial)
            self._gate.notify_all()
        try:
            yield
        finally:
            with self._gate:
                self._unblocked.discard(serial)

    def unpin(self, serial: int) -> None:
        with self._gate:
            self._pins.pop(serial, None)  # (absent in a forked child: the pin was the parent's)
            self._pin_txns.pop(serial, None)
            self._unblocked.discard(serial)
            # Entries up to the oldest running body's start are no longer needed (none at all
            # when no body runs); the apply path drops them (one int write: no lock needed).
            self._trim_below = min(self._pins.values(), default=self.applied_index)
            if not self._blocking():
                self._gate.notify_all()

    def reads_unchanged(
        self, base: int, reads: dict[str, int], read_keys: dict[str, dict[Any, None]]
    ) -> bool:
        """Whether no entry applied after `base` touched what a body read (nodes with
        READ_SHAPE / READ_CONTENT flags, keys one by one). Call under `lock`."""
        if base >= self.applied_index:
            return True
        if base < self._touched_floor:
            return False  # forgotten (or a snapshot since): cannot tell, so moved
        for index, touched in reversed(self._touched):
            if index <= base:
                break
            for oid, touch in touched.items():
                flags = reads.get(oid)
                if flags is None:
                    continue
                if flags & _ops.READ_CONTENT or (touch.shape and flags & _ops.READ_SHAPE):
                    return False
                keys = read_keys.get(oid)
                if keys:
                    if touch.keys is None:
                        return False
                    if len(touch.keys) <= len(keys):
                        if any(k in keys for k in touch.keys):
                            return False
                    elif any(k in touch.keys for k in keys):
                        return False
        return True

    def _touched_reset(self, index: int) -> None:
        """Forgets every touched record: bodies whose base is below `index` re-run (a snapshot
        replaced the state under them). Call under `lock`."""
        self._touched.clear()
        self._touched_items = 0
        self._touched_floor = index

    def _touched_add(self, index: int, touched: dict[str, _Touch]) -> None:
        log_ = self._touched
        trim = self._trim_below
        while log_ and log_[0][0] <= trim:
            self._touched_floor = max(self._touched_floor, log_[0][0])
            self._touched_items -= _items(log_.popleft()[1])
        log_.append((index, touched))
        self._touched_items += _items(touched)
        while self._touched_items > TOUCHED_ITEMS_MAX and len(log_) > 1:
            self._touched_floor = log_[0][0]
            self._touched_items -= _items(log_.popleft()[1])

    def _blocking(self) -> bool:
        overridden = self._overridden
        unblocked = self._unblocked
        return any(serial > overridden and serial not in unblocked for serial in self._pins)

    def _hold_bodies(self) -> None:
        with self._gate:
            self._apply_waiting += 1
            if self._blocking() and not self._gate.wait_for(
                lambda: not self._blocking(), PIN_MS_MAX / 1000
            ):
                self._overridden = max(self._pins)  # they had their window

    def _release_bodies(self) -> None:
        with self._gate:
            self._apply_waiting -= 1
            self._gate.notify_all()

    # ------------------------------------------------------------------ the virtual heap

    def start_partial(self, index: int, loader: Loader, cache_bytes: int) -> None:
        """This replica holds only what it faults in (docs/virtual-heap.md): it starts empty at
        `index` (the agent's empty LOADED), asks `loader` for what it touches, and keeps the
        estimated bytes of what it holds under `cache_bytes`."""
        with self.lock:
            assert not self.nodes and self.applied_index <= index
            self.partial = True
            self.loader = loader
            _stats.STATS.add_replica(self)
            self.cache_bytes = cache_bytes
            self.applied_index = index
            self._touched_reset(index)
            roots = make_node(self, ROOTS_OID, "dict", None, None)
            roots.live = roots.ref.__wrapped__ = PartialDict(roots, fixed=True)
            roots.state = PARTIAL
            self.nodes[ROOTS_OID] = roots

    def fault_whole(self, node: Node) -> None:
        """Makes a per-key node (`PARTIAL`) held whole: a read of its shape or content."""
        self._fault(node, None, whole=True)

    def _load_after_fork(
        self, oids: list[str], keys: list[tuple[str, list[Any]]], whole: bool
    ) -> None:
        """A forked child's first load: its session's new connection (made now, or waited
        for) rebinds the loader; the load goes through it."""
        session = self.session
        if session is None:
            raise Error("this process's superstatic connection is closed")
        _ = session.connection  # the child's connection; it sets self.loader
        if self.loader == self._load_after_fork:
            raise Error("the forked child's connection does not load objects")
        assert self.loader is not None
        self.loader(oids, keys, whole)

    def fault(self, node: Node) -> None:
        """Makes `node` held: returns at once if it is, else asks the loader for it and waits
        until `install` filled it (the same ref: identity is kept). Raises `Error` for a node
        that does not exist (any more), or when called from the connection's I/O thread, which
        is the thread that would have to read the answer."""
        self._fault(node, None, whole=False)

    def fault_key(self, node: Node, key: Any) -> None:
        """Makes `key` of the per-key node `node` known (loaded, or known absent); returns at
        once if the node is held whole (loaded whole meanwhile), after loading it if it was
        hollowed (the caller looks again: PartialDict.load)."""
        while True:
            state = node.state
            if state == HELD:
                return
            if state == PARTIAL:
                if not node.live.known(key):
                    if node.oid != ROOTS_OID and not _values.lookup_value(key)[0]:
                        # A key no app could store (a plain object, a NaN) has no wire form
                        # to ask the agent with, and may still equal a stored key (a custom
                        # __eq__): the whole dict answers, as a held one would (review 13lib:
                        # it failed an internal assertion).
                        self.fault_whole(node)
                    else:
                        self._fault(node, (key,), whole=False)
                return
            self.fault(node)

    def _fault(self, node: Node, key: tuple[Any] | None, whole: bool) -> None:
        """`key`: load that key of a per-key node; else the node: `whole`, held whole, else
        held at all (the agent answers a big dict with its header only: held per key)."""
        while True:
            with self.lock:
                state = node.state
                if key is not None:
                    if state != PARTIAL or node.live.known(key[0]):
                        return  # (not per key any more: the caller looks again)
                elif state == HELD or (state == PARTIAL and not whole):
                    return
                if node.dead or node.replica is not self:
                    raise Error(_gone(node, self.detached))
                if threading.get_ident() == self.io_thread:
                    raise Error(
                        f"object {node.oid} is not loaded in this process, and loading it from "
                        "the connection's own thread (a replica listener, a toolkit callback) "
                        "would block the stream it arrives on; read it from another thread"
                    )
                wait_key = node.oid if key is None else (node.oid, key[0])
                wait = self._loads.get(wait_key)
                send = wait is None
                self.stats.count("faults")
                if key is None and node.sweep_mark > 0 and state == HOLLOW:
                    # Faulted again soon after the clock let it go: a node read often but
                    # never visibly to the clock (eviction.REFAULT_SWEEPS); kept a while.
                    soon = self.sweeps - node.sweep_mark <= _eviction.REFAULT_SWEEPS
                    node.sweep_mark = -(self.sweeps + _eviction.STICKY_SWEEPS) if soon else 0
                    self.stats.count("refaults")
                if wait is None:
                    wait = self._loads[wait_key] = _LoadWait()
                    if key is None and state == HOLLOW:
                        node.state = LOADING
            if key is None:
                self._wait_load(node.oid, wait, send, [node.oid], [], whole)
            else:
                self._wait_load(wait_key, wait, send, [], [(node.oid, [key[0]])], False)

    def _wait_load(
        self,
        wait_key: Any,
        wait: _LoadWait,
        send: bool,
        oids: list[str],
        keys: list[tuple[str, list[Any]]],
        whole: bool,
    ) -> None:
        # A body that waits for a load must not hold back the entries that precede the answer
        # in the stream (they apply under it, recorded for it: Txn.stable judges them).
        running = _txn.current()
        serial = running.pin if running is not None and running.replica is self else 0
        with self.applying_under(serial):
            # A caller holding the lock (plain() copies under it) would keep the answer from
            # being installed: it is released while waiting, and what the caller reads after
            # the fault may then be of a later index than what it read before.
            owned = self.lock._is_owned()  # type: ignore[attr-defined]
            saved = self.lock._release_save() if owned else None  # type: ignore[attr-defined]
            try:
                if send:
                    self.stats.count("loads")
                    assert self.loader is not None, "a hollow node in a replica without a loader"
                    try:
                        self.loader(oids, keys, whole)
                    except BaseException as exc:
                        self.load_failed([wait_key], exc)
                        raise
                if not wait.done.wait(LOAD_WAIT_S_MAX):
                    oid = wait_key if type(wait_key) is str else wait_key[0]
                    self.load_failed(
                        [wait_key],
                        Unavailable(
                            f"object {oid} was not loaded within "
                            f"LOAD_WAIT_S_MAX={LOAD_WAIT_S_MAX:g} s",
                            outcome_known=True,
                        ),
                    )
            finally:
                if owned:
                    self.lock._acquire_restore(saved)  # type: ignore[attr-defined]
        if wait.error is not None:
            raise wait.error

    def load_failed(self, waits: Iterable[Any], error: BaseException) -> None:
        """The loads of `waits` (oids, or (oid, key) of per-key nodes) will not be answered (a
        timeout, a closed connection): their waiters raise `error`, and the nodes are hollow
        again (a later touch retries)."""
        with self.lock:
            for wait_key in waits:
                wait = self._loads.pop(wait_key, None)
                if wait is None:
                    continue
                node = self.nodes.get(wait_key) if type(wait_key) is str else None
                if node is not None and node.state == LOADING:
                    node.state = HOLLOW
                wait.error = error
                wait.done.set()

    def install(
        self,
        index: int,
        nodes: Iterable[tuple[str, int, str, Any]],
        heads: Iterable[Head] = (),
        absent: Iterable[str] = (),
        key_runs: Iterable[KeyRun] = (),
        per_key: Iterable[str] = (),
    ) -> None:
        """A load's answer at `index` (which must be the applied index: the agent places it in
        the stream right after the entries up to it): `nodes` as load_snapshot gets them,
        `heads` of the nodes they reference, `absent` requested oids that do not exist,
        `key_runs` the requested keys of per-key nodes, `per_key` the per-key nodes that exist
        (answered with their header only). Fills hollow and loading nodes in place; ignores
        nodes already held (a re-sent load)."""
        records = nodes if isinstance(nodes, list) else list(nodes)
        with self.lock:
            if index != self.applied_index:
                raise ProtocolError(
                    f"a load answered at index {index} arrived at applied index "
                    f"{self.applied_index}: the stream placed it wrongly"
                )
            # No touch is recorded: the body that faulted a node recorded its read before the
            # fault, and no other running body read a node that was not held.
            self.gen += 1
            headed = [self._known(*head) for head in heads]
            filling: list[tuple[Node, Any]] = []
            for oid, _version, kind, contents in records:
                class_name = contents[0] if kind == "obj" else None
                node = self._known(oid, kind, class_name)
                if node.state == HELD or node.dead:
                    continue
                filling.append((node, contents))
            for node, contents in filling:
                self._fill_hollow(node, contents)
            done: list[Any] = [oid for oid, _v, _k, _c in records]
            for oid in per_key:
                if oid == ROOTS_OID:
                    self._roots_exist = True
                else:
                    self._make_partial(oid)
                done.append(oid)
            for oid, items, absent_keys in key_runs:
                done.extend(self._install_keys(oid, items, absent_keys))
            for oid in absent:
                if oid == ROOTS_OID and self.partial:
                    # No root table: every key asked of it is absent (and the next question
                    # asks again: see _roots_exist).
                    self._roots_exist = False
                    roots = self.nodes[ROOTS_OID]
                    asked = [k for k in self._loads if type(k) is tuple and k[0] == oid]
                    for wait_key in asked:
                        roots.live.absent.add(wait_key[1])
                    done.extend(asked)
                else:
                    node = self.nodes.get(oid)
                    if node is not None and node.state != HELD:
                        self._drop(oid)
                done.append(oid)
            for wait_key in done:
                wait = self._loads.pop(wait_key, None)
                if wait is not None:
                    wait.done.set()
            # A head whose referrer was not filled (held already: a re-sent load) made a stub
            # nothing references: the clock may forget it (it counts in held_bytes).
            self._stub_candidates.extend(
                node for node in headed if node.state == HOLLOW and node.inrefs <= 0
            )
            try:
                if self.held_bytes > self.cache_bytes:
                    _eviction.sweep(self)
            finally:
                self._fresh_keys.clear()

    def _make_partial(self, oid: str) -> None:
        """A dict the agent answered with its header only: held per key from now on."""
        node = self.nodes.get(oid)
        if node is None or node.kind != "dict":
            raise ProtocolError(f"object {oid}: a per-key header for an object not asked")
        if node.state in (HELD, PARTIAL):
            return
        live = PartialDict(node)
        _hollow.make_held(node, live)
        node.state = PARTIAL
        if self.partial:
            # On the clock: its loaded keys count in held_bytes and go oldest first
            # (eviction._evict_keys).
            cost = _eviction.cost(node)
            self.held_bytes += cost - node.cost  # (its cost as a stub was counted)
            node.cost = cost
            self._clock[oid] = node

    def _forget_keys(self, node: Node) -> None:
        """A per-key node knows no key any more (the next lookup of each loads it)."""
        live: PartialDict = node.live
        _inrefs.add_contents("dict", live, -1)
        dict.clear(live)
        live.absent.clear()
        cost = _eviction.cost(node)
        self.held_bytes += cost - node.cost
        node.cost = cost

    def _install_keys(self, oid: str, items: list[Any], absent_keys: list[Any]) -> list[Any]:
        """Keys of a per-key node (a key run); returns their (oid, key) waits."""
        node = self.nodes.get(oid)
        if node is None or node.kind != "dict":
            raise ProtocolError(f"object {oid}: a key run for an object not held per key")
        if node.state != PARTIAL:
            # Loaded whole since the key was asked (another thread read its shape): the agent
            # holds it whole from that earlier answer on and answers the key with a run its
            # held set covers (agent/heap.py). The node (or, hollowed meanwhile, its next load)
            # answers the key: the run only settles its waits. Refused, the connection
            # resubscribed, was sent the same run, and the key's read raised Unavailable at
            # its timeout (review 20).
            keys = [*(pair[0] for pair in items), *absent_keys]
            return [(oid, self._resolve_key(wire_key, {})) for wire_key in keys]
        live: PartialDict = node.live
        if oid == ROOTS_OID:
            self._roots_exist = True
        done: list[Any] = []
        for wire_key, wire_value in items:
            key = self._resolve_key(wire_key, {})
            if not dict.__contains__(live, key):
                value = self._resolve(wire_value, {})
                live[key] = value
                _inrefs.add_value(value, 1)
            done.append((oid, key))
        for wire_key in absent_keys:
            key = self._resolve_key(wire_key, {})
            if not dict.__contains__(live, key):
                live.absent.add(key)
            done.append((oid, key))
        self._fresh_keys.update(done)
        if self.partial:
            cost = _eviction.cost(node)
            self.held_bytes += cost - node.cost
            node.cost = cost
        return done

    def load_held(
        self,
        index: int,
        nodes: Iterable[tuple[str, int, str, Any]],
        heads: Iterable[Head],
        absent: Iterable[str],
        key_runs: Iterable[KeyRun],
        per_key: Iterable[str],
        log_time_ms: int,
    ) -> None:
        """A partial subscription's first answer (LOADED `load` 0) at `index`: the stream goes
        on from there. Fresh, it holds nothing; after a resubscription that found the events
        since the replica's index gone, it holds every node the replica declared (HOLD), at
        `index` (a held snapshot, docs/virtual-heap.md 4.1): held nodes are refilled in place,
        absent ones die, and running bodies re-run (as after a snapshot)."""
        records = nodes if isinstance(nodes, list) else list(nodes)
        runs = key_runs if isinstance(key_runs, list) else list(key_runs)
        per_key = per_key if isinstance(per_key, list) else list(per_key)
        absent = absent if isinstance(absent, list) else list(absent)
        self._hold_bodies()
        try:
            with self.lock:
                assert self.partial and index >= self.applied_index
                self.gen += 1
                self.log_time_ms = max(self.log_time_ms, log_time_ms)
                for record in records:
                    node = self.nodes.get(record[0])
                    if node is not None and node.state == HELD:
                        self.hollow(node)  # refilled below, at `index`
                        self._drops.pop()  # the agent holds it: no DROP
                for oid in absent:
                    node = self.nodes.get(oid)
                    if node is not None and node.state == HELD and oid not in self._adopt:
                        # Collected in the gap: it dies, as on a full replica after a snapshot
                        # (install keeps a held node, for a load answered before its own
                        # creation applied; `_adopt` holds those still in flight). Kept, it
                        # stayed readable as if it existed (review 20).
                        self._drop(oid)
                for oid in {*per_key, *(run[0] for run in runs)}:
                    node = self.nodes.get(oid)
                    if node is not None and node.state == PARTIAL:
                        # Its keys read again below, at `index` (install keeps a key it
                        # knows): what it knew is of before the gap (review 13lib).
                        self._forget_keys(node)
                self.applied_index = index
                self._touched_reset(index)
                self.install(index, records, heads, absent, runs, per_key)
        finally:
            self._release_bodies()
        self._notify(Change(index, self.log_time_ms, None, 0))

    def advance(self, to: int, log_time_ms: int) -> None:
        """A filtered EVENTS frame reached `to`: the entries after its last event passed the
        agent's filter for no node held here (docs/virtual-heap.md 4.4)."""
        with self.lock:
            if to <= self.applied_index:
                return
            self.applied_index = to
            self.log_time_ms = max(self.log_time_ms, log_time_ms)
            if not self._pins and self._touched:
                self._touched_reset(to)
        if self.listeners:
            self._notify(Change(to, self.log_time_ms, frozenset(), 0))

    def held_set(self) -> tuple[list[str], list[tuple[str, list[Any]]]]:
        """What this replica holds, for a new subscription's HOLD frames: the oids held whole,
        and the keys (loaded or known absent) of per-key nodes, in live form."""
        with self.lock:
            oids = [oid for oid, node in self.nodes.items() if node.state == HELD]
            oids.extend(self._adopt)  # in flight: the entry creating them may be skipped
            keys = [
                (oid, [*dict.keys(node.live), *node.live.absent])
                for oid, node in self.nodes.items()
                if node.state == PARTIAL
            ]
            return oids, [(oid, ks) for oid, ks in keys if ks]

    def take_drops(self) -> list[str]:
        """The oids hollowed since the last call (the connection tells the agent: DROP)."""
        with self.lock:
            drops, self._drops = self._drops, []
            return drops

    def take_key_drops(self) -> list[tuple[str, list[Any]]]:
        """The keys of per-key nodes the clock let go since the last call, in live form (the
        connection tells the agent: a DROP of those keys)."""
        with self.lock:
            drops, self._key_drops = self._key_drops, {}
            return list(drops.items())

    def _known(self, oid: str, kind: str, class_name: str | None) -> Node:
        """The node of `oid`, made hollow from its head if this replica has none. Call under
        `lock`."""
        node = self.nodes.get(oid)
        if node is not None:
            if node.kind != kind or node.class_name != class_name:
                raise ProtocolError(f"object {oid}: its head changed kind or class")
            return node
        if kind not in ("dict", "list", "set", "obj") or (kind == "obj") != (
            class_name is not None
        ):
            raise ProtocolError(f"object {oid}: a head names an unknown kind")
        node = make_node(self, oid, kind, class_name, None)
        node.state = HOLLOW
        _hollow.make_hollow(node)
        self.nodes[oid] = node
        if self.partial:
            # A stub costs its record (eviction.STUB_BYTES): counted, so stubs cannot pile up
            # past cache_bytes unseen.
            node.cost = _eviction.STUB_BYTES[kind]
            self.held_bytes += node.cost
        self.stats.stubs_made += 1
        return node

    def _fill_hollow(self, node: Node, contents: Any) -> None:
        retired: PartialDict | None = None
        if node.state == PARTIAL:
            retired = node.live
            _inrefs.add_contents("dict", node.live, -1)  # its keys held so far go with it
            self.held_bytes -= node.cost
            node.cost = 0
        if node.kind == "obj":
            live = node.live  # the instance's attribute store, empty while hollow
            live.clear()
        else:
            live = {} if node.kind == "dict" else [] if node.kind == "list" else set()
        self._fill_into(live, node.kind, contents, {})
        _inrefs.add_contents(node.kind, live, 1)
        _hollow.make_held(node, live)
        node.state = HELD
        if retired is not None:
            retired.retire()  # after the switch: a lookup through it now reads `live`
        self._hold(node)

    def _hold(self, node: Node) -> None:
        """`node` is held from now on: on the clock, its size counted. Call under `lock`."""
        if not self.partial:
            return
        cost = _eviction.cost(node)
        self.held_bytes += cost - node.cost  # (a stub's cost, or 0 for a node made here)
        node.cost = cost
        node.bit = True
        self._clock[node.oid] = node

    def hollow(self, node: Node) -> None:
        """Turns a held node hollow (the clock chose it; call under `lock`): its contents go,
        its ref faults them in again when touched, and the agent is told (take_drops)."""
        _inrefs.add_contents(node.kind, node.live, -1)
        if node.kind == "obj":
            # Class first: a native read after the switch faults; one before it read the old,
            # consistent value.
            _hollow.make_hollow(node)
            node.live.clear()
        else:
            # A fresh stand-in, not the old container cleared: a thread that got the old
            # container just before keeps reading a consistent, old state.
            _hollow.make_hollow(node)
        node.state = HOLLOW
        stub = _eviction.STUB_BYTES[node.kind]  # what it costs now (the sweep may forget it)
        self.held_bytes += stub - node.cost
        node.cost = stub
        self._clock.pop(node.oid, None)
        self._drops.append(node.oid)
        node.sweep_mark = self.sweeps
        self.stats.count("evictions")

    def heap_gauges(self) -> dict[str, int]:
        """superstatic.stats()["heap"]'s gauges for this replica (objects/stats.py); a closed
        session's replica (detached, not yet collected) holds nothing."""
        held = stubs = 0
        if self.detached is not None:
            return {"held_nodes": 0, "held_bytes": 0, "stubs": 0}
        for node in list(self.nodes.values()):  # (one C-level copy: no lock needed)
            state = node.state
            if state in (HELD, PARTIAL):
                held += 1
            elif state in (HOLLOW, LOADING):
                stubs += 1
        return {"held_nodes": held, "held_bytes": self.held_bytes, "stubs": stubs}

    # ------------------------------------------------------------------ library side

    def roots_node(self) -> Node | None:
        roots = self.nodes.get(ROOTS_OID)
        if self.partial and not self._roots_exist:
            self._probe_roots()
            return roots if self._roots_exist else None
        return roots

    def root_ref(self, name: str) -> Any:
        roots = self.nodes.get(ROOTS_OID)
        return None if roots is None else roots.live.get(name)

    def _probe_roots(self) -> None:
        """Asks whether the cluster has a root table (a load of its header only)."""
        with self.lock:
            wait = self._loads.get(ROOTS_OID)
            send = wait is None
            if wait is None:
                wait = self._loads[ROOTS_OID] = _LoadWait()
        self._wait_load(ROOTS_OID, wait, send, [ROOTS_OID], [], False)

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
            if roots is None or node.dead or roots.state not in (HELD, PARTIAL):
                return f"object {node.oid}"
            paths: dict[str, str] = {}
            queue: deque[Node] = deque()
            # (dict.items: what is held of a per-key root table, loading nothing)
            for name, ref in list(dict.items(roots.live)):
                target = node_of(ref)
                if target is not None and target.oid not in paths:
                    paths[target.oid] = f"root {name!r}"
                    queue.append(target)
            while queue and len(paths) < DESCRIBE_NODES_MAX:
                current = queue.popleft()
                if current is node:
                    return paths[current.oid]
                if current.state != HELD:
                    continue  # not here: walking it would load it
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

    def _fill(self, node: Node, kind: str, contents: Any, created: _NodeLookup) -> None:
        self._fill_into(node.live, kind, contents, created)
        if self.partial:
            _inrefs.add_contents(kind, node.live, 1)

    def _fill_into(self, live: Any, kind: str, contents: Any, created: _NodeLookup) -> None:
        if kind == "dict":
            for key, value in contents:
                live[self._resolve_key(key, created)] = self._resolve(value, created)
        elif kind == "list":
            live.extend(self._resolve(v, created) for v in contents)
        elif kind == "set":
            live.update(self._resolve_key(v, created) for v in contents)
        else:
            for name, value in contents[1]:
                live[_intern(name)] = self._resolve(value, created)

    def _resolve_key(self, key: Any, created: _NodeLookup) -> Any:
        """A dict key or set member: str keys are interned, so a lookup by a literal in code
        (`d["name"]`, itself interned) matches by identity instead of comparing characters
        (about 2x faster), and the same key in many nodes (1M dicts with "name") is one str."""
        if type(key) is str:
            return _intern(key)
        return self._resolve(key, created, True)

    def _resolve(self, value: Any, created: _NodeLookup, key: bool = False) -> Any:
        """`key`: a dict key or set member (or part of one), which must stay unequal to every
        key the agent holds apart (values.live_key_of_wire)."""
        tp = type(value)
        if tp in _AS_IS:
            return value
        if tp in _codec.SCALAR_TYPES:
            return _values.live_key_of_wire(value) if key else _values.live_of_wire(value)
        if tp is _codec.Ref:
            node = created.get(value.oid) or self.nodes.get(value.oid)
            if node is None:
                head = self._entry_heads.get(value.oid)
                if head is None:
                    raise ProtocolError(
                        f"the log references object {value.oid}, unknown to this replica"
                    )
                node = self._known(*head)
            return node.ref
        if tp is tuple:
            return tuple(self._resolve(x, created, key) for x in value)
        if tp is frozenset:
            return frozenset(self._resolve(x, created, key) for x in value)
        return value

    def _resolve_list(self, values: Sequence[Any], created: dict[str, Node]) -> list[Any]:
        return [self._resolve(v, created) for v in values]

    def _apply_ops(
        self,
        index: int,
        wire_ops: Sequence[Sequence[Any]],
        touched_oids: set[str] | None = None,
        record: dict[str, _Touch] | None = None,
    ) -> None:
        """Applies one entry's ops. `record`: filled with what they touched (for the bodies
        running: Txn.stable), when given."""
        created: dict[str, Node] = {}
        partial = self.partial
        for op in wire_ops:
            if op[0] == "new":
                _tag, oid, kind, contents = op
                class_name = contents[0] if kind == "obj" else None
                if partial and oid == ROOTS_OID:
                    continue  # the per-key placeholder takes it (_new_roots)
                if partial and oid not in self._adopt:
                    # Another app's new node: not held here (docs/virtual-heap.md 4.2); its
                    # op carries its head, for a held node that now references it.
                    self._entry_heads[oid] = (oid, kind, class_name)
                    continue
                created[oid] = self._claim(oid, kind, class_name, fresh_from=self.nodes)
        for oid, node in created.items():
            self.nodes[oid] = node
        for op in wire_ops:
            tag = op[0]
            if tag == "new":
                node = created.get(op[1])  # type: ignore[assignment]
                if node is None:
                    if partial and op[1] == ROOTS_OID:
                        self._new_roots(op[3], created, record, touched_oids)
                    continue
                self._fill(node, op[2], op[3], created)
                self._hold(node)
                if record is not None:
                    record[node.oid] = _Touch(True, None)  # (a body read it as absent)
                if touched_oids is not None:
                    touched_oids.add(node.oid)
                continue
            if tag == "set" and not partial and record is None:
                # Nearly every op: an item or attribute set to a scalar on a full replica, with
                # no body running. What the general path below does for it, without building
                # the live op; a kind it does not fit goes there and is refused there.
                key, value = op[2], op[3]
                node = self.nodes[op[1]]
                kind = node.kind
                if (
                    type(key) is str
                    and type(value) in _AS_IS
                    and (kind == "dict" or (kind == "obj" and not _ops.attr_name_refused(key)))
                ):
                    node.live[_intern(key)] = value
                    if touched_oids is not None:
                        touched_oids.add(node.oid)
                    continue
            if partial:
                node = self.nodes.get(op[1])  # type: ignore[assignment]
                if node is None or node.state != HELD:
                    # Not held: the filter sent the entry for another node it writes
                    # (4.4). No running body read this node, so nothing is recorded. A
                    # per-key node takes the ops on the keys it holds.
                    if node is None or node.state != PARTIAL:
                        continue
                    if tag != "clear" and not node.live.known(self._resolve_key(op[2], {})):
                        continue
            else:
                node = self.nodes[op[1]]
            if tag == "set":
                live_op: list[Any] = [
                    tag,
                    op[1],
                    self._resolve_key(op[2], created),
                    self._resolve(op[3], created),
                ]
            elif tag == "del":
                live_op = [tag, op[1], self._resolve_key(op[2], created)]
            elif tag in ("add", "discard"):
                live_op = [tag, op[1], [self._resolve_key(v, created) for v in op[2]]]
            elif tag == "splice":
                live_op = [tag, op[1], op[2], op[3], self._resolve_list(op[4], created)]
            elif tag in ("extend", "add", "discard"):
                live_op = [tag, op[1], self._resolve_list(op[2], created)]
            else:
                live_op = list(op)
            if record is not None:
                _note_touch(record, node, live_op)
            if partial:
                self._apply_counted(node, live_op)
            else:
                _ops.apply_op(node.kind, node.live, live_op)
            if touched_oids is not None:
                touched_oids.add(node.oid)

    def _new_roots(
        self,
        contents: list[Any],
        created: dict[str, Node],
        record: dict[str, _Touch] | None,
        touched_oids: set[str] | None,
    ) -> None:
        """The root table was created (by this app or another): the keys held here (known
        absent until now) take their values. Call under `lock`."""
        roots = self.nodes[ROOTS_OID]
        own = self._adopt.pop(ROOTS_OID, None)
        if own is not None:
            own.txn = None  # the private table of the creating body: the placeholder is it
        self._roots_exist = True
        live: PartialDict = roots.live
        for wire_key, wire_value in contents:
            key = self._resolve_key(wire_key, created)
            # Its creator holds the keys it wrote (docs/virtual-heap.md 3.4); another app
            # the keys it asked for.
            if own is not None or key in live.absent:
                value = self._resolve(wire_value, created)
                live[key] = value
                _inrefs.add_value(value, 1)
        if record is not None:
            record[ROOTS_OID] = _Touch(True, None)
        if touched_oids is not None:
            touched_oids.add(ROOTS_OID)

    def _apply_counted(self, node: Node, live_op: list[Any]) -> None:
        """apply_op on a partial replica: `inrefs` of the refs the op moves and the node's
        estimated size follow it."""
        live = node.live
        present = live_op[0] == "set" and (
            dict.__contains__(live, live_op[2]) if node.kind == "dict" else live_op[2] in live
        )
        _inrefs.op_removed(node.kind, live, live_op)
        _inrefs.op_added(node.kind, live, live_op, present)
        _ops.apply_op(node.kind, live, live_op)
        cost = _eviction.cost(node)
        self.held_bytes += cost - node.cost
        node.cost = cost

    def _drop(self, oid: str) -> None:
        node = self.nodes.pop(oid, None)
        if node is not None:
            node.dead = True
            self._clock.pop(oid, None)
            if self.partial:
                if node.state in (HELD, PARTIAL):
                    # Its contents no longer hold their refs for the replica: stubs only it
                    # referenced may go (kept, they would count in held_bytes for good).
                    _inrefs.add_contents(node.kind, node.live, -1)
                self.held_bytes -= node.cost  # held or a stub
                node.cost = 0
            wait = self._loads.pop(oid, None)
            if wait is not None:
                wait.done.set()  # the waiter finds the node dead
            if self._loads:
                # Keys of it being loaded (a per-key dict): their waiters find it dead too. No
                # answer would settle them: the agent answers a gone node absent by its oid.
                for wait_key in [k for k in self._loads if type(k) is tuple and k[0] == oid]:
                    self._loads.pop(wait_key).done.set()
        adopted = self._adopt.pop(oid, None)
        if adopted is not None:
            adopted.dead = True
            adopted.txn = None


class _NodeLookup(Protocol):
    """What `_resolve` finds the nodes of refs in: the nodes an entry creates (a dict), or a
    snapshot's (`snapshot_load`)."""

    def get(self, oid: str, /) -> Node | None: ...


class _LoadWait:
    """What the threads that fault one node wait on (Replica.fault)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


@dataclass
class HeapStats:
    """This replica's counts of the virtual heap; the process's sums are in
    superstatic.stats()["heap"] (objects/stats.py, which says what each counts)."""

    faults: int = 0
    loads: int = 0
    evictions: int = 0
    refaults: int = 0
    stubs_made: int = 0
    stubs_removed: int = 0

    def count(self, counter: str, count: int = 1) -> None:
        setattr(self, counter, getattr(self, counter) + count)
        _stats.STATS.heap_count(counter, count)


def _heads_of(event: Event) -> dict[str, Head]:
    heads = event[7] if len(event) > 7 else ()
    return {head[0]: (head[0], head[1], head[2]) for head in heads}


def _gone(node: Node, detached: str | None) -> str:
    if detached is not None:
        return f"object {node.oid}: {detached}"
    return (
        f"object {node.oid} no longer exists in the cluster (it was unreachable from every "
        "root and was collected, or its transaction did not commit); get it again from its root"
    )


class _Touch:
    """What one entry did to one node, for the bodies running (Replica.reads_unchanged):
    changed its membership or length (`shape`), and which keys it wrote (`keys`; None: the
    node as a whole, as `clear`, a list op, a new or collected node do). A node in an entry's
    record at all had its contents changed."""

    __slots__ = ("keys", "shape")

    def __init__(self, shape: bool, keys: set[Any] | None) -> None:
        self.shape = shape
        self.keys = keys


def _items(touched: dict[str, _Touch]) -> int:
    """How much of TOUCHED_ITEMS_MAX one entry's record takes."""
    return 1 + sum(1 + (len(t.keys) if t.keys else 0) for t in touched.values())


def _note_touch(record: dict[str, _Touch], node: Node, op: list[Any]) -> None:
    """Adds what `op` (live values, not yet applied) will change in `node` to `record`. Ops
    that change nothing (a del of a missing key, an add of a present member, a clear of an
    empty node) touch nothing: no body can tell they ran."""
    tag = op[0]
    live = node.live
    if tag in ("set", "del"):
        key = op[2]
        # (dict.__contains__: a per-key dict's own `in` would load the key)
        present = dict.__contains__(live, key) if node.kind == "dict" else key in live
        if tag == "del" and not present:
            return
        _touch_keys(record, node.oid, (key,), tag == "del" or not present)
    elif tag in ("add", "discard"):
        adding = tag == "add"
        changed = [v for v in op[2] if (v in live) != adding]
        if changed:
            _touch_keys(record, node.oid, changed, True)
    elif tag == "clear":
        if live:
            record[node.oid] = _Touch(True, None)
    else:  # splice, extend: lists are read as a whole (or their length)
        shape = bool(op[2]) if tag == "extend" else op[3] - op[2] != len(op[4])
        found = record.get(node.oid)
        if found is None:
            record[node.oid] = _Touch(shape, None)
        else:
            found.shape = found.shape or shape
            found.keys = None


def _touch_keys(record: dict[str, _Touch], oid: str, keys: Iterable[Any], shape: bool) -> None:
    found = record.get(oid)
    if found is None:
        found = record[oid] = _Touch(shape, set())
    elif shape:
        found.shape = True
    if found.keys is None:
        return
    found.keys.update(keys)
    if len(found.keys) > TOUCHED_NODE_KEYS_MAX:
        found.keys = None  # the node as a whole: bounded, and covers every key


def _detach_ref(ref: Any, reason: str) -> None:
    # By type(), never isinstance(): isinstance reads `__class__` when the type does not match,
    # and a hollow instance's every attribute read faults its node in (close() at exit raised
    # from a partial replica holding one).
    if issubclass(type(ref), NodeProxy):
        detached = _Detached(reason)
        ref.__wrapped__ = detached
        for name in type(ref)._READ_METHODS:  # replaces bound methods of the old container
            ref.__self_setattr__(name, detached._refuse)
    elif ref is not None:
        object.__setattr__(ref, "__class__", _detached_class(type(ref), reason))


_DETACHED_CLASSES: dict[type, type] = {}


def _detached_class(cls: type, reason: str) -> type:
    """A subclass of a shared class whose instances refuse every use (layout-compatible, so an
    instance can be switched to it in place)."""
    found = _DETACHED_CLASSES.get(cls)
    if found is not None:
        return found

    def refuse_attr(self: Any, name: str) -> Any:
        if name[:2] == "__":
            return object.__getattribute__(self, name)
        raise Error(f"{cls.__qualname__} object: {reason}")

    def refuse_write(self: Any, name: str, *value: Any) -> None:
        raise Error(f"{cls.__qualname__} object: {reason}")

    def describe(self: Any) -> str:
        return f"<{cls.__qualname__} of a closed superstatic connection>"

    found = type(
        cls.__name__,
        (cls,),
        {
            "__slots__": (),
            "__getattribute__": refuse_attr,
            "__setattr__": refuse_write,
            "__delattr__": refuse_write,
            "__repr__": describe,
        },
    )
    _DETACHED_CLASSES[cls] = found
    return found


class _Detached:
    """What a container proxy of a closed connection wraps: every use raises, saying why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        object.__setattr__(self, "reason", reason)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise Error(f"shared container: {object.__getattribute__(self, 'reason')}")

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)  # wrapt and Python probing special names
        raise Error(f"shared container: {object.__getattribute__(self, 'reason')}")

    def __repr__(self) -> str:
        return "<shared container of a closed superstatic connection>"

    __getitem__ = __setitem__ = __delitem__ = __len__ = __iter__ = __contains__ = _refuse
    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _refuse
    __reversed__ = __or__ = __and__ = __sub__ = __xor__ = __add__ = __mul__ = _refuse


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
