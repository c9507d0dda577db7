"""Workload `bigdict`: does a write cost more when the dict it goes into is bigger? (issue 11)

On the superstatic cluster of the write workloads: for each size in `bigdict_sizes` (100 and
100,000), client 0 fills a root dict of that many keys (`bigdict_fill_batch` keys per
transaction, before any timing), then 3 client processes x `threads` callers each set existing
keys of it back to back for one measurement window: lone blind writes `d[k] = v` (they never
conflict), the callers striding through the whole dict so every key is written in turn. The
row is the `throughput` row's shape; the summary is the ratio of the largest dict's rate to
the smallest's (target: at least 0.8, i.e. a write costs what it changes, not the container).
Values are `bigdict_value_bytes` long: today a dict is one record of at most 8 MiB, which
100,000 of the throughput workload's 100-byte values would not fit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from superstatic_bench import report
from superstatic_bench.measure import run_row
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.systems import Deployment

CLIENTS = 3
TIMEOUT_S_FILL = 3600.0
RATIO_MIN = 0.8  # the target: the largest dict's rate at least this x the smallest's


def steps(settings: Settings) -> int:
    return 2 * len(settings.bigdict_sizes)  # a fill and a row per size


def ratio(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes/s into the largest dict over writes/s into the smallest (None: not measured)."""
    measured = [r for r in rows if r.get("ops_per_s")]
    if len(measured) < 2:
        return {"small_keys": None, "large_keys": None, "ratio": None}
    small = min(measured, key=lambda r: r["dict_keys"])
    large = max(measured, key=lambda r: r["dict_keys"])
    return {
        "small_keys": small["dict_keys"],
        "large_keys": large["dict_keys"],
        "ratio": float(large["ops_per_s"]) / float(small["ops_per_s"]),
    }


def run(deployment: Deployment, settings: Settings, progress: Progress) -> dict[str, Any]:
    sized = replace(settings, payload_bytes=settings.bigdict_value_bytes)
    rows: list[dict[str, Any]] = []
    for size in settings.bigdict_sizes:
        workers = deployment.clients(CLIENTS)
        with progress.step(f"bigdict: fill a dict of {size:,} keys") as shown:
            filled = workers[0].call(
                {
                    "cmd": "fill_big",
                    "dict_keys": size,
                    "batch": settings.bigdict_fill_batch,
                    "value_bytes": settings.bigdict_value_bytes,
                },
                TIMEOUT_S_FILL,
            )
            shown["result"] = f"{filled['keys']:,} keys in {filled['seconds']:.1f} s"
        label = f"bigdict: {CLIENTS} clients x {settings.threads} set keys of {size:,}"
        with progress.step(label, settings.warmup_s + settings.duration_s) as shown:
            row = run_row(
                deployment, "big_write", CLIENTS, settings.threads, sized, {"dict_keys": size}
            )
            row["dict_keys"] = size
            row["fill"] = filled
            rows.append(row)
            shown["result"] = f"{report.rate(row['ops_per_s'])} writes/s" + (
                f", errors {row['errors']}" if row["errors"] else ""
            )
    return {"rows": rows, "summary": ratio(rows)}


def render(outcome: dict[str, Any], markdown: bool) -> str:
    headers = ["dict keys", "clients", "threads", "writes/s", "p50", "p99", "max", "errors"]
    body = []
    for r in outcome["rows"]:
        lat = r.get("latency_us", {})
        body.append(
            [
                f"{r['dict_keys']:,}",
                r["clients"],
                r["threads"],
                report.rate(r["ops_per_s"]),
                report.us(lat.get("p50")),
                report.us(lat.get("p99")),
                report.us(lat.get("max")),
                ", ".join(f"{k}={v}" for k, v in r.get("errors", {}).items()) or "-",
            ]
        )
    notes = []
    summary = outcome.get("summary", {})
    if summary.get("ratio") is not None:
        notes.append(
            f"ratio {summary['large_keys']:,} / {summary['small_keys']:,} keys: "
            f"{summary['ratio']:.2f} (target >= {RATIO_MIN:g})"
        )
    return report.with_notes(report.table(headers, body, markdown), notes, markdown)
