"""In-process measurements of the agent's per-key state machine (storage format 3, issue 11).

Not a test. Two figures, each on a fresh LMDB environment with fsync off (apply cost only):

* `set`: the cost of one `set` of an existing key (and of an insert) into a dict of 100 and of
  100,000 keys: records written (StateMachine.records_written) and microseconds per op, one
  entry per apply batch (as one Ready each).
* `objects`: the agent's bytes per object after applying the catch-up workload's shape
  (benchmarks/workloads/objects_load.py: a root dict of buckets of 1,000 small dicts
  {"i": i, "name": "object i"}, 10,000 objects per transaction): pages of the node dbs per
  object, and the process's resident memory growth per object; then the same state shipped
  as a peer snapshot into a fresh environment (a follower catching up that way).
* `replay`: a follower's catch-up by log replay, apart from the network: the log of a
  stopped agent's data folder (e.g. the leader's, from `superstatic bench --only catchup
  --keep`) applied to a fresh store `--per-ready` entries per write transaction with a record
  cache of `--cache-bytes`: CPU seconds and the growth of anonymous and file-backed resident
  memory (what a Ready's size and the cache's bound cost, docs/performance.md "Catch-up after
  the cache fix").
* `roots`: the agent's own CPU time to apply the creation of one root (a new dict and its
  root-table item, as `superstatic.root(name, dict)` sends), median of `ROOT_SAMPLES` for the
  first roots and again after `--count` roots (manyroots without the round trip), with oids
  as the library makes them (a random prefix and a hex counter).
* `batch`: the agent's CPU per committed write under the throughput workload's shape, apart
  from Raft and the network: `--count` lone blind dict sets (model-2 bodies as the library
  sends them, a 100-byte value, keys cycling per client) from `--clients` sessions in
  turn, applied through `StateMachine.apply_batch` `--per-ready` entries per write
  transaction (a Ready of the 3-client run carries ~10): microseconds of process CPU per
  entry, best and median of `--repeat` runs (docs/data-model-v2.md section 8.1). With
  `--new-nodes` each write creates a dict of its client's and binds it in place of the value
  (the replaced ones are garbage). `--rules N` (roots, batch) applies a rules entry first:
  rules 3 checks and marks each created oid (docs/virtual-heap.md section 7).
* `stage`: a follower's catch-up by peer snapshot, apart from the network: the `objects`
  state shipped as chunks of 1 MiB and staged into a fresh store: CPU seconds of building the
  chunks and of staging them, best of `--repeat`, Python's collector on and off
  (docs/data-model-v2.md section 10.1).

    .venv/bin/python benchmarks/v2store_apply.py set
    .venv/bin/python benchmarks/v2store_apply.py objects --count 1000000
    .venv/bin/python benchmarks/v2store_apply.py replay --data-dir D --per-ready 16
    .venv/bin/python benchmarks/v2store_apply.py roots --count 100000
    .venv/bin/python benchmarks/v2store_apply.py batch --count 20000 --clients 3
    .venv/bin/python benchmarks/v2store_apply.py stage --count 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lmdb
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import ConfState, Entry, EntryKind, SnapshotMeta
from superstatic_agent.records import NODE_DB_NAMES
from superstatic_agent.rules import RULES_FIRST, RULES_NEWEST, rules_payload
from superstatic_agent.sessions import Session, encode_session
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import DBS_MAX, Storage, record_put

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

SESSION = 1_000_000
OBJECTS_PER_BUCKET = 1_000
OBJECTS_PER_TXN = 10_000
# replay: log entries read per call, and their bytes, and the largest batch per transaction.
REPLAY_READ_ENTRIES = 256
REPLAY_READ_BYTES = 64 << 20
REPLAY_PER_READY_MAX = 100_000
# roots: samples timed at each size, and roots created per transaction in between.
ROOT_SAMPLES = 200
ROOTS_PER_TXN = 10_000
ROOTS_COUNT_MAX = 10_000_000
# batch: the throughput workload's value, keys per writer thread and writer threads per client.
BATCH_VALUE = "v" * 100
BATCH_KEYS_PER_THREAD = 100
BATCH_THREADS = 16
BATCH_CLIENTS_MAX = 1_000
BATCH_COUNT_MAX = 10_000_000
BATCH_REPEAT_MAX = 100
# stage: the agent's default --snapshot-chunk-bytes-max, and the largest count.
SNAPSHOT_CHUNK_BYTES = 1 << 20
STAGE_COUNT_MAX = 10_000_000


class Bench:
    def __init__(self, path: str, map_bytes: int, rules: int = 1, client: str = "c") -> None:
        self.env = lmdb.open(path, map_size=map_bytes, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env)
        self.client = client
        with self.env.begin(write=True) as txn:
            db = self.env.open_db(b"sessions", txn=txn)
            record_put(txn, db, client.encode(), encode_session(Session(0, 0, opened=SESSION)))
        self.index = 0
        if rules > 1:  # as a cluster's first entry moves it (--rules)
            self.index += 1
            entry = Entry(self.index, 1, EntryKind.NORMAL, rules_payload("a", rules))
            with self.env.begin(write=True) as txn:
                self.sm.apply(txn, entry)

    def apply(self, wire_ops: list[Any]) -> None:
        self.index += 1
        body = ops.encode_txn({}, wire_ops)
        payload = Payload("txn", self.client, self.index, self.index, 1_000, body, SESSION)
        data = encode_payload(payload)
        with self.env.begin(write=True) as txn:
            applied = self.sm.apply(txn, Entry(self.index, 1, EntryKind.NORMAL, data))
        assert applied.outcome == "ok", applied.error

    def node_bytes(self) -> int:
        psize = int(self.env.stat()["psize"])
        pages = 0
        with self.env.begin() as txn:
            for name in NODE_DB_NAMES:
                # The state machine's handles: an installed snapshot swapped the tables (the
                # dbs named `oids`, ... are then the empty staging ones).
                stat = txn.stat(getattr(self.sm.dbs, name.decode()))
                pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return pages * psize


def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
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


def load_objects(b: Bench, count: int) -> None:
    """The catch-up workload's objects, applied OBJECTS_PER_TXN per entry."""
    b.apply(
        [
            ["new", "@roots", "dict", [["bench.objects", Ref("c.root")]]],
            ["new", "c.root", "dict", []],
        ]
    )
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


