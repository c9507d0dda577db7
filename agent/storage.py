"""The agent's durable state: one LMDB environment (docs/architecture.md section 2).

Sub-databases (the layout is fixed here; the state machine opens the same handles through
`open_dbs`):

| db | key | value |
|---|---|---|
| `meta` | `snap` `conf` `conf0` `tables` `log_segment_bytes` | CBOR: SnapshotMeta, ConfState, 0/1 |
| `sm_meta` | `b"applied"`, ... | the state machine's own scalars (statemachine.py) |
| `oids` `nodes` `entries` `order` `chunks` `tombs` | | the nodes, per key (agent/records.py) |
| `sessions` | client id (utf-8) | CBOR session record |
| `oid_marks` | oid prefix (utf-8) | CBOR `[owner, high, window]` (rules 3: agent/oidmarks.py) |
| `outcomes` | index, 8-byte BE | CBOR `[outcome, collected, log_time_ms, heads]`, trimmed w. log |
| `staging_*` | | a snapshot being received (statemachine.py) |

The names above are what each db holds with meta `tables` absent or 0; with `tables` = 1 each
state-machine db and its staging twin have traded LMDB names (an installed snapshot flips it
instead of copying records: `install_staged`, `open_dbs`, docs/data-model-v2.md section 10).

Every value is stored sealed: its bytes followed by a CRC-32 (zlib.crc32, 4 bytes big-endian)
of key and value together, verified on every read (`record_get`, `unseal`); a mismatch raises
`Corrupt` naming the db and key, and the agent refuses to serve the damaged data (see
docs/data-model.md, "Checksums"). `meta/format` holds FORMAT_VERSION; a store without it (or
with another) is refused at open with a message saying what to do.

`conf` is the configuration at the start of the log (the core's base); `conf0` the cluster's
initial configuration, at index 0, kept forever (a new member's core starts from it).

The Raft log (entries, term and vote) is NOT in LMDB (format 5, docs/data-model-v2.md 8.18):
it is a folder of append-only segments, `raftlog/` (agent/logsegments.py), so that a durable
Ready costs ONE fdatasync (LMDB needs two: its commit's data flush, then the meta page).
`meta/log_segment_bytes` says the size its segments were made at.

A Ready, in this order (`write`):
1. a snapshot install and a changed base configuration (rare): one LMDB transaction, committed
   and synced, THEN the log reset after the snapshot's index. A crash between the two leaves a
   log that ends at or below LMDB's snapshot, or whose entry at the snapshot's index is of
   another term: the open resets it then (`_reconcile_log`). The configuration goes first so
   that no crash leaves entries whose base configuration is not stored.
2. its entries and a changed term or vote: records appended to the log, then ONE fdatasync.
3. `durable()`: the Raft messages leave (acks and votes need step 2 durable, nothing more).
4. the apply (state machine, outcomes, applied index): one LMDB transaction, committed with its
   data flush (MDB_NOMETASYNC) and no sync. After the log's flush, so that the applied index
   never passes what the log holds durably; a power loss may undo this commit, and the durable
   log applies again. A Ready with only entries or a term/vote has no LMDB commit at all.
A `kill -9` at any instant leaves each of the two stores whole (the log's torn tail is cut at
open; LMDB's commit is atomic), with LMDB never ahead of the log.

Power loss (docs/data-model.md, "Durability"): with fsync on, the environment is opened in
LMDB's MDB_NOMETASYNC mode: every commit flushes its data pages before it writes the meta page
that points to them, so the file is never a meta page ahead of its data (under MDB_NOSYNC the
kernel may write them in any order, and a power loss can leave a meta page pointing at pages
that never reached the disk: a corrupt environment). A commit's own meta page is flushed by the
next commit, or by an explicit `env.sync`: step 1's, and compaction's, which syncs LMDB BEFORE
the log deletes any segment (the applied state must be durable before the entries that derive
it go). So everything an app was told about is derivable from durable data, and every Raft
promise is durable before it is sent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import lmdb
from superstatic_agent import records as records_format
from superstatic_agent.config import MAP_BYTES_DEFAULT
from superstatic_agent.logsegments import (
    SEGMENT_BYTES_DEFAULT,
    LogDamaged,
    SegmentLog,
)
from superstatic_agent.noderead import materialize
from superstatic_agent.payload import event_fields
from superstatic_agent.raft.membership import apply_change
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Ready,
    SnapshotMeta,
)
from superstatic_agent.sealed import (
    CHECKSUM_BYTES as CHECKSUM_BYTES,
)
from superstatic_agent.sealed import (
    Corrupt,
    describe_key,
    record_get,
    record_put,
    records,
    unseal,
)
from superstatic_agent.sealed import (
    seal as seal,
)

from superstatic.protocol import codec
from superstatic.protocol.errors import LimitExceeded

log = logging.getLogger("superstatic.agent")

# Named sub-databases in the environment; the layout above uses 20, the rest is headroom.
DBS_MAX = 24
# Log entries load() hands to the core on restart. Compaction (server flag
# --log-retain-entries) keeps the log far below this; past it the store is not one we wrote.
LOG_LOAD_ENTRIES_MAX = 10_000_000
# Default number of entries per call of entries()/events() when a caller gives no tighter bound.
READ_ENTRIES_MAX = 100_000
# The Raft log's folder in the data directory (agent/logsegments.py).
LOG_DIR = "raftlog"
# Entry data per log record: a Ready's entries are split into records of at most this much, or a
# quarter of the log's unsynced window if smaller (one entry bigger than it takes a record of
# its own). A record must fit that window (8.16 (c)); several records of one Ready still get
# ONE fdatasync.
LOG_RECORD_ENTRY_BYTES_MAX = 4 << 20
# The log's unsynced window: a record is at most this, so one entry of the largest body a
# client frame can carry (wire.FRAME_BYTES_MAX, 16 MiB) fits with room.
LOG_UNSYNCED_BYTES_MAX = 32 << 20

# The on-disk format: 3 = nodes stored per key (data model v2, agent/records.py); 2 = whole
# node records, every value sealed with a checksum; 1 = no checksums, no format record. Other
# formats are refused at open: see StartRefused's messages for what to do.
FORMAT_VERSION = records_format.FORMAT_VERSION
FORMAT_MODEL_1 = 2
# Format 3's layout with the live state-machine tables named by KEY_TABLES: written by the first
# snapshot install that swaps the tables. An agent that reads format 3 only would read the tables
# this store no longer uses (an older state, or empty ones) as if they were live, so the store
# says it is another format and such an agent refuses it. This agent reads both; a fresh store
# and a migrated one are format 3 until an install swaps their tables.
FORMAT_TABLES = 4
# Format 5: format 3's records, the tables as `tables` says, and the Raft log (entries, term and
# vote) in raftlog/ instead of LMDB's `log` db and meta `hard` (8.18). The only format this
# agent reads; 3 and 4 (and 2) are converted by `--migrate` (agent/migrate.py). An older agent
# refuses it (it reads 3 and 4 only), so none reads an empty log from a migrated store.
FORMAT_OWN_LOG = 5
FORMATS_READ = (FORMAT_OWN_LOG,)
FORMATS_MIGRATED = (FORMAT_MODEL_1, FORMAT_VERSION, FORMAT_TABLES)
KEY_FORMAT = b"format"
KEY_LOG_SEGMENT_BYTES = b"log_segment_bytes"
# Damaged records a scrub lists by name (it counts them all).
SCRUB_REPORT_MAX = 16

KEY_REPAIR = b"repair"  # in meta: the last index held before a repair emptied the store
KEY_HARD = b"hard"  # formats 3 and 4 only: the term, vote and commit (format 5: in the log)
KEY_SNAP = b"snap"
KEY_CONF = b"conf"
# The cluster's initial configuration (at index 0): what a new member's core starts from. Every
# member keeps it, so any of them can tell a joiner (peer frame WELCOME); compaction never
# drops it.
KEY_CONF0 = b"conf0"
KEY_APPLIED = b"applied"
# In meta: 1 when each state-machine db lives in the LMDB db named "staging_" + its name (and
# is staged into the one named for it), 0 or absent otherwise. An install flips it instead of
# copying a snapshot's records: data-model-v2.md section 10.
KEY_TABLES = b"tables"
STAGING_NEXT = b"next"  # the part number stage_chunk expects next
STAGING_DONE = b"done"  # present once the part marked last was staged

# The state machine's dbs a peer snapshot carries (staged as "staging_" + name).
# oid_marks (rules 3) is last: a store that never ran rules 3 holds none, so its snapshots ship
# exactly what they did before (an agent older than rules 3 refuses an unknown db's records).
SNAPSHOT_DB_NAMES = (b"sm_meta", b"sessions", *records_format.NODE_DB_NAMES, b"oid_marks")
DB_NAMES = (
    b"meta",
    *SNAPSHOT_DB_NAMES,
    b"outcomes",
    *(b"staging_" + name for name in SNAPSHOT_DB_NAMES),
    b"staging_state",
)
assert len(DB_NAMES) <= DBS_MAX

# One stream event: [index, client, seq, outcome, body, collected, log_time_ms, heads]
# (architecture section 5; log_time_ms: the log time after the entry, docs/toolkit.md; heads:
# (oid, kind, class name or None) of the existing nodes its ops reference, docs/virtual-heap.md
# section 3.2).
Head = tuple[str, str, str | None]
Event = tuple[
    int, str | None, int | None, str, bytes | None, tuple[str, ...], int, tuple[Head, ...]
]


# Left in the data directory by an agent that met a committed entry it could not apply
# (statemachine.ApplyFailed): a restart is refused while the store is still below that entry.
POISON_FILE = "POISONED"
# What a poison marker may hold; a larger file is not one we wrote.
POISON_FILE_BYTES_MAX = 64 << 10


class StartRefused(Exception):
    """The agent must not start on this data directory; the message says why and what to do.
    The command line prints it and exits with EXIT_START_REFUSED."""


# Exit status of `superstatic-agent` when it refuses to start (StartRefused): distinct from a
# crash (1) and from bad arguments (2), so a supervisor can tell an operator must act.
EXIT_START_REFUSED = 3


def write_poison_marker(data_dir: Path, index: int, term: int, message: str) -> None:
    """Records the entry apply could not handle (best effort: the disk may be full too)."""
    record = {"index": index, "term": term, "message": message}
    try:
        (Path(data_dir) / POISON_FILE).write_text(json.dumps(record, indent=1) + "\n")
    except OSError as exc:
        log.error("could not write %s in %s: %s", POISON_FILE, data_dir, exc)


def check_poison_marker(data_dir: Path, applied: int) -> None:
    """StartRefused if an earlier run stopped at a committed entry this store has not applied
    yet: starting would only meet it again. A store past it (restored from a peer) starts, and
    the stale marker goes."""
    path = Path(data_dir) / POISON_FILE
    if not path.exists():
        return
    try:
        if path.stat().st_size > POISON_FILE_BYTES_MAX:
            raise ValueError(f"larger than {POISON_FILE_BYTES_MAX} bytes")
        record = json.loads(path.read_text())
        index = record["index"]
        if type(index) is not int:
            raise ValueError("no index")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StartRefused(
            f"{path} exists but cannot be read ({type(exc).__name__}: {exc}). An earlier run "
            "stopped at a committed entry it could not apply; read its log, then delete the "
            "file to start again."
        ) from None
    if applied >= index:
        log.info("%s names entry %d, already applied here: removed", path, index)
        path.unlink()
        return
    raise StartRefused(
        f"refusing to start: an earlier run stopped at committed entry {index} (applied here: "
        f"{applied}): {record.get('message', '')} (marker: {path})"
    )


class Trimmed(Exception):
    """The requested entries were compacted away; the caller needs a snapshot instead."""

    def __init__(self, requested: int, first_index: int) -> None:
        super().__init__(
            f"entry {requested} was compacted: the first retained entry is {first_index}; "
            "send a snapshot"
        )
        self.requested = requested
        self.first_index = first_index


@dataclass(frozen=True, slots=True)
class Dbs:
    """The handles of every sub-database (valid for the life of the environment), by what
    they hold now: the state machine's dbs and their staging copies trade places at each
    snapshot install (`swapped`, KEY_TABLES). Immutable: a reader that took one with its read
    transaction keeps the tables of its snapshot across an install."""

    meta: Any
    sm_meta: Any
    sessions: Any
    oids: Any
    nodes: Any
    entries: Any
    order: Any
    chunks: Any
    tombs: Any
    oid_marks: Any
    outcomes: Any
    staging_sm_meta: Any
    staging_sessions: Any
    staging_oids: Any
    staging_nodes: Any
    staging_entries: Any
    staging_order: Any
    staging_chunks: Any
    staging_tombs: Any
    staging_oid_marks: Any
    staging_state: Any

    def node_dbs(self) -> tuple[Any, ...]:
        """The handles of the per-key node dbs (records.NODE_DB_NAMES order)."""
        return tuple(getattr(self, name.decode()) for name in records_format.NODE_DB_NAMES)

    def swapped(self) -> Dbs:
        """The same handles with each state-machine db and its staging copy exchanged."""
        handles = {name: getattr(self, name) for name in self.__slots__}
        for name in SNAPSHOT_DB_NAMES:
            live, staged = name.decode(), "staging_" + name.decode()
            handles[live], handles[staged] = handles[staged], handles[live]
        return Dbs(**handles)


def store_format(txn: lmdb.Transaction, dbs: Dbs) -> int:
    """The format this store is in (what a rewrite of the format record writes): format 5
    whichever way its tables point (every agent that reads 5 reads `tables`)."""
    return FORMAT_OWN_LOG


def open_dbs(env: lmdb.Environment) -> Dbs:
    """Opens (creating if absent) every sub-database, mapped as KEY_TABLES says. Call with no
    write transaction open in this thread: LMDB opens named databases in a write transaction
    of its own."""
    handles = {name.decode(): env.open_db(name, create=True) for name in DB_NAMES}
    dbs = Dbs(**handles)
    with env.begin() as txn:
        raw = record_get(txn, dbs.meta, "meta", KEY_TABLES)
    tables = 0 if raw is None else cbor2.loads(raw)
    if type(tables) is not int or tables not in (0, 1):
        raise StartRefused(
            "the store's meta record 'tables' is neither 0 nor 1: this store was not written by "
            "this agent's format"
        )
    return dbs.swapped() if tables else dbs


def _fsync_dir(path: Path) -> None:
    """Makes the names in directory `path` durable (a power loss keeps an entry only once its
    directory was fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_entry_bytes_max(raft_log: SegmentLog) -> int:
    """Entry data per log record (LOG_RECORD_ENTRY_BYTES_MAX's comment)."""
    return min(LOG_RECORD_ENTRY_BYTES_MAX, raft_log.unsynced_bytes_max // 4)


def index_key(index: int) -> bytes:
    assert 0 <= index < 1 << 64, index
    return index.to_bytes(8, "big")


def key_index(key: bytes) -> int:
    assert len(key) == 8, key
    return int.from_bytes(key, "big")


# ---------------------------------------------------------------- record encodings


def encode_conf(conf: ConfState) -> list[Any]:
    return [list(conf.voters), list(conf.learners), [list(pair) for pair in conf.addresses]]


def decode_conf(value: Any) -> ConfState:
    voters, learners, addresses = value
    return ConfState.make(voters, learners, [(node, address) for node, address in addresses])


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return cbor2.dumps([meta.index, meta.term, encode_conf(meta.conf)])


def decode_snapshot_meta(data: bytes) -> SnapshotMeta:
    index, term, conf = cbor2.loads(data)
    return SnapshotMeta(index=index, term=term, conf=decode_conf(conf))


def encode_entry(entry: Entry) -> bytes:
    return cbor2.dumps([entry.term, int(entry.kind), entry.data])


def decode_entry(index: int, data: bytes) -> Entry:
    term, kind, payload = cbor2.loads(data)
    return Entry(index=index, term=term, kind=EntryKind(kind), data=payload)


def read_applied(txn: lmdb.Transaction, dbs: Dbs) -> tuple[int, int, int]:
    """(applied index, its term, log time ms) as the state machine recorded them."""
    raw = record_get(txn, dbs.sm_meta, "sm_meta", KEY_APPLIED)
    if raw is None:
        return 0, 0, 0
    index, term, time_ms = cbor2.loads(raw)
    return index, term, time_ms


def write_applied(txn: lmdb.Transaction, dbs: Dbs, index: int, term: int, time_ms: int) -> None:
    record_put(txn, dbs.sm_meta, KEY_APPLIED, cbor2.dumps([index, term, time_ms]))


def read_snapshot_meta(txn: lmdb.Transaction, dbs: Dbs) -> SnapshotMeta | None:
    raw = record_get(txn, dbs.meta, "meta", KEY_SNAP)
    return None if raw is None else decode_snapshot_meta(raw)


# ---------------------------------------------------------------- Storage


@dataclass(frozen=True, slots=True)
class Space:
    """Room in the store: what the map allows, what the pages of every database use, and
    what is left (also bounded by the disk under the data file)."""

    map_bytes: int
    used_bytes: int
    free_bytes: int
    disk_free_bytes: int


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """What a scrub of the whole store found."""

    records: int  # records checked
    damaged: tuple[tuple[str, bytes], ...]  # (db, key) of the first SCRUB_REPORT_MAX damaged
    damaged_count: int


def describe_damage(scrubbed: Scrubbed) -> str:
    shown = ", ".join(f"{db} {describe_key(db, key)}" for db, key in scrubbed.damaged)
    more = scrubbed.damaged_count - len(scrubbed.damaged)
    return f"{scrubbed.damaged_count} damaged records: {shown}" + (
        f" and {more} more" if more else ""
    )


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the environment held at open: the restart arguments of the Raft core."""

    hard_state: HardState | None  # None: a fresh environment
    conf: ConfState | None  # the configuration at the start of the log (RaftNode `conf`)
    conf0: ConfState | None  # the cluster's initial configuration (None: not known here)
    snapshot: SnapshotMeta | None
    entries: list[Entry]  # every stored entry after the snapshot, contiguous
    applied: int
    log_time_ms: int


class Storage:
    """The LMDB environment of one agent; see the module docstring for the layout."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = True,
        map_bytes: int = MAP_BYTES_DEFAULT,
        log_segment_bytes: int = SEGMENT_BYTES_DEFAULT,
        log_spare_thread: bool = True,
    ) -> None:
        """`log_segment_bytes`: the segment size of a NEW store's log (an existing one keeps
        the size stored with it, meta `log_segment_bytes`: 8.16 (e)). `log_spare_thread`
        False: the log's spare segment is made on the caller's thread (the crash tests)."""
        assert map_bytes > 0, map_bytes
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.log_spare_thread = log_spare_thread
        # fsync on: MDB_NOMETASYNC (sync=True, metasync=False), the weakest LMDB mode that
        # keeps the environment whole across a power loss (see the module docstring); write()
        # adds an explicit sync where Raft needs the commit itself durable. fsync off (a
        # labelled benchmark option): MDB_NOSYNC, only a process crash is survived.
        self.env = lmdb.open(
            str(self.path),
            map_size=map_bytes,
            max_dbs=DBS_MAX,
            sync=fsync,
            metasync=False,
            readahead=False,
        )
        self.dbs = open_dbs(self.env)
        # Told the new handles when an install swaps the tables (set by the owner of a state
        # machine on this environment, whose own handles must follow within the same write).
        self.on_dbs: Callable[[Dbs], None] | None = None
        # fsyncs done (each commit's data flush with fsync on, each explicit sync, and each of
        # the log's fdatasyncs): for status and the tests of the sync rules.
        self.syncs = 0
        try:
            segment_bytes = self._check_format(log_segment_bytes)
            if fsync:
                # A fresh store's format record durable before the log holds anything: a
                # power loss must never leave a log beside a store that looks fresh (refused
                # as "a log without its store").
                self.env.sync(True)
            self.log = self._open_log(segment_bytes)
            if fsync:
                # raftlog/'s own name (and data.mdb's) lives in the data directory, which
                # nothing else fsyncs: without this a power loss may keep data.mdb and lose
                # raftlog/, and with it every term, vote and acknowledged entry (review39).
                _fsync_dir(self.path)
        except StartRefused:
            self.env.close()
            raise
        # The first index the log and the event stream serve: LMDB's snapshot index + 1. The
        # log may still hold entries at or below it (compaction deletes whole segments only,
        # and after LMDB's commit): they are never served.
        self._first = 1
        try:
            self._reconcile_log()
        except BaseException:
            self.close()
            raise
        # Told each explicit fsync's duration in seconds (the metrics' fsync histogram), if set.
        self.sync_observer: Callable[[float], None] | None = None
        # (term, vote) as last made durable. A Ready whose hard state differs from it only in
        # the commit index needs no explicit sync: Raft recomputes the commit index after a
        # restart, and applying is replayed from the durable log. Skipping it takes one fsync
        # off every commit's critical path (the leader's apply Ready) and most of the
        # followers'.
        self._term_vote_synced: tuple[int, str | None] | None = self.log.hard

    # ------------------------------------------------------------ format, scrub, repair

    def _check_format(self, log_segment_bytes: int) -> int:
        """Writes FORMAT_OWN_LOG (and the log's segment size) into a fresh store; StartRefused
        for a store of another format (format 1, before checksums, has no format record but
        does hold data). Returns the log's segment size."""
        with self.env.begin(write=True) as txn:
            raw = txn.get(KEY_FORMAT, db=self.dbs.meta)
            if raw is None:
                held = sum(txn.stat(getattr(self.dbs, n.decode()))["entries"] for n in DB_NAMES)
                if held or txn.stat()["entries"] > len(DB_NAMES):
                    raise StartRefused(
                        f"{self.path} holds a superstatic store of format 1 (written before "
                        f"stored records carried checksums); this agent reads format "
                        f"{FORMAT_OWN_LOG} only and does not convert a store in place. Keep "
                        "running the older superstatic on it, or start this agent on an empty "
                        "--data-dir: a member of a cluster whose other agents hold the data is "
                        "sent it (log or snapshot); a single agent starts empty."
                    )
                if (self.path / LOG_DIR).exists() and any((self.path / LOG_DIR).iterdir()):
                    # A log without its LMDB half (data.mdb removed by hand): its entries
                    # would be applied on no snapshot, its vote kept for another store.
                    raise StartRefused(
                        f"{self.path} holds a Raft log ({LOG_DIR}/) but no store beside it: "
                        "remove the directory to rejoin the cluster as a new member, or restore "
                        "it whole from a backup."
                    )
                record_put(txn, self.dbs.meta, KEY_FORMAT, cbor2.dumps(FORMAT_OWN_LOG))
                record_put(
                    txn, self.dbs.meta, KEY_LOG_SEGMENT_BYTES, cbor2.dumps(log_segment_bytes)
                )
                return log_segment_bytes
            try:
                version = cbor2.loads(unseal("meta", KEY_FORMAT, raw))
            except Corrupt:
                version = FORMAT_OWN_LOG  # damaged: the scrub at start reports it
            if version in FORMATS_MIGRATED:
                raise StartRefused(
                    f"{self.path} holds a superstatic store of format {version} (the Raft log "
                    f"inside LMDB{'; data model v1' if version == FORMAT_MODEL_1 else ''}); this "
                    f"agent reads format {FORMAT_OWN_LOG} (the log in {LOG_DIR}/) only. Run "
                    f"`superstatic-agent --migrate --data-dir {self.path}` once, with the agent "
                    "stopped"
                    + (
                        f" (it keeps a copy at {self.path / 'format2-backup'})"
                        if version == FORMAT_MODEL_1
                        else ""
                    )
                    + ", or remove the directory to rejoin the cluster by snapshot."
                )
            if version not in FORMATS_READ:
                raise StartRefused(
                    f"{self.path} holds a superstatic store of format {version!r:.20}; this "
                    f"agent reads format {FORMAT_OWN_LOG} (FORMATS_READ) only: run the "
                    "superstatic version that wrote it, or start on an empty --data-dir."
                )
            raw_size = record_get(txn, self.dbs.meta, "meta", KEY_LOG_SEGMENT_BYTES)
            size = None if raw_size is None else cbor2.loads(raw_size)
            if type(size) is not int or not 0 < size < 1 << 32:
                raise StartRefused(
                    f"{self.path}: the store's meta record 'log_segment_bytes' is missing or "
                    "not a size: this store was not written by this agent's format"
                )
            return size

    def _open_log(self, segment_bytes: int) -> SegmentLog:
        try:
            return SegmentLog(
                self.path / LOG_DIR,
                segment_bytes=segment_bytes,
                unsynced_bytes_max=min(LOG_UNSYNCED_BYTES_MAX, segment_bytes),
                fsync=self.fsync,
                spare_thread=self.log_spare_thread,
            )
        except LogDamaged as exc:
            # Not repaired here: the term and vote live in the log, so this copy cannot know
            # how it voted and must not rejoin as itself (as for a damaged `hard` before).
            raise StartRefused(
                f"the Raft log in {self.path / LOG_DIR} is damaged: {exc}. This agent cannot "
                "know its log or how it voted, so it must not rejoin as itself. Remove it "
                "(superstatic members remove ID), empty its --data-dir, and add it back as a "
                "learner (superstatic members add-learner), then promote it."
            ) from None

    def _reconcile_log(self) -> None:
        """Makes the log agree with LMDB's snapshot (the crash windows of `write`'s step 1 and
        of `repair`): entries at or below the snapshot's index are ignored; a log that ends
        below it, or whose entry there is of another term, is what an install left before its
        reset (the core had dropped every entry): reset now."""
        try:
            with self.env.begin() as txn:
                snapshot = read_snapshot_meta(txn, self.dbs)
        except Corrupt:
            # The scrub at start reports it, and the repair (which resets the log) runs
            # before anything reads the log; until then nothing is reset on a damaged word.
            self._first = self.log.base + 1
            return
        base = 0 if snapshot is None else snapshot.index
        self._first = base + 1
        if self.log.base > base:
            raise StartRefused(
                f"the Raft log in {self.path / LOG_DIR} starts after index {self.log.base}, past "
                f"the store's snapshot at {base}: the two were not written together. Remove "
                "this agent's --data-dir and add it back as a learner, or restore it whole."
            )
        if snapshot is None:
            return
        if self.log.last_index < base:
            self.log.reset(base)
            log.warning("the log ended below the snapshot at %d (install interrupted): reset", base)
            return
        if self.log.base < base:
            _index, term, _kind, _data = next(self.log.read(base, base + 1))
            if term != snapshot.term:
                self.log.reset(base)
                log.warning("the log's term at %d is not the snapshot's: reset", base)

    def scrub(self) -> Scrubbed:
        """Verifies the checksum of every stored record (run at start, before load()). Reads
        the whole store once: about as long as copying the data file."""
        damaged: list[tuple[str, bytes]] = []
        count = checked = 0
        # The log's records were each checked against their CRC when the log was opened
        # (`LogDamaged` refuses the start); this scrub is LMDB's.
        try:
            with self.env.begin() as txn:
                for name in DB_NAMES:
                    db_name = name.decode()
                    for key, raw in txn.cursor(db=getattr(self.dbs, db_name)):
                        checked += 1
                        try:
                            unseal(db_name, key, raw)
                        except Corrupt:
                            count += 1
                            if len(damaged) < SCRUB_REPORT_MAX:
                                damaged.append((db_name, bytes(key)))
        except lmdb.Error as exc:
            raise StartRefused(
                f"the LMDB environment in {self.path} is damaged beyond a record "
                f"({type(exc).__name__}: {exc}). Restore it from a backup, or (as a member of "
                "a cluster) remove this agent, empty its --data-dir and add it back as a "
                "learner (superstatic members)."
            ) from None
        return Scrubbed(checked, tuple(damaged), count)

    def repair(self, scrubbed: Scrubbed, *, peers_exist: bool) -> str:
        """Makes a damaged store whole again or empties it so it can be refilled; returns what
        it did, for the log and STATUS. StartRefused when nothing safe can be done here.

        - Only a partly received snapshot is damaged: it is dropped (the leader resends).
        - Only state machine data, and the log still starts at index 1: the state machine is
          emptied and the log (verified) applies again from index 1: the same state, exactly.
        - Otherwise (the log or its meta is damaged, or it was compacted): everything but the
          term and vote is emptied and the agent is sent the data again by the leader (log or
          snapshot). It withholds its vote until it applied every index it held (`repair`
          record), since it may have acknowledged entries it no longer holds."""
        assert scrubbed.damaged, scrubbed
        hit = {db for db, _ in scrubbed.damaged}
        staging = {n.decode() for n in DB_NAMES if n.startswith(b"staging_")}
        machine = {n.decode() for n in SNAPSHOT_DB_NAMES} | {"outcomes"} | staging
        with self.env.begin(write=True) as txn:
            if hit <= staging:
                drop_staged(txn, self.dbs)
                return "dropped a damaged, partly received snapshot (the leader sends it again)"
            snapshot = None if "meta" in hit else read_snapshot_meta(txn, self.dbs)
            if hit <= machine and snapshot is None:
                for name in SNAPSHOT_DB_NAMES:
                    txn.drop(getattr(self.dbs, name.decode()), delete=False)
                txn.drop(self.dbs.outcomes, delete=False)
                drop_staged(txn, self.dbs)
                return (
                    "emptied the object table and sessions; the log (verified) applies again "
                    "from index 1"
                )
            if not peers_exist:
                raise StartRefused(
                    f"the store in {self.path} is damaged ({describe_damage(scrubbed)}) and "
                    "this agent has no peer to be sent the data again: restore --data-dir "
                    "from a backup."
                )
            last = max(self.log.last_index, 0 if snapshot is None else snapshot.index)
            try:
                # A repair interrupted after the log's reset (below) recorded what it held.
                raw = record_get(txn, self.dbs.meta, "meta", KEY_REPAIR)
                last = max(last, 0 if raw is None else int(cbor2.loads(raw)))
            except Corrupt:
                pass
            # The index held, recorded and durable BEFORE the log forgets it: a crash after the
            # reset must not lower what the vote waits for (it may have acknowledged entries).
            record_put(txn, self.dbs.meta, KEY_REPAIR, cbor2.dumps(last))
        self._committed()
        if self.fsync:
            self.sync()
        # The log next (it keeps the term and vote): a crash after it leaves LMDB as it was,
        # damage and all, and a log ending below LMDB's snapshot, which the open resets to the
        # snapshot (`_reconcile_log`); the next start repairs again. The other order could
        # leave LMDB without a snapshot under a compacted log.
        self.log.reset(0)
        self._first = 1
        with self.env.begin(write=True) as txn:
            for name in DB_NAMES:
                if name != b"meta":
                    txn.drop(getattr(self.dbs, name.decode()), delete=False)
            for key in (KEY_SNAP, KEY_CONF):
                txn.delete(key, db=self.dbs.meta)
            record_put(txn, self.dbs.meta, KEY_FORMAT, cbor2.dumps(store_format(txn, self.dbs)))
        self._committed()
        if self.fsync:
            self.sync()
        return (
            f"emptied the store but the term and vote; the leader sends the data again (log "
            f"or snapshot); no vote until index {last} is applied here again"
        )

    def repair_until(self) -> int:
        """The index a repaired store must apply before this agent votes again (0: none)."""
        with self.env.begin() as txn:
            raw = record_get(txn, self.dbs.meta, "meta", KEY_REPAIR)
        return 0 if raw is None else int(cbor2.loads(raw))

    def repair_done(self) -> None:
        with self.env.begin(write=True) as txn:
            txn.delete(KEY_REPAIR, db=self.dbs.meta)

    # ------------------------------------------------------------ reading at start

    def load(self) -> Loaded:
        with self.env.begin() as txn:
            snapshot = read_snapshot_meta(txn, self.dbs)
            conf_raw = record_get(txn, self.dbs.meta, "meta", KEY_CONF)
            conf = None if conf_raw is None else decode_conf(cbor2.loads(conf_raw))
            conf0_raw = record_get(txn, self.dbs.meta, "meta", KEY_CONF0)
            conf0 = None if conf0_raw is None else decode_conf(cbor2.loads(conf0_raw))
            applied, _term, log_time_ms = read_applied(txn, self.dbs)
        if conf0 is None and snapshot is None:
            conf0 = conf  # stored before conf0 was: the log still starts at index 1
        if snapshot is not None:
            conf = snapshot.conf
        base = self._first - 1
        last = self.log.last_index
        if last - base > LOG_LOAD_ENTRIES_MAX:
            raise LimitExceeded(
                "LOG_LOAD_ENTRIES_MAX", LOG_LOAD_ENTRIES_MAX, last - base, "stored log entries"
            )
        assert applied >= base, ("applied below the snapshot", applied, base)
        if applied > max(base, last):
            # LMDB applied entries the log no longer holds: the log's flush comes before the
            # apply's commit (`write`), so only a store not written by this agent (or copied
            # in halves) looks like this.
            raise StartRefused(
                f"the store in {self.path} applied up to index {applied} but its Raft log ends "
                f"at {last}: the two were not written together. Remove this agent's --data-dir "
                "and add it back as a learner, or restore it whole."
            )
        entries = [
            Entry(index=i, term=t, kind=EntryKind(k), data=d)
            for i, t, k, d in self.log.read(base + 1, last + 1)
        ]
        hard = self.log.hard
        # The commit index is not stored (Raft recomputes it: 8.16, "What building it takes"
        # 1); what this store applied was committed.
        hard_state = None if hard is None else HardState(term=hard[0], vote=hard[1], commit=applied)
        return Loaded(hard_state, conf, conf0, snapshot, entries, applied, log_time_ms)

    # ------------------------------------------------------------ the one write per Ready

    def write(
        self,
        ready: Ready,
        apply_fn: Callable[[lmdb.Transaction], None] | None,
        *,
        conf: ConfState | None = None,
        conf0: ConfState | None = None,
        durable: Callable[[], None] | None = None,
    ) -> None:
        """Persists one Ready in the order of the module docstring: (1) a snapshot install and
        `conf` (pass `node.base_conf`: the configuration at the start of the log, only when it
        changed) and `conf0` (the initial configuration, once) in one LMDB transaction, synced,
        then the log's reset; (2) the entries (truncating the log at the first one's index)
        and a changed term/vote appended to the log, ONE fdatasync; (3) `durable()`, where the
        caller sends the Raft messages; (4) `apply_fn(txn)` (the state machine applying
        `ready.committed`) in one LMDB transaction, not synced.

        An exception aborts the step it happens in and every later one; earlier steps stay
        done (each leaves the store whole). A step whose LMDB map is full is tried once more
        after `nudge` (the pages the last write freed become reusable after one more commit).
        """
        hs_new = ready.hard_state
        term_vote = None if hs_new is None else (hs_new.term, hs_new.vote)
        hard_changed = term_vote is not None and term_vote != self._term_vote_synced
        if ready.snapshot is not None or conf is not None or conf0 is not None:
            self._write_base(ready.snapshot, conf, conf0)
        if ready.entries or hard_changed:
            self._append(ready.entries, term_vote if hard_changed else None)
            self._sync_log()
            if term_vote is not None:
                # Durable now (flushed, or fsync off by choice). Not reset by a Ready without a
                # hard state: the core's term and vote are what they were.
                self._term_vote_synced = term_vote
        if durable is not None:
            durable()
        if apply_fn is not None:
            self._commit(apply_fn)

    def _write_base(
        self, snapshot: SnapshotMeta | None, conf: ConfState | None, conf0: ConfState | None
    ) -> None:
        dbs_before = self.dbs

        def base(txn: lmdb.Transaction) -> None:
            if snapshot is not None:
                self._install_snapshot(txn, snapshot)
            if conf is not None:
                self.store_conf(txn, conf)
            if conf0 is not None:
                self.store_conf0(txn, conf0)

        try:
            self._commit(base)
        except BaseException:
            if self.dbs is not dbs_before:
                self._set_dbs(dbs_before)  # the install aborted with the transaction
            raise
        if self.fsync:
            self.sync()  # before the log moves past it: see the module docstring, step 1
        if snapshot is not None:
            # The core reset its log to start after the snapshot: every stored entry is
            # obsolete (durable at once: a fresh segment, the older ones deleted).
            self.log.reset(snapshot.index)
            self._first = snapshot.index + 1

    def _commit(self, body: Callable[[lmdb.Transaction], None]) -> None:
        """One LMDB write transaction running `body`, tried once more after `nudge` if the map
        is full (the failed attempt left nothing: an aborted transaction)."""
        try:
            with self.env.begin(write=True) as txn:
                body(txn)
        except lmdb.MapFullError:
            log.warning("the store's map is full: retrying the write once pages freed are reused")
            self.nudge()
            with self.env.begin(write=True) as txn:
                body(txn)
        self._committed()

    @property
    def term_vote_durable(self) -> tuple[int, str | None] | None:
        """(term, vote) as last written by `write` (None before the first hard state)."""
        return self._term_vote_synced

    def store_conf(self, txn: lmdb.Transaction, conf: ConfState) -> None:
        """Stores the base configuration (at the start of the log) if it changed."""
        data = cbor2.dumps(encode_conf(conf))
        if record_get(txn, self.dbs.meta, "meta", KEY_CONF) != data:
            record_put(txn, self.dbs.meta, KEY_CONF, data)

    def store_conf0(self, txn: lmdb.Transaction, conf0: ConfState) -> None:
        """Stores the cluster's initial configuration; it never changes once stored."""
        data = cbor2.dumps(encode_conf(conf0))
        stored = record_get(txn, self.dbs.meta, "meta", KEY_CONF0)
        assert stored in (None, data), ("the initial configuration changed", stored, data)
        if stored is None:
            record_put(txn, self.dbs.meta, KEY_CONF0, data)

    def store_initial(self, conf0: ConfState) -> None:
        """A joiner adopting the initial configuration a member sent: stored (and synced) at
        once as both conf0 and the base configuration, so a restart does not ask again."""
        with self.env.begin(write=True) as txn:
            self.store_conf0(txn, conf0)
            self.store_conf(txn, conf0)
        self._committed()
        if self.fsync:
            self.sync()

    def sync(self) -> None:
        """Makes every committed LMDB transaction durable (with MDB_NOMETASYNC: flushes the
        last commit's meta page)."""
        started = time.monotonic()
        self.env.sync(True)
        self.syncs += 1
        if self.sync_observer is not None:
            self.sync_observer(time.monotonic() - started)

    def _sync_log(self) -> None:
        """The log's ONE fdatasync for what this Ready appended (none with fsync off)."""
        started = time.monotonic()
        before = self.log.syncs
        self.log.sync()
        flushed = self.log.syncs - before  # 0 with fsync off: only real flushes count
        self.syncs += flushed
        if flushed and self.sync_observer is not None:
            self.sync_observer(time.monotonic() - started)

    def _committed(self) -> None:
        """After each write transaction this class commits: with fsync on, LMDB flushed its
        data pages (its meta page waits for the next commit or sync)."""
        if self.fsync:
            self.syncs += 1

    def _install_snapshot(self, txn: lmdb.Transaction, meta: SnapshotMeta) -> None:
        self._set_dbs(install_staged(txn, self.dbs, meta))
        # The stream of outcomes restarts after the snapshot (the log is reset after this
        # transaction is durable: `_write_base`).
        txn.drop(self.dbs.outcomes, delete=False)
        record_put(txn, self.dbs.meta, KEY_SNAP, encode_snapshot_meta(meta))
        applied, _term, _time_ms = read_applied(txn, self.dbs)
        assert applied == meta.index, ("staged snapshot is not at the meta's index", applied)

    def _set_dbs(self, dbs: Dbs) -> None:
        self.dbs = dbs
        if self.on_dbs is not None:
            self.on_dbs(dbs)

    def _append(self, entries: tuple[Entry, ...], term_vote: tuple[int, str | None] | None) -> None:
        """Appends `entries` (cutting the log's suffix from the first one's index) and/or a new
        term and vote as log records, split so each holds at most LOG_RECORD_ENTRY_BYTES_MAX
        of entry data (one bigger entry alone); not flushed here."""
        if entries and entries[0].index <= self.log.last_index:
            # Raft never truncates committed (hence applied or compacted) entries. Checked only
            # when truncating: an append past the last entry cannot touch them.
            with self.env.begin() as txn:
                applied, _term, _time_ms = read_applied(txn, self.dbs)
            first = entries[0].index
            assert first > max(self._first - 1, applied), ("truncating committed", first, applied)
        if not entries:
            assert term_vote is not None
            self.log.append((), term_vote)
            return
        chunk: list[tuple[int, int, int, bytes]] = []
        size = 0
        hard = term_vote
        record_bytes_max = record_entry_bytes_max(self.log)
        for entry in entries:
            if chunk and size + len(entry.data) > record_bytes_max:
                self.log.append(chunk, hard)
                chunk, size, hard = [], 0, None  # the next records carry it anyway
            chunk.append((entry.index, entry.term, int(entry.kind), entry.data))
            size += len(entry.data)
        self.log.append(chunk, hard)

    # ------------------------------------------------------------ reading the log

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        """Stored entries with lo <= index < hi, stopping before `bytes_max` bytes of data (but
        always at least one entry if any is stored at `lo`). Raises Trimmed below the first
        stored entry. On the loop's thread, like every write (the log is not thread-safe, and
        compaction deletes segments: 8.16 (b))."""
        assert 1 <= lo <= hi, (lo, hi)
        assert bytes_max >= 1, bytes_max
        if lo < self._first:
            raise Trimmed(lo, self._first)
        out: list[Entry] = []
        size = 0
        for index, term, kind, data in self.log.read(lo, min(hi, lo + READ_ENTRIES_MAX)):
            size += len(data)
            if out and size > bytes_max:
                break
            out.append(Entry(index=index, term=term, kind=EntryKind(kind), data=data))
        return out

    def events(self, from_index: int, count_max: int, bytes_max: int) -> list[Event]:
        """Applied entries from `from_index` (inclusive) as stream events, at most `count_max`
        of them and about `bytes_max` bytes of bodies (always at least one if one is applied).
        Empty if from_index > applied. Raises Trimmed if from_index was compacted (or is 0):
        the subscriber needs a snapshot. Entries at or below the applied index never change
        in the log (Raft never truncates them), so reading them beside LMDB's read
        transaction is consistent."""
        assert count_max >= 1 and bytes_max >= 1, (count_max, bytes_max)
        out: list[Event] = []
        size = 0
        if from_index < self._first:
            raise Trimmed(from_index, self._first)
        with self.env.begin() as txn:
            applied, _term, _time_ms = read_applied(txn, self.dbs)
            last = min(applied, from_index + count_max - 1)
            assert last <= self.log.last_index, ("applied entries not in the log", last)
            for index, term, kind, data in self.log.read(from_index, last + 1):
                key = index_key(index)
                raw_outcome = record_get(txn, self.dbs.outcomes, "outcomes", key)
                assert raw_outcome is not None, ("applied lost", index)
                # [outcome, collected, log_time_ms, heads]; records written before log time
                # was kept have two fields: 0 (replicas take the max, so it never goes back);
                # before heads, three: none (the entry referenced no node an app lacks a head
                # of: every app then held a full replica).
                outcome, collected, *rest = cbor2.loads(raw_outcome)
                log_time_ms = rest[0] if rest else 0
                heads = tuple((h[0], h[1], h[2]) for h in rest[1]) if len(rest) > 1 else ()
                entry = Entry(index=index, term=term, kind=EntryKind(kind), data=data)
                client, seq, body = event_fields(entry, outcome)
                size += 32 + (0 if body is None else len(body)) + 24 * len(collected)
                if out and size > bytes_max:
                    break
                out.append(
                    (index, client, seq, outcome, body, tuple(collected), log_time_ms, heads)
                )
        return out

    # ------------------------------------------------------------ compaction and snapshots

    def compact(self, upto_index: int) -> SnapshotMeta | None:
        """Drops log entries and outcomes at or below `upto_index` (which must be applied) and
        records the snapshot meta there: (index, term of that entry, configuration in force).
        Returns the meta to give the core's compact(), or None if nothing was to do.

        LMDB first, synced; only then does the log delete segments (whole ones, below the
        index): with MDB_NOMETASYNC a power loss can undo LMDB's last commits, and the entries
        they applied must still be in the log (8.16 (a))."""
        base = self._first - 1
        if upto_index <= base:
            return None
        with self.env.begin(write=True) as txn:
            snapshot = read_snapshot_meta(txn, self.dbs)
            assert (0 if snapshot is None else snapshot.index) == base, (snapshot, base)
            applied, _term, _time_ms = read_applied(txn, self.dbs)
            assert upto_index <= applied, ("compacting beyond applied", upto_index, applied)
            if snapshot is not None:
                conf = snapshot.conf
            else:
                conf_raw = record_get(txn, self.dbs.meta, "meta", KEY_CONF)
                assert conf_raw is not None, "compacting before the base configuration is stored"
                conf = decode_conf(cbor2.loads(conf_raw))
            term = 0
            # Walk base+1..upto: the conf in force at upto replays the CONF entries.
            expected = base + 1
            for index, entry_term, kind, data in self.log.read(base + 1, upto_index + 1):
                assert index == expected, ("log not contiguous", index, expected)
                if kind == EntryKind.CONF:
                    conf = apply_change(conf, ConfChange.decode(data))
                term = entry_term
                expected += 1
            assert expected == upto_index + 1, ("log does not hold", upto_index, expected)
            outcomes = txn.cursor(db=self.dbs.outcomes)
            if outcomes.first():
                for _ in range(upto_index - base):
                    if not outcomes.key() or key_index(outcomes.key()) > upto_index:
                        break
                    outcomes.delete()
            meta = SnapshotMeta(index=upto_index, term=term, conf=conf)
            record_put(txn, self.dbs.meta, KEY_SNAP, encode_snapshot_meta(meta))
        self._committed()
        self.nudge()  # the deleted outcomes' pages become reusable by the very next write
        if self.fsync:
            self.sync()
        self._first = upto_index + 1
        self.log.compact(upto_index)
        return meta

    def object_snapshot(self) -> tuple[int, Iterator[tuple[str, bytes]]]:
        """The applied index and an iterator of (oid, record bytes) read from ONE read
        transaction, which stays open until the iterator is exhausted or closed. The records
        are in the form of data model 1 (codec.encode_record), built node by node from the
        per-key records: what the app snapshot of the stream carries until its per-key frames
        (docs/data-model-v2.md section 5) replace it."""
        applied, _log_time_ms, nodes = self.object_snapshot_timed()
        return applied, nodes

    def object_snapshot_timed(self) -> tuple[int, int, Iterator[tuple[str, bytes]]]:
        """object_snapshot with the log time at the applied index (from the same read)."""
        txn = self.env.begin()
        applied, _term, log_time_ms = read_applied(txn, self.dbs)

        def nodes() -> Iterator[tuple[str, bytes]]:
            try:
                for key, _value in records(txn, self.dbs.oids, "oids"):
                    oid = key.decode()
                    node = materialize(txn, self.dbs, oid)
                    assert node is not None, oid
                    yield oid, codec.encode_record(*node)
            finally:
                txn.abort()

        return applied, log_time_ms, nodes()

    def first_index(self) -> int:
        """The first index the log (and the event stream) can serve."""
        return self._first

    @property
    def last_index(self) -> int:
        """The log's last entry (its snapshot's index if it holds none)."""
        return max(self.log.last_index, self._first - 1)

    def nudge(self) -> None:
        """Commits an (almost) empty write transaction. LMDB reuses pages freed by a write only
        from the second write after it (the last committed snapshot still holds them), so a
        write right after a large deletion (compaction) could find the map full although half
        of it is free; one more commit makes those pages reusable at once."""
        with self.env.begin(write=True) as txn:
            record_put(txn, self.dbs.meta, KEY_FORMAT, cbor2.dumps(store_format(txn, self.dbs)))
        self._committed()

    def space(self) -> Space:
        """The room left for writes. Pages in use are counted from every database's own
        statistics (freed pages, on LMDB's free list, are reused by later writes, so they
        count as free); the map and the disk both bound it: the file may grow to the map size,
        and only as far as the disk's free space allows."""
        psize = int(self.env.stat()["psize"])
        with self.env.begin() as txn:
            pages = 2  # the two meta pages
            for db in [None, *(getattr(self.dbs, name.decode()) for name in DB_NAMES)]:
                stat = self.env.stat() if db is None else txn.stat(db)
                pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        used = pages * psize
        map_bytes = int(self.env.info()["map_size"])
        data_file = self.path / "data.mdb"
        file_bytes = os.path.getsize(data_file) if data_file.exists() else 0
        # Read before the disk's free space: zeros the spare writes in between only lower
        # the free space seen, never the part counted here (the room errs low, not high).
        spare_outstanding = self.log.spare_outstanding_bytes()
        vfs = os.statvfs(self.path)
        disk_free = vfs.f_bavail * vfs.f_frsize
        # The Raft log makes its next segment whole (segment_bytes written at once) on this
        # disk: that much of the free space is the log's, not room for writes. And the log
        # grows on the disk alone (pages LMDB freed inside its file are no room for it): the
        # room is at most the disk's beyond that segment. Counted, the reserve refuses
        # appends before the disk cannot hold a segment; uncounted, a full disk halted the
        # agent on ENOSPC for good, a restart needed (review40). A spare segment made ahead
        # (agent/logsegments.py) is already out of the free space and does NOT count as that
        # segment: the one after it is made right after the roll takes it, from this room
        # (counted as the spare, an LMDB that filled the disk would leave no room for it and
        # the roll after would halt the agent). A spare being made still has its outstanding
        # zeros to write: counted too.
        disk_room = max(0, disk_free - self.log.segment_bytes - spare_outstanding)
        ceiling = min(map_bytes, file_bytes + disk_room)
        return Space(map_bytes, used, max(0, min(ceiling - used, disk_room)), disk_free)

    def disk_bytes(self) -> int:
        """Bytes of the data file in use (pages up to the last one written)."""
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        data_file = self.path / "data.mdb"
        return min(used, os.path.getsize(data_file)) if data_file.exists() else used

    def close(self) -> None:
        self.env.close()
        self.log.close()


# ---------------------------------------------------------------- snapshot staging: the layout


def drop_staged(txn: lmdb.Transaction, dbs: Dbs) -> None:
    for name in SNAPSHOT_DB_NAMES:
        txn.drop(getattr(dbs, "staging_" + name.decode()), delete=False)
    txn.drop(dbs.staging_state, delete=False)


def staged_complete(txn: lmdb.Transaction, dbs: Dbs) -> bool:
    return record_get(txn, dbs.staging_state, "staging_state", STAGING_DONE) is not None


def install_staged(txn: lmdb.Transaction, dbs: Dbs, meta: SnapshotMeta) -> Dbs:
    """Replaces sm_meta, sessions and the node dbs by the staged snapshot, which must be complete
    and at `meta.index` (the core accepted the SNAPSHOT message the shell staged it for), and
    returns the handles as they are from then on.

    The staged dbs become the live ones (KEY_TABLES flips) and the old live ones, emptied, the
    staging: no record is copied, so an install writes a few pages whatever the snapshot's
    size. (It copied every record before: at 1,000,000 objects half a GB of dirty pages in one
    transaction, which LMDB keeps malloc'd until the store closes.) The staged records were
    validated and sealed when staged and are verified on every read, as every record is."""
    assert staged_complete(txn, dbs), "installing a snapshot that was not completely staged"
    raw = record_get(txn, dbs.staging_sm_meta, "staging_sm_meta", KEY_APPLIED)
    staged_index = 0 if raw is None else cbor2.loads(raw)[0]
    assert staged_index == meta.index, ("staged snapshot index", staged_index, meta.index)
    raw = record_get(txn, dbs.meta, "meta", KEY_TABLES)
    tables = 0 if raw is None else cbor2.loads(raw)
    record_put(txn, dbs.meta, KEY_TABLES, cbor2.dumps(1 - tables))
    # Format 5 whichever way the tables point (every agent that reads 5 reads `tables`); in
    # formats 3 and 4 the flip wrote FORMAT_TABLES here, so that an agent that read format 3
    # only refused the store instead of reading the tables it no longer used.
    record_put(txn, dbs.meta, KEY_FORMAT, cbor2.dumps(FORMAT_OWN_LOG))
    installed = dbs.swapped()
    drop_staged(txn, installed)  # the state before the snapshot, and the staging state
    return installed
