"""The virtual heap's frames (docs/virtual-heap.md section 2.2): LOAD, DROP, HOLD, SUBSCRIBE's
heap fields and LOADED round trip through wire.py, and hostile bodies fail cleanly, naming the
field or the limit, never quoting the value."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from superstatic.protocol import codec, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError


def decoded(frame_type: wire.FrameType, body: dict[str, Any]) -> wire.Frame:
    return wire.decode(wire.encode(frame_type, 7, body), wire.CLIENT_TO_AGENT)


def checked(frame_type: wire.FrameType, body: dict[str, Any]) -> Any:
    return wire.check_client_body(decoded(frame_type, body), body_bytes_max=1 << 20)


def test_load_round_trip() -> None:
    body = wire.load_body(3, ["c.1", "c.2"], [("@roots", ["a", 1, (1, "x")])], prefetch_bytes=512)
    request = checked(wire.FrameType.LOAD, body)
    assert request == wire.HeapRequest(
        wire.FrameType.LOAD,
        3,
        ("c.1", "c.2"),
        (("@roots", ("a", 1, (1, "x"))),),
        prefetch_bytes=512,
    )
    assert request.key_count() == 3


def test_drop_and_hold_round_trip() -> None:
    drop = checked(wire.FrameType.DROP, wire.drop_body(3, ["c.1"]))
    assert (drop.type, drop.sub, drop.oids, drop.keys) == (wire.FrameType.DROP, 3, ("c.1",), ())
    hold = checked(wire.FrameType.HOLD, wire.hold_body(3, 2, False, ["c.1", "c.9"]))
    assert (hold.part, hold.last, hold.oids) == (2, False, ("c.1", "c.9"))


def test_subscribe_heap_fields() -> None:
    plain = checked(wire.FrameType.SUBSCRIBE, {"from": 5, "model": wire.DATA_MODEL})
    assert plain == wire.Subscription(5, "all", "", 0), "without heap: everything, as today"
    body = wire.subscribe_body(9, heap="partial", client="c1", hold_parts=3)
    assert checked(wire.FrameType.SUBSCRIBE, body) == wire.Subscription(9, "partial", "c1", 3)


@pytest.mark.parametrize(
    ("frame_type", "body", "complaint"),
    [
        (wire.FrameType.LOAD, {"sub": 1, "oids": ["c.1"]}, "LOAD.oids must be a byte string"),
        (wire.FrameType.LOAD, {"sub": 0, "oids": cbor2.dumps(["c.1"])}, "LOAD.sub"),
        (wire.FrameType.LOAD, {"sub": 1 << 64, "oids": cbor2.dumps(["a"])}, "LOAD.sub"),
        (wire.FrameType.LOAD, {"sub": "1", "oids": cbor2.dumps(["a"])}, "LOAD.sub"),
        (wire.FrameType.LOAD, {"sub": 1, "oids": cbor2.dumps({"a": 1})}, "CBOR array of oids"),
        (wire.FrameType.LOAD, {"sub": 1, "oids": cbor2.dumps([1])}, "LOAD.oids[0]"),
        (wire.FrameType.LOAD, {"sub": 1, "oids": cbor2.dumps([""])}, "LOAD.oids[0]"),
        (wire.FrameType.LOAD, {"sub": 1, "oids": cbor2.dumps(["x" * 129])}, "1..128"),
        (wire.FrameType.LOAD, {"sub": 1, "oids": b"\xff\x00"}, "LOAD.oids"),
        (wire.FrameType.LOAD, {"sub": 1, "oids": cbor2.dumps([])}, "names no oid"),
        (
            wire.FrameType.LOAD,
            {"sub": 1, "oids": cbor2.dumps(["a"]), "prefetch_bytes": -1},
            "LOAD.prefetch_bytes",
        ),
        (
            wire.FrameType.LOAD,
            {"sub": 1, "oids": cbor2.dumps(["a"]), "keys": cbor2.dumps([["a", "k"]])},
            "LOAD.keys[0]",
        ),
        (
            wire.FrameType.LOAD,
            {"sub": 1, "oids": cbor2.dumps(["a"]), "keys": cbor2.dumps([[1, ["k"]]])},
            "LOAD.keys[0] oid",
        ),
        (wire.FrameType.HOLD, {"sub": 1, "oids": cbor2.dumps(["a"]), "part": 0}, "HOLD.last"),
        (
            wire.FrameType.HOLD,
            {"sub": 1, "oids": cbor2.dumps(["a"]), "part": -1, "last": True},
            "HOLD.part",
        ),
        (wire.FrameType.SUBSCRIBE, {"from": 0, "heap": "some"}, "SUBSCRIBE.heap"),
        (wire.FrameType.SUBSCRIBE, {"from": 0, "heap": ["all"]}, "SUBSCRIBE.heap"),
        (wire.FrameType.SUBSCRIBE, {"from": 0, "client": 5}, "SUBSCRIBE.client"),
        (
            wire.FrameType.SUBSCRIBE,
            {"from": 0, "heap": "partial", "hold_parts": 1 << 70},
            "SUBSCRIBE.hold_parts",
        ),
        (wire.FrameType.SUBSCRIBE, {"from": 0, "hold_parts": 2}, "only for heap 'partial'"),
    ],
)
def test_malformed_heap_bodies_are_refused_naming_the_field(
    frame_type: wire.FrameType, body: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ProtocolError, match=re.escape(complaint)) as refused:
        checked(frame_type, body)
    assert not isinstance(refused.value, LimitExceeded), "malformed is bad_request, not too_large"


@pytest.mark.parametrize(
    ("frame_type", "oids", "keys", "limit"),
    [
        (wire.FrameType.LOAD, wire.LOAD_OIDS_MAX + 1, 0, "LOAD_OIDS_MAX"),
        (wire.FrameType.DROP, wire.LOAD_OIDS_MAX + 1, 0, "LOAD_OIDS_MAX"),
        (wire.FrameType.LOAD, 1, wire.LOAD_KEYS_MAX + 1, "LOAD_KEYS_MAX"),
        (wire.FrameType.HOLD, wire.HOLD_OIDS_MAX + 1, 0, "HOLD_OIDS_MAX"),
    ],
)
def test_too_many_oids_or_keys_is_too_large_naming_the_limit(
    frame_type: wire.FrameType, oids: int, keys: int, limit: str
) -> None:
    body = {
        "sub": 1,
        "oids": cbor2.dumps([f"c.{i}" for i in range(oids)]),
        "keys": codec.dumps([["d.1", list(range(keys))]]),
        "part": 0,
        "last": True,
    }
    with pytest.raises(LimitExceeded, match=limit) as refused:
        checked(frame_type, body)
    assert refused.value.limit_name == limit


def test_the_limits_themselves_pass() -> None:
    body = wire.load_body(
        1, [f"c.{i}" for i in range(wire.LOAD_OIDS_MAX)], [("d.1", list(range(wire.LOAD_KEYS_MAX)))]
    )
    request = checked(wire.FrameType.LOAD, body)
    assert len(request.oids) == wire.LOAD_OIDS_MAX and request.key_count() == wire.LOAD_KEYS_MAX


def test_a_refusal_never_quotes_the_value() -> None:
    secret = "s3cr3t-" * 30
    with pytest.raises(ProtocolError) as refused:
        checked(wire.FrameType.LOAD, {"sub": 1, "oids": cbor2.dumps([secret])})
    assert "s3cr3t" not in str(refused.value)


def test_loaded_envelope() -> None:
    body = wire.loaded_body(12, 0, True, 7, [[wire.ITEM_ABSENT, "c.1"]], 1_000)
    data = wire.encode(wire.FrameType.LOADED, 3, body)
    frame = wire.decode(data, wire.AGENT_TO_CLIENT)
    assert wire.parse_loaded(frame.body) == wire.Loaded(
        12, 0, True, 7, [[wire.ITEM_ABSENT, "c.1"]], 1_000
    )
    for field, bad in [("index", -1), ("last", 1), ("fmt", 1), ("items", {}), ("load", None)]:
        with pytest.raises(ProtocolError, match=f"LOADED.{field}"):
            wire.parse_loaded({**body, field: bad})


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([wire.FrameType.LOAD, wire.FrameType.DROP, wire.FrameType.HOLD]),
    st.dictionaries(
        st.sampled_from(["sub", "oids", "keys", "prefetch_bytes", "part", "last", "x"]),
        st.one_of(
            st.integers(min_value=-(1 << 70), max_value=1 << 70),
            st.binary(max_size=64),
            st.text(max_size=8),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=3),
        ),
    ),
)
def test_hostile_heap_bodies_fail_only_cleanly(frame_type: wire.FrameType, body: dict) -> None:
    with contextlib.suppress(ProtocolError, LimitExceeded):
        checked(frame_type, body)
