"""Review 20 of branch `loadbug` (agent/streams.py): a partial subscriber behind the log whose
held snapshot waits for a reader slot must not keep one meanwhile.

A LOAD served (read at the agent's index `L`, a reader slot held until its last frame is built)
waits for the events before `L` to be sent first. If those were compacted meanwhile, a held
snapshot (a start answer) is queued in front of it and needs a reader slot of its own. Since
`loadbug`, nothing is sent before that start answer (right), but the LOAD behind it kept its
slot and its built frames: with every slot held by such subscribers, each waited for a slot
that only another's progress would free, and none progressed (their apps' reads waited out
their request timeouts, and every other subscriber needing a slot waited with them).

A real Storage and state machine; the client socket is a fake that records what is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import heap, streams
from superstatic_agent.storage import Trimmed
from support.stream_harness import Harness

from superstatic.protocol import wire
from superstatic.protocol.codec import Ref

SUB = 5
# Subscribers enough to take every reader slot, one each.
SUBSCRIBERS = streams.SNAPSHOT_STREAMS_MAX


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    # Small bounds, so an answer of a few tens of KB keeps its reader slot across turns (as
    # one of megabytes does at LOAD_BUILT_BYTES_MAX), and one event goes per frame.
    monkeypatch.setattr(heap, "LOAD_BUILT_BYTES_MAX", 8192)
    harness = Harness(tmp_path, snapshot_chunk_bytes_max=4096, events_frame_entries_max=1)
    try:
        yield harness
    finally:
        harness.close()


def identity(i: int) -> bytes:
    return f"app{i}".encode()


def frames_of(h: Harness, who: bytes) -> list[wire.Frame]:
    return [wire.decode(d, wire.AGENT_TO_CLIENT) for w, d in h.clients.sent if w == who]


def pump(h: Harness, turns: int = 1) -> None:
    for _ in range(turns):
        h.streams.clear_body_cache()
        h.streams.pump(h.index, 0.0)


def test_held_snapshots_behind_served_loads_do_not_deadlock_the_reader_slots(
    h: Harness,
) -> None:
    big = ["w" * 200] * 400  # ~80 KB: an answer of many frames
    h.commit([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", big]])
    for i in range(SUBSCRIBERS):
        body = wire.subscribe_body(0, heap="partial", client="cl")
        h.streams.on_subscribe(identity(i), wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    pump(h)
    # Three writes of the subscribers' own client (they pass every filter), not sent yet.
    for n in range(3):
        h.commit([["set", "@roots", "n", n]])
    for i in range(SUBSCRIBERS):
        frame = wire.Frame(wire.FrameType.LOAD, 9, wire.load_body(SUB, ["c.1"]))
        h.streams.on_heap(identity(i), wire.parse_heap_request(frame), 9)
    # The apps read slowly: each LOAD is served (its reader slot held: a large answer) and
    # the first event after each cursor waits in its socket.
    h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
    pump(h)
    assert h.streams._snapshot_streams == SUBSCRIBERS, "each served LOAD holds a slot"
    # The log is compacted past the events still to send (gone from memory too).
    first = h.index + 1

    def compacted(start: int, count_max: int, bytes_max: int) -> Any:
        raise Trimmed(start, first)

    h.storage.events = compacted  # type: ignore[method-assign]
    h.streams.snapshot_installed(h.index)
    del h.clients.send
    for _ in range(10):
        pump(h)
        if not h.streams.has_work(h.index):
            break
    for i in range(SUBSCRIBERS):
        loaded = [f.body for f in frames_of(h, identity(i)) if f.type is wire.FrameType.LOADED]
        starts = [b for b in loaded if b["load"] == 0 and b["index"] == h.index]
        assert starts and starts[-1]["last"], f"subscriber {i} got no held snapshot"
        answer = [b for b in loaded if b["load"] == 9]
        assert answer and answer[-1]["last"], f"subscriber {i}'s LOAD was never answered"
        assert {b["index"] for b in answer} == {h.index}
    assert h.streams._snapshot_streams == 0, "every reader slot was released"
