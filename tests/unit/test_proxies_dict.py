"""A shared dict behaves like a dict: every read and every mutator, lone or in a transaction,
and another replica (fed only by the log) reaches the same state."""

from __future__ import annotations

import copy
import json
import operator
import pickle
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.compare import check_same
from support.inproc import InprocCluster

import superstatic
from superstatic.objects.plain_copy import plain

INITIAL = {"a": 1, "b": [1, 2], "c": {"x": 1}, ("t", 1): "tuple key", 7: None}

READS = {
    "getitem": lambda d: d["a"],
    "getitem nested": lambda d: d["c"]["x"],
    "getitem missing": lambda d: d["zz"],
    "getitem tuple key": lambda d: d[("t", 1)],
    "len": len,
    "contains": lambda d: "a" in d,
    "not contains": lambda d: "zz" in d,
    "iter": list,
    "reversed": lambda d: list(reversed(d)),
    "get": lambda d: d.get("a"),
    "get default": lambda d: d.get("zz", 5),
    "keys": lambda d: list(d.keys()),
    "values": lambda d: list(d.values()),
    "items": lambda d: list(d.items()),
    "eq": lambda d: d == copy.deepcopy(INITIAL),
    "ne": lambda d: d != {},
    "repr": repr,
    "str": str,
    "format": lambda d: f"{d}",
    "bool": bool,
    "or": lambda d: d | {"x": 1},
    "ror": lambda d: {"x": 1} | d,
    "dict()": dict,
    "unpack": lambda d: {**d},
    "copy method": lambda d: d.copy(),
    "sorted keys": lambda d: sorted(map(str, d)),
}

