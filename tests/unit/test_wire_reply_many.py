"""REPLY_MANY (docs/data-model-v2.md 8.11): the REPLYs one Ready gives one connection in one
frame, and the write frames' flag saying the connection reads it. Round trips, limits, and
hostile bodies that must only ever fail with a named error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from superstatic.protocol import wire
from superstatic.protocol.errors import ProtocolError


def reply_many_frame(items: object) -> wire.Frame:
    data = wire.encode(wire.FrameType.REPLY_MANY, 0, {"items": items})
    return wire.decode(data, wire.AGENT_TO_CLIENT)


def test_reply_many_round_trip() -> None:
    replies = [
        [7, {"index": 10, "outcome": "ok", "dup": False}],
        [9, {"index": 11, "outcome": "conflict", "error": "x", "dup": False}],
    ]
    data = wire.encode(wire.FrameType.REPLY_MANY, 0, wire.reply_many_body(replies))
    frame = wire.decode(data, wire.AGENT_TO_CLIENT)
    assert frame.type is wire.FrameType.REPLY_MANY
    assert wire.parse_reply_many(frame.body) == [(7, replies[0][1]), (9, replies[1][1])]


def test_reply_many_goes_only_from_agent_to_app() -> None:
    data = wire.encode(wire.FrameType.REPLY_MANY, 0, {"items": [[1, {}]]})
    with pytest.raises(ProtocolError, match="not allowed"):
        wire.decode(data, wire.CLIENT_TO_AGENT)


def test_reply_many_above_its_item_count_names_the_limit() -> None:
    items = [[i, {"index": i, "outcome": "ok"}] for i in range(wire.REPLY_ITEMS_MAX + 1)]
    frame = reply_many_frame(items)
    with pytest.raises(ProtocolError, match=f"REPLY_ITEMS_MAX={wire.REPLY_ITEMS_MAX}"):
        wire.parse_reply_many(frame.body)
    assert len(wire.parse_reply_many({"items": items[:-1]})) == wire.REPLY_ITEMS_MAX


@pytest.mark.parametrize(
    ("items", "complaint"),
    [
        (None, r"REPLY_MANY.items must be a non-empty list, got None"),
        ([], r"REPLY_MANY.items must be a non-empty list, got a list of 0 items"),
        ({"1": {}}, r"REPLY_MANY.items must be a non-empty list, got a dict"),
        ([[1, {}], [2]], r"REPLY_MANY.items\[1\] must be \[req_id, map\]"),
        ([[-1, {}]], r"REPLY_MANY.items\[0\]"),
        ([[1 << 64, {}]], r"REPLY_MANY.items\[0\]"),
        ([[True, {}]], r"REPLY_MANY.items\[0\]"),
        ([["1", {}]], r"REPLY_MANY.items\[0\]"),
        ([[1, [1]]], r"REPLY_MANY.items\[0\]"),
        ([[1, {}, 3]], r"REPLY_MANY.items\[0\]"),
    ],
)
def test_reply_many_refuses_bad_items_naming_them_never_their_values(
    items: object, complaint: str
) -> None:
    with pytest.raises(ProtocolError, match=complaint) as caught:
        wire.parse_reply_many({"items": items})
    assert "secret" not in str(caught.value)


def test_a_bad_item_refuses_the_whole_frame_never_its_value() -> None:
    with pytest.raises(ProtocolError) as caught:
        wire.parse_reply_many({"items": [[1, {}], [2, "secret" * 10]]})
    assert "secret" not in str(caught.value) and "a str of 60 chars" in str(caught.value)


@given(
    st.lists(
        st.one_of(
            st.lists(
                st.one_of(
                    st.integers(-2, 2**65),
                    st.booleans(),
                    st.text(max_size=5),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                ),
                max_size=3,
            ),
            st.integers(),
            st.none(),
        ),
        max_size=8,
    )
)
def test_hostile_reply_many_items_only_ever_raise_named_errors(items: list[object]) -> None:
    try:
        parsed = wire.parse_reply_many({"items": items})
    except ProtocolError:
        return
    assert len(parsed) == len(items)
    for req_id, body in parsed:
        assert type(req_id) is int and 0 <= req_id <= wire.REQ_ID_MAX and type(body) is dict


def write_frame(frame_type: wire.FrameType, **fields: Any) -> wire.Frame:
    if frame_type is wire.FrameType.PROPOSE:
        body: dict[str, Any] = {"client": "c1", "seq": 3, "seq_low": 1, "body": b"ops"}
    else:
        body = {"client": "c1", "seq_low": 1, "items": [[11, 1, "txn", b"a"], [12, 2, "txn", 3]]}
    body.update(fields)
    return wire.decode(wire.encode(frame_type, 9, body), wire.CLIENT_TO_AGENT)


def proposals(frame: wire.Frame) -> list[wire.Proposal]:
    parsed = wire.check_client_body(frame, body_bytes_max=1024)
    if isinstance(parsed, wire.Proposal):
        return [parsed]
    assert isinstance(parsed, list)
    return [item.proposal for item in parsed if item.proposal is not None]


@pytest.mark.parametrize("frame_type", [wire.FrameType.PROPOSE, wire.FrameType.PROPOSE_MANY])
def test_the_write_frames_flag_is_carried_to_each_proposal(frame_type: wire.FrameType) -> None:
    # An app that predates REPLY_MANY sends no flag: its writes are answered by REPLYs.
    assert [p.reply_many for p in proposals(write_frame(frame_type))] == [False]
    flagged = write_frame(frame_type, **{wire.REPLY_MANY_FIELD: True})
    assert [p.reply_many for p in proposals(flagged)] == [True]


@pytest.mark.parametrize("frame_type", [wire.FrameType.PROPOSE, wire.FrameType.PROPOSE_MANY])
@pytest.mark.parametrize("value", [1, "yes", None, [True]])
def test_a_flag_that_is_not_a_boolean_refuses_the_frame_naming_it(
    frame_type: wire.FrameType, value: object
) -> None:
    frame = write_frame(frame_type, **{wire.REPLY_MANY_FIELD: value})
    with pytest.raises(ProtocolError, match=f"{frame_type.name}.reply_many must be a boolean"):
        wire.check_client_body(frame, body_bytes_max=1024)
