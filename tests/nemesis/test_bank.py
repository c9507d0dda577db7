"""Nemesis, the bank: real agents and apps under kills and pauses, checked by an invariant.

Three agents, three bank workers (examples/bank.py, the public API only), each connected to all
agents (its own first). While they make transfers, a nemesis repeatedly, one fault at a time:
- kills an agent with SIGKILL (sometimes the leader, sometimes a worker's own agent) and
  restarts it a little later from its data directory;
- pauses the leader with SIGSTOP (to everyone else it is a node cut off the network: the others
  elect a new leader while it still believes it leads) and resumes it with SIGCONT.

At the end, from a fresh process after sync(): money is conserved, every worker's committed
transfers lie between what it saw acknowledged and that plus its unknown outcomes (nothing
acknowledged lost, nothing applied twice), every agent holds the same applied state.

This is the one multi-object invariant (a transfer touches two accounts atomically); the
seeded runs with partitions, clocks and membership changes, whose histories are checked for
linearizability, are in test_nemesis.py (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.nemesis, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "examples" / "bank.py"
WORKERS = 3
TRANSFERS_PER_WORKER = 150
FAULTS = 4
TIMEOUT_S_WORKER = 300.0
TIMEOUT_S_CONVERGE = 60.0


def bank(endpoints: list[str], *args: str) -> subprocess.Popen[str]:
    env_endpoints = ",".join(endpoints)
    return subprocess.Popen(
        [sys.executable, str(BANK), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SUPERSTATIC_AGENT": env_endpoints},
    )


def finish(process: subprocess.Popen[str], timeout_s: float) -> list[dict[str, Any]]:
    try:
        out, err = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"bank exited {process.returncode}: {err[-3000:]}"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def nemesis(cluster: LocalCluster, rng: random.Random, stop: threading.Event) -> list[str]:
    """Injects FAULTS faults, one at a time, each healed before the next; returns a log."""
    done: list[str] = []
    ids = list(cluster.agents)
    for fault in range(FAULTS):
        if stop.wait(1.5):
            break
        leader = cluster.leader(timeout_s=60)
        if fault % 2 == 1:
            cluster.pause(leader)
            done.append(f"paused leader {leader}")
            time.sleep(2.5)
            cluster.resume(leader)
        else:
            victim = leader if fault % 4 == 0 else rng.choice([i for i in ids if i != leader])
            cluster.kill(victim)
            done.append(f"killed {'leader ' if victim == leader else ''}{victim}")
            time.sleep(1.5)
            cluster.start_agent(victim)
    return done


def applied_of(endpoint: str) -> int:
    status = oneshot.request(endpoint, wire.FrameType.STATUS, {}, timeout_ms=2_000)
    return int(status["applied"])


def test_bank_under_kills_and_pauses(cluster: LocalCluster) -> None:
    endpoints = cluster.client_endpoints()
    workers = [
        bank(
            endpoints[i:] + endpoints[:i],
            "--worker",
            f"w{i}",
            "--transfers",
            str(TRANSFERS_PER_WORKER),
            "--seed",
            str(i),
        )
        for i in range(WORKERS)
    ]
    stop = threading.Event()
    faults: list[str] = []
    injector = threading.Thread(
        target=lambda: faults.extend(nemesis(cluster, random.Random(7), stop)), daemon=True
    )
    try:
        injector.start()
        results = [finish(w, TIMEOUT_S_WORKER)[0] for w in workers]
    finally:
        stop.set()
        injector.join(timeout=60)
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        for node_id in cluster.agents:  # never leave an agent stopped
            spec = cluster.agents[node_id]
            if spec.alive():
                cluster.signal(node_id, signal.SIGCONT)
    assert faults, "the nemesis injected nothing"
    for node_id, spec in cluster.agents.items():
        if not spec.alive():
            cluster.start_agent(node_id)
    cluster.leader(timeout_s=60)

    report = finish(bank(endpoints, "--report"), 120)[-1]
    assert report["total"] == 5 * 1_000, f"money not conserved: {report} after {faults}"
    for r in results:
        committed = int(report["transfers_by_worker"].get(r["worker"], 0))
        low, high = int(r["acknowledged"]), int(r["acknowledged"]) + int(r["unknown"])
        assert low <= committed <= high, (r, committed, faults)

    # Every agent converges to the same applied index, and a report through each is identical.
    deadline = time.monotonic() + TIMEOUT_S_CONVERGE
    while True:
        applied = {e: applied_of(e) for e in endpoints}
        if len(set(applied.values())) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    reports = [finish(bank([e], "--report"), 120)[-1] for e in endpoints]
    assert all(r == report for r in reports), (reports, report)
