"""Commit-only APPENDs go unanswered (docs/raft.md, "Commit-only APPENDs go unanswered";
docs/data-model-v2.md 8.9) against real agents: the followers still learn every commit at
once (an app's read-your-writes at a follower waits for it), and the leader still learns that
every follower holds its whole log (its STATUS progress), from the answers to the entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

WRITES = 40
TIMEOUT_S_VIEW = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "agents", size=3) as c:
        c.start()
        c.leader()
        yield c


def follower_rows(cluster: LocalCluster, leader: str) -> list[dict[str, Any]]:
    return [row for row in cluster.status(leader)["members"] if row["id"] != leader]


@pytest.mark.parametrize("at", ["leader", "follower"])
def test_sequential_writes_commit_everywhere_and_the_leader_knows_every_match(
    cluster: LocalCluster, at: str
) -> None:
    leader = cluster.leader()
    follower = next(i for i in cluster.agents if i != leader)
    own = leader if at == "leader" else follower
    superstatic.connect(cluster.client_endpoints([own, *(i for i in cluster.agents if i != own)]))
    try:
        log = superstatic.root(f"unacked_{at}", list)
        for i in range(WRITES):
            log.append(i)
            assert log[-1] == i  # read-your-writes at the own agent's replica
    finally:
        superstatic.close()

    def settled() -> bool:
        status = cluster.status(leader)
        rows = follower_rows(cluster, leader)
        applied = [cluster.status(i)["applied"] for i in cluster.agents if i != leader]
        return (
            all(row["state"] == "replicate" and row["lag"] == 0 for row in rows)
            and all(index == status["commit"] for index in applied)
            and status["commit"] == status["log_last"]
        )

    cluster.wait_until(settled, "every follower applied and acknowledged all", TIMEOUT_S_VIEW)
    assert cluster.leader() == leader
