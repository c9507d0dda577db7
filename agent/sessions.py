"""Client sessions of the state machine: the exactly-once table (architecture section 3).

A session record (db `sessions`, key = client id) is CBOR
`[last_ms, seq_low, [[seq, index, outcome, error], ...], opened, refused]`: the log time the
client was last heard of, the lowest seq it may still retry, the outcome of every seq >= seq_low
that was applied, the index of the "open" entry that started the session: its id, which every
later request of the session carries (Raft thesis 6.3: a session is registered by a log entry,
and a request naming a session that expired is refused, never silently given a new one), and
(rules 2, agent/rules.py) the highest seq refused at SESSION_SEQS_MAX: every seq up to it that
is not recorded is refused again, so that refusal, once answered, stays final for its (client,
seq) in bounded memory. Records written before sessions had ids have three fields and read as
opened 0; `refused` is written only when it is not 0 (so every record of rules 1 keeps its
four fields, byte for byte). Everything here runs
inside the state machine's apply, so it is deterministic: time is log time (leader-stamped,
never going back), never the local clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2
import lmdb
from superstatic_agent.payload import loads_plain
from superstatic_agent.storage import record_get, record_put, records

from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.ops import describe

# Recorded outcomes per session (seqs >= seq_low the client may still retry). A client with
# this many requests unanswered at once is refused more until its seq_low advances.
SESSION_SEQS_MAX = 4096
# Live sessions in the table. Each costs a record; a flood of client ids must not grow the
# table without bound. Opening one more answers an error naming this limit.
SESSIONS_MAX = 100_000
# A session record larger than this is not one we wrote (4096 outcomes with short errors).
SESSION_RECORD_BYTES_MAX = 4 << 20
# Length of an outcome's error text kept in a session record: enough to tell what was wrong.
SESSION_ERROR_CHARS_MAX = 512
# Bytes of session records (as read or written; the decoded form takes a few times more) the
# state machine's session table may hold from one apply batch to the next. Past it the table
# forgets them at the end of the batch (bytes written count too, so a table that keeps its
# clients still starts again now and then: a bound, not an exact size).
SESSIONS_HELD_BYTES_MAX = 4 << 20
# Depth of a session record's CBOR: [last_ms, low, [[seq, index, outcome, error]], opened].
SESSION_RECORD_DEPTH_MAX = 4

OUTCOMES = ("ok", "conflict", "error")


@dataclass(slots=True)
class Session:
    last_ms: int
    low: int
    seqs: dict[int, tuple[int, str, str]] = field(default_factory=dict)  # seq -> (index, out, err)
    opened: int = 0  # the index of the "open" entry that started it: the session's id
    refused: int = 0  # rules 2: the highest seq refused at SESSION_SEQS_MAX (0: none)

    def copy(self) -> Session:
        return Session(self.last_ms, self.low, dict(self.seqs), self.opened, self.refused)

    def opened_seq(self) -> int | None:
        """The seq of the "open" that created this session, while its outcome is recorded
        (None once seq_low passed it: every seq still accepted is then above it)."""
        for seq, (index, _outcome, _error) in self.seqs.items():
            if index == self.opened:
                return seq
        return None

    def forget_below(self, low: int) -> None:
        """The client has been answered every seq below `low`: stop remembering them."""
        if low > self.low:
            self.low = low
            for seq in [seq for seq in self.seqs if seq < low]:
                del self.seqs[seq]


# Of one client: seq -> (the recorded outcome tuple, the CBOR of [seq, *that tuple]).
ItemBytes = dict[int, tuple[tuple[int, str, str], bytes]]


def encode_session(session: Session, known: ItemBytes | None = None) -> bytes:
    """The record's bytes: `cbor2.dumps([last_ms, seq_low, [[seq, index, outcome, error],
    ...], opened(, refused)])`, the same bytes, put together from cbor2's bytes of its parts
    (a CBOR array is its head and then its items' bytes, each item's bytes its own).

    cbor2 asks `isinstance(x, collections.abc.Mapping)` of every list it writes, through
    `ABCMeta.__instancecheck__` in Python (~0.3 us each): a record of 16 outcomes awaiting
    seq_low cost ~11 us, and it is written after every batch its client wrote in
    (docs/data-model-v2.md 8.19). `known`: the item bytes of the client's record last written
    (SessionTable keeps them), used for each item whose outcome tuple is the very object
    encoded then (a tuple of an int and two str never changes, so the bytes are still its
    bytes); updated in place to this record's items."""
    seqs = session.seqs
    if known is None:
        known = {}
    # Two flat arrays' bytes less their one-byte heads (2 or 3 items: a head of one byte):
    # the ints before the outcomes, and after them.
    if session.refused:
        parts = [b"\x85", cbor2.dumps([session.last_ms, session.low])[1:]]
        tail = cbor2.dumps([session.opened, session.refused])[1:]
    else:
        parts = [b"\x84", cbor2.dumps([session.last_ms, session.low])[1:]]
        tail = cbor2.dumps([session.opened])[1:]
    parts.append(_array_head(len(seqs)))
    for seq in sorted(seqs):
        value = seqs[seq]
        hit = known.get(seq)
        if hit is not None and hit[0] is value:
            parts.append(hit[1])
            continue
        item = cbor2.dumps([seq, value[0], value[1], value[2]])
        known[seq] = (value, item)
        parts.append(item)
    if len(known) > len(seqs):  # seqs forgotten below seq_low since: their bytes go too
        for seq in [seq for seq in known if seq not in seqs]:
            del known[seq]
    parts.append(tail)
    return b"".join(parts)


def _array_head(count: int) -> bytes:
    """The head cbor2 writes for an array of `count` items (the shortest: RFC 8949 4.2.1).
    A record holds at most SESSION_SEQS_MAX outcomes; the larger heads keep it exact anyway."""
    if count < 24:
        return bytes((0x80 + count,))
    if count < 0x100:
        return bytes((0x98, count))
    if count < 0x10000:
        return b"\x99" + count.to_bytes(2, "big")
    if count < 0x1_0000_0000:
        return b"\x9a" + count.to_bytes(4, "big")
    return b"\x9b" + count.to_bytes(8, "big")


def decode_session(data: bytes) -> Session:
    """A session record; ProtocolError if the bytes are not one (e.g. a garbled snapshot)."""
    if len(data) > SESSION_RECORD_BYTES_MAX:
        raise ProtocolError(
            f"session record is {len(data)} bytes, above SESSION_RECORD_BYTES_MAX="
            f"{SESSION_RECORD_BYTES_MAX}"
        )
    try:
        value: Any = loads_plain(data, SESSION_RECORD_DEPTH_MAX)
    except ProtocolError as exc:
        raise ProtocolError(f"session record: {exc}") from None
    if not (
        type(value) is list
        and len(value) in (3, 4, 5)
        and type(value[0]) is int
        and type(value[1]) is int
        and type(value[2]) is list
        and len(value[2]) <= SESSION_SEQS_MAX
        and all(type(field) is int and field >= 0 for field in value[3:])
    ):
        raise ProtocolError(
            "session record is not [last_ms, seq_low, [[seq, index, outcome, error]], opened, "
            "refused]"
        )
    session = Session(last_ms=value[0], low=value[1], opened=value[3] if len(value) >= 4 else 0)
    if len(value) == 5:
        session.refused = value[4]
    for item in value[2]:
        if not (
            type(item) is list
            and len(item) == 4
            and type(item[0]) is int
            and type(item[1]) is int
            and item[2] in OUTCOMES
            and type(item[3]) is str
        ):
            raise ProtocolError(f"session record holds a malformed outcome: {describe(item)}")
        session.seqs[item[0]] = (item[1], item[2], item[3])
    return session


class SessionTable:
    """The `sessions` db seen through one write transaction, for one apply batch.

    Each client's record is decoded at its first use in the batch and encoded once, by
    `flush()`, at the batch's end (a record decoded and re-encoded for every write was 12% of
    a follower's CPU). Within the batch the table reads exactly as the db would if every put
    and delete had gone straight to it: `get` hands out a copy (an entry that changes its
    session and then refuses, e.g. at SESSION_SEQS_MAX, leaves the stored one as it was),
    `count` adds the pending inserts and deletes, and `sweep` flushes before it scans. So the
    store and every outcome are the same however the entries are cut into batches
    (tests/unit/test_apply_batches.py). A batch that raises is not flushed: its write
    transaction aborts.

    The state machine carries the table into the next batch (`carry_to`) when that batch
    starts where this one ended (the records it holds are then the stored ones; the same rule
    as its record cache), so a client writing in every batch is decoded once, not per batch.
    What it holds across batches is bounded by SESSIONS_HELD_BYTES_MAX."""

    def __init__(self, txn: lmdb.Transaction, db: Any, ttl_ms: int) -> None:
        assert ttl_ms >= 1, ttl_ms
        self.txn = txn
        self.db = db
        self.ttl_ms = ttl_ms
        # key -> the record as this batch has it (None: absent); a Session here is never
        # handed out, only copies of it.
        self._held: dict[bytes, Session | None] = {}
        self._stored: dict[bytes, bool] = {}  # key -> whether the db holds it (before flush)
        self._changed: set[bytes] = set()
        self._bytes = 0  # bytes of the records held (as read or last written)
        # key -> the item encodings of the record last written (encode_session's `known`):
        # at most the items of the records held, so bounded with them.
        self._item_bytes: dict[bytes, ItemBytes] = {}

    def carry_to(self, txn: lmdb.Transaction) -> SessionTable:
        """This table for the next batch's transaction (nothing pending: it was flushed)."""
        assert not self._changed
        self.txn = txn
        return self

    def get(self, client: str, now_ms: int) -> Session | None:
        """The live session of `client` (a copy the caller may change); an expired one is
        deleted here and reads as absent, so expiry is exact at log time `now_ms` whatever the
        periodic sweep did."""
        key = client.encode()
        if key in self._held:
            session = self._held[key]
        else:
            raw = record_get(self.txn, self.db, "sessions", key)
            session = None if raw is None else decode_session(raw)
            self._held[key] = session
            self._stored[key] = raw is not None
            self._bytes += 0 if raw is None else len(raw)
        if session is None:
            return None
        if self.expired(session, now_ms):
            self._set(key, None)
            return None
        return session.copy()

    def expired(self, session: Session, now_ms: int) -> bool:
        return now_ms - session.last_ms > self.ttl_ms

    def count(self) -> int:
        """Live and expired-but-not-yet-swept records, this batch's changes included."""
        count = int(self.txn.stat(self.db)["entries"])
        for key in self._changed:
            count += (self._held[key] is not None) - self._stored[key]
        return count

    def put(self, client: str, session: Session) -> None:
        self.adopt(client, session.copy())

    def adopt(self, client: str, session: Session) -> None:
        """`put` without the copy: the caller hands `session` over (one `get` returned it)
        and never reads or changes it again (the apply's every write; a copy was ~1.5%)."""
        assert len(session.seqs) <= SESSION_SEQS_MAX, len(session.seqs)
        self._set(client.encode(), session)

    def delete(self, client: str) -> None:
        self._set(client.encode(), None)

    def _set(self, key: bytes, session: Session | None) -> None:
        if key not in self._stored:
            self._stored[key] = self.txn.get(key, db=self.db) is not None
        self._held[key] = session
        self._changed.add(key)

    def flush(self) -> None:
        """Writes this batch's changes into the transaction (each changed record once)."""
        for key in sorted(self._changed):
            session = self._held[key]
            if session is None:
                self.txn.delete(key, db=self.db)
                self._item_bytes.pop(key, None)
            else:
                known = self._item_bytes.get(key)
                if known is None:
                    known = self._item_bytes[key] = {}
                data = encode_session(session, known)
                record_put(self.txn, self.db, key, data)
                self._bytes += len(data)
            self._stored[key] = session is not None
        self._changed.clear()
        if self._bytes > SESSIONS_HELD_BYTES_MAX:
            self._forget()

    def _forget(self) -> None:
        """Drops what the table holds (only once flushed: nothing pending is lost)."""
        self._held.clear()
        self._stored.clear()
        self._item_bytes.clear()
        self._bytes = 0

    def sweep(self, now_ms: int) -> int:
        """Deletes every session idle longer than the ttl at log time `now_ms`; returns how many.
        Bounded by the table size (at most SESSIONS_MAX records plus the ones being opened)."""
        self.flush()
        expired: list[bytes] = []
        for scanned, (key, value) in enumerate(records(self.txn, self.db, "sessions")):
            assert scanned <= 2 * SESSIONS_MAX, "sessions table beyond SESSIONS_MAX"
            if self.expired(decode_session(value), now_ms):
                expired.append(bytes(key))
        for key in expired:
            self.txn.delete(key, db=self.db)
        # What the batch held of them is gone with them: read them again if asked.
        self._forget()
        return len(expired)


def clip_error(error: str) -> str:
    return (
        error
        if len(error) <= SESSION_ERROR_CHARS_MAX
        else error[: SESSION_ERROR_CHARS_MAX - 3] + "..."
    )
