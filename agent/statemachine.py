"""The replicated state machine: applies committed log entries to the object table.

Deterministic (docs/architecture.md sections 2-4, docs/data-model.md): the outcome of an entry
depends only on the entry and the state left by the entries before it. No clock (log time is
`max(previous, entry time_ms)`), no randomness, no iteration over unordered containers where the
order reaches the state. Every replica (agents and, through the ops, app replicas) reaches the
same state and the same outcomes.

`apply` never raises on a bad payload: a malformed entry, transaction body or op gives the
outcome "error" with a message naming what was wrong, and changes nothing but the applied
index (and, for a well-formed request, the client's session record of that outcome). Messages
name types, sizes, op positions and object ids, never an untrusted value (a hostile int may be
too long to print, and formatting it would raise: issue 8, reproduction 1).

What apply cannot turn into an outcome raises `ApplyFailed` naming the entry: a bug met by
every replica alike (the server stops applying and says so, see docs/agent.md). Conditions of
this replica's disk (`lmdb.Error`: the map or the disk is full) propagate as they are: they
are not facts about the entry, so they must never become an outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import lmdb
from superstatic_agent import gc
from superstatic_agent.config import CLIENT_FRAME_ENVELOPE_BYTES
from superstatic_agent.payload import loads_plain, parse_payload
from superstatic_agent.raft.types import ConfChange, Entry, EntryKind, SnapshotMeta
from superstatic_agent.sessions import (
    SESSION_SEQS_MAX,
    SESSIONS_MAX,
    Session,
    SessionTable,
    clip_error,
    decode_session,
)
from superstatic_agent.storage import (
    KEY_APPLIED,
    STAGING_DONE,
    STAGING_NEXT,
    Corrupt,
    Dbs,
    drop_staged,
    index_key,
    install_staged,
    open_dbs,
    read_applied,
    record_get,
    record_put,
    records,
    staged_complete,
    write_applied,
)

from superstatic.protocol import codec, ops, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

SESSION_TTL_MS_DEFAULT = 60_000
# The largest node record (the root table included) a write may leave: every record must fit
# one stream frame (a SNAPSHOT frame to an app carries at least one whole record), so the
# agent's flag --record-bytes-max is bounded by wire.FRAME_BYTES_MAX less the room a frame
# needs around it (config.CLIENT_FRAME_ENVELOPE_BYTES).
RECORD_BYTES_MAX_DEFAULT = 8 << 20
# A record's version is a log index (< 2**63): its CBOR takes 1 to 9 bytes, so a record
# encoded at one index may be this much longer at a later one.
VERSION_GROWTH_BYTES = 8
# Room an op may add to a record beyond its encoded values: an item's array header and the
# container's length header growing (each at most 9 bytes).
OP_ITEM_BYTES = 32
# Minimum churn (dropped references + new nodes) between two collections; see gc.py.
GC_THRESHOLD_DEFAULT = 10_000
# Depth of a snapshot chunk's CBOR: [part, last, [[db, key, value], ...]].
CHUNK_DEPTH_MAX = 3
# Parts of one snapshot: far more than any table needs at a chunk of even 1 KiB per part.
CHUNK_PARTS_MAX = (1 << 63) - 1
# Keys of LMDB are at most 511 bytes; ids are far shorter (OID_CHARS_MAX, CLIENT_ID_CHARS_MAX).
KEY_BYTES_MAX = 511
# Depth to which node_json expands references; deeper nodes are shown as {"__ref__": oid}.
INSPECT_DEPTH_MAX = 100
# Nodes node_json expands in one answer; past it the answer is an error naming this limit.
INSPECT_NODES_MAX = 100_000

KEY_GC = b"gc"  # [dropped refs since last GC, nodes created since, nodes alive after it]
KEY_SWEEP = b"sweep"  # log time of the last session sweep
KEY_CONF_LAST = b"conf_last"  # [index, op, node, address] of the last CONF entry applied
SM_META_KEYS = (KEY_APPLIED, KEY_GC, KEY_SWEEP, KEY_CONF_LAST)


# Outcomes of an applied entry. "session_expired": the request names a session that is not
# (or no longer) live; nothing changed, and it is not recorded (there is no session to hold it).
OUTCOMES = ("ok", "conflict", "error", "dup", "noop", "session_expired")

# Which db a snapshot chunk item belongs to, on the sending and the receiving side.
CHUNK_DBS = ("m", "s", "o")  # sm_meta, sessions, objects


@dataclass(slots=True)
class Applied:
    """The result of applying one entry (architecture section 2).

    For outcome "dup", `error` is the recorded error and `first_index` / `first_outcome` are
    the index and outcome of the entry that first applied this (client, seq): what the client
    is answered. `body` is the transaction body for an "ok" txn (replicas apply it), else None.
    """

    index: int
    kind: str  # "txn" | "open" | "close" | "noop" | "conf" | "invalid"
    client: str | None
    seq: int | None
    outcome: str  # one of OUTCOMES
    error: str = ""
    collected: tuple[str, ...] = ()
    body: bytes | None = None
    first_index: int = 0
    first_outcome: str = ""
    # The log time after this entry (max of the stamps so far): streamed with the event so an
    # app's replica knows "now" in log time, identically on every replica (docs/toolkit.md).
    log_time_ms: int = 0
    # The session the entry named (0: none, or not a session request): a "session_expired"
    # outcome is true of this session only, not of a later one the client opened since.
    session: int = 0


class ApplyFailed(Exception):
    """Applying a committed entry raised something apply cannot turn into an outcome (a bug:
    every replica meets it at the same entry). Names the entry; `cause` is the exception."""

    def __init__(self, index: int, term: int, cause: BaseException) -> None:
        super().__init__(
            f"applying committed entry {index} (term {term}) raised "
            f"{type(cause).__name__}: {_clip(str(cause))}"
        )
        self.index = index
        self.term = term
        self.cause = cause


# Exceptions Python raises on values that passed the shape checks (e.g. comparing a NaN in a
# set): deterministic, raised before a container changes, so they are an "error" outcome.
_VALUE_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError)


def _clip(text: str, chars_max: int = 200) -> str:
    return text if len(text) <= chars_max else text[: chars_max - 3] + "..."


def _expired(session: int, now_ms: int) -> str:
    return (
        f"session {session} is unknown or expired (log time {now_ms}): its requests' outcomes "
        "were forgotten; open a new session"
    )


class _Rejected(Exception):
    """Internal: the transaction cannot apply; `outcome` is "error" or "conflict"."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(slots=True)
