"""superstatic/protocol/short_cbor.py: what `loads_each` decodes is exactly what
`codec.loads(value, limits)` returns, and what `scalar_ok` accepts `codec.loads` accepts, on
random, hostile and mutated items; and both take the common records' shapes (else the cheaper
validation of staged snapshot records would silently be the full one)."""

from __future__ import annotations

import dataclasses
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent.records import RECORD_LIMITS
from support import hostile

from superstatic.protocol import codec
from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.short_cbor import (
    SCALAR_BYTES_MAX,
    SHORT_BYTES_MAX,
    UNSURE,
    loads_each,
    scalar_ok,
)

LIMITS = RECORD_LIMITS


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1, 1.0 and True are not the same value
    here; NaN is itself, in a map or a frozenset too)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):  # dict, or cbor2's frozendict inside a tag
        return same(list(a.items()), list(b.items()))
    if type(a) is frozenset:  # canonical: elements sorted by their encoding
        return codec.dumps(a) == codec.dumps(b)
    if type(a) is float and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def loaded(data: bytes, limits: codec.DecodeLimits = LIMITS) -> tuple[bool, Any]:
    try:
        return True, codec.loads(data, limits)
    except ProtocolError:
        return False, None


def assert_agrees(values: list[bytes], limits: codec.DecodeLimits = LIMITS) -> list[Any]:
    out = loads_each(values, limits)
    assert len(out) == len(values)
    for value, got in zip(values, out, strict=True):
        if got is UNSURE:
            continue
        ok, expected = loaded(value, limits)
        assert ok, value.hex()
        assert same(got, expected), value.hex()
    return out


# Items and pieces of items a hostile or damaged record may hold: every header form, simple
# values, native and registered tags, indefinite lengths, breaks, bignums and Decimals.
TOKENS = [
    b"\x00", b"\x17", b"\x18\x18", b"\x19\x01\x00", b"\x1a\x00\x01\x00\x00",
    b"\x1b\x7f\xff\xff\xff\xff\xff\xff\xff", b"\x1b\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\x20", b"\x38\xff", b"\x18", b"\x19\x00", b"\x1c", b"\x3f",
    b"\x40", b"\x43abc", b"\x58\x02ab", b"\x5f\x41a\xff", b"\x5a\xff\xff\xff\xff",
    b"\x60", b"\x61x", b"\x62\xc3\xa9", b"\x62\xff\xfe", b"\x78\x01d", b"\x7f\x61a\xff",
    b"\x80", b"\x81", b"\x82", b"\x83", b"\x87", b"\x98\x02", b"\x9f", b"\xff",
    b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\xa0", b"\xa1", b"\xa1\x61k", b"\xa1\x01",
    b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x20", b"\xf8", b"\xfc",
    b"\xf9\x7e\x00", b"\xfa\x3f\x80\x00\x00", b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",
    b"\xc0", b"\xc1", b"\xc2\x41\x01", b"\xc3\x41\x01", b"\xc4\x82\x01\x02", b"\xc5",
    b"\xd8\x1c", b"\xd8\x1d\x00", b"\xd8\x19", b"\xd8\x25", b"\xd8\x64", b"\xd9\x01\x00",
    b"\xd9\xd9\xf7", b"\xd9\xd9\xf8", b"\xd9\xd9\xf9", b"\xd9\xd9\xfa", b"\xd9\xd9\xfb",
    b"\xd9\xd9\xfc", b"\xd9\xd9\xfd", b"\xd9\xd9\xff", b"\xd9\xda\x00", b"\xd9\xda\x03",
    b"\xd9\xda\x09", b"\xd9\xab\xcd", b"\xda\x00\x01\x00\x00", b"\xdb" + b"\xff" * 8,
    b"\xd9\xd9\xfa\x68c.o12345", b"\xd9\xd9\xfa\x60",
]  # fmt: skip

