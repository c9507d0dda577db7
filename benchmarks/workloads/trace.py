"""Workload `trace`: where one sequential call's time goes (issue 11, item 4).

Three agents started with `--trace`; one client process with SUPERSTATIC_TRACE=1 makes N
sequential calls on a `@clustered` counter, attached first to the leader, then (a fresh
cluster) to a follower. Each call's stamps (superstatic.protocol.trace) become hops on its
critical path; the row reports each hop's p50 and p99, the sum of the p50s, and the calls'
end-to-end p50 (perf_counter around the call, as the `sequential` row measures it). Tracing
itself costs a few dict writes per hop, so these calls are a little slower than untraced ones.

The client side is this module's `main` (python -m superstatic_bench.workloads.trace).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from superstatic_bench.progress import Progress
from superstatic_bench.stats import percentile

from superstatic.protocol import trace as proto
from superstatic.tools.localcluster import LocalCluster

CALLS_FULL = 2_000
CALLS_QUICK = 300
WARMUP_CALLS = 50  # first calls (connection, faulting the counter in) are not counted
TIMEOUT_S_CLIENT = 900.0
ATTACH = ("leader", "follower")
ERROR_CHARS_MAX = 2000  # of the traced app's stderr or an agent's log, quoted on failure
POLL_S = 0.2


def summarize(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p99 per hop (us), the sum of the hop p50s, and end-to-end p50/p99 (us)."""
    hops: list[dict[str, Any]] = []
    for hop in proto.HOPS:
        values = sorted(c["hops_ns"][hop] / 1000 for c in calls if hop in c["hops_ns"])
        if not values:
            continue
        hops.append(
            {
                "hop": hop,
                "title": proto.HOP_TITLES[hop],
                "p50_us": percentile(values, 50),
                "p99_us": percentile(values, 99),
                "calls": len(values),
            }
        )
    e2e = sorted(c["end_to_end_ns"] / 1000 for c in calls)
    traced = sorted(c["total_ns"] / 1000 for c in calls)
    return {
        "calls": len(calls),
        "hops": hops,
        "hop_p50_sum_us": sum(h["p50_us"] for h in hops),
        "traced_p50_us": percentile(traced, 50),
        "end_to_end_p50_us": percentile(e2e, 50),
        "end_to_end_p99_us": percentile(e2e, 99),
    }


def run(
    work_dir: Path, quick: bool, progress: Progress, agent_args: Sequence[str] = ()
) -> dict[str, Any]:
    calls = CALLS_QUICK if quick else CALLS_FULL
    out: dict[str, Any] = {"calls_per_row": calls, "rows": {}}
    for attach in ATTACH:
        with progress.step(f"trace: {calls} sequential calls, app attached to the {attach}") as s:
            args = ["--trace", *agent_args]
            with LocalCluster(work_dir / f"trace-{attach}", size=3, agent_args=args) as c:
                c.start()
                leader = c.leader()
                ids = c.voter_ids
                first = leader if attach == "leader" else next(i for i in ids if i != leader)
                order = [first] + [i for i in ids if i != first]
                # The cluster is keyed (CURVE), like a deployment: the app presents its key.
                env = {**os.environ, **c.client_env("app"), "SUPERSTATIC_TRACE": "1"}
                stdout = _traced_app(c, env, order, calls)
            row = summarize(json.loads(stdout)["calls"])
            row["agent"] = first
            out["rows"][attach] = row
            s["result"] = (
                f"e2e p50 {row['end_to_end_p50_us'] / 1000:.2f} ms, "
                f"hop p50 sum {row['hop_p50_sum_us'] / 1000:.2f} ms"
            )
    return out


def _traced_app(cluster: LocalCluster, env: dict[str, str], order: list[str], calls: int) -> str:
    """Runs the traced app to its end and returns its stdout; fails at once, quoting the
    agent's log, if an agent exits meanwhile (the app would wait for it for TIMEOUT_S_CLIENT)."""
    args = ["--endpoints", ",".join(cluster.client_endpoints(order)), "--calls", str(calls)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        app = subprocess.Popen(
            [sys.executable, "-m", "superstatic_bench.workloads.trace", *args],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S_CLIENT
            while app.poll() is None:
                dead = [i for i, spec in cluster.agents.items() if not spec.alive()]
                if dead:
                    tail = _log_tail(cluster, dead[0])
                    raise RuntimeError(f"agent {dead[0]} exited during the traced calls: {tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the traced app did not finish within {TIMEOUT_S_CLIENT:.0f} s"
                    )
                time.sleep(POLL_S)
        finally:
            if app.poll() is None:
                app.kill()  # by its PID: this process started it
                app.wait()
        out.seek(0)
        err.seek(0)
        if app.returncode != 0:
            raise RuntimeError(
                f"the traced app exited with {app.returncode}: {err.read()[-ERROR_CHARS_MAX:]}"
            )
        return out.read()


def _log_tail(cluster: LocalCluster, node_id: str) -> str:
    path = cluster.agents[node_id].log_path
    if path is None or not path.exists():
        return "(no log)"
    return path.read_bytes()[-ERROR_CHARS_MAX:].decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--calls", type=int, required=True)
    args = p.parse_args(argv)

    import superstatic
    from superstatic.objects import trace as app_trace

    assert app_trace.ENABLED, "run with SUPERSTATIC_TRACE=1"

    @superstatic.clustered(name="bench.trace.counter")
    class TraceCounter:
        def __init__(self) -> None:
            self.n = 0

        def inc(self) -> int:
            self.n += 1
            return self.n

    superstatic.connect(args.endpoints.split(","))
    counter = TraceCounter()
    for _ in range(WARMUP_CALLS):
        counter.inc()
    app_trace.take()
    end_to_end_ns: list[int] = []
    for _ in range(args.calls):
        started = time.perf_counter_ns()
        counter.inc()
        end_to_end_ns.append(time.perf_counter_ns() - started)
    records = app_trace.take()
    superstatic.close()
    calls = [
        {"hops_ns": r["hops_ns"], "total_ns": r["total_ns"], "end_to_end_ns": e2e}
        for r, e2e in zip(records, end_to_end_ns, strict=True)
    ]
    json.dump({"calls": calls}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
