"""records.check_records (a staged snapshot chunk's run of one db, validated at once) accepts
and refuses exactly as check_record on each record does, with the same first refusal, on
valid, random and mutated records of every node db; and it takes the common records without
the full check (else staging would silently cost what it did)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import records as rec
from superstatic_agent import snapshot_records as snap
from superstatic_agent.sealed import records as stored_records
from superstatic_agent.storage import DBS_MAX, open_dbs
from support.v3store import fill

from superstatic.protocol import codec
from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.keynorm import ekey

DBS = ("oids", "nodes", "entries", "order", "chunks", "tombs")


def outcome(check: Any) -> tuple[str, str] | None:
    try:
        check()
    except ProtocolError as exc:  # the type and message are what the comparison is about
        return type(exc).__name__, str(exc)
    return None


def one_by_one(db: str, records: list[tuple[bytes, bytes]]) -> None:
    for key, data in records:
        rec.check_record(db, key, data)


def assert_agrees(db: str, records: list[tuple[bytes, bytes]]) -> None:
    expected = outcome(lambda: one_by_one(db, records))
    assert outcome(lambda: rec.check_records(db, records)) == expected
    for key, data in records:  # and record by record
        single = [(key, data)]
        assert outcome(lambda s=single: rec.check_records(db, s)) == outcome(
            lambda s=single: one_by_one(db, s)
        )


def store_records(tmp_path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every node db's records of support.v3store's store (every kind of record)."""
    env = lmdb.open(str(tmp_path / "store"), max_dbs=DBS_MAX, map_size=64 << 20)
    try:
        dbs = open_dbs(env)
        with env.begin(write=True) as txn:
            fill(txn, dbs)
        with env.begin() as txn:
            return {name: list(stored_records(txn, getattr(dbs, name), name)) for name in DBS}
    finally:
        env.close()


def workload_records(count: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """The catch-up workload's records (a bucket dict of small dicts {"i": i, "name": ...}),
    as the state machine writes them."""
    out: dict[str, list[tuple[bytes, bytes]]] = {name: [] for name in DBS}
    for i in range(count):
        nid = 100 + i
        oid = f"c.o{i}"
        out["oids"].append((rec.oid_key(oid), rec.encode_nid(nid)))
        header = rec.Header(oid, "dict", 7 + i, 7 + i, 2, None, 2)
        out["nodes"].append((rec.nid_key(nid), header.encode()))
        for pos, (key, value) in enumerate([("i", i), ("name", f"object {i}")]):
            entry = rec.EntryRec(7 + i, pos, value)
            out["entries"].append((rec.entry_key(nid, ekey(key)), rec.encode_entry(entry)))
            out["order"].append((rec.order_key(nid, pos), ekey(key)))
        bucket_item = rec.EntryRec(300 + i, i, codec.Ref(oid))
        out["entries"].append((rec.entry_key(2, ekey(f"o{i}")), rec.encode_entry(bucket_item)))
        out["entries"].append((rec.entry_key(3, ekey(i)), rec.encode_entry(rec.EntryRec(5))))
        obj = rec.Header(f"c.p{i}", "obj", 9, 9, 1, "P", 1)
        out["nodes"].append((rec.nid_key(100_000 + i), obj.encode()))
        out["tombs"].append((rec.tomb_key(i, rec.entry_key(nid, ekey("gone"))), b""))
    return out


# -- random and mutated records ---------------------------------------------------------------

BOUNDARY_INTS = [0, 1, 2, 23, 24, 255, 256, rec.INT64_MAX, rec.INT64_MAX + 1, -1, 2**64]
ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-5, 1000))
oids = st.one_of(
    st.sampled_from(["", "c.o1", "x" * 128, "x" * 129, "é", "é" * 128]), st.text(max_size=5)
)
fields = st.one_of(
    ints,
    st.none(),
    st.booleans(),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.sampled_from(["dict", "set", "obj", "list", "tree", "x"]),
    st.builds(codec.Ref, st.sampled_from(["c.o1", "x" * 128, "x" * 129])),
    st.lists(ints, max_size=5),
    st.lists(ints, max_size=3).map(tuple),
    st.frozensets(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), ints, max_size=1),
)
headers = st.tuples(
    oids,
    st.sampled_from(["dict", "set", "obj", "list", "tree", 1]),
    ints,
    ints,
    ints,
    st.one_of(st.none(), st.text(max_size=3), st.lists(ints, min_size=4, max_size=4), fields),
    ints,
).map(list)
header_shapes = st.one_of(headers, st.lists(fields, max_size=8))
entry_shapes = st.one_of(
    st.tuples(ints, ints, fields).map(list),
    st.tuples(ints, ints, fields, fields).map(list),
    st.tuples(ints).map(list),
    st.tuples(ints, fields).map(list),
    st.tuples(st.sampled_from(["x", "y"]), ints).map(list),
    st.lists(fields, max_size=5),
)
nids = st.one_of(st.sampled_from([0, 1, 7, rec.INT64_MAX, rec.INT64_MAX + 1, 2**64 - 1]))


