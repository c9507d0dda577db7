"""The agent's durable state: one LMDB environment (docs/architecture.md section 2).

Sub-databases (the layout is fixed here; the state machine opens the same handles through
`open_dbs`):

| db | key | value |
|---|---|---|
| `log` | index, 8-byte big-endian | CBOR `[term, kind, data]` |
| `meta` | `hard` `snap` `conf` `conf0` `tables` | CBOR: HardState, SnapshotMeta, ConfStates, 0/1 |
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

Every change the Raft core asks for in one `Ready` (snapshot install, log truncate + append,
hard state, base configuration, and applying the committed entries) happens in ONE write
transaction, so a `kill -9` at any instant leaves either the state before or the state after a
whole `Ready`.

Power loss (docs/data-model.md, "Durability"): with fsync on, the environment is opened in
LMDB's MDB_NOMETASYNC mode: every commit flushes its data pages before it writes the meta page
that points to them, so the file is never a meta page ahead of its data (under MDB_NOSYNC the
kernel may write them in any order, and a power loss can leave a meta page pointing at pages
that never reached the disk: a corrupt environment). A commit's own meta page is flushed by the
next commit, or by the explicit `env.sync` a Ready gets when Raft needs it durable before its
messages leave (entries, a new term or vote, a snapshot). A Ready that only applies (and moves
the commit index) is not synced further: a power loss may undo that one transaction, and what
it held is derived again from the durable log. So everything an app was told about is
derivable from durable data, and every Raft promise is durable before it is sent.
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
FORMATS_READ = (FORMAT_VERSION, FORMAT_TABLES)
KEY_FORMAT = b"format"
# Damaged records a scrub lists by name (it counts them all).
SCRUB_REPORT_MAX = 16

KEY_REPAIR = b"repair"  # in meta: the last index held before a repair emptied the store
KEY_HARD = b"hard"
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
    b"log",
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

    log: Any
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
    """The format this store is in: FORMAT_TABLES once an install has swapped its tables (the
    KEY_TABLES record exists, whichever way it points), else FORMAT_VERSION. What a rewrite of
    the format record writes, so it never claims a format an older agent would misread."""
    return FORMAT_TABLES if txn.get(KEY_TABLES, db=dbs.meta) is not None else FORMAT_VERSION


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


def read_entry(txn: lmdb.Transaction, dbs: Dbs, index: int) -> Entry | None:
    key = index_key(index)
    raw = record_get(txn, dbs.log, "log", key)
    return None if raw is None else decode_entry(index, raw)


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
        self, path: Path, *, fsync: bool = True, map_bytes: int = MAP_BYTES_DEFAULT
    ) -> None:
        assert map_bytes > 0, map_bytes
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
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
        try:
            self._check_format()
        except StartRefused:
            self.env.close()
            raise
        # fsyncs done (each commit's data flush with fsync on, and each explicit sync): for
        # status and the tests of the sync rules.
        self.syncs = 0
        # Told each explicit fsync's duration in seconds (the metrics' fsync histogram), if set.
        self.sync_observer: Callable[[float], None] | None = None
        # (term, vote) as last made durable. A Ready whose hard state differs from it only in
        # the commit index needs no explicit sync: Raft recomputes the commit index after a
        # restart, and applying is replayed from the durable log. Skipping it takes one fsync
        # off every commit's critical path (the leader's apply Ready) and most of the
        # followers'.
        self._term_vote_synced: tuple[int, str | None] | None = None

    # ------------------------------------------------------------ format, scrub, repair

    def _check_format(self) -> None:
        """Writes FORMAT_VERSION into a fresh store; StartRefused for a store of another
        format (format 1, before checksums, has no format record but does hold data)."""
        with self.env.begin(write=True) as txn:
            raw = txn.get(KEY_FORMAT, db=self.dbs.meta)
            if raw is None:
                held = sum(txn.stat(getattr(self.dbs, n.decode()))["entries"] for n in DB_NAMES)
                if held:
                    raise StartRefused(
                        f"{self.path} holds a superstatic store of format 1 (written before "
                        f"stored records carried checksums); this agent reads format "
                        f"{FORMAT_VERSION} only and does not convert a store in place. Keep "
                        "running the older superstatic on it, or start this agent on an empty "
                        "--data-dir: a member of a cluster whose other agents hold the data is "
                        "sent it (log or snapshot); a single agent starts empty."
                    )
                record_put(txn, self.dbs.meta, KEY_FORMAT, cbor2.dumps(FORMAT_VERSION))
                return
            try:
                version = cbor2.loads(unseal("meta", KEY_FORMAT, raw))
            except Corrupt:
                return  # damaged: the scrub at start reports it with everything else
            if version == FORMAT_MODEL_1:
                raise StartRefused(
                    f"{self.path} holds a superstatic store of format 2 (data model v1: one "
                    f"record per container); this agent reads format {FORMAT_VERSION} (data "
                    "model v2, per-key records) only. Run `superstatic-agent --migrate "
                    f"--data-dir {self.path}` once (it keeps a copy at "
                    f"{self.path / 'format2-backup'}), or remove the directory to rejoin "
                    "the cluster by snapshot."
                )
            if version not in FORMATS_READ:
                raise StartRefused(
                    f"{self.path} holds a superstatic store of format {version!r:.20}; this "
                    f"agent reads formats {FORMAT_VERSION} and {FORMAT_TABLES} (FORMATS_READ) "
                    "only: run the superstatic version that wrote it, or start on an empty "
                    "--data-dir."
                )

    def scrub(self) -> Scrubbed:
        """Verifies the checksum of every stored record (run at start, before load()). Reads
        the whole store once: about as long as copying the data file."""
        damaged: list[tuple[str, bytes]] = []
        count = checked = 0
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
            try:
                hard_raw = record_get(txn, self.dbs.meta, "meta", KEY_HARD)
            except Corrupt:
                raise StartRefused(
                    f"the store in {self.path} is damaged, its term and vote included: it "
                    "cannot know how it voted, so it must not rejoin as itself. Remove it "
                    "(superstatic members remove ID), empty its --data-dir, and add it back "
                    "as a learner (superstatic members add-learner), then promote it."
                ) from None
            term, vote = (0, None) if hard_raw is None else cbor2.loads(hard_raw)[:2]
            cursor = txn.cursor(db=self.dbs.log)
            last = key_index(cursor.key()) if cursor.last() else 0
            last = max(last, 0 if snapshot is None else snapshot.index)
            for name in DB_NAMES:
                if name != b"meta":
                    txn.drop(getattr(self.dbs, name.decode()), delete=False)
            for key in (KEY_SNAP, KEY_CONF):
                txn.delete(key, db=self.dbs.meta)
            record_put(txn, self.dbs.meta, KEY_HARD, cbor2.dumps([term, vote, 0]))
            record_put(txn, self.dbs.meta, KEY_FORMAT, cbor2.dumps(store_format(txn, self.dbs)))
            record_put(txn, self.dbs.meta, KEY_REPAIR, cbor2.dumps(last))
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
        with self.env.begin(db=self.dbs.log) as txn:
            hard_raw = record_get(txn, self.dbs.meta, "meta", KEY_HARD)
            hard_state = None
            if hard_raw is not None:
                term, vote, commit = cbor2.loads(hard_raw)
                hard_state = HardState(term=term, vote=vote, commit=commit)
            snapshot = read_snapshot_meta(txn, self.dbs)
            conf_raw = record_get(txn, self.dbs.meta, "meta", KEY_CONF)
            conf = None if conf_raw is None else decode_conf(cbor2.loads(conf_raw))
            conf0_raw = record_get(txn, self.dbs.meta, "meta", KEY_CONF0)
            conf0 = None if conf0_raw is None else decode_conf(cbor2.loads(conf0_raw))
            if conf0 is None and snapshot is None:
                conf0 = conf  # stored before conf0 was: the log still starts at index 1
            if snapshot is not None:
                conf = snapshot.conf
            base = 0 if snapshot is None else snapshot.index
            entries: list[Entry] = []
            cursor = txn.cursor(db=self.dbs.log)
            if cursor.set_range(index_key(base + 1)):
                for key, value in cursor:
                    if len(entries) >= LOG_LOAD_ENTRIES_MAX:
                        raise LimitExceeded(
                            "LOG_LOAD_ENTRIES_MAX",
                            LOG_LOAD_ENTRIES_MAX,
                            len(entries) + 1,
                            "stored log entries",
                        )
                    entry = decode_entry(key_index(key), unseal("log", key, value))
                    expected = base + 1 + len(entries)
                    assert entry.index == expected, ("log not contiguous", entry.index, expected)
                    entries.append(entry)
            applied, _term, log_time_ms = read_applied(txn, self.dbs)
        assert applied >= base, ("applied below the snapshot", applied, base)
        if hard_state is not None:
            assert applied <= max(hard_state.commit, base), ("applied past commit", applied)
        return Loaded(hard_state, conf, conf0, snapshot, entries, applied, log_time_ms)

    # ------------------------------------------------------------ the one write per Ready

    def write(
        self,
        ready: Ready,
        apply_fn: Callable[[lmdb.Transaction], None] | None,
        *,
        conf: ConfState | None = None,
        conf0: ConfState | None = None,
    ) -> None:
        """Persists one Ready in ONE write transaction, then syncs once if it held anything
        Raft needs durable (entries, hard state, snapshot).

        Order inside the transaction: install the staged snapshot and drop the whole log (if
        `ready.snapshot`), truncate the log at `ready.entries[0].index` and append, store the
        hard state, store `conf` (pass `node.base_conf`: the configuration at the start of the
        log, stored only when it changed) and `conf0` (the initial configuration, once), then
        `apply_fn(txn)` (the state machine applying
        `ready.committed`). An exception anywhere aborts the whole transaction.
        """
        hs_new = ready.hard_state
        term_vote = None if hs_new is None else (hs_new.term, hs_new.vote)
        durable = (
            bool(ready.entries)
            or ready.snapshot is not None
            or (term_vote is not None and term_vote != self._term_vote_synced)
        )
        dbs_before = self.dbs
        try:
            with self.env.begin(write=True) as txn:
                if ready.snapshot is not None:
                    self._install_snapshot(txn, ready.snapshot)
                if ready.entries:
                    self._append(txn, ready.entries)
                if ready.hard_state is not None:
                    hs = ready.hard_state
                    hard = cbor2.dumps([hs.term, hs.vote, hs.commit])
                    record_put(txn, self.dbs.meta, KEY_HARD, hard)
                if conf is not None:
                    self.store_conf(txn, conf)
                if conf0 is not None:
                    self.store_conf0(txn, conf0)
                if apply_fn is not None:
                    apply_fn(txn)
        except BaseException:
            if self.dbs is not dbs_before:
                self._set_dbs(dbs_before)  # the install aborted with the transaction
            raise
        self._committed()
        if durable and self.fsync:
            self.sync()
        if term_vote is not None:
            # Durable now (synced, or fsync off by choice); a later sync covers it anyway.
            self._term_vote_synced = term_vote

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
        """Makes every committed transaction durable (with MDB_NOMETASYNC: flushes the last
        commit's meta page)."""
        started = time.monotonic()
        self.env.sync(True)
        self.syncs += 1
        if self.sync_observer is not None:
            self.sync_observer(time.monotonic() - started)

    def _committed(self) -> None:
        """After each write transaction this class commits: with fsync on, LMDB flushed its
        data pages (its meta page waits for the next commit or sync)."""
        if self.fsync:
            self.syncs += 1

    def _install_snapshot(self, txn: lmdb.Transaction, meta: SnapshotMeta) -> None:
        self._set_dbs(install_staged(txn, self.dbs, meta))
        # The core reset its log to start after meta.index: every stored entry is obsolete, and
        # the stream of outcomes restarts after the snapshot too.
        txn.drop(self.dbs.log, delete=False)
        txn.drop(self.dbs.outcomes, delete=False)
        record_put(txn, self.dbs.meta, KEY_SNAP, encode_snapshot_meta(meta))
        applied, _term, _time_ms = read_applied(txn, self.dbs)
        assert applied == meta.index, ("staged snapshot is not at the meta's index", applied)

    def _set_dbs(self, dbs: Dbs) -> None:
        self.dbs = dbs
        if self.on_dbs is not None:
            self.on_dbs(dbs)

    def _append(self, txn: lmdb.Transaction, entries: tuple[Entry, ...]) -> None:
        first = entries[0].index
        cursor = txn.cursor(db=self.dbs.log)
        if cursor.last():
            last = key_index(cursor.key())
        else:
            snapshot = read_snapshot_meta(txn, self.dbs)
            last = 0 if snapshot is None else snapshot.index
        assert first <= last + 1, ("gap in the log", first, last)
        if first <= last:
            # Raft never truncates committed (hence applied or compacted) entries. Checked only
            # when truncating: an append past the last entry cannot touch them (what is
            # applied or compacted is at or below it), and every append paid the two sealed
            # reads, ~0.6 of the ~8 us of CPU a one-entry write takes (data-model-v2.md 8.7).
            snapshot = read_snapshot_meta(txn, self.dbs)
            base = 0 if snapshot is None else snapshot.index
            applied, _term, _time_ms = read_applied(txn, self.dbs)
            assert first > max(base, applied), (
                "truncating committed entries",
                first,
                base,
                applied,
            )
            # Truncate: delete every entry at or after `first` (at most last - first + 1).
            cursor.set_key(index_key(first))
            for _ in range(last - first + 1):
                assert cursor.delete(), "log entry vanished during truncation"
        expected = first
        for entry in entries:
            assert entry.index == expected, ("entries not contiguous", entry.index, expected)
            record_put(txn, self.dbs.log, index_key(entry.index), encode_entry(entry), append=True)
            expected += 1

    # ------------------------------------------------------------ reading the log

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        """Stored entries with lo <= index < hi, stopping before `bytes_max` bytes of data (but
        always at least one entry if any is stored at `lo`). Raises Trimmed below the first
        stored entry."""
        assert 1 <= lo <= hi, (lo, hi)
        assert bytes_max >= 1, bytes_max
        out: list[Entry] = []
        size = 0
        with self.env.begin() as txn:
            snapshot = read_snapshot_meta(txn, self.dbs)
            base = 0 if snapshot is None else snapshot.index
            if lo <= base:
                raise Trimmed(lo, base + 1)
            cursor = txn.cursor(db=self.dbs.log)
            if not cursor.set_key(index_key(lo)):
                return out
            for key, value in cursor:
                index = key_index(key)
                if index >= hi or len(out) >= READ_ENTRIES_MAX:
                    break
                entry = decode_entry(index, unseal("log", key, value))
                size += len(entry.data)
                if out and size > bytes_max:
                    break
                out.append(entry)
        return out

    def events(self, from_index: int, count_max: int, bytes_max: int) -> list[Event]:
        """Applied entries from `from_index` (inclusive) as stream events, at most `count_max`
        of them and about `bytes_max` bytes of bodies (always at least one if one is applied).
        Empty if from_index > applied. Raises Trimmed if from_index was compacted (or is 0):
        the subscriber needs a snapshot."""
        assert count_max >= 1 and bytes_max >= 1, (count_max, bytes_max)
        out: list[Event] = []
        size = 0
        with self.env.begin() as txn:
            snapshot = read_snapshot_meta(txn, self.dbs)
            first = 1 if snapshot is None else snapshot.index + 1
            if from_index < first:
                raise Trimmed(from_index, first)
            applied, _term, _time_ms = read_applied(txn, self.dbs)
            last = min(applied, from_index + count_max - 1)
            for index in range(from_index, last + 1):
                key = index_key(index)
                raw_entry = record_get(txn, self.dbs.log, "log", key)
                raw_outcome = record_get(txn, self.dbs.outcomes, "outcomes", key)
                assert raw_entry is not None and raw_outcome is not None, ("applied lost", index)
                # [outcome, collected, log_time_ms, heads]; records written before log time
                # was kept have two fields: 0 (replicas take the max, so it never goes back);
                # before heads, three: none (the entry referenced no node an app lacks a head
                # of: every app then held a full replica).
                outcome, collected, *rest = cbor2.loads(raw_outcome)
                log_time_ms = rest[0] if rest else 0
                heads = tuple((h[0], h[1], h[2]) for h in rest[1]) if len(rest) > 1 else ()
                client, seq, body = event_fields(decode_entry(index, raw_entry), outcome)
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
        Returns the meta to give the core's compact(), or None if nothing was to do."""
        with self.env.begin(write=True) as txn:
            snapshot = read_snapshot_meta(txn, self.dbs)
            base = 0 if snapshot is None else snapshot.index
            if upto_index <= base:
                return None
            applied, _term, _time_ms = read_applied(txn, self.dbs)
            assert upto_index <= applied, ("compacting beyond applied", upto_index, applied)
            if snapshot is not None:
                conf = snapshot.conf
            else:
                conf_raw = record_get(txn, self.dbs.meta, "meta", KEY_CONF)
                assert conf_raw is not None, "compacting before the base configuration is stored"
                conf = decode_conf(cbor2.loads(conf_raw))
            term = 0
            cursor = txn.cursor(db=self.dbs.log)
            assert cursor.set_key(index_key(base + 1)), ("log does not start after", base)
            # Walk (and delete) base+1..upto: the conf in force at upto replays the CONF entries.
            for index in range(base + 1, upto_index + 1):
                key = cursor.key()
                assert key_index(key) == index, ("log not contiguous", key_index(key), index)
                entry = decode_entry(index, unseal("log", key, cursor.value()))
                if entry.kind == EntryKind.CONF:
                    conf = apply_change(conf, ConfChange.decode(entry.data))
                term = entry.term
                cursor.delete()
            outcomes = txn.cursor(db=self.dbs.outcomes)
            if outcomes.first():
                for _ in range(upto_index - base):
                    if not outcomes.key() or key_index(outcomes.key()) > upto_index:
                        break
                    outcomes.delete()
            meta = SnapshotMeta(index=upto_index, term=term, conf=conf)
            record_put(txn, self.dbs.meta, KEY_SNAP, encode_snapshot_meta(meta))
        self._committed()
        self.nudge()  # the deleted entries' pages become reusable by the very next write
        if self.fsync:
            self.sync()
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
        with self.env.begin() as txn:
            snapshot = read_snapshot_meta(txn, self.dbs)
        return 1 if snapshot is None else snapshot.index + 1

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
        vfs = os.statvfs(self.path)
        disk_free = vfs.f_bavail * vfs.f_frsize
        ceiling = min(map_bytes, file_bytes + disk_free)
        return Space(map_bytes, used, max(0, ceiling - used), disk_free)

    def disk_bytes(self) -> int:
        """Bytes of the data file in use (pages up to the last one written)."""
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        data_file = self.path / "data.mdb"
        return min(used, os.path.getsize(data_file)) if data_file.exists() else used

    def close(self) -> None:
        self.env.close()


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
    # In the same transaction as the flip: from here on an agent that reads format 3 only
    # refuses the store instead of reading the tables it no longer uses (FORMAT_TABLES).
    record_put(txn, dbs.meta, KEY_FORMAT, cbor2.dumps(FORMAT_TABLES))
    installed = dbs.swapped()
    drop_staged(txn, installed)  # the state before the snapshot, and the staging state
    return installed
