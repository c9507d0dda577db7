"""State-machine rules 3 (object ids bound to their creator, agent/oidmarks.py) with real
agents (docs/virtual-heap.md section 7, docs/agent.md "Rules versions").

1. A new cluster with a member held at --rules-max 2 runs rules 2: an oid that is not its
   creator's (`n.l`, what raw tools made) is created; once the member is lifted the cluster
   moves to 3 and such an oid is refused, the client's own created.
2. The marks are replicated state: a follower that catches up by a peer snapshot holds the same
   `oid_marks` records as the others, every store keeps them across a restart of the whole
   cluster, and after it a client id with the creator's prefix is still refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lmdb
import pytest
from superstatic_agent.oidmarks import oid_for
from superstatic_agent.storage import DBS_MAX, open_dbs
from superstatic_bench.loadgen import RawClient, new_oid, txn_create_roots

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
LAG_ENTRIES_MAX = 5  # --snapshot-lag-entries-max: a follower this far behind gets a snapshot
WRITES_WHILE_DOWN = 20  # far more entries than LAG_ENTRIES_MAX


class Client:
    """One client id's requests through the current leader. Its seqs go on across the
    RawClients it makes (a new one would open with seq 1: stale for the live session)."""

    def __init__(self, cluster: LocalCluster, client_id: str | None = None) -> None:
        self.cluster = cluster
        self.client_id = client_id or os.urandom(16).hex()
        self.next_seq = 1

    def propose_body(self, body: bytes) -> dict[str, Any]:
        endpoint = self.cluster.agents[self.cluster.leader()].client_endpoint
        raw = RawClient(endpoint, client_id=self.client_id)
        raw.next_seq = self.next_seq
        try:
            return raw.propose(body)
        finally:
            self.next_seq = raw.next_seq
            raw.close()

    def propose(self, wire_ops: list[Any]) -> dict[str, Any]:
        return self.propose_body(ops.encode_txn({}, wire_ops))


def wait_rules(cluster: LocalCluster, version: int) -> None:
    for node in cluster.voter_ids:
        cluster.wait_until(
            lambda node=node: cluster.status(node)["rules"]["version"] == version,
            f"{node} to run rules {version}",
            TIMEOUT_S_WAIT,
        )


def marks_of(data_dir: Path) -> dict[bytes, bytes]:
    """The oid_marks records of a stopped agent's store (as open_dbs maps its tables)."""
    env = lmdb.open(str(data_dir), max_dbs=DBS_MAX)
    try:
        dbs = open_dbs(env)
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=dbs.oid_marks)}
    finally:
        env.close()


def test_a_cluster_with_a_member_held_at_rules_2_binds_oids_once_every_member_knows_3(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.agents["c"].extra_args = ("--rules-max", "2")
        cluster.start()
        creator = Client(cluster)
        reply = creator.propose_body(txn_create_roots({"l": "list"}))  # oid n.l
        assert reply["outcome"] == "ok", reply
        wait_rules(cluster, 2)

        cluster.stop("c")
        cluster.agents["c"].extra_args = ()
        cluster.start_agent("c")
        wait_rules(cluster, 3)
        refused = creator.propose([["new", "n.m", "list", []]])
        assert refused["outcome"] == "error", refused
        assert "rules 3" in refused["error"], refused
        own = new_oid(creator.client_id)
        made = creator.propose([["new", own, "list", []], ["set", "@roots", "m", Ref(own)]])
        assert made["outcome"] == "ok", made


def test_the_marks_travel_in_a_peer_snapshot_and_survive_a_restart(tmp_path: Path) -> None:
    flags = ("--snapshot-lag-entries-max", str(LAG_ENTRIES_MAX))
    with LocalCluster(tmp_path / "agents", size=3, agent_args=flags) as cluster:
        cluster.start()
        wait_rules(cluster, 3)
        lagging = next(n for n in cluster.voter_ids if n != cluster.leader())
        cluster.stop(lagging)
        creator = Client(cluster)
        reply = creator.propose_body(txn_create_roots({"l": "list"}, creator.client_id))
        assert reply["outcome"] == "ok", reply
        for i in range(WRITES_WHILE_DOWN):
            own = new_oid(creator.client_id)
            made = creator.propose([["new", own, "list", [i]], ["extend", own, [i]]])
            assert made["outcome"] == "ok", made
        applied = int(cluster.status(cluster.leader())["applied"])
        cluster.start_agent(lagging)
        cluster.wait_until(
            lambda: int(cluster.status(lagging)["applied"]) >= applied,
            f"{lagging} to catch up",
            TIMEOUT_S_WAIT,
        )
        assert cluster.status(lagging)["counters"]["snapshots_installed"] >= 1

        for node in cluster.voter_ids:
            cluster.stop(node)
        marks = {node: marks_of(cluster.agents[node].data_dir) for node in cluster.voter_ids}
        assert creator.client_id[:16].encode() in marks[lagging]
        assert all(m == marks[lagging] for m in marks.values()), marks

        for node in cluster.voter_ids:
            cluster.start_agent(node)
        # The creator's prefix, another client id.
        twin = Client(cluster, creator.client_id[:16] + "f" * 16)
        refused = twin.propose([["new", oid_for(twin.client_id, 1 << 20), "list", []]])
        assert refused["outcome"] == "error", refused
        assert "another client id" in refused["error"], refused
        own = new_oid(creator.client_id)
        assert creator.propose([["new", own, "list", []]])["outcome"] == "ok"
