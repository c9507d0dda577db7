"""Hostile bytes at the decoders (issue 8, reproductions 2 and 4): every one is refused by a
bounded scan, cheaply, with a message that names the field, its type and size and the limit,
never the value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import re
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import peer_codec
from superstatic_agent.admission import SessionAdmission

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import hostile

from superstatic.protocol import codec, ops, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

# A refusal must be cheap: generous liveness bound only (the scans take well under 1 ms).
REFUSAL_S_MAX = 2.0
# Python memory a refusal may allocate (the frame itself is allocated before measuring).
REFUSAL_BYTES_MAX = 1 << 20
# Longest run of digits a message may hold: limits and sizes are short numbers; a value
# (a 10,000-digit int) never appears.
DIGITS_RUN_MAX = 20
MESSAGE_CHARS_MAX = 400

GENEROUS = codec.DecodeLimits(
    what="test value",
    bytes_max=1 << 24,
    bytes_name="B",
    items_max=1 << 20,
    items_name="I",
    depth_max=codec.DECODE_DEPTH_MAX,
    depth_name="D",
    str_keys_only=False,
)


def refused(call: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    """Runs a decoder expected to refuse; checks the refusal was cheap and its message clean."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        call(*args, **kwargs)
    except ProtocolError as exc:
        error = exc
    else:
        raise AssertionError("accepted")
    finally:
        took_s = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert took_s < REFUSAL_S_MAX, took_s
    assert peak < REFUSAL_BYTES_MAX, peak
    clean_message(str(error))
    return error


def clean_message(message: str) -> None:
    assert len(message) < MESSAGE_CHARS_MAX, message[:MESSAGE_CHARS_MAX]
    runs = re.findall(r"\d+", message)
    assert all(len(run) <= DIGITS_RUN_MAX for run in runs), message
    assert "[[" not in message, message  # no structure printed


# -- the reproductions ---------------------------------------------------------------------


def test_a_shared_reference_dag_in_a_280_byte_client_frame_is_refused_at_once() -> None:
    data = hostile.dag_client_frame()
    assert len(data) < 300
    error = refused(wire.decode, data, wire.CLIENT_TO_AGENT)
    assert "tag" in str(error) and error.reason == "tag"  # type: ignore[attr-defined]
    assert wire.salvage_req_id(data) is None  # its version is no int: nothing to answer


def test_a_shared_reference_dag_in_a_634_byte_peer_frame_is_refused_at_once() -> None:
    data = hostile.dag_peer_frame()
    assert len(data) < 700
    refused(peer_codec.decode, data)


def test_regex_mime_ip_fraction_tags_are_never_built() -> None:
    data = hostile.client_frame(int(wire.FrameType.PING), 3, hostile.semantic_tags_body())
    refused(wire.decode, data, wire.CLIENT_TO_AGENT)
    assert wire.salvage_req_id(data) == 3  # answerable: the agent says bad_request


def test_a_15_mib_ping_of_empty_arrays_is_refused_at_its_header() -> None:
    data = hostile.empty_arrays_ping()
    error = refused(wire.decode, data, wire.CLIENT_TO_AGENT)
    assert isinstance(error, LimitExceeded)
    assert error.limit_name == "CLIENT_FRAME_ITEMS_MAX", error
    assert wire.salvage_req_id(data) == 9


@pytest.mark.parametrize("field", ["seq", "seq_low", "version", "req_id"])
def test_a_huge_int_in_a_client_frame_is_a_clean_protocol_error(field: str) -> None:
    if field == "version":
        data = hostile.client_frame(8, 1, hostile.cmap([]), version=hostile.HUGE_INT)
    elif field == "req_id":
        data = hostile.arr(hostile.uint(1), hostile.uint(8), hostile.HUGE_INT, hostile.cmap([]))
    else:
        data = hostile.propose(4, **{field: hostile.HUGE_INT})
    with contextlib.suppress(ProtocolError):
        frame = wire.decode(data, wire.CLIENT_TO_AGENT)
        # Decoded: the field check refuses it.
        error = refused(wire.check_client_body, frame, body_bytes_max=1 << 20)
        assert field in str(error)
        return
    refused(wire.decode, data, wire.CLIENT_TO_AGENT)


@pytest.mark.parametrize("field", ["term", "index", "commit"])
def test_a_huge_int_in_a_peer_frame_is_a_clean_protocol_error(field: str) -> None:
    error = refused(peer_codec.decode, hostile.peer_msg(**{field: hostile.HUGE_INT}))
    assert field in str(error) and "bits" in str(error)


@pytest.mark.parametrize("value", [hostile.arr(hostile.text("txn")), hostile.cmap([])])
def test_kind_or_op_as_a_list_or_map_is_a_clean_protocol_error(value: bytes) -> None:
    frame = wire.decode(hostile.propose(5, kind=value), wire.CLIENT_TO_AGENT)
    assert "PROPOSE.kind" in str(refused(wire.parse_propose, frame, body_bytes_max=1024))
    members = hostile.client_frame(
        int(wire.FrameType.MEMBERS), 6, hostile.cmap([(hostile.text("op"), value)])
    )
    frame = wire.decode(members, wire.CLIENT_TO_AGENT)
    assert "MEMBERS.op" in str(refused(wire.parse_members, frame))
    body = codec.dumps({"r": {}, "o": [[["set"], "x.1", "k", 1]]})
    assert "op #0" in str(refused(ops.decode_txn, body))


