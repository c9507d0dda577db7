"""The targets of the suite, judged on the numbers of one run: reported, never asserted.

Each target says what was measured, the goal it is held against, whether it was met, and the
gap: measured / goal for "at most" goals, goal / measured for "at least" goals (below 1.0 means
met with that much room; above 1.0 means missed by that factor).
"""

from __future__ import annotations

from typing import Any

# ZeroMQ round trips on the shortest path of a sequential call: app -> agent, and the leader's
# AppendEntries to a follower and back (the app's agent being the leader).
FLOOR_ROUND_TRIPS = 2
FLOOR_FACTOR_MAX = 3.0
ETCD_THROUGHPUT_FACTOR = 2.0
READ_RATIO_MAX = 2.0
FAILOVER_S_MAX = 1.0
BIGDICT_RATIO_MIN = 0.8  # the biggest dict's writes/s over the smallest's (issue 11)
MANYROOTS_RATIO_MAX = 1.5  # the 100,001st root's time over the 1st's (medians; issue 11)
# The virtual heap (issue 13; the workloads hold the same constants for their own tables).
HEAPSTART_MS_MAX = 50.0  # partial connect + first read, median, at 1,000,000 other objects
HEAPSTART_RATIO_MAX = 1.5  # that median over the empty cluster's
HEAPMEM_MB_MAX = 30.0  # RssAnon after touching 10,000 of 1,000,000, above an empty app
HEAPFANOUT_RATIO_MAX = 1.5  # partial: per-write bytes and events, 16 apps over 1
# Issue 11's other goals: a sequential call within this factor of PySyncObj's immediate mode
# (which does not fsync); catch-up of CATCHUP_OBJECTS_JUDGED objects (`--large`) within
# CATCHUP_S_MAX; memory per stored object in an agent and in an app keeping a full replica.
PYSYNCOBJ_SEQUENTIAL_FACTOR_MAX = 1.5
CATCHUP_OBJECTS_JUDGED = 1_000_000
CATCHUP_S_MAX = 15.0
AGENT_BYTES_PER_OBJECT_MAX = 400.0
APP_BYTES_PER_OBJECT_MAX = 1024.0


def _row(
    results: dict[str, Any], workload: str, system: str, **match: Any
) -> dict[str, Any] | None:
    rows = results.get("workloads", {}).get(workload, {}).get("rows", [])
    for row in rows:
        if row.get("system") == system and all(row.get(k) == v for k, v in match.items()):
            return dict(row)
    return None


def _p50_us(row: dict[str, Any] | None) -> float | None:
    if row is None:
        return None
    value = row.get("latency_us", {}).get("p50")
    return float(value) if value is not None else None


