"""A shared set behaves like a set: every read and every mutator, lone or in a transaction,
and another replica (fed only by the log) reaches the same state."""

from __future__ import annotations

import copy
import operator
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.compare import check_same
from support.inproc import InprocCluster

from superstatic.objects.plain_copy import plain

# Small ints: iteration order is the same for a plain set and a replica's set built by ops.
INITIAL = {1, 2, 3, (4, 5)}

READS = {
    "len": len,
    "contains": lambda s: 2 in s,
    "contains tuple": lambda s: (4, 5) in s,
    "not contains": lambda s: 9 in s,
    "iter": lambda s: sorted(map(str, s)),
    "eq": lambda s: s == {1, 2, 3, (4, 5)},
    "ne": lambda s: s != set(),
    "le": lambda s: s <= {1, 2, 3, (4, 5), 6},
    "lt": lambda s: s < {1},
    "ge": lambda s: s >= {1},
    "gt": lambda s: s > {1},
    "or": lambda s: s | {9},
    "ror": lambda s: {9} | s,
    "and": lambda s: s & {1, 9},
    "rand": lambda s: {1, 9} & s,
    "sub": lambda s: s - {1},
    "rsub": lambda s: {1, 9} - s,
    "xor": lambda s: s ^ {1, 9},
    "rxor": lambda s: {1, 9} ^ s,
    "union": lambda s: s.union([9], (10,)),
    "intersection": lambda s: s.intersection([1, 2]),
    "difference": lambda s: s.difference([1]),
    "symmetric_difference": lambda s: s.symmetric_difference([1, 9]),
    "issubset": lambda s: s.issubset(range(10)),
    "issuperset": lambda s: s.issuperset([1]),
    "isdisjoint": lambda s: s.isdisjoint([9]),
    "copy method": lambda s: s.copy(),
    "bool": bool,
    "set()": set,
    "frozenset()": frozenset,
}

WRITES = {
    "add": lambda s: s.add(9),
    "add present": lambda s: s.add(1),
    "add tuple": lambda s: s.add((1, "x")),
    "add unhashable": lambda s: s.add([1]),
    "update": lambda s: s.update([7, 8], {9}),
    "discard": lambda s: s.discard(1),
    "discard missing": lambda s: s.discard(99),
    "discard unhashable": lambda s: s.discard([1]),
    "remove": lambda s: s.remove(2),
    "remove missing": lambda s: s.remove(99),
    "clear": lambda s: s.clear(),
    "difference_update": lambda s: s.difference_update([1, 2], [3]),
    "intersection_update": lambda s: s.intersection_update([1, 2, 99]),
    "symmetric_difference_update": lambda s: s.symmetric_difference_update([1, 9, 9]),
    "ior": lambda s: operator.ior(s, {9}),
    "iand": lambda s: operator.iand(s, {1, 2}),
    "isub": lambda s: operator.isub(s, {1}),
    "ixor": lambda s: operator.ixor(s, {1, 9}),
    "ior list": lambda s: operator.ior(s, [1]),
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def fresh_root(cluster: InprocCluster, initial: set[Any]) -> tuple[Any, Any, str]:
    session = cluster.session()
    name = f"r{cluster.next_name()}"
    shared = session.root(name, set)
    shared.update(copy.deepcopy(initial))
    return session, shared, name


@pytest.mark.parametrize("name", sorted(READS))
def test_reads_match_a_plain_set(cluster: InprocCluster, name: str) -> None:
    session, shared, _ = fresh_root(cluster, INITIAL)
    check_same(session, INITIAL, shared, READS[name], in_txn=False)
    check_same(session, INITIAL, shared, READS[name], in_txn=True)


@pytest.mark.parametrize("in_txn", [False, True], ids=["lone", "txn"])
@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_match_a_plain_set(cluster: InprocCluster, name: str, in_txn: bool) -> None:
    session, shared, root_name = fresh_root(cluster, INITIAL)
    after = check_same(session, INITIAL, shared, WRITES[name], in_txn=in_txn)
    assert plain(cluster.session().root(root_name, set)) == after


def test_set_protocols(cluster: InprocCluster) -> None:
    _session, s, _ = fresh_root(cluster, {1})
    assert isinstance(s, set)
    with pytest.raises(TypeError):
        hash(s)
    assert s == {1} and {1} == s


@pytest.mark.parametrize("in_txn", [False, True], ids=["lone", "txn"])
def test_pop_removes_what_it_returns(cluster: InprocCluster, in_txn: bool) -> None:
    # set.pop returns an arbitrary element: the replica's iteration order need not match a
    # plain set built differently, so check the contract rather than the element.
    session, s, name = fresh_root(cluster, INITIAL)
    popped = session.run(s.pop) if in_txn else s.pop()
    assert popped in INITIAL
    assert plain(s) == INITIAL - {popped}
    assert plain(cluster.session().root(name, set)) == INITIAL - {popped}
    s.clear()
    with pytest.raises(KeyError):
        s.pop()
