"""Held sets and the filtered stream at the agent (agent/heap.py, agent/streams.py;
docs/virtual-heap.md sections 4.1 and 4.2): what a partial subscriber is sent of each event,
how its held set changes as its cursor passes them, the empty frames it is owed, HOLD, DROP and
the held-set limits. A subscription without "heap" keeps receiving everything.

A real Storage and state machine; the client socket is a fake that records what is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import heldset
from support.stream_harness import Harness

from superstatic.protocol import ops, wire
from superstatic.protocol.codec import Ref

SUB = 5
ME = "me"  # the partial subscriber's client id
OTHER = "other"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def subscribe(h: Harness, identity: bytes = b"app", start: int = 0, **kw: Any) -> None:
    body = wire.subscribe_body(start, heap="partial", client=ME, **kw)
    h.streams.on_subscribe(identity, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)


def heap_frame(
    h: Harness, frame_type: wire.FrameType, req_id: int, body: dict[str, Any], who: bytes = b"app"
) -> None:
    request = wire.parse_heap_request(wire.Frame(frame_type, req_id, body))
    h.streams.on_heap(who, request, req_id)


def load(h: Harness, req_id: int, oids: list[str], who: bytes = b"app") -> None:
    heap_frame(h, wire.FrameType.LOAD, req_id, wire.load_body(SUB, oids), who)


def pump(h: Harness, turns: int = 3) -> None:
    for _ in range(turns):
        h.streams.clear_body_cache()
        h.streams.pump(h.index, 0.0)


def frames(h: Harness, identity: bytes = b"app") -> list[wire.Frame]:
    sent = [d for who, d in h.clients.sent if who == identity]
    return [wire.decode(data, wire.AGENT_TO_CLIENT) for data in sent]


def events(h: Harness, identity: bytes = b"app") -> list[int]:
    """Indexes of the events the subscriber was sent whole or as stubs."""
    return [
        e[0] for f in frames(h, identity) if f.type is wire.FrameType.EVENTS for e in f.body["ev"]
    ]


def held(h: Harness, identity: bytes = b"app") -> dict[str, int]:
    sub = h.streams._subscribers[identity]
    assert sub.held is not None
    return dict(sub.held.since)


def world(h: Harness) -> None:
    """Index 1: three dicts bound as roots, written by another client."""
    h.commit(
        [
            ["new", "@roots", "dict", [["a", Ref("o.a")], ["b", Ref("o.b")], ["c", Ref("o.c")]]],
            ["new", "o.a", "dict", []],
            ["new", "o.b", "dict", []],
            ["new", "o.c", "dict", []],
        ],
        client=OTHER,
    )


def test_only_events_touching_what_it_holds_pass(h: Harness) -> None:
    world(h)
    subscribe(h)
    load(h, 9, ["o.a"])
    pump(h)
    assert held(h) == {"o.a": 1}
    both = h.commit([["set", "o.a", "k", 1], ["set", "o.b", "k", 1]], client=OTHER)[0].index
    unheld = h.commit([["set", "o.b", "k", 2]], client=OTHER)[0].index
    mine = h.commit([["set", "o.c", "k", 3]], client=ME)[0].index
    pump(h)
    assert events(h) == [both, mine]
    last = frames(h)[-1].body
    assert last["to"] == mine and unheld < mine
    # The held-and-unheld event passes whole: its body names both ops.
    (passed,) = [e for f in frames(h)[2:] for e in f.body["ev"] if e[0] == both]
    assert [op[1] for op in ops.decode_txn(passed[4])[1]] == ["o.a", "o.b"]


def test_noops_and_conflicts_pass_and_an_ok_ending_a_run_comes_as_a_stub(h: Harness) -> None:
    world(h)
    subscribe(h)
    pump(h)
    noop = h.noop()[0].index
    h.commit([["set", "o.b", "k", 1]], client=OTHER)  # o.b now at version 3
    stale = ops.encode_txn({"o.b": 1}, [["set", "o.b", "k", 2]])
    conflict = h.commit([], client=OTHER, body=stale)[0]
    assert conflict.outcome == "conflict"
    ok = h.commit([["set", "o.b", "k", 3]], client=OTHER)[0].index
    again = h.commit([["set", "o.b", "k", 4]], client=OTHER)[0].index  # no run to end
    pump(h)
    sent = {e[0]: e for f in frames(h)[1:] for e in f.body["ev"]}
    assert list(sent) == [noop, conflict.index, ok]
    assert sent[ok][3:] == ["ok", None, [], 1, []], "a stub: outcome, no body"
    assert again not in sent and frames(h)[-1].body["to"] == again


def test_its_own_new_nodes_join_its_held_set(h: Harness) -> None:
    world(h)
    subscribe(h)
    pump(h)
    made = h.commit([["new", "m.1", "list", []], ["set", "o.a", "mine", Ref("m.1")]], client=ME)
    other = h.commit([["extend", "m.1", [1]]], client=OTHER)[0].index
    pump(h)
    assert held(h) == {"m.1": made[0].index}
    assert events(h) == [made[0].index, other]


def test_a_collected_held_node_passes_then_leaves_the_set(h: Harness) -> None:
    h.sm.gc_threshold = 1
    world(h)
    subscribe(h)
    load(h, 9, ["o.c", "o.b"])
    pump(h)
    # Enough garbage for a collection (threshold 1, but at least the nodes alive).
    garbage = [["new", f"g.{i}", "set", []] for i in range(5)]
    dropped = h.commit([["del", "@roots", "c"], *garbage], client=OTHER)[0]
    assert "o.c" in dropped.collected
    pump(h)
    assert dropped.index in events(h)
    assert held(h) == {"o.b": 1}


def test_an_idle_stream_gets_empty_frames_by_entries_by_log_time_and_for_sync(
    h: Harness,
) -> None:
    world(h)
    subscribe(h)
    pump(h)
    for i in range(heldset.EVENTS_SKIP_ENTRIES_MAX + 10):
        h.commit([["set", "o.b", "k", i]], client=OTHER)
    pump(h)
    skips = [f.body for f in frames(h)[1:]]
    assert skips and all(body["ev"] == [] for body in skips)
    assert skips[0]["to"] == 1 + heldset.EVENTS_SKIP_ENTRIES_MAX
    reached = skips[-1]["to"]
    assert reached < h.index, "the last few entries owe no frame yet"
    # Log time moving EVENTS_SKIP_MS_MAX does.
    h.commit([["set", "o.b", "k", "t"]], client=OTHER, time_ms=1 + heldset.EVENTS_SKIP_MS_MAX)
    pump(h)
    assert frames(h)[-1].body["to"] == h.index
    # A read index answered to this identity does, though the cursor passed it silently.
    h.commit([["set", "o.b", "k", "r"]], client=OTHER, time_ms=1 + heldset.EVENTS_SKIP_MS_MAX)
    pump(h)
    count = len(frames(h))
    h.streams.note_read(b"app", h.index)
    assert h.streams.has_work(h.index)
    pump(h)
    assert len(frames(h)) == count + 1 and frames(h)[-1].body == {
        "ev": [],
        "to": h.index,
        "t": 1 + heldset.EVENTS_SKIP_MS_MAX,
    }


def test_an_answer_is_preceded_by_a_frame_reaching_its_index(h: Harness) -> None:
    world(h)
    subscribe(h)
    pump(h)
    h.commit([["set", "o.b", "k", 1]], client=OTHER)
    load(h, 9, ["o.a"])
    pump(h)
    kinds = [(f.type.name, f.body.get("to", f.body.get("index"))) for f in frames(h)]
    assert kinds == [("LOADED", 1), ("EVENTS", 2), ("LOADED", 2)]
    assert frames(h)[1].body["ev"] == []


def test_drop_stops_the_events_of_a_node(h: Harness) -> None:
    world(h)
    subscribe(h)
    load(h, 9, ["o.a"])
    pump(h)
    heap_frame(h, wire.FrameType.DROP, 10, wire.drop_body(SUB, ["o.a", "never.held"]))
    assert held(h) == {} and h.errors == []
    h.commit([["set", "o.a", "k", 1]], client=OTHER)
    pump(h)
    assert events(h) == []


def test_a_resubscribing_app_declares_its_held_set_before_the_stream_starts(h: Harness) -> None:
    world(h)
    h.commit([["set", "o.b", "k", 1]], client=OTHER)
    subscribe(h, start=2, hold_parts=2)
    h.commit([["set", "o.a", "k", 2]], client=OTHER)
    pump(h)
    assert frames(h) == [], "nothing before the last HOLD"
    heap_frame(h, wire.FrameType.HOLD, 10, wire.hold_body(SUB, 0, False, ["o.a"]))
    pump(h)
    assert frames(h) == []
    heap_frame(h, wire.FrameType.HOLD, 11, wire.hold_body(SUB, 1, True, ["o.c"]))
    pump(h)
    assert held(h) == {"o.a": 2, "o.c": 2} and events(h) == [3]


@pytest.mark.parametrize(
    ("parts", "complaint"),
    [([(1, True)], "HOLD part 1 was not expected"), ([(0, True)], "exactly the last")],
)
def test_hold_parts_out_of_order_end_the_subscription(
    h: Harness, parts: list[tuple[int, bool]], complaint: str
) -> None:
    world(h)
    subscribe(h, start=1, hold_parts=2)
    for part, last in parts:
        heap_frame(h, wire.FrameType.HOLD, 10, wire.hold_body(SUB, part, last, ["o.a"]))
    assert complaint in h.errors[-1][3] and h.streams.count() == 0


def test_a_hold_without_announced_parts_is_refused(h: Harness) -> None:
    world(h)
    subscribe(h)
    heap_frame(h, wire.FrameType.HOLD, 10, wire.hold_body(SUB, 0, True, ["o.a"]))
    assert h.errors[-1][2:] == ("bad_request", "HOLD part 0 was not expected: resubscribe")


def test_held_sets_are_bounded_per_subscriber_and_per_agent(tmp_path: Path) -> None:
    h = Harness(tmp_path, subscriber_held_max=2, held_entries_max=3)
    try:
        world(h)
        subscribe(h)
        load(h, 9, ["o.a", "o.b", "o.c"])
        assert h.errors[-1][1:3] == (9, "too_large")
        assert "--subscriber-held-max=2" in h.errors[-1][3]
        load(h, 10, ["o.a", "o.b"])
        pump(h)
        subscribe(h, b"app2")
        load(h, 11, ["o.a", "o.b"], who=b"app2")
        assert h.errors[-1][1:3] == (11, "too_large")
        assert "--held-entries-max=3" in h.errors[-1][3]
        load(h, 12, ["o.c"], who=b"app2")
        pump(h)
        assert held(h) == {"o.a": 1, "o.b": 1} and held(h, b"app2") == {"o.c": 1}
    finally:
        h.close()


def test_prefetch_stays_within_the_held_set_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path, subscriber_held_max=2)
    try:
        h.commit(
            [
                ["new", "@roots", "dict", [["a", Ref("o.a")]]],
                ["new", "o.a", "dict", [["b", Ref("o.b")], ["c", Ref("o.c")]]],
                ["new", "o.b", "dict", []],
                ["new", "o.c", "dict", []],
            ]
        )
        subscribe(h)
        heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, ["o.a"], prefetch_bytes=4096))
        pump(h)
        assert len(held(h)) == 2
        items = frames(h)[-1].body["items"]
        assert len([i for i in items if i[0] == 0]) == 2
        assert len([i for i in items if i[0] == wire.ITEM_HEAD]) == 1
    finally:
        h.close()


def test_a_subscription_without_heap_gets_every_event(h: Harness) -> None:
    world(h)
    h.subscribe(b"full", 3, start=1)
    h.commit([["set", "o.b", "k", 1]], client=OTHER)
    h.commit([["set", "o.c", "k", 1]], client=OTHER)
    pump(h)
    assert events(h, b"full") == [2, 3]


def test_send_work_is_counted(h: Harness) -> None:
    world(h)
    subscribe(h)
    load(h, 9, ["o.a"])
    pump(h)  # answered at 1: what follows is news
    h.subscribe(b"full", 3, start=1)
    for i in range(4):
        h.commit([["set", "o.b", "k", i]], client=OTHER)
    h.commit([["set", "o.a", "k", 1]], client=OTHER)
    pump(h)
    counters = h.streams.counters
    # The full subscriber got the five events, the partial one one of them.
    assert counters["stream_events_sent"] == 5 + 1
    assert counters["stream_events_filtered"] == 4
    assert counters["loads_answered"] == 1
    assert counters["stream_bytes_sent"] == sum(len(d) for _who, d in h.clients.sent)
    assert h.streams.held_entries() == 1


def test_a_write_is_answered_by_its_event_only_if_the_partial_stream_will_carry_it(
    h: Harness,
) -> None:
    world(h)
    body = {**wire.subscribe_body(0, heap="partial", client=ME), "answers": True}
    h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    # Not served yet: the start answer will be read at an index at least the write's.
    assert not h.streams.answers_by_event(b"app", 1, ME)
    pump(h)
    mine = h.commit([["set", "o.a", "k", 1]], client=ME)[0].index
    assert h.streams.answers_by_event(b"app", mine, ME)
    pump(h)
    assert events(h) == [mine], "its own event passes the filter"
