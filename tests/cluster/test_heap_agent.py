"""The virtual heap's agent half against three real agents (docs/virtual-heap.md sections 2-4,
issue 13): a raw client (tests/support/heap_client.py) subscribes partially, LOADs nodes and
checks where the LOADED answers sit in its stream and what they hold; hostile LOAD / DROP /
HOLD frames are refused naming the field or the limit, and the agents keep serving."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS_DIR))
from superstatic_bench.loadgen import RawClient, new_oid  # noqa: E402
from support.heap_client import HeapClient  # noqa: E402

from superstatic.protocol import codec, ops, wire  # noqa: E402
from superstatic.protocol.codec import Ref  # noqa: E402
from superstatic.tools.localcluster import LocalCluster  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

TIMEOUT_S_GC = 60.0
GARBAGE_PER_TXN = 4_000
# The agents' --subscriber-held-max here (small, so a test can reach it).
HELD_MAX = 100


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base = tmp_path_factory.mktemp("heap") / "agents"
    # Held at rules 2: these tests are about the heap's frames and name their nodes (`h1.1`);
    # rules 3 would refuse oids not of their creator's (docs/virtual-heap.md 7), which the
    # stale-stub test below shows on a cluster of its own.
    held = ("--subscriber-held-max", str(HELD_MAX), "--rules-max", "2")
    with LocalCluster(base, size=3, keyed=False, agent_args=held) as c:
        c.start()
        c.leader()
        yield c


@pytest.fixture(scope="module")
def writer(cluster: LocalCluster) -> Iterator[RawClient]:
    client = RawClient(cluster.agents[cluster.leader()].client_endpoint)
    try:
        commit(client, [["new", "@roots", "dict", []]])  # every test binds its nodes in it
        yield client
    finally:
        client.close()


def commit(writer: RawClient, wire_ops: list[Any]) -> int:
    reply = writer.propose(ops.encode_txn({}, wire_ops))
    assert reply["outcome"] == "ok", reply
    return int(reply["index"])


def follower(cluster: LocalCluster) -> str:
    leader = cluster.leader()
    return next(node for node in cluster.agents if node != leader)


@pytest.fixture
def app(cluster: LocalCluster) -> Iterator[HeapClient]:
    """A raw partial subscriber at a follower (whose applied index may trail the leader's)."""
    client = HeapClient(cluster.agents[follower(cluster)].client_endpoint, "heap-app-1")
    try:
        assert client.hello()["heap"] == wire.HEAP_VERSION
        yield client
    finally:
        client.close()


def values_of(frames: list[wire.Frame], oid: str) -> list[Any]:
    """The elements of node `oid` in a LOADED answer's runs, decoded."""
    out: list[Any] = []
    for frame in frames:
        for item in frame.body["items"]:
            if item[0] in (1, 2, 3) and item[1] == oid:
                out += codec.loads(item[2])
    return out


def test_a_load_is_answered_at_the_index_between_the_right_events(
    writer: RawClient, app: HeapClient
) -> None:
    made = commit(
        writer,
        [
            ["new", "h1.1", "dict", [["p", Ref("h1.2")]]],
            ["new", "h1.2", "obj", ["Point", [["x", 1]]]],
            ["set", "@roots", "d", Ref("h1.1")],
        ],
    )
    app.subscribe(0)
    app.wait_for("the empty first answer", lambda: bool(app.stream()))
    first = app.stream()[0]
    assert first.type is wire.FrameType.LOADED and first.body["load"] == 0
    assert first.body["items"] == [] and first.body["last"]
    start = first.body["index"]
    written = {commit(writer, [["set", "h1.1", "k", i]]): i for i in range(5)}
    load = app.load(["h1.1"])
    for i in range(5, 10):
        written[commit(writer, [["set", "h1.1", "k", i]])] = i
    answer = app.loaded(load)
    (frame,) = answer
    at = frame.body["index"]
    assert at >= start and at >= made
    # Before the answer the app held nothing: the writes were filtered out, and a frame
    # reaching exactly the answer's index precedes it. After it, every write of the node.
    stream = app.stream()
    position = stream.index(frame)
    assert stream[position - 1].type is wire.FrameType.EVENTS
    assert stream[position - 1].body["to"] == at
    assert [e[0] for f in stream[1:position] for e in f.body["ev"]] == []
    app.wait_for("the writes after the answer", lambda: app.applied() >= max(written))
    after = [e[0] for f in app.stream()[position + 1 :] for e in f.body["ev"]]
    assert after == [i for i in sorted(written) if i > at]
    # What it holds is the state at its index: the last write at or below it.
    expected = [written[i] for i in sorted(written) if i <= at]
    contents = dict(values_of(answer, "h1.1"))
    assert contents.get("k") == (expected[-1] if expected else None)
    assert [4, "h1.2", "obj", "Point"] in frame.body["items"]


def test_a_node_larger_than_a_frame_comes_in_parts_read_at_one_index(
    writer: RawClient, app: HeapClient
) -> None:
    commit(writer, [["new", "h2.1", "list", []], ["set", "@roots", "big", Ref("h2.1")]])
    chunk = ["v" * 1_000] * 400  # 400 KB per entry: 1.6 MB in all, over a 1 MiB frame
    for _ in range(4):
        commit(writer, [["extend", "h2.1", chunk]])
    app.subscribe(0)
    load = app.load(["h2.1", "h2.404"])
    answer = app.loaded(load, timeout_s=30.0)
    assert len(answer) >= 2
    assert [f.body["part"] for f in answer] == list(range(len(answer)))
    assert len({f.body["index"] for f in answer}) == 1
    assert values_of(answer, "h2.1") == chunk * 4
    assert [5, "h2.404"] in answer[-1].body["items"]


def test_a_collected_node_is_answered_absent(
    cluster: LocalCluster, writer: RawClient, app: HeapClient
) -> None:
    commit(writer, [["new", "h3.1", "dict", [["a", 1]]], ["set", "@roots", "gone", Ref("h3.1")]])
    app.subscribe(0)
    held = app.loaded(app.load(["h3.1"]))
    assert held[0].body["items"][0][:2] == [0, "h3.1"]
    commit(writer, [["del", "@roots", "gone"]])
    deadline = time.monotonic() + TIMEOUT_S_GC
    for batch in itertools.count():
        # A collection runs once garbage outweighs statemachine.GC_THRESHOLD_DEFAULT (10,000):
        # unattached new nodes are garbage.
        commit(writer, [["new", f"h3.g{batch}.{i}", "set", []] for i in range(GARBAGE_PER_TXN)])
        items = app.loaded(app.load(["h3.1"]))[-1].body["items"]
        if items == [[5, "h3.1"]]:
            break
        assert time.monotonic() < deadline, "h3.1 was never collected"


def test_a_stale_stub_of_a_collected_node_is_answered_absent_though_its_oid_is_reused(
    tmp_path: Path,
) -> None:
    """Section 7, item 4: a hollow node that is collected is never told (the filter sends its
    collection to no subscriber that does not hold it), and "a later fault answers absent".
    Before rules 3 another client could create the collected oid again, and the app's stale
    stub then loaded that client's object. Under rules 3 (a new cluster runs it) another
    client cannot (the oid is not its own)."""
    held = ("--subscriber-held-max", str(HELD_MAX))
    with LocalCluster(tmp_path / "agents", size=3, keyed=False, agent_args=held) as cluster:
        cluster.start()
        writer = RawClient(cluster.agents[cluster.leader()].client_endpoint)
        app = HeapClient(cluster.agents[follower(cluster)].client_endpoint, "hl3-app")
        try:
            assert app.hello()["heap"] == wire.HEAP_VERSION
            x, y = new_oid(writer.client_id), new_oid(writer.client_id)
            commit(
                writer,
                [
                    ["new", "@roots", "dict", []],
                    ["new", x, "dict", [["n", "the writer's"]]],
                    ["new", y, "list", [Ref(x)]],
                    ["set", "@roots", "hl3", Ref(y)],
                ],
            )
            app.subscribe(0)
            items = [i for f in app.loaded(app.load([y])) for i in f.body["items"]]
            assert [wire.ITEM_HEAD, x, "dict", None] in items, "the app knows x's head only"
            commit(writer, [["clear", y]])
            probe = HeapClient(app.endpoint, "hl3-probe")
            try:
                assert probe.hello()["heap"] == wire.HEAP_VERSION
                probe.subscribe(0)
                deadline = time.monotonic() + TIMEOUT_S_GC
                while True:
                    garbage = [
                        ["new", new_oid(writer.client_id), "set", []]
                        for _ in range(GARBAGE_PER_TXN)
                    ]
                    commit(writer, garbage)
                    if probe.loaded(probe.load([x]))[-1].body["items"] == [[5, x]]:
                        break
                    assert time.monotonic() < deadline, "x was never collected"
            finally:
                probe.close()
            hostile = RawClient(writer.endpoint)
            try:
                again = [["new", x, "dict", [["n", "the hostile client's"]]]]
                reply = hostile.propose(ops.encode_txn({}, again))
                assert reply["outcome"] == "error" and "rules 3" in reply["error"], reply
                # Its creator is not asked: x is now far below its prefix's highest (the
                # garbage above), where the owner's own counter is not remembered (review 38:
                # refusing it starved busy connections); the library never takes a counter
                # twice (agent/oidmarks.py, tests/unit/test_oid_marks.py).
            finally:
                hostile.close()
            answer = app.loaded(app.load([x]))
            assert answer[-1].body["items"] == [[5, x]], values_of(answer, x)
        finally:
            app.close()
            writer.close()


def test_prefetch_sends_small_children_whole(writer: RawClient, app: HeapClient) -> None:
    commit(
        writer,
        [
            ["new", "h4.1", "dict", [["a", Ref("h4.2")], ["b", Ref("h4.3")]]],
            ["new", "h4.2", "set", [1, 2]],
            ["new", "h4.3", "list", ["x"]],
            ["set", "@roots", "tree", Ref("h4.1")],
        ],
    )
    app.subscribe(0)
    items = app.loaded(app.load(["h4.1"], prefetch_bytes=64 << 10))[-1].body["items"]
    assert [i[1] for i in items if i[0] == 0] == ["h4.1", "h4.2", "h4.3"]


def test_a_subscription_without_heap_still_gets_everything(
    cluster: LocalCluster, writer: RawClient
) -> None:
    commit(writer, [["set", "@roots", "all", 1]])
    client = HeapClient(cluster.agents[follower(cluster)].client_endpoint, "heap-app-all")
    try:
        client.hello()
        client.sub = client.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
        client.wait_for("a snapshot", lambda: any(f.body.get("last") for f in client.stream()))
        assert client.stream()[0].type is wire.FrameType.SNAPSHOT
        index = commit(writer, [["set", "@roots", "all", 2]])
        client.wait_for("the write", lambda: client.applied() >= index)
        refused = client.answer(client.load(["@roots"]))
        assert refused.type is wire.FrameType.ERROR and refused.body["code"] == "bad_request"
        assert "heap 'all'" in refused.body["message"]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("frame_type", "body", "code", "complaint"),
    [
        (
            wire.FrameType.LOAD,
            {"oids": cbor2.dumps([f"x.{i}" for i in range(wire.LOAD_OIDS_MAX + 1)])},
            "too_large",
            "LOAD_OIDS_MAX",
        ),
        (
            wire.FrameType.HOLD,
            {"oids": cbor2.dumps(["x"] * (wire.HOLD_OIDS_MAX + 1)), "part": 0, "last": True},
            "too_large",
            "HOLD_OIDS_MAX",
        ),
        (wire.FrameType.LOAD, {"oids": ["not", "bytes"]}, "bad_request", "LOAD.oids"),
        (wire.FrameType.LOAD, {"oids": cbor2.dumps([7])}, "bad_request", "LOAD.oids[0]"),
        (wire.FrameType.LOAD, {"oids": cbor2.dumps(["x" * 200])}, "bad_request", "1..128"),
        (wire.FrameType.DROP, {"oids": cbor2.dumps({"a": 1})}, "bad_request", "DROP.oids"),
        (
            wire.FrameType.LOAD,
            {"oids": cbor2.dumps(["a"]), "prefetch_bytes": 1 << 80},
            "bad_request",
            "LOAD.prefetch_bytes",
        ),
        (wire.FrameType.HOLD, {"oids": cbor2.dumps(["a"]), "part": 0}, "bad_request", "HOLD.last"),
    ],
)
def test_hostile_heap_frames_are_refused_naming_the_problem(
    cluster: LocalCluster,
    app: HeapClient,
    frame_type: wire.FrameType,
    body: dict[str, Any],
    code: str,
    complaint: str,
) -> None:
    app.subscribe(0)
    refused = app.answer(app.send(frame_type, {"sub": app.sub, **body}))
    assert refused.type is wire.FrameType.ERROR
    assert refused.body["code"] == code and complaint in refused.body["message"]
    # Still serving: the same connection loads as before.
    assert app.loaded(app.load(["@roots"]))[-1].body["index"] > 0
    for node in cluster.agents:
        assert cluster.agents[node].alive()


