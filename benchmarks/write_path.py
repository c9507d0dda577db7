"""The disk hop of a sequential call, in process: one Ready's write next to LMDB's own floors.

    python -m superstatic_bench.write_path [--ops N] [--warmup N] [--writers 1,2,3] [--json]

Not a test and not part of `superstatic bench` (whose `trace` workload times the hops of real
calls): this times, per write, what the agent's `persisted` hop is made of (docs/data-model-v2.md
section 8.7). Each row runs in `writers` processes at once, each on its own environment in its
own folder on the same disk, in lockstep (a barrier before every write), the way the three agents
of a cluster on one machine write the same entry at the same moment (the leader sends its APPEND
before its own write). One writer is the disk alone; three is a cluster on one disk.

* `fdatasync`: 200 bytes appended to a plain file, then fdatasync: the disk's flush. The file
  grows, so each fdatasync also commits its new size (and new blocks) in ext4's journal.
* `fdatasync, pre-zeroed segment`: 200 bytes written at the next offset of a file that was
  written with zeros and synced first, then fdatasync: what the append of a Raft log of its own
  would cost (docs/data-model-v2.md 8.16). The size and the blocks are already on disk, so the
  flush is the data block alone, with no journal commit.
* `fdatasync, fallocated segment`: the same into a file reserved with posix_fallocate but never
  written: ext4 marks such blocks "unwritten", and the first write into each 4 KiB block
  converts it in the journal (else a crash would read it back as zeros), so preallocating
  without zero-filling saves the size change but not every journal commit: here one write in
  ~20 pays one (200 B writes), too few to move the p50 or the p90 (data-model-v2.md 8.16).
* `lmdb, 1 flush`: a put in an environment opened with MDB_NOSYNC, then `env.sync(True)`. What
  the suite's `floors` workload calls "LMDB 100 B put + env.sync (one fsync)".
* `lmdb, commit flush only`: the agent's flags (MDB_NOMETASYNC) and no `env.sync`: the commit's
  own data flush, as a durable Ready would cost with its meta-page sync skipped (the unsafe
  bound of docs/data-model-v2.md 8.16; the meta page is flushed by the next commit).
* `lmdb, 2 flushes`: the agent's flags (MDB_NOMETASYNC): the commit flushes the data pages, then
  `env.sync(True)` the meta page that points to them. The floor of any durable LMDB commit that
  survives a power loss whole (agent/storage.py's module docstring says why).
* `Storage.write, leader`: `Storage.write` of a Ready of one entry, as a leader persists a call.
* `Storage.write, follower`: one entry and a hard state whose commit index moved.
* `Storage.write, commit only`: a hard state whose commit index moved and nothing else, the
  shape of an apply Ready without the apply's records: a commit, whose data flush LMDB does,
  and no explicit sync.
* The same three `Storage.write` rows with fsync off: the Python and LMDB cost of the write path
  without the disk.

The storage rows split each write into its commit (the transaction, with LMDB's data flush) and
its explicit sync (`Storage.sync_observer`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import lmdb
from superstatic_agent.raft.types import Entry, EntryKind, HardState, Ready, Role
from superstatic_agent.storage import DBS_MAX, Storage
from superstatic_bench.stats import summarize_us

OPS_DEFAULT = 500
OPS_MAX = 100_000
WARMUP_OPS_DEFAULT = 50
WRITERS_DEFAULT = (1, 3)
WRITERS_MAX = 8
ENTRY_BYTES = 200  # one sequential call's log entry is 100-200 bytes
LMDB_MAP_BYTES = 256 << 20
BARRIER_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 600.0
RESULT_POLL_S = 0.5  # how often a wait for results checks that every writer still runs
# The pre-zeroed and fallocated segments: at least this big, and as big as a row's writes need.
SEGMENT_BYTES_MIN = 1 << 20
ZERO_CHUNK_BYTES = 1 << 20  # zeros written per write() call when filling a segment

Step = Callable[[int], None]


def _fdatasync(folder: Path) -> tuple[Step, Callable[[], None]]:
    fd = os.open(folder / "append.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    data = b"x" * ENTRY_BYTES

    def step(_i: int) -> None:
        os.write(fd, data)
        os.fdatasync(fd)

    return step, lambda: os.close(fd)


def _segment(folder: Path, how: str, size_bytes: int) -> tuple[Step, Callable[[], None]]:
    """Writes at the next offset of a segment of `size_bytes` reserved before the timed writes
    (`how`: "pre-zeroed" writes it with zeros, "fallocated" only reserves its blocks), both
    made durable first so that only the timed writes' own flushes are timed."""
    fd = os.open(folder / "segment.bin", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    if how == "pre-zeroed":
        zeros = bytes(ZERO_CHUNK_BYTES)
        written = 0
        while written < size_bytes:
            written += os.write(fd, zeros[: size_bytes - written])
    else:
        os.posix_fallocate(fd, 0, size_bytes)
    os.fsync(fd)
    folder_fd = os.open(folder, os.O_RDONLY)  # the new name is durable too
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    data = b"x" * ENTRY_BYTES

    def step(i: int) -> None:
        os.pwrite(fd, data, i * ENTRY_BYTES)
        os.fdatasync(fd)

    return step, lambda: os.close(fd)


def _lmdb(folder: Path, flushes: int) -> tuple[Step, Callable[[], None]]:
    # flushes: 1 = MDB_NOSYNC + env.sync; 2 = MDB_NOMETASYNC + env.sync; 0 = MDB_NOMETASYNC alone.
    if flushes == 1:
        env = lmdb.open(str(folder), map_size=LMDB_MAP_BYTES, max_dbs=DBS_MAX, sync=False)
    else:
        env = lmdb.open(
            str(folder), map_size=LMDB_MAP_BYTES, max_dbs=DBS_MAX, sync=True, metasync=False
        )
    db = env.open_db(b"log")
    data = b"x" * ENTRY_BYTES

    def step(i: int) -> None:
        with env.begin(write=True) as txn:
            txn.put((i + 1).to_bytes(8, "big"), data, db=db, append=True)
        if flushes:
            env.sync(True)

    return step, env.close


def _storage(folder: Path, shape: str, fsync: bool, syncs_us: list[float]) -> tuple[Step, Any]:
    storage = Storage(folder, fsync=fsync, map_bytes=LMDB_MAP_BYTES)
    storage.sync_observer = lambda seconds: syncs_us.append(seconds * 1e6)
    data = b"x" * ENTRY_BYTES

    def step(i: int) -> None:
        index = i + 1
        entries = () if shape == "commit only" else (Entry(index, 1, EntryKind.NORMAL, data),)
        hard = None if shape == "leader" else HardState(1, "a", max(0, index - 1))
        role = Role.LEADER if shape == "leader" else Role.FOLLOWER
        if shape == "commit only" and i == 0:
            # The hard state's term and vote must be durable first, as in a running agent:
            # afterwards only the commit index moves, which needs no explicit sync.
            storage.write(Ready(hard, (), None, (), (), (), role, "a", 1), None)
        storage.write(Ready(hard, entries, None, (), (), (), role, "a", 1), None)

    return step, storage.close


ROWS: tuple[tuple[str, str, bool], ...] = (
    ("fdatasync", "", True),
    ("fdatasync", "pre-zeroed segment", True),
    ("fdatasync", "fallocated segment", True),
    ("lmdb, 1 flush", "", True),
    ("lmdb, commit flush only", "", True),
    ("lmdb, 2 flushes", "", True),
    ("Storage.write", "leader", True),
    ("Storage.write", "follower", True),
    ("Storage.write", "commit only", True),
    ("Storage.write", "leader", False),
    ("Storage.write", "follower", False),
    ("Storage.write", "commit only", False),
)


def _writer(
    row: int,
    folder: str,
    ops: int,
    warmup: int,
    barrier: Barrier,
    results: multiprocessing.Queue[Any],
) -> None:
    what, shape, fsync = ROWS[row]
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    syncs_us: list[float] = []
    if what == "fdatasync" and shape:
        size_bytes = max(SEGMENT_BYTES_MIN, (warmup + ops) * ENTRY_BYTES)
        step, close = _segment(path, shape.split()[0], size_bytes)
    elif what == "fdatasync":
        step, close = _fdatasync(path)
    elif what.startswith("lmdb"):
        flushes = 1 if "1 flush" in what else 0 if "commit flush only" in what else 2
        step, close = _lmdb(path, flushes)
    else:
        step, close = _storage(path, shape, fsync, syncs_us)
    samples: list[float] = []
    syncs_before = 0
    sync_samples: list[float] = []
    try:
        for i in range(warmup + ops):
            barrier.wait(BARRIER_TIMEOUT_S)
            syncs_before = len(syncs_us)
            began = time.perf_counter_ns()
            step(i)
            took_us = (time.perf_counter_ns() - began) / 1000
            if i >= warmup:
                samples.append(took_us)
                sync_samples.append(sum(syncs_us[syncs_before:]))
    finally:
        close()
    results.put((summarize_us(samples), summarize_us(sync_samples) if syncs_us else {}))


def _collect(
    results: multiprocessing.Queue[Any],
    processes: list[Any],
    barrier: Barrier,
    label: str,
) -> list[Any]:
    """Every writer's result; a writer that died fails the row at once (its partners, stuck at
    the barrier, are released by aborting it) instead of after RESULT_TIMEOUT_S."""
    got: list[Any] = []
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while len(got) < len(processes):
        try:
            got.append(results.get(timeout=RESULT_POLL_S))
            continue
        except queue.Empty:
            pass
        failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
        if failed:
            barrier.abort()
            raise RuntimeError(f"a writer of the row {label!r} exited with status {failed[0]}")
        if time.monotonic() > deadline:
            barrier.abort()
            raise TimeoutError(f"the row {label!r} gave no result within {RESULT_TIMEOUT_S} s")
    return got


def measure(ops: int, warmup: int, writers: int, folder: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Forked: the parent opens no environment and runs no thread, and a spawned writer would
    # import the agent again for every row.
    context = multiprocessing.get_context("fork")
    for row, (what, shape, fsync) in enumerate(ROWS):
        barrier = context.Barrier(writers)
        results: multiprocessing.Queue[Any] = context.Queue()
        processes = [
            context.Process(
                target=_writer,
                args=(row, str(folder / f"row{row}-w{n}-{writers}"), ops, warmup, barrier, results),
            )
            for n in range(writers)
        ]
        for process in processes:
            process.start()
        try:
            got = _collect(results, processes, barrier, f"{what} {shape}".strip())
        finally:
            for process in processes:
                process.join(RESULT_TIMEOUT_S)
        # The median writer's p50 (with 3 writers: the second to finish, as a quorum waits).
        got.sort(key=lambda pair: pair[0]["p50"])
        total, syncs = got[len(got) // 2]
        out.append(
            {
                "what": what,
                "shape": shape,
                "fsync": fsync,
                "writers": writers,
                "p50_us": total["p50"],
                "p90_us": total["p90"],
                "sync_p50_us": syncs.get("p50"),
                "writer_p50s_us": [pair[0]["p50"] for pair in got],
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m superstatic_bench.write_path")
    parser.add_argument("--ops", type=int, default=OPS_DEFAULT, help="timed writes per row")
    parser.add_argument(
        "--warmup", type=int, default=WARMUP_OPS_DEFAULT, help="untimed writes first, per row"
    )
    parser.add_argument(
        "--writers",
        default=",".join(str(n) for n in WRITERS_DEFAULT),
        help="comma-separated writer process counts (default 1,3)",
    )
    parser.add_argument("--dir", help="folder for the environments (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not 1 <= args.ops <= OPS_MAX:
        parser.error(f"--ops must be between 1 and OPS_MAX ({OPS_MAX})")
    if not 0 <= args.warmup <= OPS_MAX:
        parser.error(f"--warmup must be between 0 and OPS_MAX ({OPS_MAX})")
    try:
        counts = [int(part) for part in args.writers.split(",")]
    except ValueError:
        parser.error("--writers must be comma-separated whole numbers, e.g. 1,3")
    if not counts or any(not 1 <= n <= WRITERS_MAX for n in counts):
        parser.error(f"each --writers count must be between 1 and WRITERS_MAX ({WRITERS_MAX})")
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="write-path-", dir=args.dir) as folder:
        for writers in counts:
            rows += measure(args.ops, args.warmup, writers, Path(folder))
    load_after = os.getloadavg()
    if args.json:
        print(json.dumps({"load_before": load_before, "load_after": load_after, "rows": rows}))
        return 0
    print(
        f"Python {sys.version.split()[0]}, {args.ops} writes per row, load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    print(f"{'writers':>7}  {'write':<34} {'fsync':<5} {'p50':>8} {'p90':>8} {'sync p50':>9}")
    for row in rows:
        label = row["what"] + (f", {row['shape']}" if row["shape"] else "")
        sync = "" if row["sync_p50_us"] is None else f"{row['sync_p50_us']:.0f} us"
        print(
            f"{row['writers']:>7}  {label:<34} {'on' if row['fsync'] else 'off':<5} "
            f"{row['p50_us']:>5.0f} us {row['p90_us']:>5.0f} us {sync:>9}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
