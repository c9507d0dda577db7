"""The app side of tests/cluster/test_fidelity_cluster.py (issue 10): a real program using the
public API, run as separate processes against real agents.

    python -m support.fidelity_app ENDPOINTS COMMAND [ARGS...]     (from the tests/ folder)

Each command prints one JSON line with its result, then exits.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import superstatic


@superstatic.clustered(name="tests.fidelity.cluster.hits")
class Hits:
    hits = 0  # a class default: the field was added after objects existed

    def hit(self) -> None:
        # Nothing read after the write: the increment's read of the default is the only read.
        self.hits += 1


@superstatic.clustered(name="tests.fidelity.cluster.created")
class CreatedOnce:
    def __init__(self, marker: str, who: str) -> None:
        # A side effect outside the cluster: it must happen once, whoever races to create.
        with open(marker, "a") as f:
            f.write(who + "\n")
        time.sleep(0.5)  # the other creators arrive while this one is still in __init__
        self.creator = who


@superstatic.clustered(name="tests.fidelity.cluster.forked")
class Forked:
    def __init__(self) -> None:
        self.by_worker: dict[str, int] = {}
        self.total = 0

    def bump(self, worker: str) -> int:
        self.by_worker[worker] = self.by_worker.get(worker, 0) + 1
        self.total += 1
        return self.total


def _wait_file(path: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


def _pool_worker(args: tuple[str, int, str]) -> dict[str, Any]:
    """A multiprocessing (fork) worker: uses objects its parent obtained before forking."""
    worker, calls, flag_key = args
    obj = _FORKED[0]
    cfg = _CFG[0]
    last = 0
    for _ in range(calls):
        last = obj.bump(worker)
    # Written by the test after the fork: this child's replica follows the log on its own.
    deadline = time.monotonic() + 60
    while cfg.get(flag_key) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"worker": worker, "pid": os.getpid(), "last": last, "flag": cfg.get(flag_key)}


_FORKED: list[Any] = []
_CFG: list[Any] = []


def main(argv: list[str]) -> int:
    endpoints, command, args = argv[0].split(","), argv[1], argv[2:]
    superstatic.connect(endpoints)
    out: dict[str, Any]
    if command == "hits":
        go, threads, calls = args[0], int(args[1]), int(args[2])
        obj = Hits()
        _wait_file(go)
        errors: list[str] = []

        def work() -> None:
            try:
                for _ in range(calls):
                    obj.hit()
            except Exception as e:  # reported in the output, not lost in the thread
                errors.append(repr(e))

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        out = {"done": threads * calls, "errors": errors}
    elif command == "create":
        go, marker, who = args
        _wait_file(go)
        obj = CreatedOnce(marker, who)
        out = {"creator": obj.creator}
    elif command == "fork-pool":
        workers, calls, flag_key, ready = int(args[0]), int(args[1]), args[2], args[3]
        _FORKED.append(Forked())
        _CFG.append(superstatic.root("fork.cfg", dict))
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            pending = pool.map_async(
                _pool_worker, [(f"w{i}", calls, flag_key) for i in range(workers)]
            )
            Path(ready).write_text("forked")
            results = pending.get(timeout=120)
        # The workers' writes are committed; this process sees them once its replica has
        # applied them: other processes' writes need a sync() (docs/library.md), as in prefork.
        superstatic.sync()
        out = {"results": results, "parent_total": _FORKED[0].total}
    elif command == "prefork":
        children, calls, flag_key, ready = int(args[0]), int(args[1]), args[2], args[3]
        obj = Forked()  # the master obtains the objects, then forks its workers
        cfg = superstatic.root("fork.cfg", dict)
        pids = []
        reads, writes = os.pipe()
        for i in range(children):
            pid = os.fork()
            if pid == 0:  # a worker: serve with the inherited objects, report, exit
                os.close(reads)
                try:
                    for _ in range(calls):
                        obj.bump(f"c{i}")
                    deadline = time.monotonic() + 60
                    while cfg.get(flag_key) is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                    line = json.dumps({"child": i, "flag": cfg.get(flag_key)}) + "\n"
                    os.write(writes, line.encode())
                    superstatic.close()
                finally:
                    os._exit(0)
            pids.append(pid)
        os.close(writes)
        Path(ready).write_text("forked")
        for pid in pids:
            os.waitpid(pid, 0)
        with os.fdopen(reads) as f:
            reports = [json.loads(line) for line in f if line.strip()]
        superstatic.sync()
        out = {"reports": reports, "total": obj.total, "by_worker": dict(obj.by_worker)}
    elif command == "fork-block":
        # Review 38: a forked child's first write is a transaction block, at once (before the
        # background connect of client/default.py's at-fork hook is done): its new object
        # must carry the child's own prefix, which rules 3 holds the entry's client id to.
        superstatic.close()
        superstatic.connect(endpoints, replicate=args[0])
        cfg = superstatic.root("fork.cfg", dict)
        cfg["parent"] = []  # the parent's counter is past 1: the child inherits it
        reads, writes = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(reads)
            try:
                try:
                    with superstatic.transaction():
                        cfg["child"] = []
                    line = {"outcome": "ok"}
                except superstatic.Error as exc:
                    line = {"outcome": "error", "error": str(exc)[:300]}
                os.write(writes, (json.dumps(line) + "\n").encode())
                superstatic.close()
            finally:
                os._exit(0)
        os.close(writes)
        os.waitpid(pid, 0)
        with os.fdopen(reads) as f:
            out = json.loads(f.read())
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out), flush=True)
    superstatic.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