def measure_objects(count: int) -> None:
    with tempfile.TemporaryDirectory() as path:
        b = Bench(path, 16 << 30)
        rss_before = rss_bytes()
        bytes_before = b.node_bytes()
        started = time.perf_counter()
        load_objects(b, count)
        seconds = time.perf_counter() - started
        node_bytes = b.node_bytes() - bytes_before
        rss = rss_bytes() - rss_before
        print(
            f"{count} objects: {count / seconds:.0f} objects/s applied; node dbs "
            f"{node_bytes / count:.0f} B/object; process RSS growth {rss / count:.0f} B/object; "
            f"data file {os.path.getsize(os.path.join(path, 'data.mdb')) / count:.0f} B/object"
        )
        with tempfile.TemporaryDirectory() as other:
            # A follower that catches up by a peer snapshot: staged, then installed in key
            # order (appended), so its pages are full.
            follower = Bench(other, 16 << 30)
            with b.env.begin() as txn, follower.env.begin(write=True) as target:
                for chunk in b.sm.snapshot_chunks(txn, 1 << 20):
                    follower.sm.stage_chunk(target, chunk)
                follower.sm.install_staged(target, SnapshotMeta(b.index, 1, ConfState.make(["a"])))
            print(
                "the same, installed from a peer snapshot: "
                f"{follower.node_bytes() / count:.0f} B/object"
            )
            follower.env.close()
        b.env.close()