def _target(
    name: str,
    measured: float | None,
    goal: float | None,
    unit: str,
    at_most: bool,
    why_missing: str = "",
) -> dict[str, Any]:
    if measured is None or goal is None or goal <= 0:
        return {
            "target": name,
            "measured": None,
            "goal": None,
            "unit": unit,
            "met": None,
            "gap": None,
            "note": why_missing or "not measured in this run",
        }
    met = measured <= goal if at_most else measured >= goal
    gap = measured / goal if at_most else (goal / measured if measured > 0 else float("inf"))
    return {
        "target": name,
        "measured": measured,
        "goal": goal,
        "unit": unit,
        "met": met,
        "gap": gap if gap != float("inf") else None,
        "note": "",
    }


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seq = _p50_us(_row(results, "sequential", "superstatic"))
    etcd_seq = _p50_us(_row(results, "sequential", "etcd"))
    out.append(
        _target(
            "sequential call p50 < etcd put p50 (us)",
            seq,
            etcd_seq,
            "us",
            True,
            "needs --peers with etcd and the sequential workload",
        )
    )
    pso_seq = _p50_us(_row(results, "sequential", "pysyncobj"))
    out.append(
        _target(
            f"sequential call p50 <= {PYSYNCOBJ_SEQUENTIAL_FACTOR_MAX:g} x PySyncObj immediate "
            "(no fsync) (us)",
            seq,
            PYSYNCOBJ_SEQUENTIAL_FACTOR_MAX * pso_seq if pso_seq is not None else None,
            "us",
            True,
            "needs --peers with pysyncobj and the sequential workload",
        )
    )
    floors = results.get("workloads", {}).get("floors", {})
    fsync = floors.get("lmdb_fsync_us", {}).get("p50")
    rtt = floors.get("zmq_rtt_us", {}).get("p50")
    floor = fsync + FLOOR_ROUND_TRIPS * rtt if fsync is not None and rtt is not None else None
    out.append(
        _target(
            f"sequential call p50 <= {FLOOR_FACTOR_MAX:g} x (fsync + {FLOOR_ROUND_TRIPS} ZeroMQ "
            "round trips) (us)",
            seq,
            FLOOR_FACTOR_MAX * floor if floor is not None else None,
            "us",
            True,
            "needs the floors and sequential workloads",
        )
    )
    ours = _row(results, "throughput", "superstatic", clients=3)
    ours_tps = float(ours["ops_per_s"]) if ours else None
    etcd = _row(results, "throughput", "etcd", clients=3)
    out.append(
        _target(
            f"throughput, 3 clients >= {ETCD_THROUGHPUT_FACTOR:g} x etcd (writes/s)",
            ours_tps,
            ETCD_THROUGHPUT_FACTOR * float(etcd["ops_per_s"]) if etcd else None,
            "writes/s",
            False,
            "needs --peers with etcd and the throughput workload",
        )
    )
    # PySyncObj runs in two modes; the target holds against its better throughput.
    candidates = [
        _row(results, "throughput", n, clients=3) for n in ("pysyncobj", "pysyncobj-batch")
    ]
    found = [row for row in candidates if row is not None]
    pso = max(found, key=lambda row: float(row["ops_per_s"])) if found else None
    out.append(
        _target(
            "throughput, 3 clients >= PySyncObj's best mode (no fsync) (writes/s)",
            ours_tps,
            float(pso["ops_per_s"]) if pso else None,
            "writes/s",
            False,
            "needs --peers with pysyncobj and the throughput workload",
        )
    )
    nofsync = _row(results, "nofsync", "superstatic-nofsync", op="write", clients=3)
    if nofsync is not None and pso is not None:
        out.append(
            _target(
                "throughput, 3 clients, both without fsync >= PySyncObj's best (writes/s)",
                float(nofsync["ops_per_s"]),
                float(pso["ops_per_s"]),
                "writes/s",
                False,
            )
        )
    reads = results.get("workloads", {}).get("reads", {}).get("rows", [])
    if not reads:
        out.append(
            _target(
                f"proxied read <= {READ_RATIO_MAX:g} x plain read (ns)",
                None,
                None,
                "ns",
                True,
                "needs the reads workload",
            )
        )
    for row in reads:
        out.append(
            _target(
                f"proxied read {row['read']} <= {READ_RATIO_MAX:g} x plain (ns)",
                float(row["shared_ns"]),
                READ_RATIO_MAX * max(float(row["plain_ns"]), 0.1),
                "ns",
                True,
            )
        )
    out.extend(_keyed_targets(results))
    out.extend(_catchup_targets(results))
    out.extend(_heap_targets(results))
    failover = results.get("workloads", {}).get("failover", {})
    median_s = failover.get("failover_s_median")
    missing = "needs the failover workload"
    if failover and median_s is None:
        missing = "most rounds had no acknowledged write within the window"
    out.append(
        _target(
            f"failover median < {FAILOVER_S_MAX:g} s",
            median_s,
            FAILOVER_S_MAX if median_s is not None else None,
            "s",
            True,
            missing,
        )
    )
    return out


def _keyed_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """bigdict, manyroots and disjoint (docs/data-model-v2.md's goals)."""
    workloads = results.get("workloads", {})
    summary = workloads.get("bigdict", {}).get("summary", {})
    big_ratio = summary.get("ratio")
    manyroots = workloads.get("manyroots", {})
    roots_ratio = manyroots.get("ratio")
    out = [
        _target(
            f"bigdict: writes/s into the biggest dict >= {BIGDICT_RATIO_MIN:g} x the smallest's",
            big_ratio,
            BIGDICT_RATIO_MIN if big_ratio is not None else None,
            "x",
            False,
            "needs the bigdict workload",
        ),
        _target(
            f"manyroots: a root after many <= {MANYROOTS_RATIO_MAX:g} x the first (medians)",
            roots_ratio,
            MANYROOTS_RATIO_MAX if roots_ratio is not None else None,
            "x",
            True,
            "needs the manyroots workload",
        ),
    ]
    rows = workloads.get("disjoint", {}).get("rows", [])
    retries = rows[0].get("retries") if rows else None
    name = "disjoint: conflict retries = 0"
    if retries is None:
        out.append(_target(name, None, None, "retries", True, "needs the disjoint workload"))
    else:
        # A goal of 0 has no ratio: the gap is left empty, met is exact.
        out.append(
            {
                "target": name,
                "measured": float(retries),
                "goal": 0.0,
                "unit": "retries",
                "met": retries == 0,
                "gap": None,
                "note": "",
            }
        )
    return out


