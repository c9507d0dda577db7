"""Subscriber streams: each app's SUBSCRIBE fed with SNAPSHOT frames (if it needs the object
table) then EVENTS frames of applied entries, paced by the client socket.

The Server owns one `Streams`, tells it what applied (`record_events`, `snapshot_installed`) and
lets it pump once per turn; the streams never touch the Raft core. See docs/agent.md.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from superstatic_agent import app_snapshot, eventframes, heap, heldset, peer_codec
from superstatic_agent.config import AgentConfig
from superstatic_agent.partial_streams import PartialStreams
from superstatic_agent.statemachine import Applied
from superstatic_agent.storage import Corrupt, Event, Storage, Trimmed
from superstatic_agent.transport import ClientTransport

from superstatic.protocol import wire
from superstatic.protocol.errors import LimitExceeded

log = logging.getLogger("superstatic.agent")

# Applied events kept in memory so live subscribers are fed without reading LMDB (and at
# most --events-cache-bytes-max of them, counted by event_bytes).
EVENTS_CACHE_ENTRIES_MAX = 20_000
# Bytes an event is counted for beyond its body and collected ids: the tuple and its fields.
EVENT_OVERHEAD_BYTES = 200
# Bytes a collected id is counted for in memory (the str object and its slot).
COLLECTED_ID_BYTES = 80
# Object-table snapshots streamed at once: each pins one LMDB read transaction (reader slot).
SNAPSHOT_STREAMS_MAX = 16
# Built EVENTS bodies kept across turns for subscribers at the same position, in bytes, as a
# multiple of events_frame_bytes_max (docs/virtual-heap.md section 4.2).
BODY_CACHE_FRAMES_MAX = 4

# Answers an app with an ERROR frame (the Server's, which names the leader it knows).
SendError = Callable[[bytes, int, wire.ErrorCode, str], None]


# Connections a halted agent remembers having refused a stream (Streams._refused): each
# identity costs ~100 bytes; past it the oldest may be told once more.
REFUSED_CONNECTIONS_MAX = 4_096


@dataclass(slots=True)
class Subscriber:
    """One app's SUBSCRIBE stream (one per app connection)."""

    identity: bytes
    req_id: int
    next_index: int  # the next event this app needs
    last_seen: float
    snapshot_index: int = 0  # >0: a snapshot at this index is being streamed
    snapshot_log_time_ms: int = 0  # the log time at snapshot_index
    snapshot_part: int = 0
    # The snapshot's frames (item lists, app_snapshot.snapshot_frames) and the next one.
    snapshot_nodes: Iterator[list[list[Any]]] | None = None
    snapshot_peek: list[list[Any]] | None = None
    needs_snapshot: bool = False
    streamed: bool = False  # sent at least one frame (a later gap is "lagging", not a restart)
    pending_frame: bytes | None = None  # built but not yet accepted by the socket
    pending_next: int = 0  # next_index once pending_frame is sent
    # Flow control (docs/agent.md, "Subscriber backlog"): bytes of stream frames handed to
    # the socket, and how many of them the app said it received (its PINGs carry
    # {"stream": [req_id, bytes]}). Their difference sits in queues on the app's way: at most
    # subscriber_backlog_bytes_max of it.
    sent_bytes: int = 0
    acked_bytes: int = 0
    # Unacknowledged bytes of the stream this one replaced on the same connection (ahead in
    # the same FIFO queue): forgiven at this stream's first acknowledgement.
    earlier_bytes: int = 0
    stalled_since: float | None = None  # backlog full since (None: flowing)
    # SUBSCRIBE {"answers": true}: the app settles its writes on their events, so their "ok"
    # REPLY is not sent (docs/data-model-v2.md 8.2).
    answers: bool = False
    # The virtual heap (docs/virtual-heap.md): "partial" subscribers hold what they load and
    # get LOADED answers in their stream; "all" ones (the default) everything, as before.
    heap_mode: str = "all"
    client: str = ""
    held: heldset.HeldSet | None = None
    loads: deque[heap.LoadJob] = field(default_factory=deque)
    hold_parts_left: int = 0  # HOLD frames still to come before the stream starts
    hold_part: int = 0  # the next HOLD part expected
    # How far the app was told it reached (the last EVENTS' "to", or a LOADED's index) and the
    # log time there; the log time at next_index - 1 (a filtered cursor may pass entries
    # without a frame); the highest READ_INDEX answer this identity was given (the app's
    # sync() waits until its stream reaches it, so an empty frame reaching it is owed).
    sent_to: int = 0
    sent_t: int = 0
    seen_t: int = 0
    read_fence: int = 0


