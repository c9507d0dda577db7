"""Workload `heapfanout`: an agent's send work per committed write as app processes are added,
each holding its own small set of objects (issue 13 item 5; docs/virtual-heap.md section 8).

One fresh 3-agent cluster whose agents serve /metrics. A writer process, connected to the
leader only, creates for each of max(`heapfanout_apps`) apps a root of `heapfanout_objects`
small dicts. Then, for each mode (`replicate="partial"`, and `"all"` for contrast) and each
app count N: N fresh app processes connect to one **follower** only (so its stream work is
theirs alone: the writer streams from the leader) and read every small dict of their own root,
keeping them; the writer commits `heapfanout_writes` writes round-robin over those N apps'
dicts at `heapfanout_rate` per second (each write is held by exactly one app); then the
follower's /metrics counters `stream_bytes_sent`, `stream_events_sent` and
`stream_events_filtered` and its CPU time (/proc/PID/stat, utime + stime) are compared before
and after (after: once the follower has applied the last write and its counters stop moving;
before: also once it streams to exactly the N apps, the last row's gone).

Reported per mode and N, per committed write: stream bytes and events sent, events filtered,
agent CPU; and the held entries the follower reports. Target (targets.py): for partial apps,
bytes and events per write at the most apps within HEAPFANOUT_RATIO_MAX x at one app.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from superstatic_bench import machine, report
from superstatic_bench.procs import ProcessGroup, Worker, WorkerFailed
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.systems import TIMEOUT_S_LEADER
from superstatic_bench.targets import HEAPFANOUT_RATIO_MAX
from superstatic_bench.workloads import heap_cluster

MODES = ("partial", "all")
METRICS = (
    "stream_bytes_sent",
    "stream_events_sent",
    "stream_events_filtered",
    "held_entries",
    "subscribers",
)
METRIC_PREFIX = "superstatic_"
TIMEOUT_S_HTTP = 5.0
TIMEOUT_S_HOLD = 600.0
TIMEOUT_S_SETTLE = 30.0
TIMEOUT_S_QUIT = 10.0  # an app told to quit closes its connection (atexit) and exits
# The agent publishes its /metrics every 500 ms (agent/metrics.py PUBLISH_MS): scrapes closer
# together can agree only because they read the same page.
SETTLE_POLL_S = 0.6
SETTLE_POLLS = 3  # unchanged scrapes in a row: the follower has sent what the writes caused
METRICS_BYTES_MAX = 1 << 20


def steps(settings: Settings) -> int:
    return 2 + len(MODES) * len(settings.heapfanout_apps)  # start, set up, one per row


def parse_metrics(text: str, names: tuple[str, ...] = METRICS) -> dict[str, float]:
    """The named unlabelled samples of a Prometheus text page (counters end in `_total`)."""
    wanted = {METRIC_PREFIX + n: n for n in names}
    wanted.update({METRIC_PREFIX + n + "_total": n for n in names})
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] = float(value.split()[0])
    missing = [n for n in names if n not in out]
    if missing:
        raise RuntimeError(f"the agent's /metrics has no {', '.join(missing)}")
    return out


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=TIMEOUT_S_HTTP) as answer:
        return parse_metrics(answer.read(METRICS_BYTES_MAX).decode())


def summarize_row(
    mode: str,
    apps: int,
    writes: int,
    before: dict[str, float],
    after: dict[str, float],
    cpu_s: float,
) -> dict[str, Any]:
    """Per committed write: what the follower sent its apps, and its CPU."""
    sent = after["stream_bytes_sent"] - before["stream_bytes_sent"]
    events = after["stream_events_sent"] - before["stream_events_sent"]
    filtered = after["stream_events_filtered"] - before["stream_events_filtered"]
    return {
        "replicate": mode,
        "apps": apps,
        "writes": writes,
        "bytes_per_write": sent / writes,
        "events_per_write": events / writes,
        "filtered_per_write": filtered / writes,
        "cpu_ms_per_write": cpu_s * 1000 / writes,
        "held_entries": after["held_entries"],
        "before": before,
        "after": after,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Partial rows: the most apps' per-write bytes and events over one app's (fewest apps)."""
    partial = sorted((r for r in rows if r["replicate"] == "partial"), key=lambda r: r["apps"])
    out: dict[str, Any] = {"bytes_ratio": None, "events_ratio": None, "apps_compared": None}
    if len(partial) < 2:
        return out
    low, high = partial[0], partial[-1]
    out["apps_compared"] = [low["apps"], high["apps"]]
    for key, name in (("bytes_per_write", "bytes_ratio"), ("events_per_write", "events_ratio")):
        if low[key] > 0:
            out[name] = high[key] / low[key]
    return out