def test_a_load_for_an_old_subscription_is_refused(app: HeapClient) -> None:
    old = app.subscribe(0)
    app.subscribe(0)
    refused = app.answer(app.load(["@roots"], sub=old))
    assert refused.body["code"] == "bad_request" and "resubscribe" in refused.body["message"]


def test_the_stream_carries_only_what_the_app_holds(
    cluster: LocalCluster, writer: RawClient, app: HeapClient
) -> None:
    commit(
        writer,
        [
            ["new", "h5.a", "dict", []],
            ["new", "h5.b", "dict", []],
            ["set", "@roots", "h5a", Ref("h5.a")],
            ["set", "@roots", "h5b", Ref("h5.b")],
        ],
    )
    app.subscribe(0)
    app.loaded(app.load(["h5.a"]))
    both = commit(writer, [["set", "h5.a", "k", 1], ["set", "h5.b", "k", 1]])
    unheld = commit(writer, [["set", "h5.b", "k", 2]])
    held = commit(writer, [["set", "h5.a", "k", 3]])
    app.wait_for("the held write", lambda: app.applied() >= held)
    indexes = [e[0] for e in app.events()]
    assert both in indexes and held in indexes and unheld not in indexes
    # Dropped: its writes stop.
    app.drop(["h5.a"])
    app.reply(app.send(wire.FrameType.READ_INDEX, {}))  # answered after the DROP was taken
    later = commit(writer, [["set", "h5.a", "k", 4]])
    # sync(): a READ_INDEX on the same connection is followed by a frame reaching its index.
    read = app.reply(app.send(wire.FrameType.READ_INDEX, {}))["index"]
    assert read >= later
    app.wait_for("a frame reaching the read index", lambda: app.applied() >= read)
    assert later not in [e[0] for e in app.events()]