# -- the scan itself -----------------------------------------------------------------------


def native_tags() -> list[int]:
    """Every tag number below 2**16 (and a few above) that cbor2 decodes itself."""
    found = []
    for number in [*range(1 << 16), 1 << 20, 1 << 32, (1 << 64) - 1]:
        calls: list[int] = []

        def hook(_tag: cbor2.CBORTag, _immutable: bool, calls: list[int] = calls) -> None:
            calls.append(1)

        with contextlib.suppress(Exception):
            cbor2.loads(hostile.tag(number, hostile.uint(0)), tag_hook=hook)
        if not calls:
            found.append(number)
    return found


def test_every_native_cbor2_tag_outside_the_registry_is_refused_by_both_paths() -> None:
    natives = native_tags()
    assert 28 in natives and 35 in natives  # the enumeration sees them
    for number in natives:
        if number in codec.REGISTERED_TAGS:
            continue
        data = hostile.tag(number, hostile.uint(0))
        # With limits: the scan refuses before cbor2 sees it.
        with pytest.raises(ProtocolError, match="registry"):
            codec.scan(data, GENEROUS)
        # Without (records the agent wrote itself): cbor2's own decoder is switched off.
        with pytest.raises(ProtocolError):
            codec.loads(data)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x9f\x01\xff", "indefinite"),  # indefinite array
        (b"\x5f\x41\x00\xff", "indefinite"),  # indefinite byte string
        (b"\xf7", "simple value"),  # undefined
        (b"\xf0", "simple value"),  # simple(16)
        (b"\xf8\x20", "simple value"),  # simple(32)
        (b"\x01\x02", "after its CBOR item"),  # trailing bytes
        (b"\x5a\xff\xff\xff\xff", "truncated"),  # a 4 GiB byte string promised in 5 bytes
        (b"\x9b" + b"\xff" * 8, "I="),  # an array of 2**64 - 1 items: refused at its header
        (b"\xa1\x01\x02", "map key"),  # an int map key (strict)
    ],
)
def test_malformed_or_outlandish_cbor_is_refused_by_name(data: bytes, needle: str) -> None:
    limits = dataclasses.replace(GENEROUS, str_keys_only=True)
    with pytest.raises(ProtocolError, match=needle):
        codec.scan(data, limits)


def test_depth_and_items_limits_name_themselves() -> None:
    tight = codec.DecodeLimits("frame", 100, "BYTES", 5, "ITEMS", 2, "DEPTH")
    with pytest.raises(LimitExceeded, match="DEPTH=2"):
        codec.scan(cbor2.dumps([[[1]]]), tight)
    with pytest.raises(LimitExceeded, match="ITEMS=5"):
        codec.scan(cbor2.dumps([1, 2, 3, 4, 5]), tight)
    with pytest.raises(LimitExceeded, match="BYTES=100"):
        codec.scan(cbor2.dumps(b"x" * 200), tight)
    assert codec.scan(cbor2.dumps([1, [2]]), tight) == 4


def test_a_decimal_mantissa_is_bounded_before_its_quadratic_conversion() -> None:
    small = decimal.Decimal("-1234567890.0987654321")
    assert codec.loads(codec.dumps(small), GENEROUS) == small
    big_mantissa = hostile.tag(4, hostile.arr(hostile.uint(5), hostile.bignum(8 * 100_000)))
    error = refused(codec.loads, big_mantissa, GENEROUS)
    assert isinstance(error, LimitExceeded)
    assert error.limit_name == "DECIMAL_MANTISSA_BYTES_MAX"
    with pytest.raises(ProtocolError, match="Decimal"):
        codec.scan(hostile.tag(4, hostile.text("1.5")), GENEROUS)


values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.floats(),
        st.text(max_size=10),
        st.binary(max_size=10),
        st.decimals(allow_nan=False, allow_infinity=False),
        st.uuids(),
        st.datetimes(),
        st.builds(codec.Ref, st.text(min_size=1, max_size=10)),
    ),
    # Tuples only: lists are nodes, never inline values (cbor2 decodes arrays in a tag as tuples).
    lambda inner: st.lists(inner, max_size=4).map(tuple),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_scan_admits_everything_the_codec_writes(value: Any) -> None:
    data = codec.dumps(value)
    assert codec.scan(data, GENEROUS) >= 1
    back = codec.loads(data, GENEROUS)
    assert codec.dumps(back) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_the_scan_and_cbor2_agree_on_random_bytes(data: bytes) -> None:
    """Whatever the scan admits, cbor2 decodes (or refuses cleanly): never an exception of
    another kind, never more items than counted."""
    try:
        codec.scan(data, GENEROUS)
    except ProtocolError:
        return
    with contextlib.suppress(ProtocolError):
        codec.loads(data, GENEROUS)


