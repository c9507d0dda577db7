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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cbor2
import lmdb
from superstatic_agent import gc, oidmarks, set_bodies, snapshot_records
from superstatic_agent import records as rec
from superstatic_agent.config import CLIENT_FRAME_ENVELOPE_BYTES
from superstatic_agent.nodeops import BodyApply, Rejected, describe_key, key_bytes
from superstatic_agent.noderead import entry_at, materialize, read_header, read_nid
from superstatic_agent.nodestore import NodeView, RecordCache
from superstatic_agent.outcome_records import OutcomeRecords
from superstatic_agent.payload import parse_payload
from superstatic_agent.raft.types import ConfChange, Entry, EntryKind, SnapshotMeta
from superstatic_agent.rules import KEY_RULES, RULES_FIRST, RULES_NEWEST, RulesTooNew
from superstatic_agent.sessions import (
    SESSION_SEQS_MAX,
    SESSIONS_MAX,
    Session,
    SessionTable,
    clip_error,
)
from superstatic_agent.smmeta import SmMeta
from superstatic_agent.storage import (
    KEY_APPLIED,
    Corrupt,
    Dbs,
    index_key,
    install_staged,
    open_dbs,
    record_put,
)

from superstatic.protocol import codec, keynorm, ops, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

SESSION_TTL_MS_DEFAULT = 60_000
# The largest record a write may leave: one entry (dict item, set member, attribute), one
# list chunk or one header; a container has no size bound of its own. Every record must fit
# one stream frame, so the agent's flag --record-bytes-max is bounded by wire.FRAME_BYTES_MAX
# less the room a frame needs around it (config.CLIENT_FRAME_ENVELOPE_BYTES).
RECORD_BYTES_MAX_DEFAULT = 8 << 20
# Minimum churn (dropped references + new nodes) between two collections; see gc.py.
GC_THRESHOLD_DEFAULT = 10_000
# Depth to which node_json expands references; deeper nodes are shown as {"__ref__": oid}.
INSPECT_DEPTH_MAX = 100
# Nodes node_json expands in one answer; past it the answer is an error naming this limit.
INSPECT_NODES_MAX = 100_000

KEY_GC = b"gc"  # [dropped refs since last GC, nodes created since, nodes alive after it]
KEY_SWEEP = b"sweep"  # log time of the last session sweep
KEY_CONF_LAST = b"conf_last"  # [index, op, node, address] of the last CONF entry applied
SM_META_KEYS = (
    KEY_APPLIED,
    KEY_GC,
    KEY_SWEEP,
    KEY_CONF_LAST,
    rec.KEY_NEXT_NID,
    rec.KEY_TOMB_HORIZON,
    rec.KEY_TOMB_NEXT_SWEEP,
    KEY_RULES,
)


# Outcomes of an applied entry. "session_expired": the request names a session that is not
# (or no longer) live; nothing changed, and it is not recorded (there is no session to hold it).
OUTCOMES = ("ok", "conflict", "error", "dup", "noop", "session_expired")

_SM_META_KEY_SET = frozenset(SM_META_KEYS)


@dataclass(slots=True)
class Applied:
    """The result of applying one entry (architecture section 2).

    For outcome "dup", `error` is the recorded error and `first_index` / `first_outcome` are
    the index and outcome of the entry that first applied this (client, seq): what the client
    is answered. `body` is the transaction body for an "ok" txn (replicas apply it), else None.
    """

    index: int
    kind: str  # "txn" | "open" | "close" | "noop" | "conf" | "rules" | "invalid"
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
    # The heads (oid, kind, class name or None) of the existing nodes the entry's ops reference
    # (docs/virtual-heap.md section 3.2): an app that does not hold a referenced node still
    # makes a hollow ref for it. Computed from the state at the entry: the same on every replica.
    heads: tuple[tuple[str, str, str | None], ...] = ()
    # The nodes an "ok" txn's ops write (op[1] of each, "new" included) and those it creates:
    # what a partial subscriber's filter tests (docs/virtual-heap.md section 4.2). Not stored:
    # an event read back from the log recomputes them from its body.
    written: tuple[str, ...] = ()
    created: tuple[str, ...] = ()


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


