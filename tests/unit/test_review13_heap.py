"""Hostile review of the virtual heap's agent half (issue 13, review13): each test failed before
its fix. A real Storage and state machine; the client socket records what is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import heap, heldset
from superstatic_agent.config import HELD_ENTRY_BYTES
from support.stream_harness import Harness

from superstatic.protocol import wire
from superstatic.protocol.codec import Ref

SUB = 5
ME = "me"
OTHER = "other"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def subscribe(h: Harness, identity: bytes = b"app", **kw: Any) -> None:
    extra = kw.pop("extra", {})
    body = wire.subscribe_body(0, heap="partial", client=kw.pop("client", ME), **kw)
    body.update(extra)
    h.streams.on_subscribe(identity, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)


def heap_frame(h: Harness, frame_type: wire.FrameType, req_id: int, body: dict[str, Any]) -> None:
    request = wire.parse_heap_request(wire.Frame(frame_type, req_id, body))
    h.streams.on_heap(b"app", request, req_id)


def pump(h: Harness, turns: int = 3) -> None:
    for _ in range(turns):
        h.streams.clear_body_cache()
        h.streams.pump(h.index, 0.0)


def frames(h: Harness) -> list[wire.Frame]:
    return [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in h.clients.sent if who == b"app"]


def world(h: Harness) -> None:
    """Index 1: two dicts bound as roots, and a dict of 300 keys (held per key)."""
    big = [[f"k{i}", i] for i in range(300)]
    h.commit(
        [
            ["new", "@roots", "dict", [["a", Ref("o.a")], ["big", Ref("o.big")]]],
            ["new", "o.a", "dict", [["n", 0]]],
            ["new", "o.big", "dict", big],
        ],
        client=OTHER,
    )


def applied_view(h: Harness) -> list[tuple[int, str, Any]]:
    """What the app sees, in stream order: (its applied index after the frame, frame, payload)."""
    out: list[tuple[int, str, Any]] = []
    for f in frames(h):
        if f.type is wire.FrameType.EVENTS:
            out.append((f.body["to"], "EVENTS", [e[0] for e in f.body["ev"]]))
        elif f.type is wire.FrameType.LOADED:
            out.append((f.body["index"], "LOADED", f.body["load"]))
    return out


def test_loading_a_held_node_again_never_skips_its_events_before_the_answer(h: Harness) -> None:
    """A node held since s, asked for again (a LOAD answered at L > s while the stream is still
    before L): the events on it in (s, L] must still reach the app before the answer, else its
    applied index passes them while its copy of the node stays older (prefix consistency)."""
    world(h)
    subscribe(h)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, ["o.a"]))
    pump(h)
    write = h.commit([["set", "o.a", "n", 1]], client=OTHER)[0].index
    h.commit([["set", "o.a", "n", 2]], client=OTHER)
    # Asked again before the stream sent the writes (a second thread's fault, a whole LOAD).
    heap_frame(h, wire.FrameType.LOAD, 10, wire.load_body(SUB, ["o.a"]))
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert write in sent and write + 1 in sent


def test_loading_a_held_key_again_never_skips_its_events_before_the_answer(h: Harness) -> None:
    world(h)
    subscribe(h)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, [], keys=[("o.big", ["k1"])]))
    pump(h)
    write = h.commit([["set", "o.big", "k1", "new"]], client=OTHER)[0].index
    heap_frame(h, wire.FrameType.LOAD, 10, wire.load_body(SUB, [], keys=[("o.big", ["k1"])]))
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert write in sent


def test_a_dict_held_per_key_then_loaded_whole_keeps_its_keys_events(h: Harness) -> None:
    world(h)
    subscribe(h)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, [], keys=[("o.big", ["k1"])]))
    pump(h)
    write = h.commit([["set", "o.big", "k1", "new"]], client=OTHER)[0].index
    heap_frame(h, wire.FrameType.LOAD, 10, wire.load_body(SUB, ["o.big"], whole=True))
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert write in sent


def test_long_held_keys_count_for_their_bytes(h: Harness) -> None:
    """One entry of the held set is counted HELD_ENTRY_BYTES in the memory bound: a key of a
    megabyte must count for its bytes, else --subscriber-held-max entries of them hold
    terabytes."""
    world(h)
    subscribe(h)
    long_key = "x" * (1 << 20)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, [], keys=[("@roots", [long_key])]))
    sub = h.streams._subscribers[b"app"]
    assert sub.held is not None
    pump(h)
    assert len(sub.held) * HELD_ENTRY_BYTES >= 1 << 20


def test_long_keys_are_refused_past_the_held_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path, subscriber_held_max=1_000)
    try:
        world(h)
        subscribe(h)
        long_key = "x" * (1_000 * HELD_ENTRY_BYTES)
        body = wire.load_body(SUB, [], keys=[("@roots", [long_key])])
        heap_frame(h, wire.FrameType.LOAD, 9, body)
        assert [e[2] for e in h.errors] == [str(wire.ErrorCode.TOO_LARGE)]
        assert "--subscriber-held-max=1000" in h.errors[0][3]
        assert long_key not in h.errors[0][3]
    finally:
        h.close()


def test_held_set_counts_keys_as_they_are_dropped_and_readded() -> None:
    held = heldset.HeldSet()
    held.add_key("d", b"\x61" * 1000, 1)
    held.add_key("d", b"\x61" * 1000, 2)
    grown = len(held)
    held.discard_key("d", b"\x61" * 1000)
    assert len(held) == 1 < grown  # the dict's header stays
    held.add_key("d", b"\x62", 3)
    held.add("d", 4)
    assert len(held) == 2  # held whole, and since 3 < its read at 4 (`read_again`)


class CountingOid(str):
    """An oid that counts how often it is compared for equality (a list scan compares every
    element; a set or dict only on a hash match)."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        CountingOid.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_a_held_snapshot_of_many_absent_oids_is_not_quadratic(h: Harness) -> None:
    """An app may declare (HOLD) up to --subscriber-held-max oids that no longer exist (or
    never did); its start answer looked each up in the list of those found absent so far:
    O(n^2) comparisons, hours of one agent turn for a million (the leader stops heartbeating)."""
    world(h)
    count = 3_000
    body = wire.subscribe_body(0, heap="partial", client=ME, hold_parts=1)
    h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    heap_frame(h, wire.FrameType.HOLD, 6, wire.hold_body(SUB, 0, True, ["o.a"]))
    sub = h.streams._subscribers[b"app"]
    assert sub.held is not None
    for i in range(count):
        sub.held.add(CountingOid(f"gone.{i}"), 0)
    CountingOid.compared = 0
    pump(h, 1)
    (answer,) = [f for f in frames(h) if f.type is wire.FrameType.LOADED]
    assert sum(1 for item in answer.body["items"] if item[0] == wire.ITEM_ABSENT) == count
    assert set(sub.held.since) == {"o.a"}
    assert CountingOid.compared < 20 * count


