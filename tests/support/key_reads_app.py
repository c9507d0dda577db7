"""The app side of tests/cluster/test_key_reads.py: key-level reads from separate processes.

    python -m support.key_reads_app ENDPOINTS COMMAND [ARGS...]     (from the tests/ folder)

Prints one JSON line with its result (and the library's own counters: superstatic.stats()),
then exits.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import superstatic

DISJOINT_ROOT = "key_reads.disjoint"
NUMBERS_ROOT = "key_reads.numbers"


def disjoint(worker: str, threads: int, rounds: int) -> dict[str, Any]:
    """`threads` threads, each doing `rounds` read-modify-writes of its own key of one dict."""
    shared = superstatic.root(DISJOINT_ROOT, dict)
    errors: list[str] = []

    @superstatic.transaction()
    def bump(key: str) -> None:
        shared[key] = shared.get(key, 0) + 1

    def run(key: str) -> None:
        try:
            for _ in range(rounds):
                bump(key)
        except Exception as exc:  # reported in the result line
            errors.append(repr(exc))

    workers = [threading.Thread(target=run, args=(f"{worker}.{i}",)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    superstatic.sync()
    mine = {k: v for k, v in shared.items() if k.startswith(worker + ".")}
    return {"errors": errors, "mine": mine}


NUMERIC_KEYS = {"1": 1, "1.0": 1.0, "True": True}


def bump_number(key_repr: str, threads: int, rounds: int) -> dict[str, Any]:
    """Read-modify-writes of one numeric key given by its repr ("1", "1.0", "True"): Python
    makes them one dict key, and so must every replica and the leader's validation."""
    numbers = superstatic.root(NUMBERS_ROOT, dict)
    key = NUMERIC_KEYS[key_repr]
    errors: list[str] = []

    @superstatic.transaction()
    def bump() -> None:
        numbers[key] = numbers.get(key, 0) + 1

    def run() -> None:
        try:
            for _ in range(rounds):
                bump()
        except Exception as exc:  # reported in the result line
            errors.append(repr(exc))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    superstatic.sync()
    return {"errors": errors, "keys": [[type(k).__name__, repr(k)] for k in numbers]}


def put(root: str, key: str, value: str) -> dict[str, Any]:
    """One blind write, `root[key] = value`, committed and applied before it returns."""
    superstatic.root(root, dict)[key] = value
    return {"done": True}


def main(argv: list[str]) -> int:
    endpoints, command, args = argv[0].split(","), argv[1], argv[2:]
    superstatic.connect(endpoints)
    try:
        if command == "disjoint":
            out = disjoint(args[0], int(args[1]), int(args[2]))
        elif command == "number":
            out = bump_number(args[0], int(args[1]), int(args[2]))
        elif command == "put":
            out = put(args[0], args[1], args[2])
        else:
            raise SystemExit(f"unknown command {command!r}")
        snap = superstatic.stats()
        out["conflicts"] = snap["commits"].get("conflict", 0)
        out["txn_retries"] = snap["txn_retries"]
        out["resends"] = snap["resends"]
        out["failovers"] = snap["failovers"]
        print(json.dumps(out), flush=True)
    finally:
        superstatic.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