WRITES = {
    "setitem": lambda d: d.__setitem__("a", 5),
    "setitem new": lambda d: d.__setitem__("new", "v"),
    "setitem container": lambda d: d.__setitem__("n", {"deep": {"deeper": [1, {2}]}}),
    "setitem tuple value": lambda d: d.__setitem__("tv", (1, (2, "x"), frozenset({3}))),
    "setitem nested": lambda d: d["c"].__setitem__("y", [3]),
    "delitem": lambda d: d.__delitem__("a"),
    "delitem missing": lambda d: d.__delitem__("zz"),
    "pop": lambda d: d.pop("b"),
    "pop missing": lambda d: d.pop("zz"),
    "pop default": lambda d: d.pop("zz", 7),
    "popitem": lambda d: d.popitem(),
    "setdefault present": lambda d: d.setdefault("a", 9),
    "setdefault absent": lambda d: d.setdefault("q", [1]),
    "update mapping kwargs": lambda d: d.update({"x": 1}, y=2),
    "update pairs": lambda d: d.update([("k", 3), ("a", 4)]),
    "clear": lambda d: d.clear(),
    "ior": lambda d: operator.ior(d, {"z": 3}),
    "nested list append": lambda d: d["b"].append(3),
    "nested iadd": lambda d: d.__setitem__("b", operator.iadd(d["b"], [9])),
    "replace nested": lambda d: d.__setitem__("c", {"other": 1}),
    "unhashable key": lambda d: d.__setitem__([1], 1),
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def fresh_root(cluster: InprocCluster, initial: Any) -> tuple[Any, Any]:
    session = cluster.session()
    name = f"r{cluster.next_name()}"
    shared = session.root(name, dict)
    shared.update(copy.deepcopy(initial))
    return session, shared


@pytest.mark.parametrize("name", sorted(READS))
def test_reads_match_a_plain_dict(cluster: InprocCluster, name: str) -> None:
    session, shared = fresh_root(cluster, INITIAL)
    check_same(session, INITIAL, shared, READS[name], in_txn=False)
    check_same(session, INITIAL, shared, READS[name], in_txn=True)


@pytest.mark.parametrize("in_txn", [False, True], ids=["lone", "txn"])
@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_match_a_plain_dict(cluster: InprocCluster, name: str, in_txn: bool) -> None:
    session, shared = fresh_root(cluster, INITIAL)
    after = check_same(session, INITIAL, shared, WRITES[name], in_txn=in_txn)
    # A second replica, built from a snapshot of the state machine, holds the same state.
    other = cluster.session()
    assert plain(other.root(session_root_name(session, shared), dict)) == after


def session_root_name(session: Any, shared: Any) -> str:
    roots = session.replica.roots_node().live
    return next(name for name, ref in roots.items() if ref is shared)


def test_protocols(cluster: InprocCluster) -> None:
    _session, d = fresh_root(cluster, {"a": [1]})
    assert isinstance(d, dict)
    with pytest.raises(TypeError):
        hash(d)
    with pytest.raises(TypeError):
        {d}  # noqa: B018
    with pytest.raises((TypeError, NotImplementedError)):
        pickle.dumps(d)
    shallow = copy.copy(d)
    assert type(shallow) is dict and shallow["a"] is d["a"]  # shallow: nested stays shared
    deep = copy.deepcopy(d)
    assert type(deep) is dict and type(deep["a"]) is list and deep == {"a": [1]}
    assert json.loads(json.dumps(plain(d))) == {"a": [1]}
    assert d["a"] is d["a"]  # one proxy per node


def test_identity_and_shared_references(cluster: InprocCluster) -> None:
    session, d = fresh_root(cluster, {})
    inner = [1]
    d["x"] = {"one": inner, "two": inner}  # one plain list referenced twice: one node
    assert d["x"]["one"] is d["x"]["two"]
    d["y"] = d["x"]["one"]  # assigning a proxy stores a reference, not a copy
    assert d["y"] is d["x"]["one"]
    d["y"].append(2)
    assert d["x"]["two"] == [1, 2]
    other = cluster.session().root(session_root_name(session, d), dict)
    assert other["y"] is other["x"]["one"] is other["x"]["two"]
    assert other["y"] == [1, 2]


def test_identity_across_assignments_of_one_transaction(cluster: InprocCluster) -> None:
    session, d = fresh_root(cluster, {})
    inner = {"k": 1}
    d.update({"x": inner, "y": inner})  # one call, one transaction: one node
    assert d["x"] is d["y"]
    shared = [0]
    with session.transaction():
        d["a"] = shared
        d["b"] = {"again": shared}
    assert d["b"]["again"] is d["a"]
    other = cluster.session().root(session_root_name(session, d), dict)
    assert other["x"] is other["y"] and other["b"]["again"] is other["a"]


def test_cycles(cluster: InprocCluster) -> None:
    session, d = fresh_root(cluster, {})
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    d["loop"] = loop
    assert d["loop"]["self"] is d["loop"]
    d["back"] = d  # a root referencing itself
    assert d["back"] is d
    copied = plain(d)
    assert copied["loop"]["self"] is copied["loop"] and copied["back"] is copied
    other = cluster.session().root(session_root_name(session, d), dict)
    assert other["loop"]["self"] is other["loop"] and other["back"] is other


def test_not_storable_names_path_and_type_and_commits_nothing(cluster: InprocCluster) -> None:
    _session, d = fresh_root(cluster, {"keep": 1})
    before = cluster.last_index
    with pytest.raises(superstatic.NotStorable) as info:
        d["bad"] = {"deep": [1, object()]}
    assert "['bad']['deep'][1]" in str(info.value) and "'object'" in str(info.value)
    assert info.value.type_name == "object"
    with pytest.raises(superstatic.NotStorable, match="OrderedDict"):
        d["od"] = OrderedDict(a=1)
    with pytest.raises(superstatic.NotStorable, match="function"):
        d["fn"] = lambda: None
    assert cluster.last_index == before
    assert plain(d) == {"keep": 1}


def test_lone_write_is_one_entry_and_read_only_txn_none(cluster: InprocCluster) -> None:
    session, d = fresh_root(cluster, {})
    before = cluster.last_index
    d["a"] = 1
    assert cluster.last_index == before + 1
    assert session.run(lambda: d["a"] + len(d)) == 2
    assert cluster.last_index == before + 1


def test_update_with_a_bad_pair_writes_nothing(cluster: InprocCluster) -> None:
    # Plain dict.update applies the pairs before the bad one; a shared update is one atomic
    # write: it checks every pair first.
    _session, d = fresh_root(cluster, {"a": 1})
    before = cluster.last_index
    with pytest.raises(ValueError, match="element #1"):
        d.update([("k", 3), ("bad",)])
    assert plain(d) == {"a": 1} and cluster.last_index == before
