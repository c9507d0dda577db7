"""Subscriber streams: each app's SUBSCRIBE fed with SNAPSHOT frames (if it needs the object
table) then EVENTS frames of applied entries, paced by the client socket.

The Server owns one `Streams`, tells it what applied (`record_events`, `snapshot_installed`) and
lets it pump once per turn; the streams never touch the Raft core. See docs/agent.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2
from superstatic_agent import peer_codec
from superstatic_agent.config import AgentConfig
from superstatic_agent.statemachine import Applied
from superstatic_agent.storage import Corrupt, Event, Storage, Trimmed
from superstatic_agent.transport import ClientTransport

from superstatic.protocol import wire
from superstatic.protocol.errors import LimitExceeded

log = logging.getLogger("superstatic.agent")

# Applied events kept in memory so live subscribers are fed without reading LMDB.
EVENTS_CACHE_ENTRIES_MAX = 20_000
# Object-table snapshots streamed at once: each pins one LMDB read transaction (reader slot).
SNAPSHOT_STREAMS_MAX = 16

# Answers an app with an ERROR frame (the Server's, which names the leader it knows).
SendError = Callable[[bytes, int, wire.ErrorCode, str], None]


@dataclass(slots=True)
class Subscriber:
    """One app's SUBSCRIBE stream (one per app connection)."""

    identity: bytes
    req_id: int
    next_index: int  # the next event this app needs
    last_seen: float
    snapshot_index: int = 0  # >0: a snapshot at this index is being streamed
    snapshot_part: int = 0
    snapshot_nodes: Iterator[tuple[str, bytes]] | None = None
    snapshot_peek: tuple[str, bytes] | None = None
    needs_snapshot: bool = False
    streamed: bool = False  # sent at least one frame (a later gap is "lagging", not a restart)
    pending_frame: bytes | None = None  # built but not yet accepted by the socket
    pending_next: int = 0  # next_index once pending_frame is sent


