"""A voter that lost its data directory must not come back as a fresh voter (issue 9, bug 6).

A voter restarted with an empty data directory could grant a second vote in a term it already
voted in. At start it asks its peers (PROBE) whether they heard from it before; if one did, it
refuses to start and says how to add it back. A voter of a new cluster that simply starts later
than the others is not refused: nobody heard from it (its core withholds votes until a leader
reaches it, as the cluster exists).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from superstatic_agent.storage import EXIT_START_REFUSED
from superstatic_bench.loadgen import RawClient

from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0


def test_a_voter_restarted_with_an_empty_data_dir_refuses_to_start(
    cluster: LocalCluster,
) -> None:
    lead = cluster.leader()
    client = RawClient(cluster.agents[lead].client_endpoint)
    try:
        client.open_session()
        assert client.propose(client.roots_txn({"w": "list"}))["outcome"] == "ok"
    finally:
        client.close()
    lost = next(i for i in cluster.agents if i != lead)
    cluster.stop(lost)
    shutil.rmtree(cluster.agents[lost].data_dir)
    spec = cluster.start_agent(lost)
    assert spec.process is not None
    try:
        status = spec.process.wait(TIMEOUT_S_WAIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the agent without its data kept running\n{cluster.logs()}") from None
    assert spec.log_path is not None
    log = spec.log_path.read_text()
    assert status == EXIT_START_REFUSED, log
    assert "lost its data" in log and f"superstatic members remove {lost}" in log, log
    # The others carry on.
    assert cluster.leader() in cluster.agents


def test_a_voter_starting_after_the_others_is_a_new_member(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start_agent("a")
        cluster.start_agent("b")
        lead = cluster.leader()
        client = RawClient(cluster.agents[lead].client_endpoint)
        try:
            client.open_session()
            assert client.propose(client.roots_txn({"w": "list"}))["outcome"] == "ok"
        finally:
            client.close()
        cluster.start_agent("c")
        target = int(cluster.status(lead)["commit"])
        cluster.wait_until(
            lambda: int(cluster.status("c")["applied"]) >= target,
            "the late voter to catch up",
            TIMEOUT_S_WAIT,
        )
        assert cluster.agents["c"].alive()
        # The cluster existed when it started: its core withheld votes until the leader
        # reached it (storage_lost), and votes again since.
        assert not cluster.status("c")["votes_withheld"]
        log = cluster.agents["c"].log_path
        assert log is not None and "no vote until a leader" in log.read_text()