class Streams(PartialStreams):
    """Every subscriber of this agent, the recent applied events that feed them, and the
    EVENTS bodies built this turn (shared by subscribers at the same position). Partial
    subscribers' own work (LOAD, HOLD, DROP, filtered frames) is in partial_streams.py."""

    reader_slots_max = SNAPSHOT_STREAMS_MAX

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
        self._refusing: str | None = None  # set once the agent halts (refuse): no streams
        # Connections refused since (oldest first, at most REFUSED_CONNECTIONS_MAX): each is
        # told once. A library released before rulesnew resubscribes on the same connection
        # at once when refused, and a refusal answered each time is a loop without pause
        # (review 35); this library fails over with a new connection instead.
        self._refused: dict[bytes, None] = {}
        self.refused_again = 0  # SUBSCRIBEs left unanswered for that (drops: status)
        # Recent events: _recent[i] is the event at index _recent_first + i (contiguous);
        # _recent_items[i] its encoded stream item once a frame needed it (eventframes);
        # _recent_bytes is the sum of their event_bytes and of the items' lengths.
        self._recent: list[Event] = []
        self._recent_items: list[bytes | None] = []
        # What partial subscribers' filter tests of each recent event (heldset.EventWrites).
        self._recent_writes: list[heldset.EventWrites] = []
        # Clients whose last transaction conflicted (heldset.CLIENT_OUTCOMES_MAX, least recent
        # first): their next "ok" goes to every partial subscriber, at least as a stub.
        self._conflicted: dict[str, None] = {}
        # Send work (the metrics' stream_* counters; docs/virtual-heap.md section 8): stream
        # frame bytes handed to sockets, events put in frames (whole or as stubs), events a
        # partial subscriber's filter left out, LOADs answered.
        self.counters = {
            "stream_bytes_sent": 0,
            "stream_events_sent": 0,
            "stream_events_filtered": 0,
            "loads_answered": 0,
        }
        self._recent_first = applied + 1
        self._recent_bytes = 0
        # (next index, EVENTS body) by (first index, last index asked for: a frame may stop
        # short of it at events_frame_bytes_max), kept across turns while a subscriber is at
        # `first` (clear_body_cache), at most BODY_CACHE_FRAMES_MAX frames' bytes.
        self._body_cache: dict[tuple[int, int], tuple[int, bytes]] = {}
        # The cursors of the subscribers `pump_early` served for the Ready being handled, as
        # they were before it (identity -> next index): `answers_by_event` asks whether a
        # stream carries an event the early pump already sent. Cleared by `early_done`.
        self._early: dict[bytes, int] = {}
        # Client id -> the stream that answers its writes (a partial SUBSCRIBE names its client
        # and asks for "answers"): an app writing through its link to the leader has no waiter
        # at its own agent, and this is how that agent knows whose stream an event answers.
        self._answering: dict[str, bytes] = {}

    def count(self) -> int:
        return len(self._subscribers)

    # -- requests ------------------------------------------------------------------------------

    def on_subscribe(self, identity: bytes, frame: wire.Frame, now: float) -> None:
        subscription = wire.parse_subscribe(frame)
        start = subscription.start
        assert start <= peer_codec.INDEX_MAX
        model = frame.body.get("model")
        if type(model) is not int or model != wire.DATA_MODEL:
            # A model-1 library expects whole-record snapshots and v1 bodies in its stream.
            message = "this agent speaks data model 2: upgrade the superstatic library"
            self._error(identity, frame.req_id, wire.ErrorCode.BAD_REQUEST, message)
            return
        if self._refusing is not None:
            if identity in self._refused:
                self.refused_again += 1  # told already: see _refused
                return
            self._note_refused(identity)
            self._error(identity, frame.req_id, wire.ErrorCode.UNAVAILABLE, self._refusing)
            return
        old = self._subscribers.get(identity)
        earlier = 0
        if old is not None:
            earlier = old.earlier_bytes + old.sent_bytes - old.acked_bytes
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
        sub.answers = frame.body.get("answers") is True
        sub.needs_snapshot = start == 0
        sub.earlier_bytes = earlier
        if subscription.heap == "partial":
            self._start_partial(sub, subscription)
        self._subscribers[identity] = sub
        if sub.answers and sub.client:
            self._answering[sub.client] = identity  # the newest stream of a client wins

    def answers_by_event(self, identity: bytes, index: int, client: str | None) -> bool:
        """True if this connection asked to be answered by its stream and its stream will
        carry the event at `index` of `client` (not skipped by a snapshot that covers it; a
        partial stream carries it for sure only as its own: its SUBSCRIBE's client). A
        prediction: a stream behind the log may still jump past the event later (a held
        snapshot, `lagging`); the library sends its waiting writes again at such a jump and
        gets their REPLY as dups (docs/agent.md, "Proposals and replies")."""
        sub = self._subscribers.get(identity)
        if sub is None or not sub.answers or sub.needs_snapshot:
            return False
        if sub.held is not None and (not sub.client or sub.client != client):
            return False
        if sub.snapshot_nodes is not None:
            return sub.snapshot_index < index
        for job in sub.loads:
            if job.start:
                # A partial subscriber's start answer (or held snapshot) skips the events up
                # to its index: unknown until it is served, and at least this one's then.
                return 0 <= job.index < index
        # Sent already if this Ready's early pump moved the cursor past it (the frames it
        # sent are contiguous from where the cursor was).
        return self._early.get(identity, sub.next_index) <= index

    def unsubscribe(self, identity: bytes) -> None:
        sub = self._subscribers.get(identity)
        if sub is not None:
            self.drop(sub)

    def ack(self, identity: bytes, body: Any, now: float) -> None:
        """A PING's {"stream": [req_id, bytes]}: the app received that many bytes of stream
        frames of its subscription req_id. Anything else (older apps, garbage) is ignored."""
        sub = self._subscribers.get(identity)
        stream = body.get("stream") if type(body) is dict else None
        if sub is None or type(stream) is not list or len(stream) != 2:
            return
        req_id, received = stream
        if req_id != sub.req_id or type(received) is not int:
            return
        if sub.acked_bytes < received <= sub.sent_bytes:
            sub.acked_bytes = received
            sub.earlier_bytes = 0  # FIFO: whatever preceded these frames was read too
            sub.stalled_since = None

    def touch(self, identity: bytes, now: float) -> None:
        """Any frame from the app counts as a sign of life for its stream."""
        sub = self._subscribers.get(identity)
        if sub is not None:
            sub.last_seen = now

    # -- pumping -------------------------------------------------------------------------------

    def has_work(self, applied: int) -> bool:
        for sub in self._subscribers.values():
            if sub.pending_frame is not None or sub.stalled_since is not None:
                continue  # the app's queue or backlog was full: retried at the next tick
            if sub.hold_parts_left:
                continue  # waits for its HOLD frames
            if sub.loads and sub.loads[0].start:
                if self._load_ready(sub, sub.loads[0], applied):
                    return True
                continue  # nothing is sent before a start answer (_next_stream_frame)
            if sub.snapshot_nodes is not None or sub.next_index <= applied:
                return True
            if sub.loads and self._load_ready(sub, sub.loads[0], applied):
                return True
            if sub.held is not None and self._skip_due(sub, sub.next_index - 1, sub.seen_t):
                return True
            if sub.needs_snapshot and self._snapshot_streams < SNAPSHOT_STREAMS_MAX:
                return True
        return False

    def pump(self, applied: int, now: float) -> None:
        for sub in list(self._subscribers.values()):
            if not self._pump_subscriber(sub, applied, now):
                return

    def pump_early(self, upto: int, now: float, callers: Collection[bytes]) -> None:
        """Sends the events up to `upto` (just recorded, their apply not yet committed) to the
        streams of `callers`, the connections whose writes in them their stream answers
        (`answers_by_event`), if simply following the log, from memory only: called inside the
        apply's write transaction, before its commit and fsync (docs/agent.md, "Events before
        the apply's commit"). Every other stream waits for `pump` after the commit and after the
        Ready's Raft messages, which the transaction holds back: a fan-out to every subscriber
        here would cost every write what it saves its callers. A caller's stream in any other
        state (a frame waiting for the socket, stalled, a snapshot, HOLD parts or LOADs to
        serve, a cursor behind the events kept in memory) waits too: a LOADED is read from the
        committed store and must follow the events before its index, and a read of the store
        here would see the state before this transaction."""
        self._early.clear()
        if not self._recent:
            return
        for identity in callers:
            sub = self._subscribers.get(identity)
            if (
                sub is not None
                and sub.pending_frame is None
                and sub.stalled_since is None
                and not sub.hold_parts_left
                and sub.snapshot_nodes is None
                and not sub.needs_snapshot
                and not sub.loads
                and self._recent_first <= sub.next_index <= upto
            ):
                self._early[sub.identity] = sub.next_index
                try:
                    self._pump_subscriber(sub, upto, now)  # memory only: no store, no damage
                except Exception:
                    # Never into the write transaction of committed entries. The stream's state
                    # is unknown: a partial one's cursor and held set move before its frame is
                    # built, so it may have passed events never sent. It ends (the app
                    # resubscribes from what it applied; its waiting write gets its REPLY).
                    log.exception("a subscriber's stream failed before the commit: it ends")
                    message = "this agent could not send your stream; resubscribe"
                    self._error(sub.identity, sub.req_id, wire.ErrorCode.UNAVAILABLE, message)
                    self.drop(sub)

    def early_done(self) -> None:
        """The Ready whose events `pump_early` sent is answered: forget the cursors."""
        self._early.clear()

    def _pump_subscriber(self, sub: Subscriber, applied: int, now: float) -> bool:
        """Builds and sends `sub`'s due frames up to `applied`, at most
        stream_frames_per_turn_max of them, until the socket or the backlog bound says stop.
        False if the store turned out damaged (the agent stops serving streams)."""
        backlog_max = self.config.subscriber_backlog_bytes_max
        for _ in range(self.config.stream_frames_per_turn_max):
            backlog = sub.earlier_bytes + sub.sent_bytes - sub.acked_bytes
            if sub.pending_frame is None and backlog >= backlog_max:
                # Not even built: a stalled subscriber holds no frame of ours.
                if sub.stalled_since is None:
                    sub.stalled_since = now
                break
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
                return False
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
            frame_bytes_ = len(sub.pending_frame)
            backlog = sub.earlier_bytes + sub.sent_bytes - sub.acked_bytes
            if backlog and backlog + frame_bytes_ > backlog_max:
                # The app has not confirmed enough of what it was sent: nothing more goes
                # into its queues (a frame larger than the bound goes alone).
                if sub.stalled_since is None:
                    sub.stalled_since = now
                break
            result = self.clients.send(sub.identity, sub.pending_frame)
            if result == "full":
                break  # the app reads slower than we write: try again next turn
            if result == "gone":
                self.drop(sub)
                break
            sub.sent_bytes += frame_bytes_
            self.counters["stream_bytes_sent"] += frame_bytes_
            sub.pending_frame = None
            sub.next_index = sub.pending_next
            sub.streamed = True
        return True

    def clear_body_cache(self) -> None:
        """Once per turn: forgets the bodies no subscriber will ask for again (none is at their
        first index any more), then the oldest ones past the byte bound."""
        if not self._body_cache:
            return
        waiting = {sub.next_index for sub in self._subscribers.values()}
        kept = {key: cached for key, cached in self._body_cache.items() if key[0] in waiting}
        budget = self.config.events_frame_bytes_max * BODY_CACHE_FRAMES_MAX
        total = sum(len(body) for _next, body in kept.values())
        for key in sorted(kept):
            if total <= budget:
                break
            total -= len(kept.pop(key)[1])
        self._body_cache = kept

    def _next_stream_frame(self, sub: Subscriber, applied: int) -> bool:
        """Builds the subscriber's next frame into sub.pending_frame; False if none is due."""
        if sub.hold_parts_left:
            return False  # the stream starts after the app's last HOLD
        if sub.snapshot_nodes is not None:
            self._next_snapshot_frame(sub)
            return True
        if sub.needs_snapshot:
            if self._snapshot_streams >= SNAPSHOT_STREAMS_MAX:
                return False  # wait for a reader slot
            sub.needs_snapshot = False
            index, log_time_ms, frames = app_snapshot.store_snapshot(
                self.storage.env, self.storage.dbs, self.config.snapshot_chunk_bytes_max
            )
            self._snapshot_streams += 1
            sub.snapshot_index = index
            sub.snapshot_log_time_ms = log_time_ms
            sub.snapshot_part = 0
            sub.snapshot_nodes = frames
            sub.snapshot_peek = next(frames)
            self._next_snapshot_frame(sub)
            return True
        if sub.loads:
            loaded = self._next_load_frame(sub, applied)
            if loaded:
                return True
            if sub.loads[0].start:
                # The stream begins after its start answer (it waits for a reader slot): an
                # event sent before it is skipped by it, and one the log no longer holds queued
                # a start answer again, and again (a RecursionError out of pump).
                return False
            if loaded is None:
                # The LOADED waits for the events up to its index: they go first.
                applied = min(applied, sub.loads[0].index)
        if sub.next_index > applied:
            if sub.held is not None and self._skip_due(sub, sub.next_index - 1, sub.seen_t):
                self._skip_frame(sub, sub.next_index - 1, sub.seen_t)
                return True
            return False
        try:
            if sub.held is not None:
                return self._next_filtered_frame(sub, applied)
            start, body = self._events_body(sub.next_index, applied)
        except Trimmed:
            if sub.held is not None:
                # A partial subscriber behind the log: a held snapshot, every node it holds
                # read at this agent's index, and the stream goes on after it (section 4.1).
                self._held_snapshot(sub)
                return self._next_stream_frame(sub, applied)
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
        self.counters["stream_events_sent"] += start - sub.next_index
        sub.pending_next = start
        return True

    def _next_snapshot_frame(self, sub: Subscriber) -> None:
        assert sub.snapshot_nodes is not None and sub.snapshot_peek is not None
        items = sub.snapshot_peek
        sub.snapshot_peek = next(sub.snapshot_nodes, None)
        last = sub.snapshot_peek is None
        body = app_snapshot.frame_body(
            sub.snapshot_index, sub.snapshot_part, last, sub.snapshot_log_time_ms, items
        )
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
        items: list[bytes] = []
        recent_last = self._recent_first + len(self._recent) - 1
        if self._recent and self._recent_first <= start <= recent_last:
            # Never past `applied`: after a halt that followed an early send the memory holds
            # events the store did not commit, and a halted agent serves what it applied.
            asked = min(recent_last, applied, start + self.config.events_frame_entries_max - 1)
            cached = self._body_cache.get((start, asked))
            if cached is not None:
                return cached
            size = 0
            for position in range(start - self._recent_first, asked - self._recent_first + 1):
                item = self._item(position)
                size += len(item)
                if items and size > self.config.events_frame_bytes_max:
                    break
                items.append(item)
            end = start + len(items) - 1
            log_time_ms = self._recent[end - self._recent_first][6]
        else:
            events = self.storage.events(
                start, self.config.events_frame_entries_max, self.config.events_frame_bytes_max
            )
            assert events and events[0][0] == start, (start, events[:1])
            items = [eventframes.event_item(event) for event in events]
            end, log_time_ms = events[-1][0], events[-1][6]
            asked = end
        body = eventframes.events_body(items, end, log_time_ms)
        self._body_cache[(start, asked)] = (end + 1, body)
        return end + 1, body

    def _item(self, position: int) -> bytes:
        """The encoded stream item of _recent[position], encoded once, when first sent."""
        item = self._recent_items[position]
        if item is None:
            item = eventframes.event_item(self._recent[position])
            self._recent_items[position] = item
            self._recent_bytes += len(item)
        return item

    # -- what applied --------------------------------------------------------------------------

    def record_events(self, results: list[Applied]) -> None:
        if not self._recent:
            self._recent_first = results[0].index
        assert self._recent_first + len(self._recent) == results[0].index
        for applied in results:
            event: Event = (
                applied.index,
                applied.client,
                applied.seq,
                applied.outcome,
                applied.body,
                tuple(applied.collected),
                applied.log_time_ms,
                applied.heads,
            )
            self._recent.append(event)
            self._recent_items.append(None)
            writes = self._writes(applied)
            self._recent_writes.append(writes)
            self._recent_bytes += event_bytes(event) + writes_bytes(writes)
        excess = len(self._recent) - EVENTS_CACHE_ENTRIES_MAX
        bytes_max = self.config.events_cache_bytes_max
        if excess > EVENTS_CACHE_ENTRIES_MAX // 2 or self._recent_bytes > bytes_max:
            # Trim in bulk (to three quarters of either bound) so the cost per event stays
            # constant; older events are read from LMDB when a subscriber needs them.
            keep_bytes = bytes_max * 3 // 4
            cut = max(0, len(self._recent) - EVENTS_CACHE_ENTRIES_MAX * 3 // 4)
            trimmed = sum(self._cost(position) for position in range(cut))
            while cut < len(self._recent) and self._recent_bytes - trimmed > keep_bytes:
                trimmed += self._cost(cut)
                cut += 1
            del self._recent[:cut]
            del self._recent_items[:cut]
            del self._recent_writes[:cut]
            self._recent_first += cut
            self._recent_bytes -= trimmed

    def _writes(self, applied: Applied) -> heldset.EventWrites:
        """What the filter tests of a new event; an "ok" that ends its client's conflict run
        gets a stub for the partial subscribers that do not get it whole."""
        client, stub = applied.client, None
        if client is not None and applied.kind == "txn":
            if applied.outcome == "conflict":
                self._conflicted.pop(client, None)
                self._conflicted[client] = None
                if len(self._conflicted) > heldset.CLIENT_OUTCOMES_MAX:
                    del self._conflicted[next(iter(self._conflicted))]
            elif applied.outcome == "ok" and client in self._conflicted:
                del self._conflicted[client]
                stub_event: Event = (
                    applied.index,
                    client,
                    applied.seq,
                    "ok",
                    None,
                    (),
                    applied.log_time_ms,
                    (),
                )
                stub = eventframes.event_item(stub_event)
        return heldset.EventWrites(applied.written, applied.created, stub, applied.body)

    def _cost(self, position: int) -> int:
        item = self._recent_items[position]
        size = event_bytes(self._recent[position]) + writes_bytes(self._recent_writes[position])
        return size + (0 if item is None else len(item))

    def snapshot_installed(self, index: int) -> None:
        # Events before the snapshot are gone from this agent: subscribers behind it need one.
        self._recent = []
        self._recent_items = []
        self._recent_writes = []
        self._recent_first = index + 1
        self._recent_bytes = 0

    # -- ending streams ------------------------------------------------------------------------

    def drop_silent(self, now: float) -> None:
        silence_s = self.config.subscriber_silence_ms / 1000.0
        stall_s = self.config.subscriber_stall_ms / 1000.0
        for sub in list(self._subscribers.values()):
            if now - sub.last_seen > silence_s:
                log.info("dropping a subscriber silent for %.1f s", now - sub.last_seen)
                self.drop(sub)
            elif sub.stalled_since is not None and now - sub.stalled_since > stall_s:
                # It does not read (or does not say so): drop it, and with it the frames it
                # would have been sent. What it was sent waits in its queue, bounded.
                backlog = sub.earlier_bytes + sub.sent_bytes - sub.acked_bytes
                log.info("dropping a subscriber that left %d bytes unread for %.1f s", backlog,
                         now - sub.stalled_since)  # fmt: skip
                self._error(
                    sub.identity,
                    sub.req_id,
                    wire.ErrorCode.LAGGING,
                    f"your stream left {backlog} bytes unacknowledged for over "
                    f"subscriber_stall_ms={self.config.subscriber_stall_ms} "
                    f"(subscriber_backlog_bytes_max={self.config.subscriber_backlog_bytes_max}): "
                    "read your stream and acknowledge it in PING {'stream': [req_id, bytes]}; "
                    "resubscribe from your applied index",
                )
                self.drop(sub)

    def backlog_bytes(self) -> tuple[int, int]:
        """(sum, largest) of the stream bytes subscribers have not acknowledged yet: what sits
        in queues on the apps' way (the metrics and the status page show it)."""
        backlogs = [
            s.earlier_bytes + s.sent_bytes - s.acked_bytes for s in self._subscribers.values()
        ]
        return sum(backlogs), max(backlogs, default=0)

    def memory_bytes(self) -> int:
        """What the streams hold besides their queues: the cached events and built frames."""
        pending = sum(len(s.pending_frame or b"") for s in self._subscribers.values())
        cached = sum(len(body) for _next, body in self._body_cache.values())
        loads = sum(job.built_bytes for s in self._subscribers.values() for job in s.loads)
        return self._recent_bytes + pending + cached + loads

    def answering_stream(self, client: str) -> bytes | None:
        """The connection whose stream answers `client`'s writes, if it is subscribed here."""
        return self._answering.get(client)

    def drop(self, sub: Subscriber) -> None:
        self._subscribers.pop(sub.identity, None)
        if sub.client and self._answering.get(sub.client) == sub.identity:
            del self._answering[sub.client]
        for job in sub.loads:
            self._end_load(job)
        sub.loads.clear()
        if sub.snapshot_nodes is not None:
            closer = getattr(sub.snapshot_nodes, "close", None)
            if closer is not None:
                closer()
            sub.snapshot_nodes = None
            self._snapshot_streams -= 1

    def close(self) -> None:
        for sub in list(self._subscribers.values()):
            self.drop(sub)

    def refuse(self, reason: str) -> None:
        """Ends every stream and refuses new ones (the agent halted: it applies nothing more,
        and a damaged store must feed no one)."""
        self._refusing = reason
        for sub in list(self._subscribers.values()):
            self._note_refused(sub.identity)
            self._error(sub.identity, sub.req_id, wire.ErrorCode.UNAVAILABLE, reason)
        self.close()

    def _note_refused(self, identity: bytes) -> None:
        if len(self._refused) >= REFUSED_CONNECTIONS_MAX:
            del self._refused[next(iter(self._refused))]  # it may be told once more: harmless
        self._refused[identity] = None


def writes_bytes(writes: heldset.EventWrites) -> int:
    """What an event's filter data costs in memory beyond the event: the ids of the nodes it
    writes and creates (each str and its slot, as a collected id), and its stub."""
    ids = len(writes.written) + len(writes.created)
    return COLLECTED_ID_BYTES * ids + len(writes.stub or b"")


def event_bytes(event: Event) -> int:
    """What an event costs held in memory (its body, its collected ids, its heads, the
    tuple)."""
    body = event[4]
    ids = len(event[5]) + len(event[7])
    return EVENT_OVERHEAD_BYTES + (len(body) if body else 0) + COLLECTED_ID_BYTES * ids


# wire.encode with the body already encoded (agent/eventframes.py).
frame_bytes = eventframes.frame_bytes
