"""Workload 6: catch-up of an agent restarted after many objects were written.

A 3-agent cluster; one follower is stopped; a client writes N objects (each a small dict, a
node of its own) through the two others; the follower is restarted. Reported:
* the time from its restart until it has applied everything the leader had committed (the
  agent serves reads from then on), and until a fresh app connected only to it has loaded all
  N objects (connect, sync, read);
* its LMDB bytes on disk (allocated blocks, the data file's apparent size);
* memory per stored object: the agent's resident memory after catch-up minus before the
  writes, and the app's resident memory after loading minus before connecting, each over N
  (the app keeps a full replica, `replicate="all"`: until the virtual heap became the
  default at 616335c it did so by default; since then a default app holds only what it
  touches, and heapmem measures that).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from superstatic_bench.procs import ProcessGroup, WorkerFailed
from superstatic_bench.progress import Progress
from superstatic_bench.settings import Settings
from superstatic_bench.systems import TIMEOUT_S_LEADER, Deployment, SuperstaticCluster

TIMEOUT_S_LOAD = 3600.0
TIMEOUT_S_CATCH_UP = 3600.0
TIMEOUT_S_ATTACH = 3600.0
POLL_S = 0.05
DISK_FILES_MAX = 10_000
ERROR_CHARS_MAX = 1000
LOG_TAIL_BYTES = 600


def process_rss(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: count the fields after its ')'.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_usage(path: Path) -> dict[str, int]:
    """Allocated bytes (blocks) and apparent bytes of every file under `path`."""
    allocated = apparent = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            if files > DISK_FILES_MAX:
                raise RuntimeError(f"more than DISK_FILES_MAX={DISK_FILES_MAX} files in {path}")
            st = os.stat(os.path.join(root, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return {"allocated_bytes": allocated, "apparent_bytes": apparent}


def _log_tail(local: Any, node_id: str) -> str:
    path = local.agents[node_id].log_path
    try:
        return path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
    except (OSError, AttributeError):
        return f"(no log at {path})"


def one_size(
    group: ProcessGroup, base_dir: Path, count: int, settings: Settings, progress: Progress
) -> dict[str, Any]:
    cluster = SuperstaticCluster(base_dir / f"catchup-{count}", agent_args=settings.agent_args)
    deployment = Deployment(cluster, "superstatic", group)
    try:
        cluster.start()
        local = cluster.local
        leader = local.leader(TIMEOUT_S_LEADER)
        lagging = next(i for i in local.voter_ids if i != leader)
        spec = local.agents[lagging]
        assert spec.pid is not None
        rss_agent_before = process_rss(spec.pid)
        local.stop(lagging)
        with progress.step(f"catch-up: write {count} objects, agent {lagging} stopped") as shown:
            (writer,) = deployment.clients(1)
            loaded = writer.call(
                {"cmd": "load", "count": count, "batch": settings.catchup_batch}, TIMEOUT_S_LOAD
            )
            shown["result"] = f"{loaded['objects_per_s']:.0f} objects/s"
        leader = local.leader(TIMEOUT_S_LEADER)
        target = int(local.status(leader)["commit"])
        with progress.step(f"catch-up: restart agent {lagging}") as shown:
            restarted = time.monotonic()
            local.start_agent(lagging)
            deadline = restarted + TIMEOUT_S_CATCH_UP
            caught_up_s: float | None = None
            while time.monotonic() < deadline:
                if not local.agents[lagging].alive():
                    # It died catching up: say so now rather than poll for TIMEOUT_S_CATCH_UP.
                    raise RuntimeError(
                        f"agent {lagging} exited while catching up: {_log_tail(local, lagging)}"
                    )
                try:
                    status = local.status(lagging, timeout_ms=1000)
                    if int(status["applied"]) >= target:
                        caught_up_s = time.monotonic() - restarted
                        break
                except Exception:
                    pass  # not answering yet
                time.sleep(POLL_S)
            assert caught_up_s is not None, f"agent {lagging} not caught up: {local.logs()}"
            shown["result"] = f"{caught_up_s:.2f} s"
        agent_status = local.status(lagging)
        spec = local.agents[lagging]
        assert spec.pid is not None
        rss_agent_after = process_rss(spec.pid)
        # CPU of the restarted agent: start, catch-up and the STATUS polls (wall time on a
        # shared machine follows the load; CPU seconds are what compare across runs).
        agent_cpu_s = process_cpu_s(spec.pid)
        disk = disk_usage(spec.data_dir)
        agent_delta = rss_agent_after["VmRSS"] - rss_agent_before["VmRSS"]
        agent_anon_delta = rss_agent_after["RssAnon"] - rss_agent_before["RssAnon"]
        result: dict[str, Any] = {
            "objects": count,
            "load": loaded,
            "agent": lagging,
            "catch_up_s": caught_up_s,
            "disk": disk,
            "status_disk_bytes": agent_status.get("disk_bytes"),
            "agent_rss_before": rss_agent_before,
            "agent_rss_after": rss_agent_after,
            "agent_bytes_per_object": agent_delta / count,
            "agent_anon_bytes_per_object": agent_anon_delta / count,
            "agent_file_bytes_per_object": (
                rss_agent_after["RssFile"] - rss_agent_before["RssFile"]
            )
            / count,
            "agent_cpu_s": agent_cpu_s,
            "agent_snapshots_installed": agent_status.get("counters", {}).get(
                "snapshots_installed"
            ),
        }
        # The app's load is measured apart: if it fails, the agent's numbers above still stand.
        with progress.step(f"catch-up: an app loads {count} objects through agent {lagging}"):
            app = group.start_worker(
                f"catchup-app-{count}", ["-m", "superstatic_bench.client", "--system", "none"]
            )
            try:
                app.receive(TIMEOUT_S_ATTACH)
                attached = app.call(
                    {
                        "cmd": "attach",
                        "endpoints": [spec.client_endpoint],
                        "expect": count,
                        "keys": str(local.key_file("read") or ""),  # it only reads
                        "replicate": "all",  # a full replica: the app's memory per object
                    },
                    TIMEOUT_S_ATTACH,
                )
            except WorkerFailed as exc:
                result["app_error"] = str(exc).splitlines()[0][:ERROR_CHARS_MAX]
                return result
            finally:
                group.stop(app.process)
    finally:
        deployment.close()
    app_delta = attached["rss_after"]["VmRSS"] - attached["rss_before"]["VmRSS"]
    result.update(
        app_load_s=attached["seconds"],
        app_found=attached["found"],
        app_last_ok=attached["last_ok"],
        app_rss_before=attached["rss_before"],
        app_rss_after=attached["rss_after"],
        app_bytes_per_object=app_delta / count,
        app_replicate=attached["replicate"],
    )
    return result


def run(
    group: ProcessGroup, base_dir: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    sizes: list[dict[str, Any]] = []
    for count in settings.catchup_objects:
        try:
            sizes.append(one_size(group, base_dir, count, settings, progress))
        except Exception as exc:
            # One size failing (say, 1M objects) keeps the smaller sizes' results.
            sizes.append({"objects": count, "error": f"{type(exc).__name__}: {exc}"[:1000]})
    return {"sizes": sizes}
