"""`superstatic members` against real agents: a learner promoted, leadership transferred, the
leader itself removed while entries keep committing, and requests the leader must refuse."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from superstatic_bench.loadgen import AgentError, RawClient, txn_create_roots, txn_extend

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable
from superstatic.tools.localcluster import LocalCluster, free_ports

pytestmark = pytest.mark.cluster

SUPERSTATIC = [
    sys.executable,
    "-c",
    "import sys; from superstatic.tools.cli import main; sys.exit(main())",
]
TIMEOUT_S_COMMAND = 60.0
TIMEOUT_S_WAIT = 30.0
TIMEOUT_MS_ATTEMPT = 1_500
TIMEOUT_MS_MEMBERS = "20000"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SUPERSTATIC, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S_COMMAND,
        check=False,
    )


def members(cluster: LocalCluster, *args: str, ids: list[str] | None = None) -> str:
    """Runs `superstatic members ...` with every live agent (or `ids`) in --agent; must work."""
    chosen = ids if ids is not None else [a.id for a in cluster.agents.values() if a.alive()]
    endpoints = ",".join(cluster.client_endpoints(chosen))
    done = run("members", *args, "--agent", endpoints, "--timeout-ms", TIMEOUT_MS_MEMBERS)
    assert done.returncode == 0, f"{args}: {done.stderr}\n{cluster.logs()}"
    return done.stdout


def refused(endpoint: str, *args: str) -> str:
    """Runs a `superstatic members` command that must fail; returns what it printed."""
    done = run("members", *args, "--agent", endpoint, "--timeout-ms", TIMEOUT_MS_MEMBERS)
    assert done.returncode != 0, f"{args} was accepted: {done.stdout}"
    return done.stderr


class Committer:
    """One client session proposing through whichever live agent answers (same seq on retry)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.client_id = os.urandom(16).hex()
        self.seq = 0
        self.session = 0  # the index of the session's "open" entry, once opened

    def commit(self, body: bytes, kind: str = "txn") -> dict[str, Any]:
        if self.session == 0 and kind == "txn":
            self.session = self.commit(b"", kind="open")["index"]
        self.seq += 1
        live = [a for a in self.cluster.agents.values() if a.alive()]
        deadline = time.monotonic() + TIMEOUT_S_WAIT
        attempt = 0
        while time.monotonic() < deadline:
            agent = live[attempt % len(live)]
            attempt += 1
            client = RawClient(
                agent.client_endpoint, client_id=self.client_id, session=self.session
            )
            try:
                body_map = client.propose_body(body, self.seq, kind=kind)
                reply = client.wait(client.send(wire.FrameType.PROPOSE, body_map), 1_500)
            except (AgentError, Unavailable):
                time.sleep(0.05)
                continue
            finally:
                client.close()
            assert reply["outcome"] == "ok", reply
            return reply
        raise AssertionError(f"seq {self.seq} never committed\n{self.cluster.logs()}")


def listed(cluster: LocalCluster, node: str) -> list[Any]:
    reply = oneshot.request(
        cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": "m"}
    )
    assert reply["found"], node
    return list(reply["value"])


def voters(cluster: LocalCluster, node: str) -> list[str]:
    return sorted(m["id"] for m in cluster.status(node)["members"] if m["voter"])


@pytest.fixture
def cluster_of(tmp_path: Path) -> Iterator[Callable[[int], LocalCluster]]:
    made: list[LocalCluster] = []

    def make(size: int) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"agents{len(made)}", size=size)
        made.append(cluster)
        cluster.start()
        cluster.leader()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


def test_promote_transfer_and_remove_the_leader(cluster_of: Callable[[int], LocalCluster]) -> None:
    cluster = cluster_of(3)
    writer = Committer(cluster)
    writer.commit(txn_create_roots({"m": "list"}, writer.client_id))
    for value in range(10):
        writer.commit(txn_extend("m", [value]))

    # A learner joins by itself (--listen) and catches up; the operator promotes it.
    cluster.add_learner("d")
    leader = cluster.leader()
    cluster.wait_until(
        lambda: int(cluster.status("d")["applied"]) >= int(cluster.status(leader)["commit"]),
        "the learner caught up",
        TIMEOUT_S_WAIT,
    )
    out = members(cluster, "promote", "d")
    assert "promote d: applied at index" in out and "voters a,b,c,d" in out, out
    assert voters(cluster, cluster.leader()) == ["a", "b", "c", "d"]
    writer.commit(txn_extend("m", [10]))

    # A follower does not act: it names the leader, and the command follows the hint.
    follower = next(n for n in "abcd" if n != cluster.leader())
    client = RawClient(cluster.agents[follower].client_endpoint)
    try:
        with pytest.raises(AgentError) as info:
            client.request(wire.FrameType.MEMBERS, {"op": "promote", "node": "d"}, 5_000)
        assert info.value.code == "not_leader" and info.value.leader == cluster.leader()
    finally:
        client.close()

    # Leadership moves to the new voter, then to a (asked through a follower's agent first).
    out = members(cluster, "transfer", "d")
    assert "leader is now d" in out, out
    assert cluster.leader() == "d"
    out = members(cluster, "transfer", "a", ids=["b", "c", "d", "a"])
    assert "leader is now a" in out, out
    assert cluster.leader() == "a"
    writer.commit(txn_extend("m", [11]))

    # The leader removes itself: it steps down once the removal commits, the others elect.
    out = members(cluster, "remove", "a")
    assert "remove a: applied" in out and "voters b,c,d" in out, out
    cluster.stop("a")  # a removed agent takes no further part (thesis 4.2.3)
    new_leader = cluster.leader()
    assert new_leader in ("b", "c", "d")
    for value in range(12, 20):
        writer.commit(txn_extend("m", [value]))
    assert voters(cluster, new_leader) == ["b", "c", "d"]
    for node in ("b", "c", "d"):
        cluster.wait_until(
            lambda n=node: listed(cluster, n) == list(range(20)), f"{node} applied", TIMEOUT_S_WAIT
        )

    # The members table is status's, from the leader (match and lag included).
    table = members(cluster, "list")
    rows = {
        line.split()[0]: line
        for line in table.splitlines()
        if len(line.split()) == 7 and line.split()[2] in ("voter", "learner")
    }
    assert set(rows) == {"b", "c", "d"}, table
    assert "leader" in rows[new_leader] and all("voter" in row for row in rows.values()), table


