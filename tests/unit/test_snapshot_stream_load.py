"""A SNAPSHOT loaded as its frames arrive (objects/snapshot_load.py; docs/library.md, "Memory
per object"): new nodes are filled run by run, so the whole decoded snapshot is never held,
and still nothing shows before the last frame. What must hold whatever the frames' cut: refs
before their node's header (parents come first), where a placeholder can stand and where none
can (keys, set members, tuples), nodes that survive a second snapshot untouched until its last
frame, an adopted private node, a snapshot dropped or refused half way."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.snapshots import frames_of

from superstatic.client.stream import ReplicaFailed, StreamFeeder
from superstatic.objects.node import PARTIAL, Node
from superstatic.objects.replica import Replica
from superstatic.protocol import codec, wire
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import Error, ProtocolError


def record(oid: str, kind: str, contents: Any) -> tuple[str, bytes]:
    return (oid, codec.encode_record(1, kind, contents))


def buckets(objects: int, per_bucket: int) -> list[tuple[str, bytes]]:
    """The catch-up layout in the agent's creation order: each container before the nodes it
    references (every ref a forward one)."""
    recs = [record("@roots", "dict", [["top", Ref("top")]])]
    count = (objects + per_bucket - 1) // per_bucket
    recs.append(record("top", "dict", [[f"b{b}", Ref(f"b{b}")] for b in range(count)]))
    for b in range(count):
        members = range(b * per_bucket, min(objects, (b + 1) * per_bucket))
        recs.append(record(f"b{b}", "dict", [[f"o{i}", Ref(f"o{i}")] for i in members]))
        recs.extend(record(f"o{i}", "dict", [["i", i], ["name", f"object {i}"]]) for i in members)
    return recs


def feed(replica: Replica, bodies: list[dict[str, Any]]) -> Replica:
    feeder = StreamFeeder(replica)
    for body in bodies:
        feeder.feed_snapshot(body)
    return replica


@pytest.mark.parametrize("frame_bytes_max", [1, 300, 1 << 20])
def test_forward_refs_resolve_and_nothing_shows_before_the_last_frame(
    frame_bytes_max: int,
) -> None:
    bodies = frames_of(buckets(50, 10), frame_bytes_max)
    replica = Replica()
    feeder = StreamFeeder(replica)
    for body in bodies[:-1]:
        assert not feeder.feed_snapshot(body)
        assert replica.nodes == {} and replica.applied_index == 0
    assert feeder.feed_snapshot(bodies[-1]) and replica.applied_index == 9
    nodes = replica.nodes
    assert len(nodes) == 2 + 5 + 50
    top = nodes["@roots"].live["top"]
    assert top is nodes["top"].ref
    assert list(top) == [f"b{b}" for b in range(5)]
    assert top["b4"] is nodes["b4"].ref
    assert [key for key in nodes["b2"].live] == [f"o{i}" for i in range(20, 30)]
    assert nodes["b2"].live["o27"] is nodes["o27"].ref
    assert nodes["o27"].live == {"i": 27, "name": "object 27"}
    assert all(type(node) is Node and not node.dead for node in nodes.values())


def test_new_nodes_are_filled_while_later_frames_are_still_to_come() -> None:
    """The point of the streamed load: a node's elements are in its container as soon as its
    runs arrived, not kept as decoded wire form until the last frame."""
    bodies = frames_of(buckets(200, 100), 2000)
    replica = Replica()
    feeder = StreamFeeder(replica)
    half = len(bodies) // 2
    for body in bodies[:half]:
        feeder.feed_snapshot(body)
    assert replica.nodes == {}
    loading = feeder._builder.nodes  # type: ignore[attr-defined]
    assert loading["o0"].live == {"i": 0, "name": "object 0"}
    # o0 arrived after its bucket: the bucket's placeholder was replaced when it came.
    assert loading["b0"].live["o0"] is loading["o0"].ref
    for body in bodies[half:]:
        feeder.feed_snapshot(body)
    assert replica.nodes["o0"] is loading["o0"]


# Loads the SNAPSHOT frames in the file argv[1] (length-prefixed wire frames) as the
# connection does, one decoded frame at a time, and prints its RssAnon growth in bytes.
LOAD_CHILD = """
import gc, struct, sys
from superstatic.client.stream import StreamFeeder
from superstatic.objects.replica import Replica
from superstatic.protocol import wire

