"""A body that raised from a stale view re-runs instead of raising (the differential test's
failing case, made permanent): a writer whose replica lags reads a field another writer has
since changed, and its body raises on the old value where the current one would not. The plain
program never sees an old state, so the shared one must not raise either: the library checks
with a barrier whether the reads had moved at the cluster, and re-runs the body like a conflict
(superstatic/objects/txn.py, `_moved_at_the_cluster`). An exception from a view that is
current still propagates, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.inproc import InprocCluster

from superstatic.objects import node as node_module


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def stale_copy(cluster: InprocCluster) -> tuple[Any, Any, Any]:
    """(the writer's dict, the stale writer's session, its copy of the same dict)."""
    writer = cluster.session()
    stale = cluster.session(held=True)  # receives the log only when it commits or syncs
    shared = writer.root("world", dict)
    shared["t"] = {"count": None}
    stale.sync()
    found = node_module.node_of(shared["t"])
    assert found is not None
    return shared, stale, stale.replica.nodes[found.oid].ref


def test_a_body_that_raised_on_a_stale_value_reruns_on_the_current_one(
    cluster: InprocCluster,
) -> None:
    shared, stale, old = stale_copy(cluster)
    shared["t"]["count"] = 0  # the stale writer has not seen this
    assert old["count"] is None
    runs: list[Any] = []

    def bump() -> None:
        runs.append(old["count"])
        old["count"] = old["count"] + 1  # None + 1 raises on the stale value

    stale.run(bump)
    assert runs == [None, 0]  # raised once on the old state, then ran on the current one
    assert shared["t"]["count"] == 1


def test_an_exception_from_a_current_view_propagates_once(cluster: InprocCluster) -> None:
    shared, stale, old = stale_copy(cluster)
    runs: list[Any] = []

    def bump() -> None:
        runs.append(old["count"])
        old["count"] = old["count"] + 1  # None + 1: the current value raises too

    with pytest.raises(TypeError):
        stale.run(bump)
    assert runs == [None]  # checked at the cluster (nothing had moved), not re-run
    assert shared["t"]["count"] is None


def test_a_body_that_read_nothing_raises_without_a_barrier(cluster: InprocCluster) -> None:
    _shared, stale, _old = stale_copy(cluster)
    barriers: list[int] = []
    connection = stale.connection
    read_index = connection.read_index

    def counting() -> int:
        barriers.append(1)
        return read_index()

    connection.read_index = counting  # type: ignore[method-assign]

    def fail() -> None:
        raise ValueError("not about the state")

    with pytest.raises(ValueError):
        stale.run(fail)
    assert barriers == []