def measure_stage(count: int, repeat: int) -> None:
    """A peer snapshot of `count` objects built and staged in process: CPU seconds of building
    its chunks (a leader) and of staging them into a fresh store (a follower), best of
    `repeat`, with Python's cyclic collector on and off (the agent pauses it per chunk)."""
    with tempfile.TemporaryDirectory() as path, tempfile.TemporaryDirectory() as other:
        b = Bench(path, 16 << 30)
        load_objects(b, count)
        follower = Bench(other, 16 << 30)
        for collector in (True, False):
            (gc.enable if collector else gc.disable)()
            build = stage = float("inf")
            for _ in range(repeat):
                started = time.process_time()
                with b.env.begin() as txn:
                    chunks = list(b.sm.snapshot_chunks(txn, SNAPSHOT_CHUNK_BYTES))
                build = min(build, time.process_time() - started)
                with follower.env.begin(write=True) as target:
                    started = time.process_time()
                    for chunk in chunks:
                        follower.sm.stage_chunk(target, chunk)
                    stage = min(stage, time.process_time() - started)
                    target.abort()
            print(
                f"{count} objects, {len(chunks)} chunks of {SNAPSHOT_CHUNK_BYTES} bytes, "
                f"collector {'on' if collector else 'off'}: building {build:.2f} CPU s, "
                f"staging {stage:.2f} CPU s"
            )
        gc.enable()
        follower.env.close()
        b.env.close()


def measure_replay(data_dir: str, per_ready: int, cache_bytes: int) -> None:
    source = Storage(Path(data_dir), fsync=False)
    entries: list[Entry] = []
    try:
        index = source.first_index()
        while True:
            got = source.entries(index, index + REPLAY_READ_ENTRIES, REPLAY_READ_BYTES)
            if not got:
                break
            entries.extend(got)
            index = got[-1].index + 1
    finally:
        source.close()
    assert entries and entries[0].index == 1, "replay needs a log from index 1 (not compacted)"
    with tempfile.TemporaryDirectory() as path:
        env = lmdb.open(path, map_size=16 << 30, max_dbs=DBS_MAX, sync=False)
        sm = StateMachine(env, node_cache_bytes_max=cache_bytes)
        anon, file = rss_bytes("RssAnon"), rss_bytes("RssFile")
        started = time.process_time()
        for first in range(0, len(entries), per_ready):
            with env.begin(write=True) as txn:
                sm.apply_batch(txn, entries[first : first + per_ready])
        cpu = time.process_time() - started
        print(
            f"{len(entries)} entries, {per_ready} per write transaction, record cache "
            f"{cache_bytes} B: {cpu:.2f} CPU s; resident growth: anonymous "
            f"{(rss_bytes('RssAnon') - anon) / 1e6:.1f} MB, file "
            f"{(rss_bytes('RssFile') - file) / 1e6:.1f} MB"
        )
        env.close()


def measure_roots(count: int, rules: int) -> None:
    client = secrets.token_hex(16)  # as a library connection's client id
    prefix = client[:16]  # and its oids (rules 3 binds them to it)
    made = 0

    def root_ops() -> list[Any]:
        nonlocal made
        made += 1
        oid = f"{prefix}.{made:x}"
        return [["new", oid, "dict", []], ["set", "@roots", f"root-{made}", Ref(oid)]]

    def timed(b: Bench) -> float:
        samples = []
        for _ in range(ROOT_SAMPLES):
            wire_ops = root_ops()
            started = time.process_time()
            b.apply(wire_ops)
            samples.append(time.process_time() - started)
        return statistics.median(samples) * 1e6

    with tempfile.TemporaryDirectory() as path:
        b = Bench(path, 4 << 30, rules, client)
        b.apply([["new", "@roots", "dict", []]])
        first = timed(b)
        while made < count:
            wire_ops: list[Any] = []
            for _ in range(min(ROOTS_PER_TXN, count - made)):
                wire_ops += root_ops()
            b.apply(wire_ops)
        after = timed(b)
        print(
            f"CPU per root created (median of {ROOT_SAMPLES}): first roots {first:.0f} us, "
            f"after {made - ROOT_SAMPLES} roots {after:.0f} us, ratio {after / first:.2f}"
        )
        b.env.close()


