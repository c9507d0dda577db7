"""Issue 8, part B through real agents: hostile writes never take the cluster down.

Each test is a reproduction from the issue that killed agents on the old code:
1. a committed body reading a version too long to print (every agent died, then crash-looped);
3. records larger than the stream can carry (a subscriber made the agent die);
6. a full store (lmdb.MapFullError killed every agent at the same index);
8. a flipped byte in a follower's data file (it served a different value, silently).
Clients speak the wire protocol directly (RawClient), like tests/cluster/test_agent.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from superstatic_bench.loadgen import AgentError, RawClient, txn_create_roots, txn_extend

from superstatic.client import oneshot
from superstatic.protocol import codec, wire
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
TIMEOUT_MS_REQUEST = 20_000


def inspect(cluster: LocalCluster, node: str, root: str) -> Any:
    """The root's value at `node`; None while it has no such root (catching up)."""
    reply = oneshot.request(
        cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": root}
    )
    return reply["value"] if reply["found"] else None


def all_alive(cluster: LocalCluster) -> None:
    for spec in cluster.agents.values():
        assert spec.alive(), f"agent {spec.id} died\n{cluster.logs()}"


def commit(client: RawClient, body: bytes) -> dict[str, Any]:
    return client.propose(body, timeout_ms=TIMEOUT_MS_REQUEST)


@pytest.fixture
def raw(cluster: LocalCluster) -> Iterator[RawClient]:
    client = RawClient(cluster.agents[cluster.leader()].client_endpoint)
    try:
        yield client
    finally:
        client.close()


def test_a_version_too_long_to_print_is_an_error_outcome_everywhere(
    cluster: LocalCluster, raw: RawClient
) -> None:
    """Reproduction 1: the conflict message formatted -(10**5000); all three agents died and
    crash-looped replaying the entry. Now: an "error" outcome, every agent stays up and keeps
    committing, and an agent replaying the whole log from index 1 applies it cleanly."""
    assert commit(raw, txn_create_roots({"l": "list"}))["outcome"] == "ok"
    hostile = codec.dumps({"r": {"n.l": -(10**5000)}, "o": [["extend", "n.l", ["never"]]]})
    assert len(hostile) < 4_096  # a 2 KB write
    reply = commit(raw, hostile)
    assert reply["outcome"] == "error", reply
    assert "0000000000" not in reply["error"] and len(reply["error"]) < 300, reply
    assert commit(raw, txn_extend("l", ["after"]))["outcome"] == "ok"
    all_alive(cluster)
    for node in cluster.agents:
        cluster.wait_until(
            lambda node=node: inspect(cluster, node, "l") == ["after"],
            f"{node} applied the entries after the hostile one",
            TIMEOUT_S_WAIT,
        )
    # Replay: a learner joins and applies the whole log from index 1 (never compacted here),
    # the hostile entry included; then every agent restarts cleanly and commits again.
    cluster.add_learner("d")
    cluster.wait_until(
        lambda: inspect(cluster, "d", "l") == ["after"], "the learner replaying", TIMEOUT_S_WAIT
    )
    for node in list(cluster.agents):
        cluster.stop(node)
    for node in list(cluster.agents):
        cluster.start_agent(node)
    leader = cluster.leader()
    again = RawClient(cluster.agents[leader].client_endpoint)
    try:
        deadline = time.monotonic() + TIMEOUT_S_WAIT
        while True:
            try:
                assert commit(again, txn_extend("l", ["restarted"]))["outcome"] == "ok"
                break
            except AgentError:
                assert time.monotonic() < deadline, cluster.logs()
                time.sleep(0.2)
    finally:
        again.close()
    all_alive(cluster)
    for node in cluster.agents:
        assert cluster.status(node)["halted"] is None


def snapshot_of(endpoint: str) -> dict[str, bytes]:
    """SUBSCRIBE from 0 on a fresh socket and read the snapshot: {oid: record bytes}."""
    client = RawClient(endpoint)
    try:
        req = client.send(wire.FrameType.SUBSCRIBE, {"from": 0})
        nodes: dict[str, bytes] = {}
        deadline = time.monotonic() + TIMEOUT_S_WAIT
        while time.monotonic() < deadline:
            frame = client.recv(1_000)
            if frame is None or frame.req_id != req:
                continue
            if frame.type is wire.FrameType.ERROR:
                raise AgentError(frame.body["code"], frame.body["message"], None)
            if frame.type is wire.FrameType.SNAPSHOT:
                nodes.update({oid: record for oid, record in frame.body["nodes"]})
                if frame.body["last"]:
                    return nodes
        raise AssertionError(f"no complete snapshot from {endpoint}")
    finally:
        client.close()


def test_records_larger_than_a_stream_frame_are_refused(
    cluster: LocalCluster, raw: RawClient
) -> None:
    """Reproduction 3: three appends of 6 MB (each under the 8 MiB body limit) were accepted;
    the next app to subscribe made the agent raise in the snapshot stream and die. Now the
    append that would take the list past record_bytes_max is refused naming the limit, and
    every agent streams a snapshot to a new subscriber."""
    assert commit(raw, txn_create_roots({"l": "list"}))["outcome"] == "ok"
    big = "x" * 6_000_000
    assert commit(raw, txn_extend("l", [big]))["outcome"] == "ok"
    for _ in range(2):
        reply = commit(raw, txn_extend("l", [big]))
        assert reply["outcome"] == "error", reply
        assert "record_bytes_max=8388608" in reply["error"], reply
    assert commit(raw, txn_extend("l", ["small"]))["outcome"] == "ok"
    for node, spec in cluster.agents.items():
        cluster.wait_until(
            lambda node=node: cluster.status(node)["applied"] >= 4, f"{node} applied", 30
        )
        nodes = snapshot_of(spec.client_endpoint)
        assert max(len(record) for record in nodes.values()) <= 8 << 20
        assert len(nodes["n.l"]) > 6_000_000
    all_alive(cluster)