def rss_anon():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no RssAnon")

with open(sys.argv[1], "rb") as f:
    data = f.read()
frames = []
at = 0
while at < len(data):
    (size,) = struct.unpack_from("<I", data, at)
    frames.append(data[at + 4 : at + 4 + size])
    at += 4 + size
del data
replica = Replica()
feeder = StreamFeeder(replica)
gc.collect()
before = rss_anon()
while frames:
    feeder.feed_snapshot(wire.decode(frames.pop(0), wire.AGENT_TO_CLIENT).body)
gc.collect()
print(len(replica.nodes), rss_anon() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon in /proc")
def test_a_full_replica_of_small_objects_takes_under_a_kilobyte_each(tmp_path: Path) -> None:
    """Issue 11's bound on the process itself, in a fresh interpreter: the resident memory a
    loaded snapshot of 50,000 small dicts adds (docs/library.md, "Memory per object": 1,285 B
    per object when the whole decoded snapshot was held until the last frame, its freed
    blocks left resident among the nodes; 818 B loaded as it arrives, with a full replica's
    slimmer node)."""
    objects = 50_000
    path = tmp_path / "frames"
    with path.open("wb") as out:
        for body in frames_of(buckets(objects, 1_000), 1 << 20):
            data = wire.encode(wire.FrameType.SNAPSHOT, 1, body)
            out.write(struct.pack("<I", len(data)) + data)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_CHILD, str(path)],
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    nodes, grown = (int(word) for word in done.stdout.split())
    assert nodes == objects + 2 + objects // 1_000
    assert grown / objects < 1_024, grown / objects


def test_forward_refs_where_no_placeholder_stands_keep_each_node_in_order() -> None:
    """A ref to a node not arrived yet in a dict key, a set member or a tuple holds the rest of
    its node back to the last frame; values after it do not overtake it."""
    recs = [
        record("@roots", "dict", [["d", Ref("d1")], ["l", Ref("l1")], ["s", Ref("s1")]]),
        record(
            "d1",
            "dict",
            [["a", 1], [(Ref("p1"), 1), "by key"], ["z", Ref("e1")], ["w", (2, Ref("p1"))]],
        ),
        record("l1", "list", [0, Ref("e1"), (Ref("p1"),), 3, Ref("e1")]),
        record("s1", "set", ["x", Ref("p1"), frozenset({Ref("p1")})]),
        record("o1", "obj", ["Point", [["x", 1], ["at", (Ref("p1"), 0)], ["next", Ref("e1")]]]),
        record("p1", "obj", ["Point", [["x", 2]]]),
        record("e1", "dict", [["i", 5]]),
    ]
    for frame_bytes_max in (1, 60, 1 << 20):
        replica = feed(Replica(), frames_of(recs, frame_bytes_max))
        nodes = replica.nodes
        p1, e1 = nodes["p1"].ref, nodes["e1"].ref
        d1 = nodes["d1"].live
        assert list(d1.items()) == [("a", 1), ((p1, 1), "by key"), ("z", e1), ("w", (2, p1))]
        assert nodes["l1"].live == [0, e1, (p1,), 3, e1]
        assert nodes["s1"].live == {"x", p1, frozenset({p1})}
        assert list(nodes["o1"].live.items()) == [("x", 1), ("at", (p1, 0)), ("next", e1)]


