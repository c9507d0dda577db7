"""etcd: a 3-member cluster (Debian's `etcd-server`), driven through its v3 JSON gateway.

No client library: each client thread keeps one persistent `http.client` connection to its
member and POSTs to `/v3/kv/put`, `/v3/kv/range` and `/v3/kv/txn` (keys and values base64, as
the gateway wants). This avoids `etcd3`, which needs protobuf<4 and is unmaintained. Every put
is a Raft commit: the leader and a majority fsync their WAL. Read-modify-write reads the hot key
serializably (from the member's local state, like superstatic's local read) and commits with a
txn comparing its mod_revision, retried on failure: the same optimistic scheme as superstatic.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from superstatic_bench.driver import OpFailed
from superstatic_bench.procs import ProcessGroup, wait_until

from superstatic.tools.localcluster import free_ports

SERVER_BINARY = "etcd"
APT_PACKAGE = "etcd-server"
MEMBERS = 3
TIMEOUT_S_START = 60.0
TIMEOUT_S_REQUEST = 30.0
RMW_ATTEMPTS_MAX = 64
HOT_KEY = "bench/hot"
SEQ_KEY = "bench/seq"


def server_path() -> str | None:
    return shutil.which(SERVER_BINARY)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdCluster:
    name = "etcd"
    label = "etcd x3"
    notes = ("etcd: 3 members, default durability (WAL fsync on every commit), v3 JSON gateway",)

    def __init__(self, group: ProcessGroup, base_dir: Path) -> None:
        self.group = group
        self.base_dir = base_dir
        self.servers: list[subprocess.Popen[bytes]] = []
        ports = free_ports(2 * MEMBERS)
        self.client_ports = ports[:MEMBERS]
        self.peer_ports = ports[MEMBERS:]

    def start(self) -> None:
        binary = server_path()
        assert binary is not None, "etcd is not installed"
        initial = ",".join(
            f"m{i}=http://127.0.0.1:{port}" for i, port in enumerate(self.peer_ports)
        )
        for i in range(MEMBERS):
            client = f"http://127.0.0.1:{self.client_ports[i]}"
            peer = f"http://127.0.0.1:{self.peer_ports[i]}"
            cmd = [
                binary,
                "--name", f"m{i}",
                "--data-dir", str(self.base_dir / f"etcd-{i}"),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", "superstatic-bench",
                "--logger", "zap",
                "--log-level", "error",
            ]  # fmt: skip
            self.servers.append(self.group.start_server(f"etcd-{i}", cmd))
        for port in self.client_ports:
            wait_until(lambda p=port: _healthy(p), TIMEOUT_S_START, f"etcd member on {port}")

    def endpoints(self, client_index: int) -> list[str]:
        return [f"127.0.0.1:{self.client_ports[client_index % MEMBERS]}"]

    def close(self) -> None:
        """Stops this cluster's servers by PID (the group would only at the end of the run)."""
        while self.servers:
            self.group.stop(self.servers.pop())


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        body = json.loads(conn.getresponse().read())
        return str(body.get("health")) == "true"
    finally:
        conn.close()


class EtcdConnection:
    """One keep-alive HTTP connection (one per client thread: http.client is not thread-safe)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S_REQUEST)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body)
        try:
            self.conn.request("POST", path, payload, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            # A dropped keep-alive connection: the next operation reconnects; this one failed.
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S_REQUEST)
            raise
        if response.status != 200:
            raise OpFailed(f"etcd {path}: HTTP {response.status}: {data[:200]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer


class EtcdDriver:
    system = "etcd"

    def __init__(self, endpoints: list[str], options: dict[str, Any]) -> None:
        host, _, port = endpoints[0].partition(":")
        self.host, self.port = host, int(port)
        self._attempts = 0
        self._lock = threading.Lock()
        self._seq = 0

    def prepare(self) -> dict[str, Any]:
        conn = EtcdConnection(self.host, self.port)
        status = conn.post("/v3/maintenance/status", {})
        return {"leader": status.get("leader"), "version": status.get("version")}

    def thread_state(self, thread_index: int) -> Any:
        return EtcdConnection(self.host, self.port)

    def write(self, state: Any, key: str, value: str) -> None:
        state.post("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def call(self, state: Any) -> None:
        # etcd has no server-side method: the closest sequential durable call is one put.
        self._seq += 1
        state.post("/v3/kv/put", {"key": b64(SEQ_KEY), "value": b64(str(self._seq))})

    def rmw(self, state: Any) -> None:
        key = b64(HOT_KEY)
        for _ in range(RMW_ATTEMPTS_MAX):
            with self._lock:
                self._attempts += 1
            found = state.post("/v3/kv/range", {"key": key, "serializable": True})
            kvs = found.get("kvs") or []
            revision = int(kvs[0].get("mod_revision", 0)) if kvs else 0
            current = int(base64.b64decode(kvs[0].get("value", "")) or b"0") if kvs else 0
            answer = state.post(
                "/v3/kv/txn",
                {
                    "compare": [
                        {
                            "key": key,
                            "target": "MOD",
                            "result": "EQUAL",
                            "mod_revision": str(revision),
                        }
                    ],
                    "success": [{"request_put": {"key": key, "value": b64(str(current + 1))}}],
                },
            )
            if answer.get("succeeded"):
                return
        raise OpFailed(f"read-modify-write conflicted RMW_ATTEMPTS_MAX={RMW_ATTEMPTS_MAX} times")

    def attempts(self) -> int:
        with self._lock:
            return self._attempts

    def close(self) -> None:
        pass
