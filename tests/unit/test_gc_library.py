"""Objects no longer reachable from a root are collected, on the agent and in every replica."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

from superstatic.objects.node import node_of
from superstatic.protocol.errors import Error

# Small, so a handful of dropped references trips a collection.
GC_THRESHOLD = 8
JOBS = GC_THRESHOLD * 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path, gc_threshold=GC_THRESHOLD) as c:
        yield c


def agent_oids(cluster: InprocCluster) -> set[str]:
    return {oid for oid, _record in cluster.log.snapshot()[1]}


def test_unreachable_objects_are_collected_everywhere(cluster: InprocCluster) -> None:
    session = cluster.session()
    other = cluster.session()
    jobs = session.root("gc.jobs", dict)
    for i in range(JOBS):
        jobs[f"job{i}"] = {"payload": [i], "owner": {"name": f"w{i}"}}  # 3 nodes per job
    built = agent_oids(cluster)
    assert len(built) == 3 * JOBS + 2  # the jobs, the root dict, the root table
    held = [jobs[f"job{i}"] for i in range(JOBS)]  # references the app keeps
    for i in range(1, JOBS):
        del jobs[f"job{i}"]
    # Collection is amortized: it runs once the references dropped and nodes created since the
    # last one outnumber the nodes alive then. Churn a scratch slot until it has run (bounded).
    for k in range(4 * len(built)):
        live = agent_oids(cluster)
        if len(live) < len(built) // 2:
            break
        jobs["scratch"] = [k]  # a new node each time; the previous one becomes garbage
    jobs.pop("scratch", None)
    live = agent_oids(cluster)
    # Most garbage is gone, every node still reachable is kept, and the replicas drop exactly
    # what the agent dropped.
    assert len(live) < len(built) // 2, sorted(live)
    assert {node_of(held[0]).oid, node_of(held[0]["owner"]).oid} <= live
    assert held[0]["owner"]["name"] == "w0"
    other.sync()
    for replica in (session.replica, other.replica):
        assert set(replica.nodes) == live
    collected = next(job for job in held[1:] if node_of(job).oid not in live)
    with pytest.raises(Error, match="no longer exists"):
        collected["payload"] = [1]
    assert set(jobs) == {"job0"}
    assert held[0]["payload"] == [0]
