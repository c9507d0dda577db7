"""The virtual heap at the agent (docs/virtual-heap.md sections 3 and 4): a LOAD's answer read
from the store at one index, and each partial subscriber's held set.

A LOAD is answered with LOADED frames placed in the subscriber's stream (agent/streams.py puts
them after the events up to the answer's index `L`); this module only reads: `open_load` opens
one LMDB read transaction, takes `L` (the applied index in it) and yields the answer's item
lists, format-2 snapshot items (app_snapshot.py) plus heads (`[4, oid, kind, extra]`: nodes
the answer references but does not send) and absent oids (`[5, oid]`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from superstatic_agent import app_snapshot
from superstatic_agent import records as layout
from superstatic_agent.config import HELD_ENTRY_BYTES as HELD_ENTRY_BYTES
from superstatic_agent.config import LOAD_BUILT_BYTES_MAX as LOAD_BUILT_BYTES_MAX
from superstatic_agent.noderead import read_header, read_nid
from superstatic_agent.storage import Corrupt, Event, read_applied

from superstatic.protocol import codec, ops, wire

# LOADs queued on one subscriber (past it: busy). Each is answered in stream order.
SUBSCRIBER_LOADS_MAX = 64
# LOAD_BUILT_BYTES_MAX, HELD_ENTRY_BYTES: in config.py (the memory bound counts them). A job
# reading past LOAD_BUILT_BYTES_MAX keeps one of streams.SNAPSHOT_STREAMS_MAX reader slots.
# A dict with more entries is held per key (section 4.3) and a list or set with more elements
# is large: prefetch never sends such a node whole (it stays a head).
LOAD_WHOLE_ENTRIES_MAX = 256
# Bytes a head or absent item is counted for beyond its strings (array head, tag, kind).
HEAD_ITEM_OVERHEAD_BYTES = 16
# A partial subscriber whose events all fail its filter still gets an empty EVENTS frame (its
# applied index and log time move) once the cursor moved this many entries or this much log
# time past its last frame: the toolkit's leases are judged by log time, in steps of at most
# this, against lease lengths of seconds.
EVENTS_SKIP_ENTRIES_MAX = 4_096
EVENTS_SKIP_MS_MAX = 200
# Clients whose last transaction conflicted, remembered to send the "ok" that ends each run to
# every partial subscriber (objects/fairness.py needs runs to end); least recent forgotten.
CLIENT_OUTCOMES_MAX = 1_024
# The CBOR of a Ref starts with its tag's head (as in gc.py): an element without these bytes
# references nothing and is never decoded.
REF_TAG_HEAD = b"\xd9" + codec.TAG_REF.to_bytes(2, "big")


class HeldSet:
    """The nodes one partial subscriber holds, each with the index it is held since: an event
    at or below that index is already in what the app was sent (docs/virtual-heap.md 4.1)."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.since)

    def __contains__(self, oid: object) -> bool:
        return oid in self.since

    def add(self, oid: str, since: int) -> bool:
        """Holds `oid` from `since` on; True if it was not held before."""
        new = oid not in self.since
        self.since[oid] = since
        return new

    def discard(self, oid: str) -> bool:
        return self.since.pop(oid, None) is not None

    def passes(self, oid: str, index: int) -> bool:
        """Whether an event at `index` writing `oid` is news to the app."""
        since = self.since.get(oid)
        return since is not None and since < index


class EventWrites(NamedTuple):
    """What the filter needs of one event beyond the event: the nodes its ops write, those it
    creates, and (an "ok" ending its client's conflict run) the stub every partial subscriber
    gets when it does not get the event whole."""

    written: tuple[str, ...]
    created: tuple[str, ...]
    stub: bytes | None = None


def writes_of(event: Event) -> EventWrites:
    """An event read back from the log: its writes from its body (our own log's bytes)."""
    body = event[4]
    if body is None:
        return EventWrites((), ())
    wire_ops = ops.decode_body(body).ops
    written = tuple(dict.fromkeys(op[1] for op in wire_ops))
    return EventWrites(written, tuple(op[1] for op in wire_ops if op[0] == "new"))


def passes(event: Event, writes: EventWrites, held: HeldSet, client: str) -> bool:
    """Whether a partial subscriber gets the event whole (docs/virtual-heap.md section 4.2):
    its own, a "noop" (leader changes, CONF: the toolkit's Change.noops), a "conflict"
    (bodyless: the fairness tracker's runs), or one writing or collecting a node it held
    before the event."""
    index, event_client, _seq, outcome = event[:4]
    if outcome == "noop" or outcome == "conflict" or (client and event_client == client):
        return True
    for oid in writes.written:
        if held.passes(oid, index):
            return True
    return any(held.passes(oid, index) for oid in event[5])


@dataclass(slots=True)
class LoadJob:
    """One LOAD (or a subscription's first answer, `load` 0) queued on a subscriber."""

    load: int  # the LOAD's req_id (echoed in LOADED.load); 0: the subscription's own answer
    oids: tuple[str, ...]
    prefetch_bytes: int = 0
    start: bool = False  # the subscription's first answer: its stream begins after `index`
    index: int = -1  # L, once served (-1: queued)
    log_time_ms: int = 0
    part: int = 0
    frames: deque[bytes] = field(default_factory=deque)  # built, not yet sent
    built_bytes: int = 0
    rest: LoadRead | None = None  # frames still to read (holds a reader slot)


