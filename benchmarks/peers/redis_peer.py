"""Redis: a primary and 2 replicas, `appendfsync always`, every write followed by `WAIT 1`.

The server is Debian's `redis-server`; the client is the `redis` Python package. A write is
`SET key value` then `WAIT 1 timeout`, sent together in one round trip (a pipeline without
MULTI): WAIT returns once one replica has *received* the write, the primary having appended
it to its AOF and fsynced it first (appendfsync always). Redis 7.0 cannot wait for a replica's
fsync (WAITAOF arrived in 7.2), so a Redis commit is one fsync plus a replica's receipt, where
superstatic's and etcd's is a quorum of fsyncs. Read-modify-write uses WATCH/MULTI/EXEC with
retries on WatchError, then WAIT 1.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from superstatic_bench.driver import OpFailed
from superstatic_bench.procs import ProcessGroup, wait_until

from superstatic.tools.localcluster import free_ports

SERVER_BINARY = "redis-server"
APT_PACKAGE = "redis-server"
REPLICAS = 2
TIMEOUT_S_START = 30.0
# WAIT's own timeout: past it WAIT answers how many replicas acknowledged (0 = not replicated).
TIMEOUT_MS_WAIT = 5_000
# Attempts of one WATCH/MULTI/EXEC read-modify-write before giving up (same budget as the
# superstatic library's TXN_ATTEMPTS_MAX).
RMW_ATTEMPTS_MAX = 64
HOT_KEY = "bench:hot"
SEQ_KEY = "bench:seq"


def server_path() -> str | None:
    return shutil.which(SERVER_BINARY)


class RedisCluster:
    name = "redis"
    label = "Redis 1+2 (AOF always, WAIT 1)"
    notes = (
        "Redis: primary appendfsync always + WAIT 1 after each write; WAIT confirms a replica "
        "received the write, not that it fsynced it (Redis 7.0 has no WAITAOF)",
    )

    def __init__(self, group: ProcessGroup, base_dir: Path) -> None:
        self.group = group
        self.base_dir = base_dir
        self.servers: list[subprocess.Popen[bytes]] = []
        self.ports = free_ports(1 + REPLICAS)

    def start(self) -> None:
        binary = server_path()
        assert binary is not None, "redis-server is not installed"
        primary = self.ports[0]
        for i, port in enumerate(self.ports):
            data = self.base_dir / f"redis-{i}"
            data.mkdir(parents=True, exist_ok=True)
            cmd = [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(data),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "no",
                "--logfile", "",
            ]  # fmt: skip
            if i > 0:
                cmd += ["--replicaof", "127.0.0.1", str(primary)]
            self.servers.append(self.group.start_server(f"redis-{i}", cmd))
        import redis

        client = redis.Redis(host="127.0.0.1", port=primary, socket_timeout=2)

        def replicas_online() -> bool:
            info = client.info("replication")
            online = [
                v for k, v in info.items() if k.startswith("slave") and v.get("state") == "online"
            ]
            return len(online) == REPLICAS

        wait_until(replicas_online, TIMEOUT_S_START, "redis replicas")
        client.close()

    def endpoints(self, client_index: int) -> list[str]:
        return [f"127.0.0.1:{self.ports[0]}"]  # every write goes to the primary

    def close(self) -> None:
        """Stops this cluster's servers by PID (the group would only at the end of the run)."""
        while self.servers:
            self.group.stop(self.servers.pop())


class RedisDriver:
    system = "redis"

    def __init__(self, endpoints: list[str], options: dict[str, Any]) -> None:
        import redis

        self._redis = redis
        host, _, port = endpoints[0].partition(":")
        self.pool = redis.BlockingConnectionPool(
            host=host, port=int(port), max_connections=512, timeout=30
        )
        self._attempts = 0
        self._lock = threading.Lock()

    def prepare(self) -> dict[str, Any]:
        client = self._redis.Redis(connection_pool=self.pool)
        client.setnx(HOT_KEY, 0)
        return {"wait_replicas": int(client.execute_command("WAIT", 1, TIMEOUT_MS_WAIT))}

    def thread_state(self, thread_index: int) -> Any:
        return self._redis.Redis(connection_pool=self.pool)

    def _wait_result(self, replicated: int) -> None:
        if int(replicated) < 1:
            raise OpFailed(f"WAIT 1 timed out after {TIMEOUT_MS_WAIT} ms: not replicated")

    def write(self, state: Any, key: str, value: str) -> None:
        pipe = state.pipeline(transaction=False)
        pipe.set(key, value)
        pipe.execute_command("WAIT", 1, TIMEOUT_MS_WAIT)
        _, replicated = pipe.execute()
        self._wait_result(replicated)

    def call(self, state: Any) -> None:
        pipe = state.pipeline(transaction=False)
        pipe.incr(SEQ_KEY)
        pipe.execute_command("WAIT", 1, TIMEOUT_MS_WAIT)
        _, replicated = pipe.execute()
        self._wait_result(replicated)

    def rmw(self, state: Any) -> None:
        for _ in range(RMW_ATTEMPTS_MAX):
            with self._lock:
                self._attempts += 1
            with state.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(HOT_KEY)
                    current = int(pipe.get(HOT_KEY) or 0)
                    pipe.multi()
                    pipe.set(HOT_KEY, current + 1)
                    pipe.execute()
                except self._redis.WatchError:
                    continue
            self._wait_result(state.execute_command("WAIT", 1, TIMEOUT_MS_WAIT))
            return
        raise OpFailed(f"read-modify-write conflicted RMW_ATTEMPTS_MAX={RMW_ATTEMPTS_MAX} times")

    def attempts(self) -> int:
        with self._lock:
            return self._attempts

    def close(self) -> None:
        self.pool.disconnect()
