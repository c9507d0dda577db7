"""Workload `manyroots`: does creating a root cost more when there are many? (issue 11)

A fresh 3-agent cluster (the root table it grows would slow every other workload) and one app
process (`python -m superstatic_bench.client --system none`, which connects on command):

1. the first `manyroots_samples` roots are created one at a time, each
   `superstatic.root(name, dict)` timed (the first is the cluster's 1st root);
2. roots are created in bulk until there are `manyroots_count` (100,000): as many per
   transaction as the limits allow: `manyroots_batch` (at most BATCH_MAX, 50,000) to start
   with, halved whenever the library or the agent refuses a transaction with `LimitExceeded`
   (the limits hit are reported);
3. the next `manyroots_samples` roots are timed one at a time again (the first of them is the
   100,001st).

Reported: the 1st and the 100,001st root's times, the medians of each sample, and the ratio of
the medians (target: at most 1.5). Today all roots live in one record, re-encoded by every
root created.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from superstatic_bench import report
from superstatic_bench.procs import ProcessGroup
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.stats import median, percentile
from superstatic_bench.systems import TIMEOUT_S_LEADER, SuperstaticCluster

from superstatic.protocol.ops import TXN_OPS_MAX

TIMEOUT_S_APP = 120.0
TIMEOUT_S_BULK = 3600.0
TIMEOUT_S_TIMED = 600.0
FIRST_PREFIX = "bench.roots.first."
BULK_PREFIX = "bench.roots.bulk."
AFTER_PREFIX = "bench.roots.after."
ROOTS_MAX = 10_000_000
# A new root is two wire ops (the new node, and its item in the root table), and a PROPOSE
# carries at most TXN_OPS_MAX (100,000) ops: so at most 50,000 roots per transaction. (The
# library bounds a transaction's new nodes and its ops apart, each to 100,000, so a bigger batch
# is not refused with LimitExceeded but trips an assertion when the body is encoded.)
WIRE_OPS_PER_ROOT = 2
BATCH_MAX = TXN_OPS_MAX // WIRE_OPS_PER_ROOT
RATIO_MAX = 1.5  # the target: the 100,001st root within this x the 1st


def steps() -> int:
    return 4  # start, time the first roots, bulk, time the later roots


def _count(command: dict[str, Any], name: str, top: int) -> int:
    value = int(command[name])
    if not 1 <= value <= top:
        raise ValueError(f"{name} outside 1..{top}")
    return value


def roots_command(command: dict[str, Any]) -> dict[str, Any]:
    """The app side (a `--system none` client process): phase connect, time or bulk."""
    import superstatic

    phase = command["phase"]
    if phase == "connect":
        # The suite names the key file (or none), whatever the environment says.
        os.environ.pop("SUPERSTATIC_KEYS", None)
        superstatic.connect(list(command["endpoints"]), keys=command.get("keys") or None)
        return {"connected": True}
    prefix = str(command["prefix"])
    count = _count(command, "count", ROOTS_MAX)
    if phase == "time":
        seconds: list[float] = []
        for i in range(count):
            began = time.perf_counter()
            superstatic.root(f"{prefix}{i}", dict)
            seconds.append(time.perf_counter() - began)
        return {"seconds": seconds}
    if phase == "bulk":
        batch = _count(command, "batch", BATCH_MAX)
        limits_hit: list[dict[str, Any]] = []
        made = transactions = 0
        began = time.perf_counter()
        while made < count:
            n = min(batch, count - made)
            try:
                with superstatic.transaction():
                    for i in range(made, made + n):
                        superstatic.root(f"{prefix}{i}", dict)
            except superstatic.LimitExceeded as exc:
                if n == 1:
                    raise
                limits_hit.append({"batch": n, "limit": exc.limit_name})
                batch = max(1, n // 2)
                continue
            made += n
            transactions += 1
        return {
            "created": made,
            "transactions": transactions,
            "batch": batch,
            "limits_hit": limits_hit,
            "seconds": time.perf_counter() - began,
        }
    raise ValueError("phase is one of connect, time, bulk")


def summarize(first: list[float], after: list[float], bulk: dict[str, Any]) -> dict[str, Any]:
    first_ms = [s * 1000 for s in first]
    after_ms = [s * 1000 for s in after]
    first_median, after_median = median(first_ms), median(after_ms)
    return {
        "roots_existing": len(first_ms) + int(bulk["created"]),
        "first_ms": first_ms[0],
        "first_median_ms": first_median,
        "first_p99_ms": percentile(sorted(first_ms), 99),
        "after_ms": after_ms[0],
        "after_median_ms": after_median,
        "after_p99_ms": percentile(sorted(after_ms), 99),
        "ratio": after_median / first_median if first_median > 0 else None,
        "samples": len(first_ms),
        "first_samples_ms": first_ms,
        "after_samples_ms": after_ms,
        "bulk": bulk,
    }


def run(
    group: ProcessGroup, base_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    samples = settings.manyroots_samples
    bulk_count = settings.manyroots_count - samples
    if bulk_count < 1:
        raise ValueError("manyroots_count must exceed manyroots_samples")
    cluster = SuperstaticCluster(base_dir, name="manyroots", agent_args=settings.agent_args)
    try:
        with progress.step("manyroots: start a fresh cluster"):
            cluster.start()
            cluster.local.leader(TIMEOUT_S_LEADER)
        app = group.start_worker(
            "manyroots-app", ["-m", "superstatic_bench.client", "--system", "none"]
        )
        try:
            app.receive(TIMEOUT_S_APP)
            options = cluster.client_options(0)
            app.call(
                {
                    "cmd": "roots",
                    "phase": "connect",
                    "endpoints": cluster.endpoints(0),
                    "keys": options["keys"],
                },
                TIMEOUT_S_APP,
            )
            with progress.step(f"manyroots: create the first {samples} roots, one by one") as s:
                first = app.call(
                    {"cmd": "roots", "phase": "time", "prefix": FIRST_PREFIX, "count": samples},
                    TIMEOUT_S_TIMED,
                )["seconds"]
                s["result"] = f"median {median(first) * 1000:.2f} ms"
            with progress.step(f"manyroots: create {bulk_count:,} roots in bulk") as s:
                bulk = app.call(
                    {
                        "cmd": "roots",
                        "phase": "bulk",
                        "prefix": BULK_PREFIX,
                        "count": bulk_count,
                        "batch": min(settings.manyroots_batch, BATCH_MAX),
                    },
                    TIMEOUT_S_BULK,
                )
                s["result"] = (
                    f"{bulk['transactions']} transactions of up to {bulk['batch']:,} roots, "
                    f"{bulk['seconds']:.1f} s"
                )
            total = samples + bulk_count
            label = f"manyroots: create roots {total + 1:,} to {total + samples:,}, one by one"
            with progress.step(label) as s:
                after = app.call(
                    {"cmd": "roots", "phase": "time", "prefix": AFTER_PREFIX, "count": samples},
                    TIMEOUT_S_TIMED,
                )["seconds"]
                s["result"] = f"median {median(after) * 1000:.2f} ms"
        finally:
            group.stop(app.process)
    finally:
        cluster.close()
    return summarize(first, after, bulk)


def render(outcome: dict[str, Any], markdown: bool) -> str:
    n = outcome["roots_existing"]
    rows = [
        [
            "root 1",
            report.us(outcome["first_ms"] * 1000),
            report.us(outcome["first_median_ms"] * 1000),
            report.us(outcome["first_p99_ms"] * 1000),
        ],
        [
            f"root {n + 1:,}",
            report.us(outcome["after_ms"] * 1000),
            report.us(outcome["after_median_ms"] * 1000),
            report.us(outcome["after_p99_ms"] * 1000),
        ],
    ]
    samples = outcome["samples"]
    headers = ["root", "time", f"median of {samples}", f"p99 of {samples}"]
    bulk = outcome["bulk"]
    ratio = outcome.get("ratio")
    note = (
        f"ratio of the medians: {'-' if ratio is None else f'{ratio:.2f}'} "
        f"(target <= {RATIO_MAX:g}); bulk: {bulk['created']:,} roots in "
        f"{bulk['transactions']} transactions (up to {bulk['batch']:,} each), "
        f"{bulk['seconds']:.1f} s"
    )
    if bulk.get("limits_hit"):
        hit = ", ".join(f"{h['limit']} at {h['batch']:,}" for h in bulk["limits_hit"])
        note += f"; limits hit: {hit}"
    return report.with_notes(report.table(headers, rows, markdown), [note], markdown)
