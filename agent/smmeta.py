"""The state machine's `sm_meta` scalars seen through one apply batch.

Every entry reads the applied index and log time, the session sweep's and the tombstone
sweep's due marks, and (a transaction) the next nid, the tombstone horizon and the collector's
counters, and writes several of them back. Read and written per entry, that was a record
lookup, a checksum and a CBOR decode or encode each time; here each key is decoded at its
first read in the batch and encoded once, by `flush()`, at the batch's end. Reads within the
batch see every earlier `put`, so the store (and every outcome) is the same however the
entries are cut into batches (tests/unit/test_apply_batches.py).

Values are the plain CBOR values the state machine stores (ints, and arrays of ints), held
as read or as put: arrays are handed out as tuples, which nothing can change in place.
"""

from __future__ import annotations

from typing import Any

import cbor2
import lmdb
from superstatic_agent.sealed import record_get, record_put

_UNREAD = object()
_ABSENT = object()


class SmMeta:
    """sm_meta through one write transaction; see the module docstring."""

    def __init__(self, txn: lmdb.Transaction, db: Any) -> None:
        self.txn = txn
        self.db = db
        self._held: dict[bytes, Any] = {}  # key -> value, or _ABSENT
        self._changed: set[bytes] = set()

    def get(self, key: bytes, default: Any = None) -> Any:
        """The decoded value at `key`, `default` if absent."""
        value = self._held.get(key, _UNREAD)
        if value is _UNREAD:
            raw = record_get(self.txn, self.db, "sm_meta", key)
            value = _ABSENT if raw is None else _frozen(cbor2.loads(raw))
            self._held[key] = value
        return default if value is _ABSENT else value

    def put(self, key: bytes, value: Any) -> None:
        self._held[key] = _frozen(value)
        self._changed.add(key)

    def flush(self) -> None:
        """Writes every key put since the last flush (its last value) into the transaction."""
        for key in sorted(self._changed):
            record_put(self.txn, self.db, key, cbor2.dumps(self._held[key]))
        self._changed.clear()


def _frozen(value: Any) -> Any:
    return tuple(value) if type(value) is list else value
