"""The subscription stream: SNAPSHOT and EVENTS frames fed into a replica in log order.

Pure (no sockets, no threads): `superstatic.client.connection` owns the socket and calls this
from its I/O thread. The stream from an agent is gapless (NOOP and CONF entries arrive as "noop"
events), so the feeder can check contiguity itself instead of trusting which subscription a frame
came from: an event at or below the replica's applied index is a duplicate (skipped), one right
after it is applied, and anything further ahead means entries were lost (a dropped frame, a
stale stream after a resubscription) and the connection must resubscribe from its applied index.

A snapshot older than the replica is dropped rather than loaded: after a failover to an agent
that is behind, loading it would move the replica back in time, and a replica must only ever be
a growing prefix of the log. The events that follow such a snapshot are skipped until they pass
the replica's index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from superstatic.protocol.errors import Error, LimitExceeded, ProtocolError
from superstatic.protocol.wire import CLIENT_ID_CHARS_MAX

# One snapshot is assembled in memory before it replaces the replica (load_snapshot replaces
# everything at once, so a half-loaded snapshot is never visible). Bound what a peer can make
# this process hold.
SNAPSHOT_NODES_MAX = 20_000_000
# Outcomes the state machine produces (architecture section 2); anything else is garbage.
OUTCOMES = frozenset({"ok", "conflict", "error", "dup", "noop", "session_expired"})
# An object id is `{client_id[:16]}.{n:x}` or a fixed name like "@roots"; generous bound.
OID_CHARS_MAX = 256

# [index, client, seq, outcome, body, collected, log_time_ms]: log_time_ms is the entry's log
# time (leader-stamped, the same on every replica; docs/toolkit.md). An agent that predates it
# sends six fields: the feeder fills in 0 (replicas keep the max, so log time never goes back).
Event = tuple[int, "str | None", "int | None", str, "bytes | None", tuple[str, ...], int]


class ReplicaSink(Protocol):
    """What the stream feeds (implemented by superstatic.objects.replica.Replica)."""

    applied_index: int

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, bytes]]) -> None: ...

    # (A sink may also have `note_log_time(log_time_ms)`: called before load_snapshot with the
    # log time at the snapshot's index.)

    def apply_events(self, events: Sequence[Event]) -> None: ...


class StreamGap(Exception):
    """The stream skipped entries (or broke its own framing): resubscribe from applied_index."""


class ReplicaFailed(Error):
    """The replica could not apply what the agent sent. Its state may be half-changed, so the
    connection stops instead of resubscribing: a diverged replica must never serve reads."""


class StreamFeeder:
    """Assembles one subscription's frames and feeds the replica, in order, exactly once."""

    def __init__(self, sink: ReplicaSink) -> None:
        self.sink = sink
        self._parts: list[tuple[str, bytes]] = []
        self._next_part = 0
        self._snapshot_index: int | None = None
        # Frames fed so far: waiters read it as "the stream is still making progress" (a big
        # snapshot can take longer than any fixed wait while its parts keep arriving).
        self.frames = 0

    def begin(self) -> None:
        """A new subscription starts: a partly received snapshot is worthless now."""
        self._parts = []
        self._next_part = 0
        self._snapshot_index = None

    @property
    def in_snapshot(self) -> bool:
        return self._snapshot_index is not None

    def feed_snapshot(self, body: dict[str, Any]) -> bool:
        """One SNAPSHOT frame. Returns True when a whole snapshot was loaded into the replica."""
        self.frames += 1
        index = _int(body, "index", "SNAPSHOT")
        part = _int(body, "part", "SNAPSHOT")
        last = body.get("last")
        if not isinstance(last, bool):
            raise ProtocolError("SNAPSHOT.last must be a boolean")
        nodes = body.get("nodes")
        if not isinstance(nodes, list):
            raise ProtocolError("SNAPSHOT.nodes must be an array of [oid, record]")
        if part != self._next_part or (part > 0 and index != self._snapshot_index):
            raise StreamGap(
                f"snapshot part {part} at index {index} arrived, expected part "
                f"{self._next_part} at index {self._snapshot_index}"
            )
        if len(self._parts) + len(nodes) > SNAPSHOT_NODES_MAX:
            raise LimitExceeded(
                "SNAPSHOT_NODES_MAX",
                SNAPSHOT_NODES_MAX,
                len(self._parts) + len(nodes),
                "nodes in one snapshot",
            )
        for pair in nodes:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not 0 < len(pair[0]) <= OID_CHARS_MAX
                or not isinstance(pair[1], bytes)
            ):
                raise ProtocolError("SNAPSHOT.nodes entries must be [oid, record bytes]")
            self._parts.append((pair[0], pair[1]))
        self._snapshot_index = index
        self._next_part = part + 1
        if not last:
            return False
        parts, self._parts = self._parts, []
        self._snapshot_index = None
        self._next_part = 0
        if index < self.sink.applied_index:
            return False  # behind this replica (see the module doc): keep the newer state
        log_time_ms = body.get("log_time_ms", 0)
        if not isinstance(log_time_ms, int) or isinstance(log_time_ms, bool) or log_time_ms < 0:
            raise ProtocolError("SNAPSHOT.log_time_ms must be a non-negative integer")
        note_log_time = getattr(self.sink, "note_log_time", None)
        if note_log_time is not None:
            note_log_time(log_time_ms)
        try:
            self.sink.load_snapshot(index, parts)
        except Exception as exc:
            raise ReplicaFailed(f"loading the snapshot at index {index} failed: {exc}") from exc
        assert self.sink.applied_index == index, (self.sink.applied_index, index)
        return True

    def feed_events(self, body: dict[str, Any]) -> bool:
        """One EVENTS frame. Returns True if the replica advanced; raises StreamGap (after
        applying the contiguous prefix) if entries are missing."""
        self.frames += 1
        if self._snapshot_index is not None:
            raise StreamGap("EVENTS arrived in the middle of a snapshot")
        raw = body.get("ev")
        if not isinstance(raw, list):
            raise ProtocolError("EVENTS.ev must be an array of events")
        events = [_event(item) for item in raw]
        applied = self.sink.applied_index
        batch: list[Event] = []
        gap: str | None = None
        for event in events:
            index = event[0]
            if index <= applied:
                continue  # already in the replica (a snapshot or an earlier delivery)
            if index != applied + 1:
                gap = f"event {index} arrived after {applied}: entries are missing"
                break
            batch.append(event)
            applied = index
        if batch:
            try:
                self.sink.apply_events(batch)
            except Exception as exc:
                raise ReplicaFailed(
                    f"applying log entries {batch[0][0]}..{batch[-1][0]} failed: {exc}"
                ) from exc
            assert self.sink.applied_index == applied, (self.sink.applied_index, applied)
        if gap is not None:
            raise StreamGap(gap)
        return bool(batch)