def test_a_resubscription_declares_its_held_set_in_hold_frames(
    cluster: LocalCluster, writer: RawClient
) -> None:
    commit(writer, [["new", "h6.a", "dict", []], ["set", "@roots", "h6a", Ref("h6.a")]])
    client = HeapClient(cluster.agents[follower(cluster)].client_endpoint, "heap-app-hold")
    try:
        client.hello()
        start = commit(writer, [["set", "h6.a", "k", 0]])
        client.subscribe(start, hold_parts=2)
        write = commit(writer, [["set", "h6.a", "k", 1]])
        client.pump(0.3)
        assert client.stream() == [], "nothing before the last HOLD"
        client.hold(0, False, ["h6.a"])
        client.hold(1, True, ["h6.404"])
        client.wait_for("the held node's write", lambda: client.applied() >= write)
        assert write in [e[0] for e in client.events()]
    finally:
        client.close()


def test_the_held_set_limit_is_refused_naming_the_flag(
    cluster: LocalCluster, writer: RawClient, app: HeapClient
) -> None:
    app.subscribe(0)
    oids = [f"h7.{i}" for i in range(HELD_MAX + 1)]
    refused = app.answer(app.load(oids))
    assert refused.type is wire.FrameType.ERROR and refused.body["code"] == "too_large"
    assert f"--subscriber-held-max={HELD_MAX}" in refused.body["message"]