class _Node:
    """A decoded node inside one apply batch."""

    version: int
    kind: str
    container: Any  # dict (also for "obj": its attributes), list or set
    class_name: str | None
    # An upper bound on the bytes of this node's record at any version: exact (plus
    # VERSION_GROWTH_BYTES) when read or encoded, then raised by what each op may add. Only
    # ever used to skip the exact check (encoding the record) while it is under the limit, so
    # the refusal itself depends on the record alone: every replica decides alike, whatever
    # its cache held.
    size_bytes: int


_MISSING = object()
# Decoded nodes held by one apply batch; beyond it (or beyond node_cache_bytes_max of their
# records) the batch writes them out and starts over before its next entry: bounded memory
# for a batch of transactions touching many nodes.
NODES_CACHED_MAX = 200_000
# Decoded nodes kept from one batch to the next (the hot ones: a batch touching more, or more
# than node_cache_bytes_max of records, drops them all): saves decoding a big, often-written
# container on every Ready.
NODES_KEPT_MAX = 4_096
# Default of the agent's --node-cache-bytes-max: records' bytes the decoded nodes may stand for.
NODE_CACHE_BYTES_MAX_DEFAULT = 64 << 20


class _NodeCache:
    """The nodes one apply batch has decoded or changed; changes reach LMDB at flush()."""

    def __init__(self, objects_db: Any, record: Callable[[str, bytes], tuple[int, str, Any]]):
        self._db = objects_db
        self._record = record
        self._nodes: dict[str, _Node | None] = {}
        self._dirty: set[str] = set()
        self._created = 0  # nodes created in this batch and not flushed yet
        # Sum of the cached nodes' size bounds: their records' bytes, which is what bounds the
        # cache's memory (docs/agent.md: decoded, a node takes a few times its record).
        self._bytes = 0

    def get(self, txn: lmdb.Transaction, oid: str) -> _Node | None:
        node = self._nodes.get(oid, _MISSING)
        if node is _MISSING:
            raw = record_get(txn, self._db, "objects", oid.encode())
            if raw is None:
                node = None
            else:
                version, kind, contents = self._record(oid, raw)
                container, class_name = ops.container_from(kind, contents)
                node = _Node(version, kind, container, class_name, len(raw) + VERSION_GROWTH_BYTES)
                self._bytes += node.size_bytes
            self._nodes[oid] = node
        return node  # type: ignore[return-value]

    def version(self, txn: lmdb.Transaction, oid: str) -> int:
        """A node's version (0: absent) without decoding a node that is not cached: a read
        version check must not cost (in time or memory) the node's whole contents."""
        node = self._nodes.get(oid, _MISSING)
        if node is not _MISSING:
            return 0 if node is None else node.version  # type: ignore[union-attr]
        raw = record_get(txn, self._db, "objects", oid.encode())
        return 0 if raw is None else record_version(oid, raw)

    def exists(self, txn: lmdb.Transaction, oid: str) -> bool:
        node = self._nodes.get(oid, _MISSING)
        if node is _MISSING:
            return txn.get(oid.encode(), db=self._db) is not None
        return node is not None

    def count(self, txn: lmdb.Transaction) -> int:
        return int(txn.stat(self._db)["entries"]) + self._created

    def put(self, oid: str, node: _Node) -> None:
        old = self._nodes.get(oid)
        if old is None:
            self._created += 1
        else:
            self._bytes -= old.size_bytes
        self._nodes[oid] = node
        self._bytes += node.size_bytes
        self._dirty.add(oid)

    def flush(self, txn: lmdb.Transaction) -> None:
        for oid in self._dirty:
            node = self._nodes[oid]
            assert node is not None, oid
            record = ops.encode_node(node.version, node.kind, node.container, node.class_name)
            record_put(txn, self._db, oid.encode(), record)
            # The bound held the record as encoded now (its version may have grown by up to
            # VERSION_GROWTH_BYTES since the bound was set); it tightens to this length plus
            # the slack for later versions.
            assert len(record) <= node.size_bytes, ("a record outgrew its size bound", oid)
            exact = len(record) + VERSION_GROWTH_BYTES
            self._bytes += exact - node.size_bytes
            node.size_bytes = exact
        self._dirty.clear()
        self._created = 0

    def forget(self, oids: Iterable[str]) -> None:
        """Nodes deleted from LMDB (collected): the cache must not resurrect them."""
        for oid in oids:
            node = self._nodes.pop(oid, None)
            if node is not None:
                self._bytes -= node.size_bytes
            assert oid not in self._dirty, oid

    def size(self) -> int:
        return len(self._nodes)

    def bytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._nodes.clear()
        self._dirty.clear()
        self._created = 0
        self._bytes = 0