def test_bad_requests_are_refused_and_a_learner_comes_and_goes(
    cluster_of: Callable[[int], LocalCluster],
) -> None:
    cluster = cluster_of(1)
    endpoint = cluster.agents["a"].client_endpoint
    assert "zz is not a member" in refused(endpoint, "promote", "zz")
    assert "zz is not a member" in refused(endpoint, "remove", "zz")
    assert "a is already a voter" in refused(endpoint, "promote", "a")
    assert "cannot remove the last voter" in refused(endpoint, "remove", "a")
    assert "zz is not a voter" in refused(endpoint, "transfer", "zz")
    assert "needs --address" in refused(endpoint, "add-learner", "e")
    assert "peer endpoint" in refused(endpoint, "add-learner", "e", "--address", "http://x:1")

    client = RawClient(endpoint)
    try:
        for body in (
            {"op": 5, "node": "a"},
            {"op": "promote"},
            {"op": "remove", "node": "a" * 500},
            {"op": "promote", "node": "b", "address": "tcp://127.0.0.1:1"},
        ):
            with pytest.raises(AgentError) as info:
                client.request(wire.FrameType.MEMBERS, body, 5_000)
            assert info.value.code == "bad_request", (body, info.value)
        # Not even a frame: dropped; a frame of an unknown type: refused; the agent serves on.
        client.sock.send(b"\xff\x00garbage")
        client.sock.send(cbor2.dumps([wire.PROTOCOL_VERSION, 99, 77, {"op": "remove"}]))
        with pytest.raises(AgentError, match="unknown frame type"):
            client.wait(77, 5_000)
        # PING answers who leads (docs/architecture.md): the agent serves on.
        assert set(client.request(wire.FrameType.PING, {}, 5_000)) == {"leader"}
    finally:
        client.close()

    # Nothing changed, and writes still commit.
    assert [m["id"] for m in cluster.status("a")["members"]] == ["a"]

    # A learner added by address (its agent need not run yet: learners never count for commit),
    # then removed again.
    port = free_ports(1)[0]
    out = members(cluster, "add-learner", "e", "--address", f"tcp://127.0.0.1:{port}")
    assert "add_learner e: applied" in out and "learners e" in out, out
    # Its agent is not running: promoting it would let a voter that holds nothing count towards
    # the quorum. The leader answers busy (the command retries) until --timeout-ms, and says why.
    done = run("members", "promote", "e", "--agent", endpoint, "--timeout-ms", "1500")
    assert done.returncode != 0, f"a learner that never answered was promoted: {done.stdout}"
    assert "has not caught up" in done.stderr and "PROMOTE_LAG_ENTRIES_MAX" in done.stderr, (
        done.stderr
    )
    assert voters(cluster, "a") == ["a"]
    assert "e is already a member" in refused(
        endpoint, "add-learner", "e", "--address", f"tcp://127.0.0.1:{port}"
    )
    assert "learners -" in members(cluster, "remove", "e")
    writer = Committer(cluster)
    writer.commit(txn_create_roots({"m": "list"}, writer.client_id))
    writer.commit(txn_extend("m", [1]))
    assert listed(cluster, "a") == [1]
    assert "a" in members(cluster, "list")


def test_a_removed_follower_learns_its_removal(cluster_of: Callable[[int], LocalCluster]) -> None:
    # Issue 9, bug 6a, at the agent: the core keeps replicating to a departing member until it
    # holds its removal, so the agents must keep the connection to it (both ways) meanwhile.
    cluster = cluster_of(3)
    writer = Committer(cluster)
    writer.commit(txn_create_roots({"m": "list"}, writer.client_id))
    leader = cluster.leader()
    removed = next(n for n in "abc" if n != leader)
    out = members(cluster, "remove", removed)
    assert f"remove {removed}: applied" in out, out
    cluster.wait_until(
        lambda: removed not in [m["id"] for m in cluster.status(removed)["members"]],
        f"{removed} learned its removal",
        TIMEOUT_S_WAIT,
    )
    writer.commit(txn_extend("m", [1]))
    assert cluster.status(removed)["role"] != "leader"
