"""examples/ha_server.py under fire: 3 agents, 3 server processes, clients sending commands to
any server while a server and an agent are killed -9 (and restarted) again and again.

Checked at the end: every command took effect exactly once (each of its 4 steps appears once
in the effects journal; stock and ledger add up), every client collected its result through a
server other than the one that accepted its command, and nothing is left claimed, queued,
dead-lettered or waiting in Results.
"""

from __future__ import annotations

import collections
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster, free_ports

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ha_server.py"
SERVE = [sys.executable, str(EXAMPLE), "serve"]
TTL_MS = 3_000
SERVERS = 3
CLIENTS = 4
# Each client sends commands until the kills are over (at least COMMANDS_MIN, at most MAX).
COMMANDS_MIN = 5
COMMANDS_MAX = 60
KILL_ROUNDS = 5
TIMEOUT_S_HTTP = 5.0
# Liveness bounds (a loaded 2-core machine, agents restarting): generous on purpose.
TIMEOUT_S_COMMAND = 120.0
TIMEOUT_S_RUN = 420.0
TIMEOUT_S_START = 60.0

sys.path.insert(0, str(ROOT / "examples"))
import ha_server  # noqa: E402


class Server:
    def __init__(self, index: int, port: int, endpoints: list[str], log_dir: Path) -> None:
        self.index = index
        self.port = port
        self.endpoints = endpoints
        self.log_path = log_dir / f"server-{index}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, SUPERSTATIC_AGENT=",".join(self.endpoints))
        self.starts += 1
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*SERVE, "--port", str(self.port), "--name", f"s{self.index}.{self.starts}"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT_S_START)
        assert ready, f"server {self.index} did not start: {self.log_path.read_text()[-2000:]}"
        line = self.proc.stdout.readline()
        assert json.loads(line)["serving"] == self.port, line

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S_HTTP + 30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def shop_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, list[Server]]]:
    with LocalCluster(
        tmp_path / "agents", size=3, agent_args=["--session-ttl-ms", str(TTL_MS)]
    ) as cluster:
        cluster.start()
        cluster.leader()
        endpoints = cluster.client_endpoints()
        ports = free_ports(SERVERS)
        servers = [
            Server(i, ports[i], endpoints[i:] + endpoints[:i], tmp_path) for i in range(SERVERS)
        ]
        try:
            for server in servers:
                server.start()
            yield cluster, servers
        finally:
            for server in servers:
                server.stop()


class Client(threading.Thread):
    """Sends its commands one after the other to random servers; collects each result
    through another server than the one that accepted the command."""

    def __init__(self, index: int, servers: list[Server], stop: threading.Event) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.servers = servers
        self.stop = stop
        self.rng = random.Random(index)
        self.sent: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.accepted_by: dict[str, int] = {}
        self.collected_by: dict[str, int] = {}
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for k in range(COMMANDS_MAX):
                if k >= COMMANDS_MIN and self.stop.is_set():
                    break
                self.command(k)
        except BaseException as exc:
            self.error = exc

    def command(self, k: int) -> None:
        request = f"c{self.index}-{k}"
        body = {
            "client": f"c{self.index}",
            "request": request,
            "order": f"o-{request}",
            "items": {"apple": 1 + k % 3, "pear": k % 2},
            "amount": 10 + k,
        }
        self.sent[request] = body
        deadline = time.monotonic() + TIMEOUT_S_COMMAND
        while True:  # send until a server accepted it (a retry is the same request id)
            assert time.monotonic() < deadline, f"{request} never accepted"
            server = self.rng.choice(self.servers)
            try:
                status, _answer = http("POST", server.url + "/commands", body)
            except OSError:
                status = 0
            if status == 202:
                self.accepted_by[request] = server.index
                break
            self.retries += 1
            time.sleep(0.2)
        while True:  # collect through another server
            assert time.monotonic() < deadline, f"{request}: no result"
            others = [s for s in self.servers if s.index != self.accepted_by[request]]
            server = self.rng.choice(others)
            try:
                status, answer = http("GET", f"{server.url}/results/{request}?wait=2")
            except OSError:
                status, answer = 0, {}
            if status == 200:
                self.results[request] = answer["result"]
                self.collected_by[request] = server.index
                break
            if status != 202:
                self.retries += 1
                time.sleep(0.2)
        while True:  # the client has its result: let the cluster forget it
            assert time.monotonic() < deadline, f"{request}: result never deleted"
            server = self.rng.choice(self.servers)
            try:
                status, _answer = http("DELETE", f"{server.url}/results/{request}")
            except OSError:
                status = 0
            if status == 200:
                return
            self.retries += 1
            time.sleep(0.2)


