"""agent/set_bodies.py: the lone-set bodies read without the generic scan decode exactly as
`ops.decode_body` decodes them, and every other body (other shapes, mutations, garbage) gets
the full path's own result or exception."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from superstatic_agent import set_bodies
from support import cbor_forms

from superstatic.protocol import codec, ops

# Text of every kind (non-BMP, controls), from empty to past the one-byte header (23 bytes).
texts = st.text(max_size=40) | st.sampled_from(["", "k", "v" * 100, "\U0001f600" * 7])
ints = st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1) | st.integers(-30, 30)
scalars = texts | ints
# Oids: short ones (the check_op fast path), long ones (past OID_BYTES_MAX: refused), and
# odd ones (empty, "@roots").
oids = (
    st.text(min_size=0, max_size=12)
    | st.sampled_from(["kv", "@roots", "n.load0", ""])
    | st.text(min_size=60, max_size=300)
)
set_ops = st.lists(st.tuples(oids, scalars, scalars), min_size=1, max_size=5)
bases = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _encoded(base: int, items: list[tuple[str, Any, Any]]) -> bytes:
    """A model-2 body of set ops as the library encodes it (base unchecked: a hostile one)."""
    wire = [["set", oid, key, value] for oid, key, value in items]
    return codec.dumps({"v": 2, "a": base, "r": {}, "o": wire})


def _outcome(decode: Any, body: bytes) -> tuple[str, Any]:
    """What `decode` makes of the body, every type in it (True is not 1, nor 1.0, on the
    wire: `==` alone would take them for the same), or the exception it raises."""
    try:
        doc = decode(body)
    except Exception as exc:
        return "raised", (type(exc), str(exc))
    reads = [(oid, r.flags, cbor_forms.strict(r.keys)) for oid, r in doc.reads.items()]
    fields = [doc.model, doc.base, doc.versions, reads, doc.ops]
    return "ok", (type(doc), cbor_forms.strict(fields))


def _same_as_full_path(body: bytes) -> None:
    assert _outcome(set_bodies.decode_body, body) == _outcome(ops.decode_body, body)
    found = set_bodies.read_set_body(body)
    if found is not None and found[0] <= ops.INT64_MAX:
        try:
            full = ops.decode_body(body)
        except Exception:
            return
        # What the reader built is what cbor2 builds from the same bytes.
        assert cbor_forms.strict([found[0], found[1]]) == cbor_forms.strict([full.base, full.ops])


@settings(max_examples=400, deadline=None)
@given(bases, set_ops)
@example(5, [("kv", "c0-t1-2", "v" * 100)])
@example(0, [("kv", "k", 1 << 63)])
@example((1 << 63), [("kv", "k", "v")])  # a base past INT64_MAX: refused by the full path
@example(1, [("kv", -(1 << 64), -1)])
def test_encoded_set_bodies_decode_as_the_full_path(base: int, items: list[Any]) -> None:
    body = _encoded(base, items)
    _same_as_full_path(body)
    if base <= ops.INT64_MAX and all(0 < len(oid) <= 12 for oid, _k, _v in items):
        # The shape this module is for is read here, not by the full path.
        assert set_bodies.read_set_body(body) is not None


@settings(max_examples=600, deadline=None)
@given(
    bases,
    set_ops,
    st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 400),
                  st.integers(0, 255)),
        min_size=1,
        max_size=3,
    ),
)  # fmt: skip
def test_mutated_bodies_get_the_full_paths_outcome(
    base: int, items: list[Any], edits: list[tuple[str, int, int]]
) -> None:
    body = bytearray(_encoded(base, items))
    for what, at, byte in edits:
        at %= len(body) + 1
        if what == "flip" and at < len(body):
            body[at] = byte
        elif what == "cut":
            del body[at:]
        elif what == "insert":
            body[at:at] = bytes([byte])
        elif what == "delete" and at < len(body):
            del body[at]
        if not body:
            body = bytearray(b"\xa4")
    _same_as_full_path(bytes(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_get_the_full_paths_outcome(tail: bytes) -> None:
    _same_as_full_path(tail)
    _same_as_full_path(b"\xa4\x61v\x02\x61a" + tail)  # the shape's head, then anything


@pytest.mark.parametrize(
    "body",
    [
        # Other shapes: reads, other ops, a tag (a Ref value), a float, a model-1 body, a
        # non-shortest header of the version, trailing bytes, an indefinite-length array,
        # invalid UTF-8, more ops than FAST_OPS_MAX.
        ops.encode_txn_v2(3, {"kv": (0, ["k"])}, [["set", "kv", "k", "v"]]),
        ops.encode_txn_v2(3, {}, [["del", "kv", "k"]]),
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", codec.Ref("x")]]),
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", 1.5]]),
        ops.encode_txn({"kv": 1}, [["set", "kv", "k", "v"]]),
        b"\xa4\x61v\x18\x02" + ops.encode_txn_v2(3, {}, [["set", "kv", "k", "v"]])[4:],
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", "v"]]) + b"\x00",
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", "v"]]).replace(b"\x81\x84", b"\x9f\x84")
        + b"\xff",
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", "v"]]).replace(b"\x61k", b"\x61\xff"),
        ops.encode_txn_v2(
            3, {}, [["set", "kv", f"k{i}", "v"] for i in range(set_bodies.FAST_OPS_MAX + 1)]
        ),
    ],
)
def test_other_shapes_take_the_full_path(body: bytes) -> None:
    assert set_bodies.read_set_body(body) is None
    _same_as_full_path(body)


# Keys and values in every form: edge ints and texts (mostly: a body is read here only if all
# of its ops are of that shape), values that need the full path (a tag, a float, a simple
# value; several equal to an int as Python keys), text items of invalid UTF-8.
_bad_texts = st.builds(
    cbor_forms.text_item, st.sampled_from(cbor_forms.INVALID_UTF8), st.sampled_from((0, 1, 2))
)
# (st.one_of draws each branch alike: the repeats weigh them.)
_hand_scalars = st.one_of(
    *[cbor_forms.edge_ints, cbor_forms.edge_texts] * 5, cbor_forms.other_values, _bad_texts
)
_hand_oids = st.one_of(
    *[st.just("kv")] * 8,
    st.text(min_size=1, max_size=8),
    st.sampled_from(["@roots", "", "q" * 128, "q" * 129, "\U0001f600" * 127, "d\x00"]),
    st.sampled_from(["\U0001f600" * 128]) | _bad_texts | st.integers(0, 3),
)
_edge_bases = st.sampled_from(
    [0, 1, ops.INT64_MAX - 1, ops.INT64_MAX, ops.INT64_MAX + 1, (1 << 64) - 1]
) | st.integers(0, 1_000)


@settings(max_examples=500, deadline=None)
@given(
    _edge_bases,
    st.lists(st.tuples(_hand_oids, _hand_scalars, _hand_scalars), min_size=1, max_size=3),
    st.lists(st.sampled_from(cbor_forms.WIDTHS), min_size=1, max_size=12),
    st.sampled_from(
        ["", "", "", "trailing", "extra op field", "short op", "nested value", "wide structure"]
    ),
)
def test_hand_written_forms_decode_as_the_full_path(
    base: int, items: list[Any], widths: list[int], twist: str
) -> None:
    """Non-shortest headers of every item (each header width drawn), ints at the int64 and
    uint64 edges and past them, texts at the header boundaries, with NUL, a BOM or invalid
    UTF-8, values that need a tag or are not ints (True, 1.0, Decimal(1), bytes, tuples),
    oids that are not valid oids, bases at 2**63-1 and past it: decoded exactly as the full
    path decodes them, types included, or refused with its exception."""
    cycle = itertools.cycle(widths)

    def item(value: Any) -> cbor_forms.Raw:
        return cbor_forms.Raw(cbor_forms.encode(value, lambda: next(cycle)))

    wire: list[Any] = [["set", item(oid), item(key), item(value)] for oid, key, value in items]
    if twist == "extra op field":
        wire[-1].append(1)
    elif twist == "short op":
        wire[-1].pop()
    elif twist == "nested value":
        wire[-1][3] = [wire[-1][3]]
    # The map, its keys and the op arrays in the encoder's form unless the twist widens them.
    outer = (lambda: next(cycle)) if twist == "wide structure" else cbor_forms.fixed(0)
    body = cbor_forms.encode({"v": 2, "a": item(base), "r": {}, "o": wire}, outer)
    if twist == "trailing":
        body += b"\x00"
    _same_as_full_path(body)


@pytest.mark.parametrize("count", [set_bodies.FAST_OPS_MAX, set_bodies.FAST_OPS_MAX + 1])
@pytest.mark.parametrize("last", ["fine", "bad oid", "tagged value", "bool key"])
def test_op_counts_at_the_fast_bound(count: int, last: str) -> None:
    """FAST_OPS_MAX ops are read here, one more is not; either way a refused or tagged last
    op gets the full path's own outcome."""
    wire: list[Any] = [["set", "kv", f"k{i}", i] for i in range(count)]
    if last == "bad oid":
        wire[-1][1] = "q" * 129
    elif last == "tagged value":
        wire[-1][3] = (1, 2)
    elif last == "bool key":
        wire[-1][2] = True
    body = ops.encode_txn_v2(7, {}, wire)
    assert (set_bodies.read_set_body(body) is not None) == (
        count <= set_bodies.FAST_OPS_MAX and last in ("fine", "bad oid")
    )
    _same_as_full_path(body)


