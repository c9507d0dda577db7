"""Workload `disjoint`: do writers of different keys of one dict conflict? (issue 11)

On the superstatic cluster of the write workloads: `disjoint_clients` client processes x
`disjoint_threads` callers; each caller owns one key of one shared root dict (created as 0
before timing) and runs `d[k] = d[k] + 1` in a function decorated with
`@superstatic.transaction()`, back to back for one measurement window. No two callers touch
the same key, so every retry is a conflict the data model invents. The retry count is the
library's own counter (`superstatic.stats()["txn_retries"]`: bodies run again after a
conflict), its delta over the run in each process, summed; the row also carries the PROPOSEs
the agents answered `conflict` and the transactions that gave up (`ConflictError`, counted as
errors too). Retry rate = retries / transactions run (warm-up included, like the counters).
Target: 0 retries.
"""

from __future__ import annotations

from typing import Any

from superstatic_bench import report
from superstatic_bench.measure import run_row
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.systems import Deployment

TIMEOUT_S_SETUP = 120.0


def run(deployment: Deployment, settings: Settings, progress: Progress) -> dict[str, Any]:
    clients, threads = settings.disjoint_clients, settings.disjoint_threads
    workers = deployment.clients(clients)
    for worker in workers:
        worker.call({"cmd": "disjoint_setup", "threads": threads}, TIMEOUT_S_SETUP)
    label = f"disjoint: {clients} clients x {threads} read-modify-write their own keys"
    with progress.step(label, settings.warmup_s + settings.duration_s) as shown:
        row = run_row(deployment, "disjoint", clients, threads, settings)
        shown["result"] = f"{report.rate(row['ops_per_s'])} txn/s, {row['retries']} retries" + (
            f", errors {row['errors']}" if row["errors"] else ""
        )
    return {"rows": [row]}


def render(outcome: dict[str, Any], markdown: bool) -> str:
    headers = [
        "clients",
        "threads",
        "txn/s",
        "p50",
        "p99",
        "transactions",
        "retries",
        "retries/txn",
        "conflict answers",
        "gave up",
        "errors",
    ]
    body = []
    for r in outcome["rows"]:
        lat = r.get("latency_us", {})
        library = r.get("library", {})
        rate = r.get("retry_rate")
        body.append(
            [
                r["clients"],
                r["threads"],
                report.rate(r["ops_per_s"]),
                report.us(lat.get("p50")),
                report.us(lat.get("p99")),
                r.get("calls", "-"),
                "-" if r.get("retries") is None else r["retries"],
                "-" if rate is None else f"{rate:.2f}",
                library.get("conflict_answers", "-"),
                library.get("conflict_errors", "-"),
                ", ".join(f"{k}={v}" for k, v in r.get("errors", {}).items()) or "-",
            ]
        )
    return report.table(headers, body, markdown)
