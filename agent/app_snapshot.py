"""SNAPSHOT frames to apps, format 2 (docs/data-model-v2.md section 5): per-key runs, so no
frame and no item ever holds a whole container.

A snapshot is a sequence of frame item lists. Items, in order:

* `[0, oid, kind, extra, version]` starts a node (`extra`: an obj's class name, a list's
  length, else null; `version`: the header version; since key-level reads the library keeps
  no node versions and ignores it: it stays for tools that watch the stream);
* `[1, oid, run]` dict items / obj attributes, `run` = CBOR `[[key, value], ...]`;
* `[2, oid, run]` set members, `run` = CBOR `[member, ...]`;
* `[3, oid, run]` list values in list order, `run` = CBOR `[value, ...]`.

A run is carried as a CBOR byte string, not as nested arrays of the frame: a frame may nest
only `wire.FRAME_DEPTH_MAX` (16) deep while a value may nest 200 deep, and the elements are
encoded once here from what the store holds. A node's runs continue over as many frames as it
needs; it is complete at the next `[0, ...]` item or at the frame marked last.

The producer is independent of the store's layout: it takes `SnapNode`s whose elements are
already CBOR-encoded (one complete item each), so the store's reader decides how they are read
(record by record for the per-key layout) and nothing here decodes them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from superstatic_agent import records as layout
from superstatic_agent.listtree import ListCorrupt, ListHeader, ListTree
from superstatic_agent.storage import Corrupt, read_applied, record_get, unseal

from superstatic.protocol import codec

FMT = 2
ITEM_NODE = 0
ITEM_ITEMS = 1  # dict items / obj attributes
ITEM_MEMBERS = 2  # set members
ITEM_VALUES = 3  # list values
RUN_TAGS = {"dict": ITEM_ITEMS, "obj": ITEM_ITEMS, "set": ITEM_MEMBERS, "list": ITEM_VALUES}
# Bytes counted for an item besides its oid and run (array heads, tags, the header's ints): an
# estimate that keeps frames near `frame_bytes_max`, not an exact size.
ITEM_OVERHEAD_BYTES = 32


@dataclass(frozen=True, slots=True)
class SnapNode:
    """One node as the store's reader gives it: its header and its elements, each one complete
    CBOR item (`[key, value]` for dicts and objs, the member or value otherwise), in the order
    the app rebuilds it (insertion order, canonical set order, list order)."""

    oid: str
    kind: str
    extra: Any
    version: int
    elements: Iterable[bytes]


def cbor_array(encoded: list[bytes]) -> bytes:
    """A definite-length CBOR array of already encoded items (canonical if they are)."""
    return array_head(len(encoded)) + b"".join(encoded)


def array_head(n: int) -> bytes:
    major = 0x80
    if n < 24:
        return bytes([major | n])
    if n < 1 << 8:
        return bytes([major | 24, n])
    if n < 1 << 16:
        return bytes([major | 25]) + n.to_bytes(2, "big")
    if n < 1 << 32:
        return bytes([major | 26]) + n.to_bytes(4, "big")
    return bytes([major | 27]) + n.to_bytes(8, "big")


def snapshot_frames(nodes: Iterable[SnapNode], frame_bytes_max: int) -> Iterator[list[list[Any]]]:
    """The item lists of a snapshot's frames, each about `frame_bytes_max` bytes (a single
    element larger than that makes a larger frame: one element per run at least). Always at
    least one (possibly empty) list, so an empty table still sends its last frame."""
    assert frame_bytes_max >= 1, frame_bytes_max
    try:
        yield from _frames(nodes, frame_bytes_max)
    finally:
        # Closing the frames closes the store's reader (it pins a read transaction).
        closer = getattr(nodes, "close", None)
        if closer is not None:
            closer()


def _frames(nodes: Iterable[SnapNode], frame_bytes_max: int) -> Iterator[list[list[Any]]]:
    items: list[list[Any]] = []
    size = 0
    for node in nodes:
        head_bytes = len(node.oid) + ITEM_OVERHEAD_BYTES
        if type(node.extra) is str:
            head_bytes += len(node.extra)
        if items and size + head_bytes > frame_bytes_max:
            yield items
            items, size = [], 0
        items.append([ITEM_NODE, node.oid, node.kind, node.extra, node.version])
        size += head_bytes
        tag = RUN_TAGS[node.kind]
        run_overhead = len(node.oid) + ITEM_OVERHEAD_BYTES
        run: list[bytes] = []
        run_bytes = 0
        for element in node.elements:
            if (items or run) and size + run_overhead + run_bytes + len(element) > frame_bytes_max:
                # The frame is full: close this node's run here, continue it in the next frame.
                if run:
                    items.append([tag, node.oid, cbor_array(run)])
                yield items
                items, size, run, run_bytes = [], 0, [], 0
            run.append(element)
            run_bytes += len(element)
        if run:
            items.append([tag, node.oid, cbor_array(run)])
            size += run_overhead + run_bytes
    yield items


def frame_body(
    index: int, part: int, last: bool, log_time_ms: int, items: list[list[Any]]
) -> dict[str, Any]:
    return {
        "index": index,
        "part": part,
        "last": last,
        "fmt": FMT,
        "items": items,
        "log_time_ms": log_time_ms,
    }


def nodes_of_records(records: Iterable[tuple[str, bytes]]) -> Iterator[SnapNode]:
    """SnapNodes of whole node records `[version, kind, contents]` (the format-2 store's
    `objects` db), each element encoded on its own."""
    try:
        for oid, record in records:
            # Stored records were validated when written (docs/data-model.md, "Apply").
            version, kind, contents = codec.loads(record)
            if kind == "obj":
                class_name, attrs = contents
                yield SnapNode(oid, kind, class_name, version, _encoded(attrs))
            elif kind == "list":
                yield SnapNode(oid, kind, len(contents), version, _encoded(contents))
            else:
                yield SnapNode(oid, kind, None, version, _encoded(contents))
    finally:
        closer = getattr(records, "close", None)
        if closer is not None:
            closer()


def _encoded(elements: list[Any]) -> Iterator[bytes]:
    for element in elements:
        yield codec.dumps(element)


# ---------------------------------------------------------------- the format-3 store's reader


def store_snapshot(env: Any, dbs: Any, frame_bytes_max: int) -> tuple[int, int, Iterator[Any]]:
    """(applied index, log time at it, the snapshot's frames) from ONE read transaction, which
    stays open until the frames are exhausted or closed (a subscriber dropped meanwhile). A
    record that is not our layout is damage like a bad checksum: `Corrupt`, never streamed."""
    txn = env.begin()
    try:
        applied, _term, log_time_ms = read_applied(txn, dbs)
    except BaseException:
        txn.abort()
        raise

    def nodes() -> Iterator[SnapNode]:
        try:
            yield from nodes_of_store(txn, dbs)
        except layout.RecordInvalid as exc:
            raise Corrupt(exc.db, exc.key) from exc
        finally:
            txn.abort()

    return applied, log_time_ms, snapshot_frames(nodes(), frame_bytes_max)


def nodes_of_store(txn: Any, dbs: Any) -> Iterator[SnapNode]:
    """SnapNodes of a format-3 store read from the caller's one read transaction, in nid
    order: each node's header, then its elements record by record (dict and obj entries in
    `order` order, set members in `entries` key order, list values leaf by leaf). Elements are
    assembled from the stored encodings (an ekey is already the CBOR of the key's normal form)
    and never a whole container at once. Corrupt / RecordInvalid propagate: a damaged store is
    never streamed."""
    # One cursor per db for the whole snapshot: nodes come in nid order and every record of a
    # node is nid-prefixed, so each scan continues near where the last one stopped (a node's
    # elements are consumed before the next node is read: snapshot_frames does so).
    order = _Scan(txn.cursor(db=dbs.order), "order")
    entries = _Scan(txn.cursor(db=dbs.entries), "entries")
    for key, raw in txn.cursor(db=dbs.nodes):
        key = bytes(key)
        header = layout.decode_header(key, unseal("nodes", key, raw), checked=False)
        yield _snap_node(txn, dbs, order, entries, layout.key_nid(key), header)


def node_of_store(txn: Any, dbs: Any, nid: int, header: layout.Header) -> SnapNode:
    """One node of a format-3 store as `nodes_of_store` gives it (its elements read lazily
    from the caller's read transaction): what a virtual-heap LOAD sends (agent/heap.py)."""
    order = _Scan(txn.cursor(db=dbs.order), "order")
    entries = _Scan(txn.cursor(db=dbs.entries), "entries")
    return _snap_node(txn, dbs, order, entries, nid, header)


def _snap_node(
    txn: Any, dbs: Any, order: _Scan, entries: _Scan, nid: int, header: layout.Header
) -> SnapNode:
    if header.kind == "list":
        extra: Any = header.extra[0]  # the length (the rest is the tree's shape)
        elements = _list_elements(txn, dbs, nid, header.extra)
    elif header.kind == "set":
        extra, elements = None, _set_elements(entries, nid)
    else:
        extra = header.extra  # the obj's class name, or None
        elements = _item_elements(txn, dbs, order, nid)
    return SnapNode(header.oid, header.kind, extra, header.version, elements)


class _Scan:
    """Prefix scans of one db through one cursor."""

    def __init__(self, cursor: Any, name: str) -> None:
        self.cursor, self.name = cursor, name

    def prefixed(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        cursor = self.cursor
        if not cursor.set_range(prefix):
            return
        for key, raw in cursor:
            key = bytes(key)
            if not key.startswith(prefix):
                return
            yield key, unseal(self.name, key, raw)


def _key_bytes(ekey: bytes, entry: layout.EntryRec) -> bytes:
    return ekey if entry.original is None else codec.dumps(entry.original)


def _item_elements(txn: Any, dbs: Any, order: _Scan, nid: int) -> Iterator[bytes]:
    for order_key, ekey in order.prefixed(layout.nid_key(nid)):
        key = layout.entry_key(nid, ekey)
        if not layout.entry_key_hashed(key):
            raw = record_get(txn, dbs.entries, "entries", key)
            value = None if raw is None else _live_value_bytes(raw)
            if value is not None:
                # The common entry [version, pos, value]: the key is its ekey and the value's
                # encoding is the record's tail; nothing is decoded or encoded again.
                yield _PAIR_HEAD + ekey + value
                continue
        entry = _entry(txn, dbs, nid, ekey, order_key)
        yield cbor_array([_key_bytes(ekey, entry), codec.dumps(entry.value)])


_PAIR_HEAD = b"\x82"  # a CBOR array of two items
_ENTRY_HEAD = 0x83  # [version, pos, value]: a live dict/obj entry without an original key


def _live_value_bytes(raw: bytes) -> bytes | None:
    """The value's encoding in a stored `[version, pos, value]` entry (two unsigned ints, then
    the value to the end), or None for any other form (tombstone, original key kept)."""
    if not raw or raw[0] != _ENTRY_HEAD:
        return None
    at = 1
    for _ in range(2):
        width = _UINT_WIDTHS.get(raw[at]) if at < len(raw) else None
        if width is None:
            return None
        at += width
    return raw[at:] if at < len(raw) else None


# Bytes taken by a CBOR unsigned int by its first byte (major type 0): inline below 24, else
# a head byte and 1, 2, 4 or 8 bytes.
_UINT_WIDTHS = {**{b: 1 for b in range(24)}, 24: 2, 25: 3, 26: 5, 27: 9}


def _entry(txn: Any, dbs: Any, nid: int, ekey: bytes, order_key: bytes) -> layout.EntryRec:
    key = layout.entry_key(nid, ekey)
    raw = record_get(txn, dbs.entries, "entries", key)
    found: layout.EntryRec | None = None
    if raw is not None and layout.entry_key_hashed(key):
        found = dict(layout.decode_bucket(key, raw, checked=False)).get(ekey)
    elif raw is not None:
        found = layout.decode_entry(key, raw, checked=False)
    if found is None or found.tomb:
        raise layout.RecordInvalid("order", order_key, "names no live entry")
    return found


def _set_elements(entries: _Scan, nid: int) -> Iterator[bytes]:
    for key, raw in entries.prefixed(layout.entries_prefix(nid)):
        if layout.entry_key_hashed(key):
            pairs = layout.decode_bucket(key, raw, checked=False)
        else:
            pairs = [(layout.entry_key_ekey(key), layout.decode_entry(key, raw, checked=False))]
        for ekey, entry in pairs:
            if not entry.tomb:
                yield _key_bytes(ekey, entry)


class _ReadChunks:
    """listtree's ChunkStore over a read transaction (reads only)."""

    def __init__(self, txn: Any, dbs: Any, nid: int) -> None:
        self.txn, self.dbs, self.nid = txn, dbs, nid

    def get(self, chunk_id: int) -> bytes | None:
        return record_get(self.txn, self.dbs.chunks, "chunks", layout.chunk_key(self.nid, chunk_id))

    def put(self, chunk_id: int, data: bytes) -> None:
        raise AssertionError("a snapshot only reads")

    def delete(self, chunk_id: int) -> None:
        raise AssertionError("a snapshot only reads")


def _list_elements(txn: Any, dbs: Any, nid: int, extra: Any) -> Iterator[bytes]:
    try:
        tree = ListTree(_ReadChunks(txn, dbs, nid), ListHeader.from_wire(extra))
        for value in tree.iter_values():
            yield codec.dumps(value)
    except ListCorrupt as exc:
        chunk = exc.chunk_id
        key = layout.chunk_key(nid, chunk) if chunk else layout.nid_key(nid)
        raise Corrupt("chunks" if chunk else "nodes", key) from exc
