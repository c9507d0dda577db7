"""Garbage collection of the object table: deterministic mark-sweep from the root table.

Runs inside the state machine's apply (same LMDB write transaction), so every replica collects
the same ids at the same log index; they travel with that entry's outcome so apps drop them too.

When: the state machine counts references dropped by ops (values overwritten, deleted, spliced
out, discarded, cleared: each drop makes its target a candidate) and nodes created since the
last collection (a node created and never attached is garbage nobody dropped). A collection
runs when their sum exceeds max(gc_threshold, nodes alive after the last collection): the
mark phase costs O(live nodes), so waiting for that much churn keeps GC amortized O(1) per op.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import lmdb
from superstatic_agent import records as rec
from superstatic_agent.config import GC_COLLECTED_BYTES_MAX
from superstatic_agent.listtree import ListHeader, ListTree
from superstatic_agent.noderead import ReadChunks, read_header, read_nid, scan_keys
from superstatic_agent.records import EntryRec
from superstatic_agent.sealed import unseal
from superstatic_agent.storage import Dbs, records

from superstatic.protocol import codec

ROOTS_OID = "@roots"
# Nodes the object table may hold; creating more answers an error naming this limit, and the
# mark/sweep loops are bounded by it.
OBJECTS_MAX = 50_000_000
# The CBOR of a Ref starts with its tag's head (0xd9 then 55802 as two bytes): an ekey without
# it holds no reference, so the mark never decodes it.
_REF_TAG_HEAD = b"\xd9" + codec.TAG_REF.to_bytes(2, "big")


def refs_in_entry(ekey: bytes, entry: EntryRec) -> Iterator[str]:
    """Object ids one live entry references: in its value and in its key."""
    yield from codec.refs_in(entry.value)
    if entry.original is not None:
        yield from codec.refs_in(entry.original)
    elif _REF_TAG_HEAD in ekey:
        yield from codec.refs_in(codec.loads(ekey))


def node_refs(txn: lmdb.Transaction, dbs: Dbs, nid: int) -> Iterator[str]:
    """Object ids a stored node references (its entries, or its list values). The entries
    are scanned first: a node that has any is a dict, object or set, whose header the mark
    then never decodes; only a node without entries (a list, or an empty node) is looked up."""
    prefix = rec.entries_prefix(nid)
    cursor = txn.cursor(db=dbs.entries)
    has_entries = False
    if cursor.set_range(prefix):
        for key, raw in cursor:
            key = bytes(key)
            if not key.startswith(prefix):
                break
            has_entries = True
            data = unseal("entries", key, raw)
            if rec.entry_key_hashed(key):
                for ekey, entry in rec.decode_bucket(key, data, checked=False):
                    if not entry.tomb:
                        yield from refs_in_entry(ekey, entry)
            elif _REF_TAG_HEAD in data or _REF_TAG_HEAD in key:
                # Only a record whose bytes hold the Ref tag's head can reference anything
                # (its value, its original key, its ekey): most records of a large store are
                # scalars, and decoding each at every mark was most of a collection's cost.
                entry = rec.decode_entry(key, data, checked=False)
                if not entry.tomb:
                    yield from refs_in_entry(rec.entry_key_ekey(key), entry)
    if has_entries:
        return
    header = read_header(txn, dbs, nid)
    if header.kind == "list":
        tree = ListTree(ReadChunks(txn, dbs, nid), ListHeader.from_wire(header.extra))
        for value in tree.iter_values():
            yield from codec.refs_in(value)


def delete_node(txn: lmdb.Transaction, dbs: Dbs, oid: str, nid: int) -> None:
    """Deletes every record of a node: oid, header, entries, order and chunks. Its tombs index
    records stay: the tombstone sweep drops each when its version passes the horizon (it
    finds no entry), so deleting a node costs its own records, not a scan of the tombs."""
    prefix = rec.nid_key(nid)
    for db in (dbs.entries, dbs.order, dbs.chunks):
        for key in scan_keys(txn, db, prefix):
            txn.delete(key, db=db)
    txn.delete(prefix, db=dbs.nodes)
    txn.delete(rec.oid_key(oid), db=dbs.oids)


def collect(
    txn: lmdb.Transaction, dbs: Dbs, collected_bytes_max: int = GC_COLLECTED_BYTES_MAX
) -> tuple[list[str], int, int]:
    """Marks every node reachable from "@roots", deletes the rest, in oid order, up to
    `collected_bytes_max` bytes of ids (they travel in one stream event). Returns (collected
    ids, nodes alive, unreachable nodes left for a later collection). Refs to ids that do not
    exist (cannot be written: apply checks) are ignored."""
    marked: set[str] = set()
    queue: deque[tuple[str, int]] = deque()
    roots = read_nid(txn, dbs, ROOTS_OID)
    if roots is not None:
        marked.add(ROOTS_OID)
        queue.append((ROOTS_OID, roots))
    for _ in range(OBJECTS_MAX):
        if not queue:
            break
        _oid, nid = queue.popleft()
        for target in node_refs(txn, dbs, nid):
            if target in marked:
                continue
            target_nid = read_nid(txn, dbs, target)
            if target_nid is not None:
                marked.add(target)
                queue.append((target, target_nid))
    assert not queue, "mark phase beyond OBJECTS_MAX"
    collected: list[tuple[str, int]] = []
    collected_bytes = 0
    left = 0
    for key, raw in records(txn, dbs.oids, "oids"):
        oid = key.decode()
        if oid in marked:
            continue
        # The id's bytes in the event's CBOR: its text and a header (at most 3 bytes).
        oid_bytes = len(key) + 3
        if collected_bytes + oid_bytes > collected_bytes_max:
            left += 1
            continue
        collected.append((oid, rec.decode_nid(key, raw)))
        collected_bytes += oid_bytes
    for oid, nid in collected:
        delete_node(txn, dbs, oid, nid)
    return [oid for oid, _nid in collected], len(marked), left


def value_refs(values: Any) -> int:
    """References held by an iterable of values (a drop count for the collection trigger)."""
    return sum(1 for value in values for _ in codec.refs_in(value))