class LoadRead:
    """One LOAD's read of the store: its index, and its item lists as they are read. `whole`
    lists the nodes sent whole (the subscriber holds them from `index`); prefetch adds to it
    only until `stop_prefetch`, which the caller calls in the turn the read was opened so that
    every node it holds was added to the held set at the answer's index."""

    def __init__(
        self,
        env: Any,
        dbs: Any,
        oids: tuple[str, ...],
        prefetch_bytes: int,
        held: Callable[[str], bool],
        frame_bytes_max: int,
        room: int,
    ) -> None:
        """`room`: how many nodes prefetch may add (the held-set limits left)."""
        self._room = room
        self._txn = env.begin()
        try:
            self.index, _term, self.log_time_ms = read_applied(self._txn, dbs)
            self._dbs = dbs
            self._held = held
            self._prefetch_bytes = prefetch_bytes
            self._frame_bytes_max = frame_bytes_max
            self.whole: list[str] = []
            self._answer: set[str] = set()
            self._queue: deque[tuple[int, layout.Header]] = deque()
            self.absent: list[str] = []
            for oid in oids:
                if oid in self._answer or oid in self.absent:
                    continue
                found = self._node(oid)
                if found is None:
                    self.absent.append(oid)
                    continue
                self._answer.add(oid)
                self.whole.append(oid)
                self._queue.append(found)
            self._refs: dict[str, None] = {}  # referenced oids, in order of first sight
            self._sent_bytes = 0
            self._prefetching = prefetch_bytes > 0
            self.frames = self._frames()
        except BaseException:
            self._txn.abort()
            raise

    def stop_prefetch(self) -> None:
        self._prefetching = False

    def close(self) -> None:
        self.frames.close()
        self._txn.abort()  # a generator never started runs no finally; a second abort is a no-op

    def _node(self, oid: str) -> tuple[int, layout.Header] | None:
        try:
            nid = read_nid(self._txn, self._dbs, oid)
            return None if nid is None else (nid, read_header(self._txn, self._dbs, nid))
        except layout.RecordInvalid as exc:
            raise Corrupt(exc.db, exc.key) from exc

    def _frames(self) -> Iterator[tuple[list[list[Any]], bool]]:
        """(items, last) of each LOADED frame, the last one marked."""
        try:
            pending: list[list[Any]] | None = None
            for items in app_snapshot.snapshot_frames(self._nodes(), self._frame_bytes_max):
                if pending is not None:
                    yield pending, False
                pending = items
            assert pending is not None  # snapshot_frames yields at least one list
            size = sum(_item_bytes(item) for item in pending)
            for item in self._trailer():
                item_bytes = _item_bytes(item)
                if pending and size + item_bytes > self._frame_bytes_max:
                    yield pending, False
                    pending, size = [], 0
                pending.append(item)
                size += item_bytes
            yield pending, True
        except layout.RecordInvalid as exc:
            raise Corrupt(exc.db, exc.key) from exc
        finally:
            self._txn.abort()

    def _nodes(self) -> Iterator[app_snapshot.SnapNode]:
        while self._queue:
            nid, header = self._queue.popleft()
            node = app_snapshot.node_of_store(self._txn, self._dbs, nid, header)
            found: list[str] = []
            yield app_snapshot.SnapNode(
                node.oid, node.kind, node.extra, node.version, self._scan(node, found)
            )
            # The node's elements were all consumed (snapshot_frames takes a node's elements
            # before the next node): its references are known.
            for oid in found:
                self._refs.setdefault(oid)
                if self._prefetching and self._sent_bytes < self._prefetch_bytes:
                    self._prefetch(oid)

    def _scan(self, node: app_snapshot.SnapNode, found: list[str]) -> Iterator[bytes]:
        pairs = node.kind in ("dict", "obj")
        self._sent_bytes += len(node.oid) + app_snapshot.ITEM_OVERHEAD_BYTES
        for element in node.elements:
            self._sent_bytes += len(element)
            if REF_TAG_HEAD in element:
                value = codec.loads(element)  # our own store's bytes, as the snapshot reads
                for part in value if pairs else (value,):
                    found.extend(codec.refs_in(part))
            yield element

    def _prefetch(self, oid: str) -> None:
        if oid in self._answer or self._held(oid) or self._room <= 0:
            return
        found = self._node(oid)
        if found is None or found[1].count > LOAD_WHOLE_ENTRIES_MAX:
            return  # gone (answered absent below) or large: it stays a head
        self._room -= 1
        self._answer.add(oid)
        self.whole.append(oid)
        self._queue.append(found)

    def _trailer(self) -> Iterator[list[Any]]:
        for oid in self.absent:
            yield [wire.ITEM_ABSENT, oid]
        for oid in self._refs:
            if oid in self._answer or self._held(oid):
                continue
            found = self._node(oid)
            if found is None:
                # A reference from a node that is itself garbage, to one collected first.
                yield [wire.ITEM_ABSENT, oid]
                continue
            header = found[1]
            yield [wire.ITEM_HEAD, oid, header.kind, header.extra if header.kind == "obj" else None]


def _item_bytes(item: list[Any]) -> int:
    size = HEAD_ITEM_OVERHEAD_BYTES + len(item[1])
    for part in item[2:]:
        if type(part) is bytes or type(part) is str:
            size += len(part)
    return size
