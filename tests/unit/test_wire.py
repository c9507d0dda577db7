"""The client protocol's frames: round trips, and hostile bytes that must only ever fail cleanly."""

from __future__ import annotations

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
