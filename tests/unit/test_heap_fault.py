"""The library half of the virtual heap (docs/virtual-heap.md sections 2.1, 3.4, 4.4): a partial
replica over the in-process log faults nodes in through a loader answering from the real state
machine's store; hollow refs keep their identity and behave as held ones once touched;
transactions that fault nodes in record what they saw and re-run when it moved."""

from __future__ import annotations

import copy
import dataclasses
import json
import operator
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import PartialConnection, partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import hollow
from superstatic.objects.node import HELD, HOLLOW, node_of
from superstatic.objects.plain_copy import plain
from superstatic.protocol.errors import Error
from superstatic.toolkit import shared


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@superstatic.register
@dataclasses.dataclass
class Pos:
    x: int
    y: int

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def _loads(session: Any) -> list[list[str]]:
    connection = session.connection
    assert isinstance(connection, PartialConnection)
    return connection.loads


def test_a_fresh_app_loads_only_what_it_reads(cluster: InprocCluster) -> None:
    writer = cluster.session()
    for i in range(50):
        writer.root(f"r{i}", dict)["n"] = i
    app = partial_session(cluster)
    assert list(app.replica.nodes) == ["@roots"] and _loads(app) == []  # nothing loaded
    assert app.root("r7", dict)["n"] == 7
    held = {oid for oid, node in app.replica.nodes.items() if node.state == HELD}
    assert len(held) == 1
    # The root table is held per key: one key loaded, no stub per other root.
    assert len(app.replica.nodes) == 2


def test_identity_holds_across_a_fault_and_an_eviction(cluster: InprocCluster) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    top["a"] = {"v": 1}
    top["b"] = [1, 2]
    app = partial_session(cluster)
    mine = app.root("top", dict)
    a = mine["a"]
    assert node_of(a).state == HOLLOW  # known by its head only
    assert mine["a"] is a
    assert a["v"] == 1  # faulted in: the same proxy
    assert mine["a"] is a and node_of(a).state == HELD
    with app.replica.lock:
        app.replica.hollow(node_of(a))
    assert node_of(a).state == HOLLOW
    top["a"]["v"] = 2  # changed while hollow here: the refault sees it
    assert a["v"] == 2 and mine["a"] is a


def test_hollow_containers_behave_as_held_ones(cluster: InprocCluster) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    top["d"] = {"k": 1}
    top["l"] = [3, 1, 2]
    top["s"] = {1, 2}
    app = partial_session(cluster)
    mine = app.root("top", dict)

    def fresh(name: str) -> Any:
        node = node_of(mine[name])
        if node.state == HELD:
            with app.replica.lock:
                app.replica.hollow(node)
        assert node.state == HOLLOW
        return mine[name]

    assert isinstance(fresh("d"), dict) and isinstance(fresh("l"), list)
    assert isinstance(fresh("s"), set)
    assert fresh("d") == {"k": 1} and operator.eq({"k": 1}, fresh("d"))  # reflected too
    assert repr(fresh("l")) == "[3, 1, 2]" and str(fresh("s")) == "{1, 2}"
    assert len(fresh("l")) == 3 and sorted(fresh("l")) == [1, 2, 3]
    assert "k" in fresh("d") and 2 in fresh("s") and fresh("d").get("k") == 1
    assert copy.copy(fresh("d")) == {"k": 1} and type(copy.copy(fresh("d"))) is dict
    assert copy.deepcopy(fresh("l")) == [3, 1, 2]
    assert json.dumps(fresh("d"), default=superstatic.json_default) == '{"k": 1}'
    assert plain(fresh("s")) == {1, 2}
    assert fresh("s") | {3} == {1, 2, 3} and operator.add(fresh("l"), [4]) == [3, 1, 2, 4]
    assert list(fresh("d").items()) == [("k", 1)]
    assert bool(fresh("l"))


