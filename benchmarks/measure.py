"""One measured row: every client process runs the same operation over the same window."""

from __future__ import annotations

import time
from typing import Any

from superstatic_bench.settings import Settings
from superstatic_bench.stats import summarize_groups_us
from superstatic_bench.systems import Deployment
from superstatic_bench.workloads import batches, throughput

# Lead time between sending "run" and the common start: every client must have read it.
START_DELAY_S = 0.3
# Time a client gets beyond its run to answer (a stuck operation is reported, not waited on).
TIMEOUT_S_ANSWER_MARGIN = 120.0


def run_row(
    deployment: Deployment,
    op: str,
    clients: int,
    threads: int,
    settings: Settings,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`extra`: fields the op needs beyond the common ones (big_write: dict_keys)."""
    workers = deployment.clients(clients)
    start_at = time.time() + START_DELAY_S
    command = {
        **(extra or {}),
        "cmd": "run",
        "op": op,
        "clients": clients,
        "threads": threads,
        "start_at": start_at,
        "warmup_s": settings.warmup_s,
        "duration_s": settings.duration_s,
        "payload_bytes": settings.payload_bytes,
        "keys_per_thread": settings.keys_per_thread,
    }
    procs = deployment.cpu_processes(workers)
    # The agents' batch counters (workloads/batches.py), where the system has them.
    batch_counters = getattr(deployment.cluster, "batch_counters", None)
    for worker in workers:
        worker.send(command)
    # Every process's CPU over the clients' counting window (workloads/throughput.py).
    window_start = start_at + settings.warmup_s
    _sleep_until(window_start)
    before, began = throughput.sample(procs), time.time()
    # After the CPU sample: the STATUS round trips are not in its window's edges.
    counted_before = batch_counters() if batch_counters is not None else None
    _sleep_until(window_start + settings.duration_s)
    after, ended = throughput.sample(procs), time.time()
    counted_after = batch_counters() if batch_counters is not None else None
    timeout_s = START_DELAY_S + settings.warmup_s + settings.duration_s + TIMEOUT_S_ANSWER_MARGIN
    answers = [worker.receive(timeout_s) for worker in workers]
    row = row_from_answers(
        deployment.name, deployment.label, op, clients, threads, settings, answers
    )
    cpu = throughput.summarize(
        procs, before, after, row["ops"], max(ended - began, 1e-3), throughput.cores()
    )
    if cpu is not None:
        row["cpu"] = cpu
    if counted_before is not None and counted_after is not None:
        record = batches.summarize(counted_before, counted_after, row["ops"])
        if record is not None:
            row["batches"] = record
    return row


def _sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        time.sleep(delay)


def row_from_answers(
    system: str,
    label: str,
    op: str,
    clients: int,
    threads: int,
    settings: Settings,
    answers: list[dict[str, Any]],
) -> dict[str, Any]:
    ops = sum(int(a["ops"]) for a in answers)
    calls = sum(int(a["calls"]) for a in answers)
    attempts = sum(int(a["attempts"]) for a in answers)
    errors: dict[str, int] = {}
    for answer in answers:
        for name, n in answer.get("errors", {}).items():
            errors[name] = errors.get(name, 0) + int(n)
    groups = [(g[0], int(g[1])) for a in answers for g in a.get("groups", [])]
    row: dict[str, Any] = {
        "system": system,
        "label": label,
        "op": op,
        "clients": clients,
        "threads": threads,
        "payload_bytes": settings.payload_bytes,
        "keys_per_thread": settings.keys_per_thread,
        "duration_s": settings.duration_s,
        "ops": ops,
        "ops_per_s": ops / settings.duration_s,
        "latency_us": summarize_groups_us(groups),
        "errors": errors,
    }
    library: dict[str, int] = {}
    for answer in answers:
        for name, n in answer.get("library", {}).items():
            library[name] = library.get(name, 0) + int(n)
    if library:
        # The system's own counters over the whole run (warm-up too), summed over processes.
        row["library"] = library
        row["calls"] = calls
    if op == "disjoint":
        retries = library.get("txn_retries")
        row["retries"] = retries
        row["retry_rate"] = retries / calls if calls and retries is not None else None
    if op == "rmw":
        row["calls"] = calls
        row["attempts"] = attempts
        # Conflict retries per committed read-modify-write, over the whole run (warm-up too).
        row["retry_rate"] = (attempts - calls) / calls if calls else None
    return row
