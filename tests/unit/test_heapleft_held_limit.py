"""A held-set limit counts only what a LOAD's answer adds (review 20's open finding,
docs/virtual-heap.md 4.2): a LOAD naming only nodes and keys the subscriber holds already (a
re-read: a second fault, the root table's probe) adds no held entry, so it is answered even at
`--subscriber-held-max`; before, every name counted, and at the limit such a read was refused
`too_large` as if it asked for more. A LOAD that adds anything is still refused naming the flag,
and a DROP racing a queued re-read cannot make room twice.

A real Storage and state machine; the client socket is a fake that records what is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.stream_harness import Harness

from superstatic.protocol import wire
from superstatic.protocol.codec import Ref

SUB = 5
APP = b"app"
HELD_MAX = 6
NODES = [f"c.{i}" for i in range(HELD_MAX - 2)]  # with the root table and one key of it: 6


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, subscriber_held_max=HELD_MAX)
    try:
        harness.commit(
            [["new", "@roots", "dict", [["k", Ref("c.0")]]]]
            + [["new", oid, "list", [oid]] for oid in NODES]
            + [["set", "@roots", oid, Ref(oid)] for oid in NODES[1:]]
        )
        body = wire.subscribe_body(0, heap="partial", client="other")
        harness.streams.on_subscribe(APP, wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        pump(harness)
        yield harness
    finally:
        harness.close()


def pump(h: Harness) -> None:
    for _ in range(20):
        h.streams.clear_body_cache()
        h.streams.pump(h.index, 0.0)
        if not h.streams.has_work(h.index):
            return


def request(
    h: Harness,
    frame_type: wire.FrameType,
    req_id: int,
    oids: list[str],
    keys: list[tuple[str, list[Any]]] | None = None,
) -> None:
    if frame_type is wire.FrameType.DROP:
        body = wire.drop_body(SUB, oids)
    else:
        body = wire.load_body(SUB, oids, keys or [])
    frame = wire.Frame(frame_type, req_id, body)
    h.streams.on_heap(APP, wire.parse_heap_request(frame), req_id)


def answered(h: Harness, req_id: int) -> bool:
    frames = [wire.decode(d, wire.AGENT_TO_CLIENT) for w, d in h.clients.sent if w == APP]
    return any(f.body.get("load") == req_id and f.body.get("last") for f in frames)


def refusals(h: Harness, req_id: int) -> list[str]:
    return [message for _who, rid, code, message in h.errors if rid == req_id]


def held_to_the_limit(h: Harness) -> None:
    request(h, wire.FrameType.LOAD, 1, NODES, [("@roots", ["k"])])
    pump(h)
    assert answered(h, 1) and not h.errors
    sub = h.streams._subscribers[APP]
    assert sub.held is not None and len(sub.held) == HELD_MAX, "at the limit"


def test_a_reread_of_held_nodes_and_keys_is_answered_at_the_limit(h: Harness) -> None:
    held_to_the_limit(h)
    request(h, wire.FrameType.LOAD, 2, NODES[:2])
    request(h, wire.FrameType.LOAD, 3, ["@roots"], [("@roots", ["k"])])
    pump(h)
    assert not refusals(h, 2) and not refusals(h, 3), h.errors
    assert answered(h, 2) and answered(h, 3)
    # The stream had sent everything: the re-reads needed no read-again index either.
    sub = h.streams._subscribers[APP]
    assert sub.held is not None and len(sub.held) == HELD_MAX


def test_a_load_that_adds_is_still_refused_at_the_limit_naming_the_flag(h: Harness) -> None:
    held_to_the_limit(h)
    request(h, wire.FrameType.LOAD, 2, NODES[:1], [("@roots", ["k", "new"])])
    (message,) = refusals(h, 2)
    assert f"--subscriber-held-max={HELD_MAX}" in message
    assert "names 1" in message, message  # only the new key counts


def test_a_drop_racing_a_queued_reread_does_not_make_room_twice(h: Harness) -> None:
    held_to_the_limit(h)
    request(h, wire.FrameType.LOAD, 2, NODES)  # held: adds nothing, queued
    request(h, wire.FrameType.DROP, 0, NODES)  # frees their entries, but the re-read holds
    request(h, wire.FrameType.LOAD, 3, ["c.0"])  # them again when it is served
    (message,) = refusals(h, 3)
    assert f"--subscriber-held-max={HELD_MAX}" in message
    pump(h)
    sub = h.streams._subscribers[APP]
    assert answered(h, 2) and sub.held is not None and len(sub.held) <= HELD_MAX


def test_a_reread_while_the_stream_lags_leaves_no_entry_once_the_stream_passed_it(
    h: Harness,
) -> None:
    """review31: a re-read served while the stream lags keeps a read-again index per node
    (HeldSet.read_again), which matters only until the stream passes the read's index. Kept
    after that, each counted as a held entry for good: the app holding 3 of its 6 entries,
    after one such re-read, was refused a LOAD adding one node as over the limit (and the
    agent's held sets stayed past their term of the memory bound)."""
    request(h, wire.FrameType.LOAD, 1, NODES[:3])
    pump(h)
    sub = h.streams._subscribers[APP]
    assert answered(h, 1) and sub.held is not None and len(sub.held) == 3
    for oid in NODES[:3]:
        h.commit([["extend", oid, ["later"]]], client="writer")  # the stream has not sent these
    request(h, wire.FrameType.LOAD, 2, NODES[:3])  # held: adds nothing; read past the cursor
    pump(h)
    assert answered(h, 2) and not h.errors
    assert sub.next_index == h.index + 1, "the stream passed the re-read's index"
    assert len(sub.held) == 3, sub.held.read_again
    request(h, wire.FrameType.LOAD, 3, [NODES[3]])
    pump(h)
    assert not refusals(h, 3) and answered(h, 3)