def _settle(url: str) -> tuple[dict[str, float], bool]:
    """Scrapes until the follower's stream counters stop moving (bounded): (last, settled)."""
    deadline = time.monotonic() + TIMEOUT_S_SETTLE
    last = scrape(url)
    still = 0
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)
        now = scrape(url)
        same = all(now[k] == last[k] for k in ("stream_bytes_sent", "stream_events_sent"))
        still = still + 1 if same else 0
        last = now
        if still >= SETTLE_POLLS:
            return last, True
    return last, False


def _wait_subscribers(url: str, apps: int) -> bool:
    """Waits (bounded) until the follower streams to exactly this row's apps: the last row's
    apps gone, with their held sets, and every new one subscribed. An app that quits is
    forgotten only after the agent's subscriber_silence_ms (15 s): the library sends no
    UNSUBSCRIBE when it closes."""
    deadline = time.monotonic() + TIMEOUT_S_SETTLE
    while time.monotonic() < deadline:
        if scrape(url)["subscribers"] == apps:
            return True
        time.sleep(SETTLE_POLL_S)
    return False


def _release(group: ProcessGroup, workers: list[Worker]) -> None:
    """Apps quit first (so each closes its connection and the agent forgets it at once), then
    are stopped by PID whatever they did."""
    for worker in workers:
        with contextlib.suppress(WorkerFailed):
            worker.send({"cmd": "quit"})
    deadline = time.monotonic() + TIMEOUT_S_QUIT
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        group.stop(worker.process)


def _wait_applied(local: Any, leader: str, follower: str) -> None:
    target = int(local.status(leader)["commit"])
    local.wait_until(
        lambda: int(local.status(follower)["applied"]) >= target,
        f"agent {follower} applies up to {target}",
        TIMEOUT_S_SETTLE,
    )


def _hold(
    group: ProcessGroup, cluster: Any, endpoint: str, mode: str, apps: int, settings: Settings
) -> list[Worker]:
    """N app processes (started together), each holding its own root's small dicts."""
    workers: list[Worker] = []
    try:
        for k in range(apps):
            workers.append(
                group.start_worker(f"heapfanout-{mode}-{apps}-{k}", list(heap_cluster.APP_ARGS))
            )
        for worker in workers:
            worker.receive(heap_cluster.TIMEOUT_S_APP)
        base = heap_cluster.connect_command(cluster, [endpoint], mode)
        for k, worker in enumerate(workers):
            worker.send(
                {**base, "phase": "fan_hold", "app": k, "objects": settings.heapfanout_objects}
            )
        for worker in workers:
            worker.receive(TIMEOUT_S_HOLD)
    except BaseException:
        _release(group, workers)
        raise
    return workers


