"""The connection's part of the virtual heap (docs/virtual-heap.md sections 3.4, 4.1, 5.3): the
LOADs a partial replica's faults ask for, the DROPs its clock's evictions owe the agent, and
the HOLD frames a new subscription declares its held set in.

Callers (the faulting threads) only queue what they want (`request`) and wake the I/O thread;
everything that touches the socket runs on the I/O thread, once per turn (`on_turn`): every
fault queued since the last turn goes out in one LOAD (batched up to LOAD_OIDS_MAX oids and
LOAD_KEYS_MAX keys), so a transaction that touches several hollow nodes, or several threads
faulting at once, cost one round trip. A load is asked again on every new subscription until
its answer arrives (the answer comes in the stream, `StreamFeeder.feed_loaded`), and fails
with `Unavailable` after the connection's `timeout_ms_request`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from superstatic.objects import values as _values
from superstatic.protocol import keynorm, wire
from superstatic.protocol.errors import Error, ProtocolError, Unavailable

if TYPE_CHECKING:
    from superstatic.client.connection import Connection, _IoState
    from superstatic.client.stream import Loaded
    from superstatic.objects.replica import Replica

# A LOAD refused "busy" (the agent's queue of loads for us is full) is asked again this much
# later.
LOAD_RETRY_MS = 50
# Prefetch (docs/virtual-heap.md 3.3): while the app walks, a LOAD asks the agent to send the
# small nodes its answer references too (breadth-first, up to this many encoded bytes), so
# root -> bucket -> object costs one round trip per object, not one per node. The app walks
# when this fault is at least the PREFETCH_WALK_FAULTS-th of a burst of faults each within
# PREFETCH_WALK_MS of the one before or of the last answer (a round trip, however slow, does
# not end a walk): a single lookup (`root("c")["n"]`: the root's key, then the root) never
# prefetches. A time rule, not the design's per-parent walk bit: a node does not know which
# of its referrers it was reached through. $SUPERSTATIC_PREFETCH_BYTES overrides the bytes
# (0: never).
PREFETCH_BYTES_DEFAULT = 64 << 10
PREFETCH_WALK_MS = 100
PREFETCH_WALK_FAULTS = 3
ENV_PREFETCH_BYTES = "SUPERSTATIC_PREFETCH_BYTES"


def prefetch_bytes_of_env() -> int:
    """$SUPERSTATIC_PREFETCH_BYTES, checked (unset: PREFETCH_BYTES_DEFAULT)."""
    raw = os.environ.get(ENV_PREFETCH_BYTES, "").strip()
    if not raw:
        return PREFETCH_BYTES_DEFAULT
    if not raw.isdigit() or int(raw) > wire.LOAD_PREFETCH_BYTES_MAX:
        raise Error(
            f"${ENV_PREFETCH_BYTES} must be a whole number of bytes in "
            f"0..LOAD_PREFETCH_BYTES_MAX = 0..{wire.LOAD_PREFETCH_BYTES_MAX}"
        )
    return int(raw)


class HeapIo:
    """The I/O thread's loads and drops of one partial replica."""

    def __init__(
        self, conn: Connection, replica: Replica, too_large: Callable[[str], Exception]
    ) -> None:
        self.conn = conn
        self.replica = replica
        self.too_large = too_large  # the connection's AgentRefusedTooLarge
        self._lock = threading.Lock()  # callers queue, the I/O thread takes
        # Oids to load -> whether whole (a per-key dict's shape or content is read).
        self._queued_oids: dict[str, bool] = {}
        self._whole: set[str] = set()  # of `asked`: those asked whole
        self._queued_keys: dict[tuple[str, Any], None] = {}
        # Asked and not answered: wait key (oid, or (oid, key)) -> the monotonic deadline.
        self.asked: dict[Any, float] = {}
        # LOAD frames in flight: req id -> the wait keys it asked (for an ERROR answer).
        self.load_reqs: dict[int, list[Any]] = {}
        self.retry_at = 0.0
        # Prefetch: the bytes a walking app's LOADs ask for, the current burst of faults (its
        # length and last fault's monotonic time), and whether a fault queued since the last
        # turn was walking.
        self.prefetch_bytes = prefetch_bytes_of_env()
        self._burst = 0
        self._burst_at = -1e9
        self._walking = False
        # The HOLD parts of the subscription being started (on_subscribe, send_holds).
        self._holds: list[tuple[list[str], list[tuple[str, list[Any]]]]] = []

    # -- caller side ---------------------------------------------------------------------

    def request(self, oids: list[str], keys: list[tuple[str, list[Any]]], whole: bool) -> None:
        """Replica.loader: queues the loads, wakes the I/O thread; never blocks on I/O."""
        with self._lock:
            now = time.monotonic()
            deadline = now + self.conn.timeout_ms_request / 1000
            self._burst = self._burst + 1 if now - self._burst_at < PREFETCH_WALK_MS / 1000 else 1
            self._burst_at = now
            if self._burst >= PREFETCH_WALK_FAULTS:
                self._walking = True
            for oid in oids:
                self._queued_oids[oid] = whole or self._queued_oids.get(oid, False)
                self.asked.setdefault(oid, deadline)
                if whole:
                    self._whole.add(oid)
            for oid, ks in keys:
                for key in ks:
                    self._queued_keys[(oid, key)] = None
                    self.asked.setdefault((oid, key), deadline)
        self.conn._wake()

    # -- I/O thread ----------------------------------------------------------------------

    def on_subscribe(self, io: _IoState) -> int:
        """A new subscription: every load asked and unanswered is asked again on it (next
        turn); returns how many HOLD frames follow the SUBSCRIBE (`send_holds`)."""
        # LOADs may follow the SUBSCRIBE and HOLD frames at once: the agent answers them after
        # the subscription's first answer (if it sends one), in stream order.
        self.load_reqs.clear()
        with self._lock:
            for wait_key in self.asked:
                if type(wait_key) is str:
                    self._queued_oids[wait_key] = wait_key in self._whole
                else:
                    self._queued_keys[wait_key] = None
        oids, keys = self.replica.held_set()
        self._holds = _parts(oids, keys, wire.HOLD_OIDS_MAX, wire.HOLD_KEYS_MAX)
        self.replica.take_drops()  # the new held set is declared whole: nothing to drop
        self.replica.take_key_drops()
        return len(self._holds)

    def send_holds(self, io: _IoState) -> None:
        for part, (oids, keys) in enumerate(self._holds):
            last = part == len(self._holds) - 1
            io.send(wire.FrameType.HOLD, wire.hold_body(io.sub_req, part, last, oids, keys))
        self._holds = []

    def on_loaded(self, loaded: Loaded) -> None:
        answered: list[Any] = [node[0] for node in loaded.nodes]
        answered.extend(loaded.absent)
        answered.extend(loaded.per_key)
        with self._lock:
            self._burst_at = time.monotonic()  # the app's next fault is judged from here
            # The agent echoes a key in its wire form (an enum member as its codec form, a
            # shared instance as a Ref), the waits are by live key: matched by normal form.
            run_oids = {run[0] for run in loaded.key_runs}
            live_keys: dict[tuple[str, bytes | None], Any] = {}
            for wait_key in self.asked:
                if type(wait_key) is tuple and wait_key[0] in run_oids:
                    live_keys[(wait_key[0], _ekey(_values.wire(wait_key[1])))] = wait_key
            for oid, items, absent_keys in loaded.key_runs:
                for key in [*absent_keys, *(pair[0] for pair in items)]:
                    norm = _ekey(key)
                    wait_key = None if norm is None else live_keys.get((oid, norm))
                    if wait_key is not None:
                        answered.append(wait_key)
            for wait_key in answered:
                self.asked.pop(wait_key, None)
            for node in loaded.nodes:
                self._whole.discard(node[0])
            if loaded.absent:
                # Keys asked of a node answered absent are answered with it: the root table's
                # are absent, another dict's waiters find it gone (Replica._drop). Left asked,
                # they were asked again on every new subscription until they timed out.
                gone = set(loaded.absent)
                for wait_key in [k for k in self.asked if type(k) is tuple and k[0] in gone]:
                    del self.asked[wait_key]

    def stop(self, error: BaseException) -> None:
        """The connection stopped: every fault waiting for a load raises `error`."""
        with self._lock:
            waits = list(self.asked)
            self.asked.clear()
            self._whole.clear()
            self._queued_oids.clear()
            self._queued_keys.clear()
        self.replica.load_failed(waits, error)

    def expire(self, now: float) -> None:
        with self._lock:
            expired = [k for k, deadline in self.asked.items() if now >= deadline]
        if expired:
            with self._lock:
                for wait_key in expired:
                    self.asked.pop(wait_key, None)
                    self._whole.discard(wait_key)
                    self._queued_oids.pop(wait_key, None)  # type: ignore[call-overload]
                    self._queued_keys.pop(wait_key, None)
            self.replica.load_failed(
                expired,
                Unavailable(
                    f"{len(expired)} object(s) could not be loaded from agent "
                    f"{self.conn.endpoint} within {self.conn.timeout_ms_request} ms",
                    outcome_known=True,
                ),
            )

    def on_turn(self, io: _IoState, now: float) -> None:
        if not io.sub_req or now < self.retry_at:
            return
        drops = self.replica.take_drops()
        key_drops = [
            (oid, [_values.wire(k) for k in ks]) for oid, ks in self.replica.take_key_drops()
        ]
        for oids, keys in _parts(drops, key_drops, wire.LOAD_OIDS_MAX, wire.LOAD_KEYS_MAX):
            # (Not re-sent if the socket refuses it: the agent then holds more than the app,
            # which costs events the app skips, never a wrong read; a new subscription
            # declares the held set anew.)
            io.send(wire.FrameType.DROP, wire.drop_body(io.sub_req, oids, keys))
        with self._lock:
            queued = dict(self._queued_oids)
            pairs = list(self._queued_keys)
            self._queued_oids.clear()
            self._queued_keys.clear()
            prefetch = self.prefetch_bytes if self._walking else 0
            self._walking = False
        if not queued and not pairs:
            return
        # A first load asks without `whole`: the agent answers a big dict (and the root table)
        # with its header only, held per key; a read of such a dict's shape asks it whole.
        first = [oid for oid, whole in queued.items() if not whole]
        whole = [oid for oid, whole in queued.items() if whole]
        by_node: dict[str, list[Any]] = {}
        for oid, key in pairs:
            by_node.setdefault(oid, []).append(key)
        keys = list(by_node.items())
        for chunk_oids, chunk_keys in _parts(first, keys, wire.LOAD_OIDS_MAX, wire.LOAD_KEYS_MAX):
            self._send_load(io, chunk_oids, chunk_keys, False, prefetch)
        for chunk_oids, _none in _parts(whole, [], wire.LOAD_OIDS_MAX, wire.LOAD_KEYS_MAX):
            self._send_load(io, chunk_oids, [], True, prefetch)

    def _send_load(
        self,
        io: _IoState,
        oids: list[str],
        keys: list[tuple[str, list[Any]]],
        whole: bool,
        prefetch: int,
    ) -> None:
        """`keys` in live form: the waits are tracked by live key (as `asked` and the replica's
        loads are); only the frame carries the wire form. A LOAD asked again (`_requeue`, a
        new subscription) asks no prefetch unless the app still walks."""
        wire_keys = [(oid, [_values.wire(k) for k in ks]) for oid, ks in keys]
        body = wire.load_body(io.sub_req, oids, wire_keys, prefetch, whole)
        req_id = io.send(wire.FrameType.LOAD, body)
        waits: list[Any] = [*oids, *((oid, k) for oid, ks in keys for k in ks)]
        if req_id is None:
            self._requeue(waits)  # the socket is not ready: next turn
            return
        self.load_reqs[req_id] = waits

    def _requeue(self, waits: list[Any]) -> None:
        with self._lock:
            for wait_key in waits:
                if wait_key not in self.asked:
                    continue
                if type(wait_key) is str:
                    self._queued_oids[wait_key] = wait_key in self._whole
                else:
                    self._queued_keys[wait_key] = None

    def on_error(self, io: _IoState, req_id: int, body: dict[str, Any]) -> None:
        """An ERROR answering a LOAD (never one answering a DROP: those are not tracked)."""
        waits = self.load_reqs.pop(req_id, [])
        code = body.get("code")
        if code == wire.ErrorCode.TOO_LARGE:
            # The agent's held-set bound (--subscriber-held-max, --held-entries-max): its
            # message names the flag.
            with self._lock:
                for wait_key in waits:
                    self.asked.pop(wait_key, None)
            message = body.get("message")
            self.replica.load_failed(
                waits,
                self.too_large(message if type(message) is str else "no detail"),
            )
            return
        if code == wire.ErrorCode.BUSY:
            self.retry_at = time.monotonic() + LOAD_RETRY_MS / 1000
            self._requeue(waits)
            return
        # bad_request ("no such subscription": an answer to a LOAD of the previous one) or
        # anything else: resubscribe; the loads are asked again on the new subscription.
        self._requeue(waits)
        io.resubscribe(f"LOAD refused: {code}: {body.get('message')}")


def _ekey(key: Any) -> bytes | None:
    """A wire key's normal form (None for one that has none: it matches no wait)."""
    try:
        return keynorm.ekey(key)
    except ProtocolError:
        return None


def _parts(
    oids: list[str], keys: list[tuple[str, list[Any]]], oids_max: int, keys_max: int
) -> list[tuple[list[str], list[tuple[str, list[Any]]]]]:
    """Cuts oids and per-node keys into frames of at most `oids_max` oids and `keys_max`
    keys."""
    out: list[tuple[list[str], list[tuple[str, list[Any]]]]] = []
    for start in range(0, len(oids), oids_max):
        out.append((oids[start : start + oids_max], []))
    current: list[tuple[str, list[Any]]] = []
    count = 0
    for oid, ks in keys:
        for start in range(0, len(ks), keys_max):
            chunk = ks[start : start + keys_max]
            if count + len(chunk) > keys_max:
                out.append(([], current))
                current, count = [], 0
            current.append((oid, chunk))
            count += len(chunk)
    if current:
        out.append(([], current))
    return out
