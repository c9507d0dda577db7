"""What the virtual heap workloads share on the suite side: a fresh 3-agent cluster, grown in
steps with the catch-up layout (`objects_load.load_objects`: small dicts in buckets of 1,000
under one root dict), and app processes (`superstatic_bench.client --system none`) started for
one command and stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from superstatic_bench.procs import ProcessGroup, Worker, WorkerFailed
from superstatic_bench.settings import Settings
from superstatic_bench.systems import TIMEOUT_S_LEADER, SuperstaticCluster

TIMEOUT_S_APP = 120.0
# The most drop counters an agent's view names in a failure (the largest first).
VIEW_DROPS_MAX = 6
TIMEOUT_S_LOAD = 3600.0
APP_ARGS = ("-m", "superstatic_bench.client", "--system", "none")


def start_cluster(base_dir: Path, name: str, settings: Settings, metrics: bool = False) -> Any:
    cluster = SuperstaticCluster(
        base_dir, name=name, agent_args=settings.agent_args, metrics=metrics
    )
    cluster.start()
    cluster.local.leader(TIMEOUT_S_LEADER)
    return cluster


def agents_view(local: Any) -> str:
    """One line per agent of what it thinks: role, leader, term, commit, applied, the leader's
    view of each follower (state, match) and the largest drop counters. What a failure in CI
    needs to say which agent or which link was stuck (its logs are printed beside it)."""
    parts = []
    for node in local.voter_ids:
        try:
            status = local.status(node)
        except Exception as exc:  # a dead or silent agent is part of the answer
            parts.append(f"{node}: no status ({type(exc).__name__})")
            continue
        counts = [(n, c) for n, c in (status.get("dropped") or {}).items() if c]
        counts.sort(key=lambda item: -item[1])
        progress = [
            f"{m.get('id')}:{m.get('state')}@{m.get('match')}"
            for m in status.get("members", [])
            if "state" in m
        ]
        parts.append(
            f"{node}: {status.get('role')} leader={status.get('leader')} "
            f"term={status.get('term')} commit={status.get('commit')} "
            f"applied={status.get('applied')} progress={progress} "
            f"dropped={dict(counts[:VIEW_DROPS_MAX])}"
        )
    return "; ".join(parts)


@contextlib.contextmanager
def serving(cluster: Any) -> Iterator[None]:
    """The cluster for the block, closed (its agents stopped by PID) at the end. A failure
    inside is raised as WorkerFailed naming every agent's view first (the suite keeps an
    error's first characters), and the agents' log tails are printed."""
    try:
        yield
    except Exception as exc:
        view = agents_view(cluster.local)
        print(f"agents at the failure: {view}\n{cluster.local.logs()}", flush=True)
        raise WorkerFailed(f"agents at the failure: {view}; {type(exc).__name__}: {exc}") from exc
    finally:
        cluster.close()


def connect_command(cluster: Any, endpoints: list[str], replicate: str) -> dict[str, Any]:
    """The fields of a `heap` command that say where and how an app connects."""
    return {
        "cmd": "heap",
        "endpoints": endpoints,
        "keys": cluster.client_options(0)["keys"],
        "replicate": replicate,
    }


@contextlib.contextmanager
def app(group: ProcessGroup, name: str) -> Iterator[Worker]:
    """One app process, ready for commands, stopped by PID on the way out."""
    worker = group.start_worker(name, list(APP_ARGS))
    try:
        worker.receive(TIMEOUT_S_APP)
        yield worker
    finally:
        group.stop(worker.process)


def one_shot(
    group: ProcessGroup, name: str, command: dict[str, Any], timeout_s: float = TIMEOUT_S_APP
) -> dict[str, Any]:
    """A fresh process answers one command (a first connect is only first in a new process)."""
    with app(group, name) as worker:
        return worker.call(command, timeout_s)


class Loader:
    """The process that grows the cluster's objects: `grow_to(n)` writes objects up to n."""

    def __init__(self, worker: Worker, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.objects = 0

    def counter(self) -> None:
        self.worker.call({"cmd": "heap", "phase": "counter"}, TIMEOUT_S_APP)

    def grow_to(self, objects: int) -> dict[str, Any] | None:
        if objects <= self.objects:
            return None
        loaded = self.worker.call(
            {
                "cmd": "load",
                "first": self.objects,
                "count": objects,
                "batch": self.settings.catchup_batch,
            },
            TIMEOUT_S_LOAD,
        )
        self.objects = objects
        return loaded


@contextlib.contextmanager
def loader(group: ProcessGroup, cluster: Any, settings: Settings, name: str) -> Iterator[Loader]:
    with app(group, f"{name}-loader") as worker:
        # A full replica: the tested path for bulk writes (it holds what it wrote anyway).
        worker.call(
            {**connect_command(cluster, cluster.endpoints(0), "all"), "phase": "connect"},
            TIMEOUT_S_APP,
        )
        yield Loader(worker, settings)


def pid_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, every thread (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name (which may hold spaces and parentheses).
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
