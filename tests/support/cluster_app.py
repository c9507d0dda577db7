"""The app side of tests/cluster/test_objects*.py: a real program using only the public API,
run as separate processes against real agents.

    python -m support.cluster_app ENDPOINTS COMMAND [ARGS...]     (from the tests/ folder)

Each command prints one JSON line with its result, then exits (except `serve`, which answers
one JSON line per request line on stdin until EOF).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from typing import Any

import superstatic

ACCOUNTS = ("a", "b", "c", "d")
OPENING = 100


@superstatic.clustered(name="tests.cluster.counter")
class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.history: list[int] = []
        self.by_worker: dict[str, int] = {}

    def bump(self, worker: str) -> int:
        self.value += 1
        self.history.append(self.value)
        self.by_worker[worker] = self.by_worker.get(worker, 0) + 1
        return self.value


@superstatic.clustered(name="tests.cluster.ledger")
class Ledger:
    """Money in two places: balances (one dict) and a journal (another node)."""

    def __init__(self) -> None:
        self.balances = {name: OPENING for name in ACCOUNTS}
        self.journal: list[tuple[str, str, int]] = []

    def transfer(self, src: str, dst: str, amount: int) -> None:
        self.balances[src] -= amount
        self.balances[dst] += amount
        self.journal.append((src, dst, amount))

    def audit(self) -> tuple[int, int]:
        return sum(self.balances.values()), len(self.journal)


def canonical(value: Any) -> Any:
    """A JSON-able form that keeps types and ignores set order (for comparing across processes)."""
    if isinstance(value, dict):
        items = sorted(([canonical(k), canonical(v)] for k, v in value.items()), key=json.dumps)
        return ["dict", items]
    if isinstance(value, list):
        return ["list", [canonical(v) for v in value]]
    if isinstance(value, (set, frozenset)):
        items = sorted((canonical(v) for v in value), key=json.dumps)
        return [type(value).__name__, items]
    if isinstance(value, tuple):
        return ["tuple", [canonical(v) for v in value]]
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    return value


ENV_REPLICATE = "SUPERSTATIC_TEST_REPLICATE"


def main(argv: list[str]) -> int:
    endpoints, command, args = argv[0].split(","), argv[1], argv[2:]
    # The replica mode the test asks of its apps (tests/cluster/test_objects.py runs some of
    # its checks in both); unset, the default (partial, or $SUPERSTATIC_REPLICATE).
    superstatic.connect(endpoints, replicate=os.environ.get(ENV_REPLICATE) or None)
    out: dict[str, Any]
    if command == "bump":
        worker, count = args[0], int(args[1])
        counter = Counter()
        for _ in range(count):
            counter.bump(worker)
        out = {"done": count}
    elif command == "transfer":
        count, seed = int(args[0]), int(args[1])
        rng = random.Random(seed)
        ledger = Ledger()
        for _ in range(count):
            src, dst = rng.sample(ACCOUNTS, 2)
            ledger.transfer(src, dst, rng.randint(1, 30))
        out = {"done": count}
    elif command == "audit":
        count = int(args[0])
        ledger = Ledger()
        violations = 0
        journal_lengths = []
        for _ in range(count):
            total, entries = ledger.audit()  # a read-only transaction: one consistent prefix
            violations += total != OPENING * len(ACCOUNTS)
            journal_lengths.append(entries)
        monotonic = all(a <= b for a, b in itertools.pairwise(journal_lengths))
        out = {"violations": violations, "monotonic": monotonic, "last": journal_lengths[-1]}
    elif command == "dump":
        superstatic.sync()
        out = {"value": canonical(superstatic.plain(superstatic.root(args[0], dict)))}
    elif command == "serve":
        cfg = superstatic.root(args[0], dict)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("sync"):
                superstatic.sync()
            print(
                json.dumps({"value": canonical(superstatic.plain(cfg.get(request["key"])))}),
                flush=True,
            )
        out = {"bye": True}
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out), flush=True)
    superstatic.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
