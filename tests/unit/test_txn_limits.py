"""Named limits of the library: hitting one raises LimitExceeded naming it, commits nothing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

from superstatic.objects import txn as txn_module
from superstatic.objects import values as values_module
from superstatic.objects.plain_copy import plain
from superstatic.protocol.errors import LimitExceeded


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def test_ops_per_transaction(cluster: InprocCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(txn_module, "TXN_OPS_MAX", 5)
    session = cluster.session()
    d = session.root("limits", dict)
    before = cluster.last_index

    def body() -> None:
        for i in range(6):
            d[i] = i

    with pytest.raises(LimitExceeded, match="TXN_OPS_MAX=5"):
        session.run(body)
    assert cluster.last_index == before and plain(d) == {}


def test_new_objects_per_transaction(
    cluster: InprocCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(txn_module, "TXN_NEW_NODES_MAX", 3)
    session = cluster.session()
    d = session.root("limits", dict)
    with pytest.raises(LimitExceeded, match="TXN_NEW_NODES_MAX=3"):
        d["many"] = [[1], [2], [3]]  # four new lists
    d["few"] = [[1], [2]]
    assert plain(d) == {"few": [[1], [2]]}


def test_writes_and_new_objects_together_fit_the_wire_bound(
    cluster: InprocCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new object is one more op on the wire: a body of 3 new objects and 3 writes is 6
    ops, over TXN_OPS_MAX=5, although each count alone is within its bound (it once tripped
    an assertion in ops.encode_txn at commit instead of naming the limit)."""
    monkeypatch.setattr(txn_module, "TXN_OPS_MAX", 5)
    session = cluster.session()
    d = session.root("limits", dict)
    before = cluster.last_index

    def body() -> None:
        d["a"] = [1]
        d["b"] = [2]
        d["c"] = [3]

    with pytest.raises(LimitExceeded, match="TXN_OPS_MAX=5"):
        session.run(body)
    assert cluster.last_index == before and plain(d) == {}


def test_nesting_of_one_value(cluster: InprocCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values_module, "VALUE_DEPTH_MAX", 10)
    session = cluster.session()
    d = session.root("limits", dict)
    deep: Any = 1
    for _ in range(12):
        deep = [deep]
    with pytest.raises(LimitExceeded, match="VALUE_DEPTH_MAX=10"):
        d["deep"] = deep
    assert plain(d) == {}
