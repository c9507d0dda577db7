"""A joining agent takes its configuration from the cluster, never from its own flags
(issue 9, bug 1).

Real agents: four voters a-d and a joiner whose --peers names only one contact, the leader L
(a natural thing to type). The joiner is added as a learner and promoted. Then the three other
voters stop (kill -9, data kept): L and the joiner are 2 of 5 voters, so nothing may commit.
Writes are tried through both. Then L and the joiner are killed and the three restart: they are
a majority, elect a leader and commit. Every write that was acknowledged must be there. (The
three are killed rather than paused: a SIGSTOP'd agent whose peer queues fill aborts in libzmq
when it resumes, libzmq#3937/#4364, a transport issue of its own.)

Before the fix the joiner's core started from a configuration built from its --peers ([L]) and
replayed the CONF entries on top: it believed the voters were [L, joiner], became leader on L's
vote alone and acknowledged writes held by 2 of 5 voters, which the majority then overwrote.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import AgentError, RawClient, txn_extend

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable
from superstatic.tools import members as members_tool
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
# How long writes are tried while only L and the joiner run: several election timeouts
# (300-600 ms), enough for a joiner with the wrong configuration to win an election and commit.
WRITES_FOR_S = 8.0
TIMEOUT_MS_ATTEMPT = 1_000


def voters_seen_by(cluster: LocalCluster, node: str) -> set[str]:
    return {m["id"] for m in cluster.status(node)["members"] if m["voter"]}


def inspect_list(cluster: LocalCluster, node: str, root: str) -> list[Any]:
    reply = oneshot.request(
        cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": root}
    )
    assert reply["found"], (node, root)
    return list(reply["value"])


def test_a_joiner_with_one_contact_never_forms_a_minority_quorum(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=4) as cluster:
        cluster.start()
        lead = cluster.leader()
        others = [i for i in cluster.voter_ids if i != lead]
        setup = RawClient(cluster.agents[lead].client_endpoint)
        try:
            setup.open_session()
            assert setup.propose(setup.roots_txn({"w": "list"}))["outcome"] == "ok"
        finally:
            setup.close()

        cluster.add_learner("f", contacts=[lead])
        cluster.wait_until(
            lambda: "f" in {m["id"] for m in cluster.status(lead)["members"]},
            "the joiner to be added",
            TIMEOUT_S_WAIT,
        )
        # The leader promotes a learner only once it caught up (PROMOTE_LAG_ENTRIES_MAX).
        cluster.wait_until(
            lambda: cluster.status("f")["applied"] >= cluster.status(lead)["commit"],
            "the joiner to catch up",
            TIMEOUT_S_WAIT,
        )
        # `members promote` asks again while the leader answers busy (its view of f lagging).
        reply = members_tool.change(
            [cluster.agents[lead].client_endpoint], "promote", "f", "", int(TIMEOUT_S_WAIT * 1000)
        )
        all_voters = {*cluster.voter_ids, "f"}
        assert set(reply["voters"]) == all_voters, reply
        cluster.wait_until(
            lambda: cluster.status("f")["applied"] >= reply["index"],
            "the joiner to apply its promotion",
            TIMEOUT_S_WAIT,
        )
        seen_by_joiner = voters_seen_by(cluster, "f")

        # Sessions are opened while the cluster can still commit.
        clients = {node: RawClient(cluster.agents[node].client_endpoint) for node in (lead, "f")}
        acked: list[str] = []
        try:
            for client in clients.values():
                client.open_session()
            for node in others:
                cluster.kill(node)
            deadline = time.monotonic() + WRITES_FOR_S
            attempt = 0
            while time.monotonic() < deadline:
                node = (lead, "f")[attempt % 2]
                value = f"{node}-{attempt}"
                attempt += 1
                client = clients[node]
                try:
                    reply = client.propose(txn_extend("w", [value]), timeout_ms=TIMEOUT_MS_ATTEMPT)
                except (AgentError, Unavailable):
                    time.sleep(0.05)
                    continue
                if reply["outcome"] == "ok":
                    acked.append(value)
        finally:
            for client in clients.values():
                client.close()

        cluster.kill(lead)
        cluster.kill("f")
        for node in others:
            cluster.start_agent(node)
        survivor_lead = cluster.leader()
        after = RawClient(cluster.agents[survivor_lead].client_endpoint)
        try:
            after.open_session()
            # An entry of the new leader's term: whatever it did not hold is gone for good.
            assert after.propose(txn_extend("w", ["after"]))["outcome"] == "ok"
        finally:
            after.close()
        stored = inspect_list(cluster, survivor_lead, "w")
        lost = [value for value in acked if value not in stored]
        assert not lost, (
            f"acknowledged while 3 of 5 voters were down, then lost: {lost} (the joiner "
            f"believed the voters were {sorted(seen_by_joiner)})\n{cluster.logs()}"
        )
        assert seen_by_joiner == all_voters, (
            f"the joiner believes the voters are {sorted(seen_by_joiner)}, the leader "
            f"{sorted(all_voters)}"
        )
