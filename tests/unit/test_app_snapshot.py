"""App SNAPSHOT format 2 (docs/data-model-v2.md section 5): the agent's producer
(agent/app_snapshot.py) split into frames, fed through the library's StreamFeeder into a real
Replica; and the feeder's refusals of malformed or oversized snapshots."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lmdb
import pytest
from superstatic_agent import app_snapshot
from superstatic_agent import records as layout
from support.snapshots import frames_of
from support.v3store import EXPECTED, fill

from superstatic.client import stream
from superstatic.client.stream import StreamFeeder
from superstatic.objects.replica import Replica
from superstatic.protocol import codec, wire
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import LimitExceeded, ProtocolError


def records() -> list[tuple[str, bytes]]:
    """Whole node records [version, kind, contents] as the format-2 store holds them."""
    big = [[f"k{i:04}", i] for i in range(300)]
    roots = [["d", Ref("d1")], ["l", Ref("l1")], ["s", Ref("s1")], ["o", Ref("o1")]]
    return [
        ("@roots", codec.encode_record(7, "dict", [*roots, ["e", Ref("e1")]])),
        ("d1", codec.encode_record(3, "dict", [*big, [(1, "t"), Ref("o1")]])),
        ("e1", codec.encode_record(2, "list", [])),
        ("l1", codec.encode_record(4, "list", [*range(500), "x" * 100, Ref("d1")])),
        ("o1", codec.encode_record(5, "obj", ["Point", [["x", 1], ["y", (2, 3)]]])),
        ("s1", codec.encode_record(6, "set", [*range(200), frozenset({1, 2})])),
    ]


@pytest.mark.parametrize("frame_bytes_max", [1, 200, 1 << 20])
def test_a_snapshot_split_into_runs_loads_the_same_graph(frame_bytes_max: int) -> None:
    bodies = frames_of(records(), frame_bytes_max)
    if frame_bytes_max == 200:
        assert len(bodies) > 10
        # Runs of one node continue over frames: no frame holds a whole big container.
        assert sum(1 for b in bodies for item in b["items"] if item[:2] == [1, "d1"]) > 5
    replica = Replica()
    feeder = StreamFeeder(replica)
    for body in bodies[:-1]:
        assert not feeder.feed_snapshot(body)
        assert replica.applied_index == 0  # nothing visible before the last frame
    assert feeder.feed_snapshot(bodies[-1])
    assert replica.applied_index == 9 and replica.log_time_ms == 1234
    nodes = replica.nodes
    d1 = nodes["d1"].live
    assert list(d1)[:3] == ["k0000", "k0001", "k0002"] and len(d1) == 301
    assert d1[(1, "t")] is nodes["o1"].ref
    assert list(nodes["l1"].live) == [*range(500), "x" * 100, nodes["d1"].ref]
    assert nodes["e1"].live == []
    assert nodes["s1"].live == set(range(200)) | {frozenset({1, 2})}
    assert nodes["o1"].class_name == "Point" and dict(nodes["o1"].live) == {"x": 1, "y": (2, 3)}


def test_frames_stay_near_the_bound_whatever_the_container() -> None:
    big_list = list(range(100_000))
    recs = [("l", codec.encode_record(1, "list", big_list))]
    bodies = frames_of(recs, 4096)
    sizes = [len(wire.encode(wire.FrameType.SNAPSHOT, 1, b)) for b in bodies]
    assert len(bodies) > 50 and max(sizes) < 4096 + 512
    replica = Replica()
    feeder = StreamFeeder(replica)
    for body in bodies:
        feeder.feed_snapshot(body)
    assert list(replica.nodes["l"].live) == big_list


def test_an_empty_table_sends_one_last_frame() -> None:
    bodies = frames_of([], 100)
    assert len(bodies) == 1 and bodies[0]["last"] and bodies[0]["items"] == []
    replica = Replica()
    assert StreamFeeder(replica).feed_snapshot(bodies[0]) and replica.applied_index == 9


def snap(items: list[Any], **extra: Any) -> dict[str, Any]:
    return {"index": 1, "part": 0, "last": True, "fmt": 2, "items": items, **extra}


def run(tag: int, oid: str, elements: list[Any]) -> list[Any]:
    return [tag, oid, codec.dumps(elements)]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([[1, "d", codec.dumps([])]], "does not continue"),
        ([[0, "d", "dict", None, 1], run(1, "e", [[1, 2]])], "does not continue"),
        ([[0, "d", "dict", None, 1], run(3, "d", [1])], "does not continue"),
        ([[0, "d", "dict", None, 1], [1, "d", [[1, 2]]]], "CBOR bytes"),
        ([[0, "d", "dict", None, 1], [1, "d", b"\xff"]], "undecodable"),
        ([[0, "d", "dict", None, 1], run(1, "d", [[[1], 2]])], "key"),
        ([[0, "d", "dict", None, 1], run(1, "d", [[1, 2, 3]])], "dict item"),
        ([[0, "s", "set", None, 1], run(2, "s", [[1]])], "set"),
        ([[0, "o", "obj", "C", 1], run(1, "o", [[1, 2]])], "attribute"),
        ([[0, "o", "obj", None, 1]], "class"),
        ([[0, "l", "list", 2, 1], run(3, "l", [1])], "header said 2"),
        ([[0, "l", "list", 1, 1], run(3, "l", [1, 2])], "more list values"),
        ([[0, "l", "list", -1, 1]], "length"),
        ([[0, "d", "dict", None, 1], [0, "d", "dict", None, 1]], "twice"),
        ([[0, "d", "tree", None, 1]], "kind"),
        ([[0, "d", "dict", None, -1]], "version"),
        ([[0, "x" * 300, "dict", None, 1]], "object id"),
        ([[0, "d", "dict"]], "header"),
        ([[7, "d", b""]], "run"),
        (["d"], "item"),
    ],
)
def test_the_feeder_refuses_malformed_snapshots(items: list[Any], message: str) -> None:
    replica = Replica()
    with pytest.raises(ProtocolError, match=message):
        StreamFeeder(replica).feed_snapshot(snap(items))
    assert replica.applied_index == 0 and replica.nodes == {}


def test_the_feeder_refuses_another_format() -> None:
    with pytest.raises(ProtocolError, match="fmt must be 2"):
        StreamFeeder(Replica()).feed_snapshot({"index": 1, "part": 0, "last": True, "nodes": []})


def test_the_feeder_bounds_what_a_peer_makes_it_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "SNAPSHOT_ELEMENTS_MAX", 10)
    feeder = StreamFeeder(Replica())
    feeder.feed_snapshot(snap([[0, "l", "list", 20, 1], run(3, "l", list(range(6)))], last=False))
    with pytest.raises(LimitExceeded, match="SNAPSHOT_ELEMENTS_MAX"):
        feeder.feed_snapshot(snap([run(3, "l", list(range(6)))], part=1))
    monkeypatch.setattr(stream, "SNAPSHOT_NODES_MAX", 2)
    feeder = StreamFeeder(Replica())
    with pytest.raises(LimitExceeded, match="SNAPSHOT_NODES_MAX"):
        feeder.feed_snapshot(snap([[0, f"n{i}", "dict", None, 1] for i in range(3)]))


def test_a_format_3_store_streams_record_by_record(tmp_path: Path) -> None:
    """The reader over per-key records: every kind of node (original keys, long keys in
    buckets, a tombstone that must not show, set members in key order, list leaves) arrives in
    the app as the store holds it, over many small frames."""
    # oid_marks too (rules 3, filled by v3store.fill): an app snapshot never carries it.
    names = [n.decode() for n in layout.NODE_DB_NAMES] + ["sm_meta", "sessions", "oid_marks"]
    env = lmdb.open(str(tmp_path), max_dbs=len(names) + 1, map_size=64 << 20)
    try:
        dbs = SimpleNamespace(**{n: env.open_db(n.encode()) for n in names})
        with env.begin(write=True) as txn:
            fill(txn, dbs)
        with env.begin() as txn:
            item_lists = list(
                app_snapshot.snapshot_frames(app_snapshot.nodes_of_store(txn, dbs), 500)
            )
    finally:
        env.close()
    assert len(item_lists) > 20
    replica = Replica()
    feeder = StreamFeeder(replica)
    for part, items in enumerate(item_lists):
        body = app_snapshot.frame_body(40, part, part == len(item_lists) - 1, 7, items)
        feeder.feed_snapshot(wire.decode(wire.encode(wire.FrameType.SNAPSHOT, 1, body),
                                         wire.AGENT_TO_CLIENT).body)  # fmt: skip
    assert replica.applied_index == 40
    for oid, (kind, contents) in EXPECTED.items():
        node = replica.nodes[oid]
        assert node.kind == kind, oid
        if kind == "dict":
            assert len(node.live) == len(contents), oid
            for (key, value), (want_key, want) in zip(node.live.items(), contents, strict=True):
                assert key == want_key and type(key) is type(want_key)  # 1.0 kept as 1.0
                if isinstance(want, Ref):
                    assert value is replica.nodes[want.oid].ref
                else:
                    assert value == want
        elif kind == "set":
            assert node.live == set(contents)
        elif kind == "list":
            assert list(node.live) == contents
        else:
            assert node.class_name == contents[0] and node.live["x"] == 1
    assert replica.nodes["o"].live["y"] is replica.nodes["d"].ref


@pytest.mark.parametrize("version", [0, 23, 24, 255, 256, 70_000, 1 << 40])
def test_a_stored_entry_gives_its_value_bytes_without_decoding(version: int) -> None:
    value = (1, "x", Ref("d"))
    raw = layout.encode_entry(layout.EntryRec(version, version + 1, value))
    assert app_snapshot._live_value_bytes(raw) == codec.dumps(value)
    kept = layout.encode_entry(layout.EntryRec(version, 1, value, original=1.0))
    assert app_snapshot._live_value_bytes(kept) is None  # the original key must be read
    assert (
        app_snapshot._live_value_bytes(layout.encode_entry(layout.EntryRec(1, tomb=True))) is None
    )
