"""Workload `heapstart`: an app's `connect()` plus its first read of one counter root, with 0,
100,000 (and, with --large, 1,000,000) other objects in the cluster (issue 13 item 5;
docs/virtual-heap.md section 8).

One fresh 3-agent cluster, grown in steps (heap_cluster.Loader: the catch-up layout). At each
size, `heapstart_samples` samples per mode, each in a fresh app process (a first connect is
only first in a new process): `replicate="partial"` always, `replicate="all"` up to
`heapstart_all_objects_max` objects (a full replica of 1M objects is the 28 s the issue
started from); the modes alternate sample by sample, so a burst of load on the shared machine
hits both. Each sample times `connect()` and the first read apart (heap_app `start`).

Reported per size and mode: the median and max of connect + first read, and of each part;
the load average before and after. Targets (targets.py): the partial median at the largest
size under HEAPSTART_MS_MAX, and its ratio over the median at 0 objects under
HEAPSTART_RATIO_MAX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from superstatic_bench import machine, report
from superstatic_bench.procs import ProcessGroup
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.stats import median
from superstatic_bench.targets import HEAPSTART_MS_MAX, HEAPSTART_RATIO_MAX
from superstatic_bench.workloads import heap_cluster

TARGET_OBJECTS = 1_000_000  # the size the targets are stated at


def steps(settings: Settings) -> int:
    # Start the cluster, then per size: a load (none at 0) and the samples.
    return 1 + sum(2 if n else 1 for n in settings.heapstart_sizes)


def modes_at(objects: int, settings: Settings) -> list[str]:
    return ["partial", "all"] if objects <= settings.heapstart_all_objects_max else ["partial"]


def summarize_row(objects: int, replicate: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One size and mode: milliseconds of each sample's parts, their medians and maxima."""
    connect_ms = [s["connect_s"] * 1000 for s in samples]
    read_ms = [s["read_s"] * 1000 for s in samples]
    total_ms = [c + r for c, r in zip(connect_ms, read_ms, strict=True)]
    return {
        "objects": objects,
        "replicate": replicate,
        "samples": len(samples),
        "total_median_ms": median(total_ms),
        "total_max_ms": max(total_ms),
        "connect_median_ms": median(connect_ms),
        "connect_max_ms": max(connect_ms),
        "read_median_ms": median(read_ms),
        "read_max_ms": max(read_ms),
        "import_median_ms": median([s["import_s"] * 1000 for s in samples]),
        "total_ms": total_ms,
        "connect_ms": connect_ms,
        "read_ms": read_ms,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The partial rows' largest size, its median, and its ratio over the empty cluster's."""
    partial = sorted(
        (r for r in rows if r["replicate"] == "partial"), key=lambda r: int(r["objects"])
    )
    if not partial:
        return {"largest": None, "largest_median_ms": None, "ratio": None}
    empty = partial[0] if partial[0]["objects"] == 0 else None
    largest = partial[-1]
    ratio = None
    if empty is not None and largest is not empty and empty["total_median_ms"] > 0:
        ratio = largest["total_median_ms"] / empty["total_median_ms"]
    return {
        "largest": largest["objects"],
        "largest_median_ms": largest["total_median_ms"],
        "ratio": ratio,
    }


def run(
    group: ProcessGroup, base_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    with progress.step("heapstart: start a fresh cluster"):
        cluster = heap_cluster.start_cluster(base_dir, "heapstart", settings)
    with (
        heap_cluster.serving(cluster),
        heap_cluster.loader(group, cluster, settings, "heapstart") as loader,
    ):
        loader.counter()
        for objects in sorted(settings.heapstart_sizes):
            if objects:
                with progress.step(f"heapstart: grow the cluster to {objects:,} objects") as s:
                    loaded = loader.grow_to(objects)
                    if loaded is not None:
                        loads.append({**loaded, "load_average": machine.load_average()})
                        s["result"] = f"{loaded['objects_per_s']:,.0f} objects/s"
            modes = modes_at(objects, settings)
            label = f"heapstart: {objects:,} objects, {' and '.join(modes)}"
            with progress.step(label) as s:
                before = machine.load_average()
                samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
                for i in range(settings.heapstart_samples):
                    for mode in modes:
                        command = {
                            **heap_cluster.connect_command(cluster, cluster.endpoints(0), mode),
                            "phase": "start",
                        }
                        samples[mode].append(
                            heap_cluster.one_shot(group, f"heapstart-{objects}-{mode}-{i}", command)
                        )
                after = machine.load_average()
                for mode in modes:
                    row = summarize_row(objects, mode, samples[mode])
                    row["load_average"] = [before, after]
                    rows.append(row)
                s["result"] = ", ".join(
                    f"{r['replicate']} median {r['total_median_ms']:.1f} ms"
                    for r in rows[-len(modes) :]
                )
    return {"rows": rows, "loads": loads, **summarize(rows)}


def render(outcome: dict[str, Any], markdown: bool) -> str:
    rows = [
        [
            f"{r['objects']:,}",
            r["replicate"],
            r["samples"],
            _time(r["total_median_ms"]),
            _time(r["total_max_ms"]),
            _time(r["connect_median_ms"]),
            _time(r["connect_max_ms"]),
            _time(r["read_median_ms"]),
            _time(r["read_max_ms"]),
            _loads(r.get("load_average")),
        ]
        for r in outcome["rows"]
    ]
    headers = [
        "other objects",
        "replicate",
        "samples",
        "median",
        "max",
        "connect median",
        "connect max",
        "first read median",
        "first read max",
        "load before / after",
    ]
    text = report.table(headers, rows, markdown)
    notes: list[str] = []
    ratio = outcome.get("ratio")
    if outcome.get("largest") is not None:
        notes.append(
            f"partial at {outcome['largest']:,} objects: median "
            f"{outcome['largest_median_ms']:.1f} ms (target < {HEAPSTART_MS_MAX:g} ms at "
            f"{TARGET_OBJECTS:,}); over the empty cluster's: "
            f"{'-' if ratio is None else f'{ratio:.2f}'} (target < {HEAPSTART_RATIO_MAX:g})"
        )
    for loaded in outcome.get("loads", []):
        notes.append(
            f"loaded objects {loaded['first']:,} to {loaded['count']:,} at "
            f"{loaded['objects_per_s']:,.0f} objects/s"
        )
    return report.with_notes(text, notes, markdown)


def _time(ms: float) -> str:
    """Milliseconds as the table shows them: seconds for a full replica's connect."""
    return f"{ms / 1000:.2f} s" if ms >= 1000 else report.us(ms * 1000)


def _loads(pair: Any) -> str:
    """Load averages before and after (the 1-minute figure of each)."""
    if not pair or not all(pair):
        return "-"
    return " / ".join(f"{p[0]:.1f}" for p in pair)
