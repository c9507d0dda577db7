"""A partial subscriber that stays behind the log's retention still gets its LOADs answered
(review 21's open finding, docs/virtual-heap.md 4.1 "A LOAD behind a held snapshot").

A LOAD is read at the agent's applied index `L` and waits in the stream for the events before
`L`. If the log is compacted past the subscriber's cursor meanwhile, the subscriber gets a held
snapshot at `S >= L` and the LOAD, read at an older index, is read again. Before the fix it was
read again only once the held snapshot had gone out (a later turn, for an app that reads
slowly): at a newer applied index `L'`, behind events `S+1..L'` that such an app again could
not take before they were compacted, and so on: every round a held snapshot, never the answer.
Now the LOADs queued behind a held snapshot are read at its index, in the turn its read ends,
and go right after it.

A real Storage and state machine; the client socket is a fake that records what is sent; the
stream's backlog bound is one byte, so every frame waits for the app's acknowledgement (the
app reads slowly), and each round the log is compacted past the cursor.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import heap
from superstatic_agent.storage import Trimmed
from support.stream_harness import Harness

from superstatic.protocol import codec, wire
from superstatic.protocol.codec import Ref

SUB = 5
APP = b"app"
LOAD_FIRST = 7
LOAD_SLOW = 9
# Rounds the app gets: the fixed agent answers within the first two after the held snapshot.
ROUNDS = 6


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, subscriber_backlog_bytes_max=1)
    try:
        yield harness
    finally:
        harness.close()


def stream(h: Harness) -> list[wire.Frame]:
    return [wire.decode(d, wire.AGENT_TO_CLIENT) for w, d in h.clients.sent if w == APP]


def pump_and_ack(h: Harness) -> None:
    """One turn of the agent, then the app acknowledges every byte it was sent."""
    h.streams.clear_body_cache()
    h.streams.pump(h.index, 0.0)
    received = sum(len(d) for w, d in h.clients.sent if w == APP)
    h.streams.ack(APP, {"stream": [SUB, received]}, 0.0)


def compact_everything(h: Harness) -> None:
    """The log and the memory no longer hold any entry up to the applied index."""
    first = h.index + 1

    def compacted(start: int, count_max: int, bytes_max: int) -> Any:
        if start < first:
            raise Trimmed(start, first)
        return []

    h.storage.events = compacted  # type: ignore[method-assign]
    h.streams.snapshot_installed(h.index)


def load(h: Harness, req_id: int, oid: str) -> None:
    frame = wire.Frame(wire.FrameType.LOAD, req_id, wire.load_body(SUB, [oid]))
    h.streams.on_heap(APP, wire.parse_heap_request(frame), req_id)


def test_a_load_of_a_subscriber_always_behind_the_log_is_answered(h: Harness) -> None:
    h.commit(
        [
            ["new", "@roots", "dict", [["a", Ref("c.1")], ["b", Ref("c.2")]]],
            ["new", "c.1", "list", []],
            ["new", "c.2", "list", ["x"]],
        ]
    )
    body = wire.subscribe_body(0, heap="partial", client="other")
    h.streams.on_subscribe(APP, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    pump_and_ack(h)
    load(h, LOAD_FIRST, "c.1")
    pump_and_ack(h)
    assert [f.body["load"] for f in stream(h)] == [0, LOAD_FIRST], "c.1 is held"
    # Writes to c.1 the app has not taken yet, then a LOAD read behind them.
    for n in range(3):
        h.commit([["extend", "c.1", [n]]], client="writer")
    load(h, LOAD_SLOW, "c.2")
    answered_at = None
    for round_ in range(ROUNDS):
        # The app is slower than the log's retention: the log is compacted past its cursor
        # before it takes the next frame, and the writes go on.
        compact_everything(h)
        pump_and_ack(h)
        h.commit([["extend", "c.1", [f"r{round_}"]]], client="writer")
        if any(f.body.get("load") == LOAD_SLOW for f in stream(h)):
            answered_at = round_
            break
    frames = stream(h)
    held_snapshots = [f.body["index"] for f in frames[2:] if f.body.get("load") == 0]
    assert held_snapshots, "the stream never jumped: nothing was reproduced"
    assert answered_at is not None, (
        f"LOAD {LOAD_SLOW} never answered: {len(held_snapshots)} held snapshots instead"
    )
    (answer,) = [f for f in frames if f.body.get("load") == LOAD_SLOW]
    # At the held snapshot's index, right after it: nothing the app cannot take in between.
    position = frames.index(answer)
    before = frames[position - 1]
    assert before.body.get("load") == 0 and before.body["index"] == answer.body["index"]
    assert answer.body["last"]
    assert ["x"] in [_run_values(item) for item in answer.body["items"] if item[0] in (1, 2, 3)]
    assert h.streams._snapshot_streams == 0, "every reader slot was released"


def _run_values(item: list[Any]) -> list[Any]:
    return list(codec.loads(item[2]))


def test_loads_behind_a_held_snapshot_share_its_read_and_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two LOADs behind a held snapshot, the first larger than the frames built per
    subscriber: both read at the snapshot's index from its one reader slot, answered in order
    right after it, and the slot is free once the last frame is built."""
    monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 8192)
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096, events_frame_entries_max=1)
    try:
        big = ["w" * 200] * 400  # ~80 KB: an answer of many frames, past the budget
        h.commit(
            [
                ["new", "@roots", "dict", [["a", Ref("c.1")], ["b", Ref("c.2")]]],
                ["new", "c.1", "list", big],
                ["new", "c.2", "list", [Ref("c.3")]],
                ["new", "c.3", "list", ["small"]],
                ["set", "@roots", "c", Ref("c.3")],
            ]
        )
        body = wire.subscribe_body(0, heap="partial", client="other")
        h.streams.on_subscribe(APP, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        h.streams.pump(h.index, 0.0)
        h.commit([["set", "@roots", "n", 1]], client="writer")
        load(h, 11, "c.1")
        prefetching = wire.load_body(SUB, ["c.2"], prefetch_bytes=65536)
        frame = wire.Frame(wire.FrameType.LOAD, 12, prefetching)
        h.streams.on_heap(APP, wire.parse_heap_request(frame), 12)
        compact_everything(h)
        for _ in range(200):
            h.streams.pump(h.index, 0.0)
            if not h.streams.has_work(h.index):
                break
        frames = stream(h)
        snapshot = [f for f in frames[1:] if f.body.get("load") == 0]
        assert snapshot and snapshot[-1].body["last"], "a held snapshot after the compaction"
        at = snapshot[-1].body["index"]
        answers = [f for f in frames if f.body.get("load") in (11, 12)]
        assert {f.body["index"] for f in answers} == {at}
        assert [f.body["load"] for f in answers][-1] == 12 and answers[-1].body["last"]
        assert frames.index(answers[0]) == frames.index(snapshot[-1]) + 1
        # The second is read when it reaches the head of the queue (review31: reserved on the
        # snapshot's read until then), the first's frames all built: its prefetch sends c.3
        # whole, and the app holds it.
        items = [i for f in answers if f.body["load"] == 12 for i in f.body["items"]]
        assert [wire.ITEM_HEAD, "c.3", "list", None] not in items
        assert [i[1] for i in items if i[0] == 0] == ["c.2", "c.3"]
        sub = h.streams._subscribers[APP]
        assert sub.held is not None and "c.3" in sub.held
        assert h.streams._snapshot_streams == 0, "the shared reader slot was released"
    finally:
        h.close()


def three_loads_behind_a_held_snapshot(h: Harness) -> Any:
    """Three ~80 KB lists, a partial subscriber, then LOADs 11-13 of them queued while the log
    is compacted past the subscriber (so they wait behind its held snapshot); its subscriber."""
    big = ["w" * 200] * 400  # ~80 KB each
    h.commit([["new", oid, "list", big] for oid in ("c.1", "c.2", "c.3")])
    body = wire.subscribe_body(0, heap="partial", client="other")
    h.streams.on_subscribe(APP, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    h.streams.pump(h.index, 0.0)
    h.commit([["new", "c.4", "list", []]], client="writer")
    for req_id, oid in ((11, "c.1"), (12, "c.2"), (13, "c.3")):
        load(h, req_id, oid)
    compact_everything(h)
    return h.streams._subscribers[APP]


def test_loads_behind_a_held_snapshot_build_at_most_one_budget_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review31: the loads read with a held snapshot share the subscriber's one budget of built
    frames (the memory bound counts LOAD_BUILT_BYTES_MAX once per subscriber). Three loads,
    each past the budget alone: at no turn do their built frames pass the budget by more than
    the frame that crossed it (a budget per load built three)."""
    budget = 8192
    chunk = 4096
    monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", budget)
    h = Harness(tmp_path, snapshot_chunk_bytes_max=chunk, stream_frames_per_turn_max=1)
    try:
        sub = three_loads_behind_a_held_snapshot(h)
        built_max = 0
        for _ in range(500):
            h.streams.pump(h.index, 0.0)
            built_max = max(built_max, sum(job.built_bytes for job in sub.loads))
            if not h.streams.has_work(h.index):
                break
        assert [f.body["load"] for f in stream(h) if f.body.get("last")][-3:] == [11, 12, 13]
        assert built_max <= budget + chunk + 1024, built_max
        assert h.streams._snapshot_streams == 0
    finally:
        h.close()


def test_an_unsubscribe_mid_build_releases_the_shared_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review31: the app leaves while loads read with its held snapshot still have frames to
    build: the shared read's reader slot and its LMDB reader are released (each load leaves
    the read; the last one ends it)."""
    monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 8192)
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096, stream_frames_per_turn_max=1)
    try:
        sub = three_loads_behind_a_held_snapshot(h)
        for _ in range(500):
            h.streams.pump(h.index, 0.0)
            if not any(job.start for job in sub.loads):
                break
        reads = [job.rest.shared for job in sub.loads if job.rest is not None]
        reads += [job.reserved for job in sub.loads if job.reserved is not None]
        assert len(reads) >= 2 and len({id(read) for read in reads}) == 1
        assert h.streams._snapshot_streams == 1, "one reader slot for the loads read together"
        h.streams.unsubscribe(APP)
        assert h.streams._snapshot_streams == 0
        assert _open_read_txns(h) == [], "a read transaction is still open"
    finally:
        h.close()