def test_a_reread_at_the_held_set_limit_is_answered(writer: RawClient, app: HeapClient) -> None:
    """Only what an answer adds counts against --subscriber-held-max: at the limit, a LOAD of
    nodes the app holds already is answered (it was refused too_large, review 20), and one
    that adds a node is refused naming the flag."""
    oids = [f"hl20.{i}" for i in range(HELD_MAX)]
    commit(writer, [["new", oid, "list", [i]] for i, oid in enumerate(oids)])
    commit(writer, [["new", "hl20.extra", "list", []]])
    app.subscribe(0)
    app.loaded(0)
    assert len(app.loaded(app.load(oids))) >= 1, "the app holds HELD_MAX nodes"
    again = app.loaded(app.load(oids[:3]))
    assert values_of(again, oids[2]) == [2]
    refused = app.answer(app.load(["hl20.extra"]))
    assert refused.type is wire.FrameType.ERROR and refused.body["code"] == "too_large"
    assert f"--subscriber-held-max={HELD_MAX}" in refused.body["message"]


def test_a_root_is_found_by_key_and_its_node_comes_with_it(
    writer: RawClient, app: HeapClient
) -> None:
    """What connect() plus the first read of a root will cost the library: one LOAD of the
    root table's key with prefetch answers the key and the root's node, and later writes of
    other roots do not reach the app."""
    commit(writer, [["new", "h8.c", "dict", [["n", 41]]], ["set", "@roots", "h8c", Ref("h8.c")]])
    app.subscribe(0)
    load = app.send(
        wire.FrameType.LOAD,
        wire.load_body(app.sub, [], [("@roots", ["h8c"])], prefetch_bytes=64 << 10),
    )
    items = [i for f in app.loaded(load) for i in f.body["items"]]
    (run,) = [i for i in items if i[0] == wire.ITEM_KEY_RUN]
    assert codec.loads(run[2]) == [["h8c", Ref("h8.c")]]
    assert dict(values_of(app.loaded(load), "h8.c")) == {"n": 41}
    other = commit(writer, [["set", "@roots", "h8other", 1]])
    mine = commit(writer, [["set", "h8.c", "n", 42]])
    app.wait_for("the held root's write", lambda: app.applied() >= mine)
    indexes = [e[0] for e in app.events()]
    assert mine in indexes and other not in indexes


def test_a_load_naming_the_root_table_is_answered_though_keys_of_it_are_held(
    writer: RawClient, app: HeapClient
) -> None:
    """The library asks whether the root table exists by a LOAD naming "@roots" (its probe)
    even when it asked keys of it before (held per key here since): the answer names the table
    (it named nothing, and the app waited out its request timeout: docs/agent.md,
    "Subscriptions")."""
    commit(writer, [["set", "@roots", "h9", 1]])
    app.subscribe(0)
    keyed = app.send(wire.FrameType.LOAD, wire.load_body(app.sub, [], [("@roots", ["h9"])]))
    app.loaded(keyed)
    probe = app.load(["@roots"])
    items = [i for f in app.loaded(probe) for i in f.body["items"]]
    assert [i[:4] for i in items] == [[0, "@roots", "dict", None]]
