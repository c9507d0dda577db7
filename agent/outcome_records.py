"""The outcome record of an applied entry (db `outcomes`, storage.py): CBOR
`[outcome, [collected oid, ...], log_time_ms, [[oid, kind, class name or null], ...]]`.

Written for every entry, so written without `cbor2.dumps` of the whole array: cbor2 asks
`isinstance(x, collections.abc.Mapping)` of every list it writes, through
`ABCMeta.__instancecheck__` in Python (~0.3 us each), and this record is three lists, one more
per node the write's values reference (docs/data-model-v2.md 8.19). A CBOR array is its head
and then its items' bytes, each item's bytes its own, so the record is put together from parts
that are cbor2's bytes: the head with the outcome (one of a few strs), the collected list
(nearly always empty), the log time, and the heads list, whose bytes are kept per value of the
heads (nearly every write's heads are empty, or name the same few nodes). The same bytes as
`cbor2.dumps` of the array (tests/unit/test_outcome_records.py compares the two, and
test_apply_batches.py every record it stores).
"""

from __future__ import annotations

import cbor2

# Distinct heads values whose bytes are kept; past it the kept ones are forgotten at once (a
# bound, not a cache policy: a workload whose every write references other nodes gains nothing
# from keeping them).
HEADS_KEPT_MAX = 1024
# The largest heads value kept, in bytes of its CBOR: a few nodes' heads (tens of bytes each).
# A count alone bounds nothing: one value holds a head per existing node a body references (up
# to TXN_ITEMS_MAX), and 100 entries of 20,000 each kept 356 MiB (review 37). With this, what
# is kept is at most HEADS_KEPT_MAX * 256 bytes = 256 KiB of CBOR, and the keys' tuples and
# strs (at most 32 heads a value: ~20x that in Python objects, ~5 MiB); larger heads are
# encoded every time, as they were before this module.
HEADS_KEPT_BYTES_EACH_MAX = 256

# An empty array: the collected list of nearly every entry.
_EMPTY_ARRAY = b"\x80"

Head = tuple[str, str, str | None]


class OutcomeRecords:
    """Encodes outcome records, keeping the bytes of the small heads values it met (bounded
    in count, HEADS_KEPT_MAX, and in each value's bytes, HEADS_KEPT_BYTES_EACH_MAX)."""

    def __init__(self) -> None:
        # outcome -> the array's head (4 items: one byte) and the outcome's text.
        self._prefixes: dict[str, bytes] = {}
        # heads -> the bytes of [[oid, kind, class or null], ...]. The heads hold only str
        # (oids, kinds, class names) and None, whose equality is identity of value: equal
        # heads have the same bytes.
        self._heads: dict[tuple[Head, ...], bytes] = {}

    def encode(
        self, outcome: str, collected: tuple[str, ...], log_time_ms: int, heads: tuple[Head, ...]
    ) -> bytes:
        """`cbor2.dumps([outcome, list(collected), log_time_ms, [list(h) for h in heads]])`."""
        prefix = self._prefixes.get(outcome)
        if prefix is None:
            prefix = self._prefixes[outcome] = b"\x84" + cbor2.dumps(outcome)
        heads_bytes = self._heads.get(heads)
        if heads_bytes is None:
            heads_bytes = cbor2.dumps([list(head) for head in heads])
            if len(heads_bytes) <= HEADS_KEPT_BYTES_EACH_MAX:
                if len(self._heads) >= HEADS_KEPT_MAX:
                    self._heads.clear()
                self._heads[heads] = heads_bytes
        collected_bytes = cbor2.dumps(list(collected)) if collected else _EMPTY_ARRAY
        return b"".join((prefix, collected_bytes, cbor2.dumps(log_time_ms), heads_bytes))
