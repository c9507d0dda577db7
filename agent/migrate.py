"""`superstatic-agent --migrate --data-dir D`: converts a store of format 2 (data model 1: one
`objects` record per node), 3 or 4 (per-key records, agent/records.py; the Raft log in LMDB)
into format 5 (the Raft log in D/raftlog/, agent/logsegments.py: docs/data-model-v2.md 8.18)
in place, once, with the agent stopped (docs/data-model-v2.md section 7, docs/operations.md
"Upgrading"). Format 2 goes through format 3 first (the steps below), then the log moves
(`_own_log`, after them).

Steps, each safe to interrupt:

1. Copy the environment to `D/format2-backup/` (`env.copy(compact=True)`), synced.
2. Write `meta/migrating` (synced). From here on, an interrupted run is redone from the
   backup: a store found with the marker is first restored from the copy.
3. Convert `objects` node by node (oid order; nids 1, 2, ... in that order) into `oids`,
   `nodes`, `entries`, `order` and `chunks`, in write transactions of at most
   `MIGRATE_TXN_BYTES` written. Header `version` and `shape_version` and every entry's version
   are the v1 record's version; dict and obj positions follow the v1 record's order.
4. Drop `objects` and the format-2 staging dbs (a staged snapshot is simply sent again), write
   `sm_meta/next_nid`, `sm_meta/tomb_horizon` (= the applied index: reads older than the
   migration cannot be checked key by key, the per-key versions being no older than the node's)
   and `meta/format` = 3, delete `meta/migrating`, sync.

The log move (format 3 or 4 to 5), each step safe to interrupt:

1. Remove `D/raftlog.new/` if an interrupted run left it; write the log there: a reset record
   at LMDB's snapshot index, then the `log` db's entries with the term and vote of meta `hard`,
   flushed; rename it to `D/raftlog/` (a `D/raftlog/` found while the store is still format 3
   or 4 was left by an interrupted run: removed first), and sync D.
2. One LMDB transaction: drop the `log` db, delete meta `hard`, write meta
   `log_segment_bytes` and `format` = 5; then sync. Until this commit the store is format 3 or
   4 and a run starts again at step 1; after it, the log in raftlog/ is the store's.

The log, its outcomes, sessions and the rest of sm_meta are kept as they are: entries applied
after the migration may still carry model-1 bodies, which the state machine applies by the v1
rule (it compares header versions, which the migration keeps).

A v1 store may hold what data model 2 refuses: a NaN dict key or set member, or two keys that
are one key in data model 2 (equal in Python but kept apart by v1's exact encodings). The
migration then stops before changing anything but the marker, naming the object, and the store
is restored from the backup at the next run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import lmdb
from superstatic_agent import records as layout
from superstatic_agent.listtree import ListTree
from superstatic_agent.logsegments import SEGMENT_BYTES_DEFAULT, SegmentLog
from superstatic_agent.storage import (
    FORMAT_OWN_LOG,
    FORMAT_TABLES,
    FORMAT_VERSION,
    KEY_APPLIED,
    KEY_FORMAT,
    KEY_HARD,
    KEY_LOG_SEGMENT_BYTES,
    KEY_SNAP,
    LOG_DIR,
    LOG_UNSYNCED_BYTES_MAX,
    Corrupt,
    StartRefused,
    decode_snapshot_meta,
    record_entry_bytes_max,
    record_get,
    record_put,
    unseal,
)

from superstatic.protocol import codec, keynorm

log = logging.getLogger("superstatic.agent")

FORMAT_FROM = 2
FORMAT_TO = layout.FORMAT_VERSION  # of the conversion of data model 1 (then the log moves)
FORMATS_LOG_IN_LMDB = (FORMAT_VERSION, FORMAT_TABLES)
BACKUP_DIR = "format2-backup"
KEY_MIGRATING = b"migrating"  # in meta: a migration started; redo it from the backup
# Bytes written per write transaction: bounds the dirty pages LMDB holds in memory at once.
MIGRATE_TXN_BYTES = 64 << 20
# Named dbs opened while migrating (both layouts and their staging copies, with headroom).
MIGRATE_DBS_MAX = 32
V1_DBS = (b"objects", b"staging_objects", b"staging_sessions", b"staging_sm_meta", b"staging_state")
DATA_FILE = "data.mdb"


class MigrationRefused(StartRefused):
    """The store cannot be migrated as it is; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Migrated:
    nodes: int
    entries: int
    applied: int
    backup: Path
    already: bool = False
    log_entries: int = 0  # entries moved into raftlog/