def diagnose(cluster: LocalCluster) -> str:
    """The task queue's items and the liveness table, for a failure message."""
    superstatic.connect(cluster.client_endpoints())
    try:
        superstatic.sync()
        root = superstatic.root(f"superstatic.queue.{ha_server.TASKS}", dict)
        lines = [
            f"log time {superstatic.plain(superstatic.root('superstatic.toolkit.live', dict))}"
        ]
        for part in ("ready", "delayed", "claimed"):
            for item_id, item in root[part].items():
                lines.append(f"{part} {item_id} {superstatic.plain(item)}")
        lines.append(f"orders {ha_server.report()['orders']}")
        return "\n".join(lines)
    finally:
        superstatic.close()


def test_commands_take_effect_exactly_once_while_servers_and_agents_die(
    shop_cluster: tuple[LocalCluster, list[Server]],
) -> None:
    cluster, servers = shop_cluster
    stop = threading.Event()
    clients = [Client(i, servers, stop) for i in range(CLIENTS)]
    for client in clients:
        client.start()
    rng = random.Random(7)
    kills: list[tuple[str, str]] = []
    started = time.monotonic()
    for _ in range(KILL_ROUNDS):
        time.sleep(rng.uniform(1.0, 2.5))
        server = rng.choice(servers)
        server.kill9()
        kills.append(("server", str(server.index)))
        time.sleep(rng.uniform(0.2, 1.0))
        agent = rng.choice(cluster.voter_ids)
        cluster.kill(agent)
        kills.append(("agent", agent))
        time.sleep(rng.uniform(1.5, 3.0))
        cluster.start_agent(agent)
        server.start()
    stop.set()
    for client in clients:
        client.join(max(1.0, TIMEOUT_S_RUN - (time.monotonic() - started)))
        if client.is_alive() or client.error is not None:
            pytest.fail(f"{client.name}: {client.error!r}\n{diagnose(cluster)}")

    superstatic.connect(cluster.client_endpoints())
    try:
        superstatic.sync()
        state = ha_server.report()
        results_root = superstatic.root(f"superstatic.results.{ha_server.REPLIES}", dict)
        left_results = sum(len(shard) for shard in results_root.get("shards", []))
    finally:
        superstatic.close()

    sent = {rid: body for c in clients for rid, body in c.sent.items()}
    assert len(sent) >= CLIENTS * COMMANDS_MIN
    # Every client collected every result, through another server than the one it asked.
    for client in clients:
        assert set(client.results) == set(client.sent)
        for request, result in client.results.items():
            body = client.sent[request]
            assert result == {"order": body["order"], "state": "done", "charged": body["amount"]}
            assert client.collected_by[request] != client.accepted_by[request]
    # Exactly once: each step of each command is in the journal once, nothing else is.
    effects = collections.Counter(tuple(e) for e in state["effects"])
    expected = {(rid, step) for rid in sent for step in ha_server.STEPS}
    assert set(effects) == expected, set(effects) ^ expected
    assert all(n == 1 for n in effects.values()), [e for e, n in effects.items() if n > 1]
    assert state["orders"] == {body["order"]: "done" for body in sent.values()}
    for sku in ("apple", "pear"):
        taken = sum(body["items"][sku] for body in sent.values())
        assert state["stock"].get(sku, ha_server.INITIAL_STOCK) == ha_server.INITIAL_STOCK - taken
    charged = collections.Counter()
    for body in sent.values():
        charged[body["client"]] += body["amount"]
    assert state["ledger"] == dict(charged)
    # Nothing left claimed, queued, dead-lettered or waiting for a client.
    assert state["tasks"] == {"ready": 0, "delayed": 0, "claimed": 0}
    assert state["dead_letters"] == 0
    assert left_results == 0
    kinds = collections.Counter(kind for kind, _ in kills)
    assert kinds == {"server": KILL_ROUNDS, "agent": KILL_ROUNDS}, kills
    print(
        f"\nha_server: {len(sent)} commands, {len(kills)} kills {dict(kinds)}, "
        f"{sum(c.retries for c in clients)} client retries, "
        f"{time.monotonic() - started:.0f} s"
    )