def test_survivors_stay_as_they_were_until_the_last_frame_of_a_second_snapshot() -> None:
    replica = feed(Replica(), frames_of(buckets(30, 10), 1 << 20))
    before = dict(replica.nodes)
    held = before["o5"].ref
    second = [
        record("@roots", "dict", [["top", Ref("top")]]),
        record("top", "dict", [["b0", Ref("b0")], ["n", Ref("n1")]]),
        record("b0", "dict", [["o5", Ref("o5")]]),
        record("o5", "dict", [["i", 500]]),
        record("n1", "list", [Ref("o5"), Ref("o5")]),
        record("o6", "list", []),  # another kind under an old oid: a new node
    ]
    bodies = frames_of(second, 1)
    feeder = StreamFeeder(replica)
    for body in bodies[:-1]:
        feeder.feed_snapshot(body)
        assert replica.nodes == before and replica.applied_index == 9
        assert dict(held) == {"i": 5, "name": "object 5"}
        assert not any(node.dead for node in before.values())
    feeder.feed_snapshot(bodies[-1])
    nodes = replica.nodes
    assert nodes["o5"] is before["o5"] and dict(held) == {"i": 500}
    assert nodes["top"] is before["top"] and list(nodes["top"].live) == ["b0", "n"]
    assert nodes["n1"].live == [held, held]
    assert nodes["o6"] is not before["o6"] and nodes["o6"].kind == "list"
    assert before["o6"].dead and before["b1"].dead and before["o15"].dead
    assert not nodes["o5"].dead and sorted(nodes) == sorted(o for o, _r in second)


def test_a_snapshot_adopts_a_committing_transactions_private_node() -> None:
    replica = feed(Replica(), frames_of(buckets(3, 10), 1 << 20))
    owner: Any = object()  # the transaction that made the node (only its identity matters)
    private = replica.new_node("n1", "dict", None, owner)
    private.live["mine"] = 1
    replica.expect_new([private])
    recs = [
        record("@roots", "dict", [["n", Ref("n1")]]),
        record("n1", "dict", [["i", 7]]),
    ]
    feed(replica, [dict(body, index=20) for body in frames_of(recs, 1)])
    assert replica.nodes["n1"] is private and private.txn is None
    assert private.live == {"i": 7}
    assert replica.nodes["@roots"].live["n"] is private.ref
    assert replica._adopt == {}


