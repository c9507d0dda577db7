"""`superstatic demo`: the guided tour a newcomer runs first.

Starts a local 3-agent cluster, runs `examples/bank.py` in several worker processes (each
attached to a different agent, each knowing the others for failover), kills the leader with
SIGKILL mid-run, and then checks and reports: every acknowledged transfer is in the ledger
exactly once, no money was created or lost, every agent ends with the same state, and the killed
agent, restarted, catches up to it. Everything it starts, it stops.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superstatic.protocol.errors import Error
from superstatic.tools.localcluster import LocalCluster

TIMEOUT_S_WORKERS = 300.0
TIMEOUT_S_PROGRESS = 60.0
TIMEOUT_S_CATCH_UP = 60.0
POLL_S = 0.02
# Kill the leader once this share of the expected log has committed: mid-run, not at the start.
KILL_AT_SHARE = 0.3


@dataclass
class Step:
    started: float

    def say(self, message: str) -> None:
        print(f"  [{time.monotonic() - self.started:6.2f}s] {message}", flush=True)


def find_example(name: str) -> Path:
    here = Path(__file__).resolve().parents[2] / "examples" / name
    if here.exists():
        return here
    raise Error(f"cannot find examples/{name}; run the demo from a checkout of superstatic")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="superstatic demo", description=__doc__)
    parser.add_argument("--workers", type=int, default=3, help="app processes (default 3)")
    parser.add_argument("--transfers", type=int, default=400, help="transfers per worker")
    parser.add_argument("--dir", type=Path, default=None, help="keep the agents' data here")
    args = parser.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="superstatic-demo-"))
    bank = find_example("bank.py")
    step = Step(time.monotonic())
    print("superstatic demo: a bank in a clustered object, 3 agents, the leader killed mid-run")
    with LocalCluster(base, size=3) as cluster:
        cluster.start()
        leader = cluster.leader()
        step.say(f"3 agents up (data in {base}); leader is {leader}")
        if cluster.keyed:
            step.say(
                f"keyed: CURVE on every link, keys in {cluster.keys_dir}; the workers use the "
                "'app' key (SUPERSTATIC_KEYS)"
            )
        ok = run(cluster, bank, leader, args.workers, args.transfers, step)
        step.say("stopping every agent this demo started")
    print("RESULT:", "everything checks out" if ok else "A CHECK FAILED (see above)")
    return 0 if ok else 1


def run(
    cluster: LocalCluster, bank: Path, leader: str, workers: int, transfers: int, step: Step
) -> bool:
    ids = cluster.voter_ids
    # Workers are attached round-robin, so one of them talks to the leader we are about to kill
    # and must move to another agent with its session.
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    commit_start = int(cluster.status(leader).get("commit", 0))
    try:
        for i in range(workers):
            own = ids[i % len(ids)]
            order = [own] + [x for x in ids if x != own]
            env = dict(os.environ, **cluster.client_env("app"))
            env["SUPERSTATIC_AGENT"] = ",".join(cluster.client_endpoints(order))
            cmd = [sys.executable, str(bank), "--worker", f"w{i + 1}"]
            cmd += ["--transfers", str(transfers)]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
            procs.append((own, proc))
        step.say(f"{workers} worker processes making {transfers} transfers each")

        target = commit_start + int(KILL_AT_SHARE * workers * transfers)
        commit_at_kill = wait_commit(cluster, leader, target)
        cluster.kill(leader)
        killed_at = time.monotonic()
        step.say(f"kill -9 of leader {leader} at commit index {commit_at_kill}")
        new_leader, resumed_s = wait_new_leader_commit(cluster, leader, commit_at_kill, killed_at)
        step.say(f"new leader {new_leader}; first new commit {resumed_s:.2f} s after the kill")

        results = [collect(proc) for _, proc in procs]
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    acknowledged = {str(r["worker"]): int(r["acknowledged"]) for r in results}
    unknown = sum(int(r["unknown"]) for r in results)
    step.say(
        f"workers done: {sum(acknowledged.values())} transfers acknowledged, "
        f"{sum(int(r['declined']) for r in results)} declined (insufficient funds), "
        f"{unknown} with unknown outcome"
    )

    survivors = [x for x in ids if x != leader]
    reports = {node: report_from(cluster, bank, node) for node in survivors}
    cluster.start_agent(leader)
    wait_caught_up(cluster, leader, survivors[0])
    reports[leader] = report_from(cluster, bank, leader)
    step.say(f"restarted {leader}; it caught up with the others")

    return check(reports, acknowledged, unknown)


def wait_commit(cluster: LocalCluster, leader: str, target: int) -> int:
    deadline = time.monotonic() + TIMEOUT_S_PROGRESS
    commit = 0
    while time.monotonic() < deadline:
        commit = int(cluster.status(leader).get("commit", 0))
        if commit >= target:
            return commit
        time.sleep(POLL_S)
    return commit


def wait_new_leader_commit(
    cluster: LocalCluster, old: str, commit_at_kill: int, killed_at: float
) -> tuple[str, float]:
    deadline = time.monotonic() + TIMEOUT_S_PROGRESS
    while time.monotonic() < deadline:
        for node in cluster.voter_ids:
            if node == old:
                continue
            try:
                status = cluster.status(node, timeout_ms=300)
            except Error:
                continue
            if status.get("role") == "leader" and int(status.get("commit", 0)) > commit_at_kill:
                return node, time.monotonic() - killed_at
        time.sleep(POLL_S)
    raise Error(f"no new leader committed within {TIMEOUT_S_PROGRESS} s; logs:\n{cluster.logs()}")


def wait_caught_up(cluster: LocalCluster, node: str, reference: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S_CATCH_UP
    while time.monotonic() < deadline:
        try:
            target = int(cluster.status(reference).get("commit", 0))
            if int(cluster.status(node, timeout_ms=300).get("applied", -1)) >= target:
                return
        except Error:
            pass
        time.sleep(POLL_S)
    raise Error(f"agent {node} did not catch up within {TIMEOUT_S_CATCH_UP} s")


def collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=TIMEOUT_S_WORKERS)
    if proc.returncode != 0:
        raise Error(f"a worker failed with exit code {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[0]))


def report_from(cluster: LocalCluster, bank: Path, node: str) -> dict[str, Any]:
    """The bank as seen by a fresh app process attached to `node` only."""
    env = dict(os.environ, **cluster.client_env("app"))
    env["SUPERSTATIC_AGENT"] = cluster.agents[node].client_endpoint
    out = subprocess.run(
        [sys.executable, str(bank), "--report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S_CATCH_UP,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def check(reports: dict[str, dict[str, Any]], acknowledged: dict[str, int], unknown: int) -> bool:
    ok = True
    first = next(iter(reports.values()))
    ledger = {str(k): int(v) for k, v in first["transfers_by_worker"].items()}
    for worker, count in sorted(acknowledged.items()):
        held = ledger.get(worker, 0)
        exact = held == count
        within = count <= held <= count + unknown
        mark = "ok" if exact or within else "MISMATCH"
        ok &= exact or within
        print(f"    {worker}: acknowledged {count}, in the ledger {held}  {mark}")
    print(f"  nothing acknowledged was lost, nothing applied twice: {'yes' if ok else 'NO'}")
    expected_total = 5 * 1_000
    totals_ok = all(int(r["total"]) == expected_total for r in reports.values())
    print(f"  money is conserved on every agent ({expected_total}): {'yes' if totals_ok else 'NO'}")
    same = all(r == first for r in reports.values())
    print(f"  all {len(reports)} agents hold the identical bank: {'yes' if same else 'NO'}")
    if not same:
        for node, r in sorted(reports.items()):
            print(f"    {node}: {json.dumps(r, sort_keys=True)}")
    return ok and totals_ok and same
