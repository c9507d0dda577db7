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
from superstatic_agent.config import GC_COLLECTED_BYTES_MAX
from superstatic_agent.storage import record_get

from superstatic.protocol import codec

ROOTS_OID = "@roots"
# Nodes the object table may hold; creating more answers an error naming this limit, and the
# mark/sweep loops are bounded by it.
OBJECTS_MAX = 50_000_000


def refs_in_container(kind: str, container: Any) -> Iterator[str]:
    """Object ids a plain container (ops.container_from) references."""
    if kind in ("dict", "obj"):
        for key, value in container.items():
            yield from codec.refs_in(key)
            yield from codec.refs_in(value)
    else:
        for value in container:
            yield from codec.refs_in(value)


def dropped_refs(kind: str, container: Any, op: list[Any]) -> int:
    """How many references applying `op` to `container` removes (call BEFORE applying it).
    Only a trigger for collection, so it counts occurrences without deduplicating."""
    tag = op[0]
    count = 0
    if tag in ("set", "del") and kind in ("dict", "obj"):
        key = op[2]
        if key in container:
            count += sum(1 for _ in codec.refs_in(container[key]))
            if tag == "del":
                count += sum(1 for _ in codec.refs_in(key))
    elif tag == "clear":
        count += sum(1 for _ in refs_in_container(kind, container))
    elif tag == "splice" and kind == "list":
        for value in container[op[2] : op[3]]:
            count += sum(1 for _ in codec.refs_in(value))
    elif tag == "discard" and kind == "set":
        for value in op[2]:
            if value in container:
                count += sum(1 for _ in codec.refs_in(value))
    return count


def collect(
    txn: lmdb.Transaction, objects_db: Any, collected_bytes_max: int = GC_COLLECTED_BYTES_MAX
) -> tuple[list[str], int, int]:
    """Marks every node reachable from "@roots", deletes the rest, in key order, up to
    `collected_bytes_max` bytes of ids (they travel in one stream event). Returns (collected
    ids, nodes alive, unreachable nodes left for a later collection). Refs to ids that do not
    exist (cannot be written: apply checks) are ignored."""
    marked: set[str] = set()
    queue: deque[str] = deque()
    if txn.get(ROOTS_OID.encode(), db=objects_db) is not None:
        marked.add(ROOTS_OID)
        queue.append(ROOTS_OID)
    for _ in range(OBJECTS_MAX):
        if not queue:
            break
        oid = queue.popleft()
        raw = record_get(txn, objects_db, "objects", oid.encode())
        assert raw is not None, oid
        _version, kind, contents = codec.decode_record(raw)
        for target in codec.refs_in_contents(kind, contents):
            if target not in marked and txn.get(target.encode(), db=objects_db) is not None:
                marked.add(target)
                queue.append(target)
    assert not queue, "mark phase beyond OBJECTS_MAX"
    collected: list[str] = []
    collected_bytes = 0
    left = 0
    cursor = txn.cursor(db=objects_db)
    if cursor.first():
        for _ in range(OBJECTS_MAX + 1):
            oid = bytes(cursor.key()).decode()
            # The id's bytes in the event's CBOR: its text and a header (at most 3 bytes).
            oid_bytes = len(cursor.key()) + 3
            if oid in marked or collected_bytes + oid_bytes > collected_bytes_max:
                left += oid not in marked
                if not cursor.next():
                    break
            else:
                collected.append(oid)
                collected_bytes += oid_bytes
                # delete() moves to the next record; False once past the last one.
                if not cursor.delete() or not cursor.key():
                    break
    return collected, len(marked), left
