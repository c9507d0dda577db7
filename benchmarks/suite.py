"""The suite's run: start what each workload needs, measure, stop everything, report.

Systems run one at a time (their servers idle otherwise, but two cores are little): each is
started, runs every selected write workload, and is stopped before the next one starts. A
workload or system that fails is reported with its error and the run goes on; the exit status
then says the run was incomplete.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superstatic_bench import machine, plots, report, targets
from superstatic_bench.measure import run_row
from superstatic_bench.peers import install
from superstatic_bench.procs import ProcessGroup
from superstatic_bench.progress import Progress
from superstatic_bench.registry import HEAP_WORKLOADS, KEYED_WORKLOADS, WRITE_WORKLOADS
from superstatic_bench.settings import FULL, Settings
from superstatic_bench.systems import Deployment, SuperstaticCluster

RESULTS_FORMAT = 1
FULL_DURATION_S = FULL.duration_s  # shorter windows: --quick (fewer traced calls too)
# The curve workload compares these workloads' rows keyed and unkeyed (docs/security.md).
CURVE_WORKLOADS = ("sequential", "throughput")
TIMEOUT_S_READS = 600.0
ERROR_CHARS_MAX = 4000


@dataclass
class Options:
    selected: list[str]
    settings: Settings
    out_dir: Path
    peers: bool = False
    keep: bool = False
    plots: bool = True
    command: str = "superstatic bench"
    work_dir: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)


def row_specs(workload: str, settings: Settings) -> list[tuple[str, int, int]]:
    """(op, client processes, callers per process) of each row of a write workload."""
    if workload == "sequential":
        return [("call", 1, 1)]
    if workload == "throughput":
        return [("write", c, settings.threads) for c in settings.client_counts]
    if workload == "contention":
        return [("rmw", max(settings.client_counts), settings.threads_contention)]
    raise ValueError(workload)


def _curve_rows(settings: Settings) -> list[tuple[str, str, int, int]]:
    return [(w, *spec) for w in CURVE_WORKLOADS for spec in row_specs(w, settings)]


def _new_results(options: Options, work_dir: Path) -> dict[str, Any]:
    return {
        "suite": "superstatic-bench",
        "format": RESULTS_FORMAT,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": options.command,
        "machine": machine.describe(work_dir),
        "settings": options.settings.to_json(),
        "selected": options.selected,
        "peers": options.peers,
        "workloads": {},
        "notes": [],
        "skipped": {},
        "errors": {},
    }


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_CHARS_MAX]


def _make_cluster(name: str, group: ProcessGroup, work_dir: Path, settings: Settings) -> Any:
    if name == "superstatic":
        return SuperstaticCluster(work_dir, fsync=True, agent_args=settings.agent_args)
    if name == "superstatic-nofsync":
        return SuperstaticCluster(work_dir, fsync=False, agent_args=settings.agent_args)

    if name in ("pysyncobj", "pysyncobj-batch"):
        from superstatic_bench.peers.pysyncobj_peer import PySyncObjCluster

        return PySyncObjCluster(group, work_dir / name, batch=name == "pysyncobj-batch")
    if name == "redis":
        from superstatic_bench.peers.redis_peer import RedisCluster

        return RedisCluster(group, work_dir / "redis")
    if name == "etcd":
        from superstatic_bench.peers.etcd_peer import EtcdCluster

        return EtcdCluster(group, work_dir / "etcd")
    raise ValueError(name)


def _plan(options: Options, results: dict[str, Any], progress: Progress) -> list[str]:
    selected = options.selected
    writes = [w for w in WRITE_WORKLOADS if w in selected]
    systems: list[str] = []
    keyed = [w for w in KEYED_WORKLOADS if w in selected]
    if writes or keyed or "reads" in selected:
        systems.append("superstatic")
    if "nofsync" in selected:
        systems.append("superstatic-nofsync")

    if writes and options.peers:
        for peer in install.PEERS:
            reason = install.check(peer, install=True)
            if reason is None:
                systems.append(peer)
                if peer == "pysyncobj":
                    systems.append("pysyncobj-batch")
            else:
                results["skipped"][peer] = reason
                progress.note(f"peer {peer} skipped: {reason}")
    elif writes:
        results["notes"].append(
            "peers not run (add --peers to compare with etcd, Redis, PySyncObj)"
        )
    return systems


def _count_steps(options: Options, systems: list[str]) -> int:
    s = options.settings
    steps = 1 if "floors" in options.selected else 0
    writes = [w for w in WRITE_WORKLOADS if w in options.selected]
    for system in systems:
        steps += 1  # start
        if system == "superstatic-nofsync":
            steps += sum(len(row_specs(w, s)) for w in WRITE_WORKLOADS)

        else:
            steps += sum(len(row_specs(w, s)) for w in writes)
    steps += 1 if "reads" in options.selected else 0
    steps += 1 if "disjoint" in options.selected else 0
    if "bigdict" in options.selected:
        from superstatic_bench.workloads import bigdict

        steps += bigdict.steps(s)
    if "manyroots" in options.selected:
        from superstatic_bench.workloads import manyroots

        steps += manyroots.steps()
    steps += s.failover_repeats if "failover" in options.selected else 0
    if "curve" in options.selected:
        from superstatic_bench.workloads import curve

        steps += curve.steps(s, len(_curve_rows(s)))
    steps += 3 * len(s.catchup_objects) if "catchup" in options.selected else 0
    for name in HEAP_WORKLOADS:
        if name in options.selected:
            steps += heap_module(name).steps(s)
    steps += 2 if "trace" in options.selected else 0
    steps += 1 if "queue" in options.selected else 0
    return steps


def heap_module(name: str) -> Any:
    """The module of a virtual heap workload (imported when selected: run, steps, render)."""
    import importlib

    if name not in HEAP_WORKLOADS:
        raise ValueError(name)
    return importlib.import_module(f"superstatic_bench.workloads.{name}")


def _run_system(
    name: str, options: Options, group: ProcessGroup, work_dir: Path, progress: Progress
) -> None:
    results = options.results
    s = options.settings
    cluster = _make_cluster(name, group, work_dir, s)
    driver = name.split("-")[0]  # superstatic-nofsync -> superstatic, pysyncobj-batch -> ...
    deployment = Deployment(cluster, driver, group)
    try:
        with progress.step(f"start {cluster.label}"):
            cluster.start()
        results["notes"].extend(n for n in cluster.notes if n not in results["notes"])
        if name == "superstatic-nofsync":
            plan = [("nofsync", w) for w in WRITE_WORKLOADS]

        else:
            plan = [(w, w) for w in WRITE_WORKLOADS if w in options.selected]
        for target, workload in plan:
            bucket = results["workloads"].setdefault(target, {"rows": []})
            for op, clients, threads in row_specs(workload, s):
                label = f"{workload}: {cluster.label}, {clients} client(s) x {threads}"
                with progress.step(label, s.warmup_s + s.duration_s) as shown:
                    row = run_row(deployment, op, clients, threads, s)
                    bucket["rows"].append(row)
                    p50 = row["latency_us"].get("p50")
                    shown["result"] = f"{row['ops_per_s']:,.0f} ops/s, p50 {report.us(p50)}" + (
                        f", errors {row['errors']}" if row["errors"] else ""
                    )
        if name == "superstatic" and "reads" in options.selected:
            with progress.step("reads: proxies vs plain objects") as shown:
                (worker,) = deployment.clients(1)
                answer = worker.call(
                    {"cmd": "reads", "loops": s.read_loops, "repeats": s.read_repeats},
                    TIMEOUT_S_READS,
                )
                results["workloads"]["reads"] = answer
                worst = max(answer["rows"], key=lambda r: r["ratio"])
                shown["result"] = f"worst ratio {worst['ratio']:.1f}x ({worst['read']})"
        if name == "superstatic":
            _run_keyed(deployment, options, progress)
    finally:
        deployment.close()


def _run_keyed(deployment: Deployment, options: Options, progress: Progress) -> None:
    """disjoint, then bigdict (its 100,000-key dict last: nothing after it pays for it)."""
    results = options.results
    for name in KEYED_WORKLOADS:
        if name not in options.selected:
            continue
        try:
            if name == "disjoint":
                from superstatic_bench.workloads import disjoint

                results["workloads"][name] = disjoint.run(deployment, options.settings, progress)
            else:
                from superstatic_bench.workloads import bigdict

                results["workloads"][name] = bigdict.run(deployment, options.settings, progress)
        except Exception as exc:
            traceback.print_exc()
            results["errors"][name] = _error_text(exc)


def run(options: Options) -> int:
    options.out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="superstatic-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    results = options.results = _new_results(options, work_dir)
    progress = Progress()
    progress.note(f"superstatic bench: {', '.join(options.selected)}; work folder {work_dir}")
    if options.settings.agent_args:
        results["notes"].append(
            "every agent ran with the extra flags "
            + " ".join(options.settings.agent_args)
            + " (--agent-args): not the default configuration"
        )
    try:
        with ProcessGroup(work_dir / "logs") as group:
            systems = _plan(options, results, progress)
            progress.total_steps = _count_steps(options, systems)
            if "floors" in options.selected:
                from superstatic_bench.workloads import floors

                try:
                    with progress.step("floors: LMDB fsync, ZeroMQ round trip") as shown:
                        measured = floors.measure(group, work_dir, options.settings.floor_ops)
                        results["workloads"]["floors"] = measured
                        shown["result"] = (
                            f"fsync p50 {report.us(measured['lmdb_fsync_us']['p50'])}, "
                            f"rtt p50 {report.us(measured['zmq_rtt_us']['p50'])}"
                        )
                except Exception as exc:
                    results["errors"]["floors"] = _error_text(exc)
            for system in systems:
                try:
                    _run_system(system, options, group, work_dir, progress)
                except Exception as exc:
                    traceback.print_exc()
                    results["errors"][system] = _error_text(exc)
            for name in ("curve", "failover", "catchup", "manyroots", "trace"):
                if name not in options.selected:
                    continue
                try:
                    if name == "curve":
                        from superstatic_bench.workloads import curve

                        results["workloads"][name] = curve.run(
                            group,
                            work_dir,
                            options.settings,
                            progress,
                            _curve_rows(options.settings),
                        )
                    elif name == "trace":
                        from superstatic_bench.workloads import trace

                        quick = options.settings.duration_s < FULL_DURATION_S
                        results["workloads"][name] = trace.run(
                            work_dir, quick, progress, options.settings.agent_args
                        )
                    elif name == "manyroots":
                        from superstatic_bench.workloads import manyroots

                        results["workloads"][name] = manyroots.run(
                            group, work_dir, options.settings, progress
                        )
                    elif name == "failover":
                        from superstatic_bench.workloads import failover

                        results["workloads"][name] = failover.run(
                            group, work_dir, options.settings, progress
                        )
                    else:
                        from superstatic_bench.workloads import catchup

                        outcome = catchup.run(group, work_dir, options.settings, progress)
                        results["workloads"][name] = outcome
                        failed = [
                            f"{size['objects']} objects: {size.get('error') or size['app_error']}"
                            for size in outcome["sizes"]
                            if "error" in size or "app_error" in size
                        ]
                        if failed:
                            results["errors"][name] = "; ".join(failed)[:ERROR_CHARS_MAX]
                except Exception as exc:
                    traceback.print_exc()
                    results["errors"][name] = _error_text(exc)
            for name in HEAP_WORKLOADS:
                if name not in options.selected:
                    continue
                try:
                    results["workloads"][name] = heap_module(name).run(
                        group, work_dir, options.settings, progress
                    )
                except Exception as exc:
                    traceback.print_exc()
                    results["errors"][name] = _error_text(exc)
            if "queue" in options.selected:
                from superstatic_bench.workloads import queue

                label = "queue: put + get + ack, 3 producers, 3 consumers" + (
                    " (and peers)" if options.peers else ""
                )
                with progress.step(label) as shown:
                    outcome = queue.run(
                        work_dir,
                        options.settings.duration_s,
                        options.peers,
                        options.settings.agent_args,
                    )
                    results["workloads"]["queue"] = outcome
                    results["skipped"].update(
                        {f"queue {k}": v for k, v in outcome["skipped"].items()}
                    )
                    if outcome["errors"]:
                        results["errors"]["queue"] = "; ".join(
                            f"{k}: {v}" for k, v in outcome["errors"].items()
                        )[:ERROR_CHARS_MAX]
                    shown["result"] = ", ".join(
                        f"{r['system']} {r['items_per_s']:,.0f}/s" for r in outcome["rows"]
                    )
    finally:
        if not options.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    results["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results["machine"]["load_average_at_end"] = machine.load_average()
    # Agents started later in the run load the tree as it is then: a change shows here.
    results["machine"]["source_commit_at_end"] = machine.source_commit()
    results["targets"] = targets.evaluate(results)
    finish(results, options, progress)
    return 1 if results["errors"] else 0


def finish(results: dict[str, Any], options: Options, progress: Progress) -> None:
    json_path = options.out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    written = []
    if options.plots:
        if plots.available():
            try:
                written = plots.write(results, options.out_dir)
            except Exception as exc:
                results["errors"]["plots"] = _error_text(exc)
                json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        else:
            results["notes"].append(
                "no plots: matplotlib is not installed (pip install 'superstatic[bench]')"
            )
            json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(report.render(results))
    for name, error in results["errors"].items():
        print(f"ERROR in {name}: {error}")
    print(f"results: {json_path}" + "".join(f"\nplot: {p}" for p in written))
