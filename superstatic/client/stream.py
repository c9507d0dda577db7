"""The subscription stream: SNAPSHOT and EVENTS frames fed into a replica in log order.

Pure (no sockets, no threads): `superstatic.client.connection` owns the socket and calls this
from its I/O thread. The stream from an agent is gapless (NOOP and CONF entries arrive as "noop"
events), so the feeder can check contiguity itself instead of trusting which subscription a frame
came from: an event at or below the replica's applied index is a duplicate (skipped), one right
after it is applied, and anything further ahead means entries were lost (a dropped frame, a
stale stream after a resubscription) and the connection must resubscribe from its applied index.

Snapshots come in format 2 (docs/data-model-v2.md section 5): a node header item, then runs of
its entries, possibly over many frames. The feeder checks each header and run (element by
element, never a whole record in one piece) and hands it on as it arrives: to the sink's own
builder if it has one (`snapshot_builder()`: the replica fills its nodes as runs arrive, so
the whole decoded snapshot is never held; objects/snapshot_load.py), else into whole node
records given to `load_snapshot` at the last frame. Either way the replica swaps the snapshot
in at once at the last frame.

A snapshot older than the replica is dropped rather than loaded: after a failover to an agent
that is behind, loading it would move the replica back in time, and a replica must only ever be
a growing prefix of the log. The events that follow such a snapshot are skipped until they pass
the replica's index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from superstatic.protocol import codec, wire
from superstatic.protocol.errors import Error, LimitExceeded, ProtocolError
from superstatic.protocol.wire import CLIENT_ID_CHARS_MAX

# Log indexes, seqs and stream positions are 64-bit (the agent's own bound).
_INT64_MAX = (1 << 63) - 1

# One snapshot is held in memory before it replaces the replica (it replaces everything at
# once, so a half-loaded snapshot is never visible). Bound what a peer can make this process
# hold: nodes, and elements (dict items, attributes, members, list values) over all of them.
# Each frame is bounded by wire.FRAME_BYTES_MAX besides.
SNAPSHOT_NODES_MAX = 20_000_000
SNAPSHOT_ELEMENTS_MAX = 100_000_000
# The SNAPSHOT format this library reads (per-key runs); an agent speaking data model 1 sent
# whole records and is refused at HELLO (client/connection.py).
SNAPSHOT_FMT = 2
_ITEM_NODE, _ITEM_ITEMS, _ITEM_MEMBERS, _ITEM_VALUES = 0, 1, 2, 3
_RUN_KINDS = {_ITEM_ITEMS: ("dict", "obj"), _ITEM_MEMBERS: ("set",), _ITEM_VALUES: ("list",)}
# Outcomes the state machine produces (architecture section 2); anything else is garbage.
OUTCOMES = frozenset({"ok", "conflict", "error", "dup", "noop", "session_expired"})
# An object id is `{client_id[:16]}.{n:x}` or a fixed name like "@roots"; generous bound.
OID_CHARS_MAX = 256

# [index, client, seq, outcome, body, collected, log_time_ms, heads]: log_time_ms is the
# entry's log time (leader-stamped, the same on every replica; docs/toolkit.md). An agent that
# predates it sends six fields: the feeder fills in 0 (replicas keep the max, so log time
# never goes back). heads: ((oid, kind, class name or None), ...) of the existing nodes the
# entry's ops reference (docs/virtual-heap.md section 3.2; () from agents before it): a full
# replica has no use for them, a partial one makes hollow nodes of them.
Event = tuple[
    int,
    "str | None",
    "int | None",
    str,
    "bytes | None",
    tuple[str, ...],
    int,
    "tuple[tuple[str, str, str | None], ...]",
]
# Node kinds a head may name.
HEAD_KINDS = frozenset({"dict", "list", "set", "obj"})
# (oid, version, kind, contents) of one node of a snapshot, contents in the shape of a node
# record's (codec.check_contents): dict [[key, value], ...], obj [class_name, [[attr, value],
# ...]], list and set [element, ...]; every element checked.
SnapshotNode = tuple[str, int, str, Any]


class SnapshotBuilder(Protocol):
    """Takes one snapshot's nodes as its frames arrive, each piece checked: `node` for each
    header (`extra`: an obj's class name, a list's length, else None), `run` for each run of
    elements of the node last started (a list the builder may keep), `finish` at the last frame
    (the snapshot replaces the sink's state). Dropped unfinished, it must leave the sink as it
    was."""

    def node(self, oid: str, version: int, kind: str, extra: Any) -> None: ...

    def run(self, elements: list[Any]) -> None: ...

    def finish(self, index: int) -> None: ...


class ReplicaSink(Protocol):
    """What the stream feeds (implemented by superstatic.objects.replica.Replica)."""

    applied_index: int

    def load_snapshot(self, index: int, nodes: Iterable[SnapshotNode]) -> None: ...

    # (A sink may have `snapshot_builder()`, a SnapshotBuilder for each SNAPSHOT: then the
    # feeder gives it the snapshot as it arrives and never calls load_snapshot.
    # A sink may also have `note_log_time(log_time_ms)`: called before the snapshot is loaded
    # with the log time at its index. A sink fed a filtered stream, StreamFeeder(filtered=
    # True), must have `advance(to, log_time_ms)`: called after each EVENTS frame's events
    # with the frame's "to" and "t", it moves applied_index to `to`: the entries in between
    # passed the agent's filter for no node the replica holds; docs/virtual-heap.md 4.4.)

    def apply_events(self, events: Sequence[Event]) -> None: ...


class Loaded:
    """A load's answer as assembled from its LOADED frames (docs/virtual-heap.md 2.2)."""

    __slots__ = ("absent", "heads", "index", "key_runs", "load", "nodes", "per_key")

    def __init__(self) -> None:
        self.index = 0
        self.load = 0
        self.nodes: list[SnapshotNode] = []
        self.heads: list[tuple[str, str, str | None]] = []
        self.absent: list[str] = []
        self.key_runs: list[tuple[str, list[Any], list[Any]]] = []
        self.per_key: list[str] = []


class _Records:
    """A SnapshotBuilder that assembles whole node records (SnapshotNode): a load's answer,
    and the snapshot of a sink without a builder of its own (given to its load_snapshot)."""

    __slots__ = ("nodes", "sink")

    def __init__(self, sink: ReplicaSink | None = None) -> None:
        self.nodes: list[SnapshotNode] = []
        self.sink = sink

    def node(self, oid: str, version: int, kind: str, extra: Any) -> None:
        self.nodes.append((oid, version, kind, [extra, []] if kind == "obj" else []))

    def run(self, elements: list[Any]) -> None:
        _oid, _version, kind, contents = self.nodes[-1]
        (contents[1] if kind == "obj" else contents).extend(elements)

    def finish(self, index: int) -> None:
        assert self.sink is not None
        self.sink.load_snapshot(index, self.nodes)


class StreamGap(Exception):
    """The stream skipped entries (or broke its own framing): resubscribe from applied_index."""


class ReplicaFailed(Error):
    """The replica could not apply what the agent sent. Its state may be half-changed, so the
    connection stops instead of resubscribing: a diverged replica must never serve reads."""


class StreamFeeder:
    """Assembles one subscription's frames and feeds the replica, in order, exactly once."""

    def __init__(self, sink: ReplicaSink, *, filtered: bool = False) -> None:
        self.sink = sink
        # A partial replica's stream (SUBSCRIBE "heap": "partial") carries only the events that
        # touch what it holds: its frames skip entries, and "to" says how far each one reaches.
        self.filtered = filtered
        self._loaded: Loaded | None = None
        # What the snapshot or load being received goes to, and its counts so far.
        self._builder: SnapshotBuilder = _Records()
        self._oids: set[str] = set()
        self._elements = 0
        # The node last started: (oid, kind, class name or None), and for a list the length
        # its header said and the values received.
        self._current: tuple[str, str, str | None] | None = None
        self._list_length: int | None = None
        self._list_values = 0
        self._next_part = 0
        self._snapshot_index: int | None = None
        # Frames fed so far: waiters read it as "the stream is still making progress" (a big
        # snapshot can take longer than any fixed wait while its parts keep arriving).
        self.frames = 0

    def begin(self) -> None:
        """A new subscription starts: a partly received snapshot is worthless now."""
        self._builder = _Records()
        self._oids = set()
        self._elements = 0
        self._current = None
        self._list_length = None
        self._next_part = 0
        self._snapshot_index = None
        self._loaded: Loaded | None = None

    @property
    def in_snapshot(self) -> bool:
        return self._snapshot_index is not None

    def feed_snapshot(self, body: dict[str, Any]) -> bool:
        """One SNAPSHOT frame. Returns True when a whole snapshot was loaded into the replica."""
        self.frames += 1
        if self.filtered:
            # A partial replica starts from a LOADED and holds only what it loaded: a snapshot
            # would swap in nodes off its eviction clock, uncounted (docs/virtual-heap.md 4.4).
            raise ProtocolError("SNAPSHOT on a partial replica's subscription (it starts LOADED)")
        index = _int(body, "index", "SNAPSHOT")
        part = _int(body, "part", "SNAPSHOT")
        last = body.get("last")
        if not isinstance(last, bool):
            raise ProtocolError("SNAPSHOT.last must be a boolean")
        if body.get("fmt") != SNAPSHOT_FMT:
            raise ProtocolError(f"SNAPSHOT.fmt must be {SNAPSHOT_FMT} (per-key runs)")
        items = body.get("items")
        if not isinstance(items, list):
            raise ProtocolError("SNAPSHOT.items must be an array of node headers and runs")
        if part != self._next_part or (part > 0 and index != self._snapshot_index):
            raise StreamGap(
                f"snapshot part {part} at index {index} arrived, expected part "
                f"{self._next_part} at index {self._snapshot_index}"
            )
        if part == 0:
            make_builder = getattr(self.sink, "snapshot_builder", None)
            self._builder = _Records(self.sink) if make_builder is None else make_builder()
        self._snapshot_index = index
        for item in items:
            self._item(item)
        self._next_part = part + 1
        if not last:
            return False
        self._end_node()
        builder = self._builder
        self.begin()
        if index < self.sink.applied_index:
            return False  # behind this replica (see the module doc): keep the newer state
        log_time_ms = body.get("log_time_ms", 0)
        if not isinstance(log_time_ms, int) or isinstance(log_time_ms, bool) or log_time_ms < 0:
            raise ProtocolError("SNAPSHOT.log_time_ms must be a non-negative integer")
        note_log_time = getattr(self.sink, "note_log_time", None)
        if note_log_time is not None:
            note_log_time(log_time_ms)
        try:
            builder.finish(index)
        except Exception as exc:
            raise ReplicaFailed(f"loading the snapshot at index {index} failed: {exc}") from exc
        assert self.sink.applied_index == index, (self.sink.applied_index, index)
        return True

    def feed_loaded(self, body: Any) -> Loaded | None:
        """One LOADED frame (a load's answer, or a partial subscription's first answer: `load`
        0), its items checked as a snapshot's are. At the last part the answer goes to the
        replica (`install`, or `load_held` for the subscription's own) and is returned."""
        self.frames += 1
        if not self.filtered:
            # Only a partial replica loads: a load answer on a full replica (no loader) would
            # leave hollow nodes in it, and filling one writes eviction fields its Node lacks.
            raise ProtocolError("LOADED on the subscription of a full replica (it never loads)")
        envelope = wire.parse_loaded(body)  # a FrameError is a ProtocolError
        if envelope.part != self._next_part or (
            envelope.part > 0 and envelope.index != self._snapshot_index
        ):
            raise StreamGap(
                f"LOADED part {envelope.part} at index {envelope.index} arrived, expected part "
                f"{self._next_part} at index {self._snapshot_index}"
            )
        loaded = self._loaded if envelope.part > 0 and self._loaded is not None else Loaded()
        if loaded is not self._loaded:
            self._builder = _Records()
        self._loaded = loaded
        for item in envelope.items:
            self._loaded_item(loaded, item)
        self._snapshot_index = envelope.index
        self._next_part = envelope.part + 1
        if not envelope.last:
            return None
        self._end_node()
        assert isinstance(self._builder, _Records)
        loaded.nodes = self._builder.nodes
        loaded.index = envelope.index
        loaded.load = envelope.load
        self.begin()
        self._loaded = None
        sink: Any = self.sink
        if envelope.load and envelope.index < self.sink.applied_index:
            return None  # an answer from before a resubscription: asked again since
        if envelope.load and envelope.index != self.sink.applied_index:
            raise StreamGap(
                f"a load answered at index {envelope.index} arrived at applied index "
                f"{self.sink.applied_index}: entries are missing"
            )
        if not envelope.load and envelope.index < self.sink.applied_index:
            raise ProtocolError(
                f"LOADED: the subscription starts at {envelope.index}, below the replica's "
                f"{self.sink.applied_index}"
            )
        args = (loaded.index, loaded.nodes, loaded.heads, loaded.absent, loaded.key_runs)
        try:
            if envelope.load:
                sink.install(*args, loaded.per_key)
            else:
                sink.load_held(*args, loaded.per_key, envelope.log_time_ms)
        except (ProtocolError, StreamGap):
            raise
        except Exception as exc:
            raise ReplicaFailed(f"installing a load at index {loaded.index} failed: {exc}") from exc
        return loaded

    def _loaded_item(self, loaded: Loaded, item: Any) -> None:
        if not isinstance(item, list) or not item or type(item[0]) is not int:
            raise ProtocolError("a LOADED item is a snapshot item, a head, absent or a key run")
        tag = item[0]
        if tag == _ITEM_NODE and len(item) == 6:
            # A per-key dict's header: extra null, its entry count 6th (docs/virtual-heap.md
            # 2.2); its keys come in key runs.
            oid = item[1]
            if (
                not isinstance(oid, str)
                or not 0 < len(oid) <= OID_CHARS_MAX
                or item[2] != "dict"
                or item[3] is not None
                or type(item[5]) is not int
            ):
                raise ProtocolError("a LOADED per-key header is [0, oid, 'dict', null, v, count]")
            self._end_node()
            loaded.per_key.append(oid)
        elif tag == wire.ITEM_HEAD:
            if (
                len(item) != 4
                or not isinstance(item[1], str)
                or not 0 < len(item[1]) <= OID_CHARS_MAX
                or item[2] not in HEAD_KINDS
                or (item[3] is not None if item[2] != "obj" else type(item[3]) is not str)
            ):
                raise ProtocolError("a LOADED head is [4, oid, kind, class name or null]")
            loaded.heads.append((item[1], item[2], item[3]))
        elif tag == wire.ITEM_ABSENT:
            if len(item) != 2 or not isinstance(item[1], str) or not item[1]:
                raise ProtocolError("a LOADED absent item is [5, oid]")
            loaded.absent.append(item[1])
        elif tag == wire.ITEM_KEY_RUN:
            if (
                len(item) != 4
                or not isinstance(item[1], str)
                or not 0 < len(item[1]) <= OID_CHARS_MAX
                or type(item[2]) is not bytes
                or type(item[3]) is not bytes
            ):
                raise ProtocolError("a LOADED key run is [6, oid, CBOR items, CBOR absent keys]")
            run = codec.loads(item[2])
            absent_keys = codec.loads(item[3])
            if type(run) is not list or type(absent_keys) is not list:
                raise ProtocolError(f"LOADED: a key run of object {item[1]} is not an array")
            what = f"LOADED object {item[1]}"
            codec.check_contents("dict", run, what)
            codec.check_contents("set", absent_keys, what)
            loaded.key_runs.append((item[1], run, absent_keys))
        else:
            self._item(item)

    def _item(self, item: Any) -> None:
        if not isinstance(item, list) or not item or type(item[0]) is not int:
            raise ProtocolError("a SNAPSHOT item is [0, oid, kind, extra, version] or a run")
        if item[0] == _ITEM_NODE:
            self._start_node(item)
            return
        kinds = _RUN_KINDS.get(item[0])
        if kinds is None or len(item) != 3 or type(item[2]) is not bytes:
            raise ProtocolError("a SNAPSHOT run is [1|2|3, oid, CBOR bytes of its elements]")
        current = self._current
        if current is None or item[1] != current[0] or current[1] not in kinds:
            raise ProtocolError("a SNAPSHOT run does not continue the node its header started")
        oid, kind, class_name = current
        # Decoded as whole node records were before format 2 (codec.decode_record): bounded by
        # the frame that carried it (FRAME_BYTES_MAX) and cbor2's depth limit, then checked
        # element by element. A per-run `codec.scan` would double the library's cost of a
        # snapshot of many small nodes (measured: docs/data-model-v2.md section 5).
        run = codec.loads(item[2])
        if type(run) is not list:
            raise ProtocolError(f"SNAPSHOT: a run of object {oid} is not an array")
        if self._list_length is not None:
            self._list_values += len(run)
            if self._list_values > self._list_length:
                raise ProtocolError(
                    f"SNAPSHOT object {oid}: more list values than its header's length "
                    f"{self._list_length}"
                )
        if self._elements + len(run) > SNAPSHOT_ELEMENTS_MAX:
            raise LimitExceeded(
                "SNAPSHOT_ELEMENTS_MAX",
                SNAPSHOT_ELEMENTS_MAX,
                self._elements + len(run),
                "elements in one snapshot",
            )
        what = f"SNAPSHOT object {oid}"
        codec.check_contents(kind, [class_name, run] if kind == "obj" else run, what)
        self._elements += len(run)
        try:
            self._builder.run(run)
        except Exception as exc:
            raise self._failed(exc) from exc

    def _start_node(self, item: list[Any]) -> None:
        self._end_node()
        if len(item) != 5:
            raise ProtocolError("a SNAPSHOT node header is [0, oid, kind, extra, version]")
        _tag, oid, kind, extra, version = item
        if not isinstance(oid, str) or not 0 < len(oid) <= OID_CHARS_MAX:
            raise ProtocolError(f"a SNAPSHOT object id is a string of 1..{OID_CHARS_MAX} chars")
        if type(version) is not int or version < 0:
            raise ProtocolError(f"SNAPSHOT object {oid}: the version is an integer >= 0")
        if oid in self._oids:
            raise ProtocolError(f"SNAPSHOT object {oid} appears twice")
        if len(self._oids) >= SNAPSHOT_NODES_MAX:
            raise LimitExceeded(
                "SNAPSHOT_NODES_MAX",
                SNAPSHOT_NODES_MAX,
                len(self._oids) + 1,
                "nodes in one snapshot",
            )
        if kind == "obj":
            if type(extra) is not str:
                raise ProtocolError(f"SNAPSHOT object {oid}: an obj header names its class")
        elif kind == "list":
            if type(extra) is not int or extra < 0:
                raise ProtocolError(f"SNAPSHOT object {oid}: a list header holds its length")
        elif kind in ("dict", "set"):
            if extra is not None:
                raise ProtocolError(f"SNAPSHOT object {oid}: a {kind} header's extra is null")
        else:
            raise ProtocolError(f"SNAPSHOT object {oid}: unknown node kind")
        self._oids.add(oid)
        self._current = (oid, kind, extra if kind == "obj" else None)
        self._list_length = extra if kind == "list" else None
        self._list_values = 0
        try:
            self._builder.node(oid, version, kind, extra)
        except Exception as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: Exception) -> ReplicaFailed:
        # The sink's builder refused what the checks let through: as a refused load_snapshot.
        return ReplicaFailed(f"loading the snapshot at index {self._snapshot_index} failed: {exc}")

    def _end_node(self) -> None:
        """The last node started is complete: a list must hold the length its header said."""
        if self._list_length is not None and self._list_values != self._list_length:
            assert self._current is not None
            raise ProtocolError(
                f"SNAPSHOT object {self._current[0]}: the list has {self._list_values} "
                f"values, its header said {self._list_length}"
            )
        self._list_length = None

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
        # "to": the last index the frame covers, "t": the log time there (agents before the
        # virtual heap send neither: the frame then reaches its last event).
        to = _int(body, "to", "EVENTS") if "to" in body else None
        log_time_ms = _int(body, "t", "EVENTS") if "t" in body else None
        if to is not None and events and events[-1][0] > to:
            raise ProtocolError("EVENTS.to is below the frame's last event")
        if self.filtered:
            return self._feed_filtered(events, to, log_time_ms)
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
        if gap is None and to is not None and to > applied:
            # An unfiltered stream holds every entry up to "to".
            gap = f"EVENTS reaches {to} but its events stop at {applied}: entries are missing"
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

    def _feed_filtered(self, events: list[Event], to: int | None, log_time_ms: int | None) -> bool:
        """A frame of a filtered stream: its events rise strictly but may skip entries (those
        the agent filtered out); the replica applies the new ones, then advances to "to"."""
        if to is None or log_time_ms is None:
            raise ProtocolError("EVENTS of a filtered stream must say how far they reach (to, t)")
        applied = self.sink.applied_index
        if to <= applied:
            return False  # an earlier delivery: all of it is in the replica already
        batch: list[Event] = []
        previous = 0
        for event in events:
            index = event[0]
            if index <= previous:
                raise StreamGap("EVENTS of a filtered stream must rise strictly")
            previous = index
            if index > applied:
                batch.append(event)
        try:
            if batch:
                self.sink.apply_events(batch)
            self.sink.advance(to, log_time_ms)  # type: ignore[attr-defined]
        except Exception as exc:
            raise ReplicaFailed(f"applying log entries {applied + 1}..{to} failed: {exc}") from exc
        assert self.sink.applied_index == to, (self.sink.applied_index, to)
        return True


