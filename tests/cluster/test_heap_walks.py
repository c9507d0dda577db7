"""The virtual heap's walks against three real agents (docs/virtual-heap.md 3.3, 4.3, 5):
prefetch makes a walk root -> bucket -> object cost fewer loads and never changes what it
reads; superstatic.stats()["heap"] counts it. The layout is the objects_load benchmark's, small:
BUCKETS buckets of OBJECTS_PER_BUCKET objects (each bucket above the agent's
LOAD_WHOLE_ENTRIES_MAX, so held per key).

The app under test is this process's default connection; the writer is a second session of
this process on its own connection (a full replica)."""

from __future__ import annotations

import enum
import random
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.client import default as session_default
from superstatic.client import heap_io
from superstatic.client.connection import Connection
from superstatic.objects.node import HOLLOW, PARTIAL, node_of
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

BUCKETS = 3
OBJECTS_PER_BUCKET = 300
OBJECTS = BUCKETS * OBJECTS_PER_BUCKET
WALKED = 60
KEYED_ENTRIES = 400  # above the agent's LOAD_WHOLE_ENTRIES_MAX: held per key
TIMEOUT_S = 30.0


@superstatic.register(name="tests.heap_walks.Shade")
class Shade(enum.Enum):
    DARK = "dark"
    LIGHT = "light"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base: Path = tmp_path_factory.mktemp("heapwalks") / "agents"
    with LocalCluster(base, size=3, keyed=False, metrics=True) as c:
        c.start()
        c.leader()
        yield c


@pytest.fixture(scope="module")
def writer(cluster: LocalCluster) -> Iterator[Session]:
    """A full replica that wrote the objects."""
    replica = Replica()
    session = Session(replica, Connection(cluster.client_endpoints(), replica))
    try:
        session.sync()
        buckets = session.root("walk", dict)
        for b in range(BUCKETS):

            def fill(b: int = b) -> None:
                buckets[f"b{b}"] = {
                    f"o{i}": {"i": i, "name": f"object {i}"}
                    for i in range(b * OBJECTS_PER_BUCKET, (b + 1) * OBJECTS_PER_BUCKET)
                }

            session.run(fill)
        yield session
    finally:
        session.close()


def _walk(endpoints: list[str], picks: list[int]) -> tuple[list[Any], dict[str, int]]:
    """Connects a partial app, reads each picked object through root -> bucket -> object,
    and returns what it read and how the heap counters moved."""
    superstatic.connect(endpoints, replicate="partial")
    try:
        before = superstatic.stats()["heap"]
        buckets = superstatic.root("walk", dict)
        read = [
            (
                buckets[f"b{i // OBJECTS_PER_BUCKET}"][f"o{i}"]["i"],
                buckets[f"b{i // OBJECTS_PER_BUCKET}"][f"o{i}"]["name"],
            )
            for i in picks
        ]
        after = superstatic.stats()["heap"]
        return read, {name: after[name] - before[name] for name in ("faults", "loads")}
    finally:
        superstatic.close()