tokens = st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=3))
token_items = st.lists(tokens, min_size=1, max_size=10).map(b"".join)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.builds(codec.Ref, st.text(min_size=1, max_size=130)),
    st.decimals(allow_nan=False, places=2),
    st.uuids(),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=2),
    ),
    max_leaves=10,
)
encoded = values.map(codec.dumps)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with one change: a byte replaced, bytes cut off or added, a token
    spliced in."""
    data = draw(base)
    how = draw(st.sampled_from(["flip", "cut", "append", "splice", "keep"]))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if how == "flip" and data:
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if how == "cut":
        return data[:at]
    if how == "append":
        return data + draw(tokens)
    if how == "splice":
        return data[:at] + draw(tokens) + data[at:]
    return data


items = st.one_of(encoded, mutated(encoded), token_items, mutated(token_items))


@settings(max_examples=1_500)
@given(st.lists(items, max_size=8))
def test_loads_each_decodes_exactly_as_loads_or_not_at_all(values_: list[bytes]) -> None:
    assert_agrees(values_)


@settings(max_examples=300)
@given(st.lists(items, max_size=8), st.integers(0, 40), st.integers(1, 64))
def test_loads_each_agrees_under_small_limits(values_: list[bytes], depth: int, size: int) -> None:
    limits = dataclasses.replace(LIMITS, depth_max=depth, bytes_max=size, items_max=size)
    assert_agrees(values_, limits)


def test_loads_each_refuses_every_tag_it_does_not_build_like_loads() -> None:
    """Every tag number below 2**16, around a small int, a text and an array: native ones (cbor2
    would build them itself) are never decoded; the registry's agree with loads."""
    for payload in (hostile.uint(0), hostile.text("2020-01-02"), hostile.arr(hostile.uint(1))):
        tagged = [hostile.tag(number, payload) for number in range(1 << 16)]
        out = assert_agrees(tagged)
        decoded = {number for number, got in enumerate(out) if got is not UNSURE}
        assert decoded <= codec.REGISTERED_TAGS - {2, 3, 4, 37}, sorted(decoded)


def test_loads_each_takes_the_common_shapes_and_resynchronises() -> None:
    common = [
        codec.dumps([6, 1, "object 49974"]),
        codec.dumps([6, 0, codec.Ref("c.o12345")]),
        codec.dumps(["c.o1", "dict", 5, 5, 2, None, 2]),
        codec.dumps([20]),
        codec.dumps(["x", 9]),
    ]
    out = assert_agrees(common)
    assert UNSURE not in out
    # A value with bytes after its item, one cut short, a simple value and a long value are
    # not decoded; the ones after each are (each read from its own start).
    odd = [b"\x01\x02", b"\x82\x01", b"\x81\xf7", b"\x5a" + (SHORT_BYTES_MAX).to_bytes(4, "big")]
    odd.append(odd[-1] + b"a" * SHORT_BYTES_MAX)
    mixed = [v for pair in zip(odd, common, strict=False) for v in pair]
    out = assert_agrees(mixed)
    assert [got is UNSURE for got in out] == [True, False] * len(odd)
    assert out[1::2] == [codec.loads(v) for v in common[: len(odd)]]


def test_loads_each_never_decodes_what_the_scan_bounds() -> None:
    """A Decimal whose mantissa is over DECIMAL_MANTISSA_BYTES_MAX (cbor2 converts it in
    quadratic time), bignums, UUIDs: the registry keeps them, but only the full check decodes."""
    mantissa = hostile.tag(2, hostile.blob(b"\x01" * (codec.DECIMAL_MANTISSA_BYTES_MAX + 1)))
    big_decimal = hostile.tag(4, hostile.arr(hostile.uint(0), mantissa))
    assert len(big_decimal) <= SHORT_BYTES_MAX and not loaded(big_decimal)[0]
    kept = [big_decimal, codec.dumps(decimal.Decimal("1.5")), codec.dumps(2**70)]
    kept.append(codec.dumps(uuid.UUID(int=7)))
    assert assert_agrees(kept) == [UNSURE] * len(kept)


def test_loads_each_leaves_deep_nesting_to_the_full_check() -> None:
    deep = b"\x81" * 40 + b"\x01"
    assert loads_each([deep], LIMITS) == [UNSURE]
    assert loaded(deep)[0]