def test_loads_queued_behind_a_held_snapshot_hold_memory_within_the_load_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review31: the memory bound counts LOAD_BUILT_BYTES_MAX per subscriber for its loads.
    A subscriber behind the log with SUBSCRIBER_LOADS_MAX re-reads of LOAD_OIDS_MAX nodes it
    holds queued (each adds nothing, so none is refused): when the held snapshot's last frame
    was built, all of them were read at once and kept (about 400 KB each, 26 MB per
    subscriber); now they reserve the snapshot's read and each is read at the head of the
    queue."""
    monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 8192)
    h = Harness(tmp_path, snapshot_chunk_bytes_max=4096, stream_frames_per_turn_max=1)
    try:
        oids = [f"c.{i:x}" for i in range(wire.LOAD_OIDS_MAX)]
        for at in range(0, len(oids), 256):
            h.commit([["new", oid, "list", [1]] for oid in oids[at : at + 256]])
        body = wire.subscribe_body(0, heap="partial", client="other")
        h.streams.on_subscribe(APP, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        h.streams.clients.send = lambda _who, _data: "ok"  # type: ignore[method-assign]
        for _ in range(20):
            h.streams.pump(h.index, 0.0)
        frame = wire.Frame(wire.FrameType.LOAD, 1, wire.load_body(SUB, oids))
        h.streams.on_heap(APP, wire.parse_heap_request(frame), 1)
        for _ in range(2000):
            h.streams.pump(h.index, 0.0)
            if not h.streams.has_work(h.index):
                break
        sub = h.streams._subscribers[APP]
        assert sub.held is not None and len(sub.held) == len(oids) and not sub.loads
        h.commit([["new", "z.1", "list", []]], client="writer")
        for req_id in range(2, 2 + heap.SUBSCRIBER_LOADS_MAX):
            frame = wire.Frame(wire.FrameType.LOAD, req_id, wire.load_body(SUB, oids))
            h.streams.on_heap(APP, wire.parse_heap_request(frame), req_id)
        assert not h.errors, "re-reads add nothing: none is refused"
        compact_everything(h)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            grown = 0
            for _ in range(2000):
                h.streams.pump(h.index, 0.0)
                grown = max(grown, tracemalloc.get_traced_memory()[0] - before)
                if all(job.index >= 0 or job.reserved is not None for job in sub.loads):
                    break
        finally:
            tracemalloc.stop()
        assert all(job.index >= 0 or job.reserved is not None for job in sub.loads)
        # The budget of built frames and one load's read (what main kept), with room to spare.
        assert grown < 2 << 20, f"{grown} bytes held for the queued loads"
    finally:
        h.close()


def _open_read_txns(h: Harness) -> list[str]:
    """The txnids LMDB's reader table shows open (a slot a thread keeps shows "-")."""
    rows = h.storage.env.readers().splitlines()[1:]
    return [row.split()[2] for row in rows if len(row.split()) == 3 and row.split()[2] != "-"]
