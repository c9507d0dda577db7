"""Subscriber streams: each app's SUBSCRIBE fed with SNAPSHOT frames (if it needs the object
table) then EVENTS frames of applied entries, paced by the client socket.

The Server owns one `Streams`, tells it what applied (`record_events`, `snapshot_installed`) and
lets it pump once per turn; the streams never touch the Raft core. See docs/agent.md.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cbor2
from superstatic_agent import app_snapshot, eventframes, heap, heldset, peer_codec
from superstatic_agent.config import AgentConfig
from superstatic_agent.statemachine import Applied
from superstatic_agent.storage import Corrupt, Event, Storage, Trimmed
from superstatic_agent.transport import ClientTransport

from superstatic.protocol import codec, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

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
        self._refusing: str | None = None  # set once the store is found damaged: no streams
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

    def answers_by_event(self, identity: bytes, index: int) -> bool:
        """True if this connection asked to be answered by its stream and its stream will
        carry the event at `index` (not skipped by a snapshot that covers it)."""
        sub = self._subscribers.get(identity)
        if sub is None or not sub.answers or sub.needs_snapshot:
            return False
        if sub.snapshot_nodes is not None:
            return sub.snapshot_index < index
        return sub.next_index <= index

    def _start_partial(self, sub: Subscriber, subscription: wire.Subscription) -> None:
        """A partial subscriber holds only what it loads (or declares in HOLD frames first):
        instead of the whole object table it is sent one LOADED at the agent's applied index
        (empty, or its held nodes), then the events after it that pass its filter."""
        sub.heap_mode, sub.client, sub.held = "partial", subscription.client, heldset.HeldSet()
        sub.hold_parts_left = subscription.hold_parts
        sub.sent_to = subscription.start
        if sub.needs_snapshot:
            sub.needs_snapshot = False
            sub.loads.append(heap.LoadJob(0, (), start=True))

    def note_read(self, identity: bytes, index: int) -> None:
        """A READ_INDEX of this identity was answered with `index`: its sync() waits until
        its stream reaches it, so a partial stream owes it a frame reaching it."""
        sub = self._subscribers.get(identity)
        if sub is not None and sub.held is not None:
            sub.read_fence = max(sub.read_fence, index)

    def _held_room(self, sub: Subscriber) -> tuple[int, str]:
        """How many more nodes the subscriber may hold, and the flag that bounds it."""
        assert sub.held is not None
        total = self.held_entries()
        own = self.config.subscriber_held_max - len(sub.held)
        agent = self.config.held_entries_max - total
        if own <= agent:
            return own, f"--subscriber-held-max={self.config.subscriber_held_max}"
        return agent, f"--held-entries-max={self.config.held_entries_max}"

    def on_heap(self, identity: bytes, request: wire.HeapRequest, req_id: int) -> None:
        """LOAD (queued, answered in the stream), DROP or HOLD from a partial subscriber."""
        sub = self._subscribers.get(identity)
        code = wire.ErrorCode.BAD_REQUEST
        if sub is None or sub.req_id != request.sub:
            self._error(identity, req_id, code, "no such subscription: resubscribe")
            return
        if sub.held is None:
            message = f"{request.type.name} on a subscription with heap 'all': it holds everything"
            self._error(identity, req_id, code, message)
            return
        try:
            keys = heldset.normalized_keys(request.keys)
        except ProtocolError as exc:
            self._error(identity, req_id, code, f"{request.type.name}.{exc}")
            return
        if request.type is wire.FrameType.DROP:
            # One never held (or dropped twice) changes nothing.
            for oid in request.oids:
                sub.held.discard(oid)
            for oid, pairs in keys:
                for ekey, _key in pairs:
                    sub.held.discard_key(oid, ekey)
            return
        room, flag = self._held_room(sub)
        # Each key counts, and its dict once (an upper bound: some may be held already).
        asked = len(request.oids) + request.key_count() + len(keys)
        if asked > room:
            message = (
                f"{flag}: this app may hold {max(room, 0)} more entries, the "
                f"{request.type.name} names {asked}; DROP some first"
            )
            self._error(identity, req_id, wire.ErrorCode.TOO_LARGE, message)
            return
        if request.type is wire.FrameType.HOLD:
            self._on_hold(sub, request, keys, req_id)
            return
        # The subscription's own answers (load 0) are not the app's to count.
        if sum(1 for job in sub.loads if job.load) >= heap.SUBSCRIBER_LOADS_MAX:
            limit = heap.SUBSCRIBER_LOADS_MAX
            message = f"SUBSCRIBER_LOADS_MAX={limit} loads are queued; retry"
            self._error(identity, req_id, wire.ErrorCode.BUSY, message)
            return
        job = heap.LoadJob(req_id, request.oids, request.prefetch_bytes, keys=keys)
        job.whole = request.whole
        sub.loads.append(job)

    def _on_hold(
        self,
        sub: Subscriber,
        request: wire.HeapRequest,
        keys: tuple[tuple[str, tuple[tuple[bytes, Any], ...]], ...],
        req_id: int,
    ) -> None:
        """One part of the held set a resubscribing app declares (docs/virtual-heap.md 4.1):
        held since the subscription's `from`; the stream starts after the last part."""
        assert sub.held is not None
        if sub.hold_parts_left == 0 or request.part != sub.hold_part:
            message = f"HOLD part {request.part} was not expected: resubscribe"
            self._error(sub.identity, req_id, wire.ErrorCode.BAD_REQUEST, message)
            self.drop(sub)  # its held set would be incomplete: nothing may be streamed
            return
        sub.hold_parts_left -= 1
        sub.hold_part += 1
        if request.last != (sub.hold_parts_left == 0):
            message = "HOLD.last must mark exactly the last of SUBSCRIBE.hold_parts: resubscribe"
            self._error(sub.identity, req_id, wire.ErrorCode.BAD_REQUEST, message)
            self.drop(sub)
            return
        since = sub.next_index - 1
        for oid in request.oids:
            sub.held.add(oid, since)
        for oid, pairs in keys:
            sub.held.add_header(oid)
            for ekey, _key in pairs:
                sub.held.add_key(oid, ekey, since)

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
        backlog_max = self.config.subscriber_backlog_bytes_max
        for sub in list(self._subscribers.values()):
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
                sub.loads.appendleft(heap.LoadJob(0, (), start=True))
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

    def _next_load_frame(self, sub: Subscriber, applied: int) -> bool | None:
        """The next LOADED frame of the first queued load into sub.pending_frame (True); False
        if nothing is due (it cannot be served yet); None if the events up to its index must be
        sent first (docs/virtual-heap.md section 3.1: the app reads the answer at exactly its
        index)."""
        job = sub.loads[0]
        if job.index < 0 and not self._serve_load(sub, job, applied):
            return False
        if sub.next_index <= job.index:
            return None
        assert sub.next_index == job.index + 1, (sub.next_index, job.index)
        if not job.start and sub.sent_to < job.index:
            # The app installs an answer only at its applied index: a filtered stream may not
            # have reached it yet, so an (empty) frame reaching it goes first.
            self._skip_frame(sub, job.index, job.log_time_ms)
            return True
        sub.sent_to, sub.sent_t = job.index, job.log_time_ms
        if job.frames:
            data = job.frames.popleft()
            job.built_bytes -= len(data)
            last = job.rest is None and not job.frames
        else:
            assert job.rest is not None
            data, last = self._load_frame(sub, job)
        sub.pending_frame = data
        sub.pending_next = sub.next_index
        if last:
            sub.loads.popleft()
            self.counters["loads_answered"] += job.load != 0
        return True

    def _load_ready(self, sub: Subscriber, job: heap.LoadJob, applied: int) -> bool:
        """Whether the job has frames to send or can be served now (else the loop may sleep:
        it waits for a reader slot, or for this agent to apply what the app was sent)."""
        if job.index >= 0:
            return True
        if applied < sub.next_index - 1 and not job.start:
            return False
        return self._snapshot_streams < SNAPSHOT_STREAMS_MAX

    def _serve_load(self, sub: Subscriber, job: heap.LoadJob, applied: int) -> bool:
        """Reads the job's nodes at the applied index, in this turn: builds its frames up to
        LOAD_BUILT_BYTES_MAX (the rest stays readable, holding a reader slot) and holds what it
        sends whole from that index. False (nothing done) while the app has been sent more
        than the agent applied (after a failover to an agent behind it) or no slot is free."""
        assert sub.held is not None
        if not self._load_ready(sub, job, applied):
            return False
        held = sub.held
        oids = job.oids
        if job.start:
            # A start answer (the subscription's first, or a held snapshot) holds every node
            # and key the subscriber holds, read again at its index.
            oids, job.whole = tuple(held.since), True
            job.keys = tuple(
                (oid, tuple((ekey, codec.loads(ekey)) for ekey in keys))
                for oid, keys in held.keys.items()
            )
        read = heap.LoadRead(
            self.storage.env,
            self.storage.dbs,
            job,
            oids,
            held,
            self.config.snapshot_chunk_bytes_max,
            # What prefetch may add: the room left once the requested entries are held.
            self._held_room(sub)[0] - len(oids) - sum(1 + len(p) for _oid, p in job.keys),
        )
        self._snapshot_streams += 1
        job.index, job.log_time_ms, job.rest = read.index, read.log_time_ms, read
        if job.start:
            sub.next_index = job.index + 1  # the stream begins after the answer
            sub.seen_t = job.log_time_ms
            for oid in read.absent:
                if oid != heap.ROOTS_OID:  # the root table's keys wait for its creation
                    held.discard(oid)  # collected since it was declared: answered absent
            for later in sub.loads:
                if later is not job and 0 <= later.index < job.index:
                    # Read before the index the app now jumps to: it would show an older
                    # state than the app has seen. Read again when its turn comes.
                    self._end_load(later)
                    later.index, later.part, later.built_bytes = -1, 0, 0
                    later.frames.clear()
        try:
            while job.rest is not None and job.built_bytes < heap.LOAD_BUILT_BYTES_MAX:
                data, _last = self._load_frame(sub, job)
                job.frames.append(data)
                job.built_bytes += len(data)
        finally:
            read.stop_prefetch()
        return True

    def _load_frame(self, sub: Subscriber, job: heap.LoadJob) -> tuple[bytes, bool]:
        """Reads and encodes the job's next LOADED frame; the last one releases its reader."""
        assert job.rest is not None
        try:
            items, last = next(job.rest.frames)
        except BaseException:
            self._end_load(job)
            raise
        body = wire.loaded_body(job.index, job.part, last, job.load, items, job.log_time_ms)
        job.part += 1
        if last:
            self._end_load(job)
        return wire.encode(wire.FrameType.LOADED, sub.req_id, body), last

    def _end_load(self, job: heap.LoadJob) -> None:
        if job.rest is not None:
            job.rest.close()
            job.rest = None
            self._snapshot_streams -= 1

    def _next_filtered_frame(self, sub: Subscriber, upto: int) -> bool:
        """A partial subscriber's next EVENTS frame (docs/virtual-heap.md section 4.2): the
        events from its cursor to `upto` that pass its filter, assembled from their bytes, its
        held set changed as the cursor passes each (its own new nodes join it, collected ones
        leave it after their event). False if nothing passed and no frame is owed yet (the
        cursor moves on all the same)."""
        held = sub.held
        assert held is not None
        items: list[bytes] = []
        size = 0
        index = sub.next_index
        seen_t = sub.seen_t
        bytes_max = self.config.events_frame_bytes_max
        for event, item, writes in self._events_between(index, upto):
            if heldset.passes(event, writes, held, sub.client):
                chosen: bytes | None = item()
            else:
                chosen = writes.stub
            if chosen is not None:
                if items and size + len(chosen) > bytes_max:
                    break
                items.append(chosen)
                size += len(chosen)
            if sub.client and event[1] == sub.client:
                for oid in writes.created:
                    held.add(oid, event[0])  # the app adopts the nodes it created
            for oid in event[5]:
                held.discard(oid)  # after the event that tells the app
            index, seen_t = event[0] + 1, event[6]
            if len(items) >= self.config.events_frame_entries_max:
                break
        self.counters["stream_events_sent"] += len(items)
        self.counters["stream_events_filtered"] += index - sub.next_index - len(items)
        sub.next_index, sub.seen_t = index, seen_t
        if not items and not self._skip_due(sub, index - 1, seen_t):
            return False
        self._skip_frame(sub, index - 1, seen_t, items)
        return True

    def _events_between(
        self, start: int, upto: int
    ) -> Iterator[tuple[Event, Callable[[], bytes], heldset.EventWrites]]:
        """(event, its item's bytes on demand, its writes) from `start` to `upto`, at most
        EVENTS_SKIP_ENTRIES_MAX of them: from memory, or read back from the log."""
        end = min(upto, start + heldset.EVENTS_SKIP_ENTRIES_MAX - 1)
        index = start
        while index <= end:
            position = index - self._recent_first
            if self._recent and 0 <= position < len(self._recent):
                event = self._recent[position]
                yield event, functools.partial(self._item, position), self._recent_writes[position]
                index += 1
                continue
            count = min(end, self._recent_first - 1 if self._recent else end) - index + 1
            events = self.storage.events(index, max(count, 1), self.config.events_frame_bytes_max)
            assert events and events[0][0] == index, (index, events[:1])
            for event in events:
                item = eventframes.event_item(event)
                yield event, functools.partial(_same, item), heldset.writes_of(event)
            index = events[-1][0] + 1

    def _skip_due(self, sub: Subscriber, to: int, log_time_ms: int) -> bool:
        """Whether a partial subscriber is owed a frame reaching `to` though nothing in it
        passed: its sync() waits for a read index up to there, or its cursor moved
        EVENTS_SKIP_ENTRIES_MAX entries or EVENTS_SKIP_MS_MAX of log time past its last frame."""
        if to <= sub.sent_to:
            return False
        return (
            sub.read_fence > sub.sent_to
            or to - sub.sent_to >= heldset.EVENTS_SKIP_ENTRIES_MAX
            or log_time_ms - sub.sent_t >= heldset.EVENTS_SKIP_MS_MAX
        )

    def _skip_frame(
        self, sub: Subscriber, to: int, log_time_ms: int, items: list[bytes] | None = None
    ) -> None:
        """An EVENTS frame of `items` (none: an empty one) reaching `to`."""
        body = eventframes.events_body(items or [], to, log_time_ms)
        sub.pending_frame = frame_bytes(wire.FrameType.EVENTS, sub.req_id, body)
        sub.pending_next = max(sub.next_index, to + 1)
        sub.sent_to, sub.sent_t = to, log_time_ms

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
            asked = min(recent_last, start + self.config.events_frame_entries_max - 1)
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

    def held_entries(self) -> int:
        """Held-set entries over every partial subscriber (--held-entries-max bounds it)."""
        return sum(len(s.held) for s in self._subscribers.values() if s.held is not None)

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

    def drop(self, sub: Subscriber) -> None:
        self._subscribers.pop(sub.identity, None)
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
        """Ends every stream and refuses new ones (the store is damaged: nothing is served)."""
        self._refusing = reason
        for sub in list(self._subscribers.values()):
            self._error(sub.identity, sub.req_id, wire.ErrorCode.UNAVAILABLE, reason)
        self.close()