def nid_bytes(n: int) -> bytes:
    return n.to_bytes(rec.NID_BYTES, "big")


def encode(value: Any) -> bytes:
    try:
        return codec.dumps(value)
    except ProtocolError:
        return cbor2.dumps(value)


ekeys = st.one_of(
    st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=4), st.floats()).map(
        lambda k: cbor2.dumps(k)
    ),
    st.sampled_from([ekey("o1"), ekey(1.5), ekey(None), ekey(codec.Ref("c.1")), b"\xf7"]),
    st.binary(min_size=0, max_size=4),
    st.just(cbor2.dumps("k" * 470)),
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["keep", "keep", "flip", "cut", "append"]))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if how == "flip" and data:
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if how == "cut":
        return data[:at]
    if how == "append":
        return data + draw(st.sampled_from([b"\x00", b"\xf7", b"\x81", b"\xff"]))
    return data


@st.composite
def records_of(draw: st.DrawFn, db: str) -> tuple[bytes, bytes]:
    nid = nid_bytes(draw(nids))
    if db == "oids":
        key = draw(oids).encode() or draw(st.binary(max_size=3))
        data = draw(st.one_of(nids.map(nid_bytes), st.binary(max_size=9)))
    elif db == "nodes":
        key = draw(st.one_of(st.just(nid), st.binary(max_size=9)))
        data = encode(draw(header_shapes))
    elif db == "entries":
        form = draw(st.sampled_from([b"\x01", b"\x01", b"\x02", b"\x03", b""]))
        key = nid + form + draw(ekeys)
        data = encode(draw(entry_shapes))
    elif db == "order":
        key = nid + draw(st.one_of(ints.map(lambda n: (n % 2**64).to_bytes(8, "big")), st.binary()))
        data = draw(ekeys)
    elif db == "chunks":
        key = nid + draw(st.binary(min_size=7, max_size=9))
        data = encode(draw(st.one_of(fields, st.lists(fields, max_size=4))))
    else:
        key = draw(st.binary(min_size=15, max_size=20))
        data = draw(st.sampled_from([b"", b"", b"x"]))
    return draw(mutated(key)), draw(mutated(data))


good_nids = st.sampled_from([1, 7, 300, rec.INT64_MAX])
good_ints = st.one_of(st.integers(0, 300), st.sampled_from([rec.INT64_MAX, 2**32]))


@st.composite
def near_valid_value(draw: st.DrawFn, db: str) -> list[Any]:
    """A valid header or entry with at most one field replaced (by anything)."""
    if db == "nodes":
        kind = draw(st.sampled_from(["dict", "set", "obj", "list"]))
        version = draw(good_ints)
        count = draw(good_ints)
        extra = {"obj": "Point", "list": [count, 1, 0, 2]}.get(kind)
        value = [draw(oids), kind, version, draw(st.integers(0, version)), draw(good_ints)]
        value += [extra, count]
    else:
        version, pos = draw(good_ints), draw(good_ints)
        item = draw(st.one_of(st.integers(), st.text(max_size=4), st.none(), st.floats()))
        value = draw(
            st.sampled_from(
                [[version, pos, item], [version], [version, item], [version, pos, item, "k"]]
            )
        )
        value = value if draw(st.integers(0, 9)) else ["x", version]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(value) - 1))
        value[at] = draw(
            st.one_of(
                st.sampled_from([*BOUNDARY_INTS, None, "x", "list", 1.0, True]),
                fields,
                oids,
                st.lists(st.lists(ints, max_size=2)),
            )
        )
    return value


@st.composite
def near_valid_records(draw: st.DrawFn) -> tuple[str, tuple[bytes, bytes]]:
    db = draw(st.sampled_from(["nodes", "entries"]))
    nid = nid_bytes(draw(good_nids))
    key = nid if db == "nodes" else nid + b"\x01" + draw(ekeys)
    return db, (key, encode(draw(near_valid_value(db))))


@settings(max_examples=800)
@given(st.lists(near_valid_records(), min_size=1, max_size=4))
def test_check_records_agrees_on_nearly_valid_headers_and_entries(
    picked: list[tuple[str, tuple[bytes, bytes]]],
) -> None:
    for db in ("nodes", "entries"):
        records = [record for name, record in picked if name == db]
        if records:
            assert_agrees("staging_" + db, records)


# Every field of these records replaced by each of these, one at a time.
REPLACEMENTS: list[Any] = [
    *BOUNDARY_INTS, None, True, False, 1.0, float("nan"), "", "x", "dict", "set", "obj",
    "list", "tree", "x" * 128, "x" * 129, b"", b"k", codec.Ref("c.1"), (1,), [], [1],
    [0, 1, 0, 2], [0, 1, 65, 2], [1, 1, 0, 2], {"k": 1}, frozenset({1}),
]  # fmt: skip
BASE_HEADERS = [
    ["c.o1", "dict", 9, 5, 2, None, 2],
    ["c.o1", "set", 9, 9, 0, None, 0],
    ["c.o1", "obj", 0, 0, 1, "Point", 1],
    ["c.o1", "list", 9, 9, 0, [1, 1, 0, 2], 1],
]
BASE_ENTRIES = [[9, 1, "v"], [9, 1, codec.Ref("c.o2")], [9], [9, 1.5], [9, 1, 2, "k"], ["x", 9]]


