"""The curve workload: what ZeroMQ CURVE costs (docs/security.md, "What it costs").

Two measurements, each alternating keyed and unkeyed so that the load of a shared machine falls
on both alike:

* the floor: a ZeroMQ DEALER/ROUTER round trip between two processes, plain and over CURVE,
  64 B and 4 KiB messages, in `curve_rounds` alternating rounds;
* the cluster: a keyed and an unkeyed 3-agent cluster, both running (the idle one costs a few
  % of a core), and the sequential and throughput rows measured on each in turn, for
  `curve_rounds` rounds (the order flips every round). The cost is the change of the medians.
  In both clusters client 0 (the sequential row's) sits at the agent after the leader, a
  follower: before, it sat at agent a in both, which led in one cluster and not in the other
  by chance, and a leader-attached call is about 0.25 ms shorter (the per-hop trace). Each row
  records `first_agent` and the `leader` after it.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from superstatic_bench.measure import run_row
from superstatic_bench.procs import ProcessGroup
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.systems import TIMEOUT_S_LEADER, Deployment, SuperstaticCluster
from superstatic_bench.workloads import floors

from superstatic.client import keys as client_keys

KEYED = "superstatic-keyed"
PLAIN = "superstatic-nokeys"
FLOOR_MESSAGE_BYTES = (64, 4096)


def steps(settings: Settings, rows: int) -> int:
    """Progress steps: two starts, the floors, each row on both clusters in every round."""
    return 2 + settings.curve_rounds * (len(FLOOR_MESSAGE_BYTES) + 2 * rows)


def run(
    group: ProcessGroup,
    work_dir: Path,
    settings: Settings,
    progress: Progress,
    row_specs: Sequence[tuple[str, str, int, int]],
) -> dict[str, Any]:
    """`row_specs`: (workload, op, client processes, callers each) of the rows to compare."""
    result: dict[str, Any] = {"floor": _floors(group, work_dir, settings, progress)}
    clusters = {
        name: SuperstaticCluster(
            work_dir, keyed=name == KEYED, name=name, agent_args=settings.agent_args
        )
        for name in (KEYED, PLAIN)
    }
    deployments = {name: Deployment(c, "superstatic", group) for name, c in clusters.items()}
    rows: list[dict[str, Any]] = []
    try:
        first_agent: dict[str, str] = {}
        for name, cluster in clusters.items():
            with progress.step(f"start {cluster.label} ({cluster.name})"):
                cluster.start()
                cluster.local.leader(TIMEOUT_S_LEADER)
                first_agent[name] = cluster.first_client_at_a_follower()
        for round_index in range(settings.curve_rounds):
            order = [KEYED, PLAIN] if round_index % 2 == 0 else [PLAIN, KEYED]
            for workload, op, clients, threads in row_specs:
                for name in order:
                    label = (
                        f"curve round {round_index + 1}: {workload}, "
                        f"{clusters[name].label}, {clients} client(s) x {threads}"
                    )
                    with progress.step(label, settings.warmup_s + settings.duration_s) as shown:
                        row = run_row(deployments[name], op, clients, threads, settings)
                        row["round"] = round_index
                        row["workload"] = workload
                        # Where client 0 sat, and who led once the row was done (a leader change
                        # mid-run would show here).
                        row["first_agent"] = first_agent[name]
                        row["leader"] = clusters[name].local.leader(TIMEOUT_S_LEADER)
                        rows.append(row)
                        shown["result"] = f"{row['ops_per_s']:,.0f} ops/s"
    finally:
        for deployment in deployments.values():
            deployment.close()
    result["rows"] = rows
    result["cost"] = cost(rows)
    return result


def _floors(
    group: ProcessGroup, work_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    keys_dir = Path(tempfile.mkdtemp(prefix="curve-keys-", dir=work_dir))
    client_keys.create_keys_dir(keys_dir, ["echo"], [])
    key_file = keys_dir / "agents" / "echo.key_secret"
    samples: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(settings.curve_rounds):
        for size in FLOOR_MESSAGE_BYTES:
            with progress.step(f"curve floor round {round_index + 1}: {size} B round trips"):
                modes = [("plain", None), ("curve", key_file)]
                if round_index % 2:
                    modes.reverse()
                for mode, key in modes:
                    summary = floors.zmq_round_trip(
                        group, settings.floor_ops, curve_key_file=key, message_bytes=size
                    )
                    samples.setdefault(f"{mode}_{size}", []).append(summary)
    out: dict[str, Any] = {}
    for name, summaries in samples.items():
        out[name] = {
            "p50_us": statistics.median(s["p50"] for s in summaries),
            "p99_us": statistics.median(s["p99"] for s in summaries),
            "rounds": len(summaries),
        }
    for size in FLOOR_MESSAGE_BYTES:
        plain, curve = out[f"plain_{size}"]["p50_us"], out[f"curve_{size}"]["p50_us"]
        out[f"cost_{size}"] = {"p50_us": curve - plain, "p50_pct": _pct(curve, plain)}
    return out


def cost(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row kind: the medians over the rounds, keyed and unkeyed, and the change."""
    kinds: dict[tuple[str, str, int, int], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (row["workload"], row["op"], row["clients"], row["threads"])
        kinds.setdefault(key, {}).setdefault(row["system"], []).append(row)
    out = []
    for (workload, op, clients, threads), by_system in kinds.items():
        keyed, plain = by_system.get(KEYED, []), by_system.get(PLAIN, [])
        if not keyed or not plain:
            continue
        keyed_ops = statistics.median(r["ops_per_s"] for r in keyed)
        plain_ops = statistics.median(r["ops_per_s"] for r in plain)
        keyed_p50 = statistics.median(r["latency_us"]["p50"] for r in keyed)
        plain_p50 = statistics.median(r["latency_us"]["p50"] for r in plain)
        out.append(
            {
                "workload": workload,
                "op": op,
                "clients": clients,
                "threads": threads,
                "rounds": min(len(keyed), len(plain)),
                "keyed_ops_per_s": keyed_ops,
                "plain_ops_per_s": plain_ops,
                "ops_per_s_pct": _pct(keyed_ops, plain_ops),
                "keyed_p50_us": keyed_p50,
                "plain_p50_us": plain_p50,
                "p50_pct": _pct(keyed_p50, plain_p50),
            }
        )
    return out


def _pct(value: float, base: float) -> float | None:
    return round((value / base - 1) * 100, 1) if base else None
