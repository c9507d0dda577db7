"""Catch-up by snapshot (docs/data-model-v2.md section 10): a follower stopped while the cluster
applies more entries than --snapshot-lag-entries-max (lowered here so a CI-sized write is far
behind) is sent a peer snapshot on restart although the leader's log still holds every entry;
it installs it (its tables swap, no record copied), goes on replicating from the log after it,
restarts from the installed store, and holds the same objects as the leader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from support import store

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

LAG_ENTRIES_MAX = 5
TRANSACTIONS = 30  # one log entry each: far more than LAG_ENTRIES_MAX behind
OBJECTS_PER_TRANSACTION = 20
TIMEOUT_S = 60.0
CHUNK_BYTES_MAX = 2048


def _objects(data_dir: Path) -> dict[str, Any]:
    env = lmdb.open(str(data_dir), max_dbs=32, readonly=False, lock=True)
    try:
        return store.objects(env)
    finally:
        env.close()


def _caught_up(cluster: LocalCluster, node_id: str, leader: str) -> bool:
    try:
        target = int(cluster.status(leader)["applied"])
        return int(cluster.status(node_id, timeout_ms=1_000)["applied"]) >= target
    except Exception:
        return False  # not answering yet


def test_a_far_behind_follower_catches_up_by_snapshot(tmp_path: Path) -> None:
    # Small chunks: the snapshot takes many, more than the leader's window of unacknowledged
    # ones (shipping.SHIPMENT_UNACKED_CHUNKS_MAX), so the follower's CHUNK_ACKs drive it.
    flags = [
        "--snapshot-lag-entries-max", str(LAG_ENTRIES_MAX),
        "--snapshot-chunk-bytes-max", str(CHUNK_BYTES_MAX),
    ]  # fmt: skip
    with LocalCluster(tmp_path / "agents", size=3, agent_args=flags) as cluster:
        cluster.start()
        leader = cluster.leader()
        lagging = next(i for i in cluster.voter_ids if i != leader)
        cluster.stop(lagging)
        others = [i for i in cluster.voter_ids if i != lagging]
        superstatic.connect(cluster.client_endpoints(others))
        try:
            table = superstatic.root("table", dict)
            for t in range(TRANSACTIONS):
                with superstatic.transaction():
                    for i in range(OBJECTS_PER_TRANSACTION):
                        table[f"k{t}.{i}"] = {"n": t * OBJECTS_PER_TRANSACTION + i, "tag": "x"}
        finally:
            superstatic.close()
        leader = cluster.leader()
        status = cluster.status(leader)
        assert int(status["applied"]) > TRANSACTIONS
        assert status["counters"]["snapshots_shipped"] == 0

        cluster.start_agent(lagging)
        cluster.wait_until(
            lambda: _caught_up(cluster, lagging, leader), f"{lagging} caught up", TIMEOUT_S
        )
        assert cluster.status(lagging)["counters"]["snapshots_installed"] >= 1
        leader = cluster.leader()
        # ~150 chunks of 2 KiB: without the follower's acks the shipment would stop after the
        # window's worth and it would never catch up.
        assert cluster.status(leader)["counters"]["snapshots_shipped"] >= 1

        # It replicates from the log after the snapshot, and restarts from the swapped tables.
        superstatic.connect(cluster.client_endpoints(others))
        try:
            superstatic.root("table", dict)["after"] = {"n": -1}
        finally:
            superstatic.close()
        cluster.wait_until(
            lambda: _caught_up(cluster, lagging, leader), f"{lagging} applied 'after'", TIMEOUT_S
        )
        cluster.stop(lagging)
        cluster.start_agent(lagging)
        cluster.wait_until(
            lambda: _caught_up(cluster, lagging, leader), f"{lagging} restarted", TIMEOUT_S
        )
        superstatic.connect(cluster.client_endpoints([lagging]))
        try:
            table = superstatic.root("table", dict)
            deadline = time.monotonic() + TIMEOUT_S
            while "after" not in table and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(table) == TRANSACTIONS * OBJECTS_PER_TRANSACTION + 1
            assert table["k29.19"]["n"] == TRANSACTIONS * OBJECTS_PER_TRANSACTION - 1
        finally:
            superstatic.close()
        applied = {i: int(cluster.status(i)["applied"]) for i in (leader, lagging)}
        for node_id in cluster.voter_ids:
            cluster.stop(node_id)
        assert applied[lagging] == applied[leader]
        want = _objects(cluster.agents[leader].data_dir)
        assert len(want) > TRANSACTIONS * OBJECTS_PER_TRANSACTION
        assert _objects(cluster.agents[lagging].data_dir) == want