def test_hollow_instances_keep_their_class_and_fault_on_use(cluster: InprocCluster) -> None:
    writer = cluster.session()
    writer.root("top", dict)["p"] = Pos(3, -4)
    app = partial_session(cluster)
    mine = app.root("top", dict)
    p = mine["p"]
    assert node_of(p).state == HOLLOW
    assert isinstance(p, Pos) and hollow.is_hollow_instance(p)
    assert p.x == 3  # faults, then the instance has its class again
    assert not hollow.is_hollow_instance(p) and type(p) is type(mine["p"])
    with app.replica.lock:
        app.replica.hollow(node_of(p))
    assert p == Pos(3, -4) and repr(p) == "Pos(x=3, y=-4)"
    with app.replica.lock:
        app.replica.hollow(node_of(p))
    assert p.norm1() == 7  # a method: runs as a transaction that faults it
    with app.replica.lock:
        app.replica.hollow(node_of(p))
    p.x = 10  # a write faults first, then commits
    assert writer.root("top", dict)["p"].x == 10
    assert mine["p"] is p and p.x == 10


def test_a_transaction_faulting_two_nodes_commits(cluster: InprocCluster) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    top["a"] = {"n": 1}
    top["b"] = {"n": 2}
    app = partial_session(cluster)
    mine = app.root("top", dict)
    assert len(mine) == 2  # the root itself is held: the body faults only a and b
    before = len(_loads(app))

    def body() -> int:
        total: int = mine["a"]["n"] + mine["b"]["n"]
        mine["sum"] = total
        return total

    assert app.run(body) == 3
    assert len(_loads(app)) == before + 2
    assert writer.root("top", dict)["sum"] == 3


def test_a_body_faulting_a_node_changed_meanwhile_reruns(cluster: InprocCluster) -> None:
    """The body read `a` at the app's (stale) index, then faults `b`: the load first applies
    the entries before its index, one of which changed `a`, so the body must not go on with
    the old `a` and the new `b` (opacity): it re-runs and sees both new."""
    writer = cluster.session()
    top = writer.root("top", dict)
    top["a"] = {"n": 1}
    top["b"] = {"n": 1}
    app = partial_session(cluster, held=True)
    mine = app.root("top", dict)
    assert mine["a"]["n"] == 1  # held, at the app's index
    top["a"]["n"] = 2  # the app does not see this yet (held connection)
    top["b"]["n"] = 2
    seen: list[tuple[int, int]] = []
    runs: list[int] = []

    def body() -> None:
        runs.append(1)
        a = mine["a"]["n"]
        b = mine["b"]["n"]  # faults: loads at the log's last index
        seen.append((a, b))
        mine["seen"] = [a, b]

    app.run(body)
    assert seen == [(2, 2)] and len(runs) == 2, (seen, runs)
    assert list(writer.root("top", dict)["seen"]) == [2, 2]


def test_a_body_that_peeked_at_a_node_changed_while_it_faulted_reruns(
    cluster: InprocCluster,
) -> None:
    """As above for a node the body looked at without recording a read (the toolkit's
    `shared.peek`: a queue's claim picks an item from `ready` that way, then reads the item,
    a fault): the peek is not in the commit's read set, but the body saw it at its base, so a
    base moved past a change of it re-runs the body. It did not: a claim took an item from a
    stale `ready` that another consumer had claimed and acked meanwhile (the nemesis's queue
    check, "acked and redelivered", on partial replicas)."""
    writer = cluster.session()
    top = writer.root("top", dict)
    top["ready"] = {"job": 1}
    top["item"] = {"n": 1}
    app = partial_session(cluster, held=True)
    mine = app.root("top", dict)
    ready = mine["ready"]
    assert dict(ready) == {"job": 1}  # held, at the app's index
    item = mine["item"]  # hollow: the body's read of it faults
    del top["ready"]["job"]  # the app does not see this yet (held connection)
    seen: list[tuple[dict[Any, Any], int]] = []

    def body() -> None:
        picked = dict(shared.peek(ready))
        seen.append((picked, item["n"]))

    app.run(body)
    # (The first run stops at the fault: Doomed, since `ready` moved; the second sees it new.)
    assert seen == [({}, 1)], seen