_Rejected = Rejected


# Default of the agent's --node-cache-bytes-max: records' bytes the decoded headers and hot
# entries kept across apply batches may stand for (nodestore.RecordCache).
NODE_CACHE_BYTES_MAX_DEFAULT = 64 << 20

# Tombstones (docs/data-model-v2.md section 3): every TOMB_SWEEP_ENTRIES applied entries, the
# tombstones older than TOMB_RETAIN_ENTRIES entries are purged, at most TOMB_SWEEP_MAX per
# sweep (the rest next time), in version order. A model-2 read older than the newest purged
# tombstone (sm_meta tomb_horizon) conflicts: its absent-key reads can no longer be checked.
TOMB_SWEEP_ENTRIES = 4096
TOMB_RETAIN_ENTRIES = 100_000
TOMB_SWEEP_MAX = 10_000


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
        rules_max: int = RULES_NEWEST,
    ) -> None:
        assert session_ttl_ms >= 1 and gc_threshold >= 1, (session_ttl_ms, gc_threshold)
        assert RULES_FIRST <= rules_max <= RULES_NEWEST, rules_max
        # The newest rules version this agent applies (its --rules-max): a state or an entry
        # asking for a later one raises RulesTooNew (agent/rules.py).
        self.rules_max = rules_max
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
        self._cache = RecordCache(node_cache_bytes_max)
        # Encodes each entry's outcome record (outcome_records.py: cbor2's bytes, cheaper).
        self._outcome_records = OutcomeRecords()
        self._cache_at: int | None = None  # the applied index the cached records reflect
        # Records written by the last apply_batch (tests count them: a write costs O(1)).
        self.records_written = 0
        # The session table and sm_meta of the batch applying (None between batches).
        self._sessions: SessionTable | None = None
        self._meta: SmMeta | None = None
        # The rules version in force for the entry applying (read at each batch's start).
        self._rules = RULES_FIRST
        # The last batch's session table, carried into the next batch under the record
        # cache's rule (_cache_at): only while it is known to equal the store.
        self._sessions_kept: SessionTable | None = None
        # The node records the batch's bodies wrote, put into LMDB once at its end (or before
        # anything reads the node dbs past the views: _flush_writes). None between batches.
        self._writes: NodeView | None = None
        # LMDB's count of oids, read once per batch (txn.stat, ~1 us a body): dropped by
        # whatever changes it (a flush of the batch's writes, a collection).
        self._oids_count: int | None = None

    # ------------------------------------------------------------ apply

    def apply(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        """Applies one entry (a batch of one)."""
        return self.apply_batch(txn, (entry,))[0]

    def apply_batch(self, txn: lmdb.Transaction, entries: Sequence[Entry]) -> list[Applied]:
        """Applies entries in order inside `txn`.

        Decoded records (headers, oid -> nid, hot entries) are kept for the next batch only
        while they are known to equal the store: the cache is stamped with the index it
        reflects, and a batch that starts at another applied index (an installed snapshot, or
        a write transaction that aborted after this batch) starts from an empty cache."""
        # Session records and sm_meta scalars are decoded once and written once per batch
        # (sessions.py, smmeta.py); a batch that raises writes neither (its txn aborts).
        self._meta = SmMeta(txn, self.dbs.sm_meta)
        applied, _term, _time_ms = self._applied()
        self._rules = self._rules_in_force(0, 0)
        kept, self._sessions_kept = self._sessions_kept, None
        if applied != self._cache_at:
            self._cache.clear()
            kept = None
        if kept is not None:
            self._sessions = kept.carry_to(txn)
        else:
            self._sessions = SessionTable(txn, self.dbs.sessions, self.session_ttl_ms)
        self._cache_at = None
        self.records_written = 0
        self._writes = NodeView(txn, self.dbs, self._cache)
        self._oids_count = None
        try:
            results = [self._apply_entry(txn, entry) for entry in entries]
            if entries:
                self._flush_batch_writes(entries[-1])
            self._sessions.flush()
            self._meta.flush()
        except BaseException:
            self._cache.clear()
            raise
        finally:
            sessions, self._meta, self._sessions = self._sessions, None, None
            self._writes = None
        self._sessions_kept = sessions
        self._cache_at = entries[-1].index if entries else applied
        return results

    def _flush_writes(self) -> None:
        """Puts the node records the batch's bodies wrote so far into LMDB: at the batch's
        end, and before anything reads the node dbs without a view (the object count, a
        collection, the tombstone sweep), which must see every earlier body's writes. Only
        the last body's record of a key is put: the same records as one put per body."""
        writes = self._batch_writes()
        if writes.pending:
            if "oids" in writes.dbs_held:
                self._oids_count = None
            writes.commit()
            self.records_written += writes.puts
            writes.puts = 0

    def _flush_batch_writes(self, last: Entry) -> None:
        """The batch's end: `_flush_writes`, a failure named as the batch's last entry's
        (what _apply_entry does for a failure inside an entry)."""
        try:
            self._flush_writes()
        except (lmdb.Error, Corrupt, MemoryError):
            raise
        except Exception as exc:  # a bug, met by every replica alike
            raise ApplyFailed(last.index, last.term, exc) from exc

    def _apply_entry(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        """One entry; ApplyFailed (naming it) for an exception apply cannot make an outcome
        of. Storage errors, damaged records (Corrupt) and memory exhaustion are this replica's
        condition, not the entry's: they propagate unchanged (the server halts or refuses
        writes; never an outcome, never recorded as poison)."""
        try:
            return self._apply_one(txn, entry)
        except (lmdb.Error, Corrupt, MemoryError, ApplyFailed, RulesTooNew):
            raise
        except Exception as exc:
            raise ApplyFailed(entry.index, entry.term, exc) from exc

    def rules_version(self, txn: lmdb.Transaction) -> int:
        """The rules version the stored state is at (outside a batch: status, the leader's
        decision to move it up)."""
        meta = self._meta
        self._meta = SmMeta(txn, self.dbs.sm_meta)
        try:
            return self._stored_rules()
        finally:
            self._meta = meta

    def check_rules(self, txn: lmdb.Transaction) -> None:
        """RulesTooNew if the stored state (e.g. an installed snapshot) asks for rules this
        agent does not know."""
        meta = self._meta
        self._meta = SmMeta(txn, self.dbs.sm_meta)
        try:
            self._rules_in_force(0, 0)
        finally:
            self._meta = meta

    def _stored_rules(self) -> int:
        version = self._batch_meta().get(KEY_RULES, RULES_FIRST)
        # Not an int we wrote (a damaged or foreign record): no rules this code knows.
        return version if type(version) is int and version >= RULES_FIRST else 1 << 63

    def _rules_in_force(self, index: int, term: int) -> int:
        version = self._stored_rules()
        if version > self.rules_max:
            raise RulesTooNew(index, term, version, self.rules_max)
        return version

    def _apply_rules(self, entry: Entry, version: int) -> Applied:
        """A "rules" entry: moves the rules version up (never down: a late copy, or one a
        later leader proposed again, changes nothing). From the next entry on, every replica
        applies the new rules; one whose code does not know them stops here (RulesTooNew)."""
        if version > self.rules_max:
            raise RulesTooNew(entry.index, entry.term, version, self.rules_max)
        if version > self._rules:
            self._batch_meta().put(KEY_RULES, version)
            self._rules = version
        return Applied(entry.index, "rules", None, None, "noop")

    def _apply_one(self, txn: lmdb.Transaction, entry: Entry) -> Applied:
        applied, _term, log_time_ms = self._applied()
        assert entry.index == applied + 1, ("entries apply in order", entry.index, applied)
        if entry.kind == EntryKind.NOOP:
            result = Applied(entry.index, "noop", None, None, "noop")
        elif entry.kind == EntryKind.CONF:
            result = self._apply_conf(txn, entry)
        else:
            result, log_time_ms = self._apply_normal(txn, entry, log_time_ms)
        assert result.outcome in OUTCOMES, result.outcome
        self._maybe_sweep_tombs(txn, entry.index)
        result.log_time_ms = log_time_ms
        outcome = self._outcome_records.encode(
            result.outcome, result.collected, log_time_ms, result.heads
        )
        record_put(txn, self.dbs.outcomes, index_key(entry.index), outcome)
        self._batch_meta().put(KEY_APPLIED, (entry.index, entry.term, log_time_ms))
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
        if payload.kind == "rules":
            # Like a NOOP: no session, no log time (its stamp is the proposing leader's).
            return self._apply_rules(entry, payload.seq), log_time_ms
        now_ms = max(log_time_ms, payload.time_ms)
        table = self._sessions
        assert table is not None, "entries apply in apply_batch"
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
                table.adopt(payload.client, session)  # get's copy: not used after this
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
            if self._rules >= 2:
                late = self._late_copy(payload.seq, session, creating)
                if late is not None:
                    outcome, error, extra = late
                    return answer(outcome, error, **extra)
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
            if self._rules >= 2:
                # Recorded as a mark, not an outcome (bounded: one int): every later copy of
                # this (client, seq) is refused too, so the library's "rejected, nothing was
                # applied" stays true (and so is any seq below it not applied yet).
                session.refused = max(session.refused, payload.seq)
                table.adopt(payload.client, session)  # get's copy: not used after this
            return answer(
                "error",
                f"requests awaiting seq_low is at the limit SESSION_SEQS_MAX={SESSION_SEQS_MAX}",
            )
        session.last_ms = now_ms
        effects = _TxnEffects([], (), (), ())
        outcome, error = "ok", ""
        if payload.kind == "txn":
            try:
                effects = self._apply_txn(txn, index, payload.body, payload.client)
            except _Rejected as rejected:
                outcome, error = rejected.outcome, clip_error(str(rejected))
        session.seqs[payload.seq] = (index, outcome, error)
        table.adopt(payload.client, session)  # get's copy or a new one: not used after this
        body = payload.body if outcome == "ok" and payload.kind == "txn" else None
        return answer(
            outcome,
            error,
            collected=tuple(effects.collected),
            body=body,
            heads=effects.heads,
            written=effects.written,
            created=effects.created,
        )

    @staticmethod
    def _late_copy(
        seq: int, session: Session, creating: bool
    ) -> tuple[str, str, dict[str, Any]] | None:
        """Rules 2: the answer to a request of the live session's client that is a late copy
        of an earlier one, or None to apply it. Called once the seq is known not recorded, not
        below seq_low, and (unless it opens a session) naming the live session.

        - An "open" whose seq is not above the seq of the open that created the live session
          (a resend, or an agent's proposal again under a new leader, of an open the client
          gave up on: its seqs only grow) is that open's dup: the client is answered the live
          session's id, and the session it may be using is never replaced (rules 1 replaced
          it, and its writes then met session_expired: glue seeds 152, 3740).
        - A seq refused at SESSION_SEQS_MAX (or below such a one and not applied) is refused
          again: that refusal was final when answered."""
        if creating:
            opened_seq = session.opened_seq()
            if opened_seq is not None and seq < opened_seq:
                extra = {"first_index": session.opened, "first_outcome": "ok"}
                return "dup", "", extra
        if seq <= session.refused:
            error = (
                f"seq {seq} is at or below seq {session.refused}, refused at the limit "
                f"SESSION_SEQS_MAX={SESSION_SEQS_MAX}; nothing was applied (send it again "
                "with a new seq)"
            )
            return "error", error, {}
        return None

    def _maybe_sweep(self, txn: lmdb.Transaction, table: SessionTable, now_ms: int) -> None:
        last = self._read_int(KEY_SWEEP, 0)
        if now_ms - last >= self.sweep_ms:
            table.sweep(now_ms)
            self._batch_meta().put(KEY_SWEEP, now_ms)

    # ------------------------------------------------------------ transactions

    def _apply_txn(
        self, txn: lmdb.Transaction, index: int, body: bytes, client: str
    ) -> _TxnEffects:
        """Validates and applies one transaction body; returns the collected ids, the heads
        of the existing nodes its ops reference and the nodes it writes and creates. Raises
        _Rejected (nothing changed) for a conflict or an error."""
        try:
            # ops.decode_body's result, read without the generic scan for the bodies of lone
            # sets (set_bodies.py: the same TxnBody or the same exception).
            doc = set_bodies.decode_body(body)
        except (ProtocolError, LimitExceeded) as exc:
            raise _Rejected("error", f"bad transaction body: {exc}") from None
        except RecursionError:
            raise  # depends on this process's stack: never an outcome (ApplyFailed names it)
        except Exception as exc:
            # decode_body only reads the body: whatever else it raises changed nothing, and the
            # same bytes raise the same way everywhere. The type only: its text may quote input.
            raise _Rejected("error", f"bad transaction body: {type(exc).__name__}") from None
        view = NodeView(txn, self.dbs, self._cache, self._writes)
        wire_ops = doc.ops
        created = {op[1] for op in wire_ops if op[0] == "new"}
        if doc.model == 1:
            self._validate_v1(view, doc.versions)
        else:
            self._validate_v2(txn, view, index, doc, created)
        if created:  # else no op is a "new": nothing to check
            created.clear()
            for i, op in enumerate(wire_ops):
                if op[0] != "new":
                    continue
                oid = op[1]
                if oid in created or view.nid(oid) is not None:
                    raise _Rejected("error", f"op #{i} 'new': object {oid} already exists")
                created.add(oid)
        mark = self._bind_oids(txn, client, wire_ops) if created and self._rules >= 3 else None
        if "oids" in self._batch_writes().dbs_held:
            self._flush_writes()  # the count below is LMDB's: earlier bodies' nodes in it
        count = self._oids_count
        if count is None:
            count = self._oids_count = int(txn.stat(self.dbs.oids)["entries"])
        if count + len(created) > gc.OBJECTS_MAX:
            raise _Rejected(
                "error",
                f"objects would be {count + len(created)}, above OBJECTS_MAX={gc.OBJECTS_MAX}",
            )
        next_nid = self._read_int(rec.KEY_NEXT_NID, 1)
        view.new_nids_from = next_nid
        body_apply = BodyApply(view, index, self.record_bytes_max, next_nid)
        made: set[str] = set()
        heads: dict[str, tuple[str, str, str | None]] = {}
        try:
            for i, op in enumerate(wire_ops):
                tag, oid = op[0], op[1]
                body_apply.op_position, body_apply.op_tag = i, tag
                for target in _refs_of(op):
                    if target in created:
                        continue  # its "new" op carries its kind and class
                    if target not in heads:
                        target_nid = view.nid(target)
                        if target_nid is None:
                            raise _Rejected(
                                "error", f"op #{i} {tag!r} references unknown object {target}"
                            )
                        heads[target] = _head(target, view.header(target_nid))
                if tag == "new":
                    body_apply.new(op)
                    made.add(oid)
                    continue
                if body_apply.node(oid) is None:
                    if oid in created and oid not in made:
                        raise _Rejected("error", f"op #{i} {tag!r} names {oid} before its 'new' op")
                    raise _Rejected("error", f"op #{i} {tag!r} names unknown object {oid}")
                kind = body_apply.node(oid)[1].kind  # type: ignore[index]
                if kind == "obj" and tag in ("set", "del") and type(op[2]) is not str:
                    raise _Rejected(
                        "error", f"op #{i} {tag!r} on {oid}: an attribute name is a str"
                    )
                try:
                    body_apply.apply(op)
                except ProtocolError as exc:
                    raise _Rejected("error", f"op #{i} {tag!r} on {oid}: {exc}") from None
                except _VALUE_ERRORS as exc:
                    # Values the shape check let through but Python refuses: the same on
                    # every replica, and nothing is written (the view is discarded). The
                    # type only: the text may quote values.
                    error = f"op #{i} {tag!r} on {oid}: {type(exc).__name__}"
                    raise _Rejected("error", error) from None
            body_apply.finish()
            if body_apply.next_nid != next_nid:
                self._batch_meta().put(rec.KEY_NEXT_NID, body_apply.next_nid)
        except BaseException:
            view.discard()
            raise
        view.commit()  # to the batch's writes (_flush_writes puts them)
        if mark is not None:  # the body applied: its oids' prefix mark moves (rules 3)
            oidmarks.put(txn, self.dbs.oid_marks, client, mark)
        collected = self._gc_step(txn, body_apply.dropped, len(created))
        if len(wire_ops) == 1:  # nearly every body: no generators to build
            written = (wire_ops[0][1],)
            created_in_order = written if created else ()
        else:
            written = tuple(dict.fromkeys(op[1] for op in wire_ops))
            created_in_order = tuple(op[1] for op in wire_ops if op[0] == "new")
        return _TxnEffects(collected, tuple(heads.values()), written, created_in_order)

    def _bind_oids(
        self, txn: lmdb.Transaction, client: str, wire_ops: Sequence[list[Any]]
    ) -> oidmarks.Mark | None:
        """Rules 3: the oids the body creates are its client's, each created once
        (agent/oidmarks.py); Rejected if not. The prefix's moved mark, put once the body
        applied."""
        news = [
            (i, op[1]) for i, op in enumerate(wire_ops) if op[0] == "new" and op[1] != gc.ROOTS_OID
        ]
        return oidmarks.bind(txn, self.dbs.oid_marks, client, news)

    def _validate_v1(self, view: NodeView, versions: dict[str, int]) -> None:
        """Data model 1 reads: each node's header version equals the one read (0: absent)."""
        for oid, version in versions.items():
            nid = view.nid(oid)
            current = 0 if nid is None else view.header(nid).version
            if current != version:
                raise _Rejected(
                    "conflict", f"{oid} is at version {current}, the transaction read {version}"
                )

    def _validate_v2(
        self,
        txn: lmdb.Transaction,
        view: NodeView,
        index: int,
        doc: ops.TxnBody,
        created: set[str],
    ) -> None:
        """Data model 2 reads (docs/data-model-v2.md section 4): nothing read changed after
        the read base `a`, node by node and key by key."""
        base = doc.base
        if base >= index:
            raise _Rejected("error", f"read base {base} is not below this entry's index {index}")
        horizon = self._read_int(rec.KEY_TOMB_HORIZON, 0)
        if base < horizon:
            raise _Rejected(
                "conflict",
                f"read base {base} is older than the tombstone horizon {horizon}; re-run",
            )
        for oid, reads in doc.reads.items():
            nid = view.nid(oid)
            if nid is None:
                # A node created after the base was not there to read, and one collected
                # since may have changed before it went; the root table is never collected,
                # so reading it absent stays true until it is created.
                if oid in created or oid == gc.ROOTS_OID:
                    continue
                raise _Rejected(
                    "conflict", f"{oid} was read at {base} but does not exist now; re-run"
                )
            header = view.header(nid)
            if reads.flags & ops.READ_CONTENT and header.version > base:
                raise _Rejected(
                    "conflict", f"{oid} changed at {header.version}, after the read base {base}"
                )
            if reads.flags & (ops.READ_SHAPE | ops.READ_CONTENT) and header.shape_version > base:
                raise _Rejected(
                    "conflict",
                    f"{oid} changed its members at {header.shape_version}, after the read "
                    f"base {base}",
                )
            if reads.keys and header.kind == "list":
                raise _Rejected("error", f"the read of {oid}: a list has no keys to read")
            for i, key in enumerate(reads.keys):
                entry = view.entry(nid, key_bytes(key, f"key #{i} read of {oid}"))
                if entry is not None and entry.version > base:
                    raise _Rejected(
                        "conflict",
                        f"{oid} key #{i} ({describe_key(key)}) changed at {entry.version}, "
                        f"after the read base {base}",
                    )

    def _batch_writes(self) -> NodeView:
        writes = self._writes
        assert writes is not None, "entries apply in apply_batch"
        return writes

    def _batch_meta(self) -> SmMeta:
        meta = self._meta
        assert meta is not None, "entries apply in apply_batch"
        return meta

    def _applied(self) -> tuple[int, int, int]:
        """(applied index, its term, log time ms), as storage.read_applied reads them."""
        index, term, time_ms = self._batch_meta().get(KEY_APPLIED, (0, 0, 0))
        return index, term, time_ms

    def _read_int(self, key: bytes, default: int) -> int:
        return int(self._batch_meta().get(key, default))

    def _maybe_sweep_tombs(self, txn: lmdb.Transaction, index: int) -> None:
        """Every TOMB_SWEEP_ENTRIES entries (every entry while a sweep left some due): purges
        the tombstones older than TOMB_RETAIN_ENTRIES, oldest first, at most TOMB_SWEEP_MAX,
        and raises tomb_horizon to the newest purged. Same entries on every replica: the same
        tombstones go."""
        due = self._read_int(rec.KEY_TOMB_NEXT_SWEEP, TOMB_SWEEP_ENTRIES)
        if index < due:
            return
        upto = index - TOMB_RETAIN_ENTRIES
        if upto <= 0:
            self._batch_meta().put(rec.KEY_TOMB_NEXT_SWEEP, index + TOMB_SWEEP_ENTRIES)
            return
        self._flush_writes()  # the cursor below reads LMDB's tombs: every body's in it
        view = NodeView(txn, self.dbs, self._cache)
        horizon = self._read_int(rec.KEY_TOMB_HORIZON, 0)
        swept = horizon
        cursor = txn.cursor(db=self.dbs.tombs)
        keys: list[bytes] = []
        if cursor.first():
            for key in cursor.iternext(keys=True, values=False):
                version, _entry_key = rec.tomb_key_parts(bytes(key))
                if version > upto or len(keys) >= TOMB_SWEEP_MAX:
                    break
                keys.append(bytes(key))
        for key in keys:
            version, entry_key = rec.tomb_key_parts(key)
            view.delete("tombs", key)
            swept = max(swept, version)
            found = view.get("entries", entry_key)
            if found is None:
                continue  # its node was collected
            if not rec.entry_key_hashed(entry_key):
                if found.tomb and found.version == version:
                    view.delete("entries", entry_key)
                continue
            items = [(e, x) for e, x in found if not (x.tomb and x.version == version)]
            if not items:
                view.delete("entries", entry_key)
            elif len(items) != len(found):
                view.put("entries", entry_key, items, rec.encode_bucket(items))
        view.commit()
        if swept != horizon:
            self._batch_meta().put(rec.KEY_TOMB_HORIZON, swept)
        # A sweep that stopped at TOMB_SWEEP_MAX left tombstones due: the next entry sweeps
        # again, until the backlog is gone (at one sweep per TOMB_SWEEP_ENTRIES, any workload
        # deleting more than TOMB_SWEEP_MAX / TOMB_SWEEP_ENTRIES keys per entry piled them up
        # forever: review 11). Deterministic: the count depends on the store only.
        step = 1 if len(keys) >= TOMB_SWEEP_MAX else TOMB_SWEEP_ENTRIES
        self._batch_meta().put(rec.KEY_TOMB_NEXT_SWEEP, index + step)

    def _gc_step(self, txn: lmdb.Transaction, dropped: int, created: int) -> list[str]:
        candidates, fresh, alive = self._batch_meta().get(KEY_GC, (0, 0, 0))
        candidates += dropped
        fresh += created
        collected: list[str] = []
        if candidates + fresh > max(self.gc_threshold, alive):
            self._flush_writes()  # the collection reads and deletes in LMDB directly
            collected, alive, left = gc.collect(txn, self.dbs, gc.GC_COLLECTED_BYTES_MAX)
            self._oids_count = None
            # The collection deleted records behind the cache's back.
            self._cache.clear()
            # Garbage beyond what one entry may carry (GC_COLLECTED_BYTES_MAX) stays
            # candidates: the next collection comes as soon as it outweighs the live nodes.
            candidates, fresh = left, 0
        self._batch_meta().put(KEY_GC, (candidates, fresh, alive))
        return collected

    # ------------------------------------------------------------ snapshots

    # Peer snapshots are agent/snapshot_records.py's (branch v2snap): these delegate to it.
    def snapshot_chunks(self, txn: lmdb.Transaction, chunk_bytes_max: int) -> Iterator[bytes]:
        return snapshot_records.snapshot_chunks(txn, self.dbs, chunk_bytes_max)

    def stage_chunk(self, txn: lmdb.Transaction, chunk: bytes) -> None:
        stage_chunk(txn, self.dbs, chunk)

    def install_staged(self, txn: lmdb.Transaction, meta: SnapshotMeta) -> None:
        """Installs the staged snapshot (its tables become the live ones: storage.py)."""
        self.dbs = install_staged(txn, self.dbs, meta)

    # ------------------------------------------------------------ inspect

    def node_json(self, txn: lmdb.Transaction, root_name: str) -> Any:
        """The plain JSON-able value of a root, or None if no such root exists (roots always
        name a node, never None). See docs/data-model.md for the mapping."""
        nid = read_nid(txn, self.dbs, gc.ROOTS_OID)
        if nid is None or read_header(txn, self.dbs, nid).kind != "dict":
            return None
        try:
            ekey = keynorm.ekey(root_name)
        except keynorm.KeyRefused:
            return None

        entry = entry_at(txn, self.dbs, nid, ekey)
        if entry is None or entry.tomb:
            return None
        return _JsonWalk(txn, self.dbs).value(entry.value, 0)

    def cached_bytes(self) -> int:
        """Bytes of records the apply cache stands for (metrics)."""
        return self._cache.bytes()


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


class _TxnEffects(NamedTuple):
    collected: list[str]
    heads: tuple[tuple[str, str, str | None], ...]
    written: tuple[str, ...]
    created: tuple[str, ...]


def _head(oid: str, header: rec.Header) -> tuple[str, str, str | None]:
    """A node's head: what never changes over its life (an obj's class name; a list's length
    does change, so a list's head carries none)."""
    return (oid, header.kind, header.extra if header.kind == "obj" else None)


def _refs_of(op: list[Any]) -> Iterable[str]:
    """Every oid an op's values mention, including keys and values it removes: an app replica
    resolves all of them, so each must name a node that exists. In order: key, then value."""
    tag = op[0]
    if (tag == "set" or tag == "del") and type(op[2]) in _NO_REFS:
        # Nearly every op: a scalar key, and a scalar value or one reference (no generator).
        value = op[3] if tag == "set" else None
        if type(value) in _NO_REFS:
            return ()
        if type(value) is codec.Ref:
            return (value.oid,)
    return _refs_walk(op)


# Values that hold no reference (codec.refs_in yields nothing for them).
_NO_REFS = codec.SCALAR_TYPES


def _refs_walk(op: list[Any]) -> Iterator[str]:
    yield from ops.refs_of_op(op)
    if op[0] == "del":
        yield from codec.refs_in(op[2])
    elif op[0] == "discard":
        for value in op[2]:
            yield from codec.refs_in(value)


class _JsonWalk:
    """One node_json answer: expands each node once, later sightings become {"__ref__": oid}."""

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs) -> None:
        self.txn = txn
        self.dbs = dbs
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
        node = materialize(self.txn, self.dbs, oid)
        if node is None:
            return {"__ref__": oid, "missing": True}
        self.seen.add(oid)
        _version, kind, contents = node
        inner = depth + 1
        if kind == "dict":
            if all(type(key) is str for key, _ in contents):
                return {key: self.value(v, inner) for key, v in contents}
            items = [[self.value(k, inner), self.value(v, inner)] for k, v in contents]
            return {"__items__": items}
        if kind == "list":
            return [self.value(v, inner) for v in contents]
        if kind == "set":  # materialized in canonical order
            return [self.value(v, inner) for v in contents]
        class_name, attrs = contents
        shown: dict[str, Any] = {"__class__": class_name}
        for name, v in attrs:
            shown[name] = self.value(v, inner)
        return shown


# ---------------------------------------------------------------- staging: receiving chunks


def stage_chunk(txn: lmdb.Transaction, dbs: Dbs, chunk: bytes) -> None:
    """Stores one received snapshot chunk (agent/snapshot_records.py, with the sm_meta keys
    this state machine knows)."""
    snapshot_records.stage_chunk(txn, dbs, chunk, _SM_META_KEY_SET)
