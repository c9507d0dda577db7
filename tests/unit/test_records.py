"""agent/records.py: the format-3 record layout, its keys and strict decoding of untrusted
records (docs/data-model-v2.md section 3)."""

from __future__ import annotations

import dataclasses

import pytest
from superstatic_agent import records as rec
from superstatic_agent.records import EntryRec, Header, RecordInvalid

from superstatic.protocol import codec

SECRET = "s3cr3t-value-never-in-messages"


def test_keys_are_big_endian_and_ordered() -> None:
    assert rec.nid_key(1) == b"\x00" * 7 + b"\x01"
    assert rec.order_key(2, 5) < rec.order_key(2, 256) < rec.order_key(3, 0)
    assert rec.chunk_key(1, 2) == rec.nid_key(1) + (2).to_bytes(8, "big")
    ek = codec.dumps("k")
    key = rec.entry_key(7, ek)
    assert key == rec.nid_key(7) + b"\x01" + ek and not rec.entry_key_hashed(key)
    assert rec.entry_key_ekey(key) == ek
    tomb = rec.tomb_key(99, key)
    assert rec.tomb_key_parts(tomb) == (99, key)
    assert rec.tomb_key(5, key) < rec.tomb_key(6, rec.entry_key(1, ek))
    with pytest.raises(AssertionError):
        rec.nid_key(0)


def test_long_keys_take_the_hashed_form() -> None:
    short = codec.dumps("a" * 400)
    long = codec.dumps("a" * 600)
    assert not rec.entry_key_hashed(rec.entry_key(1, short))
    hashed = rec.entry_key(1, long)
    assert rec.entry_key_hashed(hashed)
    assert len(hashed) == rec.NID_BYTES + 1 + rec.ENTRY_HASH_BYTES
    # The longest inline key still fits a tombs key within LMDB's 511 bytes.
    assert rec.VERSION_BYTES + rec.ENTRY_KEY_INLINE_BYTES_MAX <= 511


def test_header_round_trip_and_validation() -> None:
    for header in (
        Header("@roots", "dict", 10, 4, 3, None, 2),
        Header("a1", "obj", 1, 1, 1, "Point", 1),
        Header("l", "list", 5, 5, 0, [3, 1, 1, 2], 3),
        Header("s", "set", 0, 0, 0, None),
    ):
        key = rec.nid_key(3)
        assert rec.decode_header(key, header.encode()) == header
        rec.check_record("nodes", key, header.encode())
    key = rec.nid_key(3)
    bad = [
        codec.dumps(["x", "dict", 1, 1, 0, None]),  # 6 fields
        codec.dumps(["x", "tree", 1, 1, 0, None, 0]),
        codec.dumps(["x", "dict", -1, 0, 0, None, 0]),
        codec.dumps(["x", "dict", 1, 1, 0, None, -1]),
        codec.dumps(["x", "dict", 1, 2, 0, None, 0]),  # shape above version
        codec.dumps(["x", "obj", 1, 1, 0, None, 0]),  # no class name
        codec.dumps(["x", "list", 1, 1, 0, [1, 2], 0]),
        codec.dumps(["x", "list", 1, 1, 0, [3, 1, 1, 2], 2]),  # count is not the length
        codec.dumps(["", "dict", 1, 1, 0, None, 0]),
        b"\xff\xff",
        b"",
    ]
    for data in bad:
        with pytest.raises(RecordInvalid) as info:
            rec.decode_header(key, data)
        assert "nodes" in str(info.value) and "nid 3" in str(info.value)


def test_entry_round_trips() -> None:
    key = rec.entry_key(4, codec.dumps(1))
    for entry in (
        EntryRec(7, 0, "v"),
        EntryRec(7, 3, codec.Ref("o1"), original=1.0),
        EntryRec(9),  # a set member
        EntryRec(9, original=True),
        EntryRec(12, tomb=True),
    ):
        data = rec.encode_entry(entry)
        assert rec.decode_entry(key, data) == entry
        assert rec.decode_entry(key, data, checked=False) == entry
        rec.check_record("entries", key, data)


