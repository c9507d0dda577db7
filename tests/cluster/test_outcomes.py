"""Whether a write's outcome is known: the agent and the library must never say "not committed"
for an attempt that may already be in some log (issue 9, bug 2).

Real agents, the library's real Connection. The app talks to a follower only. The leader and the
other follower are paused (SIGSTOP) right after the follower forwarded the write to the leader:
the write sits in the paused leader's socket. The app's resend of the same (client, seq) then
reaches a follower that lost its leader (a pre-candidate, term unchanged), which refuses that
attempt. Once the app gave up, the two agents resume: the leader appends the forwarded proposal
and it commits. An app told "NOT committed" would retry with a new seq and apply it twice.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import RawClient, txn_extend
from support.null_replica import NullReplica

from superstatic.client import oneshot
from superstatic.client.connection import Connection
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
# The app's resend comes after the follower's election timeout (300-600 ms) has fired, so the
# resend meets a follower without a leader; the request gives up a few resends later.
TIMEOUT_MS_RESEND = 1_500
TIMEOUT_MS_REQUEST = 6_000


def inspect_list(cluster: LocalCluster, node: str, root: str) -> list[Any]:
    reply = oneshot.request(
        cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": root}
    )
    assert reply["found"], (node, root)
    return list(reply["value"])


def test_a_refused_resend_does_not_make_a_forwarded_write_not_committed(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        leader = cluster.leader()
        follower, other = (i for i in cluster.agents if i != leader)
        setup = RawClient(cluster.agents[leader].client_endpoint)
        try:
            setup.open_session()
            assert setup.propose(setup.roots_txn({"w": "list"}))["outcome"] == "ok"
        finally:
            setup.close()
        conn = Connection(
            [cluster.agents[follower].client_endpoint],
            NullReplica(),
            timeout_ms_request=TIMEOUT_MS_REQUEST,
            timeout_ms_resend=TIMEOUT_MS_RESEND,
            timeout_ms_close=500,
            keys=cluster.keys("app"),  # the suite's clusters are keyed
        )
        try:
            # The session is open and the connection up before anything is paused.
            assert conn.submit(txn_extend("w", ["warm-up"])).outcome == "ok"
            outcome: list[BaseException | str] = []

            def write() -> None:
                try:
                    outcome.append(conn.submit(txn_extend("w", ["x"])).outcome)
                except Unavailable as exc:
                    outcome.append(exc)

            cluster.pause(leader)
            cluster.pause(other)
            thread = threading.Thread(target=write)
            thread.start()
            thread.join(TIMEOUT_MS_REQUEST / 1000 + 30)
            assert not thread.is_alive(), "the write never returned"
            (result,) = outcome
            cluster.resume(leader)
            cluster.resume(other)
            # The forwarded proposal was in the paused leader's socket: it commits now.
            cluster.wait_until(
                lambda: "x" in inspect_list(cluster, follower, "w"),
                "the forwarded write to commit",
                TIMEOUT_S_WAIT,
            )
            assert inspect_list(cluster, follower, "w").count("x") == 1
            assert isinstance(result, Unavailable), f"expected no answer in time, got {result}"
            assert not result.outcome_known, (
                f"the library called a write that committed known-not-committed: {result}"
            )
            assert "UNKNOWN" in str(result)
        finally:
            conn.close()