def batch_entries(
    count: int, clients: int, first_index: int, rules: int = 1, new_nodes: bool = False
) -> list[Entry]:
    """`clients` "open" entries, then `count` writes taking the clients in turn, each a lone
    blind set of one key of the shared dict "kv" (made by the first write), as
    `superstatic bench --only throughput` sends them: seq_low trails seq by a few in-flight
    calls, log time advances a millisecond every 5 entries."""
    names = [f"{secrets.token_hex(8)}" for _ in range(clients)]
    entries: list[Entry] = []
    index = first_index
    if rules > 1:  # as a cluster's first entry moves it (--rules)
        entries.append(Entry(index, 1, EntryKind.NORMAL, rules_payload("a", rules)))
        index += 1
    for name in names:
        payload = Payload("open", name, 1, 0, 1_000, b"", 0)
        entries.append(Entry(index, 1, EntryKind.NORMAL, encode_payload(payload)))
        index += 1
    sessions = {name: index - clients + i for i, name in enumerate(names)}
    kv = f"{names[0][:16]}.1"  # the first client's oid (rules 3 binds an oid to its creator)
    seqs = dict.fromkeys(names, 1)
    made_count = dict.fromkeys(names, 1)  # the first client's counter 1 is kv
    made = ops.encode_txn_v2(
        0,
        {"@roots": (ops.READ_CONTENT, [])},
        [
            ["new", "@roots", "dict", [["kv", Ref(kv)]]],
            ["new", kv, "dict", []],
        ],
    )
    for n in range(count + 1):
        name = names[n % clients]
        seqs[name] += 1
        seq = seqs[name]
        if n == 0:
            body = made
        else:
            thread = (n // clients) % BATCH_THREADS
            i = (n // clients // BATCH_THREADS) % BATCH_KEYS_PER_THREAD
            key = f"c{n % clients}-t{thread}-{i}"
            wire_ops: list[Any] = [["set", kv, key, BATCH_VALUE]]
            if new_nodes:  # a new dict of the writer's own, bound in place of the value
                made_count[name] += 1
                oid = f"{name[:16]}.{made_count[name]:x}"
                wire_ops = [["new", oid, "dict", [["v", BATCH_VALUE]]], ["set", kv, key, Ref(oid)]]
            body = ops.encode_txn_v2(index - 1, {}, wire_ops)
        time_ms = 1_000 + n // 5
        seq_low = max(0, seq - BATCH_THREADS)
        payload = Payload("txn", name, seq, seq_low, time_ms, body, sessions[name])
        entries.append(Entry(index, 1, EntryKind.NORMAL, encode_payload(payload)))
        index += 1
    return entries


def measure_batch(
    count: int, clients: int, per_ready: int, repeat: int, rules: int, new_nodes: bool
) -> None:
    runs: list[float] = []
    for _ in range(repeat):
        entries = batch_entries(count, clients, 1, rules, new_nodes)
        # The rules entry, the opens and the dict's creation are not the workload.
        warm = clients + 1 + (rules > 1)
        with tempfile.TemporaryDirectory() as path:
            env = lmdb.open(path, map_size=4 << 30, max_dbs=DBS_MAX, sync=False)
            sm = StateMachine(env)
            with env.begin(write=True) as txn:
                results = sm.apply_batch(txn, entries[:warm])
            assert all(r.outcome in ("ok", "noop") for r in results), [r.error for r in results]
            started = time.process_time()
            for first in range(warm, len(entries), per_ready):
                with env.begin(write=True) as txn:
                    results = sm.apply_batch(txn, entries[first : first + per_ready])
                assert results[-1].outcome == "ok", results[-1].error
            runs.append((time.process_time() - started) / count * 1e6)
            env.close()
    print(
        f"{count} writes{' creating a node each' if new_nodes else ''} from {clients} clients, "
        f"{per_ready} per apply batch, rules {rules}: CPU per entry "
        f"best {min(runs):.1f} us, median {statistics.median(runs):.1f} us "
        f"({', '.join(f'{r:.1f}' for r in runs)})"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("set", "objects", "replay", "roots", "batch", "stage"))
    parser.add_argument("--ops", type=int, default=2_000)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--data-dir", help="replay: an agent's data folder")
    parser.add_argument("--per-ready", type=int, help="replay, batch: entries per txn (512, 10)")
    parser.add_argument("--cache-bytes", type=int, default=16 << 20, help="replay: record cache")
    parser.add_argument("--clients", type=int, default=3, help="batch: client sessions")
    parser.add_argument("--repeat", type=int, default=5, help="batch, stage: runs")
    parser.add_argument(
        "--new-nodes",
        action="store_true",
        help="batch: each write creates a node (a dict of its client's) bound in the shared dict",
    )
    parser.add_argument(
        "--rules",
        type=int,
        default=RULES_FIRST,
        help=f"roots, batch: the state-machine rules version applied (1..{RULES_NEWEST})",
    )
    args = parser.parse_args(argv)
    if not RULES_FIRST <= args.rules <= RULES_NEWEST:
        parser.error(f"--rules is {RULES_FIRST}..{RULES_NEWEST}")
    if args.per_ready is None:
        args.per_ready = 10 if args.what == "batch" else 512
    print(f"load average: {os.getloadavg()}")
    if args.what == "set":
        measure_set(args.ops)
    elif args.what == "roots":
        if not 1 <= args.count <= ROOTS_COUNT_MAX:
            parser.error(f"--count is 1..ROOTS_COUNT_MAX={ROOTS_COUNT_MAX} for roots")
        measure_roots(args.count, args.rules)
    elif args.what == "batch":
        if not 1 <= args.count <= BATCH_COUNT_MAX:
            parser.error(f"--count is 1..BATCH_COUNT_MAX={BATCH_COUNT_MAX} for batch")
        if not 1 <= args.clients <= BATCH_CLIENTS_MAX:
            parser.error(f"--clients is 1..BATCH_CLIENTS_MAX={BATCH_CLIENTS_MAX}")
        if not 1 <= args.per_ready <= REPLAY_PER_READY_MAX:
            parser.error(f"--per-ready is 1..REPLAY_PER_READY_MAX={REPLAY_PER_READY_MAX}")
        if not 1 <= args.repeat <= BATCH_REPEAT_MAX:
            parser.error(f"--repeat is 1..BATCH_REPEAT_MAX={BATCH_REPEAT_MAX}")
        measure_batch(
            args.count, args.clients, args.per_ready, args.repeat, args.rules, args.new_nodes
        )
    elif args.what == "stage":
        if not 1 <= args.count <= STAGE_COUNT_MAX:
            parser.error(f"--count is 1..STAGE_COUNT_MAX={STAGE_COUNT_MAX} for stage")
        if not 1 <= args.repeat <= BATCH_REPEAT_MAX:
            parser.error(f"--repeat is 1..BATCH_REPEAT_MAX={BATCH_REPEAT_MAX}")
        measure_stage(args.count, args.repeat)
    elif args.what == "replay":
        if not args.data_dir:
            parser.error("replay needs --data-dir")
        if not 1 <= args.per_ready <= REPLAY_PER_READY_MAX:
            parser.error(f"--per-ready is 1..REPLAY_PER_READY_MAX={REPLAY_PER_READY_MAX}")
        if args.cache_bytes < 1:
            parser.error("--cache-bytes is at least 1")
        measure_replay(args.data_dir, args.per_ready, args.cache_bytes)
    else:
        measure_objects(args.count)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
