"""Micro-benchmark of the list B+tree (agent/listtree.py) over an in-memory chunk store.

    python -m superstatic_bench.listtree_bench [--seconds S] [--sizes 1000,10000,...]

Not a test and not part of `superstatic bench`: it measures the data structure alone (CBOR
encode/decode of chunks, the tree's bookkeeping), with no LMDB, no checksums and no Raft, so
its numbers are an upper bound for what the agent's list ops can do. For each list length it
reports ops/s of `get(i)` at random positions, an insert of one value at a random position,
and an append of one value, each run for about S seconds on its own list, with the record
reads and writes per op and the load average (the machine is shared: compare within a run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable

from superstatic_agent.listtree import ListTree, MemoryChunkStore

SIZES_DEFAULT = (1_000, 10_000, 100_000, 1_000_000)
# Long enough to average over a few hundred ops at the slowest, short enough for a shared
# machine (3 ops x 4 sizes x this).
SECONDS_DEFAULT = 1.0
# Timer reads cost ~0.1 us; ops are batched by this many between reads.
BATCH_OPS = 50


class CountingStore(MemoryChunkStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = self.writes = 0

    def get(self, chunk_id: int) -> bytes | None:
        self.reads += 1
        return super().get(chunk_id)

    def put(self, chunk_id: int, data: bytes) -> None:
        self.writes += 1
        super().put(chunk_id, data)


def _rate(store: CountingStore, op: Callable[[int], None], seconds: float) -> dict[str, float]:
    store.reads = store.writes = 0
    done = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH_OPS):
            op(done)
            done += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    cpu = time.process_time() - cpu_start
    return {
        "ops_per_s": round(done / elapsed),
        "us_per_op": round(elapsed / done * 1e6, 1),
        # This process's CPU time: less sensitive than wall time to other load on the machine.
        "cpu_us_per_op": round(cpu / done * 1e6, 1),
        "reads_per_op": round(store.reads / done, 2),
        "writes_per_op": round(store.writes / done, 2),
    }


def bench_size(n: int, seconds: float, rng: random.Random) -> dict[str, object]:
    row: dict[str, object] = {"length": n}
    store = CountingStore()
    started = time.perf_counter()
    tree = ListTree(store, ListTree.create(store, list(range(n)), 1))
    row["create_s"] = round(time.perf_counter() - started, 3)
    row["height"] = tree.header.height
    row["chunks"] = len(store.records)

    row["get"] = _rate(store, lambda _i: tree.get(rng.randrange(n)), seconds)
    # Inserts grow the list by up to a few thousand: positions stay uniform over it.
    row["insert"] = _rate(
        store, lambda i: tree.splice(p := rng.randrange(n + i), p, [i], 2 + i), seconds
    )
    store = CountingStore()
    tree = ListTree(store, ListTree.create(store, list(range(n)), 1))
    row["append"] = _rate(store, lambda i: tree.extend([i], 2 + i), seconds)
    row["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return row


def _cost(rate: dict[str, float]) -> str:
    return f"{rate['cpu_us_per_op']} us {rate['reads_per_op']}/{rate['writes_per_op']}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS_DEFAULT)
    parser.add_argument(
        "--sizes", default=",".join(str(n) for n in SIZES_DEFAULT), help="comma-separated lengths"
    )
    args = parser.parse_args(argv)
    rng = random.Random(11)
    print(
        "length     height  get ops/s  insert ops/s  append ops/s  (CPU us per op; "
        "reads/writes per op)  load"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        row = bench_size(n, args.seconds, rng)
        g, ins, app = row["get"], row["insert"], row["append"]
        assert isinstance(g, dict) and isinstance(ins, dict) and isinstance(app, dict)
        print(
            f"{n:>9,}  {row['height']:>6}  {g['ops_per_s']:>9,}  {ins['ops_per_s']:>12,}  "
            f"{app['ops_per_s']:>12,}  ({_cost(g)}; {_cost(ins)}; {_cost(app)})  "
            f"{row['loadavg_1m']}",
            flush=True,
        )
        print(json.dumps(row), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