def _copy_container(container: Any) -> Any:
    """A shallow copy to apply a multi-op transaction to (kept only if every op succeeds)."""
    tp = type(container)
    assert tp in (dict, list, set), tp
    return tp(container)


class StateMachine:
    """Applies entries inside the caller's LMDB write transaction. Holds configuration and db
    handles only: every piece of state lives in the environment (and so in snapshots)."""

    def __init__(
        self,
        env: lmdb.Environment,
        *,
        session_ttl_ms: int = SESSION_TTL_MS_DEFAULT,
        gc_threshold: int = GC_THRESHOLD_DEFAULT,
        record_bytes_max: int = RECORD_BYTES_MAX_DEFAULT,
        node_cache_bytes_max: int = NODE_CACHE_BYTES_MAX_DEFAULT,
    ) -> None:
        assert session_ttl_ms >= 1 and gc_threshold >= 1, (session_ttl_ms, gc_threshold)
        room = wire.FRAME_BYTES_MAX - CLIENT_FRAME_ENVELOPE_BYTES
        assert 1 <= record_bytes_max <= room, record_bytes_max
        self.env = env
        self.record_bytes_max = record_bytes_max
        assert node_cache_bytes_max >= 1, node_cache_bytes_max
        self.node_cache_bytes_max = node_cache_bytes_max
        self.dbs: Dbs = open_dbs(env)
        self.session_ttl_ms = session_ttl_ms
        self.gc_threshold = gc_threshold
        # Sessions are swept for expiry every quarter ttl of log time: expired sessions are
        # freed within 1.25 ttl, and a lookup treats them as expired exactly at the ttl.
        self.sweep_ms = max(1, session_ttl_ms // 4)
        self._nodes = _NodeCache(self.dbs.objects, self._record)
        self._nodes_at: int | None = None  # the applied index the cached nodes reflect

    # ------------------------------------------------------------ apply

    def apply(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        """Applies one entry (a batch of one)."""
        return self.apply_batch(txn, (entry,))[0]

    def apply_batch(self, txn: lmdb.Transaction, entries: Sequence[Entry]) -> list[Applied]:
        """Applies entries in order inside `txn`. Nodes are decoded at most once per batch and
        written (encoded) once at its end, however many entries change them: a Ready applying
        hundreds of writes into one big dict encodes that dict once, not once per entry.

        Decoded nodes are kept for the next batch (up to NODES_KEPT_MAX) only while they are
        known to equal the store: the cache is stamped with the index it reflects, and a batch
        that starts at another applied index (an installed snapshot, or a write transaction
        that aborted after this batch) starts from an empty cache."""
        applied, _term, _time_ms = read_applied(txn, self.dbs)
        if applied != self._nodes_at:
            self._nodes.clear()
        self._nodes_at = None
        try:
            results = []
            for entry in entries:
                cache = self._nodes
                if cache.size() >= NODES_CACHED_MAX or cache.bytes() > self.node_cache_bytes_max:
                    # Between entries (never inside one): bounded memory for a batch that
                    # touches very many nodes.
                    self._nodes.flush(txn)
                    self._nodes.clear()
                results.append(self._apply_entry(txn, entry))
            self._nodes.flush(txn)
        except BaseException:
            self._nodes.clear()
            raise
        if self._nodes.size() > NODES_KEPT_MAX or self._nodes.bytes() > self.node_cache_bytes_max:
            self._nodes.clear()
        self._nodes_at = entries[-1].index if entries else applied
        return results

    def _apply_entry(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        """One entry; ApplyFailed (naming it) for an exception apply cannot make an outcome
        of. Storage errors, damaged records (Corrupt) and memory exhaustion are this replica's
        condition, not the entry's: they propagate unchanged (the server halts or refuses
        writes; never an outcome, never recorded as poison)."""
        try:
            return self._apply_one(txn, entry)
        except (lmdb.Error, Corrupt, MemoryError, ApplyFailed):
            raise
        except Exception as exc:
            raise ApplyFailed(entry.index, entry.term, exc) from exc

    def _apply_one(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        applied, _term, log_time_ms = read_applied(txn, self.dbs)
        assert entry.index == applied + 1, ("entries apply in order", entry.index, applied)
        if entry.kind == EntryKind.NOOP:
            result = Applied(entry.index, "noop", None, None, "noop")
        elif entry.kind == EntryKind.CONF:
            result = self._apply_conf(txn, entry)
        else:
            result, log_time_ms = self._apply_normal(txn, entry, log_time_ms)
        assert result.outcome in OUTCOMES, result.outcome
        result.log_time_ms = log_time_ms
        outcome = cbor2.dumps([result.outcome, list(result.collected), log_time_ms])
        record_put(txn, self.dbs.outcomes, index_key(entry.index), outcome)
        write_applied(txn, self.dbs, entry.index, entry.term, log_time_ms)
        return result

    def _apply_conf(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        try:
            change = ConfChange.decode(entry.data)
        except ProtocolError as exc:
            return Applied(entry.index, "conf", None, None, "error", f"bad CONF entry: {exc}")
        except RecursionError:
            raise
        except Exception as exc:  # e.g. a message that failed to format a hostile value
            error = f"bad CONF entry: {type(exc).__name__}"
            return Applied(entry.index, "conf", None, None, "error", error)
        # Recorded so a snapshot says which change it includes (the core carries the conf).
        record = [entry.index, change.op, change.node, change.address]
        record_put(txn, self.dbs.sm_meta, KEY_CONF_LAST, cbor2.dumps(record))
        return Applied(entry.index, "conf", None, None, "noop")

    def _apply_normal(
        self, txn: lmdb.Transaction, entry: Entry, log_time_ms: int
    ) -> tuple[Applied, int]:
        index = entry.index
        try:
            payload = parse_payload(entry.data)
        except ProtocolError as exc:
            return Applied(index, "invalid", None, None, "error", str(exc)), log_time_ms
        now_ms = max(log_time_ms, payload.time_ms)
        table = SessionTable(txn, self.dbs.sessions, self.session_ttl_ms)
        self._maybe_sweep(txn, table, now_ms)

        def answer(outcome: str, error: str = "", **extra: Any) -> tuple[Applied, int]:
            applied = Applied(
                index,
                payload.kind,
                payload.client,
                payload.seq,
                outcome,
                error,
                session=payload.session,
                **extra,
            )
            return applied, now_ms

        session = table.get(payload.client, now_ms)  # None if absent or expired (deleted)
        if payload.kind == "close":
            if session is not None and session.opened == payload.session:
                table.delete(payload.client)
            return answer("ok")
        creating = payload.kind == "open" and payload.session == 0
        if session is not None:
            recorded = session.seqs.get(payload.seq)
            if recorded is not None:
                first_index, first_outcome, first_error = recorded
                session.last_ms = now_ms
                table.put(payload.client, session)
                return answer(
                    "dup", first_error, first_index=first_index, first_outcome=first_outcome
                )
            if payload.seq < session.low:
                return answer(
                    "error",
                    f"stale request: seq {payload.seq} is below the "
                    f"session's seq_low {session.low}; its outcome was forgotten",
                )
            if payload.session != session.opened and not creating:
                return answer("session_expired", _expired(payload.session, now_ms))
        if creating:
            # A new session, its id this entry's index. It replaces a live record of the same
            # client: the client opens one only when it has none (the record is one a stale
            # copy of an earlier "open" created, which nobody uses; the checks above keep a
            # late retry of an earlier seq from touching the current session).
            if session is None and table.count() >= SESSIONS_MAX:
                return answer("error", f"sessions open is at the limit SESSIONS_MAX={SESSIONS_MAX}")
            session = Session(last_ms=now_ms, low=0, opened=index)
        elif session is None:
            # Never silently reopened (Raft thesis 6.3): a retry of a request that applied
            # before the session expired would apply a second time.
            return answer("session_expired", _expired(payload.session, now_ms))
        session.forget_below(payload.seq_low)
        if len(session.seqs) >= SESSION_SEQS_MAX:
            return answer(
                "error",
                f"requests awaiting seq_low is at the limit SESSION_SEQS_MAX={SESSION_SEQS_MAX}",
            )
        session.last_ms = now_ms
        collected: list[str] = []
        outcome, error = "ok", ""
        if payload.kind == "txn":
            try:
                collected = self._apply_txn(txn, index, payload.body)
            except _Rejected as rejected:
                outcome, error = rejected.outcome, clip_error(str(rejected))
        session.seqs[payload.seq] = (index, outcome, error)
        table.put(payload.client, session)
        body = payload.body if outcome == "ok" and payload.kind == "txn" else None
        return answer(outcome, error, collected=tuple(collected), body=body)

    def _maybe_sweep(self, txn: lmdb.Transaction, table: SessionTable, now_ms: int) -> None:
        raw = record_get(txn, self.dbs.sm_meta, "sm_meta", KEY_SWEEP)
        last = 0 if raw is None else int(cbor2.loads(raw))
        if now_ms - last >= self.sweep_ms:
            table.sweep(now_ms)
            record_put(txn, self.dbs.sm_meta, KEY_SWEEP, cbor2.dumps(now_ms))

    # ------------------------------------------------------------ transactions

    def _apply_txn(self, txn: lmdb.Transaction, index: int, body: bytes) -> list[str]:
        """Validates and applies one transaction body; returns the collected ids. Raises
        _Rejected (nothing changed) for a conflict or an error."""
        try:
            reads, wire_ops = ops.decode_txn(body)
        except (ProtocolError, LimitExceeded) as exc:
            raise _Rejected("error", f"bad transaction body: {exc}") from None
        except RecursionError:
            raise  # depends on this process's stack: never an outcome (ApplyFailed names it)
        except Exception as exc:
            # decode_txn only reads the body: whatever else it raises changed nothing, and the
            # same bytes raise the same way everywhere. The type only: its text may quote input.
            raise _Rejected("error", f"bad transaction body: {type(exc).__name__}") from None
        cache = self._nodes
        for oid, version in reads.items():
            current = cache.version(txn, oid)
            if current != version:
                raise _Rejected(
                    "conflict", f"{oid} is at version {current}, the transaction read {version}"
                )
        created: set[str] = set()
        for i, op in enumerate(wire_ops):
            if op[0] != "new":
                continue
            oid = op[1]
            if oid in created or cache.exists(txn, oid):
                raise _Rejected("error", f"op #{i} 'new': object {oid} already exists")
            created.add(oid)
        count = cache.count(txn)
        if count + len(created) > gc.OBJECTS_MAX:
            raise _Rejected(
                "error",
                f"objects would be {count + len(created)}, above OBJECTS_MAX={gc.OBJECTS_MAX}",
            )
        # oid -> [kind, container, class_name, size bound]: every node the ops touch. A
        # single-op body (the common lone write) changes the cached container in place: each
        # op either raises before changing anything or completes (shapes and hashability were
        # checked by decode_txn), unless it might take the record past record_bytes_max (that
        # is only known after the op). Other bodies work on copies, kept only if all succeed.
        in_place = len(wire_ops) == 1 and wire_ops[0][0] != "new"
        if in_place:
            cached = cache.get(txn, wire_ops[0][1])
            if cached is not None:
                grows = _growth_bytes(wire_ops[0])
                in_place = cached.size_bytes + grows <= self.record_bytes_max
        nodes: dict[str, list[Any]] = {}
        dropped = 0
        for i, op in enumerate(wire_ops):
            tag, oid = op[0], op[1]
            for target in _refs_of(op):
                if target not in created and not cache.exists(txn, target):
                    raise _Rejected("error", f"op #{i} {tag!r} references unknown object {target}")
            if tag == "new":
                container, class_name = ops.container_from(op[2], op[3])
                bound = len(codec.dumps(op[3])) + OP_ITEM_BYTES + VERSION_GROWTH_BYTES
                nodes[oid] = [op[2], container, class_name, bound]
                continue
            node = nodes.get(oid)
            if node is None:
                if oid in created:
                    raise _Rejected("error", f"op #{i} {tag!r} names {oid} before its 'new' op")
                cached = cache.get(txn, oid)
                if cached is None:
                    raise _Rejected("error", f"op #{i} {tag!r} names unknown object {oid}")
                container = cached.container if in_place else _copy_container(cached.container)
                node = [cached.kind, container, cached.class_name, cached.size_bytes]
                nodes[oid] = node
            kind, container = node[0], node[1]
            if kind == "obj" and tag in ("set", "del") and type(op[2]) is not str:
                raise _Rejected("error", f"op #{i} {tag!r} on {oid}: an attribute name is a str")
            try:
                dropped += gc.dropped_refs(kind, container, op)
                node[3] += _growth_bytes(op)
                ops.apply_op(kind, container, op)
            except ProtocolError as exc:
                raise _Rejected("error", f"op #{i} {tag!r} on {oid}: {exc}") from None
            except _VALUE_ERRORS as exc:
                # Values the shape check let through but Python refuses (e.g. a float NaN
                # compared in a set): the same on every replica, raised before the container
                # changed, so an error outcome is safe. The type only: the text quotes values.
                error = f"op #{i} {tag!r} on {oid}: {type(exc).__name__}"
                raise _Rejected("error", error) from None
        for oid, node in nodes.items():
            if node[3] > self.record_bytes_max:
                node[3] = self._check_record_size(txn, index, oid, node)
        for oid, (kind, container, class_name, size_bytes) in nodes.items():
            cache.put(oid, _Node(index, kind, container, class_name, size_bytes))
        return self._gc_step(txn, dropped, len(created))

    def _check_record_size(
        self, txn: lmdb.Transaction, index: int, oid: str, node: list[Any]
    ) -> int:
        """The exact size bound of a node whose bound passed the limit; _Rejected if the entry
        takes its record past record_bytes_max. A record that was already larger (written
        under a larger limit) may still shrink: only growth beyond the limit is refused."""
        kind, container, class_name = node[0], node[1], node[2]
        size = len(ops.encode_node(index, kind, container, class_name)) + VERSION_GROWTH_BYTES
        if size <= self.record_bytes_max:
            return size
        before = self._nodes.get(txn, oid)
        if before is not None:
            old = ops.encode_node(index, before.kind, before.container, before.class_name)
            if size <= len(old) + VERSION_GROWTH_BYTES:
                return size
        raise _Rejected(
            "error",
            f"object {oid} would take {size} bytes, above the limit record_bytes_max="
            f"{self.record_bytes_max} (every object must fit one stream frame); nothing was "
            "written. Split large values across several objects (e.g. a list of chunks, or "
            "more roots or containers instead of one huge one)",
        )

    def _record(self, oid: str, raw: bytes) -> tuple[int, str, Any]:
        """A stored record. Only records this state machine wrote (or a staged snapshot,
        validated when staged) are stored, so the per-value check of decode_record, which
        costs as much as decoding itself, is skipped."""
        try:
            version, kind, contents = codec.loads(raw)
        except (ProtocolError, ValueError, TypeError) as exc:  # a corrupt store
            raise AssertionError(f"stored record of {oid} is invalid: {exc}") from exc
        return version, kind, contents

    def _gc_step(self, txn: lmdb.Transaction, dropped: int, created: int) -> list[str]:
        raw = record_get(txn, self.dbs.sm_meta, "sm_meta", KEY_GC)
        candidates, fresh, alive = (0, 0, 0) if raw is None else cbor2.loads(raw)
        candidates += dropped
        fresh += created
        collected: list[str] = []
        if candidates + fresh > max(self.gc_threshold, alive):
            self._nodes.flush(txn)  # collection reads the stored records
            collected, alive, left = gc.collect(txn, self.dbs.objects, gc.GC_COLLECTED_BYTES_MAX)
            self._nodes.forget(collected)
            # Garbage beyond what one entry may carry (GC_COLLECTED_BYTES_MAX) stays
            # candidates: the next collection comes as soon as it outweighs the live nodes.
            candidates, fresh = left, 0
        record_put(txn, self.dbs.sm_meta, KEY_GC, cbor2.dumps([candidates, fresh, alive]))
        return collected

    # ------------------------------------------------------------ snapshots

    def snapshot_chunks(self, txn: lmdb.Transaction, chunk_bytes_max: int) -> Iterator[bytes]:
        """A consistent copy of sm_meta, sessions and objects as chunks of about
        `chunk_bytes_max` bytes (a single larger record makes a larger chunk). Each chunk is
        CBOR [part, last, [[db, key, value], ...]]; there is always at least one."""
        assert chunk_bytes_max >= 1, chunk_bytes_max
        part = 0
        items: list[list[Any]] = []
        size = 0
        pending: list[list[Any]] | None = None
        # Values go verified and unsealed (Corrupt stops the shipment): the receiver checks
        # them and seals them anew, so a checksum never depends on the other agent's store.
        sources = (
            ("m", self.dbs.sm_meta, "sm_meta"),
            ("s", self.dbs.sessions, "sessions"),
            ("o", self.dbs.objects, "objects"),
        )
        for tag, db, name in sources:
            for key, value in records(txn, db, name):
                item_bytes = len(key) + len(value) + 8
                if items and size + item_bytes > chunk_bytes_max:
                    if pending is not None:
                        yield cbor2.dumps([part, False, pending])
                        part += 1
                    pending, items, size = items, [], 0
                items.append([tag, key, value])
                size += item_bytes
        if pending is not None:
            yield cbor2.dumps([part, False, pending])
            part += 1
        yield cbor2.dumps([part, True, items])

    def stage_chunk(self, txn: lmdb.Transaction, chunk: bytes) -> None:
        stage_chunk(txn, self.dbs, chunk)

    def install_staged(self, txn: lmdb.Transaction, meta: SnapshotMeta) -> None:
        install_staged(txn, self.dbs, meta)

    # ------------------------------------------------------------ inspect

    def node_json(self, txn: lmdb.Transaction, root_name: str) -> Any:
        """The plain JSON-able value of a root, or None if no such root exists (roots always
        name a node, never None). See docs/data-model.md for the mapping."""
        raw = record_get(txn, self.dbs.objects, "objects", gc.ROOTS_OID.encode())
        if raw is None:
            return None
        _version, kind, contents = self._record(gc.ROOTS_OID, raw)
        if kind != "dict":
            return None
        for key, value in contents:
            if key == root_name:
                return _JsonWalk(txn, self.dbs.objects, self._record).value(value, 0)
        return None


def record_version(oid: str, record: bytes) -> int:
    """The version of a node record, read from its first bytes: CBOR [version, kind, contents]
    starts 0x83 then the version as an unsigned int (1 to 9 bytes)."""
    head = record[1] if len(record) > 1 else 0xFF
    if record[:1] != b"\x83" or head >> 5 != 0 or (head & 0x1F) > 27:
        raise AssertionError(f"stored record of {oid} is invalid: no version")
    info = head & 0x1F
    if info < 24:
        return info
    width = 1 << (info - 24)  # 24..27: 1, 2, 4 or 8 bytes follow
    return int.from_bytes(record[2 : 2 + width], "big")


def only_removes(data: bytes) -> bool:
    """True if a NORMAL entry's payload cannot grow the object table: a session open/close, or
    a transaction whose ops only delete (del, clear, discard, splice inserting nothing). A
    full store still accepts these, so an app can make room. Garbage (it would be refused at
    apply anyway) counts as not removing."""
    try:
        payload = parse_payload(data)
        if payload.kind != "txn":
            return True
        _reads, wire_ops = ops.decode_txn(payload.body)
    except Exception:  # hostile bytes: whatever they raise, they do not qualify
        return False
    for op in wire_ops:
        tag = op[0]
        if tag == "splice" and op[4]:
            return False
        if tag not in ("del", "clear", "discard", "splice"):
            return False
    return True


def _growth_bytes(op: list[Any]) -> int:
    """An upper bound on the bytes `op` (not "new") adds to its node's record: its values as
    the record encodes them (codec.dumps is the record's encoding of a value), plus headers.
    Removals only shrink a record."""
    tag = op[0]
    if tag == "set":
        return len(codec.dumps([op[2], op[3]])) + OP_ITEM_BYTES
    if tag in ("extend", "add"):
        return len(codec.dumps(op[2])) + OP_ITEM_BYTES
    if tag == "splice":
        return len(codec.dumps(op[4])) + OP_ITEM_BYTES
    return 0  # del, clear, discard


def _refs_of(op: list[Any]) -> Iterator[str]:
    """Every oid an op's values mention, including keys and values it removes: an app replica
    resolves all of them, so each must name a node that exists."""
    yield from ops.refs_of_op(op)
    if op[0] == "del":
        yield from codec.refs_in(op[2])
    elif op[0] == "discard":
        for value in op[2]:
            yield from codec.refs_in(value)


class _JsonWalk:
    """One node_json answer: expands each node once, later sightings become {"__ref__": oid}."""

    def __init__(self, txn: lmdb.Transaction, objects: Any, record: Any) -> None:
        self.txn = txn
        self.objects = objects
        self.record = record
        self.seen: set[str] = set()

    def value(self, value: Any, depth: int) -> Any:
        tp = type(value)
        if value is None or tp in (bool, int, str):
            return value
        if tp is float:
            return value if value == value and abs(value) != float("inf") else repr(value)
        if tp is bytes:
            return {"__bytes__": value.hex()}
        if tp is codec.Ref:
            return self.node(value.oid, depth)
        if tp is tuple:
            return [self.value(x, depth) for x in value]
        if tp is frozenset:
            return [self.value(x, depth) for x in sorted(value, key=codec.dumps)]
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value)  # Decimal, UUID: their exact text

    def node(self, oid: str, depth: int) -> Any:
        if oid in self.seen or depth >= INSPECT_DEPTH_MAX:
            return {"__ref__": oid}
        if len(self.seen) >= INSPECT_NODES_MAX:
            raise LimitExceeded(
                "INSPECT_NODES_MAX", INSPECT_NODES_MAX, len(self.seen) + 1, "nodes to inspect"
            )
        raw = record_get(self.txn, self.objects, "objects", oid.encode())
        if raw is None:
            return {"__ref__": oid, "missing": True}
        self.seen.add(oid)
        _version, kind, contents = self.record(oid, raw)
        inner = depth + 1
        if kind == "dict":
            if all(type(key) is str for key, _ in contents):
                return {key: self.value(v, inner) for key, v in contents}
            items = [[self.value(k, inner), self.value(v, inner)] for k, v in contents]
            return {"__items__": items}
        if kind == "list":
            return [self.value(v, inner) for v in contents]
        if kind == "set":  # stored in canonical order already
            return [self.value(v, inner) for v in contents]
        class_name, attrs = contents
        shown: dict[str, Any] = {"__class__": class_name}
        for name, v in attrs:
            shown[name] = self.value(v, inner)
        return shown


# ---------------------------------------------------------------- staging: receiving chunks


def stage_chunk(txn: lmdb.Transaction, dbs: Dbs, chunk: bytes) -> None:
    """Stores one received snapshot chunk. Part 0 starts over (drops anything staged); other
    parts must follow in order. ProtocolError on anything malformed."""
    try:
        value: Any = loads_plain(chunk, CHUNK_DEPTH_MAX)
    except ProtocolError as exc:
        raise ProtocolError(f"snapshot chunk: {exc}") from None
    if not (
        type(value) is list
        and len(value) == 3
        and type(value[0]) is int
        and 0 <= value[0] <= CHUNK_PARTS_MAX
        and type(value[1]) is bool
        and type(value[2]) is list
    ):
        raise ProtocolError("snapshot chunk is not [part, last, [[db, key, value], ...]]")
    part, last, items = value
    if part == 0:
        drop_staged(txn, dbs)
    else:
        raw = record_get(txn, dbs.staging_state, "staging_state", STAGING_NEXT)
        expected = 0 if raw is None else int.from_bytes(raw, "big")
        if part != expected or staged_complete(txn, dbs):
            raise ProtocolError(f"snapshot chunk part {part} out of order (expected {expected})")
    targets = {"m": dbs.staging_sm_meta, "s": dbs.staging_sessions, "o": dbs.staging_objects}
    for item in items:
        if not (
            type(item) is list
            and len(item) == 3
            and item[0] in CHUNK_DBS
            and type(item[1]) is bytes
            and 1 <= len(item[1]) <= KEY_BYTES_MAX
            and type(item[2]) is bytes
        ):
            raise ProtocolError(
                f"snapshot chunk item is not [db, key, value]: {ops.describe(item)}"
            )
        tag, key, data = item
        _check_staged_item(tag, key, data)
        record_put(txn, targets[tag], key, data)
    record_put(txn, dbs.staging_state, STAGING_NEXT, (part + 1).to_bytes(8, "big"))
    if last:
        record_put(txn, dbs.staging_state, STAGING_DONE, b"1")


def _check_staged_item(tag: str, key: bytes, data: bytes) -> None:
    if tag == "m":
        if key not in SM_META_KEYS:
            raise ProtocolError(f"snapshot holds an unknown sm_meta key {key!r:.40}")
        try:
            loads_plain(data, CHUNK_DEPTH_MAX)
        except ProtocolError as exc:
            raise ProtocolError(f"snapshot sm_meta {key!r}: {exc}") from None
        return
    try:
        name = key.decode()
    except UnicodeDecodeError:
        raise ProtocolError("snapshot key is not utf-8") from None
    if tag == "s":
        decode_session(data)
    else:
        if len(name) > codec.OID_CHARS_MAX:
            raise ProtocolError(
                f"snapshot object id longer than OID_CHARS_MAX={codec.OID_CHARS_MAX}"
            )
        codec.decode_record(data)
