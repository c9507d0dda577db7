"""A shared list behaves like a list: every read and every mutator, lone or in a transaction,
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

INITIAL = [3, 1, 2, 3, 5]

READS = {
    "getitem": lambda s: s[0],
    "getitem negative": lambda s: s[-1],
    "getitem out of range": lambda s: s[10],
    "slice": lambda s: s[1:3],
    "slice step": lambda s: s[::-2],
    "len": len,
    "contains": lambda s: 2 in s,
    "iter": list,
    "reversed": lambda s: list(reversed(s)),
    "index": lambda s: s.index(3),
    "index missing": lambda s: s.index(99),
    "count": lambda s: s.count(3),
    "eq": lambda s: s == [3, 1, 2, 3, 5],
    "ne": lambda s: s != [],
    "lt": lambda s: s < [4],
    "ge": lambda s: s >= [3, 1],
    "add": lambda s: s + [1],  # noqa: RUF005 (the operator under test)
    "radd": lambda s: [1] + s,  # noqa: RUF005
    "mul": lambda s: s * 2,
    "rmul": lambda s: 2 * s,
    "repr": repr,
    "bool": bool,
    "sorted": sorted,
    "sum": sum,
    "copy method": lambda s: s.copy(),
    "list()": list,
}

WRITES = {
    "setitem": lambda s: s.__setitem__(0, 9),
    "setitem negative": lambda s: s.__setitem__(-1, 9),
    "setitem out of range": lambda s: s.__setitem__(10, 1),
    "setitem container": lambda s: s.__setitem__(1, {"a": [1]}),
    "slice assign grow": lambda s: s.__setitem__(slice(1, 3), [7, 8, 9]),
    "slice assign empty": lambda s: s.__setitem__(slice(1, 1), [4]),
    "slice assign reversed bounds": lambda s: s.__setitem__(slice(3, 1), [4]),
    "extended slice assign": lambda s: s.__setitem__(slice(None, None, 2), [0, 0, 0]),
    "extended slice wrong size": lambda s: s.__setitem__(slice(None, None, 2), [1]),
    "delitem": lambda s: s.__delitem__(0),
    "delitem negative": lambda s: s.__delitem__(-1),
    "delitem missing": lambda s: s.__delitem__(99),
    "del slice": lambda s: s.__delitem__(slice(1, 3)),
    "del extended slice": lambda s: s.__delitem__(slice(None, None, 2)),
    "append": lambda s: s.append([1]),
    "extend": lambda s: s.extend(range(3)),
    "extend self": lambda s: s.extend(s),
    "extend empty": lambda s: s.extend([]),
    "insert": lambda s: s.insert(0, 5),
    "insert negative": lambda s: s.insert(-1, 5),
    "insert past end": lambda s: s.insert(100, 5),
    "pop": lambda s: s.pop(),
    "pop 0": lambda s: s.pop(0),
    "pop out of range": lambda s: s.pop(99),
    "remove": lambda s: s.remove(3),
    "remove missing": lambda s: s.remove(99),
    "clear": lambda s: s.clear(),
    "sort": lambda s: s.sort(),
    "sort reverse key": lambda s: s.sort(key=lambda x: -x, reverse=True),
    "reverse": lambda s: s.reverse(),
    "iadd": lambda s: operator.iadd(s, [1, 2]),
    "imul": lambda s: operator.imul(s, 2),
    "imul zero": lambda s: operator.imul(s, 0),
    "nested": lambda s: (s.append({"k": [1]}), s[-1]["k"].append(2)),
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def fresh_root(cluster: InprocCluster, initial: list[Any]) -> tuple[Any, Any, str]:
    session = cluster.session()
    name = f"r{cluster.next_name()}"
    shared = session.root(name, list)
    shared.extend(copy.deepcopy(initial))
    return session, shared, name


@pytest.mark.parametrize("name", sorted(READS))
def test_reads_match_a_plain_list(cluster: InprocCluster, name: str) -> None:
    session, shared, _ = fresh_root(cluster, INITIAL)
    check_same(session, INITIAL, shared, READS[name], in_txn=False)
    check_same(session, INITIAL, shared, READS[name], in_txn=True)


@pytest.mark.parametrize("in_txn", [False, True], ids=["lone", "txn"])
@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_match_a_plain_list(cluster: InprocCluster, name: str, in_txn: bool) -> None:
    session, shared, root_name = fresh_root(cluster, INITIAL)
    after = check_same(session, INITIAL, shared, WRITES[name], in_txn=in_txn)
    assert plain(cluster.session().root(root_name, list)) == after


def test_list_in_itself_and_isinstance(cluster: InprocCluster) -> None:
    _session, lst, name = fresh_root(cluster, [])
    assert isinstance(lst, list)
    lst.append(lst)
    assert lst[0] is lst
    other = cluster.session().root(name, list)
    assert other[0] is other
    with pytest.raises(TypeError):
        hash(lst)


def test_append_is_blind_and_index_write_is_not(cluster: InprocCluster) -> None:
    # Two appenders on stale replicas never conflict; two index writers do (one retries).
    first = cluster.session()
    lst = first.root("log", list)
    lst.append(0)
    stale = cluster.session(held=True)
    stale_lst = stale.root("log", list)
    attempts = []

    def append_from_stale() -> None:
        attempts.append(1)
        stale_lst.append(2)

    lst.append(1)  # the stale replica has not seen this
    stale.run(append_from_stale)
    assert len(attempts) == 1
    assert plain(lst) == [0, 1, 2] and plain(stale_lst) == [0, 1, 2]

    attempts.clear()
    lst[0] = 10

    def overwrite_from_stale() -> None:
        attempts.append(1)
        stale_lst[0] = stale_lst[0] + 1

    stale.run(overwrite_from_stale)
    assert len(attempts) == 2  # conflicted once, re-ran on the fresh state
    assert lst[0] == 11 and stale_lst[0] == 11