def migrate(
    data_dir: Path, *, map_bytes: int, log_segment_bytes: int = SEGMENT_BYTES_DEFAULT
) -> Migrated:
    """Migrates the store in `data_dir` to format 5 (idempotent: a format-5 store is left
    alone). Raises MigrationRefused (a StartRefused) when it cannot."""
    data_dir = Path(data_dir)
    backup = data_dir / BACKUP_DIR
    if not (data_dir / DATA_FILE).is_file():
        raise MigrationRefused(f"{data_dir} holds no superstatic store ({DATA_FILE} missing)")
    env = _open(data_dir, map_bytes)
    try:
        meta = env.open_db(b"meta")
        with env.begin() as txn:
            fmt = _read_format(txn, meta)
            migrating = record_get(txn, meta, "meta", KEY_MIGRATING) is not None
    except BaseException:
        env.close()
        raise
    if fmt == FORMAT_OWN_LOG and not migrating:
        env.close()
        return Migrated(0, 0, 0, backup, already=True)
    if fmt in FORMATS_LOG_IN_LMDB and not migrating:  # format 3, or 3 with swapped tables
        try:
            moved = _own_log(env, data_dir, log_segment_bytes)
        finally:
            env.close()
        return Migrated(0, 0, 0, backup, log_entries=moved)
    if migrating:
        env.close()
        if not (backup / DATA_FILE).is_file():
            raise MigrationRefused(
                f"{data_dir} was being migrated but its backup {backup} is missing: restore the "
                "store from your own backup, or remove the data directory to rejoin the "
                "cluster by snapshot"
            )
        log.warning("a migration of %s was interrupted: starting again from %s", data_dir, backup)
        _restore(backup, data_dir)
        env = _open(data_dir, map_bytes)
    elif fmt != FORMAT_FROM:
        env.close()
        raise MigrationRefused(
            f"{data_dir} holds a store of format {fmt!r:.20}; --migrate converts format "
            f"{FORMAT_FROM} (data model 1) to {FORMAT_TO}"
        )
    else:
        try:
            _backup(env, backup)
        except BaseException:
            env.close()
            raise
    try:
        converted = _convert(env, backup)
        moved = _own_log(env, data_dir, log_segment_bytes)
    finally:
        env.close()
    return dataclasses.replace(converted, log_entries=moved)


def _own_log(env: lmdb.Environment, data_dir: Path, segment_bytes: int) -> int:
    """Moves a format-3/4 store's Raft log out of LMDB into raftlog/ (the module docstring's
    steps); returns the entries moved."""
    final = data_dir / LOG_DIR
    scratch = data_dir / (LOG_DIR + ".new")
    for stale in (scratch, final):
        # Left by an interrupted run: the store is still format 3 or 4, so not its log.
        if stale.exists():
            shutil.rmtree(stale)
    log_db = env.open_db(b"log")
    meta = env.open_db(b"meta")
    moved = 0
    segments = SegmentLog(
        scratch,
        segment_bytes=segment_bytes,
        unsynced_bytes_max=min(LOG_UNSYNCED_BYTES_MAX, segment_bytes),
    )
    try:
        with env.begin(buffers=False) as txn:
            try:
                raw_snap = record_get(txn, meta, "meta", KEY_SNAP)
                raw_hard = record_get(txn, meta, "meta", KEY_HARD)
            except Corrupt as exc:
                raise _damaged(exc) from None
            base = 0 if raw_snap is None else decode_snapshot_meta(raw_snap).index
            hard = None if raw_hard is None else cbor2.loads(raw_hard)
            term_vote = None if hard is None else (int(hard[0]), hard[1])
            segments.reset(base)
            if term_vote is not None:
                segments.append((), term_vote)
            chunk: list[tuple[int, int, int, bytes]] = []
            size = 0
            expected = base + 1
            for key, raw in txn.cursor(db=log_db):
                index = int.from_bytes(key, "big")
                if index <= base:
                    continue  # compacted away in all but name: never served
                if index != expected:
                    raise MigrationRefused(
                        f"{data_dir}: its log is not contiguous (entry {index} after "
                        f"{expected - 1}): restore the store from a backup, or remove the "
                        "directory to rejoin the cluster by snapshot"
                    )
                try:
                    term, kind, data = cbor2.loads(unseal("log", bytes(key), raw))
                except Corrupt as exc:
                    raise _damaged(exc) from None
                if chunk and size + len(data) > record_entry_bytes_max(segments):
                    segments.append(chunk)
                    chunk, size = [], 0
                chunk.append((index, term, kind, data))
                size += len(data)
                expected += 1
                moved += 1
            if chunk:
                segments.append(chunk)
        segments.sync()
    finally:
        segments.close()
    os.rename(scratch, final)
    _fsync_dir(data_dir)
    with env.begin(write=True) as txn:
        txn.drop(log_db, delete=True)
        txn.delete(KEY_HARD, db=meta)
        record_put(txn, meta, KEY_LOG_SEGMENT_BYTES, cbor2.dumps(segment_bytes))
        record_put(txn, meta, KEY_FORMAT, cbor2.dumps(FORMAT_OWN_LOG))
    env.sync(True)
    log.info("moved %d log entries after index %d into %s", moved, base, final)
    return moved


