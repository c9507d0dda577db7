"""The virtual heap through the public API against three real agents (docs/virtual-heap.md,
issue 13): `superstatic.connect(..., replicate="partial")` starts empty and faults in what it
touches; identity, transactions, read-your-writes, sync() and failover behave as with a full
replica, which `replicate="all"` still is.

The app under test is this process's default connection; the "other app" writing meanwhile is
a second session of this process on its own connection (a full replica)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.objects.node import HELD, HOLLOW, PARTIAL, node_of
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session
from superstatic.protocol.errors import Error
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

ROOTS = 200
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base: Path = tmp_path_factory.mktemp("heaplib") / "agents"
    with LocalCluster(base, size=3, keyed=False) as c:
        c.start()
        c.leader()
        yield c


@pytest.fixture(scope="module")
def other(cluster: LocalCluster) -> Iterator[Session]:
    """Another app: a full replica on its own connection, which made ROOTS roots."""
    replica = Replica()
    session = Session(replica, Connection(cluster.client_endpoints(), replica))
    try:
        session.sync()
        for i in range(ROOTS):
            session.root(f"r{i}", dict)["n"] = i
        yield session
    finally:
        session.close()


@pytest.fixture
def app(cluster: LocalCluster, other: Session) -> Iterator[Session]:
    superstatic.connect(cluster.client_endpoints(), replicate="partial")
    try:
        yield session_default.get()
    finally:
        superstatic.close()


def _held(session: Session) -> int:
    return sum(1 for node in session.replica.nodes.values() if node.state == HELD)


def test_a_fresh_app_reads_one_root_of_many(app: Session) -> None:
    assert superstatic.root("r17", dict)["n"] == 17
    assert _held(app) == 1  # the root; the root table holds one key of ROOTS
    assert len(app.replica.nodes) == 2


def test_identity_holds_across_a_fault(app: Session, other: Session) -> None:
    other.root("ident", dict)["child"] = {"v": 1}
    top = superstatic.root("ident", dict)
    child = top["child"]
    assert node_of(child).state == HOLLOW
    assert top["child"] is child
    assert child["v"] == 1 and top["child"] is child
    with app.replica.lock:
        app.replica.hollow(node_of(child))  # evicted, then faulted in again
    other.root("ident", dict)["child"]["v"] = 2
    superstatic.sync()
    assert child["v"] == 2 and top["child"] is child


def test_a_transaction_faulting_two_nodes_commits(app: Session, other: Session) -> None:
    pair = other.root("pair", dict)
    pair["a"], pair["b"] = {"n": 1}, {"n": 2}
    mine = superstatic.root("pair", dict)
    assert len(mine) == 2

    @superstatic.transaction()
    def add() -> int:
        total: int = mine["a"]["n"] + mine["b"]["n"]
        mine["sum"] = total
        return total

    assert add() == 3
    other.sync()
    assert other.root("pair", dict)["sum"] == 3


def test_a_body_faulting_a_node_changed_meanwhile_reruns(app: Session, other: Session) -> None:
    race = other.root("race", dict)
    race["a"], race["b"] = {"n": 1}, {"n": 1}
    mine = superstatic.root("race", dict)
    assert mine["a"]["n"] == 1  # `a` held, `b` hollow
    runs: list[tuple[int, int]] = []

    def write_both() -> None:
        race["a"]["n"] = 2
        race["b"]["n"] = 2

    @superstatic.transaction()
    def body() -> tuple[int, int]:
        a = mine["a"]["n"]
        if not runs:
            # Another app commits to a and b between our two reads (its own thread: this
            # one is inside our transaction).
            writer = threading.Thread(target=write_both)
            writer.start()
            writer.join(TIMEOUT_S)
        b = mine["b"]["n"]  # faults: loaded at an index after both writes
        runs.append((a, b))
        mine["seen"] = [a, b]
        return a, b

    assert body() == (2, 2)
    assert runs[-1] == (2, 2) and len(runs) >= 2  # the first run saw a=1: it could not go on


def test_read_your_writes_and_sync_then_fault(app: Session, other: Session) -> None:
    other.root("ryw", dict)["c"] = {"n": 0}
    mine = superstatic.root("ryw", dict)
    c = mine["c"]
    c["n"] = 5  # a blind write of a node not loaded here
    assert node_of(c).state == HOLLOW
    assert c["n"] == 5
    other.root("ryw", dict)["d"] = {"n": 7}
    superstatic.sync()
    assert mine["d"]["n"] == 7  # the held root saw the new key; its node faults in


def test_a_fault_on_the_io_thread_raises(app: Session, other: Session) -> None:
    other.root("gone", dict)["c"] = {"n": 0}
    mine = superstatic.root("gone", dict)
    c = mine["c"]
    seen: list[BaseException] = []
    done = threading.Event()

    def listener(change: Any) -> None:
        if done.is_set():
            return
        try:
            c["n"]
        except Error as exc:
            seen.append(exc)
        done.set()

    app.replica.listeners.append(listener)
    try:
        other.root("gone", dict)["x"] = 1
        assert done.wait(TIMEOUT_S)
    finally:
        app.replica.listeners.remove(listener)
    assert seen and "connection's own thread" in str(seen[0])
    assert c["n"] == 0


def test_replicate_all_is_unchanged(cluster: LocalCluster, other: Session) -> None:
    superstatic.connect(cluster.client_endpoints(), replicate="all")
    try:
        session = session_default.get()
        assert superstatic.root("r5", dict)["n"] == 5
        assert all(node.state == HELD for node in session.replica.nodes.values())
        assert len(session.replica.nodes) > ROOTS  # every node, as before
    finally:
        superstatic.close()


def test_connect_checks_replicate_and_cache_bytes(cluster: LocalCluster) -> None:
    eps = cluster.client_endpoints()
    with pytest.raises(Error, match="replicate"):
        superstatic.connect(eps, replicate="some")
    with pytest.raises(Error, match="cache_bytes"):
        superstatic.connect(eps, replicate="all", cache_bytes=1 << 20)
    with pytest.raises(Error, match="CACHE_BYTES_MIN"):
        superstatic.connect(eps, replicate="partial", cache_bytes=10)


def test_the_default_is_partial_and_the_environment_can_choose(
    cluster: LocalCluster, other: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    eps = cluster.client_endpoints()
    monkeypatch.delenv(session_default.ENV_REPLICATE, raising=False)
    superstatic.connect(eps)
    try:
        assert superstatic.root("r5", dict)["n"] == 5
        assert len(session_default.get().replica.nodes) == 2  # the root table and r5
    finally:
        superstatic.close()
    monkeypatch.setenv(session_default.ENV_REPLICATE, "all")
    superstatic.connect(eps)
    try:
        assert superstatic.root("r5", dict)["n"] == 5
        assert len(session_default.get().replica.nodes) > ROOTS  # every node
    finally:
        superstatic.close()
    monkeypatch.setenv(session_default.ENV_REPLICATE, "partial")
    superstatic.connect(eps, replicate="all")  # the argument wins over the variable
    try:
        assert len(session_default.get().replica.nodes) > ROOTS
    finally:
        superstatic.close()
    monkeypatch.setenv(session_default.ENV_REPLICATE, "everything{0}")
    with pytest.raises(Error) as refused:
        superstatic.connect(eps)
    message = str(refused.value)
    assert "SUPERSTATIC_REPLICATE" in message and "all, partial" in message
    assert "everything" not in message  # the value is not echoed


def test_eviction_under_a_small_cache_tells_the_agent(
    cluster: LocalCluster, other: Session
) -> None:
    many = other.root("many", dict)
    other.run(lambda: [many.__setitem__(f"k{i}", {"i": i, "pad": "x" * 50}) for i in range(200)])
    superstatic.connect(cluster.client_endpoints(), replicate="partial", cache_bytes=1 << 20)
    try:
        session = session_default.get()
        session.replica.cache_bytes = 20_000  # a few dozen small dicts (below CACHE_BYTES_MIN)
        mine = superstatic.root("many", dict)
        assert sum(mine[f"k{i}"]["i"] for i in range(200)) == sum(range(200))
        assert session.replica.stats.evictions > 0
        other.root("many", dict)["k3"]["i"] = -3  # evicted here: the agent was told (DROP)
        superstatic.sync()
        assert mine["k3"]["i"] == -3
    finally:
        superstatic.close()


def test_a_load_survives_the_failover_of_its_agent(cluster: LocalCluster, other: Session) -> None:
    other.root("fo", dict)["c"] = {"n": 42}
    leader = cluster.leader()
    first = next(node for node in cluster.agents if node != leader)
    others = [node for node in cluster.agents if node != first]
    superstatic.connect(cluster.client_endpoints([first, *others]), replicate="partial")
    try:
        session = session_default.get()
        conn = session.connection
        assert isinstance(conn, Connection)
        mine = superstatic.root("fo", dict)
        c = mine["c"]
        assert node_of(c).state == HOLLOW
        cluster.kill(first)
        assert c["n"] == 42  # asked of the dead agent or the next: answered after failover
        assert conn.failovers >= 1
        other.root("fo", dict)["c"]["n"] = 43
        superstatic.sync()
        assert c["n"] == 43  # held at the new agent: its events reach us
    finally:
        superstatic.close()
        cluster.start_agent(first)
        cluster.leader()


def _forked_child(top: Any, out: Any) -> None:
    try:
        out.put((top["held"]["n"], top["hollow"]["n"]))  # a held node, and one faulted here
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(repr(exc))


def test_a_forked_child_keeps_and_extends_its_partial_replica(app: Session, other: Session) -> None:
    top_other = other.root("forked", dict)
    top_other["held"], top_other["hollow"] = {"n": 1}, {"n": 2}
    mine = superstatic.root("forked", dict)
    assert mine["held"]["n"] == 1 and node_of(mine["hollow"]).state == HOLLOW
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_forked_child, args=(mine, out))
    child.start()
    try:
        assert out.get(timeout=TIMEOUT_S) == (1, 2)
    finally:
        child.join(TIMEOUT_S)
        if child.is_alive():
            child.kill()
            child.join(TIMEOUT_S)
    assert child.exitcode == 0


def test_a_big_dict_is_held_per_key_until_its_shape_is_read(app: Session, other: Session) -> None:
    big = other.root("bigdict", dict)
    other.run(lambda: [big.__setitem__(f"k{i}", {"i": i}) for i in range(300)])
    mine = superstatic.root("bigdict", dict)
    assert mine["k7"]["i"] == 7
    node = node_of(mine)
    assert node.state == PARTIAL and dict.__len__(node.live) == 1
    assert "late" not in mine  # known absent, held as such at the agent
    big["late"] = 1
    superstatic.sync()
    assert mine["late"] == 1  # the insert of a key held (absent) reached us
    assert len(mine) == 301 and node.state == HELD  # a shape read: loaded whole
    big["k8"] = "new"
    superstatic.sync()
    assert mine["k8"] == "new"