# -- no value in any message ---------------------------------------------------------------

SENTINEL = "SENTINEL7"
sentinels = st.sampled_from(
    [
        SENTINEL,
        [SENTINEL],
        {SENTINEL: SENTINEL},
        SENTINEL.encode(),
        -1,
        2**70,
        True,
        None,
        [[SENTINEL] * 3] * 3,
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["client", "seq", "seq_low", "kind", "body", "stream"]),
    sentinels,
    st.sampled_from(list(wire.CLIENT_TO_AGENT)),
)
def test_client_refusals_never_quote_the_value(field: str, value: Any, frame_type: Any) -> None:
    body = {"client": "c1", "seq": 3, "seq_low": 1, "kind": "txn", "body": b"", "root": "r"}
    body.update({"op": "remove", "node": "a", "from": 0})
    body[field] = value
    for key in ("root", "node", "op", "from"):
        if field in ("client", "kind"):
            body[key] = value
    data = cbor2.dumps([1, int(frame_type), 1, body])
    try:
        frame = wire.decode(data, wire.CLIENT_TO_AGENT)
        wire.check_client_body(frame, body_bytes_max=1024)
    except (ProtocolError, LimitExceeded) as exc:
        assert SENTINEL not in str(exc), exc
        assert str(2**70) not in str(exc), exc


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=2, max_value=13), sentinels)
def test_peer_refusals_never_quote_the_value(position: int, value: Any) -> None:
    fields: list[Any] = [1, 0, 7, "a", "b", 1, 0, 0, b"", 0, False, 0, b"", None]
    fields[position] = value
    try:
        peer_codec.decode(cbor2.dumps(fields))
    except ProtocolError as exc:
        assert SENTINEL not in str(exc), exc
        assert str(2**70) not in str(exc), exc


# -- names replicas cannot set, versions beyond 63 bits -----------------------------------


def test_dunder_attribute_names_are_refused_in_every_op_that_sets_them() -> None:
    new_obj = ["new", "x.1", "obj", ["K", [["__class__", 1]]]]
    with pytest.raises(ops.OpError, match="dunder"):
        ops.check_op(new_obj)
    obj: dict[str, Any] = {}
    for op in (["set", "x.1", "__dict__", 1], ["del", "x.1", "__class__"]):
        with pytest.raises(ops.OpError, match="dunder"):
            ops.apply_op("obj", obj, op)
    ops.apply_op("obj", obj, ["set", "x.1", "_private", 1])  # one underscore is data
    ops.apply_op("obj", obj, ["set", "x.1", "__", 1])  # not a dunder either
    mapping: dict[str, Any] = {}
    ops.apply_op("dict", mapping, ["set", "x.2", "__class__", 1])  # a dict key is data
    assert mapping == {"__class__": 1} and obj == {"_private": 1, "__": 1}


def test_read_versions_beyond_63_bits_are_refused_without_their_digits() -> None:
    body = codec.dumps({"r": {"x.1": -(10**5000)}, "o": []})
    error = refused(ops.decode_txn, body)
    assert "read version" in str(error)
    with pytest.raises(ProtocolError, match="read version"):
        ops.decode_txn(codec.dumps({"r": {"x.1": 1 << 63}, "o": []}))


def test_a_transaction_body_is_bounded_in_items() -> None:
    body = hostile.cmap(
        [
            (hostile.text("r"), hostile.cmap([])),
            (hostile.text("o"), hostile.head(4, ops.TXN_ITEMS_MAX) + b"\x80" * 16),
        ]
    )
    error = refused(ops.decode_txn, body)
    assert isinstance(error, LimitExceeded) and error.limit_name == "TXN_ITEMS_MAX"


# -- session fairness ----------------------------------------------------------------------


def test_sessions_are_bounded_per_connection_and_per_address() -> None:
    admission = SessionAdmission(per_connection_max=2, per_address_max=3, idle_ms=1_000)
    assert admission.admit(b"c1", "10.0.0.1", "s1", 0.0) is None
    assert admission.admit(b"c1", "10.0.0.1", "s2", 0.0) is None
    assert admission.admit(b"c1", "10.0.0.1", "s1", 0.1) is None  # known: always admitted
    refusal = admission.admit(b"c1", "10.0.0.1", "s3", 0.1)
    assert refusal is not None and "sessions_per_connection_max=2" in refusal
    assert admission.admit(b"c2", "10.0.0.1", "s3", 0.1) is None
    refusal = admission.admit(b"c3", "10.0.0.1", "s4", 0.1)
    assert refusal is not None and "sessions_per_address_max=3" in refusal
    assert admission.admit(b"c3", "10.0.0.2", "s4", 0.1) is None  # another address
    assert admission.admit(b"c3", "10.0.0.1", "s1", 0.1) is None  # s1 already counted there
    admission.forget(b"c1", "10.0.0.1", "s2")  # closed
    assert admission.admit(b"c1", "10.0.0.1", "s5", 0.2) is None
    # Not heard from for the idle time: forgotten.
    admission.sweep(5.0)
    assert admission.counts() == (0, 0)
