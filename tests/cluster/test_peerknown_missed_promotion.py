"""A voter that was down while a joiner was added, promoted and made leader catches up when it
comes back (glue simulation seeds 2458, 3321, 3744; docs/agent.md, "A member that missed a
promotion").

Real agents, with keys: three voters; one (the "stale" one) stops, data kept. A learner joins,
is promoted and takes the leadership; entries commit. The stale voter restarts: its
configuration (from its own log) does not list the new leader, whose frames it used to drop as a
stranger's, with no address to answer it at. It must follow that leader (its HELLO says where
it is), learn the configuration from its log and apply everything.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import AgentError, RawClient, txn_create_roots, txn_extend

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Error
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
TIMEOUT_MS_MEMBERS = 20_000
JOINER = "d"


def members_op(cluster: LocalCluster, leader: str, op: str) -> dict[str, Any]:
    """MEMBERS `op` of the joiner at `leader`, retried while the agent answers busy."""
    deadline = time.monotonic() + TIMEOUT_S_WAIT
    while True:
        try:
            return oneshot.request(
                cluster.agents[leader].client_endpoint,
                wire.FrameType.MEMBERS,
                {"op": op, "node": JOINER},
                timeout_ms=TIMEOUT_MS_MEMBERS,
                keys=cluster.keys("admin"),
            )
        except Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def write(cluster: LocalCluster, node: str, body: bytes, client_id: str | None = None) -> None:
    client = RawClient(cluster.agents[node].client_endpoint, client_id=client_id)
    try:
        client.open_session()
        assert client.propose(body)["outcome"] == "ok"
    finally:
        client.close()


def test_a_voter_that_missed_a_promotion_follows_the_new_leader(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        lead = cluster.leader()
        cid = os.urandom(16).hex()  # the client whose oids it creates (rules 3)
        write(cluster, lead, txn_create_roots({"w": "list"}, cid), cid)
        stale = sorted(i for i in cluster.voter_ids if i != lead)[0]
        cluster.stop(stale)

        cluster.add_learner(JOINER, contacts=[lead])
        # Promoted once caught up (as an operator does: docs/agent.md, Membership): a voter
        # that has no log state yet withholds its vote, and with the stale voter down the
        # other three would all be needed.
        cluster.wait_until(
            lambda: int(cluster.status(JOINER)["applied"]) >= int(cluster.status(lead)["commit"]),
            "the joiner to catch up",
            TIMEOUT_S_WAIT,
        )
        members_op(cluster, lead, "promote")
        members_op(cluster, lead, "transfer")
        cluster.wait_until(
            lambda: cluster.status(JOINER)["role"] == "leader",
            "the joiner to lead",
            TIMEOUT_S_WAIT,
        )
        for attempt in range(20):
            try:
                write(cluster, JOINER, txn_extend("w", [attempt]))
                break
            except (AgentError, Error):  # its first entry of the term may not have committed
                time.sleep(0.2)
        else:
            raise AssertionError(f"nothing committed through the joiner\n{cluster.logs()}")

        cluster.start_agent(stale)

        def caught_up() -> bool:
            status = cluster.status(stale)
            voters = {m["id"] for m in status["members"] if m["voter"]}
            commit = int(cluster.status(JOINER)["commit"])
            return (
                JOINER in voters and status["leader"] == JOINER and int(status["applied"]) >= commit
            )

        cluster.wait_until(caught_up, "the stale voter to follow the joiner", TIMEOUT_S_WAIT)
        assert cluster.status(stale)["counters"]["unlisted_leaders"] == 1
        reply = oneshot.request(
            cluster.agents[stale].client_endpoint,
            wire.FrameType.INSPECT,
            {"root": "w"},
            keys=cluster.keys("admin"),
        )
        assert reply["found"] and len(reply["value"]) >= 1, reply
