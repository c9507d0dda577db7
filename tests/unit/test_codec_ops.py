"""The codec (CBOR + type registry) and the ops' wire format and meaning."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from superstatic.protocol import codec, ops
from superstatic.protocol.errors import LimitExceeded, ProtocolError

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.uuids(),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.builds(codec.Ref, st.text(min_size=1, max_size=20)),
)
hashable_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple), st.frozensets(inner, max_size=4)
    ),
    max_leaves=12,
)


@given(hashable_values)
def test_values_round_trip_exactly(value: Any) -> None:
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert type(back) is type(value)
    codec.check_value(back, "test")


@given(st.frozensets(hashable_values, max_size=6))
def test_frozenset_encoding_is_canonical(value: frozenset[Any]) -> None:
    rebuilt = frozenset(reversed(list(value)))
    assert codec.dumps(rebuilt) == codec.dumps(value)


def test_timezones_and_microseconds_survive() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    value = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=tz)
    assert codec.loads(codec.dumps(value)) == value
    assert codec.loads(codec.dumps(value)).utcoffset() == value.utcoffset()
    assert codec.loads(codec.dumps(decimal.Decimal("-1.250"))) == decimal.Decimal("-1.250")


@pytest.mark.parametrize(
    ("tag", "payload"),
    [
        (35, "a+"),  # cbor2 would compile a regular expression
        (36, "Content-Type: text/plain\n\nhi"),  # ... parse a MIME message
        (258, [1, 2]),  # ... build a set (sets are nodes, never inline)
        (28, 1),  # ... shared-reference graphs
        (9999, 1),  # an unknown tag
        (codec.TAG_REF, 5),  # a known tag with the wrong payload type
        (codec.TAG_DATE, "not a date"),
    ],
)
def test_foreign_tags_are_refused(tag: int, payload: Any) -> None:
    with pytest.raises(ProtocolError, match="CBOR"):
        codec.loads(cbor2.dumps(cbor2.CBORTag(tag, payload)))


@pytest.mark.parametrize(
    "data", [b"", b"\xff", b"\x9f" * 10, b"\x81" * 10_000, b"\x5b" + b"\xff" * 8]
)
def test_garbage_bytes_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.loads(data)


def test_non_storable_types_are_not_encoded() -> None:
    with pytest.raises(ProtocolError, match="complex"):
        codec.dumps(1j)
    with pytest.raises(ProtocolError, match="not a storable value"):
        codec.check_value([1, 2], "test")


def test_records_round_trip_and_are_checked() -> None:
    for kind, contents in [
        ("dict", [["a", 1], [(1, 2), codec.Ref("x.1")]]),
        ("list", [1, "b", codec.Ref("x.2")]),
        ("set", [1, "b"]),
        ("obj", ["app.Thing", [["name", "n"], ["child", codec.Ref("x.3")]]]),
    ]:
        assert codec.decode_record(codec.encode_record(7, kind, contents)) == (7, kind, contents)
    for bad in (
        [1, "dict"],
        [-1, "dict", []],
        [1, "tree", []],
        [1, "dict", [[1]]],
        [1, "obj", ["C", [[1, 2]]]],
    ):
        with pytest.raises(ProtocolError):
            codec.decode_record(cbor2.dumps(bad))


def test_refs_in_follows_tuples_and_frozensets() -> None:
    value = (codec.Ref("a"), frozenset({codec.Ref("b"), 3}), ((codec.Ref("c"),),))
    assert sorted(codec.refs_in(value)) == ["a", "b", "c"]


# ---------------------------------------------------------------------------------- ops


def _body(*ops_: list[Any], reads: dict[str, int] | None = None) -> bytes:
    return ops.encode_txn(reads or {}, list(ops_))


def test_txn_body_round_trip() -> None:
    operations = [
        ["new", "c.1", "list", [1, 2]],
        ["set", "@roots", "xs", codec.Ref("c.1")],
        ["splice", "c.1", 0, 1, ["a"]],
        ["extend", "c.1", [3]],
        ["add", "c.2", [frozenset({1})]],
        ["discard", "c.2", [1]],
        ["del", "c.3", "k"],
        ["clear", "c.3"],
    ]
    reads, back = ops.decode_txn(_body(*operations, reads={"@roots": 4}))
    assert reads == {"@roots": 4}
    assert back == operations


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (["explode", "a"], "not one of"),
        (["set", "a", "k"], "fields"),
        (["set", "", "k", 1], "object id"),
        (["set", "a", "k", [1]], "not a storable value"),
        (["splice", "a", 3, 1, []], "start <= stop"),
        (["splice", "a", -1, 1, []], "start <= stop"),
        (["extend", "a", 5], "array"),
        (["new", "a", "tree", []], "the node kind must be one of"),
    ],
)
def test_malformed_ops_name_the_op(op: list[Any], message: str) -> None:
    with pytest.raises(ops.OpError, match=message):
        ops.decode_txn(cbor2.dumps({"r": {}, "o": [op]}))


def test_body_shape_and_limits() -> None:
    with pytest.raises(ops.OpError, match="map"):
        ops.decode_txn(cbor2.dumps([1, 2]))
    with pytest.raises(ops.OpError, match="read version"):
        ops.decode_txn(cbor2.dumps({"r": {"a": -1}, "o": []}))
    too_many = cbor2.dumps({"r": {}, "o": [["clear", "a"]] * (ops.TXN_OPS_MAX + 1)})
    with pytest.raises(LimitExceeded, match="TXN_OPS_MAX"):
        ops.decode_txn(too_many)


def test_apply_op_meaning_matches_python() -> None:
    d: dict[Any, Any] = {"a": 1}
    ops.apply_op("dict", d, ["set", "x", "b", 2])
    ops.apply_op("dict", d, ["del", "x", "a"])
    ops.apply_op("dict", d, ["del", "x", "missing"])
    assert d == {"b": 2}
    xs = [1, 2, 3, 4]
    ops.apply_op("list", xs, ["splice", "x", 1, 3, ["a", "b", "c"]])
    ops.apply_op("list", xs, ["extend", "x", [9]])
    assert xs == [1, "a", "b", "c", 4, 9]
    s = {1, 2}
    ops.apply_op("set", s, ["add", "x", [3]])
    ops.apply_op("set", s, ["discard", "x", [1, 7]])
    assert s == {2, 3}
    with pytest.raises(ops.OpError, match="does not apply"):
        ops.apply_op("set", s, ["splice", "x", 0, 0, []])
    with pytest.raises(ops.OpError, match="outside list"):
        ops.apply_op("list", xs, ["splice", "x", 0, 99, []])


def test_contents_round_trip_with_canonical_sets() -> None:
    for kind, container, name in [
        ("dict", {"a": 1, 2: (3,)}, None),
        ("list", [3, 1, 2], None),
        ("set", {"b", "a", 3}, None),
        ("obj", {"x": 1}, "app.C"),
    ]:
        contents = ops.contents_of(kind, container, name)
        assert ops.container_from(kind, contents) == (container, name)
    assert ops.contents_of("set", {"b", "a", "c"}, None) == ops.contents_of(
        "set", {"c", "b", "a"}, None
    )


def test_refs_of_op() -> None:
    r1, r2 = codec.Ref("a.1"), codec.Ref("a.2")
    assert list(ops.refs_of_op(["new", "n", "dict", [[r1, r2]]])) == ["a.1", "a.2"]
    assert list(ops.refs_of_op(["splice", "n", 0, 0, [r1]])) == ["a.1"]
    assert list(ops.refs_of_op(["del", "n", "k"])) == []
    assert ops.op_oid(["clear", "n"]) == "n"


def test_uuid_and_big_ints_are_native() -> None:
    u = uuid.uuid4()
    assert codec.loads(codec.dumps((u, 2**100))) == (u, 2**100)


plain_containers = st.one_of(
    st.tuples(st.just("dict"), st.dictionaries(hashable_values, hashable_values, max_size=8)),
    st.tuples(st.just("list"), st.lists(hashable_values, max_size=8)),
    st.tuples(st.just("set"), st.sets(hashable_values, max_size=8)),
    st.tuples(st.just("obj"), st.dictionaries(st.text(max_size=5), hashable_values, max_size=5)),
)


@given(plain_containers, st.integers(min_value=0, max_value=2**40))
def test_encode_node_is_encode_record_of_contents(kind_container: Any, version: int) -> None:
    kind, container = kind_container
    name = "app.C" if kind == "obj" else None
    expected = codec.encode_record(version, kind, ops.contents_of(kind, container, name))
    assert ops.encode_node(version, kind, container, name) == expected


# ------------------------------------------------------------------- model-2 bodies (issue 11)


def test_model2_body_round_trips_reads_keys_and_base() -> None:
    body = ops.encode_txn_v2(
        41,
        {"c.1": (ops.READ_SHAPE, ["k", 3, ("t", 1)]), "@roots": (ops.READ_CONTENT, [])},
        [["set", "c.1", "k", 1]],
    )
    doc = ops.decode_body(body)
    assert doc.model == 2 and doc.base == 41 and doc.versions == {}
    assert doc.reads == {
        "c.1": ops.NodeReads(ops.READ_SHAPE, ["k", 3, ("t", 1)]),
        "@roots": ops.NodeReads(ops.READ_CONTENT, []),
    }
    assert doc.ops == [["set", "c.1", "k", 1]]
    # decode_txn serves callers that need only the ops, for either model.
    assert ops.decode_txn(body) == ({}, [["set", "c.1", "k", 1]])


def test_model1_body_decodes_as_model1() -> None:
    doc = ops.decode_body(ops.encode_txn({"c.1": 7}, [["clear", "c.1"]]))
    assert (doc.model, doc.base, doc.versions, doc.reads) == (1, 0, {"c.1": 7}, {})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"v": 3, "a": 0, "r": {}, "o": []}, "model-2 transaction body"),
        ({"v": 2, "a": 0, "r": {}}, "model-2 transaction body"),
        ({"v": 2, "a": 0, "r": {}, "o": [], "x": 1}, "model-2 transaction body"),
        ({"v": 2.0, "a": 0, "r": {}, "o": []}, "model-2 transaction body"),
        ({"v": 2, "a": -1, "r": {}, "o": []}, "read base index"),
        ({"v": 2, "a": 1 << 63, "r": {}, "o": []}, "read base index"),
        ({"v": 2, "a": 0, "r": [], "o": []}, "map of object id"),
        ({"v": 2, "a": 0, "r": {"": [0, []]}, "o": []}, "object id"),
        ({"v": 2, "a": 0, "r": {"c.1": [0]}, "o": []}, r"\[flags, \[keys\]\]"),
        ({"v": 2, "a": 0, "r": {"c.1": [4, []]}, "o": []}, "read flags"),
        ({"v": 2, "a": 0, "r": {"c.1": [True, []]}, "o": []}, "read flags"),
        ({"v": 2, "a": 0, "r": {"c.1": [1, "k"]}, "o": []}, "keys read"),
        ({"v": 2, "a": 0, "r": {"c.1": [1, [[1, 2]]]}, "o": []}, "key read"),
        ({"v": 2, "a": 0, "r": {}, "o": [["nope", "c.1"]]}, "op #0"),
    ],
)
def test_malformed_model2_bodies_are_refused_by_name(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ops.OpError, match=message):
        ops.decode_body(cbor2.dumps(doc))


def test_model2_keys_read_are_bounded_over_the_whole_body() -> None:
    half = ops.TXN_READ_KEYS_MAX // 2 + 1
    body = cbor2.dumps(
        {
            "v": 2,
            "a": 0,
            "r": {"a.1": [0, list(range(half))], "b.1": [0, list(range(half))]},
            "o": [],
        }
    )
    with pytest.raises(LimitExceeded, match="TXN_READ_KEYS_MAX"):
        ops.decode_body(body)


def _check_outcome(check: Any, op: Any) -> tuple[str, str] | None:
    try:
        check(op, 3)
    except Exception as exc:  # the type and message are what the comparison is about
        return type(exc).__name__, str(exc)
    return None


_oids = st.one_of(
    st.sampled_from(["o", "x" * 127, "x" * 128, "é" * 128, "é" * 127, ""]),
    st.text(max_size=3),
    st.integers(),
    st.none(),
)
_op_values = st.one_of(
    scalars,
    hashable_values,
    st.just(decimal.Decimal("sNaN")),
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
_tags = st.one_of(st.sampled_from(["set", "del", "new", "extend", "clear"]), scalars)


@settings(max_examples=1_000)
@given(
    st.one_of(
        st.tuples(st.sampled_from(["set", "del"]), _oids, _op_values, _op_values).map(list),
        st.tuples(st.sampled_from(["set", "del"]), _oids, _op_values).map(list),
        st.tuples(_tags, _oids, _op_values, _op_values).map(list),
        st.lists(st.one_of(_tags, _oids, _op_values), max_size=5),
        _op_values,
    )
)
def test_check_op_fast_path_agrees_with_the_full_checks(op: Any) -> None:
    """check_op accepts common set/del ops without the full checks: for any op it accepts or
    refuses exactly as the full checks do, with the same message."""
    assert _check_outcome(ops.check_op, op) == _check_outcome(ops.check_op_fully, op)