def run(
    group: ProcessGroup, base_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with progress.step("heapfanout: start a fresh cluster (agents serve /metrics)"):
        cluster = heap_cluster.start_cluster(base_dir, "heapfanout", settings, metrics=True)
    with heap_cluster.serving(cluster):
        local = cluster.local
        leader = local.leader(TIMEOUT_S_LEADER)
        follower = next(i for i in local.voter_ids if i != leader)
        spec = local.agents[follower]
        with heap_cluster.app(group, "heapfanout-writer") as writer:
            base = heap_cluster.connect_command(
                cluster, [local.agents[leader].client_endpoint], "all"
            )
            most = max(settings.heapfanout_apps)
            with progress.step(f"heapfanout: {most} roots of {settings.heapfanout_objects}"):
                writer.call({**base, "phase": "connect"}, heap_cluster.TIMEOUT_S_APP)
                writer.call(
                    {
                        **base,
                        "phase": "fan_setup",
                        "apps": most,
                        "objects": settings.heapfanout_objects,
                    },
                    TIMEOUT_S_HOLD,
                )
            for mode in MODES:
                for apps in settings.heapfanout_apps:
                    label = f"heapfanout: {apps} {mode} app(s) on agent {follower}"
                    with progress.step(label) as s:
                        workers = _hold(group, cluster, spec.client_endpoint, mode, apps, settings)
                        try:
                            subscribed = _wait_subscribers(spec.metrics_url, apps)
                            _wait_applied(local, leader, follower)
                            before, _ = _settle(spec.metrics_url)
                            assert spec.pid is not None
                            cpu_before = heap_cluster.pid_cpu_s(spec.pid)
                            load_before = machine.load_average()
                            wrote = writer.call(
                                {
                                    **base,
                                    "phase": "fan_write",
                                    "apps": apps,
                                    "objects": settings.heapfanout_objects,
                                    "writes": settings.heapfanout_writes,
                                    "rate": settings.heapfanout_rate,
                                },
                                TIMEOUT_S_HOLD + settings.heapfanout_writes,
                            )
                            _wait_applied(local, leader, follower)
                            after, settled = _settle(spec.metrics_url)
                            cpu_s = heap_cluster.pid_cpu_s(spec.pid) - cpu_before
                        finally:
                            _release(group, workers)
                        row = summarize_row(
                            mode, apps, settings.heapfanout_writes, before, after, cpu_s
                        )
                        row.update(
                            agent=follower,
                            settled=settled and subscribed,
                            writes_per_s=wrote["writes_per_s"],
                            load_average=[load_before, machine.load_average()],
                        )
                        rows.append(row)
                        s["result"] = (
                            f"{row['bytes_per_write']:,.0f} B, "
                            f"{row['events_per_write']:.2f} events per write"
                        )
    return {"rows": rows, **summarize(rows)}


def render(outcome: dict[str, Any], markdown: bool) -> str:
    rows = [
        [
            r["replicate"],
            r["apps"],
            r["writes"],
            f"{r['writes_per_s']:.0f}",
            f"{r['bytes_per_write']:,.0f}",
            f"{r['events_per_write']:.2f}",
            f"{r['filtered_per_write']:.2f}",
            f"{r['cpu_ms_per_write']:.2f}",
            f"{r['held_entries']:,.0f}",
            " / ".join(f"{p[0]:.1f}" for p in r["load_average"]) if r.get("load_average") else "-",
        ]
        for r in outcome["rows"]
    ]
    headers = [
        "replicate",
        "apps",
        "writes",
        "writes/s",
        "bytes sent/write",
        "events sent/write",
        "events filtered/write",
        "agent CPU ms/write",
        "held entries",
        "load before / after",
    ]
    text = report.table(headers, rows, markdown)
    notes: list[str] = []
    unsettled = [r for r in outcome["rows"] if not r.get("settled", True)]
    if unsettled:
        notes.append(
            f"{len(unsettled)} row(s) measured before the counters stopped moving or with "
            f"other subscribers than the row's apps (TIMEOUT_S_SETTLE = {TIMEOUT_S_SETTLE:g} s)"
        )
    compared = outcome.get("apps_compared")
    if compared:
        b, e = outcome.get("bytes_ratio"), outcome.get("events_ratio")
        notes.append(
            f"partial, {compared[1]} apps over {compared[0]}: bytes/write "
            f"{'-' if b is None else f'{b:.2f}'}, events/write "
            f"{'-' if e is None else f'{e:.2f}'} (target <= {HEAPFANOUT_RATIO_MAX:g})"
        )
    return report.with_notes(text, notes, markdown)
