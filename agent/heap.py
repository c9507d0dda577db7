"""The virtual heap at the agent (docs/virtual-heap.md section 3): a LOAD's answer, read from
the store at one index.

A LOAD is answered with LOADED frames placed in the subscriber's stream (agent/streams.py puts
them after the events up to the answer's index `L`); this module only reads: a `LoadRead`
opens one LMDB read transaction, takes `L` (the applied index in it), holds what it answers
in the subscriber's held set (agent/heldset.py) at `L`, and yields the answer's item lists:
format-2 snapshot items (app_snapshot.py), dict headers and key runs (`[6, oid, run,
absent_keys]`), heads (`[4, oid, kind, extra]`: nodes the answer references but does not send)
and absent oids (`[5, oid]`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from superstatic_agent import app_snapshot
from superstatic_agent import records as layout
from superstatic_agent.config import LOAD_BUILT_BYTES_MAX as LOAD_BUILT_BYTES_MAX
from superstatic_agent.heldset import HeldSet
from superstatic_agent.noderead import entry_at, read_header, read_nid
from superstatic_agent.storage import Corrupt, read_applied

from superstatic.protocol import codec, wire

# LOADs queued on one subscriber (past it: busy). Each is answered in stream order.
SUBSCRIBER_LOADS_MAX = 64
# LOAD_BUILT_BYTES_MAX: in config.py (the memory bound counts it). A job reading past it keeps
# one of streams.SNAPSHOT_STREAMS_MAX reader slots until its last frame is built.
# A dict with more entries is held per key (section 4.3) and a list or set with more elements
# is large: prefetch never sends such a node whole (it stays a head).
LOAD_WHOLE_ENTRIES_MAX = 256
# Bytes a head or absent item is counted for beyond its strings (array head, tag, kind).
HEAD_ITEM_OVERHEAD_BYTES = 16
# The CBOR of a Ref starts with its tag's head (as in gc.py): an element without these bytes
# references nothing and is never decoded.
REF_TAG_HEAD = b"\xd9" + codec.TAG_REF.to_bytes(2, "big")
# The root table: always held per key (an app must never load 100,000 roots to read one).
ROOTS_OID = "@roots"
# Held nodes a start answer looks up between the items it yields: what it sends is cut into
# frames by bytes, and gone nodes (answered by a few bytes each, right after the nodes read
# with them) must not make one frame's read unbounded.
START_LOOKUPS_MAX = 1_024


class SharedRead:
    """One LMDB read transaction and the answers that read from it: the LOADs queued behind a
    start answer are read at its index, from its transaction (docs/virtual-heap.md 4.1, "A
    LOAD behind a held snapshot"). It holds one reader slot until its last reader leaves."""

    __slots__ = ("readers", "txn")

    def __init__(self, env: Any) -> None:
        self.txn = env.begin()
        self.readers = 0

    def join(self) -> Any:
        self.readers += 1
        return self.txn

    def reserve(self) -> None:
        """A load will read from it later: the transaction stays open until it has (its
        LoadRead joins, then `unreserve`) or lets it go (`leave`)."""
        self.readers += 1

    def unreserve(self) -> None:
        """The reserving load joined (it counts as a reader through its LoadRead now)."""
        assert self.readers > 1
        self.readers -= 1

    def leave(self) -> bool:
        """One reader is done; True if it was the last (the transaction ends: its slot is
        free)."""
        self.readers -= 1
        if self.readers:
            return False
        self.txn.abort()
        return True


@dataclass(slots=True)
class LoadJob:
    """One LOAD (or a subscription's first answer, `load` 0) queued on a subscriber."""

    load: int  # the LOAD's req_id (echoed in LOADED.load); 0: the subscription's own answer
    oids: tuple[str, ...]
    prefetch_bytes: int = 0
    start: bool = False  # the subscription's first answer: its stream begins after `index`
    # Per-key requests: (oid, ((ekey, key as the app sent it), ...)) (heldset.normalized_keys).
    keys: tuple[tuple[str, tuple[tuple[bytes, Any], ...]], ...] = ()
    whole: bool = False  # send the named dicts whole even if large (the app needs it all)
    asked: int = 0  # held-set entries it may add (counted against the limits while queued)
    # Entries it names that were held when it came (they add nothing), and whether a DROP
    # came since: then they count too while it is queued (it holds them again when served).
    held_named: int = 0
    raced_drop: bool = False
    index: int = -1  # L, once served (-1: queued)
    log_time_ms: int = 0
    part: int = 0
    frames: deque[bytes] = field(default_factory=deque)  # built, not yet sent
    built_bytes: int = 0
    rest: LoadRead | None = None  # frames still to read (holds a reader slot)
    # Queued behind a start answer whose last frame is built: it is read from that answer's
    # read (its index) when it reaches the head of the queue, and keeps the read open until
    # then (SharedRead.reserve). Read at once, every queued load's LoadRead was kept, outside
    # the memory bound (review 31).
    reserved: SharedRead | None = None


class LoadRead:
    """One LOAD's read of the store: its index, and its item lists as they are read.

    Opened in the turn the job is served, it takes what the subscriber will hold at once:
    `held` gets every requested node it sends whole, every requested key (present or absent)
    and every dict it sends only the header of, at the answer's index; prefetch adds nodes
    only until `stop_prefetch`, which the caller calls in that same turn. An oid named whole
    that is a dict of more than LOAD_WHOLE_ENTRIES_MAX entries (and `@roots`, always) gets
    its header only unless the LOAD says `whole` (docs/virtual-heap.md 4.3)."""

    def __init__(
        self,
        env: Any,
        dbs: Any,
        job: LoadJob,
        oids: tuple[str, ...],
        held: HeldSet,
        frame_bytes_max: int,
        room: int,
        shared: SharedRead | None = None,
        cursor: int = 0,
    ) -> None:
        """`room`: how many nodes prefetch may add (the held-set limits left). `shared`: the
        read to join (its index), else a new one. `cursor`: the next index the subscriber's
        stream sends (a node read again keeps a read-again index only if the stream has not
        passed this read's index: heldset.HeldSet.add)."""
        self._room = room
        self.shared = SharedRead(env) if shared is None else shared
        self._txn = self.shared.join()
        self._left = False  # left the shared read
        self.ended_read = False  # its leaving ended the shared read (its slot is free)
        try:
            self.index, _term, self.log_time_ms = read_applied(self._txn, dbs)
            self._again = cursor <= self.index
            self._dbs = dbs
            self._held = held
            self._restart = job.start  # the stream resumes after this answer
            self._prefetch_bytes = job.prefetch_bytes
            self._frame_bytes_max = frame_bytes_max
            # A dict, not a list: a start answer may name a million declared oids, all gone
            # (a list's membership test made that turn quadratic).
            self.absent: dict[str, None] = {}
            # A start answer's absent oids not yet sent (it sends them as it goes).
            self._absent_news: list[str] = []
            self._later_left = job.start
            self._answer: set[str] = set()
            self._queue: deque[tuple[int, layout.Header]] = deque()
            self._lead: list[list[Any]] = []  # dict headers sent without their entries
            self._keyed: deque[tuple[int, layout.Header, tuple[tuple[bytes, Any], ...]]] = deque()
            self._refs: dict[str, None] = {}  # referenced oids, in order of first sight
            self._sent_bytes = 0
            # A start answer reads what the subscriber holds as its frames are built, not in
            # the turn it is served: up to --subscriber-held-max nodes (a million lookups made
            # a turn of seconds, the leader's heartbeats with it). Its entries are held
            # already, and the events after its index wait for its last frame.
            self._later_oids: Iterator[str] = iter(tuple(held.since) if job.start else ())
            self._later_keys: Iterator[str] = iter(tuple(held.keys) if job.start else ())
            for oid in oids:
                self._request_whole(oid, job.whole)
            for oid, pairs in job.keys:
                self._request_keys(oid, pairs)
            self._prefetching = job.prefetch_bytes > 0
            self.frames = self._frames()
        except BaseException:
            self._leave()
            raise

    def _request_whole(self, oid: str, whole: bool) -> None:
        if oid in self._answer or oid in self.absent:
            return
        found = self._node(oid)
        if found is None:
            self._gone(oid)
            return
        self._answer.add(oid)
        header = found[1]
        if header.kind == "dict" and not whole and _per_key(oid, header):
            # Sent even if the subscriber holds the dict already (keys asked of it, or made by
            # it): the app waits for the oid it named, and only an item naming it answers it.
            # Skipped when held, the root table probe of an app that had asked a root's key
            # before the table existed went unanswered until its request timeout (docs/agent.md,
            # "Subscriptions").
            self._lead.append(_header_item(header))
            self._held.add_header(oid)
            return
        self._held.add(oid, self.index, self._restart, self._again)
        self._queue.append(found)

    def _request_keys(self, oid: str, pairs: tuple[tuple[bytes, Any], ...]) -> None:
        if oid in self.absent:
            return
        found = self._node(oid)
        if found is None:
            self._gone(oid)
            if oid == ROOTS_OID:
                # Never created yet: the keys stay held, so the entry that creates the root
                # table (a whole-node write) reaches the app (docs/virtual-heap.md 3.4).
                for ekey, _key in pairs:
                    self._held.add_key(oid, ekey, self.index, self._restart, self._again)
            return
        nid, header = found
        if header.kind != "dict":
            self._request_whole(oid, True)  # only dicts are held per key
            return
        if oid in self._held.since:
            # Held whole here, yet the app asks keys: the root table its creator's library
            # keeps per key (the table it created joined its held set here; its placeholder
            # stands for it there). Answered as a key run, which the held set already covers
            # (unanswered, the app waited out its request timeout).
            self._keyed.append((nid, header, pairs))
            return
        if oid not in self._held and oid not in self._answer:
            self._lead.append(_header_item(header))
        self._answer.add(oid)
        for ekey, _key in pairs:
            self._held.add_key(oid, ekey, self.index, self._restart, self._again)
        self._keyed.append((nid, header, pairs))

    def _gone(self, oid: str) -> None:
        self.absent[oid] = None
        if self._restart:
            self._absent_news.append(oid)
        if self._restart and oid != ROOTS_OID:
            # Collected since it was declared: answered absent, no longer held. The root
            # table's keys wait for its creation (_request_keys).
            self._held.discard(oid)

    def _next_held(self) -> bool:
        """A start answer: requests the next node it holds whole (False: none left). One
        dropped meanwhile is skipped: the app no longer wants it."""
        for oid in self._later_oids:
            if oid in self._held.since:
                self._request_whole(oid, True)
                return True
        self._later_left = False
        return False

    def _next_held_keys(self) -> bool:
        """A start answer: requests the held keys of the next dict held per key."""
        for oid in self._later_keys:
            keys = self._held.keys.get(oid)
            if keys is not None:
                self._request_keys(oid, tuple((ekey, codec.loads(ekey)) for ekey in keys))
                return True
        return False

    def stop_prefetch(self) -> None:
        self._prefetching = False

    def close(self) -> bool:
        """Ends the read; True if the shared read ended with it (its reader slot is free)."""
        self.frames.close()
        self._leave()  # a generator never started runs no finally
        return self.ended_read

    def _leave(self) -> None:
        if not self._left:
            self._left = True
            self.ended_read = self.shared.leave()

    def _node(self, oid: str) -> tuple[int, layout.Header] | None:
        try:
            nid = read_nid(self._txn, self._dbs, oid)
            return None if nid is None else (nid, read_header(self._txn, self._dbs, nid))
        except layout.RecordInvalid as exc:
            raise Corrupt(exc.db, exc.key) from exc

    def _frames(self) -> Iterator[tuple[list[list[Any]], bool]]:
        """(items, last) of each LOADED frame, the last one marked: dict headers and key runs
        first (their references can be prefetched), then whole nodes, then absent oids and
        heads."""
        try:
            pending: list[list[Any]] = []
            size = 0
            for item in self._items():
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
            self._leave()

    def _items(self) -> Iterator[list[Any]]:
        yield from self._lead_items()
        # Whole nodes as a snapshot cuts them (runs within a frame's bytes), packed again with
        # the items around them; a start answer's in rounds of START_LOOKUPS_MAX lookups.
        while True:
            for items in app_snapshot.snapshot_frames(self._nodes(), self._frame_bytes_max):
                yield from items
            yield from self._absent_sent()
            if not self._later_left:
                break
        yield from self._trailer()

    def _absent_sent(self) -> Iterator[list[Any]]:
        """A start answer's absent oids found since the last call, as items (the library
        takes items in any order between nodes)."""
        news, self._absent_news = self._absent_news, []
        for oid in news:
            yield [wire.ITEM_ABSENT, oid]

    def _lead_items(self) -> Iterator[list[Any]]:
        yield from self._lead
        while self._keyed or self._next_held_keys():
            yield from self._absent_sent()
            if not self._keyed:
                continue  # a held dict gone, or now held whole
            nid, header, pairs = self._keyed.popleft()
            run: list[bytes] = []
            run_bytes = 0
            absent: list[bytes] = []
            found: list[str] = []
            for ekey, key in pairs:
                entry = entry_at(self._txn, self._dbs, nid, ekey)
                if entry is None or entry.tomb:
                    absent.append(codec.dumps(key))
                    continue
                key_bytes = ekey if entry.original is None else codec.dumps(entry.original)
                element = app_snapshot.cbor_array([key_bytes, codec.dumps(entry.value)])
                if run and run_bytes + len(element) > self._frame_bytes_max:
                    yield [wire.ITEM_KEY_RUN, header.oid, app_snapshot.cbor_array(run), b"\x80"]
                    run, run_bytes = [], 0
                self._note_refs(element, True, found)
                run.append(element)
                run_bytes += len(element)
            runs = app_snapshot.cbor_array(run)
            yield [wire.ITEM_KEY_RUN, header.oid, runs, app_snapshot.cbor_array(absent)]
            self._found(found)

    def _nodes(self) -> Iterator[app_snapshot.SnapNode]:
        """The queued nodes (and prefetch's) whole; a start answer's next held nodes, up to
        START_LOOKUPS_MAX lookups (its frames go on with the next round)."""
        lookups = 0
        while self._queue or (lookups < START_LOOKUPS_MAX and self._next_held()):
            if not self._queue:
                lookups += 1
                continue  # a held node gone (answered absent)
            nid, header = self._queue.popleft()
            node = app_snapshot.node_of_store(self._txn, self._dbs, nid, header)
            found: list[str] = []
            yield app_snapshot.SnapNode(
                node.oid, node.kind, node.extra, node.version, self._scan(node, found)
            )
            # The node's elements were all consumed (snapshot_frames takes a node's elements
            # before the next node): its references are known.
            self._found(found)

    def _found(self, found: list[str]) -> None:
        for oid in found:
            if oid not in self._held:
                # A held node gets no head (the trailer checks again): not remembered, so a
                # held snapshot's memory does not grow with the held set's references.
                self._refs.setdefault(oid)
            if self._prefetching and self._sent_bytes < self._prefetch_bytes:
                self._prefetch(oid)

    def _scan(self, node: app_snapshot.SnapNode, found: list[str]) -> Iterator[bytes]:
        pairs = node.kind in ("dict", "obj")
        self._sent_bytes += len(node.oid) + app_snapshot.ITEM_OVERHEAD_BYTES
        for element in node.elements:
            self._note_refs(element, pairs, found)
            yield element

    def _note_refs(self, element: bytes, pairs: bool, found: list[str]) -> None:
        self._sent_bytes += len(element)
        if REF_TAG_HEAD in element:
            value = codec.loads(element)  # our own store's bytes, as the snapshot reads
            for part in value if pairs else (value,):
                found.extend(codec.refs_in(part))

    def _prefetch(self, oid: str) -> None:
        if oid in self._answer or oid in self._held or self._room <= 0:
            return
        found = self._node(oid)
        if found is None or found[1].count > LOAD_WHOLE_ENTRIES_MAX:
            return  # gone (answered absent below) or large: it stays a head
        self._room -= 1
        self._answer.add(oid)
        self._held.add(oid, self.index, self._restart, self._again)
        self._queue.append(found)

    def _trailer(self) -> Iterator[list[Any]]:
        if self._restart:
            yield from self._absent_sent()
        else:
            for oid in self.absent:
                yield [wire.ITEM_ABSENT, oid]
        for oid in self._refs:
            if oid in self._answer or oid in self._held:
                continue
            found = self._node(oid)
            if found is None:
                # A reference from a node that is itself garbage, to one collected first.
                yield [wire.ITEM_ABSENT, oid]
                continue
            header = found[1]
            yield [wire.ITEM_HEAD, oid, header.kind, header.extra if header.kind == "obj" else None]


def _per_key(oid: str, header: layout.Header) -> bool:
    """Whether a dict is held per key (docs/virtual-heap.md 4.3): the root table always, any
    other above LOAD_WHOLE_ENTRIES_MAX entries."""
    return oid == ROOTS_OID or header.count > LOAD_WHOLE_ENTRIES_MAX


def _header_item(header: layout.Header) -> list[Any]:
    """A per-key dict's header: extra null, and its entry count as a 6th element."""
    return [app_snapshot.ITEM_NODE, header.oid, "dict", None, header.version, header.count]


def _item_bytes(item: list[Any]) -> int:
    size = HEAD_ITEM_OVERHEAD_BYTES + len(item[1])
    for part in item[2:]:
        if type(part) is bytes or type(part) is str:
            size += len(part)
    return size
