"""Dicts held per key at the agent (docs/virtual-heap.md section 4.3): the root table and large
dicts are answered by key ([6, oid, run, absent_keys] after a header the first time), their
events pass by key, and DROP / HOLD / the limits count keys.

A real Storage and state machine; the client socket is a fake that records what is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import heap
from support.stream_harness import Harness

from superstatic.protocol import codec, keynorm, wire
from superstatic.protocol.codec import Ref

SUB = 5
OTHER = "other"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def subscribe(h: Harness, start: int = 0, **kw: Any) -> None:
    body = wire.subscribe_body(start, heap="partial", client="me", **kw)
    h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)


def send(h: Harness, frame_type: wire.FrameType, req_id: int, body: dict[str, Any]) -> None:
    request = wire.parse_heap_request(wire.Frame(frame_type, req_id, body))
    h.streams.on_heap(b"app", request, req_id)


def load(h: Harness, req_id: int, oids: list[str], keys: Any = None, **kw: Any) -> list[Any]:
    """LOADs and returns the answer's items (all its frames')."""
    send(h, wire.FrameType.LOAD, req_id, wire.load_body(SUB, oids, keys, **kw))
    pump(h)
    sent = [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in h.clients.sent if who == b"app"]
    answer = [f for f in sent if f.type is wire.FrameType.LOADED and f.body["load"] == req_id]
    assert answer and answer[-1].body["last"]
    return [item for f in answer for item in f.body["items"]]


def pump(h: Harness) -> None:
    for _ in range(4):
        h.streams.clear_body_cache()
        h.streams.pump(h.index, 0.0)


def events(h: Harness) -> list[int]:
    sent = [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in h.clients.sent if who == b"app"]
    return [e[0] for f in sent if f.type is wire.FrameType.EVENTS for e in f.body["ev"]]


def held_keys(h: Harness) -> dict[str, set[Any]]:
    held = h.streams._subscribers[b"app"].held
    assert held is not None
    return {oid: {codec.loads(k) for k in keys} for oid, keys in held.keys.items()}


def roots(h: Harness) -> None:
    h.commit(
        [
            ["new", "@roots", "dict", [["a", Ref("r.a")], ["b", Ref("r.b")], [1, "one"]]],
            ["new", "r.a", "dict", [["n", 1]]],
            ["new", "r.b", "list", [1, 2]],
        ],
        client=OTHER,
    )


def test_keys_of_the_root_table_come_as_a_header_then_runs(h: Harness) -> None:
    roots(h)
    subscribe(h)
    items = load(h, 9, [], [("@roots", ["a", 1.0, "missing"])])
    assert items[0] == [0, "@roots", "dict", None, 1, 3], "a header with the count, first"
    (run,) = [i for i in items if i[0] == wire.ITEM_KEY_RUN]
    assert codec.loads(run[2]) == [["a", Ref("r.a")], [1, "one"]]
    assert codec.loads(run[3]) == ["missing"]
    assert [4, "r.a", "dict", None] in items, "the referenced node's head"
    assert held_keys(h) == {"@roots": {"a", 1, "missing"}}
    # The header is not sent again.
    again = load(h, 10, [], [("@roots", ["b"])])
    assert [i[0] for i in again] == [wire.ITEM_KEY_RUN, wire.ITEM_HEAD]


def test_a_root_key_with_prefetch_brings_its_node_in_the_same_answer(h: Harness) -> None:
    roots(h)
    subscribe(h)
    items = load(h, 9, [], [("@roots", ["a"])], prefetch_bytes=64 << 10)
    assert [i[:2] for i in items if i[0] in (0, 1)] == [[0, "@roots"], [0, "r.a"], [1, "r.a"]]
    held = h.streams._subscribers[b"app"].held
    assert held is not None and held.since == {"r.a": 1}


def test_the_root_table_and_large_dicts_named_whole_answer_their_header_only(
    h: Harness,
) -> None:
    roots(h)
    entries = [[f"k{i}", i] for i in range(heap.LOAD_WHOLE_ENTRIES_MAX + 1)]
    h.commit([["new", "big", "dict", entries], ["set", "@roots", "big", Ref("big")]])
    subscribe(h)
    items = load(h, 9, ["@roots", "big", "r.a"])
    assert [i[:2] for i in items] == [[0, "@roots"], [0, "big"], [0, "r.a"], [1, "r.a"]]
    assert items[1][5] == heap.LOAD_WHOLE_ENTRIES_MAX + 1
    assert held_keys(h) == {"@roots": set(), "big": set()}
    # Asked whole: it comes whole, and is held whole from then on.
    whole = load(h, 10, ["big"], whole=True)
    assert sum(len(codec.loads(i[2])) for i in whole if i[0] == 1) == len(entries)
    held = h.streams._subscribers[b"app"].held
    assert held is not None and "big" in held.since and "big" not in held.keys


def test_events_of_a_per_key_dict_pass_by_key(h: Harness) -> None:
    roots(h)
    subscribe(h)
    load(h, 9, [], [("@roots", ["a", "c"])])
    held_write = h.commit([["set", "@roots", "a", 5]], client=OTHER)[0].index
    other_key = h.commit([["set", "@roots", "z", 5]], client=OTHER)[0].index
    inserted = h.commit([["set", "@roots", "c", 5]], client=OTHER)[0].index  # absent before
    deleted = h.commit([["del", "@roots", "a"]], client=OTHER)[0].index
    cleared = h.commit([["clear", "@roots"]], client=OTHER)[0].index
    pump(h)
    assert events(h) == [held_write, inserted, deleted, cleared]
    assert other_key not in events(h)


def test_drop_and_hold_by_key(h: Harness) -> None:
    roots(h)
    subscribe(h)
    load(h, 9, [], [("@roots", ["a", "b"])])
    send(h, wire.FrameType.DROP, 10, wire.drop_body(SUB, [], [("@roots", ["a", "never"])]))
    assert held_keys(h) == {"@roots": {"b"}}
    h.commit([["set", "@roots", "a", 5]], client=OTHER)
    pump(h)
    assert events(h) == []
    # A resubscription declares its keys.
    subscribe(h, start=h.index, hold_parts=1)
    send(h, wire.FrameType.HOLD, 11, wire.hold_body(SUB, 0, True, [], [("@roots", ["a"])]))
    assert held_keys(h) == {"@roots": {"a"}}
    write = h.commit([["set", "@roots", "a", 6]], client=OTHER)[0].index
    pump(h)
    assert events(h) == [write]


def test_a_key_no_replica_can_store_is_refused_naming_its_position(h: Harness) -> None:
    roots(h)
    subscribe(h)
    send(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, [], [("@roots", ["a", float("nan")])]))
    ((_who, req_id, code, message),) = h.errors
    assert (req_id, code) == (9, "bad_request")
    assert message.startswith("LOAD.keys[0] key #1:") and "NaN" in message


def test_keys_count_toward_the_held_set_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path, subscriber_held_max=3)
    try:
        roots(h)
        subscribe(h)
        send(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, [], [("@roots", ["a", "b", "c"])]))
        assert h.errors[-1][1:3] == (9, "too_large")
        assert "--subscriber-held-max=3" in h.errors[-1][3]
        load(h, 10, [], [("@roots", ["a", "b"])])
        held = h.streams._subscribers[b"app"].held
        assert held is not None and len(held) == 3  # the dict and its two keys
    finally:
        h.close()


def test_a_held_snapshot_reads_the_held_keys_again(h: Harness) -> None:
    from superstatic_agent.storage import Trimmed

    roots(h)
    subscribe(h)
    load(h, 9, [], [("@roots", ["a"])])
    h.commit([["set", "@roots", "a", 7]], client=OTHER)
    first = h.index + 1

    def compacted(start: int, count_max: int, bytes_max: int) -> Any:
        raise Trimmed(start, first)

    h.storage.events = compacted  # type: ignore[method-assign]
    h.streams.snapshot_installed(h.index)
    # The in-memory events are gone too: the cursor (at 2) must read the log.
    h.streams._recent_first = h.index + 1
    pump(h)
    sent = [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in h.clients.sent if who == b"app"]
    last = sent[-1]
    assert last.type is wire.FrameType.LOADED and last.body["load"] == 0
    (run,) = [i for i in last.body["items"] if i[0] == wire.ITEM_KEY_RUN]
    assert codec.loads(run[2]) == [["a", 7]]
    assert keynorm.ekey("a") in h.streams._subscribers[b"app"].held.keys["@roots"]  # type: ignore[union-attr]


def test_keys_of_a_root_table_not_yet_created_are_held_for_its_creation(h: Harness) -> None:
    h.commit([["new", "x", "dict", []]], client=OTHER)
    subscribe(h)
    assert load(h, 9, [], [("@roots", ["a"])]) == [[wire.ITEM_ABSENT, "@roots"]]
    made = h.commit([["new", "@roots", "dict", [["b", 1]]]], client=OTHER)[0].index
    pump(h)
    assert events(h) == [made]


def test_the_creator_of_the_root_table_is_answered_keys_of_it(h: Harness) -> None:
    # The app that creates the root table is held whole for it here (its own new nodes join
    # its held set), while its library keeps the table per key (the placeholder stands for
    # it): a key it asks later, written by another app, must still be answered (it was not:
    # the load went unanswered until the app's request timeout).
    h.commit([["new", "x", "dict", []]], client=OTHER)
    subscribe(h)
    assert load(h, 8, [], [("@roots", ["a"])]) == [[wire.ITEM_ABSENT, "@roots"]]
    h.commit([["new", "@roots", "dict", [["a", 1]]]], client="me")
    h.commit([["set", "@roots", "b", 2]], client=OTHER)
    pump(h)
    items = load(h, 9, [], [("@roots", ["b", "missing"])])
    (run,) = [i for i in items if i[0] == wire.ITEM_KEY_RUN]
    assert codec.loads(run[2]) == [["b", 2]]
    assert codec.loads(run[3]) == ["missing"]


def test_the_root_table_asked_by_oid_is_answered_though_its_keys_are_held(h: Harness) -> None:
    # The loadbug: an app asks a root's key before the root table exists (held per key from
    # then on, for the table's creation), another app creates the table, and the first app
    # asks whether it exists (Replica._probe_roots: a LOAD naming "@roots") before the
    # creating event reached it. The answer must name the table: it was left out because the
    # subscriber held it already, and the app waited out its request timeout.
    h.commit([["new", "x", "dict", []]], client=OTHER)
    subscribe(h)
    assert load(h, 8, [], [("@roots", ["a"])]) == [[wire.ITEM_ABSENT, "@roots"]]
    h.commit([["new", "@roots", "dict", [["b", 1]]]], client=OTHER)
    assert load(h, 9, ["@roots"]) == [[0, "@roots", "dict", None, 2, 1]]
    assert held_keys(h) == {"@roots": {"a"}}, "the keys held stay held"


def test_a_dict_held_whole_or_per_key_asked_by_oid_is_named_in_the_answer(h: Harness) -> None:
    # The creator of the root table holds it whole here (its new nodes join its held set),
    # and a dict asked a key first holds it per key: a LOAD naming either gets its header.
    entries = [[f"k{i}", i] for i in range(heap.LOAD_WHOLE_ENTRIES_MAX + 1)]
    subscribe(h)
    pump(h)  # the stream starts: the events after it pass, the app's own creations with them
    h.commit([["new", "@roots", "dict", []]], client="me")
    h.commit([["new", "big", "dict", entries], ["set", "@roots", "big", Ref("big")]])
    pump(h)
    assert load(h, 8, [], [("big", ["k1"])])[0][:2] == [0, "big"]
    items = load(h, 9, ["@roots", "big"])
    assert [i[:2] for i in items] == [[0, "@roots"], [0, "big"]]
    held = h.streams._subscribers[b"app"].held
    assert held is not None and "@roots" in held.since, "held whole still"
    assert held_keys(h) == {"big": {"k1"}}