def test_a_held_snapshot_reads_its_nodes_as_its_frames_are_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start answer for a held set of --subscriber-held-max nodes read every one of them in
    the turn it was served (a million: seconds of one turn, no heartbeats). It reads them as
    its frames are built: that turn reads what its first frames hold."""
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096)
    try:
        count = 2_000
        for start in range(0, count, 500):
            h.commit([["new", f"n.{i}", "dict", [["v", i]]] for i in range(start, start + 500)])
        h.commit([["set", "n.0", "v", "old"]], client=OTHER)
        oids = [f"n.{i}" for i in range(count)] + ["gone.1"]
        body = wire.subscribe_body(h.index, heap="partial", client=ME, hold_parts=1)
        h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        heap_frame(h, wire.FrameType.HOLD, 6, wire.hold_body(SUB, 0, True, oids))
        sub = h.streams._subscribers[b"app"]
        assert sub.held is not None
        sub.loads.appendleft(heap.LoadJob(0, (), start=True))  # as after Trimmed
        monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 1)
        reads = []
        read_nid = heap.read_nid
        monkeypatch.setattr(heap, "read_nid", lambda *a: reads.append(1) or read_nid(*a))
        h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
        h.streams.pump(h.index, 0.0)
        assert 0 < len(reads) < count // 4
        # DROPped while the answer is being sent: not read, no longer held.
        heap_frame(h, wire.FrameType.DROP, 7, wire.drop_body(SUB, [f"n.{count - 1}"]))
        del h.clients.send
        for _ in range(200):
            h.streams.pump(h.index, 0.0)
        answers = [f for f in frames(h) if f.type is wire.FrameType.LOADED]
        assert answers[-1].body["last"] and {f.body["load"] for f in answers} == {0}
        items = [item for f in answers for item in f.body["items"]]
        whole = {item[1] for item in items if item[0] == 0}
        assert whole == {f"n.{i}" for i in range(count - 1)}
        assert [item[1] for item in items if item[0] == wire.ITEM_ABSENT] == ["gone.1"]
        assert set(sub.held.since) == whole and set(sub.held.since.values()) == {h.index}
        written = h.commit([["set", "n.5", "v", "new"]], client=OTHER)[0].index
        pump(h)
        assert [e[0] for e in frames(h)[-1].body["ev"]] == [written]
    finally:
        h.close()


def test_a_held_snapshot_of_gone_nodes_reads_them_frame_by_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gone nodes add only a few bytes each to the answer: read all at once they made one
    frame's build (one turn) as long as the held set."""
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096)
    try:
        world(h)
        count = 5_000
        body = wire.subscribe_body(h.index, heap="partial", client=ME)
        h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        sub = h.streams._subscribers[b"app"]
        assert sub.held is not None
        for i in range(count):
            sub.held.add(f"gone.{i}", 1)
            sub.held.add_key(f"gone.d{i}", b"\x61k", 1)
        sub.held.add("o.a", 1)
        sub.loads.appendleft(heap.LoadJob(0, (), start=True))
        monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 1)
        reads = []
        read_nid = heap.read_nid
        monkeypatch.setattr(heap, "read_nid", lambda *a: reads.append(1) or read_nid(*a))
        h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
        h.streams.pump(h.index, 0.0)
        assert 0 < len(reads) <= heap.START_LOOKUPS_MAX + 1
        del h.clients.send
        for _ in range(2_000):
            h.streams.pump(h.index, 0.0)
        answers = [f for f in frames(h) if f.type is wire.FrameType.LOADED]
        assert answers[-1].body["last"]
        items = [item for f in answers for item in f.body["items"]]
        absent = [item[1] for item in items if item[0] == wire.ITEM_ABSENT]
        assert len(absent) == len(set(absent)) == 2 * count
        assert [item[1] for item in items if item[0] == 0] == ["o.a"]
        assert set(sub.held.since) == {"o.a"} and sub.held.keys == {}
        assert len(sub.held) == 1
    finally:
        h.close()


