"""EVENTS bodies assembled from per-event bytes (agent/eventframes.py, docs/virtual-heap.md
section 4.2): byte-identical to encoding the whole frame, "to"/"t" on every frame, the bodies
kept across turns for subscribers at the same position; and the library's StreamFeeder reading
"to" in an unfiltered and a filtered stream."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import eventframes, streams
from support.stream_harness import Harness

from superstatic.client.stream import Event, ProtocolError, StreamFeeder, StreamGap
from superstatic.protocol import wire
from superstatic.protocol.codec import Ref

_oids = st.text(alphabet="abc.0123456789", min_size=1, max_size=12)
_events = st.tuples(
    st.integers(min_value=1, max_value=(1 << 63) - 1),
    st.one_of(st.none(), st.text(max_size=20)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=(1 << 63) - 1)),
    st.sampled_from(["ok", "conflict", "noop", "dup"]),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.tuples(*[_oids] * 2) | st.just(()),
    st.integers(min_value=0, max_value=(1 << 63) - 1),
    st.lists(
        st.tuples(_oids, st.sampled_from(["dict", "obj", "list", "set"]), st.none() | _oids),
        max_size=3,
    ).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_events, max_size=30),
    st.integers(min_value=0, max_value=(1 << 63) - 1),
    st.integers(min_value=0, max_value=(1 << 63) - 1),
)
def test_assembled_bodies_are_byte_identical_to_encoded_frames(
    events: list[Any], to: int, log_time_ms: int
) -> None:
    items = [eventframes.event_item(event) for event in events]
    body = eventframes.events_body(items, to, log_time_ms)
    whole = {
        "ev": [[*e[:5], list(e[5]), e[6], [list(h) for h in e[7]]] for e in events],
        "to": to,
        "t": log_time_ms,
    }
    assert body == cbor2.dumps(whole)
    assert streams.frame_bytes(wire.FrameType.EVENTS, 9, body) == wire.encode(
        wire.FrameType.EVENTS, 9, whole
    )


def _frames(h: Harness, identity: bytes) -> list[wire.Frame]:
    return [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in h.clients.sent if who == identity]


def test_every_events_frame_says_how_far_it_reaches(tmp_path: Path) -> None:
    h = Harness(tmp_path, events_frame_entries_max=4)
    try:
        h.commit([["new", "@roots", "dict", [["d", Ref("c.1")]]], ["new", "c.1", "dict", []]])
        h.subscribe(b"app", 5, start=1)
        for i in range(10):
            h.commit([["set", "c.1", "k", i]])
        h.streams.pump(h.index, now=0.0)
        frames = _frames(h, b"app")
        assert [f.type for f in frames] == [wire.FrameType.EVENTS] * 3
        covered = []
        for frame in frames:
            events = frame.body["ev"]
            assert frame.body["to"] == events[-1][0] and frame.body["t"] == events[-1][6]
            assert all(len(event) == 8 for event in events)
            covered += [event[0] for event in events]
        assert covered == list(range(2, 12))
        # Read back from LMDB (the in-memory events gone): the same bytes.
        live = [d for who, d in h.clients.sent if who == b"app"]
        h.streams.snapshot_installed(0)
        h.streams._recent_first = h.index + 1
        h.subscribe(b"late", 5, start=1)
        h.streams.pump(h.index, now=1.0)
        assert [d for who, d in h.clients.sent if who == b"late"] == live
    finally:
        h.close()


def test_a_built_body_is_shared_across_turns_while_a_subscriber_waits_at_it(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    try:
        h.commit([["new", "@roots", "dict", [["d", Ref("c.1")]]], ["new", "c.1", "dict", []]])
        h.commit([["set", "c.1", "k", 1]])
        h.subscribe(b"a", 1, start=1)
        h.subscribe(b"b", 2, start=1)
        full = {b"b"}
        real_send = h.clients.send
        h.clients.send = lambda who, data: "full" if who in full else real_send(who, data)  # type: ignore[method-assign]
        h.streams.clear_body_cache()
        h.streams.pump(h.index, now=0.0)
        assert list(h.streams._body_cache) == [(2, 2)]
        # Next turn: b still waits at 2, so the body stays; once b is served it goes.
        full.clear()
        h.streams.clear_body_cache()
        assert list(h.streams._body_cache) == [(2, 2)]
        h.streams.pump(h.index, now=1.0)
        h.streams.clear_body_cache()
        assert h.streams._body_cache == {}
        assert _frames(h, b"a")[0].body == _frames(h, b"b")[0].body
    finally:
        h.close()


def test_the_body_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    h = Harness(tmp_path, events_frame_bytes_max=64 << 10)
    try:
        h.commit([["new", "@roots", "dict", [["d", Ref("c.1")]]], ["new", "c.1", "dict", []]])
        h.streams.clear_body_cache()
        for i in range(12):
            h.commit([["set", "c.1", "k", "x" * 50_000]])
            h.subscribe(b"s%d" % i, 1, start=1 + i)
        h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
        h.streams.pump(h.index, now=0.0)
        h.streams.clear_body_cache()
        cached = sum(len(body) for _next, body in h.streams._body_cache.values())
        assert 0 < cached <= (64 << 10) * streams.BODY_CACHE_FRAMES_MAX
    finally:
        h.close()


# -- the library's side ---------------------------------------------------------------------------


class Sink:
    def __init__(self, applied: int = 0) -> None:
        self.applied_index = applied
        self.applied: list[int] = []
        self.log_time_ms = 0

    def load_snapshot(self, index: int, nodes: Any) -> None:  # pragma: no cover - unused
        raise AssertionError("no snapshot in these tests")

    def apply_events(self, events: Sequence[Event]) -> None:
        for event in events:
            self.applied.append(event[0])
            self.applied_index = event[0]

    def advance(self, to: int, log_time_ms: int) -> None:
        self.applied_index = max(self.applied_index, to)
        self.log_time_ms = max(self.log_time_ms, log_time_ms)


def ev(index: int) -> list[Any]:
    return [index, "c", index, "ok", b"", [], 7, []]


def test_an_unfiltered_stream_must_hold_every_entry_up_to_to() -> None:
    feeder = StreamFeeder(Sink(3))
    assert feeder.feed_events({"ev": [ev(4), ev(5)], "to": 5, "t": 7})
    assert feeder.sink.applied == [4, 5]
    with pytest.raises(StreamGap, match="stop at 6"):
        feeder.feed_events({"ev": [ev(6)], "to": 8, "t": 7})
    assert feeder.sink.applied == [4, 5, 6]
    with pytest.raises(ProtocolError, match="below the frame's last event"):
        feeder.feed_events({"ev": [ev(7), ev(8)], "to": 7, "t": 7})
    with pytest.raises(ProtocolError, match=r"EVENTS\.to"):
        feeder.feed_events({"ev": [ev(7)], "to": -1, "t": 7})
    # An older agent says neither: as before.
    assert feeder.feed_events({"ev": [ev(7)]})


def test_a_filtered_stream_skips_entries_and_advances_to_to() -> None:
    sink = Sink(3)
    feeder = StreamFeeder(sink, filtered=True)
    assert feeder.feed_events({"ev": [ev(5), ev(9)], "to": 12, "t": 40})
    assert (sink.applied, sink.applied_index, sink.log_time_ms) == ([5, 9], 12, 40)
    assert feeder.feed_events({"ev": [], "to": 20, "t": 50})  # nothing passed: still moves
    assert sink.applied_index == 20
    assert not feeder.feed_events({"ev": [ev(15)], "to": 18, "t": 50}), "an old delivery"
    assert sink.applied == [5, 9]
    with pytest.raises(StreamGap, match="rise strictly"):
        feeder.feed_events({"ev": [ev(25), ev(22)], "to": 30, "t": 60})
    with pytest.raises(ProtocolError, match="how far they reach"):
        feeder.feed_events({"ev": [ev(31)]})


class Recorder(Sink):
    def __init__(self) -> None:
        super().__init__(0)
        self.events: list[Any] = []

    def apply_events(self, events: Sequence[Event]) -> None:
        self.events += events
        super().apply_events(events)


def test_the_feeder_keeps_an_events_heads_checked() -> None:
    sink = Recorder()
    feeder = StreamFeeder(sink)
    heads = [["c.1", "obj", "Point"], ["c.2", "dict", None]]
    feeder.feed_events({"ev": [[1, "c", 1, "ok", b"", [], 7, heads], ev(2)[:7]], "to": 2, "t": 7})
    assert sink.events[0][7] == (("c.1", "obj", "Point"), ("c.2", "dict", None))
    assert sink.events[1][7] == (), "a 7-field event (an older agent) has none"
    for bad in (
        {"c": 1},
        [["c.3", "obj", None]],  # an obj names its class
        [["c.3", "dict", "X"]],  # nothing else does
        [["c.3", "tree", None]],
        [["", "dict", None]],
        [["c.3", "dict"]],
    ):
        with pytest.raises(ProtocolError, match=r"event 3: (a head|heads)"):
            feeder.feed_events({"ev": [[3, "c", 3, "ok", b"", [], 7, bad]], "to": 3, "t": 7})