def test_a_snapshot_dropped_half_way_changes_nothing() -> None:
    replica = feed(Replica(), frames_of(buckets(30, 10), 1 << 20))
    before = dict(replica.nodes)
    feeder = StreamFeeder(replica)
    bodies = frames_of(buckets(40, 10), 200)
    for body in bodies[: len(bodies) // 2]:
        feeder.feed_snapshot(body)
    feeder.begin()  # a new subscription
    assert replica.nodes == before and not any(node.dead for node in before.values())
    for body in frames_of(buckets(40, 10), 200):
        feeder.feed_snapshot(dict(body, index=12))
    assert replica.applied_index == 12 and len(replica.nodes) == 2 + 4 + 40
    assert replica.nodes["o5"] is before["o5"]


def test_a_ref_to_a_node_never_sent_fails_at_the_last_frame_and_changes_nothing() -> None:
    replica = feed(Replica(), frames_of(buckets(3, 10), 1 << 20))
    before = dict(replica.nodes)
    recs = [
        record("@roots", "dict", [["a", Ref("a1")]]),
        record("a1", "dict", [["gone", Ref("zz")]]),
    ]
    with pytest.raises(ReplicaFailed, match="unknown to this replica"):
        feed(replica, [dict(body, index=20) for body in frames_of(recs, 1)])
    assert replica.nodes == before and replica.applied_index == 9
    assert not any(node.dead for node in before.values())


@pytest.mark.parametrize(
    "where",
    [
        # The survivor's own elements (kept for the last frame, resolved only then).
        [record("a1", "dict", [["x", Ref("zz")]]), record("n1", "set", [])],
        # A new node's rest held back by a tuple, and by a key, with the ref inside.
        [record("a1", "dict", [["x", 2]]), record("n1", "list", [(Ref("zz"),)])],
        [record("a1", "dict", [["x", 2]]), record("n1", "dict", [[(Ref("zz"),), 1]])],
    ],
    ids=["survivor", "tuple", "key"],
)
def test_a_ref_never_sent_in_elements_kept_for_the_last_frame_changes_nothing(
    where: list[tuple[str, bytes]],
) -> None:
    """Review 17: refs in elements filled only at the last frame (a survivor's, or a new
    node's rest held back by a key or tuple) were resolved after the node table was swapped
    and survivors emptied, so a refused snapshot left the app reading half of it."""
    first = [record("@roots", "dict", [["a", Ref("a1")]]), record("a1", "dict", [["x", 1]])]
    replica = feed(Replica(), frames_of(first, 1))
    before = dict(replica.nodes)
    held, gen = before["a1"].ref, replica.gen
    recs = [record("@roots", "dict", [["a", Ref("a1")], ["n", Ref("n1")]]), *where]
    with pytest.raises(ReplicaFailed, match="object zz, unknown to this replica"):
        feed(replica, [dict(body, index=20) for body in frames_of(recs, 1)])
    assert replica.nodes == before and replica.applied_index == 9 and replica.gen == gen
    assert not any(node.dead for node in before.values())
    assert dict(held) == {"x": 1}
    assert dict(before["@roots"].live) == {"a": held}
    # A good snapshot then loads into the replica as it was (the survivor keeps its identity).
    good = [recs[0], record("a1", "dict", [["x", 3]]), record("n1", "set", [])]
    feed(replica, [dict(body, index=21) for body in frames_of(good, 1)])
    assert replica.nodes["a1"] is before["a1"] and dict(held) == {"x": 3}


def test_a_load_answer_on_a_full_replicas_stream_is_refused_before_it_touches_anything() -> None:
    """Review 17: a full replica's node has no eviction fields, and its stream never carries
    LOADED (only a partial replica loads). One that did made a hollow node with no loader in
    the full replica (load > 0; a second one filling it raised AttributeError on `inrefs`),
    or failed load_held's assertion (load 0); now the frame is a protocol error (the
    connection resubscribes) and the replica is as it was."""
    replica = feed(
        Replica(),
        frames_of(
            [record("@roots", "dict", [["a", Ref("a1")]]), record("a1", "dict", [["x", 1]])], 1
        ),
    )
    before = dict(replica.nodes)
    items = [
        [0, "a1", "dict", None, 1],
        [1, "a1", codec.dumps([["x", 2], ["h", Ref("h1")]])],
        [4, "h1", "dict", None],
    ]
    for load in (1, 0):
        body = {"index": 9, "part": 0, "last": True, "load": load, "log_time_ms": 0}
        feeder = StreamFeeder(replica)
        with pytest.raises(ProtocolError, match="LOADED"):
            feeder.feed_loaded({**body, "fmt": 2, "items": items})
        assert replica.nodes == before and dict(before["a1"].ref) == {"x": 1}
        assert replica.applied_index == 9


def test_a_snapshot_on_a_partial_replicas_stream_is_refused() -> None:
    """A partial replica starts from a LOADED and holds what it loaded: a SNAPSHOT (never sent
    to it) would swap in HeapNodes off the eviction clock, uncounted in held_bytes."""
    replica = Replica()
    replica.start_partial(0, lambda oids, keys, whole: None, 1 << 20)
    before, held_bytes = dict(replica.nodes), replica.held_bytes
    bodies = frames_of([record("@roots", "dict", [["a", 1]])], 1 << 20)
    with pytest.raises(ProtocolError, match="SNAPSHOT"):
        StreamFeeder(replica, filtered=True).feed_snapshot(bodies[0])
    assert replica.nodes == before and replica.nodes["@roots"].state == PARTIAL
    assert replica.applied_index == 0 and replica.held_bytes == held_bytes


@pytest.mark.parametrize("order", [["f1", "g1"], ["g1", "f1"]])
def test_a_key_sent_twice_keeps_its_last_value_when_the_first_was_a_forward_ref(
    order: list[str],
) -> None:
    """Review 17: the agent never sends a key twice, but a dict filled item by item keeps the
    last (as load_snapshot did); a placeholder replaced when its node came used to overwrite
    the later value."""
    recs = [
        record("@roots", "dict", [["d", Ref("d1")], ["o", Ref("o1")]]),
        record("d1", "dict", [["k", Ref("f1")], ["k", 1], ["m", Ref("f1")], ["m", Ref("g1")]]),
        record("o1", "obj", ["Point", [["x", Ref("f1")], ["x", 2]]]),
        *(record(oid, "list", []) for oid in order),
    ]
    for frame_bytes_max in (1, 1 << 20):
        nodes = feed(Replica(), frames_of(recs, frame_bytes_max)).nodes
        assert dict(nodes["d1"].live) == {"k": 1, "m": nodes["g1"].ref}
        assert dict(nodes["o1"].live) == {"x": 2}


def test_a_snapshot_finishing_after_the_session_closed_leaves_the_replica_detached() -> None:
    """Review 17: Connection.close() waits TIMEOUT_S_THREAD_JOIN for the I/O thread, then the
    session detaches the replica; a big snapshot's last frame can still be applied after
    that. It used to swap its node table into the detached replica (its new objects usable
    and forever stale); now it is refused, and the replica stays detached."""
    first = [record("@roots", "dict", [["a", Ref("a1")]]), record("a1", "dict", [["x", 1]])]
    replica = feed(Replica(), frames_of(first, 1))
    held = replica.nodes["a1"].ref
    second = [*first, record("n1", "dict", [["y", 2]])]
    bodies = [dict(body, index=20) for body in frames_of(second, 1)]
    feeder = StreamFeeder(replica)
    for body in bodies[:-1]:
        feeder.feed_snapshot(body)
    replica.detach("this session is closed")
    with pytest.raises(ReplicaFailed, match="this session is closed"):
        feeder.feed_snapshot(bodies[-1])
    assert replica.nodes == {} and replica.applied_index == 9
    with pytest.raises(Error, match="this session is closed"):
        held["x"]


def test_survivors_take_forward_refs_and_held_back_rests_like_new_nodes() -> None:
    """A survivor's runs fill a private container (review 17): its forward refs stand there as
    placeholders, a key or tuple ref holds its rest back, and the swap moves all of it into
    the survivor's own container, in order, at the last frame."""
    first = [
        record("@roots", "dict", [["d", Ref("d1")], ["o", Ref("o1")], ["l", Ref("l1")]]),
        record("d1", "dict", [["a", 1]]),
        record("o1", "obj", ["Point", [["x", 1]]]),
        record("l1", "list", [1]),
    ]
    replica = feed(Replica(), frames_of(first, 1 << 20))
    before = dict(replica.nodes)
    d, o, lst = (before[oid].ref for oid in ("d1", "o1", "l1"))
    second = [
        record("@roots", "dict", [["d", Ref("d1")], ["o", Ref("o1")], ["l", Ref("l1")]]),
        record("d1", "dict", [["a", Ref("e1")], [(Ref("e1"),), 2], ["z", 3]]),
        record("o1", "obj", ["Point", [["x", Ref("e1")], ["y", (Ref("e1"),)], ["w", 4]]]),
        record("l1", "list", [Ref("e1"), (Ref("e1"), 5), 6]),
        record("e1", "obj", ["Point", [["x", 7]]]),
    ]
    for index, frame_bytes_max in ((30, 1), (31, 1 << 20)):
        feeder = StreamFeeder(replica)
        bodies = [dict(body, index=index) for body in frames_of(second, frame_bytes_max)]
        shown = (list(d.items()), list(before["o1"].live.items()), list(lst))
        for body in bodies[:-1]:
            feeder.feed_snapshot(body)
            assert (list(d.items()), list(before["o1"].live.items()), list(lst)) == shown
        feeder.feed_snapshot(bodies[-1])
        e1 = replica.nodes["e1"].ref
        assert replica.nodes["d1"].ref is d and list(d.items()) == [("a", e1), ((e1,), 2), ("z", 3)]
        assert replica.nodes["o1"].ref is o
        assert list(replica.nodes["o1"].live.items()) == [("x", e1), ("y", (e1,)), ("w", 4)]
        assert replica.nodes["l1"].ref is lst and list(lst) == [e1, (e1, 5), 6]
        assert not any(type(v) is Ref for v in [*d.values(), *lst])
