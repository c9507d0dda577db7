"""Reading a node's per-key records (format 3, agent/records.py) in any transaction: for
snapshots, inspection, GC's mark and the state machine's own reads.

`materialize` builds a whole node in the form of data model 1 (codec.encode_record's
contents): O(node), for the app snapshot until its per-key frames exist, tests and node_json;
`NodeSample` reads only a node's head (inspection); `lookup` one key or index.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import lmdb
from superstatic_agent import records as rec
from superstatic_agent.listtree import ListHeader, ListTree
from superstatic_agent.records import EntryRec, Header, RecordInvalid
from superstatic_agent.sealed import record_get, unseal

from superstatic.protocol import codec, keynorm

if TYPE_CHECKING:
    from superstatic_agent.storage import Dbs


def decode_own(db: str, key: bytes, data: bytes) -> Any:
    """A record this agent wrote (the seal verified it): shape only, values unchecked."""
    try:
        if db == "entries":
            if rec.entry_key_hashed(key):
                return rec.decode_bucket(key, data, checked=False)
            return rec.decode_entry(key, data, checked=False)
        if db == "nodes":
            return rec.decode_header(key, data, checked=False)
        if db == "oids":
            return rec.decode_nid(key, data)
    except RecordInvalid as exc:
        # Not an outcome: every replica wrote the same bytes, so this one is damaged (or the
        # code has a bug). The apply path turns it into ApplyFailed and halts.
        raise AssertionError(str(exc)) from None
    return bytes(data)  # order (an ekey), chunks (listtree decodes), tombs (empty)


class ReadChunks:
    """A read-only ChunkStore over a transaction (snapshots, inspection, GC's mark)."""

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs, nid: int) -> None:
        self.txn = txn
        self.dbs = dbs
        self.nid = nid

    def get(self, chunk_id: int) -> bytes | None:
        return record_get(self.txn, self.dbs.chunks, "chunks", rec.chunk_key(self.nid, chunk_id))

    def put(self, chunk_id: int, data: bytes) -> None:
        raise AssertionError("a read-only chunk store")

    def delete(self, chunk_id: int) -> None:
        raise AssertionError("a read-only chunk store")