@pytest.mark.parametrize("sub_client", ["", "someone-else"])
def test_a_write_is_answered_by_its_event_only_if_the_filter_passes_its_client(
    h: Harness, sub_client: str
) -> None:
    """A partial stream carries a write's event because it is the subscriber's own (its
    SUBSCRIBE's "client"): a write of another client id on the same connection (or one
    subscribed without "client") is not carried, and its "ok" must come as a REPLY, else
    the app waits for it forever."""
    world(h)
    subscribe(h, client=sub_client, extra={"answers": True})
    pump(h)
    write = h.commit([["set", "o.a", "n", 1]], client=ME)[0]
    assert not h.streams.answers_by_event(b"app", write.index, write.client)
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert write.index not in sent


def test_own_writes_of_a_partial_stream_are_still_answered_by_their_events(h: Harness) -> None:
    world(h)
    subscribe(h, extra={"answers": True})
    pump(h)
    write = h.commit([["set", "o.a", "n", 1]], client=ME)[0]
    assert h.streams.answers_by_event(b"app", write.index, write.client)


def test_a_load_with_req_id_0_is_refused(h: Harness) -> None:
    """A LOADED's `load` 0 names the subscription's own (start) answer, which the library
    installs as its whole held set; and loads of req_id 0 were not counted against
    SUBSCRIBER_LOADS_MAX: an app could queue any number of them."""
    world(h)
    subscribe(h)
    pump(h)
    for _ in range(heap.SUBSCRIBER_LOADS_MAX + 5):
        heap_frame(h, wire.FrameType.LOAD, 0, wire.load_body(SUB, ["o.a"]))
    sub = h.streams._subscribers[b"app"]
    assert not any(job.load == 0 and not job.start for job in sub.loads)
    assert len(sub.loads) <= heap.SUBSCRIBER_LOADS_MAX
    assert h.errors and all(e[2] == str(wire.ErrorCode.BAD_REQUEST) for e in h.errors)
    assert "req_id" in h.errors[0][3]


