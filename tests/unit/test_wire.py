"""The client protocol's frames: round trips, and hostile bytes that must only ever fail cleanly."""

from __future__ import annotations

import re

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from superstatic.protocol import wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError


def propose_frame(**overrides: object) -> bytes:
    body = {"client": "c1", "seq": 3, "seq_low": 1, "kind": "txn", "body": b"ops"}
    body.update(overrides)
    return wire.encode(wire.FrameType.PROPOSE, 9, body)


def test_propose_round_trip() -> None:
    frame = wire.decode(propose_frame(), wire.CLIENT_TO_AGENT)
    assert frame.type is wire.FrameType.PROPOSE and frame.req_id == 9
    proposal = wire.parse_propose(frame, body_bytes_max=1024)
    assert proposal == wire.Proposal("c1", 3, 1, "txn", b"ops")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"seq": 0}, "PROPOSE.seq"),
        ({"seq": True}, "PROPOSE.seq"),
        ({"seq_low": 4}, "seq_low is above"),
        ({"client": ""}, "PROPOSE.client"),
        ({"client": "x" * 65}, "above the limit 64"),
        ({"kind": "drop-tables"}, "PROPOSE.kind"),
        ({"body": "not bytes"}, "PROPOSE.body"),
    ],
)
def test_propose_rejects_bad_fields_naming_them(overrides: dict, complaint: str) -> None:
    frame = wire.decode(propose_frame(**overrides), wire.CLIENT_TO_AGENT)
    with pytest.raises(ProtocolError, match=complaint):
        wire.parse_propose(frame, body_bytes_max=1024)


def test_propose_body_above_the_limit_is_too_large_naming_it() -> None:
    frame = wire.decode(propose_frame(body=b"x" * 2048), wire.CLIENT_TO_AGENT)
    with pytest.raises(LimitExceeded, match="above the limit body_bytes_max=1024"):
        wire.parse_propose(frame, body_bytes_max=1024)


