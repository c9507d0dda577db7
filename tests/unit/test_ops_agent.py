"""One real agent (a Server in a thread of this process) with `--metrics`: the Prometheus text,
the status JSON, health, refusals of the HTTP port, STATUS `recent`, INSPECT through the
client port, and the agent refusing to start on a taken port. Bound to 127.0.0.1 on free
ports; stopped in teardown."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from superstatic_agent.config import AgentConfig
from superstatic_agent.http_status import MetricsBindError
from superstatic_agent.server import Server
from superstatic_bench.loadgen import root_oid, txn_extend
from support.agent_thread import TIMEOUT_MS
from support.agent_thread import Agent as ThreadAgent

from superstatic.protocol import ops, wire
from superstatic.tools.localcluster import free_ports

TIMEOUT_S_HTTP = 10.0
# The loop publishes every metrics.PUBLISH_MS; wait for fresh figures this long at most.
TIMEOUT_S_FIGURES = 20.0


class Agent(ThreadAgent):
    """The in-thread agent with `--metrics` on a free port of its own."""

    def __init__(self, data_dir: Path) -> None:
        (http_port,) = free_ports(1)
        self.http = f"http://127.0.0.1:{http_port}"
        super().__init__(data_dir, metrics_endpoint=f"127.0.0.1:{http_port}")

    def inspect(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.request(wire.FrameType.INSPECT, body, timeout_ms=TIMEOUT_MS)

    def get(self, path: str, method: str = "GET") -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.http + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S_HTTP) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, content_type, body = self.get("/metrics")
        assert code == 200 and content_type.startswith("text/plain"), (code, content_type)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path / "a")
    try:
        yield a
    finally:
        a.stop()


def wait_for(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT_S_FIGURES
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def write_some(agent: Agent, count: int) -> None:
    raw = agent.client
    assert raw.propose(raw.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    oid = agent.inspect({"list": True})["roots"][0]["oid"]
    assert oid == root_oid("l")
    for i in range(count):
        reply = raw.propose(txn_extend("l", [i]), timeout_ms=TIMEOUT_MS)
        assert reply["outcome"] == "ok", reply
    # One that conflicts: it read a version of the list that is long gone.
    stale = ops.encode_txn({oid: 1}, [["extend", oid, ["late"]]])
    assert raw.propose(stale, timeout_ms=TIMEOUT_MS)["outcome"] == "conflict"


def test_metrics_count_what_happened(agent: Agent) -> None:
    write_some(agent, 20)
    agent.client.sock.send(b"\x00garbage")  # a refused frame, counted by reason

    def fresh() -> Any:
        m = agent.metrics()
        ok = m.get(("superstatic_proposal_replies_total", (("outcome", "ok"),)), 0)
        refused = m.get(("superstatic_frames_refused_total", (("reason", "client_bad_frame"),)))
        return m if ok >= 21 and refused else None

    m = wait_for(fresh, "the writes in /metrics")
    assert m[("superstatic_is_leader", ())] == 1
    assert m[("superstatic_term", ())] >= 1
    assert m[("superstatic_entries_applied_total", (("outcome", "conflict"),))] == 1
    assert m[("superstatic_proposal_replies_total", (("outcome", "conflict"),))] == 1
    assert m[("superstatic_commit_latency_seconds_count", ())] >= 22
    assert m[("superstatic_append_batch_entries_count", ())] >= 1
    assert m[("superstatic_fsync_seconds_count", ())] >= 1  # --fsync on: each write synced
    assert m[("superstatic_member_lag_entries", (("member", "a"),))] == 0
    assert m[("superstatic_sessions", ())] >= 1
    assert m[("superstatic_store_used_bytes", ())] > 0
    assert m[("superstatic_applied_index", ())] == m[("superstatic_commit_index", ())]
    assert m[("superstatic_status_age_seconds", ())] < TIMEOUT_S_FIGURES


def test_status_json_health_and_refusals(agent: Agent) -> None:
    write_some(agent, 3)
    wait_for(lambda: json.loads(agent.get("/status.json")[2]).get("roots"), "roots on the page")
    status = json.loads(agent.get("/status.json")[2])
    assert status["agent"] == "a" and status["status"]["leader"] == "a"
    assert [r["name"] for r in status["roots"]["roots"]] == ["l"]
    assert status["roots"]["roots"][0]["items"] == 3  # the conflicting write added nothing
    assert any(e["text"] == "a became leader in term 1" for e in status["events"])
    code, content_type, page = agent.get("/")
    assert code == 200 and content_type.startswith("text/html")
    # Offline: nothing but this agent's /status.json is fetched; no external asset.
    assert b"http://" not in page and b"https://" not in page and b'fetch("/status.json"' in page
    assert agent.get("/healthz")[:2] == (200, "text/plain; charset=utf-8")
    assert agent.get("/nope")[0] == 404
    assert agent.get("/", method="HEAD")[0] == 200
    assert agent.get("/metrics", method="POST")[0] == 501  # read-only: GET and HEAD only


def test_a_silent_connection_does_not_hold_the_port(agent: Agent) -> None:
    """One connection that never sends its request cannot stop others being served for long."""
    host, port = agent.config.metrics_endpoint.split(":")
    with socket.create_connection((host, int(port))):
        code, _, _ = agent.get("/healthz")  # served once the silent one times out
    assert code == 200


def test_status_has_recent_figures_and_inspect_browses(agent: Agent) -> None:
    write_some(agent, 5)
    recent = wait_for(lambda: agent.status()["recent"], "STATUS recent")
    assert set(recent) >= {"applied_per_s", "answered_per_s", "commit_p50_ms", "commit_p99_ms"}
    listing = agent.inspect({"list": True})
    assert listing["count"] == 1 and listing["applied"] >= 7
    node = agent.inspect({"root": "l", "path": []})
    assert node["value"] == [0, 1, 2, 3, 4] and node["kind"] == "list"
    assert agent.inspect({"root": "l", "path": [4]})["value"] == 4
    assert agent.inspect({"oid": node["oid"]})["value"] == [0, 1, 2, 3, 4]
    legacy = agent.inspect({"root": "l"})  # as before, and the index it reflects
    assert (legacy["found"], legacy["value"]) == (True, [0, 1, 2, 3, 4]) and legacy["applied"] >= 7
    with pytest.raises(Exception, match="exactly one of root, oid, list"):
        agent.inspect({"root": "l", "oid": "x"})


def test_a_taken_metrics_port_refuses_the_start(agent: Agent, tmp_path: Path) -> None:
    peer_port, client_port = free_ports(2)
    config = AgentConfig(
        node_id="b",
        data_dir=tmp_path / "b",
        peers={"b": f"tcp://127.0.0.1:{peer_port}"},
        client_endpoint=f"tcp://127.0.0.1:{client_port}",
        metrics_endpoint=agent.config.metrics_endpoint,
    )
    with pytest.raises(MetricsBindError, match="cannot serve --metrics"):
        Server(config)
    assert not (tmp_path / "b").exists()  # refused before LMDB was opened