def _catchup_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Catch-up time at CATCHUP_OBJECTS_JUDGED objects (only there: it grows with the count),
    and memory per object at the largest size measured (named in the target)."""
    sizes = [
        s
        for s in results.get("workloads", {}).get("catchup", {}).get("sizes", [])
        if "error" not in s
    ]
    judged = next((s for s in sizes if s["objects"] == CATCHUP_OBJECTS_JUDGED), None)
    largest = max(sizes, key=lambda s: s["objects"]) if sizes else None
    at = f"{largest['objects']:,} objects" if largest else "the largest size"
    agent_b = largest.get("agent_bytes_per_object") if largest else None
    full = largest is not None and largest.get("app_replicate") == "all"
    app_b = largest.get("app_bytes_per_object") if largest and full else None
    return [
        _target(
            f"catch-up of {CATCHUP_OBJECTS_JUDGED:,} objects < {CATCHUP_S_MAX:g} s",
            judged["catch_up_s"] if judged else None,
            CATCHUP_S_MAX if judged else None,
            "s",
            True,
            f"needs the catchup workload at {CATCHUP_OBJECTS_JUDGED:,} objects (--large)",
        ),
        _target(
            f"agent memory per object <= {AGENT_BYTES_PER_OBJECT_MAX:g} B, at {at} (B)",
            agent_b,
            AGENT_BYTES_PER_OBJECT_MAX if agent_b is not None else None,
            "B",
            True,
            "needs the catchup workload",
        ),
        _target(
            f"app memory per object, full replica <= {APP_BYTES_PER_OBJECT_MAX:g} B, the catch-up "
            f"app's VmRSS growth (the library's own cost included), at {at} (B)",
            app_b,
            APP_BYTES_PER_OBJECT_MAX if app_b is not None else None,
            "B",
            True,
            "needs the catchup workload with a full-replica app (results before it named one)",
        ),
    ]


def _heap_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """heapstart, heapmem, heapfanout (docs/virtual-heap.md section 8). Each target names the
    size it was measured at: the issue states them at 1,000,000 objects (`--large`)."""
    workloads = results.get("workloads", {})
    start = workloads.get("heapstart", {})
    largest = start.get("largest")
    at = f"{largest:,} objects" if largest is not None else "the largest size"
    median_ms = start.get("largest_median_ms")
    ratio = start.get("ratio")
    mem = workloads.get("heapmem", {})
    mem_mb = mem.get("partial_above_empty_mb")
    mem_at = (
        f"{mem['touched']:,} of {mem['objects']:,} touched" if mem.get("objects") else "1% touched"
    )
    full_row = next((r for r in mem.get("rows", []) if r.get("replicate") == "all"), None)
    # The same issue-11 target as the catch-up row's, measured at the margin: RssAnon above an
    # app connected to an empty cluster, so the library's own fixed cost (modules, ZeroMQ,
    # threads: ~23 MB, 230 B per object at 100,000) is not counted per object. Both are shown.
    full_b = (
        full_row["above_empty_anon_mb"] * 1e6 / full_row["objects"]
        if full_row and full_row.get("objects")
        else None
    )
    full_at = f"{full_row['objects']:,} objects" if full_row else "the heapmem size"
    fan = workloads.get("heapfanout", {})
    compared = fan.get("apps_compared") or ["1", "16"]
    out = [
        _target(
            f"app memory per object, full replica <= {APP_BYTES_PER_OBJECT_MAX:g} B, heapmem "
            f"'all' RssAnon above an empty app, at {full_at} (B)",
            full_b,
            APP_BYTES_PER_OBJECT_MAX if full_b is not None else None,
            "B",
            True,
            "needs the heapmem workload's full-replica row",
        ),
        _target(
            f"heapstart: partial connect + first read median < {HEAPSTART_MS_MAX:g} ms "
            f"at {at} (ms)",
            median_ms,
            HEAPSTART_MS_MAX if median_ms is not None else None,
            "ms",
            True,
            "needs the heapstart workload",
        ),
        _target(
            f"heapstart: partial median at {at} <= {HEAPSTART_RATIO_MAX:g} x at 0 objects",
            ratio,
            HEAPSTART_RATIO_MAX if ratio is not None else None,
            "x",
            True,
            "needs the heapstart workload at 0 objects and more",
        ),
        _target(
            f"heapmem: partial app RssAnon above an empty app < {HEAPMEM_MB_MAX:g} MB, "
            f"{mem_at} (MB)",
            mem_mb,
            HEAPMEM_MB_MAX if mem_mb is not None else None,
            "MB",
            True,
            "needs the heapmem workload",
        ),
    ]
    for key, what in (("bytes_ratio", "bytes"), ("events_ratio", "events")):
        value = fan.get(key)
        out.append(
            _target(
                f"heapfanout: partial {what}/write, {compared[1]} apps <= "
                f"{HEAPFANOUT_RATIO_MAX:g} x {compared[0]} app(s)",
                value,
                HEAPFANOUT_RATIO_MAX if value is not None else None,
                "x",
                True,
                "needs the heapfanout workload with two app counts or more",
            )
        )
    return out
