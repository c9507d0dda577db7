"""Workload `heapmem`: an app's memory after touching 1% of the cluster's objects (issue 13
item 5; docs/virtual-heap.md section 8).

One fresh 3-agent cluster. First, against the still **empty** cluster, a fresh app process per
mode connects and reads its anonymous resident memory (RssAnon, after `gc.collect()`): the
baseline. Then the cluster is loaded with `heapmem_objects` objects (the catch-up layout:
small dicts in buckets of 1,000 under one root dict), and a fresh app process per mode
connects and reads one key of `heapmem_touch` objects chosen at random (seeded; heap_app
`mem`), then its RssAnon again. Reported: that minus the same mode's baseline (the target,
HEAPMEM_MB_MAX, is for the partial replica), the growth inside the process (after touching
minus after connecting), the replica's own estimate of what it holds (`Replica.held_bytes`)
and its load and stub counters. `replicate="all"` is the contrast, up to
`heapstart_all_objects_max` objects.

The issue states the target at 10,000 of 1,000,000 objects (`--large`); the default run
touches 1,000 of 100,000 (the same 1%), because loading 1M objects and touching 10,000 of them
(about three round trips each) takes several minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from superstatic_bench import machine, report
from superstatic_bench.procs import ProcessGroup
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.targets import HEAPMEM_MB_MAX
from superstatic_bench.workloads import heap_cluster

TARGET_OBJECTS = 1_000_000
TARGET_TOUCH = 10_000
TIMEOUT_S_TOUCH = 3600.0
SEED = 13
MB = 1e6


def steps(settings: Settings) -> int:
    return 4  # start, the empty baselines, the load, the touching apps


def modes(settings: Settings) -> list[str]:
    if settings.heapmem_objects <= settings.heapstart_all_objects_max:
        return ["partial", "all"]
    return ["partial"]


def summarize_row(baseline: dict[str, Any], touched: dict[str, Any], mode: str) -> dict[str, Any]:
    """One mode: the touched app's memory above the empty-cluster app's, and its facts."""
    anon = touched["rss_touched"]["RssAnon"] - baseline["rss_touched"]["RssAnon"]
    total = touched["rss_touched"]["VmRSS"] - baseline["rss_touched"]["VmRSS"]
    grown = touched["rss_touched"]["RssAnon"] - touched["rss_connected"]["RssAnon"]
    return {
        "replicate": mode,
        "objects": touched["objects"],
        "touched": touched["touched"],
        "found": touched["found"],
        "touch_s": touched["touch_s"],
        "above_empty_anon_mb": anon / MB,
        "above_empty_rss_mb": total / MB,
        "grown_while_touching_mb": grown / MB,
        "held_mb": touched["held_bytes"] / MB,
        "heap_stats": touched.get("heap_stats", {}),
        "baseline": baseline,
        "app": touched,
    }


def run(
    group: ProcessGroup, base_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    objects, touch = settings.heapmem_objects, settings.heapmem_touch
    chosen = modes(settings)
    baselines: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    with progress.step("heapmem: start a fresh cluster"):
        cluster = heap_cluster.start_cluster(base_dir, "heapmem", settings)
    with heap_cluster.serving(cluster):

        def measure(mode: str, n: int, k: int, name: str) -> dict[str, Any]:
            command = {
                **heap_cluster.connect_command(cluster, cluster.endpoints(0), mode),
                "phase": "mem",
                "objects": n,
                "touch": k,
                "seed": SEED,
            }
            return heap_cluster.one_shot(group, name, command, TIMEOUT_S_TOUCH)

        with progress.step("heapmem: apps against the empty cluster") as s:
            for mode in chosen:
                baselines[mode] = measure(mode, 0, 0, f"heapmem-empty-{mode}")
            s["result"] = ", ".join(
                f"{m} {b['rss_touched']['RssAnon'] / MB:.1f} MB" for m, b in baselines.items()
            )
        with (
            heap_cluster.loader(group, cluster, settings, "heapmem") as loader,
            progress.step(f"heapmem: load {objects:,} objects") as s,
        ):
            loaded = loader.grow_to(objects)
            assert loaded is not None
            s["result"] = f"{loaded['objects_per_s']:,.0f} objects/s"
        with progress.step(f"heapmem: touch {touch:,} of {objects:,} objects") as s:
            before = machine.load_average()
            for mode in chosen:
                touched = measure(mode, objects, touch, f"heapmem-{objects}-{mode}")
                row = summarize_row(baselines[mode], touched, mode)
                rows.append(row)
            after = machine.load_average()
            for row in rows:
                row["load_average"] = [before, after]
            s["result"] = ", ".join(
                f"{r['replicate']} +{r['above_empty_anon_mb']:.1f} MB" for r in rows
            )
    partial = next((r for r in rows if r["replicate"] == "partial"), None)
    return {
        "objects": objects,
        "touched": touch,
        "load": loaded,
        "rows": rows,
        "partial_above_empty_mb": partial["above_empty_anon_mb"] if partial else None,
    }


def render(outcome: dict[str, Any], markdown: bool) -> str:
    rows = []
    for r in outcome["rows"]:
        stats = r.get("heap_stats", {})
        pair = r.get("load_average")
        rows.append(
            [
                r["replicate"],
                f"{r['touched']:,} of {r['objects']:,}",
                f"{r['above_empty_anon_mb']:.1f} MB",
                f"{r['above_empty_rss_mb']:.1f} MB",
                f"{r['grown_while_touching_mb']:.1f} MB",
                f"{r['held_mb']:.1f} MB",
                f"{stats.get('loads', '-')} / {stats.get('stubs_made', '-')}",
                f"{r['touch_s']:.2f} s",
                "-" if not pair else " / ".join(f"{p[0]:.1f}" for p in pair),
            ]
        )
    headers = [
        "replicate",
        "touched",
        "RssAnon above empty app",
        "VmRSS above empty app",
        "grown while touching",
        "held (estimate)",
        "loads / stubs made",
        "touching took",
        "load before / after",
    ]
    text = report.table(headers, rows, markdown)
    notes: list[str] = []
    notes.append(
        f"target: partial < {HEAPMEM_MB_MAX:g} MB above the empty app, stated at "
        f"{TARGET_TOUCH:,} of {TARGET_OBJECTS:,} objects"
    )
    if outcome["objects"] != TARGET_OBJECTS:
        notes[-1] += (
            f" (this run: {outcome['touched']:,} of {outcome['objects']:,}; --large for 1M)"
        )
    return report.with_notes(text, notes, markdown)