def test_read_your_writes_on_a_node_never_loaded(cluster: InprocCluster) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    top["c"] = {"n": 0}
    app = partial_session(cluster)
    mine = app.root("top", dict)
    c = mine["c"]
    c["n"] = 5  # a blind write of a hollow node: no load needed to write it
    assert node_of(c).state == HOLLOW
    assert c["n"] == 5


def test_sync_then_fault_sees_every_earlier_write(cluster: InprocCluster) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    top["c"] = {"n": 0}
    app = partial_session(cluster, held=True)
    mine = app.root("top", dict)
    c = mine["c"]
    top["c"]["n"] = 9
    app.sync()
    assert c["n"] == 9


def test_a_node_absent_at_the_load_faults_as_gone(cluster: InprocCluster) -> None:
    """A hollow node whose oid the store no longer has (collected since its head was seen):
    the load answers absent, the node dies, and its ref says so."""
    cluster.session().root("top", dict)["c"] = {"n": 0}
    app = partial_session(cluster)
    with app.replica.lock:
        gone = app.replica._known("0123456789abcdef.99", "dict", None)
    with pytest.raises(Error, match="no longer exists"):
        gone.ref["n"]
    assert gone.dead and "0123456789abcdef.99" not in app.replica.nodes


def test_a_fault_from_the_io_thread_raises(cluster: InprocCluster) -> None:
    writer = cluster.session()
    writer.root("top", dict)["c"] = {"n": 0}
    app = partial_session(cluster)
    mine = app.root("top", dict)
    c = mine["c"]
    app.replica.io_thread = threading.get_ident()
    try:
        with pytest.raises(Error, match="connection's own thread"):
            c["n"]
    finally:
        app.replica.io_thread = None
    assert c["n"] == 0


def test_threads_faulting_one_node_share_one_load(cluster: InprocCluster) -> None:
    writer = cluster.session()
    writer.root("top", dict)["c"] = {"n": 4}
    app = partial_session(cluster)
    mine = app.root("top", dict)
    c = mine["c"]
    node = node_of(c)
    gate = threading.Event()
    loader = app.replica.loader
    assert loader is not None
    started: list[list[str]] = []

    def slow(oids: list[str], keys: list[Any], whole: bool) -> None:
        started.append(oids)
        assert gate.wait(10)
        loader(oids, keys, whole)

    app.replica.loader = slow
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(c["n"])) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(10_000):
        if started:
            break
        threading.Event().wait(0.001)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [4, 4, 4, 4] and started == [[node.oid]]


def test_roots_on_an_empty_cluster_and_created_by_another_app(cluster: InprocCluster) -> None:
    """The root table is held per key: a partial app on a cluster without one creates it; a
    key it asked for while absent takes the value another app then binds to it."""
    first = partial_session(cluster)
    assert first.replica.roots_node() is None  # no table yet
    counter = first.root("counter", dict)
    counter["n"] = 1
    second = partial_session(cluster, held=True)
    assert second.replica.root_ref("later") is None  # asked: known absent
    full = cluster.session()
    full.root("later", list).append(5)
    second.sync()
    assert second.replica.root_ref("later") is not None  # the set of a held (absent) key
    assert list(second.root("later", list)) == [5]
    assert second.root("counter", dict)["n"] == 1
    assert first.root("counter", dict) is counter


def test_two_partial_apps_race_to_create_the_root_table(cluster: InprocCluster) -> None:
    one = partial_session(cluster, held=True)
    two = partial_session(cluster, held=True)
    a = one.root("a", dict)
    b = two.root("b", dict)  # its first attempt conflicts on the absent table, then re-runs
    a["x"] = 1
    b["y"] = 2
    viewer = partial_session(cluster)
    assert viewer.root("a", dict)["x"] == 1 and viewer.root("b", dict)["y"] == 2