class Streams:
    """Every subscriber of this agent, the recent applied events that feed them, and the
    EVENTS bodies built this turn (shared by subscribers at the same position)."""

    def __init__(
        self,
        config: AgentConfig,
        storage: Storage,
        clients: ClientTransport,
        error: SendError,
        applied: int,
        on_damage: Callable[[Corrupt], None],
    ) -> None:
        self.config = config
        self._on_damage = on_damage  # the Server halts: a damaged store is never served
        self.storage = storage
        self.clients = clients
        self._error = error
        self._subscribers: dict[bytes, Subscriber] = {}
        self._snapshot_streams = 0
        # Recent events: _recent[i] is the event at index _recent_first + i (contiguous).
        self._recent: list[Event] = []
        self._recent_first = applied + 1
        self._body_cache: dict[tuple[int, int], bytes] = {}

    def count(self) -> int:
        return len(self._subscribers)

    # -- requests ------------------------------------------------------------------------------

    def on_subscribe(self, identity: bytes, frame: wire.Frame, now: float) -> None:
        start = wire.field_int(frame, "from", minimum=0, maximum=peer_codec.INDEX_MAX)
        old = self._subscribers.get(identity)
        if old is not None:
            self.drop(old)  # one stream per app connection: the new one wins
        if len(self._subscribers) >= self.config.subscribers_max:
            self._error(
                identity,
                frame.req_id,
                wire.ErrorCode.BUSY,
                f"subscribers_max={self.config.subscribers_max} reached; try another agent",
            )
            return
        sub = Subscriber(identity, frame.req_id, start + 1, now)
        sub.needs_snapshot = start == 0
        self._subscribers[identity] = sub

    def unsubscribe(self, identity: bytes) -> None:
        sub = self._subscribers.get(identity)
        if sub is not None:
            self.drop(sub)

    def touch(self, identity: bytes, now: float) -> None:
        """Any frame from the app counts as a sign of life for its stream."""
        sub = self._subscribers.get(identity)
        if sub is not None:
            sub.last_seen = now

    # -- pumping -------------------------------------------------------------------------------

    def has_work(self, applied: int) -> bool:
        for sub in self._subscribers.values():
            if sub.pending_frame is not None:
                continue  # the app's queue was full: retried at the next tick, not in a spin
            if sub.snapshot_nodes is not None or sub.next_index <= applied:
                return True
            if sub.needs_snapshot and self._snapshot_streams < SNAPSHOT_STREAMS_MAX:
                return True
        return False

    def pump(self, applied: int) -> None:
        for sub in list(self._subscribers.values()):
            for _ in range(self.config.stream_frames_per_turn_max):
                try:
                    if sub.pending_frame is None and not self._next_stream_frame(sub, applied):
                        break
                except Corrupt as exc:
                    self._error(
                        sub.identity,
                        sub.req_id,
                        wire.ErrorCode.UNAVAILABLE,
                        "this agent's store is damaged; subscribe at another agent",
                    )
                    self.drop(sub)
                    self._on_damage(exc)
                    return
                except LimitExceeded as exc:
                    # A frame this subscriber needs cannot be built (a record or event larger
                    # than a frame, e.g. written before record_bytes_max): the subscriber is
                    # told, never the agent brought down. Other subscribers carry on.
                    log.error("a subscriber's next stream frame cannot be built: %s", exc)
                    self._error(
                        sub.identity,
                        sub.req_id,
                        wire.ErrorCode.TOO_LARGE,
                        f"the next frame of your stream cannot be sent: {exc}",
                    )
                    self.drop(sub)
                    break
                assert sub.pending_frame is not None
                result = self.clients.send(sub.identity, sub.pending_frame)
                if result == "full":
                    break  # the app reads slower than we write: try again next turn
                if result == "gone":
                    self.drop(sub)
                    break
                sub.pending_frame = None
                sub.next_index = sub.pending_next
                sub.streamed = True

    def clear_body_cache(self) -> None:
        self._body_cache.clear()

    def _next_stream_frame(self, sub: Subscriber, applied: int) -> bool:
        """Builds the subscriber's next frame into sub.pending_frame; False if none is due."""
        if sub.snapshot_nodes is not None:
            self._next_snapshot_frame(sub)
            return True
        if sub.needs_snapshot:
            if self._snapshot_streams >= SNAPSHOT_STREAMS_MAX:
                return False  # wait for a reader slot
            sub.needs_snapshot = False
            index, nodes = self.storage.object_snapshot()
            self._snapshot_streams += 1
            sub.snapshot_index = index
            sub.snapshot_part = 0
            sub.snapshot_nodes = nodes
            sub.snapshot_peek = next(nodes, None)
            self._next_snapshot_frame(sub)
            return True
        if sub.next_index > applied:
            return False
        try:
            start, body = self._events_body(sub.next_index, applied)
        except Trimmed:
            if not sub.streamed:
                sub.needs_snapshot = True  # at subscribe time: catch up from a snapshot
                return self._next_stream_frame(sub, applied)
            self._error(
                sub.identity,
                sub.req_id,
                wire.ErrorCode.LAGGING,
                f"entry {sub.next_index} was compacted before it could be sent; resubscribe "
                "from your applied index",
            )
            self.drop(sub)
            return False
        sub.pending_frame = frame_bytes(wire.FrameType.EVENTS, sub.req_id, body)
        sub.pending_next = start
        return True

    def _next_snapshot_frame(self, sub: Subscriber) -> None:
        assert sub.snapshot_nodes is not None
        nodes: list[list[Any]] = []
        size = 0
        while sub.snapshot_peek is not None:
            oid, record = sub.snapshot_peek
            if nodes and size + len(record) + len(oid) > self.config.snapshot_chunk_bytes_max:
                break
            nodes.append([oid, record])
            size += len(record) + len(oid)
            sub.snapshot_peek = next(sub.snapshot_nodes, None)
        last = sub.snapshot_peek is None
        body = {
            "index": sub.snapshot_index,
            "part": sub.snapshot_part,
            "last": last,
            "nodes": nodes,
        }
        sub.pending_frame = wire.encode(wire.FrameType.SNAPSHOT, sub.req_id, body)
        sub.snapshot_part += 1
        sub.pending_next = sub.next_index
        if last:
            sub.snapshot_nodes = None
            self._snapshot_streams -= 1
            sub.pending_next = sub.snapshot_index + 1

    def _events_body(self, start: int, applied: int) -> tuple[int, bytes]:
        """(next index after the batch, encoded EVENTS body) of events from `start` on."""
        assert start <= applied
        events: list[Event]
        recent_last = self._recent_first + len(self._recent) - 1
        if self._recent and self._recent_first <= start <= recent_last:
            end = min(recent_last, start + self.config.events_frame_entries_max - 1)
            cached = self._body_cache.get((start, end))
            if cached is not None:
                return end + 1, cached
            events = self._recent[start - self._recent_first : end - self._recent_first + 1]
            size = 0
            for i, event in enumerate(events):
                size += 32 + (len(event[4]) if event[4] else 0) + 24 * len(event[5])
                if i > 0 and size > self.config.events_frame_bytes_max:
                    events = events[:i]
                    break
        else:
            events = self.storage.events(
                start, self.config.events_frame_entries_max, self.config.events_frame_bytes_max
            )
        assert events and events[0][0] == start, (start, events[:1])
        end = events[-1][0]
        body = cbor2.dumps({"ev": [[*event[:5], list(event[5])] for event in events]})
        self._body_cache[(start, end)] = body
        return end + 1, body

    # -- what applied --------------------------------------------------------------------------

    def record_events(self, results: list[Applied]) -> None:
        if not self._recent:
            self._recent_first = results[0].index
        assert self._recent_first + len(self._recent) == results[0].index
        for applied in results:
            self._recent.append(
                (
                    applied.index,
                    applied.client,
                    applied.seq,
                    applied.outcome,
                    applied.body,
                    tuple(applied.collected),
                )
            )
        excess = len(self._recent) - EVENTS_CACHE_ENTRIES_MAX
        if excess > EVENTS_CACHE_ENTRIES_MAX // 2:
            # Trim in bulk so the cost per event stays constant.
            del self._recent[:excess]
            self._recent_first += excess

    def snapshot_installed(self, index: int) -> None:
        # Events before the snapshot are gone from this agent: subscribers behind it need one.
        self._recent = []
        self._recent_first = index + 1

    # -- ending streams ------------------------------------------------------------------------

    def drop_silent(self, now: float) -> None:
        silence_s = self.config.subscriber_silence_ms / 1000.0
        for sub in list(self._subscribers.values()):
            if now - sub.last_seen > silence_s:
                log.info("dropping a subscriber silent for %.1f s", now - sub.last_seen)
                self.drop(sub)

    def drop(self, sub: Subscriber) -> None:
        self._subscribers.pop(sub.identity, None)
        if sub.snapshot_nodes is not None:
            closer = getattr(sub.snapshot_nodes, "close", None)
            if closer is not None:
                closer()
            sub.snapshot_nodes = None
            self._snapshot_streams -= 1

    def close(self) -> None:
        for sub in list(self._subscribers.values()):
            self.drop(sub)


def frame_bytes(frame_type: wire.FrameType, req_id: int, body: bytes) -> bytes:
    """wire.encode with the body already encoded: the same bytes, without re-encoding a body
    shared by several subscribers. A CBOR array of 4 is the byte 0x84 then its items."""
    data = b"\x84" + cbor2.dumps(wire.PROTOCOL_VERSION) + cbor2.dumps(int(frame_type))
    data += cbor2.dumps(req_id) + body
    if len(data) > wire.FRAME_BYTES_MAX:
        raise LimitExceeded("FRAME_BYTES_MAX", wire.FRAME_BYTES_MAX, len(data), "frame bytes")
    return data