def test_queued_loads_count_toward_the_held_limits(tmp_path: Path) -> None:
    """A LOAD was checked against what the subscriber holds, not against the loads queued
    ahead of it (not held until served): SUBSCRIBER_LOADS_MAX loads of near the limit each
    sat in memory at once, up to 64 frames of keys per subscriber beyond the bound."""
    h = Harness(tmp_path, subscriber_held_max=1_000)
    try:
        world(h)
        subscribe(h)
        pump(h)
        keys = [f"key-{i}" for i in range(600)]
        body = wire.load_body(SUB, [], keys=[("@roots", keys)])
        heap_frame(h, wire.FrameType.LOAD, 9, body)
        heap_frame(h, wire.FrameType.LOAD, 10, wire.load_body(SUB, [], keys=[("o.big", keys)]))
        assert [e[1] for e in h.errors] == [10]
        assert "--subscriber-held-max=1000" in h.errors[0][3]
        pump(h)  # served: now held, no longer queued
        sub = h.streams._subscribers[b"app"]
        assert sub.held is not None and len(sub.held) == 601
        heap_frame(h, wire.FrameType.LOAD, 11, wire.load_body(SUB, ["o.a"]))
        assert [e[1] for e in h.errors] == [10]
    finally:
        h.close()


def test_a_node_loaded_after_its_oid_was_collected_and_created_again_stays_held(
    h: Harness,
) -> None:
    """The cursor passing an event that collected an oid dropped it from the held set even if
    the app held it from a later index (a load answered after the oid was created again): the
    app held the node, the agent filtered out its every event."""
    h.sm.gc_threshold = 1
    world(h)
    h.commit([["new", "o.x", "dict", []], ["set", "@roots", "x", Ref("o.x")]], client=OTHER)
    subscribe(h)
    pump(h)
    garbage = [["new", f"g.{i}", "set", []] for i in range(5)]
    collected = h.commit([["del", "@roots", "x"], *garbage], client=OTHER)[0]
    assert "o.x" in collected.collected
    h.commit([["new", "o.x", "dict", []], ["set", "@roots", "x", Ref("o.x")]], client=OTHER)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, ["o.x"]))
    pump(h)
    written = h.commit([["set", "o.x", "n", 1]], client=OTHER)[0].index
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert written in sent


def test_a_held_node_collected_created_again_and_loaded_again_stays_held(h: Harness) -> None:
    """A node held since s, collected at c, created again and LOADed again at L > c while the
    cursor is before c kept since s (so the events in (s, L] reach the app), and the cursor
    passing c then forgot it: the app held the node, the agent filtered its every event. The
    held set keeps the index of such a read (`read_again`) and keeps the node from it on."""
    h.sm.gc_threshold = 1
    world(h)
    h.commit([["new", "o.x", "dict", []], ["set", "@roots", "x", Ref("o.x")]], client=OTHER)
    subscribe(h)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, ["o.x"]))
    pump(h)
    garbage = [["new", f"g.{i}", "set", []] for i in range(5)]
    collected = h.commit([["del", "@roots", "x"], *garbage], client=OTHER)[0]
    assert "o.x" in collected.collected
    h.commit([["new", "o.x", "dict", []], ["set", "@roots", "x", Ref("o.x")]], client=OTHER)
    heap_frame(h, wire.FrameType.LOAD, 10, wire.load_body(SUB, ["o.x"]))
    pump(h)
    written = h.commit([["set", "o.x", "n", 1]], client=OTHER)[0].index
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert written in sent


