"""LOAD answers at the agent (agent/heap.py, agent/streams.py; docs/virtual-heap.md section 3):
a partial subscriber starts with an empty LOADED, a LOADED is placed after the events up to its
index and before the next, large nodes span frames, references come as heads, missing oids as
absent, prefetch sends small children whole, and the limits refuse naming themselves.

A real Storage and state machine; the client socket is a fake that records what is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import heap, streams
from superstatic_agent.storage import Trimmed
from support.stream_harness import Harness

from superstatic.client.stream import StreamFeeder
from superstatic.protocol import codec, wire
from superstatic.protocol.codec import Ref

SUB = 5


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def subscribe_partial(h: Harness, identity: bytes = b"app", start: int = 0) -> None:
    body = wire.subscribe_body(start, heap="partial", client="cl")
    h.streams.on_subscribe(identity, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)


def load(h: Harness, req_id: int, oids: list[str], identity: bytes = b"app", **kw: Any) -> None:
    frame = wire.Frame(wire.FrameType.LOAD, req_id, wire.load_body(SUB, oids, **kw))
    h.streams.on_heap(identity, wire.parse_heap_request(frame), req_id)


def stream(h: Harness, identity: bytes = b"app") -> list[wire.Frame]:
    sent = [d for who, d in h.clients.sent if who == identity]
    return [wire.decode(data, wire.AGENT_TO_CLIENT) for data in sent]


def pump(h: Harness, turns: int = 1) -> None:
    for _ in range(turns):
        h.streams.clear_body_cache()
        h.streams.pump(h.index, 0.0)


def graph(h: Harness) -> None:
    h.commit(
        [
            ["new", "@roots", "dict", [["d", Ref("c.1")]]],
            ["new", "c.1", "dict", [["p", Ref("c.2")], ["l", Ref("c.3")]]],
            ["new", "c.2", "obj", ["Point", [["x", 1]]]],
            ["new", "c.3", "list", [1, 2, Ref("c.2")]],
        ]
    )


def shape(frame: wire.Frame) -> tuple[str, int]:
    """(type, the index a frame reaches): EVENTS its "to", LOADED its index."""
    if frame.type is wire.FrameType.EVENTS:
        return ("EVENTS", frame.body["to"])
    return ("LOADED", frame.body["index"])


def test_a_partial_subscriber_starts_with_an_empty_answer_then_the_events_after_it(
    h: Harness,
) -> None:
    graph(h)
    subscribe_partial(h)
    pump(h)
    h.commit([["set", "c.1", "z", 0]])
    pump(h)
    frames = stream(h)
    assert [shape(f) for f in frames] == [("LOADED", 1), ("EVENTS", 2)]
    first = frames[0].body
    assert (first["load"], first["items"], first["last"], first["part"]) == (0, [], True, 0)
    assert all(f.req_id == SUB for f in frames), "both on the subscription's stream"


def test_a_loaded_answer_sits_between_the_events_up_to_its_index_and_the_next(
    h: Harness,
) -> None:
    graph(h)
    subscribe_partial(h)
    pump(h)
    # Entries 2..4 apply before the LOAD is served: they precede its answer.
    for i in range(3):
        h.commit([["set", "c.1", "k", i]])
    load(h, 9, ["c.1"])
    pump(h)
    h.commit([["set", "c.1", "k", 99]])
    pump(h)
    frames = stream(h)
    assert [shape(f) for f in frames] == [
        ("LOADED", 1),
        ("EVENTS", 4),
        ("LOADED", 4),
        ("EVENTS", 5),
    ]
    answer = frames[2].body
    assert answer["load"] == 9 and answer["last"]
    items = answer["items"]
    assert items[0] == [0, "c.1", "dict", None, 4]
    assert codec.loads(items[1][2]) == [["p", Ref("c.2")], ["l", Ref("c.3")], ["k", 2]]
    # Its references come as heads (kind and class), not whole.
    assert sorted(i for i in items if i[0] == wire.ITEM_HEAD) == [
        [4, "c.2", "obj", "Point"],
        [4, "c.3", "list", None],
    ]
    held = h.streams._subscribers[b"app"].held
    assert held is not None and held.since == {"c.1": 4}
    assert held.passes("c.1", 5) and not held.passes("c.1", 4) and not held.passes("c.2", 5)


def test_an_answer_is_never_older_than_what_the_app_was_sent(h: Harness) -> None:
    """The app subscribed from an index this agent has not applied (a failover to an agent
    behind it): its LOAD waits until the agent has applied that far."""
    graph(h)
    h.commit([["set", "c.1", "k", 1]])
    subscribe_partial(h, start=4)
    load(h, 9, ["c.1"])
    pump(h)
    assert stream(h) == []
    h.commit([["set", "c.1", "k", 2]])
    h.commit([["set", "c.1", "k", 3]])
    pump(h)
    assert [shape(f) for f in stream(h)] == [("LOADED", 4)]


def test_missing_oids_are_answered_absent(h: Harness) -> None:
    graph(h)
    subscribe_partial(h)
    load(h, 9, ["c.404", "c.2", "c.404"])
    pump(h)
    items = stream(h)[-1].body["items"]
    assert [i for i in items if i[0] == wire.ITEM_ABSENT] == [[5, "c.404"]]
    assert items[0] == [0, "c.2", "obj", "Point", 1]


def test_prefetch_sends_the_referenced_nodes_whole_within_its_bytes(h: Harness) -> None:
    graph(h)
    subscribe_partial(h)
    load(h, 9, ["c.1"], prefetch_bytes=4096)
    pump(h)
    items = stream(h)[-1].body["items"]
    assert [i[1] for i in items if i[0] == 0] == ["c.1", "c.2", "c.3"]
    assert not [i for i in items if i[0] == wire.ITEM_HEAD]
    held = h.streams._subscribers[b"app"].held
    assert held is not None and set(held.since) == {"c.1", "c.2", "c.3"}
    # Already held: not sent again, nor named as a head.
    load(h, 10, ["c.3"], prefetch_bytes=4096)
    pump(h)
    again = stream(h)[-1].body["items"]
    assert [i[1] for i in again if i[0] == 0] == ["c.3"] and len(again) == 2


def test_a_node_larger_than_a_frame_spans_frames_and_is_read_at_one_index(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096)
    try:
        values = ["v" * 100 + str(i) for i in range(400)]  # ~40 KB: ten frames
        h.commit([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", values]])
        subscribe_partial(h)
        pump(h)
        load(h, 9, ["c.1"])
        pump(h)
        h.commit([["extend", "c.1", ["later"]]])  # after the read: not in the answer
        pump(h, turns=20)
        frames = [f for f in stream(h) if f.type is wire.FrameType.LOADED and f.body["load"] == 9]
        assert len(frames) >= 8
        assert [f.body["part"] for f in frames] == list(range(len(frames)))
        assert [f.body["last"] for f in frames] == [False] * (len(frames) - 1) + [True]
        assert {f.body["index"] for f in frames} == {1}
        got = [v for f in frames for i in f.body["items"] if i[0] == 3 for v in codec.loads(i[2])]
        assert got == values
        assert stream(h)[-1].type is wire.FrameType.EVENTS
        assert h.streams._snapshot_streams == 0, "the reader slot was released"
    finally:
        h.close()


def test_a_large_answer_keeps_its_reader_until_sent_and_releases_it_on_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 8192)
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096)
    try:
        values = ["w" * 200] * 400
        h.commit([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", values]])
        subscribe_partial(h)
        pump(h)
        h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
        load(h, 9, ["c.1"])
        pump(h)
        job = h.streams._subscribers[b"app"].loads[0]
        assert job.rest is not None and job.built_bytes <= 8192 + 4096 + 1024
        assert h.streams._snapshot_streams == 1
        assert h.streams.memory_bytes() >= job.built_bytes
        h.streams.unsubscribe(b"app")
        assert h.streams._snapshot_streams == 0
    finally:
        h.close()


def test_a_feeder_reads_the_partial_stream(h: Harness) -> None:
    """The library's StreamFeeder (filtered) follows a partial stream: "to" moves it over the
    entries between, and the LOADED answers sit at the indexes it reaches."""
    graph(h)
    subscribe_partial(h)
    pump(h)
    load(h, 9, ["c.1"])
    for i in range(5):
        h.commit([["set", "c.2", "x", i]])
    pump(h)

    class Sink:
        applied_index = 0

        def apply_events(self, events: Any) -> None:
            self.applied_index = events[-1][0]

        def advance(self, to: int, log_time_ms: int) -> None:
            self.applied_index = to

    sink = Sink()
    feeder = StreamFeeder(sink, filtered=True)  # type: ignore[arg-type]
    for frame in stream(h):
        if frame.type is wire.FrameType.LOADED:
            loaded = wire.parse_loaded(frame.body)
            sink.applied_index = max(sink.applied_index, loaded.index)
            assert loaded.index == sink.applied_index
        else:
            feeder.feed_events(frame.body)
    assert sink.applied_index == h.index


@pytest.mark.parametrize("heap_mode", ["all", None])
def test_heap_frames_on_a_full_subscription_are_refused(h: Harness, heap_mode: Any) -> None:
    graph(h)
    body: dict[str, Any] = {"from": 0, "model": wire.DATA_MODEL}
    if heap_mode is not None:
        body["heap"] = heap_mode
    h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    load(h, 9, ["c.1"])
    assert h.errors == [(b"app", 9, "bad_request", "LOAD on a subscription with heap 'all': "
                         "it holds everything")]  # fmt: skip


def test_a_load_naming_another_subscription_is_refused(h: Harness) -> None:
    graph(h)
    subscribe_partial(h)
    frame = wire.Frame(wire.FrameType.LOAD, 9, wire.load_body(SUB + 1, ["c.1"]))
    h.streams.on_heap(b"app", wire.parse_heap_request(frame), 9)
    h.streams.on_heap(b"stranger", wire.parse_heap_request(frame), 9)
    assert [e[2:] for e in h.errors] == [("bad_request", "no such subscription: resubscribe")] * 2


def test_queued_loads_are_bounded(h: Harness) -> None:
    graph(h)
    subscribe_partial(h)
    for i in range(heap.SUBSCRIBER_LOADS_MAX + 1):
        load(h, 100 + i, ["c.1"])
    assert len(h.streams._subscribers[b"app"].loads) == heap.SUBSCRIBER_LOADS_MAX + 1  # + start
    (error,) = h.errors
    assert error[1:3] == (100 + heap.SUBSCRIBER_LOADS_MAX, "busy")
    assert "SUBSCRIBER_LOADS_MAX=64" in error[3]
    pump(h, turns=40)
    answered = [f.body["load"] for f in stream(h) if f.type is wire.FrameType.LOADED]
    assert answered == [0, *range(100, 100 + heap.SUBSCRIBER_LOADS_MAX)]


def test_a_partial_subscriber_behind_the_log_gets_a_held_snapshot(h: Harness) -> None:
    graph(h)
    subscribe_partial(h)
    load(h, 9, ["c.2"])
    pump(h)
    sub = h.streams._subscribers[b"app"]
    h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
    for i in range(3):
        h.commit([["set", "c.2", "x", i]])
    # The events it needs are gone from memory and from the log (compacted).
    first = h.index + 1

    def compacted(start: int, count_max: int, bytes_max: int) -> Any:
        raise Trimmed(start, first)

    h.storage.events = compacted  # type: ignore[method-assign]
    h.streams.snapshot_installed(h.index)
    del h.clients.send
    pump(h)
    last = stream(h)[-1]
    assert last.type is wire.FrameType.LOADED and last.body["load"] == 0
    assert last.body["index"] == h.index and last.body["items"][0][:2] == [0, "c.2"]
    assert sub.next_index == h.index + 1 and sub.held is not None
    assert sub.held.since == {"c.2": h.index}
    assert streams.SNAPSHOT_STREAMS_MAX > h.streams._snapshot_streams == 0


def test_a_load_waiting_for_a_reader_slot_holds_back_neither_events_nor_the_loop(
    h: Harness,
) -> None:
    graph(h)
    subscribe_partial(h)
    pump(h)
    h.streams._snapshot_streams = streams.SNAPSHOT_STREAMS_MAX  # every reader slot taken
    load(h, 9, ["c.1"])
    h.commit([["set", "c.1", "k", 1]])  # the subscriber's own write: it passes
    pump(h)
    assert [shape(f) for f in stream(h)] == [("LOADED", 1), ("EVENTS", 2)]
    assert not h.streams.has_work(h.index), "nothing to do until a slot frees"
    h.streams._snapshot_streams = 0
    assert h.streams.has_work(h.index)
    pump(h)
    assert [shape(f) for f in stream(h)][-1] == ("LOADED", 2)


def test_nothing_goes_before_a_start_answer_waiting_for_a_reader_slot(h: Harness) -> None:
    graph(h)
    h.streams._snapshot_streams = streams.SNAPSHOT_STREAMS_MAX  # every reader slot taken
    subscribe_partial(h)
    h.commit([["set", "c.1", "k", 1]])  # the subscriber's own write: it would pass
    pump(h)
    assert stream(h) == [], "events before the answer the stream starts after"
    assert not h.streams.has_work(h.index), "nothing to do until a slot frees"
    h.streams._snapshot_streams = 0
    assert h.streams.has_work(h.index)
    pump(h)
    assert [shape(f) for f in stream(h)] == [("LOADED", h.index)]


def test_a_held_snapshot_waiting_for_a_reader_slot_is_queued_once(h: Harness) -> None:
    # A partial subscriber behind the log with every reader slot taken: its start answer could
    # not be served, its cursor went on to the events, found them compacted and queued another
    # start answer, and so on (a RecursionError out of Streams.pump).
    graph(h)
    subscribe_partial(h)
    load(h, 9, ["c.2"])
    pump(h)
    h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
    for i in range(3):
        h.commit([["set", "c.2", "x", i]])
    first = h.index + 1

    def compacted(start: int, count_max: int, bytes_max: int) -> Any:
        raise Trimmed(start, first)

    h.storage.events = compacted  # type: ignore[method-assign]
    h.streams.snapshot_installed(h.index)
    del h.clients.send
    h.streams._snapshot_streams = streams.SNAPSHOT_STREAMS_MAX
    recursed = False
    try:
        pump(h)
    except RecursionError:
        recursed = True  # (asserted outside: its traceback is thousands of frames)
    assert not recursed, "a start answer was queued again and again"
    sub = h.streams._subscribers[b"app"]
    assert [job.start for job in sub.loads] == [True]
    assert not h.streams.has_work(h.index)
    h.streams._snapshot_streams = 0
    pump(h)
    last = stream(h)[-1]
    assert last.type is wire.FrameType.LOADED and last.body["load"] == 0
    assert last.body["index"] == h.index and not sub.loads
