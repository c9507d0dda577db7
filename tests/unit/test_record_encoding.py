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