def _int(body: dict[str, Any], key: str, frame: str) -> int:
    value = body.get(key)
    # Never formatted: an agent's value may be anything (an int of 10,000 digits cannot even
    # be printed); codec.describe says its type and size.
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        raise ProtocolError(
            f"{frame}.{key} must be an integer in 0..2**63-1, got {codec.describe(value)}"
        )
    return value


def _event(item: Any) -> Event:
    """One event of an EVENTS frame, checked. Nearly every event (a write's, collecting nothing,
    naming no heads) is checked inline; anything else, refusals included, by _event_checked."""
    if type(item) is list and len(item) == 8:
        index, client, seq, outcome, body, collected, log_time_ms, heads = item
        if (
            type(index) is int
            and 1 <= index <= _INT64_MAX
            and (client is None or (type(client) is str and len(client) <= CLIENT_ID_CHARS_MAX))
            and (seq is None or type(seq) is int)
            and type(outcome) is str
            and outcome in OUTCOMES
            and (body is None or type(body) is bytes)
            and type(collected) is list
            and not collected
            and type(log_time_ms) is int
            and log_time_ms >= 0
            and type(heads) is list
            and not heads
        ):
            return (index, client, seq, outcome, body, (), log_time_ms, ())
    return _event_checked(item)


def _event_checked(item: Any) -> Event:
    """_event without its inline case (the reference its test compares it with)."""
    # 8 fields since the virtual heap's heads (docs/virtual-heap.md section 3.2): a full
    # replica holds every node, so it has no use for them; 6 and 7 from older agents.
    if not isinstance(item, list) or len(item) not in (6, 7, 8):
        raise ProtocolError(
            "an EVENTS entry must be [index, client, seq, outcome, body, collected, log_time_ms,"
            " heads]"
        )
    index, client, seq, outcome, body, collected = item[:6]
    log_time_ms = item[6] if len(item) >= 7 else 0
    if type(index) is not int or not 1 <= index <= _INT64_MAX:
        raise ProtocolError(
            f"event index must be an integer in 1..2**63-1, got {codec.describe(index)}"
        )
    if client is not None and (not isinstance(client, str) or len(client) > CLIENT_ID_CHARS_MAX):
        raise ProtocolError(f"event {index}: client must be a short string or null")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ProtocolError(f"event {index}: seq must be an integer or null")
    if type(outcome) is not str or outcome not in OUTCOMES:
        raise ProtocolError(f"event {index}: unknown outcome ({codec.describe(outcome)})")
    if body is not None and not isinstance(body, bytes):
        raise ProtocolError(f"event {index}: body must be bytes or null")
    # Nearly every event collects nothing: the emptiness test spares a generator per event
    # (a few percent of an app's CPU per write, docs/data-model-v2.md 8.5).
    if not isinstance(collected, list) or (
        collected
        and not all(isinstance(oid, str) and 0 < len(oid) <= OID_CHARS_MAX for oid in collected)
    ):
        raise ProtocolError(f"event {index}: collected must be an array of object ids")
    if not isinstance(log_time_ms, int) or isinstance(log_time_ms, bool) or log_time_ms < 0:
        raise ProtocolError(f"event {index}: log_time_ms must be a non-negative integer")
    heads = _heads(index, item[7]) if len(item) == 8 else ()
    return (index, client, seq, outcome, body, tuple(collected), log_time_ms, heads)


def _heads(index: int, raw: Any) -> tuple[tuple[str, str, str | None], ...]:
    """An event's heads, each checked: [oid, kind, class name (an obj's) or null]."""
    if type(raw) is not list:
        raise ProtocolError(f"event {index}: heads must be an array")
    out = []
    for head in raw:
        if (
            type(head) is not list
            or len(head) != 3
            or type(head[0]) is not str
            or not 0 < len(head[0]) <= OID_CHARS_MAX
            or type(head[1]) is not str
            or head[1] not in HEAD_KINDS
            or (head[2] is not None if head[1] != "obj" else type(head[2]) is not str)
        ):
            raise ProtocolError(
                f"event {index}: a head must be [oid, kind, class name or null], got "
                f"{codec.describe(head)}"
            )
        out.append((head[0], head[1], head[2]))
    return tuple(out)