def test_prefetch_walks_in_fewer_loads_and_reads_the_same(
    cluster: LocalCluster, writer: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks = random.Random(13).sample(range(OBJECTS), WALKED)
    expected = [(i, f"object {i}") for i in picks]
    monkeypatch.setenv(heap_io.ENV_PREFETCH_BYTES, "0")
    read_off, moved_off = _walk(cluster.client_endpoints(), picks)
    monkeypatch.delenv(heap_io.ENV_PREFETCH_BYTES)
    read_on, moved_on = _walk(cluster.client_endpoints(), picks)
    assert read_off == expected
    assert read_on == expected
    # Without prefetch each object costs its key of the bucket and then the object: two loads.
    assert moved_off["loads"] >= 2 * WALKED
    # With it, the object comes with its key once the app walks (the burst's first faults, and
    # any a descheduled moment broke the burst at, still cost two).
    assert moved_on["loads"] < 0.75 * moved_off["loads"], (moved_on, moved_off)


def _held_entries(cluster: LocalCluster) -> int:
    """Nodes and dict keys partial apps hold, over every agent (their metrics)."""
    total = 0
    for spec in cluster.agents.values():
        with urllib.request.urlopen(spec.metrics_url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
        found = re.search(r"^superstatic_held_entries ([0-9.e+]+)$", text, re.MULTILINE)
        assert found is not None, "the agent's metrics name no held_entries"
        total += int(float(found.group(1)))
    return total


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_keys_of_big_dicts_go_past_cache_bytes_and_the_agent_lets_them_go(
    cluster: LocalCluster, writer: Session
) -> None:
    top = writer.root("keyed", dict)
    for b in range(2):

        def fill(b: int = b) -> None:
            top[f"b{b}"] = {f"k{i}": i for i in range(KEYED_ENTRIES)}

        writer.run(fill)
    superstatic.connect(cluster.client_endpoints(), replicate="partial")
    try:
        app = session_default.get()
        # Test-only: connect()'s CACHE_BYTES_MIN (1 MiB) is about 26,000 keys at the
        # estimate's 40 bytes a key, more than a test should load one by one.
        app.replica.cache_bytes = 6_000
        before = superstatic.stats()["heap"]
        mine = superstatic.root("keyed", dict)
        buckets = [mine["b0"], mine["b1"]]  # held by this code all along: only keys can go
        touched = [(b, f"k{i}") for b in range(2) for i in range(0, KEYED_ENTRIES, 2)]
        assert [buckets[b][key] for b, key in touched] == [int(key[1:]) for _b, key in touched]
        evictions = superstatic.stats()["heap"]["evictions"] - before["evictions"]
        assert evictions > len(touched) // 2
        assert superstatic.stats()["heap"]["held_bytes"] <= 6_000
        # The agent was told (key DROPs): it holds far fewer entries than were touched.
        _wait(lambda: _held_entries(cluster) < len(touched) // 2, "the key DROPs took effect")
        # Writes to held and to let-go keys alike: every read answers the current value.
        for b, key in touched[::7]:
            top[f"b{b}"][key] = f"new {key}"
        writer.sync()
        superstatic.sync()
        expected = [top[f"b{b}"][key] for b, key in touched]
        assert [buckets[b][key] for b, key in touched] == expected
        assert all(key not in buckets[b] for b in range(2) for key in ("nope", "k-1"))
    finally:
        superstatic.close()


def test_a_list_of_refs_past_cache_bytes_goes_with_its_stubs(
    cluster: LocalCluster, writer: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review 13lib: a held list of N refs makes N stubs (hollow nodes, ~410 B each), which
    # held_bytes did not count: cache_bytes = 1 MiB was exceeded 4.6x by one list's. Counted,
    # the next loads' sweeps hollow the list (no code holds it) and its stubs go with it.
    count = 5_000
    refs = writer.root("refs", dict)
    writer.run(lambda: refs.__setitem__("l", [{"v": i} for i in range(count)]))
    writer.run(lambda: [refs.__setitem__(f"s{i}", {"v": i}) for i in range(5)])
    monkeypatch.setenv(heap_io.ENV_PREFETCH_BYTES, "0")  # every element stays a stub
    cache_bytes = 1 << 20
    superstatic.connect(cluster.client_endpoints(), replicate="partial", cache_bytes=cache_bytes)
    try:
        mine = superstatic.root("refs", dict)
        assert len(mine["l"]) == count
        heap = superstatic.stats()["heap"]
        assert heap["stubs"] >= count
        assert heap["held_bytes"] > cache_bytes  # counted: about twice the budget
        # Each load's install sweeps the clock while over the budget: the first clears the
        # list's reference bit (it was just loaded), the next hollows it and its stubs go.
        assert [mine[f"s{i}"]["v"] for i in range(5)] == list(range(5))
        heap = superstatic.stats()["heap"]
        assert heap["held_bytes"] <= cache_bytes
        assert heap["stubs"] < 10
        assert len(mine["l"]) == count and mine["l"][7]["v"] == 7  # loaded again
    finally:
        superstatic.close()


def test_key_loads_of_non_str_keys_survive_a_failover_and_are_settled(
    cluster: LocalCluster, writer: Session
) -> None:
    """heap_io tracks a key load by its live key: an int, a tuple and an enum member key
    asked of an agent that dies are asked again after the failover, answered, and settled
    (nothing left asked, so nothing is asked again on a later subscription)."""
    keys: list[Any] = [7, (3, "x"), Shade.DARK]

    def fill() -> None:
        table: dict[Any, Any] = {i: f"int {i}" for i in range(KEYED_ENTRIES)}
        table[(3, "x")] = "tuple"
        table[Shade.DARK] = "enum"
        writer.root("nonstr", dict)["t"] = table

    writer.run(fill)
    leader = cluster.leader()
    first = next(node for node in cluster.agents if node != leader)
    others = [node for node in cluster.agents if node != first]
    superstatic.connect(cluster.client_endpoints([first, *others]), replicate="partial")
    try:
        conn = session_default.get().connection
        assert isinstance(conn, Connection) and conn.heap_io is not None
        table = superstatic.root("nonstr", dict)["t"]
        assert node_of(table).state == HOLLOW
        assert 0 in table  # the header, then one key: held per key
        assert node_of(table).state == PARTIAL
        cluster.kill(first)
        assert [table[key] for key in keys] == ["int 7", "tuple", "enum"]
        assert Shade.LIGHT not in table and 10_000 not in table
        assert conn.failovers >= 1
        assert not conn.heap_io.asked, "an answered key load is still asked"
    finally:
        superstatic.close()
        cluster.start_agent(first)
        cluster.leader()
