"""An agent that knows fewer rules, let in without a JOIN's check (docs/agent.md, "Rules
versions"; the rulesnew finding left open).

A leader adds a JOINer only once it said which rules it applies; an operator's MEMBERS
`add_learner` asks nothing, and an agent restarted on a member's data directory does not JOIN.
An agent with rules versions but a lower --rules-max (the documented cap, standing in for older
code that knows versions) let in either way must stop at the entry that moves the cluster past
it (RulesTooNew: `halted.reason` rules_unknown, naming both versions), never apply an entry
past it its own way, and carry on with the same state once it knows the version.

Three agents: two voters (a new cluster: RULES_NEWEST from its first entry) and the learner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent.rules import RULES_NEWEST
from superstatic_bench.loadgen import RawClient, txn_create_roots, txn_extend
from test_hostile_store import inspect

from superstatic.protocol import wire
from superstatic.tools.localcluster import LocalCluster, free_ports

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
TIMEOUT_MS_REQUEST = 30_000
CAPPED = ("--rules-max", "1")


def halted_of(cluster: LocalCluster, node: str) -> dict[str, Any] | None:
    halted: dict[str, Any] | None = cluster.status(node).get("halted")
    return halted


def write(cluster: LocalCluster, body: bytes | Callable[[str], bytes]) -> int:
    """Proposes `body` (or what it builds from the proposing client's id: rules 3 binds a
    created oid to its creator) through a fresh client of the leader's agent."""
    raw = RawClient(cluster.agents[cluster.leader()].client_endpoint)
    try:
        data = body if isinstance(body, bytes) else body(raw.client_id)
        reply = raw.propose(data, timeout_ms=TIMEOUT_MS_REQUEST)
    finally:
        raw.close()
    assert reply["outcome"] == "ok", reply
    return int(reply["index"])


def wait_halted_at_the_rules_entry(cluster: LocalCluster, node: str) -> dict[str, Any]:
    cluster.wait_until(
        lambda: (halted_of(cluster, node) or {}).get("reason") == "rules_unknown",
        f"{node}, which knows rules 1, to stop at the rules entry",
        TIMEOUT_S_WAIT,
    )
    halted = halted_of(cluster, node)
    assert halted is not None
    assert (halted["version"], halted["known"]) == (RULES_NEWEST, 1), halted
    assert f"rules version {RULES_NEWEST}" in halted["message"], halted
    assert "up to version 1" in halted["message"], halted
    # Nothing at or past the entry was applied by rules it does not know.
    assert cluster.status(node)["applied"] < halted["index"], halted
    return halted


def test_a_learner_added_by_members_add_learner_that_knows_less_stops_and_never_diverges(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path / "agents", size=2) as cluster:
        cluster.start()
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: cluster.status(node)["rules"]["version"] == RULES_NEWEST,
                f"{node} to run the newest rules",
                TIMEOUT_S_WAIT,
            )
        write(cluster, lambda client_id: txn_create_roots({"l": "list"}, client_id))
        write(cluster, txn_extend("l", [1]))

        # The operator adds the learner by address before its agent runs: no JOIN is decided,
        # so nobody asks which rules it applies. Started capped, it JOINs a member that
        # already lists it and is WELCOMEd, then replays the log from index 1.
        peer_port = free_ports(1)[0]
        address = f"tcp://127.0.0.1:{peer_port}"
        raw = RawClient(cluster.agents[cluster.leader()].client_endpoint)
        try:
            reply = raw.request(
                wire.FrameType.MEMBERS,
                {"op": "add_learner", "node": "d", "address": address},
                TIMEOUT_MS_REQUEST,
            )
        finally:
            raw.close()
        assert "d" in reply["learners"], reply
        cluster.agent_args = CAPPED  # read only by agents started from now on
        try:
            learner = cluster.add_learner("d", peer_endpoint=address)
        finally:
            cluster.agent_args = ()
        learner.extra_args = CAPPED  # kept across its restarts below
        halted = wait_halted_at_the_rules_entry(cluster, "d")
        assert learner.alive()

        # The voters go on without it.
        index = write(cluster, txn_extend("l", [2]))

        # Restarted on its own data directory, still capped: it does not JOIN the cluster it
        # is a member of, and it stops at the same entry again.
        cluster.stop("d")
        cluster.start_agent("d")
        again = wait_halted_at_the_rules_entry(cluster, "d")
        assert again["index"] == halted["index"], (halted, again)
        assert inspect(cluster, "d", "l") is None  # the root came after the rules entry

        # Knowing the version, it applies from where it stopped and holds what the voters do.
        cluster.stop("d")
        learner.extra_args = ()
        cluster.start_agent("d")
        cluster.wait_until(
            lambda: cluster.status("d")["applied"] >= index, "d to catch up", TIMEOUT_S_WAIT
        )
        assert halted_of(cluster, "d") is None
        assert cluster.status("d")["rules"]["version"] == RULES_NEWEST
        assert inspect(cluster, "d", "l") == inspect(cluster, cluster.leader(), "l") == [1, 2]
