"""A node written by an op that adds nothing (discard, del, clear) while its version's CBOR
grows a byte (index 23 -> 24, 255 -> 256) must apply: the cached size bound covers the version
growth once (found by tests/unit/test_differential.py: the assertion in _NodeCache.flush halted
apply, on every agent at the same index)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@pytest.mark.parametrize("boundary", [24, 256])
def test_a_write_adding_nothing_across_a_version_width_boundary(
    cluster: InprocCluster, boundary: int
) -> None:
    session = cluster.session()
    s = session.root("s", set)
    d = session.root("d", dict)
    lst = session.root("l", list)
    lst.append(1)
    s.discard(0)  # flushed at a low index: the bound is tightened to this record
    lst.pop()
    while cluster.last_index < boundary + 2:
        d["k"] = cluster.last_index  # other writes move the log index past the boundary
    s.discard(1)  # adds nothing; the record's version is now a byte longer
    lst.clear()
    del d["k"]
    assert cluster.session().root("s", set) == set() and not cluster.session().root("d", dict)
