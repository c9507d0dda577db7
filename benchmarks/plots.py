"""PNG plots of a run: throughput vs client processes, and latency percentiles per system.

matplotlib is optional (the `bench` extra): without it the suite says so and writes no PNG.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

PERCENTILE_KEYS = ("p50", "p90", "p99", "max")


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _rows(results: dict[str, Any], *workloads: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in workloads:
        out.extend(results.get("workloads", {}).get(name, {}).get("rows", []))
    return out


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes the plots the results allow; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written: list[Path] = []
    writes = [r for r in _rows(results, "throughput", "nofsync") if r["op"] == "write"]
    if writes:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        labels = sorted({r["label"] for r in writes})
        for label in labels:
            points = sorted((r["clients"], r["ops_per_s"]) for r in writes if r["label"] == label)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xlabel("client processes (each with many concurrent callers)")
        ax.set_ylabel("committed writes/s")
        ax.set_title("Throughput vs. clients (small writes)")
        ax.set_xticks(sorted({r["clients"] for r in writes}))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for name, title in (
        ("sequential", "Sequential call latency (1 client)"),
        ("throughput", "Write latency under load"),
    ):
        rows = [r for r in _rows(results, name) if r.get("latency_us")]
        if name == "throughput":
            clients_max = max((r["clients"] for r in rows), default=0)
            rows = [r for r in rows if r["clients"] == clients_max]
            title += f" ({clients_max} client processes)"
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            values = [row["latency_us"].get(k, 0.0) / 1000 for k in PERCENTILE_KEYS]
            xs = [x + i * width for x in range(len(PERCENTILE_KEYS))]
            ax.bar(xs, values, width=width, label=row["label"])
        ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(PERCENTILE_KEYS))])
        ax.set_xticklabels(PERCENTILE_KEYS)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"latency-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
