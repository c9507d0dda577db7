"""PySyncObj: 3 processes, each a SyncObj node with a replicated dict and counters, journal files.

PySyncObj is a library, not a server: its nodes are the applications. So its "client processes"
are the cluster's own 3 node processes (the 1-client runs drive node 0 while the other two only
replicate), each with many threads calling `sync=True` methods, which return once the command
is committed and applied locally. It writes its journal through mmap and never fsyncs it
(`FileJournal.flush` is never called), so its commits are not durable: compare it with
superstatic's `--fsync off` rows. Two modes run: immediate (`appendEntriesUseBatch=False`:
each command is sent to the followers at once; its best latency) and batched (the library's
default: commands wait for the next append round, every `appendEntriesPeriod` = 100 ms; its
best throughput, at a latency of hundreds of milliseconds). Read-modify-write is a replicated
`inc` command: applied atomically by the state machine, it never conflicts, unlike the
optimistic transactions of the other systems.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

from superstatic_bench.procs import ProcessGroup, Worker

from superstatic.tools.localcluster import free_ports

PIP_PACKAGE = "pysyncobj"
MEMBERS = 3
TIMEOUT_S_READY = 60.0
TIMEOUT_S_COMMAND = 30.0
POLL_S = 0.05


def available() -> bool:
    return importlib.util.find_spec("pysyncobj") is not None


class PySyncObjCluster:
    notes = (
        "PySyncObj: never fsyncs its journal (mmap, no msync): not durable; compare with "
        "superstatic --fsync off; its client processes are its own 3 nodes; its rmw is an "
        "atomic replicated command (no conflicts possible); 'immediate' sends each command at "
        "once (appendEntriesUseBatch=False), 'batched' is its default 100 ms append rounds",
    )
    clients_are_members = True

    def __init__(self, group: ProcessGroup, base_dir: Path, batch: bool = False) -> None:
        self.batch = batch
        self.name = "pysyncobj-batch" if batch else "pysyncobj"
        mode = "batched" if batch else "immediate"
        self.label = f"PySyncObj x3 {mode} (no fsync)"
        self.group = group
        self.base_dir = base_dir
        self.ports = free_ports(MEMBERS)
        self.nodes: list[Worker] = []

    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def start(self) -> None:
        import json

        self.base_dir.mkdir(parents=True, exist_ok=True)
        addresses = self.addresses()
        for i in range(MEMBERS):
            own = addresses[i]
            rest = [a for a in addresses if a != own]
            journal = self.base_dir / f"{self.name}-{i}.journal"
            options = {"journal": str(journal), "batch": self.batch}
            args = [
                "-m", "superstatic_bench.client",
                "--system", "pysyncobj",
                "--endpoints", ",".join([own, *rest]),
                "--index", str(i),
                "--options", json.dumps(options),
            ]  # fmt: skip
            self.nodes.append(self.group.start_worker(f"{self.name}-{i}", args))
        for node in self.nodes:
            node.receive(TIMEOUT_S_READY)  # the "ready" line
        for node in self.nodes:
            node.call({"cmd": "prepare"}, TIMEOUT_S_READY)

    def endpoints(self, client_index: int) -> list[str]:
        return [self.addresses()[client_index % MEMBERS]]


class PySyncObjDriver:
    system = "pysyncobj"

    def __init__(self, endpoints: list[str], options: dict[str, Any]) -> None:
        from pysyncobj import SyncObj, SyncObjConf
        from pysyncobj.batteries import ReplCounter, ReplDict

        self.kv = ReplDict()
        self.seq = ReplCounter()
        self.hot = ReplCounter()
        conf = SyncObjConf(
            journalFile=options.get("journal"),
            dynamicMembershipChange=False,
            appendEntriesUseBatch=bool(options.get("batch", False)),
        )
        self.node = SyncObj(endpoints[0], endpoints[1:], conf=conf, consumers=[
            self.kv, self.seq, self.hot,
        ])  # fmt: skip
        self._attempts = 0
        self._lock = threading.Lock()

    def prepare(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S_READY
        while time.monotonic() < deadline:
            status = self.node.getStatus()
            if self.node.isReady() and status.get("leader") is not None:
                return {"leader": str(status.get("leader"))}
            time.sleep(POLL_S)
        raise TimeoutError(f"PySyncObj node has no leader within {TIMEOUT_S_READY} s")

    def thread_state(self, thread_index: int) -> Any:
        return None

    def write(self, state: Any, key: str, value: str) -> None:
        self.kv.set(key, value, sync=True, timeout=TIMEOUT_S_COMMAND)

    def call(self, state: Any) -> None:
        self.seq.inc(sync=True, timeout=TIMEOUT_S_COMMAND)

    def rmw(self, state: Any) -> None:
        with self._lock:
            self._attempts += 1
        self.hot.inc(sync=True, timeout=TIMEOUT_S_COMMAND)

    def attempts(self) -> int:
        with self._lock:
            return self._attempts

    def close(self) -> None:
        self.node.destroy()