def test_a_held_key_collected_created_again_and_loaded_again_stays_held(h: Harness) -> None:
    """As above, for a key of a dict held per key: read again after the dict's collection, the
    key stays held from that read on."""
    h.sm.gc_threshold = 1
    world(h)
    subscribe(h)
    heap_frame(h, wire.FrameType.LOAD, 9, wire.load_body(SUB, [], keys=[("o.big", ["k1"])]))
    pump(h)
    garbage = [["new", f"g.{i}", "set", []] for i in range(5)]
    collected = h.commit([["del", "@roots", "big"], *garbage], client=OTHER)[0]
    assert "o.big" in collected.collected
    big = [[f"k{i}", -i] for i in range(300)]
    again = [["new", "o.big", "dict", big], ["set", "@roots", "big", Ref("o.big")]]
    h.commit(again, client=OTHER)
    heap_frame(h, wire.FrameType.LOAD, 10, wire.load_body(SUB, [], keys=[("o.big", ["k1"])]))
    pump(h)
    written = h.commit([["set", "o.big", "k1", "new"]], client=OTHER)[0].index
    pump(h)
    sent = [i for _to, kind, evs in applied_view(h) if kind == "EVENTS" for i in evs]
    assert written in sent


def test_a_read_again_index_counts_as_a_held_entry_until_its_node_goes() -> None:
    """The index of a read again is memory per held entry like `since`: counted against the
    held-set limits, and forgotten with its node (a DROP, or a collection the read was not
    after) or by a start answer."""
    held = heldset.HeldSet()
    held.add("o.a", 2)
    held.add("o.a", 5)  # read again: since 2 stays, the read at 5 is kept
    held.add_key("o.d", b"k", 2)
    held.add_key("o.d", b"k", 6)
    assert held.since["o.a"] == 2 and held.keys["o.d"][b"k"] == 2
    assert len(held) == 5  # o.a, o.d, its key, two reads again
    held.collected("o.a", 4)  # collected before the read: held from the read on
    held.collected("o.d", 7)  # after it: gone
    assert held.since == {"o.a": 5} and held.keys == {} and len(held) == 1
    held.add("o.a", 8)
    assert len(held) == 2
    held.discard("o.a")
    assert len(held) == 0 and not held.read_again
    held.add("o.b", 1)
    held.add("o.b", 3)
    held.add("o.b", 4, restart=True)
    assert held.since == {"o.b": 4} and len(held) == 1


def test_a_held_snapshot_keeps_no_list_of_the_held_nodes_it_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer remembers the nodes its nodes reference, for the heads it sends last; a held
    snapshot of a linked held set remembered every reference between held nodes (which get no
    head) for as long as it was being sent: memory in the held set's references, uncounted."""
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096)
    try:
        count = 3_000
        chain = [["new", f"n.{i}", "dict", [["next", Ref(f"n.{i + 1}")]]] for i in range(count)]
        h.commit([["new", f"n.{count}", "dict", []], *reversed(chain)])
        h.commit([["new", "@roots", "dict", [["head", Ref("n.0")]]]])
        body = wire.subscribe_body(h.index, heap="partial", client=ME)
        h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        sub = h.streams._subscribers[b"app"]
        assert sub.held is not None
        for i in range(count):
            sub.held.add(f"n.{i}", 1)
        sub.loads.appendleft(heap.LoadJob(0, (), start=True))
        monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 1)
        h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
        h.streams.pump(h.index, 0.0)
        job = sub.loads[0]
        assert job.rest is not None
        for _ in range(5):
            next(job.rest.frames)
        assert len(job.rest._refs) <= 1  # only the last node, not held: its head is owed
    finally:
        h.close()
