"""State-machine rules versions with real agents (docs/agent.md, "Rules versions").

1. A cluster created by this code runs the newest rules from its first entry, and a member
   whose code knows less (simulated by its --rules-max, the documented operator cap) stops
   applying at the entry that moves past it, says so in STATUS naming both versions, and
   carries on once it runs with the version known.
2. A cluster whose data directories were written at rules 1 (agents capped at 1, as data
   written before versions reads) stays at 1 while a member applies only 1, and moves up when
   the last member knows 2; the rule rules 2 changed then answers as rules 2.
3. A NEW cluster with one or two members held at --rules-max 1 stays at rules 1 (review 28:
   it moved to 2 and halted them), nobody halts, writes work; lifted, it moves to 2.
4. A new cluster created with a voter down stays at rules 1 (the silent voter might not
   know 2), its writes work meanwhile, and it moves to 2 once that voter is up and says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent.rules import RULES_NEWEST
from superstatic_agent.storage import EXIT_START_REFUSED
from superstatic_bench.loadgen import RawClient, txn_create_roots, txn_extend

from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0


def rules_of(cluster: LocalCluster, node: str) -> dict[str, Any]:
    status = cluster.status(node)
    return {"version": status["rules"]["version"], "max": status["rules"]["max"], **status}


def late_open_answers_dup(
    cluster: LocalCluster, node: str, write: bytes, client_id: str | None = None
) -> bool:
    """A client opens with seq 2 (its answer lost), again with seq 3, then a copy of the first
    open arrives: True when it is answered as the live session's open (rules 2), False when it
    replaced the session (rules 1). Then `write`, in the live session, must apply (rules 2), or
    meet session_expired (rules 1)."""
    raw = RawClient(cluster.agents[node].client_endpoint, client_id=client_id)
    try:
        raw.open_session(seq=2)
        live = raw.open_session(seq=3)
        late = raw.open_session(seq=2)  # the copy, proposed again under a new leader
        raw.session = live
        reply = raw.propose(write, seq=4)
        if late == live:
            assert reply["outcome"] == "ok", reply
        else:
            assert reply["outcome"] == "session_expired", reply
        return late == live
    finally:
        raw.close()


def test_a_new_cluster_runs_the_newest_rules_and_a_member_that_knows_less_stops(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        lead = cluster.leader()
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: rules_of(cluster, node)["version"] == RULES_NEWEST,
                f"{node} to run rules {RULES_NEWEST}",
                TIMEOUT_S_WAIT,
            )
        cid = os.urandom(16).hex()  # the client whose oids it creates (rules 3)
        assert late_open_answers_dup(cluster, lead, txn_create_roots({"l": "list"}, cid), cid)

        # A learner whose code knows only rules 1 joins: it replays the log from index 1
        # and must stop at the rules entry, not apply the cluster's later entries its way.
        cluster.agent_args = ("--rules-max", "1")  # read only by agents started from now on
        try:
            learner = cluster.add_learner("d", contacts=[lead])
        finally:
            cluster.agent_args = ()
        learner.extra_args = ("--rules-max", "1")  # kept across its restarts below
        cluster.wait_until(
            lambda: (cluster.status("d").get("halted") or {}).get("reason") == "rules_unknown",
            "the learner that knows rules 1 to stop",
            TIMEOUT_S_WAIT,
        )
        halted = cluster.status("d")["halted"]
        assert (halted["version"], halted["known"]) == (RULES_NEWEST, 1), halted
        assert f"rules version {RULES_NEWEST}" in halted["message"], halted
        assert "up to version 1" in halted["message"], halted
        assert cluster.status("d")["applied"] < halted["index"]
        # The others go on.
        raw = RawClient(cluster.agents[lead].client_endpoint)
        try:
            reply = raw.propose(txn_extend("l", [1]))
            assert reply["outcome"] == "ok", reply
            index = reply["index"]
        finally:
            raw.close()

        # Upgraded (the cap lifted), it applies from where it stopped.
        cluster.stop("d")
        learner.extra_args = ()
        cluster.start_agent("d")
        cluster.wait_until(
            lambda: cluster.status("d")["applied"] >= index,
            "the learner to catch up",
            TIMEOUT_S_WAIT,
        )
        assert rules_of(cluster, "d")["version"] == RULES_NEWEST
        assert cluster.status("d")["halted"] is None

        # A member whose store is at rules 2 started by code that knows only 1 (a rollback):
        # refused at start, naming both versions.
        voter = cluster.agents["c"]
        cluster.stop("c")
        voter.extra_args = ("--rules-max", "1")
        cluster.start_agent("c")
        assert voter.process is not None
        assert voter.process.wait(TIMEOUT_S_WAIT) == EXIT_START_REFUSED
        assert voter.log_path is not None
        logged = voter.log_path.read_text()
        assert (
            f"the stored state moves the cluster to state-machine rules version {RULES_NEWEST}"
            in logged
        )
        assert "knows rules up to version 1" in logged
        voter.extra_args = ()
        cluster.start_agent("c")
        cluster.wait_until(
            lambda: cluster.status("c")["applied"] >= index, "c to run again", TIMEOUT_S_WAIT
        )


def test_a_rules_1_cluster_moves_up_when_its_last_member_knows_rules_2(tmp_path: Path) -> None:
    capped = ("--rules-max", "1")
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        for spec in cluster.agents.values():
            spec.extra_args = capped
        cluster.start()
        lead = cluster.leader()
        raw = RawClient(cluster.agents[lead].client_endpoint)
        try:
            assert raw.propose(raw.roots_txn({"l": "list"}))["outcome"] == "ok"
        finally:
            raw.close()
        assert rules_of(cluster, lead)["version"] == 1
        assert not late_open_answers_dup(cluster, lead, txn_extend("l", [0]))  # rules 1

        # Two members upgraded: c still applies only rules 1, so the cluster stays there.
        for node in ("a", "b"):
            cluster.stop(node)
            cluster.agents[node].extra_args = ()
            cluster.start_agent(node)
        lead = cluster.leader()
        raw = RawClient(cluster.agents[lead].client_endpoint)
        try:
            index = raw.propose(txn_extend("l", [1]))["index"]
        finally:
            raw.close()
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: cluster.status(node)["applied"] >= index,
                f"{node} to apply the write",
                TIMEOUT_S_WAIT,
            )
            assert rules_of(cluster, node)["version"] == 1, node
        assert rules_of(cluster, "c")["max"] == 1

        # The last member upgraded: the leader moves the cluster to the newest rules.
        cluster.stop("c")
        cluster.agents["c"].extra_args = ()
        cluster.start_agent("c")
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: rules_of(cluster, node)["version"] == RULES_NEWEST,
                f"{node} to run rules {RULES_NEWEST}",
                TIMEOUT_S_WAIT,
            )
        assert late_open_answers_dup(cluster, cluster.leader(), txn_extend("l", [2]))


def write_ok(cluster: LocalCluster, write: bytes, client_id: str | None = None) -> int:
    raw = RawClient(cluster.agents[cluster.leader()].client_endpoint, client_id=client_id)
    try:
        reply = raw.propose(write)
    finally:
        raw.close()
    assert reply["outcome"] == "ok", reply
    return int(reply["index"])


def wait_applied_everywhere(cluster: LocalCluster, index: int) -> None:
    for node in cluster.voter_ids:
        cluster.wait_until(
            lambda node=node: cluster.status(node)["applied"] >= index,
            f"{node} to apply {index}",
            TIMEOUT_S_WAIT,
        )


@pytest.mark.parametrize("held", [("b",), ("b", "c")], ids=["one", "a_majority"])
def test_a_new_cluster_with_members_held_at_rules_1_stays_there_until_they_are_lifted(
    tmp_path: Path, held: tuple[str, ...]
) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        for node in held:
            cluster.agents[node].extra_args = ("--rules-max", "1")
        cluster.start()
        cid = os.urandom(16).hex()  # the client whose oids it creates (rules 3)
        index = write_ok(cluster, txn_create_roots({"l": "list"}, cid), cid)
        wait_applied_everywhere(cluster, index)
        for node in cluster.voter_ids:
            status = rules_of(cluster, node)
            assert status["halted"] is None, (node, status["halted"])
            assert status["version"] == 1, node
        assert not late_open_answers_dup(cluster, cluster.leader(), txn_extend("l", [0]))

        # The holds lifted (one restart each): the cluster moves to 2, nobody halts.
        for node in held:
            cluster.stop(node)
            cluster.agents[node].extra_args = ()
            cluster.start_agent(node)
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: rules_of(cluster, node)["version"] == RULES_NEWEST,
                f"{node} to run rules {RULES_NEWEST}",
                TIMEOUT_S_WAIT,
            )
        assert late_open_answers_dup(cluster, cluster.leader(), txn_extend("l", [1]))
        for node in cluster.voter_ids:
            assert cluster.status(node)["halted"] is None, node


def test_a_new_cluster_created_with_a_voter_down_stays_at_rules_1_until_it_is_up(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        for node in ("a", "b"):
            cluster.start_agent(node)
        # Its leader holds this write until c's word, or RULES_NEW_WAIT_MS: then it goes in
        # under the rules in force (c might be an agent that knows only rules 1).
        cid = os.urandom(16).hex()  # the client whose oids it creates (rules 3)
        index = write_ok(cluster, txn_create_roots({"l": "list"}, cid), cid)
        for node in ("a", "b"):
            assert rules_of(cluster, node)["version"] == 1, node
        lead = cluster.leader()
        log_path = cluster.agents[lead].log_path
        assert log_path is not None
        assert "members c did not say which rules they apply" in log_path.read_text()

        cluster.start_agent("c")  # knows rules 2: the cluster moves up the usual way
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: rules_of(cluster, node)["version"] == RULES_NEWEST,
                f"{node} to run rules {RULES_NEWEST}",
                TIMEOUT_S_WAIT,
            )
            assert cluster.status(node)["applied"] > index
        assert late_open_answers_dup(cluster, cluster.leader(), txn_extend("l", [1]))
