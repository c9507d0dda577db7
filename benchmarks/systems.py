"""Systems under test, started on loopback, and their client processes.

A *cluster* object starts a system's servers (`start()`), tells each client process which
endpoints to use (`endpoints(i)`), and is stopped by `close()`. A `Deployment` pairs it with
the client processes of the suite (one `superstatic_bench.client` worker per client, started on
first use and reused by every later measurement of that system) and stops all of them by PID.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from superstatic_bench.procs import ProcessGroup, Worker
from superstatic_bench.workloads import batches
from superstatic_bench.workloads.throughput import Proc

from superstatic.protocol.errors import Error
from superstatic.tools.localcluster import LocalCluster

AGENTS = 3
TIMEOUT_S_CLIENT_OPEN = 120.0
TIMEOUT_S_LEADER = 60.0
# Agent flag of the labelled non-default mode (docs/agent.md): commit without fsync.
FSYNC_OFF_ARGS = ("--fsync", "off")
# A STATUS answer for a row's batch counters: at a window's edge, so short (a slow agent is
# left out of the record rather than delaying the row).
BATCH_STATUS_TIMEOUT_MS = 500


class Cluster(Protocol):
    name: str
    label: str
    notes: tuple[str, ...]

    def start(self) -> None: ...
    def endpoints(self, client_index: int) -> list[str]: ...


class SuperstaticCluster:
    """3 agents from superstatic.tools.localcluster (real processes, stopped by PID in close()),
    keyed like a deployment (CURVE on every link, the clients with an `app` key) unless
    `keyed=False` (the curve workload's baseline). `name` tells runs of the same kind apart;
    `metrics` gives each agent a /metrics port (heapfanout reads its stream counters)."""

    def __init__(
        self,
        base_dir: Path,
        fsync: bool = True,
        *,
        keyed: bool = True,
        name: str = "",
        agent_args: Sequence[str] = (),
        metrics: bool = False,
    ) -> None:
        self.fsync = fsync
        self.keyed = keyed
        self.name = name or ("superstatic" if fsync else "superstatic-nofsync")
        self.label = "superstatic x3" if fsync else "superstatic x3 (--fsync off)"
        if not keyed:
            self.label += " (no keys)"
        self.notes: tuple[str, ...] = (
            ()
            if fsync
            else ("superstatic --fsync off: a labelled, non-default agent mode; not durable",)
        )
        args = [*(() if fsync else FSYNC_OFF_ARGS), *agent_args]
        if agent_args:
            self.label += " (agent flags: " + " ".join(agent_args) + ")"
        self.local = LocalCluster(
            base_dir / self.name, size=AGENTS, agent_args=args, keyed=keyed, metrics=metrics
        )
        # Client i prefers agent (i + client_offset) mod AGENTS (see endpoints).
        self.client_offset = 0

    def client_options(self, client_index: int) -> dict[str, Any]:
        """The client process's key file ("" : none, whatever SUPERSTATIC_KEYS says)."""
        path = self.local.key_file("app")
        return {"keys": str(path) if path is not None else ""}

    def start(self) -> None:
        self.local.start()
        self.leader = self.local.leader(TIMEOUT_S_LEADER)

    def endpoints(self, client_index: int) -> list[str]:
        # Client i prefers agent i (one client per agent), and may fail over to the others.
        ends = self.local.client_endpoints()
        first = (client_index + self.client_offset) % len(ends)
        return ends[first:] + ends[:first]

    def first_client_at_a_follower(self) -> str:
        """Client 0 (a sequential row's one client) prefers the agent after the leader, a
        follower: two clusters compared side by side then differ in what is compared, not in
        whether their client happens to sit at the leader (a leader-attached call is about a
        quarter of a millisecond shorter: the per-hop trace). Returns that agent's id."""
        ids = self.local.voter_ids
        self.client_offset = (ids.index(self.leader) + 1) % len(ids)
        return ids[self.client_offset]

    def server_processes(self) -> list[Proc]:
        """The live agents, each named by its id and role (the leader found at start)."""
        leader = getattr(self, "leader", None)  # set by start()
        return [
            Proc(f"agent {node_id}", "leader" if node_id == leader else "follower", pid)
            for node_id, spec in self.local.agents.items()
            if (pid := spec.pid) is not None and spec.alive()
        ]

    def batch_counters(self) -> dict[str, dict[str, Any]]:
        """Each live agent's batch counters from its STATUS (workloads/batches.py); an agent
        that does not answer within BATCH_STATUS_TIMEOUT_MS is left out."""
        out: dict[str, dict[str, Any]] = {}
        for node_id, spec in self.local.agents.items():
            if not spec.alive():
                continue
            try:
                status = self.local.status(node_id, timeout_ms=BATCH_STATUS_TIMEOUT_MS)
            except Error:
                continue
            out[node_id] = batches.counters(status)
        return out

    def close(self) -> None:
        self.local.close()


def client_args(
    system: str, endpoints: list[str], index: int, options: dict[str, Any]
) -> list[str]:
    return [
        "-m", "superstatic_bench.client",
        "--system", system,
        "--endpoints", ",".join(endpoints),
        "--index", str(index),
        "--options", json.dumps(options),
    ]  # fmt: skip


class Deployment:
    def __init__(self, cluster: Any, system: str, group: ProcessGroup) -> None:
        self.cluster = cluster
        self.system = system  # the driver name the client processes load
        self.group = group
        self.workers: list[Worker] = []
        self.open_s: list[float] = []

    @property
    def name(self) -> str:
        return str(self.cluster.name)

    @property
    def label(self) -> str:
        return str(self.cluster.label)

    def clients(self, count: int) -> list[Worker]:
        if getattr(self.cluster, "clients_are_members", False):
            nodes: list[Worker] = self.cluster.nodes
            assert count <= len(nodes), (count, len(nodes))
            return nodes[:count]
        while len(self.workers) < count:
            index = len(self.workers)
            options_of = getattr(self.cluster, "client_options", None)
            options = options_of(index) if options_of is not None else {}
            args = client_args(self.system, self.cluster.endpoints(index), index, options)
            worker = self.group.start_worker(f"{self.name}-client-{index}", args)
            ready = worker.receive(TIMEOUT_S_CLIENT_OPEN)
            self.open_s.append(float(ready.get("open_s", 0.0)))
            worker.call({"cmd": "prepare"}, TIMEOUT_S_CLIENT_OPEN)
            self.workers.append(worker)
        return self.workers[:count]

    def cpu_processes(self, workers: Sequence[Worker]) -> list[Proc]:
        """The processes whose CPU a row accounts (workloads/throughput.py): the system's
        servers and the row's client processes; where the clients are the members
        (PySyncObj), every member, named so."""
        if getattr(self.cluster, "clients_are_members", False):
            nodes: list[Worker] = self.cluster.nodes
            return [Proc(f"member {i}", "member", n.pid) for i, n in enumerate(nodes)]
        own = getattr(self.cluster, "server_processes", None)
        if own is not None:
            servers: list[Proc] = own()
        else:
            # A peer's servers: subprocesses it keeps in `servers` (etcd, Redis).
            popens = getattr(self.cluster, "servers", [])
            servers = [Proc(f"server {i}", "server", p.pid) for i, p in enumerate(popens)]
        clients = [Proc(f"client {i}", "client", w.pid) for i, w in enumerate(workers)]
        return servers + clients

    def close(self) -> None:
        try:
            for worker in self.workers:
                self.group.stop(worker.process)
            nodes = getattr(self.cluster, "nodes", [])
            for node in nodes:
                self.group.stop(node.process)
        finally:
            close = getattr(self.cluster, "close", None)
            if close is not None:
                close()