def _int(body: dict[str, Any], key: str, frame: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{frame}.{key} must be a non-negative integer, got {value!r}")
    return value


def _event(item: Any) -> Event:
    if not isinstance(item, list) or len(item) not in (6, 7):
        raise ProtocolError(
            "an EVENTS entry must be [index, client, seq, outcome, body, collected, log_time_ms]"
        )
    index, client, seq, outcome, body, collected = item[:6]
    log_time_ms = item[6] if len(item) == 7 else 0
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise ProtocolError(f"event index must be a positive integer, got {index!r}")
    if client is not None and (not isinstance(client, str) or len(client) > CLIENT_ID_CHARS_MAX):
        raise ProtocolError(f"event {index}: client must be a short string or null")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ProtocolError(f"event {index}: seq must be an integer or null")
    if outcome not in OUTCOMES:
        raise ProtocolError(f"event {index}: unknown outcome {outcome!r}")
    if body is not None and not isinstance(body, bytes):
        raise ProtocolError(f"event {index}: body must be bytes or null")
    if not isinstance(collected, list) or not all(
        isinstance(oid, str) and 0 < len(oid) <= OID_CHARS_MAX for oid in collected
    ):
        raise ProtocolError(f"event {index}: collected must be an array of object ids")
    if not isinstance(log_time_ms, int) or isinstance(log_time_ms, bool) or log_time_ms < 0:
        raise ProtocolError(f"event {index}: log_time_ms must be a non-negative integer")
    return (index, client, seq, outcome, body, tuple(collected), log_time_ms)
