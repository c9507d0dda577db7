"""A client process of the suite: `python -m superstatic_bench.client --system S --endpoints E`.

It opens the system's driver, then serves JSON-line commands from stdin (see procs.py), one
answer per line on stdout:

* `{"cmd": "prepare"}`: creates what the workload needs (roots, counters); answers facts.
* `{"cmd": "run", "op": "write"|"call"|"rmw", "threads", "start_at", "warmup_s", "duration_s",
  "payload_bytes"}`: T threads start at wall time `start_at` (so every client process starts
  together), run `op` back to back, and count the operations that complete inside the
  measurement window [start_at + warmup_s, + duration_s]; answers counts, errors and latency
  samples (microseconds, per-thread reservoirs).
* `{"cmd": "probe", ...}` (failover): like run (optionally paced: `pace_ms` between one
  thread's starts), but answers each acknowledged write's [start, end] wall times instead of
  latency samples.
* `{"cmd": "fill_big", ...}` and `{"cmd": "disjoint_setup", ...}` (superstatic only): what
  the `big_write` and `disjoint` runs need (workloads/bigdict.py, workloads/disjoint.py);
  `{"cmd": "roots", ...}` (workloads/manyroots.py), `{"cmd": "heap", ...}` (the virtual heap
  workloads: workloads/heap_app.py).
* `{"cmd": "reads", ...}` (workloads/reads.py), `{"cmd": "load", ...}` and `{"cmd": "attach",
  ...}` (workloads/objects_load.py), `{"cmd": "rss"}`: this process's resident memory.
* `{"cmd": "quit"}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

from superstatic_bench.driver import Driver, KeyedDriver, NoDriver, OpFailed
from superstatic_bench.stats import SAMPLES_PER_PROCESS_MAX, Reservoir

THREADS_MAX = 256
# Distinct keys one thread writes, when the command does not say (Settings.keys_per_thread):
# the written keyspace stays bounded however long a run lasts.
KEYS_PER_THREAD = 100
KEYS_PER_THREAD_MAX = 1_000_000
# Errors one thread tolerates in one run before it stops (and the run reports them).
ERRORS_PER_THREAD_MAX = 100
# Acknowledged writes a failover probe reports.
PROBE_OPS_MAX = 500_000
DURATION_S_MAX = 3600.0
OPS = ("write", "call", "rmw")
# Operations of the keyed workloads, which only the superstatic driver has (driver.KeyedDriver).
KEYED_OPS = ("big_write", "disjoint")
DICT_KEYS_MAX = 10_000_000
VALUE_BYTES_MAX = 1 << 20
CLIENTS_MAX = 256
# Keys set per transaction while filling a big dict: a transaction carries at most
# TXN_OPS_MAX (100,000) ops, one per key set.
FILL_BATCH_MAX = 100_000


def _bounded(
    command: dict[str, Any], name: str, low: int, high: int, default: int | None = None
) -> int:
    """An integer field of a command (required unless it has a default) within [low, high];
    the error names the field and its bounds, not the value."""
    value = int(command[name]) if default is None or name in command else default
    if not low <= value <= high:
        raise ValueError(f"{name} outside {low}..{high}")
    return value


def disjoint_key(client_index: int, thread_index: int) -> str:
    """The key of the shared dict that caller (client, thread) of `disjoint` owns."""
    return f"c{client_index}-t{thread_index}"


def keyed_driver(driver: Driver) -> KeyedDriver:
    if not isinstance(driver, KeyedDriver):
        raise OpFailed(f"the {driver.system} driver has no keyed operations (superstatic only)")
    return driver


def make_driver(system: str, endpoints: list[str], options: dict[str, Any]) -> Driver:
    if system == "none":
        return NoDriver()
    if system == "superstatic":
        from superstatic_bench.drive_superstatic import SuperstaticDriver

        return SuperstaticDriver(endpoints, options)
    if system == "redis":
        from superstatic_bench.peers.redis_peer import RedisDriver

        return RedisDriver(endpoints, options)
    if system == "etcd":
        from superstatic_bench.peers.etcd_peer import EtcdDriver

        return EtcdDriver(endpoints, options)
    if system == "pysyncobj":
        from superstatic_bench.peers.pysyncobj_peer import PySyncObjDriver

        return PySyncObjDriver(endpoints, options)
    raise ValueError(f"unknown system {system!r}")


def rss_bytes() -> dict[str, int]:
    """This process's resident memory (total, anonymous, file-backed) from /proc."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class Runner:
    def __init__(self, driver: Driver, client_index: int) -> None:
        self.driver = driver
        self.client_index = client_index

    def run(self, command: dict[str, Any], probe: bool = False) -> dict[str, Any]:
        op = command["op"]
        if op not in OPS + KEYED_OPS:
            raise ValueError(f"unknown op {op!r}; one of {OPS + KEYED_OPS}")
        keyed = keyed_driver(self.driver) if op in KEYED_OPS else None
        threads = int(command["threads"])
        if not 1 <= threads <= THREADS_MAX:
            raise ValueError(f"threads={threads} outside 1..THREADS_MAX={THREADS_MAX}")
        # big_write: the dict's size, and writers in all processes (they stride through it).
        dict_keys = _bounded(command, "dict_keys", 1, DICT_KEYS_MAX, default=1)
        writers = _bounded(command, "clients", 1, CLIENTS_MAX, default=1) * threads
        duration_s = float(command["duration_s"])
        warmup_s = float(command.get("warmup_s", 0.0))
        assert 0 < duration_s <= DURATION_S_MAX, duration_s
        start_at = float(command.get("start_at", time.time()))
        window_start = start_at + warmup_s
        window_end = window_start + duration_s
        value = "v" * int(command.get("payload_bytes", 100))
        pace_s = float(command.get("pace_ms", 0)) / 1000.0
        assert 0.0 <= pace_s <= DURATION_S_MAX, pace_s
        keys = int(command.get("keys_per_thread", KEYS_PER_THREAD))
        if not 1 <= keys <= KEYS_PER_THREAD_MAX:
            raise ValueError(f"keys_per_thread={keys} outside 1..KEYS_PER_THREAD_MAX")
        states = [self.driver.thread_state(i) for i in range(threads)]
        per_thread_cap = max(1, SAMPLES_PER_PROCESS_MAX // threads)
        reservoirs = [Reservoir(per_thread_cap, seed=i) for i in range(threads)]
        counted = [0] * threads
        calls = [0] * threads
        errors: list[dict[str, int]] = [{} for _ in range(threads)]
        acks: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
        attempts_before = self.driver.attempts()
        library_before = keyed.library_counts() if keyed is not None else None

        def loop(t: int) -> None:
            state = states[t]
            key_prefix = f"c{self.client_index}-t{t}-"
            i = 0
            while time.time() < start_at:
                time.sleep(min(0.01, max(0.0, start_at - time.time())))
            failures = 0
            # Pacing (failover probes): each thread starts an operation at most every pace_s,
            # so at any instant most threads are idle and one starts a fresh write soon.
            next_start = time.time()
            while True:
                now = time.time()
                if pace_s > 0 and now < next_start:
                    time.sleep(min(next_start - now, pace_s))
                    now = time.time()
                next_start = now + pace_s
                if now >= window_end:
                    return
                began = time.perf_counter_ns()
                began_wall = now
                try:
                    if op == "write":
                        self.driver.write(state, key_prefix + str(i % keys), value)
                    elif op == "call":
                        self.driver.call(state)
                    elif op == "rmw":
                        self.driver.rmw(state)
                    elif op == "big_write":
                        assert keyed is not None
                        writer = self.client_index * threads + t
                        keyed.big_write(dict_keys, (writer + i * writers) % dict_keys, value)
                    elif op == "disjoint":
                        assert keyed is not None
                        keyed.disjoint_rmw(disjoint_key(self.client_index, t))
                    else:
                        raise AssertionError(op)  # checked before the threads start
                except Exception as exc:
                    name = type(exc).__name__
                    errors[t][name] = errors[t].get(name, 0) + 1
                    failures += 1
                    if failures >= ERRORS_PER_THREAD_MAX:
                        errors[t]["stopped_at_ERRORS_PER_THREAD_MAX"] = ERRORS_PER_THREAD_MAX
                        return
                    continue
                finally:
                    i += 1
                elapsed_ns = time.perf_counter_ns() - began
                calls[t] += 1
                ended_wall = time.time()
                if probe:
                    if len(acks[t]) >= PROBE_OPS_MAX // threads:
                        errors[t]["stopped_at_PROBE_OPS_MAX"] = PROBE_OPS_MAX
                        return
                    acks[t].append((began_wall, ended_wall))
                elif window_start <= ended_wall <= window_end:
                    counted[t] += 1
                    reservoirs[t].add(elapsed_ns // 1000)

        workers = [
            threading.Thread(target=loop, args=(t,), name=f"op-{t}", daemon=True)
            for t in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=max(0.0, window_end - time.time()) + DURATION_S_MAX)
        stuck = sum(1 for w in workers if w.is_alive())
        merged_errors: dict[str, int] = {}
        for e in errors:
            for name, n in e.items():
                merged_errors[name] = merged_errors.get(name, 0) + n
        if stuck:
            merged_errors["threads_stuck"] = stuck
        answer: dict[str, Any] = {
            "ops": sum(counted),
            "calls": sum(calls),
            "attempts": self.driver.attempts() - attempts_before,
            "errors": merged_errors,
            "duration_s": duration_s,
        }
        if keyed is not None and library_before is not None:
            after = keyed.library_counts()
            answer["library"] = {k: after[k] - library_before.get(k, 0) for k in after}
        if probe:
            answer["acks"] = sorted(a for per in acks for a in per)
        else:
            answer["groups"] = [[r.values, r.seen] for r in reservoirs]
        return answer


def serve(driver: Driver, client_index: int) -> None:
    runner = Runner(driver, client_index)
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        command = json.loads(line)
        cmd = command.get("cmd")
        try:
            if cmd == "quit":
                answer: dict[str, Any] = {"ok": True}
                print(json.dumps(answer), flush=True)
                return
            if cmd == "prepare":
                answer = driver.prepare()
            elif cmd == "run":
                answer = runner.run(command)
            elif cmd == "probe":
                answer = runner.run({**command, "op": "write"}, probe=True)
            elif cmd == "fill_big":
                answer = keyed_driver(driver).fill_big_dict(
                    _bounded(command, "dict_keys", 1, DICT_KEYS_MAX),
                    _bounded(command, "batch", 1, FILL_BATCH_MAX),
                    "v" * _bounded(command, "value_bytes", 1, VALUE_BYTES_MAX),
                )
            elif cmd == "disjoint_setup":
                keys = [disjoint_key(client_index, t) for t in range(int(command["threads"]))]
                keyed_driver(driver).disjoint_setup(keys)
                answer = {"keys": keys}
            elif cmd == "roots":
                from superstatic_bench.workloads.manyroots import roots_command

                answer = roots_command(command)
            elif cmd == "heap":
                from superstatic_bench.workloads.heap_app import heap_command

                answer = heap_command(command)
            elif cmd == "rss":
                answer = rss_bytes()
            elif cmd == "reads":
                from superstatic_bench.workloads.reads import measure_reads

                answer = measure_reads(command)
            elif cmd == "load":
                from superstatic_bench.workloads.objects_load import load_objects

                answer = load_objects(command)
            elif cmd == "attach":
                from superstatic_bench.workloads.objects_load import attach

                answer = attach(command)
            else:
                answer = {"error": f"unknown command {cmd!r}"}
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m superstatic_bench.client")
    parser.add_argument("--system", required=True)
    parser.add_argument("--endpoints", default="", help="comma-separated")
    parser.add_argument("--index", type=int, default=0, help="this client's number")
    parser.add_argument("--options", default="{}", help="driver options as JSON")
    args = parser.parse_args(argv)
    endpoints = [e for e in args.endpoints.split(",") if e]
    started = time.perf_counter()
    try:
        driver = make_driver(args.system, endpoints, json.loads(args.options))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"error": f"opening {args.system}: {type(exc).__name__}: {exc}"}))
        return 1
    open_s = time.perf_counter() - started
    print(json.dumps({"ready": True, "pid": os.getpid(), "open_s": open_s}), flush=True)
    try:
        serve(driver, args.index)
    finally:
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