@pytest.mark.parametrize("length", [65_535, 65_536, 65_537, 200_000])
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
@pytest.mark.parametrize("valid", [True, False])
def test_long_texts_across_64_kib(length: int, shift: int, valid: bool) -> None:
    """A text value past 64 KiB, with a 4-byte char (or a surrogate) straddling each 64 KiB
    boundary: read (or refused) as the full path, which cbor2 reads in chunks."""
    tail = "\U0001f600".encode() if valid else b"\xed\xa0\x80"
    value = cbor_forms.text_item(b"a" * (length - shift) + tail)
    wire = [["set", "kv", "k", value]]
    _same_as_full_path(cbor_forms.encode({"v": 2, "a": 3, "r": {}, "o": wire}, cbor_forms.fixed(0)))


def test_every_edge_value_in_every_header_width() -> None:
    """Each edge int, text, invalid text and non-int value as the oid, the key and the value of
    a lone set, its header in each width, and each edge base: the full path's outcome, types
    included (exhaustive over the pools, where the draws above sample them)."""
    values: list[Any] = [*cbor_forms.EDGE_INTS, *cbor_forms.EDGE_TEXTS, *cbor_forms.OTHER_VALUES]
    for value in values:
        for width in cbor_forms.WIDTHS:
            item = cbor_forms.Raw(cbor_forms.encode(value, cbor_forms.fixed(width)))
            for wire in (["set", item, "k", 1], ["set", "kv", item, 1], ["set", "kv", "k", item]):
                body = cbor_forms.encode(
                    {"v": 2, "a": 3, "r": {}, "o": [wire]}, cbor_forms.fixed(0)
                )
                _same_as_full_path(body)
    for bad in cbor_forms.INVALID_UTF8:
        for width in cbor_forms.WIDTHS:
            item = cbor_forms.text_item(bad, width)
            for wire in (["set", item, "k", 1], ["set", "kv", item, 1], ["set", "kv", "k", item]):
                body = cbor_forms.encode(
                    {"v": 2, "a": 3, "r": {}, "o": [wire]}, cbor_forms.fixed(0)
                )
                _same_as_full_path(body)
    for base in cbor_forms.EDGE_INTS:
        for width in cbor_forms.WIDTHS:
            item = cbor_forms.Raw(cbor_forms.encode(base, cbor_forms.fixed(width)))
            wire = ["set", "kv", "k", 1]
            body = cbor_forms.encode({"v": 2, "a": item, "r": {}, "o": [wire]}, cbor_forms.fixed(0))
            _same_as_full_path(body)