def _open(data_dir: Path, map_bytes: int) -> lmdb.Environment:
    return lmdb.open(
        str(data_dir), map_size=map_bytes, max_dbs=MIGRATE_DBS_MAX, sync=True, readahead=False
    )


def _read_format(txn: lmdb.Transaction, meta: Any) -> Any:
    raw = txn.get(KEY_FORMAT, db=meta)
    if raw is None:
        return None
    return cbor2.loads(unseal("meta", KEY_FORMAT, raw))


def _backup(env: lmdb.Environment, backup: Path) -> None:
    """A compacted copy of the untouched store, synced before the marker is written."""
    if backup.exists():
        # Left by a run that stopped before writing the marker: the store itself is intact.
        shutil.rmtree(backup)
    backup.mkdir(parents=True)
    env.copy(str(backup), compact=True)
    _fsync_file(backup / DATA_FILE)
    _fsync_dir(backup)
    _fsync_dir(backup.parent)
    with env.begin(write=True) as txn:
        record_put(txn, env.open_db(b"meta", txn=txn), KEY_MIGRATING, b"1")
    env.sync(True)


def _restore(backup: Path, data_dir: Path) -> None:
    """Puts the backup's data file back in place (atomically: a copy, then a rename)."""
    staged = data_dir / (DATA_FILE + ".restoring")
    shutil.copyfile(backup / DATA_FILE, staged)
    _fsync_file(staged)
    os.replace(staged, data_dir / DATA_FILE)
    _fsync_dir(data_dir)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    """Puts records in write transactions of at most MIGRATE_TXN_BYTES, committing between
    nodes (a node's records are in one transaction, not that it matters: the marker makes the
    whole migration redo-or-done)."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.dbs = {
            name: env.open_db(name) for name in (*layout.NODE_DB_NAMES, b"meta", b"sm_meta")
        }
        self.txn = env.begin(write=True)
        self.written = 0

    def put(self, db: bytes, key: bytes, value: bytes) -> None:
        record_put(self.txn, self.dbs[db], key, value)
        self.written += len(key) + len(value)

    def node_done(self) -> None:
        if self.written >= MIGRATE_TXN_BYTES:
            self.txn.commit()
            self.txn = self.env.begin(write=True)
            self.written = 0

    def commit(self) -> None:
        self.txn.commit()

    def abort(self) -> None:
        self.txn.abort()


class _ChunkWriter:
    """listtree's ChunkStore over the migration's writer, for one list node."""

    def __init__(self, writer: _Writer, nid: int) -> None:
        self.writer = writer
        self.nid = nid
        self.records: dict[int, bytes] = {}

    def get(self, chunk_id: int) -> bytes | None:
        return self.records.get(chunk_id)

    def put(self, chunk_id: int, data: bytes) -> None:
        self.records[chunk_id] = data

    def delete(self, chunk_id: int) -> None:
        self.records.pop(chunk_id, None)

    def flush(self) -> None:
        for chunk_id in sorted(self.records):
            self.writer.put(
                layout.DB_CHUNKS, layout.chunk_key(self.nid, chunk_id), self.records[chunk_id]
            )


def _v1_nodes(env: lmdb.Environment, objects: Any) -> Iterator[tuple[str, int, str, Any]]:
    """(oid, version, kind, contents) of every v1 node in oid order, read in its own read
    transaction (py-lmdb's MDB_NOTLS lets it live beside the writer's transactions)."""
    with env.begin(buffers=False) as txn:
        for key, raw in txn.cursor(db=objects):
            key = bytes(key)
            version, kind, contents = codec.decode_record(unseal("objects", key, raw))
            yield key.decode(), version, kind, contents


def _convert(env: lmdb.Environment, backup: Path) -> Migrated:
    sm_meta = env.open_db(b"sm_meta")
    with env.begin() as txn:
        raw = record_get(txn, sm_meta, "sm_meta", KEY_APPLIED)
    applied = 0 if raw is None else cbor2.loads(raw)[0]
    # Every db is opened before the writer's transaction begins: opening one takes LMDB's
    # writer lock, which this thread would then wait for forever.
    objects = env.open_db(b"objects")
    v1_dbs = [env.open_db(name) for name in V1_DBS]
    writer = _Writer(env)
    nodes = entries = 0
    try:
        for nid, (oid, version, kind, contents) in enumerate(_v1_nodes(env, objects), start=1):
            entries += _convert_node(writer, nid, oid, version, kind, contents)
            nodes += 1
            writer.node_done()
        sm_meta = writer.dbs[b"sm_meta"]
        record_put(writer.txn, sm_meta, layout.KEY_NEXT_NID, cbor2.dumps(nodes + 1))
        record_put(writer.txn, sm_meta, layout.KEY_TOMB_HORIZON, cbor2.dumps(applied))
        for db in v1_dbs:
            writer.txn.drop(db, delete=True)
        meta = writer.dbs[b"meta"]
        record_put(writer.txn, meta, KEY_FORMAT, cbor2.dumps(FORMAT_TO))
        writer.txn.delete(KEY_MIGRATING, db=meta)
    except Corrupt as exc:
        writer.abort()
        raise _damaged(exc) from None
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    env.sync(True)
    log.info(
        "migrated %d nodes (%d entries) at index %d to format %d",
        nodes,
        entries,
        applied,
        FORMAT_TO,
    )
    return Migrated(nodes, entries, applied, backup)


def _convert_node(
    writer: _Writer, nid: int, oid: str, version: int, kind: str, contents: Any
) -> int:
    """Writes one node's format-3 records; returns how many entries it holds."""
    writer.put(layout.DB_OIDS, layout.oid_key(oid), layout.encode_nid(nid))
    if kind == "list":
        chunks = _ChunkWriter(writer, nid)
        extra = ListTree.create(chunks, contents, version).to_wire()
        chunks.flush()
        header = layout.Header(oid, kind, version, version, 0, extra, len(contents))
        writer.put(layout.DB_NODES, layout.nid_key(nid), header.encode())
        return len(contents)
    if kind == "obj":
        extra, items = contents
    elif kind == "dict":
        extra, items = None, contents
    else:
        extra, items = None, None
    buckets: dict[bytes, list[tuple[bytes, layout.EntryRec]]] = {}
    seen: set[bytes] = set()
    count = 0
    if items is not None:
        for pos, (key, value) in enumerate(items):
            ekey = _ekey(oid, key, seen)
            original = key if codec.dumps(key) != ekey else None
            _put_entry(writer, nid, ekey, layout.EntryRec(version, pos, value, original), buckets)
            writer.put(layout.DB_ORDER, layout.order_key(nid, pos), ekey)
            count += 1
        next_pos = count
    else:
        for member in contents:
            ekey = _ekey(oid, member, seen)
            original = member if codec.dumps(member) != ekey else None
            _put_entry(writer, nid, ekey, layout.EntryRec(version, original=original), buckets)
            count += 1
        next_pos = 0
    for key, bucket in buckets.items():
        writer.put(layout.DB_ENTRIES, key, layout.encode_bucket(bucket))
    header = layout.Header(oid, kind, version, version, next_pos, extra, count)
    writer.put(layout.DB_NODES, layout.nid_key(nid), header.encode())
    return count


