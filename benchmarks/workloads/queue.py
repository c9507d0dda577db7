"""Workload "queue": work items put, claimed and acknowledged per second, with 3 producer and 3
consumer processes, on superstatic's `Queue` and, with `--peers`, on Redis lists and PySyncObj's
`ReplQueue`.

Each process works for the window (after a warm-up) and reports what completed inside it; the
rate is acknowledged items per second (each one a put, a get and an ack), and the latency is from
the put's start to the ack's end.

* superstatic: 3 agents (fsync on); producers `q.put(item)`, consumers `q.get(lease_s=30)` then
  `job.ack()`: three quorum commits per item, leased (a consumer that dies loses nothing).
* Redis (1 primary + 2 replicas, appendfsync always): producers `LPUSH` + `WAIT 1`; consumers
  the reliable-queue pattern, `BLMOVE queue processing` then `LREM processing` + `WAIT 1`.
  The same at-least-once shape, but a claimed item is only "processing": nothing hands it back
  if its consumer dies (a reaper would have to).
* PySyncObj (3 nodes, no fsync): `ReplQueue.put` / `get` with `sync=True`; its nodes are the
  apps, so each of the 3 node processes runs one producer and one consumer thread. `get` pops:
  there is no lease or ack, an item whose consumer dies is gone.

    python -m superstatic_bench.workloads.queue [--seconds S] [--peers]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PRODUCERS = 3
CONSUMERS = 3
PAYLOAD_BYTES = 100
WARMUP_S = 1.0
TIMEOUT_S_WORKER_EXTRA = 120.0
TIMEOUT_S_GET = 0.5
LEASE_S = 30.0
REDIS_WAIT_TIMEOUT_MS = 5_000
PYSYNCOBJ_READY_S = 60.0
# Latency samples a worker reports (the first ones in its window): bounded output.
SAMPLES_MAX = 20_000
# superstatic's queue is bounded in this workload (see superstatic_worker); a full queue makes
# a producer wait this long before it tries again.
MAXSIZE = 200
BACKOFF_S_FULL = 0.005


def _window(start_at: float, seconds: float) -> tuple[float, float]:
    return start_at + WARMUP_S, start_at + WARMUP_S + seconds


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


# ----------------------------------------------------------------------------- worker side


def superstatic_worker(role: str, endpoints: str, start_at: float, seconds: float) -> dict:
    import superstatic

    superstatic.connect(endpoints.split(","))
    # Bounded: producers back off at MAXSIZE instead of growing a backlog that the consumers
    # (two commits per item to the producers' one) never catch up with.
    q = superstatic.Queue("bench.queue", maxsize=MAXSIZE)
    opens, closes = _window(start_at, seconds)
    payload = "x" * PAYLOAD_BYTES
    done, latencies_ms = 0, []
    _sleep_until(start_at)
    try:
        while time.time() < closes:
            if role == "producer":
                try:
                    q.put([time.time(), payload])
                except superstatic.QueueFull:
                    time.sleep(BACKOFF_S_FULL)
                continue
            job = q.get(timeout=TIMEOUT_S_GET, lease_s=LEASE_S)
            if job is None:
                continue
            job.ack()
            now = time.time()
            if now >= opens and job.value[0] >= start_at:
                done += 1
                if len(latencies_ms) < SAMPLES_MAX:
                    latencies_ms.append((now - job.value[0]) * 1000)
        snap = superstatic.stats()
        latency = snap["commit_seconds"]
        counts = {
            "commits": snap["commits"],
            "txn_retries": snap["txn_retries"],
            "commit_ms_mean": 1000 * latency["sum"] / max(1, latency["count"]),
        }
    finally:
        superstatic.close()
    return {"done": done, "latencies_ms": latencies_ms, "stats": counts}


def redis_worker(role: str, port: int, start_at: float, seconds: float) -> dict:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    opens, closes = _window(start_at, seconds)
    payload = "x" * PAYLOAD_BYTES
    done, latencies_ms = 0, []
    _sleep_until(start_at)
    while time.time() < closes:
        if role == "producer":
            pipe = client.pipeline(transaction=False)
            pipe.lpush("bench:queue", json.dumps([time.time(), payload]))
            pipe.execute_command("WAIT", 1, REDIS_WAIT_TIMEOUT_MS)
            pipe.execute()
            continue
        item = client.blmove("bench:queue", "bench:processing", TIMEOUT_S_GET, "RIGHT", "LEFT")
        if item is None:
            continue
        pipe = client.pipeline(transaction=False)
        pipe.lrem("bench:processing", 1, item)
        pipe.execute_command("WAIT", 1, REDIS_WAIT_TIMEOUT_MS)
        pipe.execute()
        now = time.time()
        put_at = json.loads(item)[0]
        if now >= opens and put_at >= start_at:
            done += 1
            if len(latencies_ms) < SAMPLES_MAX:
                latencies_ms.append((now - put_at) * 1000)
    client.close()
    return {"done": done, "latencies_ms": latencies_ms}


def pysyncobj_node(index: int, ports: str, start_at: float, seconds: float) -> dict:
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplQueue

    addresses = [f"127.0.0.1:{p}" for p in ports.split(",")]
    queue = ReplQueue()
    conf = SyncObjConf(appendEntriesUseBatch=False, dynamicMembershipChange=False)
    node = SyncObj(addresses[index], addresses[:index] + addresses[index + 1 :], conf, [queue])
    deadline = time.time() + PYSYNCOBJ_READY_S
    while not node.isReady() or node._getLeader() is None:
        assert time.time() < deadline, "PySyncObj did not become ready"
        time.sleep(0.05)
    opens, closes = _window(start_at, seconds)
    payload = "x" * PAYLOAD_BYTES
    result = {"done": 0, "latencies_ms": []}

    def produce() -> None:
        while time.time() < closes:
            queue.put([time.time(), payload], sync=True, timeout=30)

    def consume() -> None:
        while time.time() < closes:
            item = queue.get(None, sync=True, timeout=30)
            if item is None:
                time.sleep(0.001)
                continue
            now = time.time()
            if now >= opens and item[0] >= start_at:
                result["done"] += 1
                if len(result["latencies_ms"]) < SAMPLES_MAX:
                    result["latencies_ms"].append((now - item[0]) * 1000)

    _sleep_until(start_at)
    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.0)  # let the others finish their last commands before this node goes
    node.destroy()
    return result


# ----------------------------------------------------------------------------- driver side


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "superstatic_bench.workloads.queue", "--worker", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )


def _collect(procs: list[subprocess.Popen[str]], seconds: float) -> list[dict]:
    answers = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + WARMUP_S + TIMEOUT_S_WORKER_EXTRA)
            if proc.returncode != 0:
                raise RuntimeError(f"a queue worker failed (exit {proc.returncode})")
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:  # stopped by PID whatever happened
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return answers


def _row(system: str, label: str, answers: list[dict], seconds: float) -> dict[str, Any]:
    latencies = sorted(x for a in answers for x in a["latencies_ms"])
    done = sum(a["done"] for a in answers)

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    commits: dict[str, int] = {}
    retries = 0
    commit_ms = []
    for answer in answers:
        for outcome, n in answer.get("stats", {}).get("commits", {}).items():
            commits[outcome] = commits.get(outcome, 0) + n
        retries += answer.get("stats", {}).get("txn_retries", 0)
        if "stats" in answer:
            commit_ms.append(answer["stats"]["commit_ms_mean"])
    return {
        "commits": commits,
        "txn_retries": retries,
        "commit_ms_mean": sum(commit_ms) / len(commit_ms) if commit_ms else None,
        "system": system,
        "label": label,
        "producers": PRODUCERS,
        "consumers": CONSUMERS,
        "seconds": seconds,
        "items": done,
        "items_per_s": done / seconds,
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
    }


def run_superstatic(base: Path, seconds: float, agent_args: Sequence[str] = ()) -> dict[str, Any]:
    from superstatic.tools.localcluster import LocalCluster

    with LocalCluster(base / "queue-agents", size=3, agent_args=list(agent_args)) as cluster:
        cluster.start()
        cluster.leader()
        endpoints = cluster.client_endpoints()
        # The cluster is keyed (CURVE, like a deployment): the workers present the app key.
        env = dict(os.environ)
        key = cluster.key_file("app")
        if key is not None:
            env["SUPERSTATIC_KEYS"] = str(key)
        start_at = time.time() + 3.0
        procs = []
        for i, role in enumerate(["producer"] * PRODUCERS + ["consumer"] * CONSUMERS):
            k = i % len(endpoints)
            mine = ",".join(endpoints[k:] + endpoints[:k])
            args = ["superstatic", role, mine, str(start_at), str(seconds)]
            procs.append(_spawn(args, base / "q.log", env))
        answers = _collect(procs, seconds + 3.0)
    label = "superstatic Queue x3 agents (fsync on): put / get(lease) / ack"
    return _row("superstatic", label, answers, seconds)


def run_redis(base: Path, seconds: float) -> dict[str, Any]:
    from superstatic_bench.peers.redis_peer import RedisCluster
    from superstatic_bench.procs import ProcessGroup

    with ProcessGroup(base / "redis-logs") as group:
        cluster = RedisCluster(group, base / "redis")
        cluster.start()
        try:
            start_at = time.time() + 2.0
            port = str(cluster.ports[0])
            roles = ["producer"] * PRODUCERS + ["consumer"] * CONSUMERS
            procs = [
                _spawn(["redis", role, port, str(start_at), str(seconds)], base / "q.log")
                for role in roles
            ]
            answers = _collect(procs, seconds + 2.0)
        finally:
            cluster.close()
    label = "Redis 1+2 (AOF always): LPUSH+WAIT 1 / BLMOVE / LREM+WAIT 1"
    return _row("redis", label, answers, seconds)


def run_pysyncobj(base: Path, seconds: float) -> dict[str, Any]:
    from superstatic.tools.localcluster import free_ports

    ports = ",".join(str(p) for p in free_ports(3))
    start_at = time.time() + 8.0  # the nodes elect a leader first
    procs = [
        _spawn(["pysyncobj", str(i), ports, str(start_at), str(seconds)], base / "q.log")
        for i in range(3)
    ]
    answers = _collect(procs, seconds + 8.0)
    label = "PySyncObj ReplQueue x3 (no fsync): put / get, no lease or ack"
    return _row("pysyncobj", label, answers, seconds)


def run(
    work_dir: Path, seconds: float, peers: bool, agent_args: Sequence[str] = ()
) -> dict[str, Any]:
    """Every row that can run here; a peer that cannot says why and how to install it."""
    from superstatic_bench.peers import install

    outcome: dict[str, Any] = {"rows": [], "skipped": {}, "errors": {}}
    runners: list[tuple[str, Callable[[Path, float], dict[str, Any]]]] = [
        ("superstatic", lambda base, seconds: run_superstatic(base, seconds, agent_args))
    ]
    if peers:
        runners += [("redis", run_redis), ("pysyncobj", run_pysyncobj)]
    for name, runner in runners:
        if name != "superstatic":
            reason = install.check(name, install=True)
            if reason is not None:
                outcome["skipped"][name] = reason
                continue
        try:
            outcome["rows"].append(runner(work_dir, seconds))
        except Exception as exc:
            outcome["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]
    return outcome


def render(outcome: dict[str, Any], markdown: bool = False) -> str:
    from superstatic_bench.report import table, with_notes

    rows = [
        [
            r["label"],
            f"{r['items_per_s']:,.0f}",
            _ms(r["latency_ms"]["p50"]),
            _ms(r["latency_ms"]["p99"]),
            r["items"],
        ]
        for r in outcome["rows"]
    ]
    headers = ["system (3 producers, 3 consumers)", "items/s", "p50", "p99", "items"]
    notes = [
        f"{r['system']}: commits {r['commits']}, conflict re-runs {r['txn_retries']}, "
        f"mean commit {r['commit_ms_mean']:.1f} ms (whole run, warm-up included)"
        for r in outcome["rows"]
        if r.get("commits")
    ]
    notes += [f"{name} skipped: {reason}" for name, reason in outcome["skipped"].items()]
    notes += [f"{name} failed: {error}" for name, error in outcome["errors"].items()]
    return with_notes(table(headers, rows, markdown), notes, markdown)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        kind, *rest = argv[1:]
        if kind == "superstatic":
            answer = superstatic_worker(rest[0], rest[1], float(rest[2]), float(rest[3]))
        elif kind == "redis":
            answer = redis_worker(rest[0], int(rest[1]), float(rest[2]), float(rest[3]))
        else:
            answer = pysyncobj_node(int(rest[0]), rest[1], float(rest[2]), float(rest[3]))
        print(json.dumps(answer), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--peers", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="superstatic-queue-bench-") as tmp:
        outcome = run(Path(tmp), args.seconds, args.peers)
    print(render(outcome))
    return 1 if outcome["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
