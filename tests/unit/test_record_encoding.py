"""Header and entry records encoded by cbor2 directly when they hold no value that needs a tag
of ours (agent/records.py, docs/data-model-v2.md 8.6) are the same bytes as codec.dumps makes
of the same fields, for every kind of value; and they decode back."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import records as rec

from superstatic.protocol import codec

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # past 64 bits too: bignums
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.uuids(),
    st.decimals(allow_nan=False, places=3),
    st.dates(),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
values = st.recursive(
    scalars | st.builds(codec.Ref, st.text(min_size=1, max_size=12)),
    lambda inner: st.tuples(inner, inner) | st.frozensets(st.integers() | st.text(max_size=4)),
    max_leaves=6,
)
ints = st.integers(min_value=0, max_value=(1 << 63) - 1)


@settings(max_examples=400, deadline=None)
@given(ints, ints, values, st.none() | values)
def test_entry_records_are_the_bytes_codec_makes(
    version: int, pos: int, value: Any, original: Any
) -> None:
    entry = rec.EntryRec(version, pos, value, original)
    fields = [version, pos, value] if original is None else [version, pos, value, original]
    data = rec.encode_entry(entry)
    assert data == codec.dumps(fields)
    key = rec.entry_key(7, b"k")
    # Decoded back to the same record: compared by its bytes again, since a NaN value is
    # unequal to itself (`==` on the records failed whenever hypothesis drew one).
    assert rec.encode_entry(rec.decode_entry(key, data)) == data


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=20),
    st.sampled_from(["dict", "set", "obj", "list"]),
    ints,
    ints,
    ints,
    ints,
    st.none() | st.text(max_size=20) | st.lists(ints, min_size=4, max_size=4),
)
def test_header_records_are_the_bytes_codec_makes(
    oid: str, kind: str, version: int, shape: int, next_pos: int, count: int, extra: Any
) -> None:
    header = rec.Header(oid, kind, version, shape, next_pos, extra, count)
    data = header.encode()
    assert data == codec.dumps([oid, kind, version, shape, next_pos, extra, count])


def test_values_that_need_a_tag_take_codecs_path() -> None:
    for value in (
        codec.Ref("x"),
        (1, "a"),
        frozenset({1, 2}),
        decimal.Decimal("1.5"),
        datetime.date(2026, 12, 7),
        uuid.UUID(int=5),
        float("nan"),
    ):
        entry = rec.EntryRec(3, 4, value)
        assert rec.encode_entry(entry) == codec.dumps([3, 4, value])


def _enum_values() -> list[Any]:
    return [
        codec.enum_form("Color", codec.ENUM_BY_INT, 1),
        codec.enum_form("Mode", codec.ENUM_BY_STR, "r"),
        codec.enum_form("Plain", codec.ENUM_BY_NAME, "A"),
    ]


def test_int_and_str_subclasses_keep_their_tag() -> None:
    """An IntEnum / StrEnum member as the agent holds it (EnumInt, EnumStr) IS an int or a str
    to isinstance, and cbor2 alone would write it as a plain 1 or "r": only the exact type
    may take cbor2's path, or a replica of this version would store another value than one of
    the last (a rolling upgrade diverges). Next to them, the bool / int / float edges cbor2
    must keep apart (True is 0xf5, 1 is 0x01, 1.0 and -0.0 are floats)."""
    edges: list[Any] = [True, False, 1, 0, 1.0, -0.0, 0.0, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    edges += [1 << 64, -(1 << 64), -(1 << 64) - 1, "", "\x00", None, b""]
    for value in [*_enum_values(), *edges]:
        entry = rec.EntryRec(3, 4, value)
        data = rec.encode_entry(entry)
        assert data == codec.dumps([3, 4, value])
        back = rec.decode_entry(rec.entry_key(7, b"k"), data).value
        assert (type(back), repr(back)) == (type(value), repr(value))
    for extra in _enum_values()[1:2]:
        header = rec.Header("kv", "obj", 5, 5, 0, extra, 0)
        assert header.encode() == codec.dumps(["kv", "obj", 5, 5, 0, extra, 0])
