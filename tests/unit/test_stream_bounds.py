"""Subscriber streams in bytes (issue 8, items 3 and 4): the backlog an app leaves
unacknowledged is bounded, a subscriber that never acknowledges is dropped, the event cache is
bounded in bytes, and a frame that cannot be built is an error to that subscriber only.

A real Storage and state machine; the client socket is a fake that records what is sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from superstatic_agent.listtree import ListTree
from superstatic_agent.nodestore import NodeView, RecordCache, ViewChunks
from support.stream_harness import Harness, MiB

from superstatic.protocol import wire
from superstatic.protocol.codec import Ref


def test_a_subscriber_gets_no_more_than_its_backlog_until_it_acknowledges(tmp_path: Path) -> None:
    h = Harness(tmp_path, subscriber_backlog_bytes_max=3 * MiB, subscriber_stall_ms=1_000)
    try:
        h.commit([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "dict", []]])
        for i in range(12):
            assert h.commit([["set", "c.1", i % 2, "x" * 1_000_000]])[0].outcome == "ok"
        h.subscribe(b"app", 7, start=1)
        for turn in range(20):
            h.streams.pump(h.index, now=float(turn))
        sent = h.sent_to(b"app")
        assert 0 < sent <= 3 * MiB + 1_100_000  # the bound (a frame may straddle it)
        # Acknowledging what arrived lets the rest flow.
        h.streams.ack(b"app", {"stream": [7, sent]}, now=20.0)
        h.streams.ack(b"other", {"stream": "garbage"}, now=20.0)  # ignored
        for turn in range(20):
            h.streams.pump(h.index, now=21.0 + turn)
        assert h.sent_to(b"app") > sent
        assert h.sent_to(b"app") <= sent + 3 * MiB + 1_100_000
        # Still pinging, never acknowledging more: dropped once stalled subscriber_stall_ms.
        stalled = h.streams._subscribers[b"app"].stalled_since
        assert stalled is not None
        h.streams.touch(b"app", stalled + 0.9)
        h.streams.drop_silent(now=stalled + 0.9)
        assert h.streams.count() == 1
        h.streams.touch(b"app", stalled + 1.1)
        h.streams.drop_silent(now=stalled + 1.1)
        assert h.streams.count() == 0
        assert h.errors and h.errors[-1][2] == "lagging"
        assert "subscriber_backlog_bytes_max" in h.errors[-1][3]
    finally:
        h.close()


def test_the_event_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    h = Harness(tmp_path, events_cache_bytes_max=4 * MiB)
    try:
        h.commit([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "dict", []]])
        for _ in range(20):
            h.commit([["set", "c.1", 0, "y" * 500_000]])
            assert h.streams.memory_bytes() <= 4 * MiB
        # Older events still reach a subscriber: read from LMDB.
        h.subscribe(b"late", 3, start=1)
        for turn in range(40):
            h.streams.pump(h.index, now=float(turn))
            h.streams.ack(b"late", {"stream": [3, h.sent_to(b"late")]}, now=float(turn))
        assert h.sent_to(b"late") > 20 * 500_000
    finally:
        h.close()


def test_a_frame_that_cannot_be_built_is_an_error_to_that_subscriber_only(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    try:
        h.commit([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", []]])
        # A value larger than a frame (written before record_bytes_max existed): its list
        # chunk, and the node an app snapshot carries, cannot fit one.
        with h.storage.env.begin(write=True) as txn:
            view = NodeView(txn, h.storage.dbs, RecordCache(0))
            nid = view.nid("c.1")
            assert nid is not None
            header = dataclasses.replace(view.header(nid))
            chunks = ViewChunks(view, nid, 1 << 40, None)
            made = ListTree.create(chunks, ["z" * (wire.FRAME_BYTES_MAX + 1)], 1)
            header.extra, header.count = made.to_wire(), made.length
            view.put_header(nid, header)
            view.commit()
        h.subscribe(b"new-app", 5, start=0)
        h.subscribe(b"live-app", 6, start=h.index)
        h.streams.pump(h.index, now=0.0)
        assert [e[:3] for e in h.errors] == [(b"new-app", 5, "too_large")]
        assert h.streams.count() == 1  # the other subscriber is still served
        h.commit([["new", "c.2", "list", []]])
        h.streams.pump(h.index, now=1.0)
        assert h.sent_to(b"live-app") > 0
    finally:
        h.close()


def test_a_subscribe_without_data_model_2_is_refused(tmp_path: Path) -> None:
    """A model-1 library (no "model" in its SUBSCRIBE) would misread format-2 snapshots: it is
    told to upgrade, and nothing is streamed to it (docs/data-model-v2.md section 7)."""
    h = Harness(tmp_path)
    try:
        h.commit([["new", "@roots", "dict", []]])
        for identity, model in ((b"old", None), (b"other", 1)):
            h.subscribe(identity, 3, model=model)
            h.streams.pump(h.index, now=0.0)
            assert [sent for sent in h.clients.sent if sent[0] == identity] == []
            ((_who, req_id, code, message),) = [e for e in h.errors if e[0] == identity]
            assert (req_id, code) == (3, "bad_request")
            assert "upgrade the superstatic library" in message
        h.subscribe(b"new", 4)
        h.streams.pump(h.index, now=0.0)
        frames = [wire.decode(d, wire.AGENT_TO_CLIENT) for w, d in h.clients.sent if w == b"new"]
        assert frames[0].type is wire.FrameType.SNAPSHOT and frames[0].body["fmt"] == 2
    finally:
        h.close()
