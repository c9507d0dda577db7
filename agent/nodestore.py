"""Per-key access to the node dbs of format 3 (agent/records.py) inside one LMDB transaction.

`NodeView` is what the state machine applies a transaction body through: reads go to the
body's own pending writes first, then to a bounded cache of decoded records, then to LMDB;
writes stay pending until `commit()` puts them into the write transaction (or `discard()`
forgets them: a rejected body changes nothing). So a body that fails half way needs no undo,
and a write costs the records it changes.

`RecordCache` holds decoded records (headers, oid -> nid, hot entries) across apply batches,
bounded by the bytes of the records it stands for (`cache_bytes_max`, oldest dropped first).
It is only valid while it mirrors the store: the state machine clears it whenever the store may
have changed behind it (a batch starting at another applied index: a snapshot installed, a
write transaction aborted; a collection).

The read-only helpers at the end (`node_entries`, `materialize`) walk a node's records in a
read transaction: for snapshots, inspection and GC's mark.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import lmdb
from superstatic_agent import records as rec
from superstatic_agent.noderead import decode_own, scan
from superstatic_agent.records import EntryRec, Header
from superstatic_agent.sealed import record_get, record_put
from superstatic_agent.storage import Dbs

# Decoded records a cache entry costs beyond its record's bytes (the Python objects around it).
CACHE_ITEM_OVERHEAD_BYTES = 200

_ABSENT = object()


class RecordCache:
    """Decoded records by (db, key), bounded by bytes; see the module docstring."""

    def __init__(self, cache_bytes_max: int) -> None:
        assert cache_bytes_max >= 0, cache_bytes_max
        self.cache_bytes_max = cache_bytes_max
        # Oldest first. An OrderedDict, not a dict: dropping a plain dict's oldest item with
        # next(iter(d)) walks over the slots of every item dropped before it until the dict is
        # rebuilt, so a full cache cost O(items) per put (37% of a catching-up agent's time).
        self._items: OrderedDict[tuple[str, bytes], tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def get(self, db: str, key: bytes) -> Any:
        item = self._items.get((db, key))
        return _ABSENT if item is None else item[0]

    def put(self, db: str, key: bytes, value: Any, size: int) -> None:
        cost = size + len(key) + CACHE_ITEM_OVERHEAD_BYTES
        if cost > self.cache_bytes_max:
            self.drop(db, key)
            return
        old = self._items.pop((db, key), None)
        if old is not None:
            self._bytes -= old[1]
        self._items[(db, key)] = (value, cost)
        self._bytes += cost
        while self._bytes > self.cache_bytes_max:
            self._bytes -= self._items.popitem(last=False)[1][1]

    def drop(self, db: str, key: bytes) -> None:
        old = self._items.pop((db, key), None)
        if old is not None:
            self._bytes -= old[1]

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def _data(item: tuple[Any, bytes | None]) -> bytes:
    """A pending record's bytes (a header's encoded now: NodeView.put_header)."""
    value, data = item
    return value.encode() if data is None else data  # type: ignore[no-any-return]


class NodeView:
    """Reads and buffered writes of the node dbs within one transaction body."""

    def __init__(
        self,
        txn: lmdb.Transaction,
        dbs: Dbs,
        cache: RecordCache,
        batch: NodeView | None = None,
    ) -> None:
        self.txn = txn
        self.dbs = dbs
        self.cache = cache
        # (db, key) -> (decoded value, encoded bytes) or None for a delete.
        self.pending: dict[tuple[str, bytes], tuple[Any, bytes | None] | None] = {}
        self.puts = 0  # records written by commit() (tests count them)
        # The apply batch's view (docs/data-model-v2.md 8.10): a body's commit() hands its
        # writes to it, and it puts them into LMDB once per batch (`commit()` of the batch
        # view), so a node every body of a batch writes (a dict's header) is encoded, sealed
        # and put once, not once per body. Reads see the batch's writes before LMDB.
        self.batch = batch
        # Of a batch view: the records of nodes their body created (not cached: see
        # new_nids_from), and the dbs with writes held.
        self._fresh: set[tuple[str, bytes]] = set()
        self.dbs_held: set[str] = set()
        # Nids from this one on are nodes the body creates (the state machine sets it): their
        # records are written but not cached. A bulk load (or a follower replaying one) would
        # otherwise fill the cache with records nobody reads again, evicting the hot ones and
        # holding the cache's full bound of heap (docs/performance.md, "Catch-up after the
        # cache fix").
        self.new_nids_from: int | None = None

    def _handle(self, db: str) -> Any:
        return getattr(self.dbs, db)

    def get(self, db: str, key: bytes) -> Any:
        """The decoded record, or None if absent."""
        pending = self.pending.get((db, key), _ABSENT)
        if pending is _ABSENT and self.batch is not None:
            pending = self.batch.pending.get((db, key), _ABSENT)
        if pending is not _ABSENT:
            return None if pending is None else pending[0]  # type: ignore[index]
        cached = self.cache.get(db, key)
        if cached is not _ABSENT:
            return cached
        raw = record_get(self.txn, self._handle(db), db, key)
        if raw is None:
            return None
        value = decode_own(db, key, raw)
        self.cache.put(db, key, value, len(raw))
        return value

    def stored_size(self, db: str, key: bytes) -> int:
        """Bytes of the record as the bodies before this one left it (0: absent): in LMDB,
        or held by the batch view; this view's own pending writes are ignored."""
        if self.batch is not None:
            held = self.batch.pending.get((db, key), _ABSENT)
            if held is not _ABSENT:
                return 0 if held is None else len(_data(held))  # type: ignore[arg-type]
        raw = self.txn.get(key, db=self._handle(db))
        return 0 if raw is None else len(raw) - 4

    def put(self, db: str, key: bytes, value: Any, data: bytes | None) -> None:
        """`data`: the record's bytes; None for a header, encoded from `value` when put."""
        self.pending[(db, key)] = (value, data)

    def delete(self, db: str, key: bytes) -> None:
        self.pending[(db, key)] = None

    def exists(self, db: str, key: bytes) -> bool:
        return self.get(db, key) is not None

    def pending_under(self, db: str, prefix: bytes) -> dict[bytes, Any]:
        """Pending writes of `db` whose key starts with `prefix`: key -> value (None: deleted)."""
        out: dict[bytes, Any] = {}
        for (name, key), item in self.pending.items():
            if name == db and key.startswith(prefix):
                out[key] = None if item is None else item[0]
        return out

    def commit(self) -> None:
        """A body's view with a batch view: hands its pending writes to it (the batch view
        puts them). Otherwise puts the pending writes into the write transaction, in key order
        per db. The records of nodes created here have keys past every stored one (nids
        grow), so in key order they are appended (MDB_APPEND) and LMDB fills each page before
        the next. In the body's order they interleaved with keys inside the db, and each of
        those split a full page in the middle: pages were about 0.71 full, 0.96 now
        (data-model.md, "Measured"; test_new_nodes_records_fill_their_pages)."""
        batch = self.batch
        if batch is not None:
            held, fresh = batch.pending, batch._fresh
            for db_key, item in self.pending.items():
                held[db_key] = item
                if item is not None and self._created(db_key[0], db_key[1], item[0]):
                    fresh.add(db_key)
                else:
                    fresh.discard(db_key)
                batch.dbs_held.add(db_key[0])
            self.pending.clear()
            return
        fresh = self._fresh
        handles: dict[str, Any] = {}
        last: dict[str, bytes | None] = {}
        for db, key in sorted(self.pending):
            item = self.pending[(db, key)]
            handle = handles.get(db)
            if handle is None:
                handle = handles[db] = self._handle(db)
                cursor = self.txn.cursor(db=handle)
                last[db] = bytes(cursor.key()) if cursor.last() else None
            if item is None:
                self.txn.delete(key, db=handle)
                self.cache.drop(db, key)
                continue
            value = item[0]
            data = _data(item)
            end = last[db]
            if end is None or key > end:
                appended = record_put(self.txn, handle, key, data, append=True)
                assert appended, ("an append before the db's last key", db)
                last[db] = key
            else:
                record_put(self.txn, handle, key, data)
            if (db, key) in fresh or self._created(db, key, value):
                self.cache.drop(db, key)
            else:
                self.cache.put(db, key, value, len(data))
            self.puts += 1
        self.pending.clear()
        fresh.clear()
        self.dbs_held.clear()

    def _created(self, db: str, key: bytes, value: Any) -> bool:
        """Whether a record belongs to a node this body created."""
        first = self.new_nids_from
        if first is None or db == "tombs":
            return False
        nid = value if db == "oids" else rec.key_nid(key)
        return bool(nid >= first)

    def discard(self) -> None:
        self.pending.clear()
        self._fresh.clear()
        self.dbs_held.clear()

    # ------------------------------------------------------------ nodes and entries

    def nid(self, oid: str) -> int | None:
        return self.get("oids", rec.oid_key(oid))  # type: ignore[no-any-return]

    def header(self, nid: int) -> Header:
        header = self.get("nodes", rec.nid_key(nid))
        assert header is not None, ("an oid without its header", nid)
        return header  # type: ignore[no-any-return]

    def put_header(self, nid: int, header: Header) -> None:
        # Encoded when put into LMDB (`_data`): with a batch view, only the last body's
        # header of a node is (the body's header is a copy nobody changes after this).
        self.put("nodes", rec.nid_key(nid), header, None)

    def entry(self, nid: int, ekey: bytes) -> EntryRec | None:
        key = rec.entry_key(nid, ekey)
        value = self.get("entries", key)
        if value is None or not rec.entry_key_hashed(key):
            return value  # type: ignore[no-any-return]
        for item_ekey, entry in value:
            if item_ekey == ekey:
                return entry  # type: ignore[no-any-return]
        return None

    def put_entry(self, nid: int, ekey: bytes, entry: EntryRec) -> tuple[bytes, int]:
        """Writes an entry; (its record key, the record's bytes) for the size check."""
        key = rec.entry_key(nid, ekey)
        if not rec.entry_key_hashed(key):
            data = rec.encode_entry(entry)
            self.put("entries", key, entry, data)
            return key, len(data)
        items = [(e, x) for e, x in (self.get("entries", key) or []) if e != ekey]
        items.append((ekey, entry))
        items.sort(key=lambda item: item[0])
        data = rec.encode_bucket(items)
        self.put("entries", key, items, data)
        return key, len(data)

    def delete_entry(self, nid: int, ekey: bytes) -> None:
        key = rec.entry_key(nid, ekey)
        if not rec.entry_key_hashed(key):
            self.delete("entries", key)
            return
        items = [(e, x) for e, x in (self.get("entries", key) or []) if e != ekey]
        if items:
            self.put("entries", key, items, rec.encode_bucket(items))
        else:
            self.delete("entries", key)

    def node_entries(self, nid: int) -> list[tuple[bytes, EntryRec]]:
        """Every entry (live and tombstone) of a node, pending writes included, in entries-key
        order. O(entries of the node): for `clear`."""
        prefix = rec.entries_prefix(nid)
        merged: dict[bytes, Any] = {}
        for key, value in scan(self.txn, self.dbs.entries, "entries", prefix):
            merged[key] = value
        if self.batch is not None:
            merged.update(self.batch.pending_under("entries", prefix))
        merged.update(self.pending_under("entries", prefix))
        out: list[tuple[bytes, EntryRec]] = []
        for key in sorted(merged):
            value = merged[key]
            if value is None:
                continue
            if rec.entry_key_hashed(key):
                out.extend(value)
            else:
                out.append((rec.entry_key_ekey(key), value))
        return out


class ViewChunks:
    """The ChunkStore (agent/listtree.py) of one list node over a NodeView. `limit` is the
    record bound a chunk write must keep (record_bytes_max); a chunk already larger may be
    rewritten no larger. Over it: `on_oversize(size)` raises."""

    def __init__(self, view: NodeView, nid: int, limit: int, on_oversize: Any) -> None:
        self.view = view
        self.nid = nid
        self.limit = limit
        self.on_oversize = on_oversize

    def get(self, chunk_id: int) -> bytes | None:
        return self.view.get("chunks", rec.chunk_key(self.nid, chunk_id))  # type: ignore[no-any-return]

    def put(self, chunk_id: int, data: bytes) -> None:
        key = rec.chunk_key(self.nid, chunk_id)
        if len(data) > self.limit and len(data) > self.view.stored_size("chunks", key):
            self.on_oversize(len(data))
        self.view.put("chunks", key, bytes(data), bytes(data))

    def delete(self, chunk_id: int) -> None:
        self.view.delete("chunks", rec.chunk_key(self.nid, chunk_id))