def test_every_field_replaced_by_every_boundary_value_agrees() -> None:
    for db, bases, key in (
        ("staging_nodes", BASE_HEADERS, rec.nid_key(3)),
        ("staging_entries", BASE_ENTRIES, rec.entry_key(3, ekey("k"))),
    ):
        for base in bases:
            assert_agrees(db, [(key, encode(base))])
            for at in range(len(base)):
                for replacement in REPLACEMENTS:
                    value = [*base[:at], replacement, *base[at + 1 :]]
                    assert_agrees(db, [(key, encode(value))])


@settings(max_examples=600)
@given(st.data())
def test_check_records_agrees_with_check_record_on_random_records(data: st.DataObject) -> None:
    db = data.draw(st.sampled_from(DBS))
    records = data.draw(st.lists(records_of(db), min_size=1, max_size=6))
    assert_agrees(data.draw(st.sampled_from([db, "staging_" + db])), records)


@settings(max_examples=400)
@given(st.data())
def test_check_records_agrees_on_mutated_valid_records(data: st.DataObject) -> None:
    db = data.draw(st.sampled_from(DBS))
    valid = VALID[db]
    picked = data.draw(st.lists(st.sampled_from(valid), min_size=1, max_size=5))
    records = [(data.draw(mutated(k)), data.draw(mutated(v))) for k, v in picked]
    assert_agrees("staging_" + db, records)


def _valid() -> dict[str, list[tuple[bytes, bytes]]]:
    """The workload's records and support.v3store's (buckets, sets, tombstones, objs, list
    chunks, original keys, tuples)."""
    out = workload_records(30)
    with tempfile.TemporaryDirectory() as path:
        for name, records in store_records(Path(path)).items():
            out[name] += records
    return out


VALID = _valid()


def test_every_record_of_a_store_passes_and_both_ways_agree(tmp_path: Path) -> None:
    for name, records in store_records(tmp_path).items():
        assert records, name
        assert outcome(lambda n=name, r=records: rec.check_records("staging_" + n, r)) is None
        assert_agrees("staging_" + name, records)


def test_the_common_records_pass_without_the_full_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every workload record takes the cheaper checks, those whose value holds a byte that may
    start a simple value (0xe0-0xf3, 0xf7, 0xf8: e.g. version 247) included: their value
    alone is decoded by codec.loads (the header walk), not the whole record by check_record."""
    full: list[str] = []
    real = rec.check_record

    def counted(db: str, key: bytes, data: bytes) -> None:
        full.append(db)
        real(db, key, data)

    monkeypatch.setattr(rec, "check_record", counted)
    records = workload_records(300)
    doubtful = [
        data for name in ("nodes", "entries") for _key, data in records[name] if DOUBTFUL & {*data}
    ]
    assert doubtful  # the walk's path is taken too
    for name in DBS:
        rec.check_records("staging_" + name, records[name])
    assert full == []


DOUBTFUL = {*range(0xE0, 0xF4), 0xF7, 0xF8}


def test_a_refused_run_raises_what_check_record_raises_for_its_first_bad_record() -> None:
    records = workload_records(5)["entries"]
    bad = (records[2][0], cbor2.dumps(["y", 3]))
    run = [*records[:2], bad, (records[3][0], b"\xff")]
    with pytest.raises(rec.RecordInvalid, match="tombstone") as info:
        rec.check_records("staging_entries", run)
    with pytest.raises(rec.RecordInvalid) as expected:
        rec.check_record("staging_entries", *bad)
    assert str(info.value) == str(expected.value)


def test_a_chunk_stages_through_the_runs(tmp_path: Path) -> None:
    """stage_chunk validates each db's run at once and still refuses a bad record by name."""
    env = lmdb.open(str(tmp_path / "t"), max_dbs=DBS_MAX, map_size=64 << 20)
    try:
        dbs = open_dbs(env)
        records = workload_records(10)
        items = [
            [letter, key, value]
            for letter in "inqet"
            for key, value in sorted(records[snap.CHUNK_DBS[letter]])
        ]
        with env.begin(write=True) as txn:
            snap.stage_chunk(txn, dbs, cbor2.dumps([0, True, items]), frozenset())
        with env.begin() as txn:
            assert txn.stat(dbs.staging_entries)["entries"] == len(records["entries"])
        first_header = len(records["oids"])
        assert items[first_header][0] == "n"
        items[first_header][2] = cbor2.dumps(["c.o1", "tree", 1, 1, 0, None, 0])
        with pytest.raises(ProtocolError, match="kind"), env.begin(write=True) as txn:
            snap.stage_chunk(txn, dbs, cbor2.dumps([0, True, items]), frozenset())
    finally:
        env.close()
