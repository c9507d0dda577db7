"""review40: a rolling upgrade to format 5 (docs/data-model-v2.md 8.18), one member at a time
with the others still on the release whose Raft log is inside LMDB (format 3/4). The wire did
not change, so the members must agree: the converted member takes entries from an old leader,
is sent a peer snapshot by it when it fell behind a compaction, and leads the old members
(which then take entries, and a snapshot, from it). 8.18 left this untested; docs/operations.md
converts with the cluster stopped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from test_migrate_cluster import LOG_IN_LMDB_RELEASE, previous_release, run

import superstatic
from superstatic.tools.localcluster import LocalCluster

LOG_RETAIN_ENTRIES = 20  # a member down for WRITES_WHILE_DOWN writes is sent a snapshot
WRITES_WHILE_DOWN = 80
TIMEOUT_S = 120
# The operator's command line, installed beside this interpreter (scripts/setup).
SUPERSTATIC = str(Path(sys.executable).parent / "superstatic")

pytestmark = pytest.mark.cluster


def _write(cluster: LocalCluster, tag: str, count: int, ids: list[str] | None = None) -> None:
    superstatic.connect(cluster.client_endpoints(ids))
    try:
        items = superstatic.root("items", dict)
        for i in range(count):
            items[f"{tag}{i}"] = i
    finally:
        superstatic.close()


def _items_at(cluster: LocalCluster, node_id: str) -> dict[str, int]:
    superstatic.connect(cluster.client_endpoints([node_id]))
    try:
        superstatic.sync()
        return dict(superstatic.root("items", dict))
    finally:
        superstatic.close()


def _same_everywhere(cluster: LocalCluster) -> dict[str, int]:
    want = _items_at(cluster, cluster.leader(TIMEOUT_S))
    for node_id in cluster.agents:
        cluster.wait_until(
            lambda node_id=node_id: _items_at(cluster, node_id) == want,
            f"{node_id} holds what the leader holds",
            TIMEOUT_S,
        )
    return want


def test_a_rolling_upgrade_member_by_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_path = previous_release(tmp_path / "previous", LOG_IN_LMDB_RELEASE)
    old = {"PYTHONPATH": str(old_path)}
    args = ["--log-retain-entries", str(LOG_RETAIN_ENTRIES)]
    new_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with LocalCluster(tmp_path / "agents", size=3, env=old, agent_args=args) as cluster:
        cluster.start()
        cluster.leader(TIMEOUT_S)
        for name, value in cluster.client_env().items():
            # Undone after the test: the app's key left in os.environ made later tests'
            # admin requests go out as the app (test_sessions, refused MEMBERS).
            monkeypatch.setenv(name, value)
        _write(cluster, "old", 30)
        for n, node_id in enumerate(sorted(cluster.agents)):
            # Stopped; the others (old and new) take writes meanwhile, past a compaction.
            cluster.stop(node_id)
            others = [i for i in cluster.agents if i != node_id]
            _write(cluster, f"down{n}-", WRITES_WHILE_DOWN, others)
            spec = cluster.agents[node_id]
            done = run(
                [sys.executable, "-m", "superstatic_agent", "--migrate", "--data-dir",
                 str(spec.data_dir)],
                new_env,
            )  # fmt: skip
            assert "format 5" in done.stdout, done.stdout
            cluster.env = None  # this release for this member
            cluster.start_agent(node_id)
            cluster.env = old  # the members not converted yet stay old if restarted
            _same_everywhere(cluster)
            # The converted member leads the rest for a while.
            if cluster.leader(TIMEOUT_S) != node_id:
                run(
                    [SUPERSTATIC, "members", "transfer", node_id,
                     "--agent", ",".join(cluster.client_endpoints())],
                    {**new_env, **cluster.client_env("admin")},
                )  # fmt: skip
                cluster.wait_until(
                    lambda node_id=node_id: cluster.leader(TIMEOUT_S) == node_id,
                    f"{node_id} leads",
                    TIMEOUT_S,
                )
            # It was sent a snapshot (by an old leader, for the first member).
            assert cluster.status(node_id)["counters"]["snapshots_installed"] >= 1
            _write(cluster, f"led{n}-", 30)
            got = _same_everywhere(cluster)
            if n == 0:
                # An old member falls behind the converted leader's compaction and is sent a
                # snapshot by it, still on the old release.
                last = sorted(cluster.agents)[-1]
                cluster.stop(last)
                _write(cluster, "behind-", WRITES_WHILE_DOWN, [node_id])
                cluster.start_agent(last)
                _same_everywhere(cluster)
                assert cluster.status(last)["counters"]["snapshots_installed"] >= 1
            assert got["old29"] == 29 and got[f"down{n}-{WRITES_WHILE_DOWN - 1}"] == 79
        assert len(_same_everywhere(cluster)) == 30 + 4 * WRITES_WHILE_DOWN + 3 * 30
