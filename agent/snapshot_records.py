"""Peer snapshots of a format-3 store (docs/data-model-v2.md section 5): the raw records of
every state-machine db, shipped as chunks `[part, last, [[db, key, value], ...]]` and staged by
the follower, each record validated by its db's layout (agent/records.py) before it is stored.

`db` is one letter: `m` sm_meta, `s` sessions, `i` oids, `n` nodes, `e` entries, `q` order,
`c` chunks, `t` tombs, `k` oid_marks (rules 3: agent/oidmarks.py; last, and empty below rules 3,
so a snapshot of a store that never ran rules 3 is what it was before). Values travel unsealed
(verified when read at the sender, sealed anew by the receiver under the same key), so a
checksum never depends on the other agent's store, and the follower's installed dbs hold the
same bytes as the leader's.

Staging uses `staging_<name>` for each shipped db and `staging_state` for the part expected
next / the last part seen (storage.STAGING_NEXT / STAGING_DONE). `storage.install_staged`
replaces every shipped db by its staged copy in the Ready's write transaction, so an install
is atomic with the rest of that write (storage.Storage.write); `storage.drop_staged` empties
the staging.

The db handles are found by name on the `Dbs` the caller passes (`dbs.entries`,
`dbs.staging_entries`, ...), so this module does not fix the storage's dataclass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cbor2
import lmdb
from superstatic_agent import oidmarks
from superstatic_agent import records as layout
from superstatic_agent.payload import loads_plain
from superstatic_agent.sealed import seal_each
from superstatic_agent.sessions import decode_session
from superstatic_agent.storage import (
    KEY_APPLIED,
    SNAPSHOT_DB_NAMES,
    STAGING_DONE,
    STAGING_NEXT,
    drop_staged,
    record_get,
    record_put,
    records,
    staged_complete,
)

from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.ops import describe

# The shipped dbs, in the order they are sent: sm_meta first (a follower learns the index
# before anything else), then sessions, then the node dbs.
CHUNK_DBS: dict[str, str] = {
    "m": "sm_meta",
    "s": "sessions",
    "i": "oids",
    "n": "nodes",
    "e": "entries",
    "q": "order",
    "c": "chunks",
    "t": "tombs",
    "k": "oid_marks",
}
SHIPPED_DBS = tuple(CHUNK_DBS.values())
# The same dbs storage.install_staged replaces (and stages as staging_<name>).
assert tuple(name.decode() for name in SNAPSHOT_DB_NAMES) == SHIPPED_DBS, SNAPSHOT_DB_NAMES
# Nesting of a chunk as plain CBOR: [part, last, [[db, key, value], ...]].
CHUNK_DEPTH_MAX = 3
CHUNK_PARTS_MAX = (1 << 63) - 1
# LMDB's key size bound (mdb_env_get_maxkeysize of the default build); a longer key could never
# be stored, so it is refused by name before LMDB would fail on it. Ids are far shorter.
KEY_BYTES_MAX = 511
# sm_meta records of format 3 that hold one int (records.py); the other sm_meta keys are the
# state machine's and are checked to be plain CBOR only.
SM_META_INT_KEYS = frozenset(
    {layout.KEY_NEXT_NID, layout.KEY_TOMB_HORIZON, layout.KEY_TOMB_NEXT_SWEEP}
)
# sm_meta records the state machine reads back with a fixed shape (storage.read_applied, its
# session sweep and its collection trigger unpack them at every entry): ints, or arrays of
# this many ints. A record of another shape would make every later entry raise (a halt).
SM_META_INT_ARRAYS = {KEY_APPLIED: 3, b"gc": 3}
SM_META_LOG_TIME_KEYS = frozenset({b"sweep"})


def _db(dbs: Any, name: str) -> Any:
    return getattr(dbs, name)


def snapshot_chunks(txn: lmdb.Transaction, dbs: Any, chunk_bytes_max: int) -> Iterator[bytes]:
    """A consistent copy of every shipped db from the caller's one read transaction, as chunks
    of about `chunk_bytes_max` bytes (a single larger record makes a larger chunk). Always at
    least one chunk. Corrupt (from storage.records) stops it: a damaged store is never shipped."""
    assert chunk_bytes_max >= 1, chunk_bytes_max
    part = 0
    items: list[list[Any]] = []
    size = 0
    pending: list[list[Any]] | None = None
    for letter, name in CHUNK_DBS.items():
        for key, value in records(txn, _db(dbs, name), name):
            item_bytes = len(key) + len(value) + 8
            if items and size + item_bytes > chunk_bytes_max:
                if pending is not None:
                    yield cbor2.dumps([part, False, pending])
                    part += 1
                pending, items, size = items, [], 0
            items.append([letter, key, value])
            size += item_bytes
    if pending is not None:
        yield cbor2.dumps([part, False, pending])
        part += 1
    yield cbor2.dumps([part, True, items])


def stage_chunk(
    txn: lmdb.Transaction, dbs: Any, chunk: bytes, sm_meta_keys: frozenset[bytes]
) -> None:
    """Stores one received chunk after validating every record in it. Part 0 starts over
    (drops anything staged); other parts must follow in order. `sm_meta_keys`: the sm_meta
    keys the state machine knows. ProtocolError (naming the db and what was wrong, never the
    bytes) on anything malformed; nothing of a refused chunk is staged by the caller's commit
    (the caller aborts its write transaction)."""
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
    # Validated first (each db's run of the chunk at once: records.check_records), then
    # written per db with one putmulti (appended: a db's records are shipped in key order, so
    # each goes past the staged db's end; a key out of order or repeated is refused, not
    # stored).
    runs: list[tuple[str, list[tuple[bytes, bytes]]]] = []
    # No run before the first item: every name is checked at its first item (an initial ""
    # matched an empty name, whose items were then neither checked nor staged).
    run_letter: str | None = None
    run: list[tuple[bytes, bytes]] = []
    for item in items:
        if not (type(item) is list and len(item) == 3):
            raise ProtocolError(f"snapshot chunk item is not [db, key, value]: {describe(item)}")
        letter, key, data = item
        if letter != run_letter or type(letter) is not str:
            if type(letter) is not str or letter not in CHUNK_DBS:
                raise ProtocolError(
                    f"snapshot chunk item names an unknown db {describe(letter)} (known: "
                    f"{' '.join(CHUNK_DBS)})"
                )
            run_letter, run = letter, []
            runs.append((CHUNK_DBS[letter], run))
        if type(key) is not bytes or not 1 <= len(key) <= KEY_BYTES_MAX:
            raise ProtocolError(
                f"snapshot chunk item of db {letter}: the key is 1..KEY_BYTES_MAX="
                f"{KEY_BYTES_MAX} bytes, got {describe(key)}"
            )
        if type(data) is not bytes:
            raise ProtocolError(f"snapshot chunk item of db {letter}: the value is not bytes")
        run.append((key, data))
    for name, records_ in runs:
        check_run(name, records_, sm_meta_keys)
    for name, records_ in runs:
        cursor = txn.cursor(db=_db(dbs, "staging_" + name))
        sealed = seal_each(records_)
        _consumed, added = cursor.putmulti(sealed, append=True)
        if added != len(sealed):
            raise ProtocolError(f"snapshot chunk: keys of db {name} not in ascending order")
    record_put(txn, dbs.staging_state, STAGING_NEXT, (part + 1).to_bytes(8, "big"))
    if last:
        record_put(txn, dbs.staging_state, STAGING_DONE, b"1")


def _is_int64(value: Any) -> bool:
    return type(value) is int and -layout.INT64_MAX - 1 <= value <= layout.INT64_MAX


def check_run(
    name: str, records_: list[tuple[bytes, bytes]], sm_meta_keys: frozenset[bytes]
) -> None:
    """check_item on every record of one db's run of a chunk (node dbs: all at once, as
    records.check_records does; the same records pass and the same first refusal)."""
    if name in ("sm_meta", "sessions", "oid_marks"):
        for key, data in records_:
            check_item(name, key, data, sm_meta_keys)
        return
    layout.check_records("staging_" + name, records_)


def check_item(name: str, key: bytes, data: bytes, sm_meta_keys: frozenset[bytes]) -> None:
    """Validates one shipped record by its db's layout; ProtocolError if it is not ours."""
    if name == "sm_meta":
        if key not in sm_meta_keys:
            raise ProtocolError(f"snapshot holds an unknown sm_meta key of {len(key)} bytes")
        try:
            value = loads_plain(data, CHUNK_DEPTH_MAX)
        except ProtocolError as exc:
            raise ProtocolError(f"snapshot sm_meta {key.decode()}: {exc}") from None
        if key in SM_META_INT_KEYS and not (type(value) is int and 0 <= value <= layout.INT64_MAX):
            raise ProtocolError(f"snapshot sm_meta {key.decode()} is not an int in 0..2**63-1")
        if key in SM_META_LOG_TIME_KEYS and not _is_int64(value):
            raise ProtocolError(f"snapshot sm_meta {key.decode()} is not a 64-bit int")
        count = SM_META_INT_ARRAYS.get(key)
        if count is not None and not (
            type(value) is list and len(value) == count and all(_is_int64(x) for x in value)
        ):
            raise ProtocolError(f"snapshot sm_meta {key.decode()} is not an array of {count} ints")
        return
    if name == "sessions":
        try:
            key.decode()
        except UnicodeDecodeError:
            raise ProtocolError("snapshot session key is not utf-8") from None
        decode_session(data)
        return
    if name == "oid_marks":
        oidmarks.check_record(key, data)
        return
    # records.RecordInvalid is a ProtocolError naming the db and the key's parts.
    layout.check_record("staging_" + name, key, data)
