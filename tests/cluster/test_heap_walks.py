"""The virtual heap's walks against three real agents (docs/virtual-heap.md 3.3, 4.3, 5):
prefetch makes a walk root -> bucket -> object cost fewer loads and never changes what it
reads; superstatic.stats()["heap"] counts it. The layout is the objects_load benchmark's, small:
BUCKETS buckets of OBJECTS_PER_BUCKET objects (each bucket above the agent's
LOAD_WHOLE_ENTRIES_MAX, so held per key).

The app under test is this process's default connection; the writer is a second session of
this process on its own connection (a full replica)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.client import heap_io
from superstatic.client.connection import Connection
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

BUCKETS = 3
OBJECTS_PER_BUCKET = 300
OBJECTS = BUCKETS * OBJECTS_PER_BUCKET
WALKED = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base: Path = tmp_path_factory.mktemp("heapwalks") / "agents"
    with LocalCluster(base, size=3, keyed=False) as c:
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
