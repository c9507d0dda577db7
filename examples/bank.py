"""A bank whose accounts live in a clustered object: the program `superstatic demo` runs.

Each worker process makes random transfers between accounts. Every transfer is one method call,
so one serializable transaction: money is never created or destroyed, even when the agent a
worker talks to, or the cluster's leader, is killed mid-run. Run it on its own:

    python examples/bank.py --worker w1 --transfers 200         # embedded single-node agent
    SUPERSTATIC_AGENT=tcp://127.0.0.1:7501,... python examples/bank.py --worker w1

and look at the result with `python examples/bank.py --report`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib

import superstatic

ACCOUNTS = ("alice", "bob", "carol", "dave", "erin")
OPENING_BALANCE = 1_000


@superstatic.clustered(name="demo.bank")
class Bank:
    def __init__(self) -> None:
        self.balances = {name: OPENING_BALANCE for name in ACCOUNTS}
        self.transfers_by_worker: dict[str, int] = {}
        self.last_transfer = None

    def transfer(self, worker: str, src: str, dst: str, amount: int) -> bool:
        """Moves `amount` from src to dst if src can pay; records who did it. All or nothing."""
        if self.balances[src] < amount:
            return False
        self.balances[src] -= amount
        self.balances[dst] += amount
        self.transfers_by_worker[worker] = self.transfers_by_worker.get(worker, 0) + 1
        self.last_transfer = (worker, src, dst, amount)
        return True

    def total(self) -> int:
        return sum(self.balances.values())


def run_worker(worker: str, transfers: int, seed: int) -> dict[str, object]:
    """Makes `transfers` attempts; returns what was acknowledged, for the demo's report."""
    rng = random.Random(seed)
    bank = Bank()
    acknowledged = 0
    declined = 0
    unknown = 0
    latencies_ms: list[float] = []
    for _ in range(transfers):
        src, dst = rng.sample(ACCOUNTS, 2)
        started = time.perf_counter()
        try:
            moved = bank.transfer(worker, src, dst, rng.randint(1, 50))
        except superstatic.Unavailable as exc:
            # The message says whether the outcome is known; the demo counts the unknown ones
            # separately so its "nothing lost, nothing doubled" check stays exact.
            if not exc.outcome_known:
                unknown += 1
            continue
        latencies_ms.append((time.perf_counter() - started) * 1e3)
        if moved:
            acknowledged += 1
        else:
            declined += 1
    latencies_ms.sort()
    return {
        "worker": worker,
        "acknowledged": acknowledged,
        "declined": declined,
        "unknown": unknown,
        "p50_ms": latencies_ms[len(latencies_ms) // 2] if latencies_ms else None,
        "max_ms": latencies_ms[-1] if latencies_ms else None,
    }


def report() -> dict[str, object]:
    """The bank as this process's replica sees it, after a linearizable sync()."""
    superstatic.sync()
    bank = Bank()
    with superstatic.transaction():  # one consistent view of several nodes
        return {
            "balances": dict(bank.balances),
            "transfers_by_worker": dict(bank.transfers_by_worker),
            "total": bank.total(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help="make transfers under this worker name")
    parser.add_argument("--transfers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--report", action="store_true", help="print the bank's state as JSON")
    args = parser.parse_args(argv)
    if args.worker:
        seed = args.seed if args.seed is not None else zlib.crc32(args.worker.encode())
        print(json.dumps(run_worker(args.worker, args.transfers, seed)), flush=True)
    if args.report or not args.worker:
        print(json.dumps(report(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