def writes_bytes(writes: heldset.EventWrites) -> int:
    """What an event's filter data costs in memory beyond the event: the ids of the nodes it
    writes and creates (each str and its slot, as a collected id), and its stub."""
    ids = len(writes.written) + len(writes.created)
    return COLLECTED_ID_BYTES * ids + len(writes.stub or b"")


def _same(value: bytes) -> bytes:
    return value


def event_bytes(event: Event) -> int:
    """What an event costs held in memory (its body, its collected ids, its heads, the
    tuple)."""
    body = event[4]
    ids = len(event[5]) + len(event[7])
    return EVENT_OVERHEAD_BYTES + (len(body) if body else 0) + COLLECTED_ID_BYTES * ids


def frame_bytes(frame_type: wire.FrameType, req_id: int, body: bytes) -> bytes:
    """wire.encode with the body already encoded: the same bytes, without re-encoding a body
    shared by several subscribers. A CBOR array of 4 is the byte 0x84 then its items."""
    data = b"\x84" + cbor2.dumps(wire.PROTOCOL_VERSION) + cbor2.dumps(int(frame_type))
    data += cbor2.dumps(req_id) + body
    if len(data) > wire.FRAME_BYTES_MAX:
        raise LimitExceeded("FRAME_BYTES_MAX", wire.FRAME_BYTES_MAX, len(data), "frame bytes")
    return data