def _ekey(oid: str, key: Any, seen: set[bytes]) -> bytes:
    try:
        ekey = keynorm.ekey(key)
    except keynorm.KeyRefused as exc:
        raise MigrationRefused(
            f"object {oid} holds a key or set member data model 2 refuses ({exc}); remove it "
            "with the previous superstatic version, then migrate again"
        ) from None
    if ekey in seen:
        raise MigrationRefused(
            f"object {oid} holds two keys or members that are one in data model 2 (equal in "
            "Python, e.g. 1 and 1.0); keep one with the previous superstatic version, then "
            "migrate again"
        )
    seen.add(ekey)
    return ekey


def _put_entry(
    writer: _Writer,
    nid: int,
    ekey: bytes,
    entry: layout.EntryRec,
    buckets: dict[bytes, list[tuple[bytes, layout.EntryRec]]],
) -> None:
    key = layout.entry_key(nid, ekey)
    if layout.entry_key_hashed(key):
        buckets.setdefault(key, []).append((ekey, entry))
    else:
        writer.put(layout.DB_ENTRIES, key, layout.encode_entry(entry))


def _damaged(error: Corrupt) -> MigrationRefused:
    """A damaged v1 record met while converting: what the operator is told."""
    return MigrationRefused(
        f"the store holds a damaged record ({error}); start the previous superstatic version on "
        'it to repair it (docs/agent.md, "Damaged data"), then migrate'
    )
