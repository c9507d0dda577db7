"""superstatic.stats()["heap"] (objects/stats.py): the virtual heap's gauges (held nodes, held
bytes, stubs) and counters (faults, loads, evictions, refaults), driven through partial
replicas over the in-process log (tests/support/heap_inproc.py)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import eviction
from superstatic.objects.node import HELD, HOLLOW, PARTIAL, node_of
from superstatic.objects.replica import Replica
from superstatic.objects.stats import HEAP_COUNTERS


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def _heap() -> dict[str, int]:
    heap: dict[str, int] = superstatic.stats()["heap"]
    return heap


def _moved(before: dict[str, int]) -> dict[str, int]:
    after = _heap()
    return {name: after[name] - before[name] for name in HEAP_COUNTERS}


def _sweep(replica: Replica) -> None:
    with replica.lock:
        eviction.sweep(replica)


def test_faults_and_loads_count_what_waited_and_what_was_asked(cluster: InprocCluster) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    for i in range(5):
        top[f"k{i}"] = {"i": i}
    before = _heap()
    app = partial_session(cluster)
    mine = app.root("top", dict)
    values = [mine[f"k{i}"]["i"] for i in range(5)]
    assert values == list(range(5))
    moved = _moved(before)
    # The root's key, the root, its 5 children: 7 faults, each its own load (one thread).
    assert moved["faults"] == 7
    assert moved["loads"] == 7
    assert moved["evictions"] == 0 and moved["refaults"] == 0
    assert [mine[f"k{i}"]["i"] for i in range(5)] == values  # held now: nothing more
    assert _moved(before)["faults"] == 7
    gauges = app.replica.heap_gauges()
    assert gauges["held_nodes"] == 7  # the root table (per key), top, 5 children
    assert gauges["held_bytes"] == app.replica.held_bytes > 0
    assert gauges["stubs"] == 0


def test_evictions_and_refaults_are_counted_and_the_gauges_follow(
    cluster: InprocCluster,
) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    for i in range(20):
        top[f"k{i}"] = {"i": i}
    app = partial_session(cluster, cache_bytes=1)
    before = _heap()
    mine = app.root("top", dict)
    assert sum(mine[f"k{i}"]["i"] for i in range(20)) == sum(range(20))
    for _ in range(3):  # bits cleared, then judged
        _sweep(app.replica)
    moved = _moved(before)
    top_node = node_of(mine)
    children = [node_of(dict.__getitem__(top_node.live, f"k{i}")) for i in range(20)]
    evicted = [i for i, child in enumerate(children) if child.state == HOLLOW]
    assert len(evicted) >= 15  # a 1-byte cache keeps what user code holds, and little else
    assert moved["evictions"] == len(evicted) and moved["refaults"] == 0
    gauges = app.replica.heap_gauges()
    held = sum(1 for node in app.replica.nodes.values() if node.state in (HELD, PARTIAL))
    assert gauges["held_nodes"] == held <= 22 - len(evicted)
    assert gauges["held_bytes"] == app.replica.held_bytes
    assert gauges["stubs"] == len(evicted)  # top still references them
    before = _heap()
    assert [mine[f"k{i}"]["i"] for i in evicted] == evicted  # faulted in again
    moved = _moved(before)
    assert moved["refaults"] == len(evicted)
    assert moved["faults"] == len(evicted)
    assert moved["loads"] == len(evicted)


def test_a_closed_sessions_counts_stay_and_its_gauges_go(cluster: InprocCluster) -> None:
    writer = cluster.session()
    writer.root("top", dict)["a"] = {"n": 1}
    app = partial_session(cluster)
    assert app.root("top", dict)["a"]["n"] == 1
    counted = _heap()
    assert counted["held_nodes"] >= 3
    app.replica.detach("closed")
    assert app.replica.held_bytes > 0
    assert app.replica.heap_gauges() == {"held_nodes": 0, "held_bytes": 0, "stubs": 0}
    after = _heap()
    assert {name: after[name] for name in HEAP_COUNTERS} == {
        name: counted[name] for name in HEAP_COUNTERS
    }
    assert after["held_nodes"] <= counted["held_nodes"] - 3
    assert after["held_bytes"] < counted["held_bytes"]
    del app
    gc.collect()
    assert {name: _heap()[name] for name in HEAP_COUNTERS} == {
        name: counted[name] for name in HEAP_COUNTERS
    }


def _child(mine: Any, name: str) -> Any:
    """The node of `mine[name]`, without a fault and without holding its proxy."""
    return node_of(dict.__getitem__(node_of(mine).live, name))


def test_a_node_faulted_soon_after_its_eviction_is_sticky_for_a_while(
    cluster: InprocCluster,
) -> None:
    writer = cluster.session()
    top = writer.root("top", dict)
    for i in range(10):
        top[f"k{i}"] = {"i": i}
    app = partial_session(cluster, cache_bytes=1)
    mine = app.root("top", dict)
    assert sum(mine[f"k{i}"]["i"] for i in range(10)) == sum(range(10))
    for _ in range(3):
        _sweep(app.replica)
    hot, late = _child(mine, "k0"), _child(mine, "k1")
    assert hot.state == HOLLOW and late.state == HOLLOW
    for _ in range(eviction.REFAULT_SWEEPS + 1):  # both were let go long ago now
        _sweep(app.replica)
    before = _heap()
    assert mine["k0"]["i"] == 0  # long after its eviction: not sticky...
    for _ in range(3):  # ...so it goes again (its bit spares it once)
        _sweep(app.replica)
    assert hot.state == HOLLOW
    assert mine["k0"]["i"] == 0  # faulted again right after: sticky
    assert mine["k1"]["i"] == 1  # long after its eviction: not
    assert _moved(before)["refaults"] == 3
    for _ in range(3):  # bits cleared, then judged
        _sweep(app.replica)
    assert hot.state == HELD, "a sticky node was hollowed"
    assert late.state == HOLLOW
    for _ in range(eviction.STICKY_SWEEPS):
        _sweep(app.replica)
    assert hot.state == HOLLOW, "a node stayed sticky past STICKY_SWEEPS"
    assert mine["k0"]["i"] == 0 and mine["k1"]["i"] == 1  # and reads are unchanged