def test_corrupt_entry_names_db_and_key_never_the_bytes() -> None:
    key = rec.entry_key(4, codec.dumps(SECRET))
    bad = [
        codec.dumps([]),
        codec.dumps(["y", 1]),
        codec.dumps(["x", -1]),
        codec.dumps([1, -2, SECRET]),
        codec.dumps([1, 0, SECRET, [SECRET]]),  # an unhashable original key
        codec.dumps([SECRET, 0, 1]),
        codec.dumps([1, 0, {SECRET: 1}]),  # a map is not a stored value
        codec.dumps([1, 2, 3, 4, 5]),
        b"\x9f",  # indefinite length: not ours
    ]
    for data in bad:
        with pytest.raises(RecordInvalid) as info:
            rec.check_record("staging_entries", key, data)
        text = str(info.value)
        assert SECRET not in text and "staging_entries" in text and "nid 4" in text


def test_bucket_round_trip_and_checks() -> None:
    nid = 2
    e1, e2 = codec.dumps("a" * 600), codec.dumps("b" * 600)
    key1 = rec.entry_key(nid, e1)
    items = [(e1, EntryRec(3, 0, "v"))]
    data = rec.encode_bucket(items)
    assert rec.decode_bucket(key1, data) == items
    rec.check_record("entries", key1, data)
    tomb = rec.encode_bucket([(e1, EntryRec(8, tomb=True))])
    assert rec.decode_bucket(key1, tomb) == [(e1, EntryRec(8, tomb=True))]
    member = rec.encode_bucket([(e1, EntryRec(8))])
    assert rec.decode_bucket(key1, member) == [(e1, EntryRec(8))]
    # An ekey that does not hash to the record's key is refused.
    wrong = rec.encode_bucket([(e2, EntryRec(3, 0, "v"))])
    with pytest.raises(RecordInvalid, match="does not hash"):
        rec.decode_bucket(key1, wrong)
    # Duplicates are refused (a bucket holds each ekey once).
    dup = codec.dumps([[e1, 1, 0, "v", None], [e1, 2, 1, "w", None]])
    with pytest.raises(RecordInvalid, match="unique"):
        rec.decode_bucket(key1, dup)


def test_oids_order_tombs_chunks_checks() -> None:
    rec.check_record("oids", b"@roots", rec.encode_nid(1))
    with pytest.raises(RecordInvalid):
        rec.check_record("oids", b"@roots", b"\x00" * 8)  # nid 0
    with pytest.raises(RecordInvalid):
        rec.check_record("oids", b"\xff", rec.encode_nid(1))
    with pytest.raises(RecordInvalid):
        rec.check_record("oids", b"x" * 200, rec.encode_nid(1))
    ek = codec.dumps("k")
    rec.check_record("order", rec.order_key(1, 0), ek)
    with pytest.raises(RecordInvalid):
        rec.check_record("order", rec.order_key(1, 0), b"\xff")
    with pytest.raises(RecordInvalid):
        rec.check_record("order", rec.nid_key(1), ek)
    tomb = rec.tomb_key(5, rec.entry_key(1, ek))
    rec.check_record("tombs", tomb, b"")
    with pytest.raises(RecordInvalid):
        rec.check_record("tombs", tomb, b"x")
    rec.check_record("chunks", rec.chunk_key(1, 1), codec.dumps([0, 1, ["a"]]))
    with pytest.raises(RecordInvalid):
        rec.check_record("chunks", rec.chunk_key(1, 1), b"\xff")
    with pytest.raises(RecordInvalid, match="not a node db"):
        rec.check_record("objects", rec.nid_key(1), b"")


def test_describe_key_never_shows_an_ekey() -> None:
    key = rec.entry_key(12, codec.dumps(SECRET))
    text = rec.describe_key("entries", key)
    assert "nid 12" in text and SECRET not in text
    assert rec.describe_key("order", rec.order_key(3, 9)) == "nid 3 pos 9"
    assert rec.describe_key("chunks", rec.chunk_key(3, 9)) == "nid 3 chunk 9"
    assert "version 5" in rec.describe_key("tombs", rec.tomb_key(5, key))


def test_a_header_copy_holds_every_field() -> None:
    """Header.copy lists the fields by hand (the apply copies a header per node it writes):
    a field added to Header and not to copy() fails here."""
    values = {f.name: f"value of {f.name}" for f in dataclasses.fields(Header)}
    header = Header(**values)
    copy = header.copy()
    assert copy == header and copy is not header
    assert dataclasses.asdict(copy) == values
