"""Workload 5: failover. Time from `kill -9` of the leader to the next acknowledged write.

One client process (connected to every agent) writes with several paced threads (each starts
a write every PACE_MS, so at any instant most threads are idle and a fresh write starts within
a few ms) and reports each acknowledged write's [start, end] wall times. Mid-run the suite
kill -9s the leader. The failover time is from the kill to the first acknowledgement of a
write that *started* after the kill (a write in flight at the kill may have committed before
it, which would say nothing about the new leader). Writes that were in flight at the kill are
reported apart: how long the longest of them took to be acknowledged after the kill. The
killed agent is then restarted and the cluster given time to settle before the next repeat.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from superstatic_bench.procs import ProcessGroup
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.stats import median
from superstatic_bench.systems import TIMEOUT_S_LEADER, Deployment, SuperstaticCluster

# Writes run this long before the kill (a steady state to kill in) ...
KILL_AFTER_S = 1.0
# ... and this long after it: a failover slower than this is reported as "no write acked".
WINDOW_S_AFTER_KILL = 8.0
START_DELAY_S = 0.3
TIMEOUT_S_ANSWER = 120.0
# Settling after the killed agent restarts: it must have caught up before the next kill.
TIMEOUT_S_CATCH_UP = 60.0
POLL_S = 0.1
PACE_MS = 20
STATUS_TIMEOUT_MS = 300


def ack_timing(acks: list[list[float]], killed_at: float) -> dict[str, Any]:
    """From acknowledged writes' [start, end] wall times and the kill time: the failover time
    (kill to the first ack of a write started at or after the kill), and how long the writes
    in flight at the kill took to be acknowledged after it."""
    after = [end for start, end in acks if start >= killed_at]
    in_flight = [end for start, end in acks if start < killed_at <= end]
    return {
        "failover_s": (min(after) - killed_at) if after else None,
        "in_flight_at_kill": len(in_flight),
        "in_flight_acked_s_max": (max(in_flight) - killed_at) if in_flight else None,
        "acks_before_kill": sum(1 for _, end in acks if end < killed_at),
        "acks_after_kill": len(after),
    }


def serving_agent(cluster: SuperstaticCluster) -> str | None:
    """The agent the client process is subscribed to (its STATUS counts one subscriber)."""
    for node_id, spec in cluster.local.agents.items():
        if not spec.alive():
            continue
        try:
            status = cluster.local.status(node_id, timeout_ms=STATUS_TIMEOUT_MS)
        except Exception:
            continue  # busy or starting: unknown, not fatal to the round
        if int(status.get("clients", {}).get("subscribers", 0)) > 0:
            return node_id
    return None


def one_round(deployment: Deployment, cluster: SuperstaticCluster, threads: int) -> dict[str, Any]:
    (worker,) = deployment.clients(1)
    leader = cluster.local.leader(TIMEOUT_S_LEADER)
    start_at = time.time() + START_DELAY_S
    worker.send(
        {
            "cmd": "probe",
            "threads": threads,
            "start_at": start_at,
            "warmup_s": 0.0,
            "duration_s": KILL_AFTER_S + WINDOW_S_AFTER_KILL,
            "payload_bytes": 100,
            "pace_ms": PACE_MS,
        }
    )
    time.sleep(max(0.0, start_at + KILL_AFTER_S - time.time()))
    client_agent = serving_agent(cluster)
    killed_at = time.time()
    cluster.local.kill(leader)
    answer = worker.receive(TIMEOUT_S_ANSWER)
    timing = ack_timing(answer["acks"], killed_at)
    new_leader = cluster.local.leader(TIMEOUT_S_LEADER)
    # Restart the killed agent and wait until it has applied what the leader has committed.
    cluster.local.start_agent(leader)
    target = int(cluster.local.status(new_leader)["commit"])
    deadline = time.monotonic() + TIMEOUT_S_CATCH_UP
    while time.monotonic() < deadline:
        try:
            if int(cluster.local.status(leader, timeout_ms=1000)["applied"]) >= target:
                break
        except Exception:
            pass  # still starting
        time.sleep(POLL_S)
    return {
        "killed": leader,
        "new_leader": new_leader,
        # Whether the client's own agent died too changes what failover involves (the
        # connection must notice its agent is gone and move), so each round says.
        "client_agent": client_agent,
        **timing,
        "errors": answer.get("errors", {}),
    }


def run(
    group: ProcessGroup, base_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    cluster = SuperstaticCluster(base_dir / "failover", agent_args=settings.agent_args)
    deployment = Deployment(cluster, "superstatic", group)
    rounds = []
    try:
        cluster.start()
        deployment.clients(1)
        for r in range(settings.failover_repeats):
            with progress.step(f"failover round {r + 1}/{settings.failover_repeats}") as shown:
                result = one_round(deployment, cluster, settings.failover_threads)
                rounds.append(result)
                seconds = result["failover_s"]
                shown["result"] = (
                    "no write acked" if seconds is None else f"{seconds * 1000:.0f} ms"
                )
    finally:
        deployment.close()
    # A round with no acknowledged write inside the window counts as slower than any other.
    times = [r["failover_s"] if r["failover_s"] is not None else float("inf") for r in rounds]
    middle = median(times) if times else float("inf")
    worst = max(times) if times else float("inf")
    return {
        "rounds": rounds,
        "failover_s_median": middle if middle != float("inf") else None,
        "failover_s_max": worst if worst != float("inf") else None,
        "failed_rounds": sum(1 for r in rounds if r["failover_s"] is None),
        "window_s_after_kill": WINDOW_S_AFTER_KILL,
    }
