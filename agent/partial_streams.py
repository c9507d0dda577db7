"""The partial subscribers' side of the streams (the virtual heap, docs/virtual-heap.md
sections 3 and 4): their LOADs answered in their stream, their held sets, HOLD and DROP, and
their filtered EVENTS frames with the empty ones they are owed.

`PartialStreams` is a part of `streams.Streams` (its base class): the state it reads (the
subscribers, the recent events, the reader slots) is Streams', declared below for the reader.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from superstatic_agent import eventframes, heap, heldset
from superstatic_agent.config import AgentConfig
from superstatic_agent.storage import Event, Storage

from superstatic.protocol import wire
from superstatic.protocol.errors import ProtocolError

if TYPE_CHECKING:
    from superstatic_agent.streams import SendError, Subscriber


class PartialStreams:
    # Streams' state this part uses (set by Streams.__init__).
    config: AgentConfig
    storage: Storage
    counters: dict[str, int]
    reader_slots_max: int  # LMDB reader slots shared with app snapshots
    _subscribers: dict[bytes, Subscriber]
    _error: SendError
    _snapshot_streams: int
    _recent: list[Event]
    _recent_first: int
    _recent_writes: list[heldset.EventWrites]
    _item: Callable[[int], bytes]
    drop: Callable[[Subscriber], None]

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
        # Loads queued and not yet served count as held already: each may name a frame of
        # keys, and SUBSCRIBER_LOADS_MAX of them would otherwise all pass the same room.
        total = self.held_entries() + sum(map(_queued, self._subscribers.values()))
        own = self.config.subscriber_held_max - len(sub.held) - _queued(sub)
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
            dropped = False
            for oid in request.oids:
                dropped = sub.held.discard(oid) or dropped
            for oid, pairs in keys:
                for ekey, _key in pairs:
                    dropped = sub.held.discard_key(oid, ekey) or dropped
            if dropped:
                for job in sub.loads:
                    job.raced_drop = True  # what it names held may be gone: it counts now
            return
        room, flag = self._held_room(sub)
        # Only what the answer may add counts (a long key for its bytes, a dict once): a read
        # of what the app holds adds nothing and is never refused, even at the limit (before,
        # every name counted: review 20). Prefetch is bounded by the room left when served.
        asked, held_named = sub.held.adds(request.oids, keys)
        if asked > max(room, 0):
            message = (
                f"{flag}: this app may hold {max(room, 0)} more entries, the "
                f"{request.type.name} names {asked}; DROP some first"
            )
            self._error(identity, req_id, wire.ErrorCode.TOO_LARGE, message)
            return
        if request.type is wire.FrameType.HOLD:
            self._on_hold(sub, request, keys, req_id)
            return
        if req_id == 0:
            # Its LOADED would say load 0: the subscription's own answer, which the library
            # installs as its whole held set.
            message = "LOAD req_id must be at least 1 (0 names the subscription's own answers)"
            self._error(identity, req_id, code, message)
            return
        # The subscription's own answers are not the app's to count.
        if sum(1 for job in sub.loads if not job.start) >= heap.SUBSCRIBER_LOADS_MAX:
            limit = heap.SUBSCRIBER_LOADS_MAX
            message = f"SUBSCRIBER_LOADS_MAX={limit} loads are queued; retry"
            self._error(identity, req_id, wire.ErrorCode.BUSY, message)
            return
        job = heap.LoadJob(req_id, request.oids, request.prefetch_bytes, keys=keys)
        job.whole, job.asked, job.held_named = request.whole, asked, held_named
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

    def _next_load_frame(self, sub: Subscriber, applied: int) -> bool | None:
        """The next LOADED frame of the first queued load into sub.pending_frame (True); False
        if nothing is due (it cannot be served yet); None if the events up to its index must be
        sent first (docs/virtual-heap.md section 3.1: the app reads the answer at exactly its
        index)."""
        job = sub.loads[0]
        if job.index < 0 and not self._serve_load(sub, job, applied, job.reserved):
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
        if job.index >= 0 or job.reserved is not None:
            return True
        if applied < sub.next_index - 1 and not job.start:
            return False
        return self._snapshot_streams < self.reader_slots_max

    def _serve_load(
        self,
        sub: Subscriber,
        job: heap.LoadJob,
        applied: int,
        shared: heap.SharedRead | None = None,
    ) -> bool:
        """Reads the job's nodes at the applied index, in this turn: builds its frames up to
        LOAD_BUILT_BYTES_MAX (the rest stays readable, holding a reader slot) and holds what it
        sends whole from that index. False (nothing done) while the app has been sent more
        than the agent applied (after a failover to an agent behind it) or no slot is free.
        `shared`: a start answer's read the job reserved, which it joins (its index; no slot
        of its own)."""
        assert sub.held is not None
        if shared is None and not self._load_ready(sub, job, applied):
            return False
        held = sub.held
        # A start answer (the subscription's first, or a held snapshot) reads every node and
        # key the subscriber holds again at its index, as its frames are built (heap.LoadRead).
        oids = job.oids
        read = heap.LoadRead(
            self.storage.env,
            self.storage.dbs,
            job,
            oids,
            held,
            self.config.snapshot_chunk_bytes_max,
            # What prefetch may add: the room left once the requested entries are held (this
            # job, still queued, counts its entries in it).
            self._held_room(sub)[0],
            shared,
            sub.next_index,
        )
        if shared is None:
            self._snapshot_streams += 1
        else:
            job.reserved = None
            shared.unreserve()  # its LoadRead reads from it now
        job.index, job.log_time_ms, job.rest = read.index, read.log_time_ms, read
        if job.start:
            sub.next_index = job.index + 1  # the stream begins after the answer
            sub.seen_t = job.log_time_ms
            for later in sub.loads:
                if later is not job and 0 <= later.index < job.index:
                    # Read before the index the app now jumps to: it would show an older
                    # state than the app has seen. Read again when its turn comes.
                    self._unserve(later)
        # One job at a time builds frames (at the head of the queue, or a start answer): the
        # memory bound counts LOAD_BUILT_BYTES_MAX per subscriber.
        try:
            while job.rest is not None and job.built_bytes < heap.LOAD_BUILT_BYTES_MAX:
                data, _last = self._load_frame(sub, job)
                job.frames.append(data)
                job.built_bytes += len(data)
        finally:
            read.stop_prefetch()
        return True

    def _serve_behind(self, sub: Subscriber, start: heap.LoadJob) -> None:
        """The start answer's last frame is built: the LOADs queued behind it reserve its read,
        and each is read from it, at its index, when it reaches the head of the queue: right
        after it, no event in between (docs/virtual-heap.md 4.1, "A LOAD behind a held
        snapshot"). Read later, at a newer index, each waited for the events after the held
        snapshot, and an app slower than the log's retention got a held snapshot instead,
        again and again: its read never answered (review 21). Read all at once in this turn,
        each kept its LoadRead (a header per oid it names) until its frames went: 25 MB for
        one subscriber's 64 queued loads, outside the memory bound (review 31)."""
        assert start.rest is not None
        for job in sub.loads:
            if job is not start and job.index < 0 and job.reserved is None:
                start.rest.shared.reserve()
                job.reserved = start.rest.shared

    def _unserve(self, job: heap.LoadJob) -> None:
        """Forgets a served job's read (its reader slot, its built frames): it is read again
        when its turn comes. Only for a job none of whose frames was sent."""
        self._end_load(job)
        job.index, job.part, job.built_bytes = -1, 0, 0
        job.frames.clear()

    def _held_snapshot(self, sub: Subscriber) -> None:
        """Queues a held snapshot first (a partial subscriber behind the log, section 4.1).
        A LOAD served already waits for the events before its index, which are gone: none of
        its frames was sent, and it lets its reader slot go. Kept, the snapshot in front of it
        waited for a slot of its own, and with every slot held so, no subscriber ever moved
        again (review 20)."""
        for job in sub.loads:
            if job.index >= 0 or job.reserved is not None:
                self._unserve(job)
        sub.loads.appendleft(heap.LoadJob(0, (), start=True))

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
            if job.start:
                self._serve_behind(sub, job)
            self._end_load(job)
        return wire.encode(wire.FrameType.LOADED, sub.req_id, body), last

    def _end_load(self, job: heap.LoadJob) -> None:
        if job.reserved is not None:
            if job.reserved.leave():  # the last holder of the start answer's read: a slot is free
                self._snapshot_streams -= 1
            job.reserved = None
        if job.rest is not None:
            if job.rest.close():  # the last reader of its (maybe shared) read: a slot is free
                self._snapshot_streams -= 1
            job.rest = None

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
                held.collected(oid, event[0])  # after the event that tells the app
            index, seen_t = event[0] + 1, event[6]
            if len(items) >= self.config.events_frame_entries_max:
                break
        self.counters["stream_events_sent"] += len(items)
        self.counters["stream_events_filtered"] += index - sub.next_index - len(items)
        sub.next_index, sub.seen_t = index, seen_t
        held.passed(index)  # read-again indexes the cursor passed no longer count (review31)
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
        sub.pending_frame = eventframes.frame_bytes(wire.FrameType.EVENTS, sub.req_id, body)
        sub.pending_next = max(sub.next_index, to + 1)
        sub.sent_to, sub.sent_t = to, log_time_ms

    def held_entries(self) -> int:
        """Held-set entries over every partial subscriber (--held-entries-max bounds it)."""
        return sum(len(s.held) for s in self._subscribers.values() if s.held is not None)


def _queued(sub: Subscriber) -> int:
    """Held-set entries the subscriber's loads not yet served may add (their upper bound): what
    each names that was not held, and what it names that was, if a DROP came since."""
    if sub.held is None:
        return 0
    return sum(
        job.asked + (job.held_named if job.raced_drop else 0) for job in sub.loads if job.index < 0
    )


def _same(value: bytes) -> bytes:
    return value