def scan(txn: lmdb.Transaction, db: Any, name: str, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
    """(key, decoded value) of every record of `db` whose key starts with `prefix`."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key, raw in cursor:
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key, decode_own(name, key, unseal(name, key, raw))


def scan_keys(txn: lmdb.Transaction, db: Any, prefix: bytes) -> list[bytes]:
    """Every key of `db` starting with `prefix` (for deleting a node's records)."""
    out: list[bytes] = []
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return out
    for key in cursor.iternext(keys=True, values=False):
        key = bytes(key)
        if not key.startswith(prefix):
            break
        out.append(key)
    return out


def read_nid(txn: lmdb.Transaction, dbs: Dbs, oid: str) -> int | None:
    raw = record_get(txn, dbs.oids, "oids", rec.oid_key(oid))
    return None if raw is None else decode_own("oids", rec.oid_key(oid), raw)  # type: ignore[no-any-return]


def read_header(txn: lmdb.Transaction, dbs: Dbs, nid: int) -> Header:
    key = rec.nid_key(nid)
    raw = record_get(txn, dbs.nodes, "nodes", key)
    assert raw is not None, ("an oid without its header", nid)
    return decode_own("nodes", key, raw)  # type: ignore[no-any-return]


def stored_entries(txn: lmdb.Transaction, dbs: Dbs, nid: int) -> Iterator[tuple[bytes, EntryRec]]:
    """(ekey, entry) of every entry of a node, tombstones included, in entries-key order."""
    for key, value in scan(txn, dbs.entries, "entries", rec.entries_prefix(nid)):
        if rec.entry_key_hashed(key):
            yield from value
        else:
            yield rec.entry_key_ekey(key), value


def ordered_entries(txn: lmdb.Transaction, dbs: Dbs, nid: int) -> Iterator[tuple[Any, EntryRec]]:
    """(key, live entry) of a dict or object in insertion order: a scan of its order records.
    The key is the original one when it was kept, else the decoded normal form."""
    for _key, ekey in scan(txn, dbs.order, "order", rec.nid_key(nid)):
        entry = entry_at(txn, dbs, nid, ekey)
        assert entry is not None and not entry.tomb, ("an order record without its entry", nid)
        yield key_of(ekey, entry), entry


def entry_at(txn: lmdb.Transaction, dbs: Dbs, nid: int, ekey: bytes) -> EntryRec | None:
    key = rec.entry_key(nid, ekey)
    raw = record_get(txn, dbs.entries, "entries", key)
    if raw is None:
        return None
    value = decode_own("entries", key, raw)
    if not rec.entry_key_hashed(key):
        return value  # type: ignore[no-any-return]
    for item_ekey, entry in value:
        if item_ekey == ekey:
            return entry  # type: ignore[no-any-return]
    return None


def key_of(ekey: bytes, entry: EntryRec) -> Any:
    return entry.original if entry.original is not None else codec.loads(ekey)


def live_members(txn: lmdb.Transaction, dbs: Dbs, nid: int) -> Iterator[Any]:
    """The members of a set in its canonical order (entries-key order)."""
    for ekey, entry in stored_entries(txn, dbs, nid):
        if not entry.tomb:
            yield key_of(ekey, entry)


def materialize(txn: lmdb.Transaction, dbs: Dbs, oid: str) -> tuple[int, str, Any] | None:
    """(version, kind, contents) of a node in the v1 record form (codec.encode_record's
    contents): for the app snapshot of data model 1, inspection and tests. O(node)."""
    nid = read_nid(txn, dbs, oid)
    if nid is None:
        return None
    header = read_header(txn, dbs, nid)
    kind = header.kind
    contents: Any
    if kind == "list":
        tree = ListTree(ReadChunks(txn, dbs, nid), ListHeader.from_wire(header.extra))
        contents = list(tree.iter_values())
    elif kind == "set":
        contents = list(live_members(txn, dbs, nid))
    else:
        items = [[key, entry.value] for key, entry in ordered_entries(txn, dbs, nid)]
        contents = items if kind == "dict" else [header.extra, items]
    return header.version, kind, contents


class NodeSample:
    """The head of a node for inspection: its header and its first `items_max` items in the
    v1 contents form (dict/obj items in insertion order, list values, set members), read
    with O(items_max) records whatever the node's size. `bytes`: the records read."""

    __slots__ = ("bytes", "class_name", "contents", "count", "kind", "nid", "version")

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs, nid: int, items_max: int) -> None:
        header = read_header(txn, dbs, nid)
        self.nid = nid
        self.kind = header.kind
        self.version = header.version
        self.count = header.count
        self.class_name = header.extra if header.kind == "obj" else None
        self.bytes = len(header.encode())
        contents: list[Any]
        if header.kind == "list":
            tree = ListTree(ReadChunks(txn, dbs, nid), ListHeader.from_wire(header.extra))
            contents = tree.slice(0, min(items_max, header.count))
        elif header.kind == "set":
            contents = list(islice(live_members(txn, dbs, nid), items_max))
        else:
            items = islice(ordered_entries(txn, dbs, nid), items_max)
            contents = [[key, entry.value] for key, entry in items]
        self.bytes += len(codec.dumps(contents))
        self.contents = contents


def lookup(txn: lmdb.Transaction, dbs: Dbs, nid: int, kind: str, key: Any) -> Any:
    """The (key as stored, value) of a dict item / attribute, or the value at a list index;
    None if there is none. O(1) records (O(height) for a list)."""
    if kind == "list":
        header = read_header(txn, dbs, nid)
        tree = ListTree(ReadChunks(txn, dbs, nid), ListHeader.from_wire(header.extra))
        return tree.get(key)
    try:
        ekey = keynorm.ekey(key)
    except keynorm.KeyRefused:
        return None
    entry = entry_at(txn, dbs, nid, ekey)
    if entry is None or entry.tomb:
        return None
    return key_of(ekey, entry), entry.value
