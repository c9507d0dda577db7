"""Dicts held per key by a partial replica (docs/virtual-heap.md section 4.3): a dict above the
agent's LOAD_WHOLE_ENTRIES_MAX entries is answered with its header only; a lookup loads one
key, a miss is remembered as absent (and filled by another app's insert), a read of its shape
or content loads it whole; transactions' key reads conflict as on a held dict."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import WHOLE_ENTRIES_MAX, PartialConnection, partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects.node import HELD, PARTIAL, node_of
from superstatic.objects.partial_dict import PartialDict

BIG = WHOLE_ENTRIES_MAX + 44


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        writer = c.session()
        big = writer.root("big", dict)
        writer.run(lambda: [big.__setitem__(f"k{i}", {"i": i}) for i in range(BIG)])
        yield c


def _loads(session: Any) -> list[list[str]]:
    connection = session.connection
    assert isinstance(connection, PartialConnection)
    return connection.loads


def test_a_big_dict_is_held_per_key(cluster: InprocCluster) -> None:
    app = partial_session(cluster)
    big = app.root("big", dict)
    assert big["k7"]["i"] == 7
    node = node_of(big)
    assert node.state == PARTIAL and type(node.live) is PartialDict
    assert dict.__len__(node.live) == 1  # one key of BIG held
    assert len(app.replica.nodes) < 10  # no stub per entry
    assert "k8" in big and big.get("k9")["i"] == 9 and "nope" not in big
    assert big.get("nope") is None and "nope" in node.live.absent
    before = len(_loads(app))
    assert big.get("nope", 0) == 0 and len(_loads(app)) == before  # known absent: no load


def test_an_absent_key_inserted_by_another_app_arrives(cluster: InprocCluster) -> None:
    app = partial_session(cluster)
    big = app.root("big", dict)
    assert "late" not in big
    cluster.session().root("big", dict)["late"] = 5
    app.sync()
    assert big["late"] == 5
    cluster.session().root("big", dict)["k3"] = "changed"  # a key not held here
    app.sync()
    assert big["k3"] == "changed"  # loaded now, at the current index


def test_a_shape_read_loads_it_whole(cluster: InprocCluster) -> None:
    app = partial_session(cluster)
    big = app.root("big", dict)
    assert big["k1"]["i"] == 1
    assert len(big) == BIG
    node = node_of(big)
    assert node.state == HELD and type(node.live) is dict
    assert sorted(big)[:2] == ["k0", "k1"]
    assert big == superstatic.plain(cluster.session().root("big", dict))


def test_inside_a_transaction_key_reads_and_a_whole_read_after_a_write(
    cluster: InprocCluster,
) -> None:
    app = partial_session(cluster)
    big = app.root("big", dict)

    def body() -> tuple[int, int]:
        big["extra"] = {"i": -1}  # a blind write, then reads of the node
        first: int = big["k2"]["i"]
        return first, len(big)  # the whole read sees the body's own write

    assert app.run(body) == (2, BIG + 1)
    assert node_of(big).state == HELD and big["extra"]["i"] == -1


@pytest.mark.parametrize(("written", "reruns"), [("k5", True), ("k6", False)])
def test_key_reads_conflict_only_with_writes_of_those_keys(
    cluster: InprocCluster, written: str, reruns: bool
) -> None:
    stale = partial_session(cluster, held=True)
    big = stale.root("big", dict)
    assert big["k5"]["i"] == 5  # held per key, then stale
    cluster.session().root("big", dict)[written] = "new"
    runs: list[Any] = []

    def body() -> None:
        runs.append(big["k5"])
        big["seen"] = 1

    stale.run(body)
    assert len(runs) == (2 if reruns else 1), runs
