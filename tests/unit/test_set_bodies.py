"""agent/set_bodies.py: the lone-set bodies read without the generic scan decode exactly as
`ops.decode_body` decodes them, and every other body (other shapes, mutations, garbage) gets
the full path's own result or exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from superstatic_agent import set_bodies

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
    try:
        return "ok", decode(body)
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def _same_as_full_path(body: bytes) -> None:
    assert _outcome(set_bodies.decode_body, body) == _outcome(ops.decode_body, body)
    found = set_bodies.read_set_body(body)
    if found is not None and found[0] <= ops.INT64_MAX:
        full = _outcome(ops.decode_body, body)
        if full[0] == "ok":
            # What the reader built is what cbor2 builds from the same bytes.
            assert (found[0], found[1]) == (full[1].base, full[1].ops)


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
