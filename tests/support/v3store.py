"""A format-3 store written record by record with agent/records.py's encoders: every kind
of node and record (dict with an original key, a long key in a bucket and a tombstone; set;
obj; a one-leaf list; sessions; sm_meta), for the snapshot tests."""

from __future__ import annotations

from typing import Any

import cbor2
import lmdb
from superstatic_agent import records as layout
from superstatic_agent.oidmarks import Mark, encode_mark
from superstatic_agent.sessions import Session, encode_session
from superstatic_agent.storage import KEY_APPLIED, record_put

from superstatic.protocol import codec
from superstatic.protocol.codec import Ref
from superstatic.protocol.keynorm import ekey

# What fill() stores, as an app sees it: {oid: (kind, contents in v1 record form)}.
LONG_KEY = "k" * 600
LONG_MEMBER = ("m" * 600,)
EXPECTED: dict[str, tuple[str, Any]] = {
    "@roots": ("dict", [["d", Ref("d")], ["s", Ref("s")], ["o", Ref("o")]]),
    "d": (
        "dict",
        [[f"key{pos}", (pos, "v" * (pos % 7))] for pos in range(390)]
        + [[1.0, "one"], [LONG_KEY, (1, 2)]],
    ),
    "s": ("set", [*range(50), 50.0, LONG_MEMBER]),
    "o": ("obj", ["Point", [["x", 1], ["y", Ref("d")]]]),
    "l": ("list", list(range(300))),
}


def fill(txn: lmdb.Transaction, dbs: Any) -> None:
    """A store of every kind of record: dict (with a long key, a tombstone and an original
    key), set, obj, list chunks, sessions, sm_meta."""
    put = record_put
    put(txn, dbs.sm_meta, KEY_APPLIED, cbor2.dumps([40, 2, 1_000]))
    put(txn, dbs.sm_meta, layout.KEY_NEXT_NID, cbor2.dumps(6))
    put(txn, dbs.sm_meta, layout.KEY_TOMB_HORIZON, cbor2.dumps(0))
    put(txn, dbs.sm_meta, b"gc", cbor2.dumps([0, 5, 0]))
    put(txn, dbs.sessions, b"app-1", encode_session(Session(900, 1, {3: (12, "ok", "")}, 7)))
    put(txn, dbs.oid_marks, b"app-1", encode_mark(Mark("app-1", 9, 5)))  # rules 3
    heads = {
        1: layout.Header("@roots", "dict", 30, 30, 3, None, 3),
        2: layout.Header("d", "dict", 39, 38, 400, None, 392),
        3: layout.Header("s", "set", 20, 20, 0, None, 52),
        4: layout.Header("o", "obj", 21, 21, 2, "Point", 2),
        5: layout.Header("l", "list", 22, 22, 0, [300, 1, 0, 2], 300),
    }
    for nid, head in heads.items():
        put(txn, dbs.oids, layout.oid_key(head.oid), layout.encode_nid(nid))
        put(txn, dbs.nodes, layout.nid_key(nid), head.encode())

    def item(nid: int, pos: int, key: Any, value: Any, original: Any = None) -> None:
        e = ekey(key)
        put(txn, dbs.entries, layout.entry_key(nid, e),
            layout.encode_entry(layout.EntryRec(30, pos, value, original)))  # fmt: skip
        put(txn, dbs.order, layout.order_key(nid, pos), e)

    for pos, (name, oid) in enumerate([("d", "d"), ("s", "s"), ("o", "o")]):
        item(1, pos, name, Ref(oid))
    for pos in range(390):
        item(2, pos, f"key{pos}", (pos, "v" * (pos % 7)))
    item(2, 390, 1, "one", original=1.0)
    long_ekey = ekey(LONG_KEY)
    bucket_key = layout.entry_key(2, long_ekey)
    assert layout.entry_key_hashed(bucket_key)
    put(txn, dbs.entries, bucket_key,
        layout.encode_bucket([(long_ekey, layout.EntryRec(31, 391, (1, 2), None))]))  # fmt: skip
    put(txn, dbs.order, layout.order_key(2, 391), long_ekey)
    gone = layout.entry_key(2, ekey("gone"))
    put(txn, dbs.entries, gone, layout.encode_entry(layout.EntryRec(38, tomb=True)))
    put(txn, dbs.tombs, layout.tomb_key(38, gone), b"")
    for member in range(50):
        put(txn, dbs.entries, layout.entry_key(3, ekey(member)),
            layout.encode_entry(layout.EntryRec(20)))  # fmt: skip
    put(txn, dbs.entries, layout.entry_key(3, ekey(50)),
        layout.encode_entry(layout.EntryRec(20, original=50.0)))  # fmt: skip
    long_member = ekey(LONG_MEMBER)
    put(txn, dbs.entries, layout.entry_key(3, long_member),
        layout.encode_bucket([(long_member, layout.EntryRec(20))]))  # fmt: skip
    item(4, 0, "x", 1)
    item(4, 1, "y", Ref("d"))
    put(txn, dbs.chunks, layout.chunk_key(5, 1), codec.dumps([0, 22, list(range(300))]))
