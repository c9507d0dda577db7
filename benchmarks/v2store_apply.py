"""In-process measurements of the agent's per-key state machine (storage format 3, issue 11).

Not a test. Two figures, each on a fresh LMDB environment with fsync off (apply cost only):

* `set`: the cost of one `set` of an existing key (and of an insert) into a dict of 100 and of
  100,000 keys: records written (StateMachine.records_written) and microseconds per op, one
  entry per apply batch (as one Ready each).
* `objects`: the agent's bytes per object after applying the catch-up workload's shape
  (benchmarks/workloads/objects_load.py: a root dict of buckets of 1,000 small dicts
  {"i": i, "name": "object i"}, 10,000 objects per transaction): pages of the node dbs per
  object, and the process's resident memory growth per object.

    .venv/bin/python benchmarks/v2store_apply.py set
    .venv/bin/python benchmarks/v2store_apply.py objects --count 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import lmdb
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.records import NODE_DB_NAMES
from superstatic_agent.sessions import Session, encode_session
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import DBS_MAX, record_put

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

SESSION = 1_000_000
OBJECTS_PER_BUCKET = 1_000
OBJECTS_PER_TXN = 10_000


class Bench:
    def __init__(self, path: str, map_bytes: int) -> None:
        self.env = lmdb.open(path, map_size=map_bytes, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env)
        with self.env.begin(write=True) as txn:
            db = self.env.open_db(b"sessions", txn=txn)
            record_put(txn, db, b"c", encode_session(Session(0, 0, opened=SESSION)))
        self.index = 0

    def apply(self, wire_ops: list[Any]) -> None:
        self.index += 1
        body = ops.encode_txn({}, wire_ops)
        data = encode_payload(Payload("txn", "c", self.index, self.index, 1_000, body, SESSION))
        with self.env.begin(write=True) as txn:
            applied = self.sm.apply(txn, Entry(self.index, 1, EntryKind.NORMAL, data))
        assert applied.outcome == "ok", applied.error

    def node_bytes(self) -> int:
        psize = int(self.env.stat()["psize"])
        pages = 0
        with self.env.begin() as txn:
            for name in NODE_DB_NAMES:
                stat = txn.stat(self.env.open_db(name, txn=txn, create=False))
                pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return pages * psize


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_set(ops_count: int) -> None:
    for size in (100, 100_000):
        with tempfile.TemporaryDirectory() as path:
            b = Bench(path, 1 << 30)
            b.apply(
                [
                    ["new", "@roots", "dict", [["d", Ref("c.d")]]],
                    ["new", "c.d", "dict", [[i, i] for i in range(size)]],
                ]
            )
            for label, step in (("update", size), ("insert", 0)):
                started = time.perf_counter()
                records = 0
                for i in range(ops_count):
                    b.apply([["set", "c.d", i % step if step else -1 - i, i]])
                    records += b.sm.records_written
                us = (time.perf_counter() - started) / ops_count * 1e6
                print(
                    f"set ({label}) into a {size}-key dict: {records / ops_count:.1f} records "
                    f"written, {us:.0f} us/op (incl. session and outcome records)"
                )
            b.env.close()


def measure_objects(count: int) -> None:
    with tempfile.TemporaryDirectory() as path:
        b = Bench(path, 16 << 30)
        b.apply(
            [
                ["new", "@roots", "dict", [["bench.objects", Ref("c.root")]]],
                ["new", "c.root", "dict", []],
            ]
        )
        rss_before = rss_bytes()
        bytes_before = b.node_bytes()
        started = time.perf_counter()
        made_buckets: set[int] = set()
        for first in range(0, count, OBJECTS_PER_TXN):
            wire_ops: list[Any] = []
            for i in range(first, min(first + OBJECTS_PER_TXN, count)):
                bucket = i // OBJECTS_PER_BUCKET
                if bucket not in made_buckets:
                    made_buckets.add(bucket)
                    wire_ops.append(["new", f"c.b{bucket}", "dict", []])
                    wire_ops.append(["set", "c.root", f"b{bucket}", Ref(f"c.b{bucket}")])
                wire_ops.append(["new", f"c.o{i}", "dict", [["i", i], ["name", f"object {i}"]]])
                wire_ops.append(["set", f"c.b{bucket}", f"o{i}", Ref(f"c.o{i}")])
            b.apply(wire_ops)
        seconds = time.perf_counter() - started
        node_bytes = b.node_bytes() - bytes_before
        rss = rss_bytes() - rss_before
        print(
            f"{count} objects: {count / seconds:.0f} objects/s applied; node dbs "
            f"{node_bytes / count:.0f} B/object; process RSS growth {rss / count:.0f} B/object; "
            f"data file {os.path.getsize(os.path.join(path, 'data.mdb')) / count:.0f} B/object"
        )
        b.env.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("set", "objects"))
    parser.add_argument("--ops", type=int, default=2_000)
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(f"load average: {os.getloadavg()}")
    if args.what == "set":
        measure_set(args.ops)
    else:
        measure_objects(args.count)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
