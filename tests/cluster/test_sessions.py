"""Sessions as in the Raft thesis 6.3 (issue 9, bug 3): log time comes from the leader alone,
bounded against clock jumps, and an expired session is refused, never silently reopened.

Real agents. One agent's wall clock is an hour ahead (--clock-offset-ms, the test knob that
stands in for libfaketime). Client P1 writes "x" and, as after a lost reply, retries the same
(client, seq) after P2 wrote "y" through the skewed agent. Before the fix the skewed agent
stamped its own clock into the log, the log time jumped an hour, every session expired, and the
retry reopened P1's session and applied "x" a second time: ['x', 'y', 'x'].
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import RawClient, txn_extend

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
HOUR_MS = 3_600_000
SESSION_TTL_MS = 60_000


def inspect_list(cluster: LocalCluster, node: str, root: str) -> list[Any]:
    reply = oneshot.request(
        cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": root}
    )
    assert reply["found"], (node, root)
    return list(reply["value"])


def skewed_cluster(tmp_path: Path, skewed: str, *agent_args: str) -> LocalCluster:
    cluster = LocalCluster(tmp_path / "agents", size=3, agent_args=agent_args)
    cluster.agents[skewed].extra_args = ["--clock-offset-ms", str(HOUR_MS)]
    return cluster


def transfer(cluster: LocalCluster, to: str) -> None:
    lead = cluster.leader()
    reply = oneshot.request(
        cluster.agents[lead].client_endpoint,
        wire.FrameType.MEMBERS,
        {"op": "transfer", "node": to},
        timeout_ms=int(TIMEOUT_S_WAIT * 1000),
    )
    assert reply["leader"] == to, reply
    assert cluster.leader() == to


def retry_after_a_write_through(
    cluster: LocalCluster, writer_agent: str, lead_to: str | None = None
) -> None:
    """P1 writes "x" through the leader; (leadership moves to `lead_to`;) P2 writes "y"
    through `writer_agent`; P1 retries "x" with the same seq. The retry must be answered as a
    duplicate, never applied again."""
    lead = cluster.leader()
    p1 = RawClient(cluster.agents[lead].client_endpoint)
    p2 = RawClient(cluster.agents[writer_agent].client_endpoint)
    try:
        p1.open_session()
        assert p1.propose(p1.roots_txn({"w": "list"}))["outcome"] == "ok"
        x_seq = p1.take_seq()
        first = p1.propose(txn_extend("w", ["x"]), seq=x_seq)
        assert first["outcome"] == "ok", first
        if lead_to is not None:
            transfer(cluster, lead_to)
        p2.open_session()
        assert p2.propose(txn_extend("w", ["y"]))["outcome"] == "ok"
        retry = p1.propose(txn_extend("w", ["x"]), seq=x_seq)  # as after a lost reply
        cluster.wait_until(
            lambda: len(inspect_list(cluster, lead, "w")) >= 2, "both writes", TIMEOUT_S_WAIT
        )
        stored = inspect_list(cluster, lead, "w")
        assert stored == ["x", "y"], f"the retry was applied again: {stored}"
        assert retry["dup"] and retry["index"] == first["index"], retry
    finally:
        p1.close()
        p2.close()


def test_a_follower_whose_clock_is_an_hour_ahead_expires_no_session(tmp_path: Path) -> None:
    with skewed_cluster(tmp_path, "c", "--session-ttl-ms", str(SESSION_TTL_MS)) as cluster:
        cluster.start_agent("a")
        cluster.start_agent("b")
        lead = cluster.leader()
        cluster.start_agent("c")  # after a leader exists: c follows
        cluster.wait_until(lambda: cluster.status("c")["leader"] == lead, "c following", 30)
        retry_after_a_write_through(cluster, "c")


def test_a_leader_whose_clock_is_an_hour_ahead_is_clamped(tmp_path: Path) -> None:
    """P1's write is stamped by a leader with a right clock; then the agent whose clock is an
    hour ahead becomes leader and stamps the next entries: at most log_time_skew_ms_max ahead."""
    with skewed_cluster(tmp_path, "c", "--session-ttl-ms", str(SESSION_TTL_MS)) as cluster:
        cluster.start()
        if cluster.leader() == "c":
            transfer(cluster, "a")
        retry_after_a_write_through(cluster, "c", lead_to="c")


def test_an_expired_session_is_refused_never_reopened(tmp_path: Path) -> None:
    ttl_ms = 2_000
    with LocalCluster(
        tmp_path / "agents", size=3, agent_args=("--session-ttl-ms", str(ttl_ms))
    ) as cluster:
        cluster.start()
        lead = cluster.leader()
        p1 = RawClient(cluster.agents[lead].client_endpoint)
        p2 = RawClient(cluster.agents[lead].client_endpoint)
        try:
            p1.open_session()
            assert p1.propose(p1.roots_txn({"w": "list"}))["outcome"] == "ok"
            x_seq = p1.take_seq()
            assert p1.propose(txn_extend("w", ["x"]), seq=x_seq)["outcome"] == "ok"
            time.sleep(2 * ttl_ms / 1000)  # P1 is cut off past its session's ttl
            p2.open_session()  # log time moves on (stamped by the leader)
            retry = p1.propose(txn_extend("w", ["x"]), seq=x_seq)
            assert retry["outcome"] == "session_expired", retry
            assert inspect_list(cluster, lead, "w") == ["x"]
            # A new session works.
            p1.open_session()
            assert p1.propose(txn_extend("w", ["x2"]))["outcome"] == "ok"
            assert inspect_list(cluster, lead, "w") == ["x", "x2"]
        finally:
            p1.close()
            p2.close()