@settings(max_examples=2_000)
@given(st.one_of(token_items, mutated(encoded), st.binary(max_size=SCALAR_BYTES_MAX + 2)))
def test_scalar_ok_only_for_one_item_loads_accepts(data: bytes) -> None:
    if scalar_ok(data):
        limits = dataclasses.replace(LIMITS, bytes_max=len(data), items_max=1)
        assert codec.scan(data, limits) == 1
        assert loaded(data, limits)[0]


def test_scalar_ok_on_every_short_prefix_and_the_common_keys() -> None:
    """Exhaustive over every 1- and 2-byte input (each header byte with every next byte)."""
    for first in range(256):
        for rest in (b"", *(bytes([second]) for second in range(256))):
            data = bytes([first]) + rest
            if scalar_ok(data):
                assert codec.scan(data, LIMITS) == 1 and loaded(data)[0], data.hex()
    for key in ["o12345", "name", "i", "", "x" * 200, 0, -1, 2**63, b"k", 1.5, None, True]:
        assert scalar_ok(cbor2.dumps(key)), key
    for unsure in ["é", "x" * 300, codec.Ref("c.1"), (1,), b"\xf7"]:
        assert not scalar_ok(unsure if type(unsure) is bytes else codec.dumps(unsure)), unsure


def test_loads_each_on_every_split_of_a_run() -> None:
    """A run's bytes cut into values at every one and every two offsets (review18): a value
    ending mid-item, a string or an array running on into the next value, a failed value
    before a valid one; whatever is decoded is what loads returns for that value alone."""
    run = b"".join(
        [
            codec.dumps([6, 1, "obj"]),
            b"\x62ab",
            codec.dumps([6, 0, codec.Ref("c.o1")]),
            b"\x82\x01",
            codec.dumps(["c.o1", "dict", 5, 5, 2, None, 2]),
            codec.dumps((1, -0.0, float("nan"))),
        ]
    )
    decoded = 0
    for first in range(len(run) + 1):
        for second in range(first, len(run) + 1, 3):
            out = assert_agrees([run[:first], run[first:second], run[second:]])
            decoded += sum(got is not UNSURE for got in out)
    assert decoded  # the splits at item boundaries are decoded here, not all left to loads


def test_loads_each_on_tag_numbers_past_two_bytes() -> None:
    """Tags of 4- and 8-byte numbers, the registry's and cbor2's native numbers plus 2**16 and
    2**32 among them (a decoder truncating the number would take them for those): none is a
    registered tag, so none is decoded."""
    numbers = [1 << 16, (1 << 32) - 1, 1 << 32, 1 << 63, (1 << 64) - 1]
    for base in (*codec.REGISTERED_TAGS, *codec.SEMANTIC_TAGS_NATIVE):
        numbers += [base + (1 << 16), base + (1 << 32), base + (1 << 48)]
    payloads = (hostile.uint(0), hostile.text("c.o1"), hostile.arr(hostile.uint(1)))
    tagged = [hostile.tag(number, payload) for number in numbers for payload in payloads]
    assert assert_agrees(tagged) == [UNSURE] * len(tagged)


def test_loads_each_on_registry_tags_chained_around_the_depth_limits() -> None:
    """cbor2's depth counts tags as well as arrays: frozensets of arrays and tuples of tuples
    nested past SHORT_DEPTH_MAX and past DECODE_DEPTH_MAX agree with loads (review18)."""
    frozen = hostile.tag(codec.TAG_FROZENSET, b"")
    tuple_tag = hostile.tag(codec.TAG_TUPLE, b"")
    values = []
    for levels in (*range(1, 20), 127, 128, 129):
        values.append((frozen + b"\x81") * levels + b"\x80")
    for tags in (*range(1, 20), 254, 255, 256, 257):
        values.append(tuple_tag * tags + b"\x81\x00")
    out = assert_agrees(values)
    assert out[0] == frozenset({()})  # the shallow ones are decoded here