def test_direction_is_enforced() -> None:
    data = wire.encode(wire.FrameType.EVENTS, 0, {"ev": []})
    with pytest.raises(ProtocolError, match="not allowed"):
        wire.decode(data, wire.CLIENT_TO_AGENT)
    assert wire.decode(data, wire.AGENT_TO_CLIENT).type is wire.FrameType.EVENTS


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ([2, 1, 0, {}], "protocol version"),
        ([1, 999, 0, {}], "unknown frame type"),
        ([1, 1, -1, {}], "req_id"),
        ([1, 1, 0, []], "must be a map"),
        ([1, 1], "CBOR array"),
        ({"v": 1}, "CBOR array"),
    ],
)
def test_malformed_frames_are_named(raw: object, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        wire.decode(cbor2.dumps(raw), wire.CLIENT_TO_AGENT)


def test_size_limit_both_ways() -> None:
    with pytest.raises(LimitExceeded, match="FRAME_BYTES_MAX"):
        wire.encode(wire.FrameType.PING, 1, {"pad": b"x" * wire.FRAME_BYTES_MAX})
    with pytest.raises(ProtocolError, match="FRAME_BYTES_MAX"):
        wire.decode(b"\x00" * (wire.FRAME_BYTES_MAX + 1), wire.CLIENT_TO_AGENT)


def test_deep_nesting_is_refused() -> None:
    deep: object = {}
    for _ in range(wire.FRAME_DEPTH_MAX + 5):
        deep = [deep]
    with pytest.raises(ProtocolError):
        wire.decode(cbor2.dumps([1, 8, 1, {"x": deep}]), wire.CLIENT_TO_AGENT)


@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_protocol_error(data: bytes) -> None:
    try:
        frame = wire.decode(data, wire.CLIENT_TO_AGENT)
    except ProtocolError:
        return
    assert frame.type in wire.CLIENT_TO_AGENT


@given(st.lists(st.integers(0, 255), min_size=1, max_size=64))
def test_mutated_valid_frames_fail_cleanly(flips: list[int]) -> None:
    data = bytearray(propose_frame())
    for i, value in enumerate(flips):
        data[(i * 7) % len(data)] = value
    try:
        frame = wire.decode(bytes(data), wire.CLIENT_TO_AGENT)
        if frame.type is wire.FrameType.PROPOSE:
            wire.parse_propose(frame, body_bytes_max=1024)
    except ProtocolError:
        pass


def members_frame(**body: object) -> wire.Frame:
    return wire.decode(wire.encode(wire.FrameType.MEMBERS, 5, dict(body)), wire.CLIENT_TO_AGENT)


def test_members_round_trip() -> None:
    frame = members_frame(op="add_learner", node="d", address="tcp://127.0.0.1:7404")
    assert wire.parse_members(frame) == wire.MembersRequest(
        "add_learner", "d", "tcp://127.0.0.1:7404"
    )
    assert wire.parse_members(members_frame(op="promote", node="d")) == wire.MembersRequest(
        "promote", "d", ""
    )
    assert wire.parse_members(members_frame(op="transfer", node="b", address="")).op == "transfer"


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"op": "demote", "node": "d"}, "MEMBERS.op"),
        ({"op": None, "node": "d"}, "MEMBERS.op"),
        ({"op": "remove"}, "MEMBERS.node"),
        ({"op": "remove", "node": 7}, "MEMBERS.node"),
        ({"op": "remove", "node": "x" * 65}, "above the limit 64"),
        ({"op": "add_learner", "node": "d"}, "MEMBERS.address"),
        ({"op": "add_learner", "node": "d", "address": "http://x"}, "peer endpoint"),
        ({"op": "add_learner", "node": "d", "address": "tcp://"}, "peer endpoint"),
        ({"op": "add_learner", "node": "d", "address": "tcp://" + "é" * 600}, "above the limit"),
        ({"op": "promote", "node": "d", "address": "tcp://h:1"}, "only for add_learner"),
    ],
)
def test_members_rejects_bad_fields_naming_them(body: dict, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        wire.parse_members(members_frame(**body))


def many_frame(items: object, **fields: object) -> bytes:
    body = {"client": "c" * 32, "seq_low": 1, "session": 5, "items": items, **fields}
    return wire.encode(wire.FrameType.PROPOSE_MANY, 9, body)


def test_propose_many_round_trip_and_items_refused_alone() -> None:
    data = many_frame(
        [[11, 1, "txn", b"a"], [12, 2, "txn", "not bytes"], [13, 3, "open", b"", True]]
    )
    frame = wire.decode(data, wire.CLIENT_TO_AGENT)
    first, bad, last = wire.check_client_body(frame, body_bytes_max=1024)  # type: ignore[misc]
    assert first.req_id == 11 and first.proposal == wire.Proposal("c" * 32, 1, 1, "txn", b"a", 5)
    assert bad.req_id == 12 and bad.proposal is None and "body" in str(bad.error)
    assert last.trace and last.proposal is not None and last.proposal.kind == "open"


@pytest.mark.parametrize(
    ("items", "fields", "complaint"),
    [
        ({}, {}, "items must be a non-empty list"),
        ([], {}, "items must be a non-empty list"),
        ([[1, 1, "txn"]], {}, "items[0] must be"),
        ([[1, 1, "txn", b""], [1, 2, "txn", b""]], {}, "unique"),
        ([[1, 1, "txn", b""]], {"client": ""}, "client"),
        ([[1, 1, "txn", b""]], {"session": -1}, "session"),
    ],
)
def test_propose_many_frame_errors_name_the_field(
    items: object, fields: dict, complaint: str
) -> None:
    frame = wire.decode(many_frame(items, **fields), wire.CLIENT_TO_AGENT)
    with pytest.raises(ProtocolError, match=re.escape(complaint)):
        wire.check_client_body(frame, body_bytes_max=1024)


def test_propose_many_above_its_item_count_is_too_large_naming_the_limit() -> None:
    items = [[i, i + 1, "txn", b""] for i in range(wire.PROPOSE_ITEMS_MAX + 1)]
    frame = wire.decode(many_frame(items), wire.CLIENT_TO_AGENT)
    with pytest.raises(LimitExceeded) as caught:
        wire.check_client_body(frame, body_bytes_max=1024)
    assert caught.value.limit_name == "PROPOSE_ITEMS_MAX"


def test_only_propose_many_frames_get_the_larger_item_bound() -> None:
    # 300 CBOR items: above CLIENT_FRAME_ITEMS_MAX for a PING, within a PROPOSE_MANY's bound.
    padding = list(range(300))
    with pytest.raises(LimitExceeded) as caught:
        wire.decode(wire.encode(wire.FrameType.PING, 1, {"pad": padding}), wire.CLIENT_TO_AGENT)
    assert caught.value.limit_name == "CLIENT_FRAME_ITEMS_MAX"
    frame = wire.decode(many_frame([[1, 1, "txn", b""]], pad=padding), wire.CLIENT_TO_AGENT)
    assert frame.type is wire.FrameType.PROPOSE_MANY
    items = [[i, i + 1, "txn", b""] for i in range(wire.PROPOSE_MANY_FRAME_ITEMS_MAX // 5)]
    with pytest.raises(LimitExceeded) as caught:
        wire.decode(many_frame(items), wire.CLIENT_TO_AGENT)
    assert caught.value.limit_name == "PROPOSE_MANY_FRAME_ITEMS_MAX"


@given(
    st.lists(
        st.one_of(
            st.lists(
                st.one_of(st.integers(-2, 2**65), st.text(max_size=5), st.binary(max_size=5)),
                max_size=6,
            ),
            st.integers(),
            st.none(),
        ),
        max_size=8,
    )
)
def test_hostile_propose_many_items_only_ever_raise_named_errors(items: list[object]) -> None:
    try:
        frame = wire.decode(many_frame(items), wire.CLIENT_TO_AGENT)
        parsed = wire.check_client_body(frame, body_bytes_max=1024)
    except (ProtocolError, LimitExceeded):
        return
    assert isinstance(parsed, list) and len(parsed) == len(items)
    for item in parsed:
        assert (item.proposal is None) != (item.error is None)
