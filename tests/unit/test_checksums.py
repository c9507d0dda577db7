"""Checksums on every stored record, the format version, the scrub at start and the repairs
(issue 8, item 7 and reproduction 8). Real LMDB in temporary directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Role,
    SnapshotMeta,
)
from superstatic_agent.records import Header, nid_key
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import (
    DBS_MAX,
    KEY_FORMAT,
    Corrupt,
    Dbs,
    StartRefused,
    Storage,
    index_key,
    seal,
    unseal,
)
from support.sessions import SESSION_PLACED, place_session

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

CONF = ConfState.make(("a", "b", "c"), (), {"a": "tcp://h:1", "b": "tcp://h:2", "c": "tcp://h:3"})


def test_seal_detects_any_changed_byte_and_a_moved_record() -> None:
    key, value = b"c.1", b"\x83\x05dlist\x81x\x10hello, checksums"
    sealed = seal(key, value)
    assert unseal("objects", key, sealed) == value
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            damaged = bytearray(sealed)
            damaged[i] ^= bit
            with pytest.raises(Corrupt):
                unseal("objects", key, bytes(damaged))
    with pytest.raises(Corrupt, match=r"'c\.2'"):
        unseal("objects", b"c.2", sealed)  # the right bytes under another key
    with pytest.raises(Corrupt):
        unseal("objects", key, b"\x00\x01")


def entry(index: int, wire_ops: list[Any], term: int = 1) -> Entry:
    body = ops.encode_txn({}, wire_ops)
    data = encode_payload(Payload("txn", "cl", index, 0, 1_000, body, SESSION_PLACED))
    return Entry(index, term, EntryKind.NORMAL, data)


class Agent:
    """Storage + state machine as the server wires them, without the server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.storage = Storage(path, fsync=False, map_bytes=64 << 20)
        self.sm = StateMachine(self.storage.env)
        # As the server does: an installed snapshot swaps the tables under the state machine.
        self.storage.on_dbs = self._tables_swapped
        with self.storage.env.begin() as txn:
            fresh = txn.get(b"cl", db=self.storage.dbs.sessions) is None
        if fresh:
            place_session(self.storage.env, "cl")  # what an "open" entry would have made

    def _tables_swapped(self, dbs: Dbs) -> None:
        self.sm.dbs = dbs

    def write(self, entries: list[Entry], commit: int | None = None) -> None:
        commit = entries[-1].index if commit is None else commit
        ready = Ready(
            hard_state=HardState(1, "a", commit),
            entries=tuple(entries),
            snapshot=None,
            messages=(),
            committed=tuple(e for e in entries if e.index <= commit),
            read_states=(),
            role=Role.FOLLOWER,
            leader="a",
            term=1,
        )
        self.storage.write(ready, lambda txn: self.sm.apply_batch(txn, ready.committed), conf=CONF)

    def close(self) -> None:
        self.storage.close()


def fill(path: Path) -> Agent:
    a = Agent(path)
    a.write(
        [
            entry(1, [["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", []]]),
            entry(2, [["extend", "c.1", ["known value"]]]),
        ]
    )
    return a


def header_key(path: Path, oid: str) -> bytes:
    """The nodes-db key of a node's header (its nid, from the oids db)."""
    env = lmdb.open(str(path), max_dbs=DBS_MAX, map_size=64 << 20)
    try:
        with env.begin() as txn:
            handle = env.open_db(b"oids", txn=txn, create=False)
            return unseal("oids", oid.encode(), txn.get(oid.encode(), db=handle))
    finally:
        env.close()


def damage(path: Path, db: str, key: bytes) -> None:
    """Replaces the stored bytes of one record by a copy with one bit flipped."""
    env = lmdb.open(str(path), max_dbs=DBS_MAX, map_size=64 << 20)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db.encode(), txn=txn, create=False)
            raw = bytearray(txn.get(key, db=handle))
            raw[len(raw) // 2] ^= 0x04
            txn.put(key, bytes(raw), db=handle)
    finally:
        env.close()


def test_a_fresh_store_records_its_format_and_an_old_one_is_refused(tmp_path: Path) -> None:
    fill(tmp_path / "new").close()
    with pytest.raises(StartRefused, match="format 1"):
        old = tmp_path / "old"
        old.mkdir()
        env = lmdb.open(str(old), max_dbs=16, map_size=64 << 20)
        with env.begin(write=True) as txn:
            log_db = env.open_db(b"log", txn=txn)
            txn.put(index_key(1), cbor2.dumps([1, 0, b"x"]), db=log_db)
        env.close()
        Storage(old, fsync=False)
    other = fill(tmp_path / "other")
    with other.storage.env.begin(write=True) as txn:
        txn.put(KEY_FORMAT, seal(KEY_FORMAT, cbor2.dumps(7)), db=other.storage.dbs.meta)
    other.close()
    with pytest.raises(StartRefused, match="format 7"):
        Storage(tmp_path / "other", fsync=False)


def test_a_store_of_data_model_1_is_refused_saying_how_to_migrate(tmp_path: Path) -> None:
    other = fill(tmp_path / "v1")
    with other.storage.env.begin(write=True) as txn:
        txn.put(KEY_FORMAT, seal(KEY_FORMAT, cbor2.dumps(2)), db=other.storage.dbs.meta)
    other.close()
    with pytest.raises(StartRefused) as refused:
        Storage(tmp_path / "v1", fsync=False)
    message = str(refused.value)
    assert "format 2" in message and "data model v1" in message
    assert f"--migrate --data-dir {tmp_path / 'v1'}" in message and "format2-backup" in message


def test_a_damaged_object_is_never_read_as_data(tmp_path: Path) -> None:
    fill(tmp_path / "a").close()
    damage(tmp_path / "a", "nodes", header_key(tmp_path / "a", "c.1"))
    a = Agent(tmp_path / "a")
    try:
        with pytest.raises(Corrupt, match="nodes"):
            a.write([entry(3, [["extend", "c.1", ["more"]]])])
        with a.storage.env.begin() as txn, pytest.raises(Corrupt):
            a.sm.node_json(txn, "l")
        _, nodes = a.storage.object_snapshot()
        with pytest.raises(Corrupt):
            list(nodes)
        with a.storage.env.begin() as txn, pytest.raises(Corrupt):
            list(a.sm.snapshot_chunks(txn, 1 << 20))
        assert a.storage.load().applied == 2  # the failed write left nothing
    finally:
        a.close()


def test_damaged_state_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    fill(tmp_path / "a").close()
    damage(tmp_path / "a", "nodes", header_key(tmp_path / "a", "c.1"))
    damage(tmp_path / "a", "sessions", b"cl")
    a = Agent(tmp_path / "a")
    try:
        scrubbed = a.storage.scrub()
        assert scrubbed.damaged_count == 2 and {db for db, _ in scrubbed.damaged} == {
            "nodes",
            "sessions",
        }
        action = a.storage.repair(scrubbed, peers_exist=False)  # no peer needed
        assert "applies again from index 1" in action
        assert a.storage.scrub().damaged_count == 0
        loaded = a.storage.load()
        assert (loaded.applied, [e.index for e in loaded.entries]) == (0, [1, 2])
        # The commit index is not stored (format 5): what was applied, here nothing.
        assert loaded.hard_state == HardState(1, "a", 0)
        # The core would now hand the log to apply again: the same state comes back. (The
        # client's "open" entry would come first in a real log; its session stands for it.)
        place_session(a.storage.env, "cl")
        with a.storage.env.begin(write=True) as txn:
            a.sm.apply_batch(txn, loaded.entries)
        with a.storage.env.begin() as txn:
            assert a.sm.node_json(txn, "l") == ["known value"]
    finally:
        a.close()


def test_a_damaged_snapshot_meta_empties_the_store_but_term_and_vote(tmp_path: Path) -> None:
    """Format 5: the term and vote are in the log, which the repair keeps (reset to start at
    index 1); LMDB is emptied, and the next open finds the two halves agreeing."""
    a = fill(tmp_path / "a")
    a.write([entry(3, [["extend", "c.1", ["x"]]])])
    assert a.storage.compact(2) is not None
    a.close()
    damage(tmp_path / "a", "meta", b"snap")
    a = Agent(tmp_path / "a")
    try:
        scrubbed = a.storage.scrub()
        assert scrubbed.damaged == (("meta", b"snap"),)
        with pytest.raises(StartRefused, match="no peer"):
            a.storage.repair(scrubbed, peers_exist=False)
        action = a.storage.repair(scrubbed, peers_exist=True)
        assert "no vote until index 3" in action
        loaded = a.storage.load()
        assert loaded.hard_state == HardState(1, "a", 0)  # the vote is remembered
        assert (loaded.applied, loaded.entries, loaded.snapshot, loaded.conf) == (0, [], None, None)
        assert a.storage.repair_until() == 3
        a.storage.repair_done()
        assert a.storage.repair_until() == 0
    finally:
        a.close()
    again = Agent(tmp_path / "a")
    try:
        assert again.storage.load().hard_state == HardState(1, "a", 0)
        assert again.storage.first_index() == 1 and again.storage.scrub().damaged_count == 0
    finally:
        again.close()


def test_a_compacted_store_with_damaged_objects_is_emptied_too(tmp_path: Path) -> None:
    a = fill(tmp_path / "a")
    a.write([entry(3, [["extend", "c.1", ["x"]]])])
    assert a.storage.compact(2) == SnapshotMeta(2, 1, CONF)
    a.close()
    damage(tmp_path / "a", "nodes", header_key(tmp_path / "a", "c.1"))
    b = Agent(tmp_path / "a")
    try:
        action = b.storage.repair(b.storage.scrub(), peers_exist=True)
        assert "no vote until index 3" in action  # the log no longer starts at 1
    finally:
        b.close()


def test_a_damaged_log_refuses_to_start_as_itself(tmp_path: Path) -> None:
    """The log holds the term and vote (format 5): a record damaged where no crash tears one
    leaves this copy unable to know how it voted; it must not rejoin as itself."""
    a = fill(tmp_path / "a")
    place = a.storage.log.places[0]
    a.close()
    with place.segment.path.open("r+b") as file:
        file.seek(place.offset + 24)
        byte = file.read(1)[0]
        file.seek(place.offset + 24)
        file.write(bytes([byte ^ 0x04]))
    with pytest.raises(StartRefused, match="must not rejoin as itself"):
        Agent(tmp_path / "a")


def test_only_a_damaged_staged_snapshot_is_dropped(tmp_path: Path) -> None:
    a = fill(tmp_path / "a")
    with a.storage.env.begin(write=True) as txn:
        header = Header("c.9", "list", 1, 1, 0, [0, 0, 0, 1], 0).encode()
        a.sm.stage_chunk(txn, cbor2.dumps([0, False, [["n", nid_key(9), header]]]))
    a.close()
    damage(tmp_path / "a", "staging_nodes", nid_key(9))
    b = Agent(tmp_path / "a")
    try:
        action = b.storage.repair(b.storage.scrub(), peers_exist=False)
        assert "snapshot" in action
        assert b.storage.scrub().damaged_count == 0 and b.storage.load().applied == 2
    finally:
        b.close()


class _Crash(BaseException):
    """The process dies here."""


def test_a_crash_inside_a_repair_is_repaired_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair resets the log (keeping the term and vote) BEFORE LMDB's emptying commits: a
    crash between the two leaves LMDB as it was (damaged, snapshot at 2) and a log that ends
    below that snapshot, which the open resets to it; the next scrub finds the damage again
    and the repair completes, still withholding the vote up to the last index held before the
    crash (recorded, synced, before the log's reset). (LMDB first could leave no snapshot
    under a compacted log.)"""
    a = fill(tmp_path / "a")
    a.write([entry(3, [["extend", "c.1", ["x"]]])])
    assert a.storage.compact(2) is not None
    a.close()
    damage(tmp_path / "a", "nodes", header_key(tmp_path / "a", "c.1"))
    b = Agent(tmp_path / "a")
    real_reset = b.storage.log.reset

    def reset_then_crash(after_index: int) -> None:
        real_reset(after_index)
        raise _Crash

    monkeypatch.setattr(b.storage.log, "reset", reset_then_crash)
    with pytest.raises(_Crash):
        b.storage.repair(b.storage.scrub(), peers_exist=True)
    monkeypatch.undo()
    b.close()
    c = Agent(tmp_path / "a")
    try:
        scrubbed = c.storage.scrub()
        assert scrubbed.damaged_count == 1
        # The index it held before the crash (3), not what the reset log says (2): it may
        # have acknowledged entry 3, so it must apply it again before it votes.
        assert "no vote until index 3" in c.storage.repair(scrubbed, peers_exist=True)
        assert c.storage.repair_until() == 3
        loaded = c.storage.load()
        assert loaded.hard_state == HardState(1, "a", 0)
        assert (loaded.applied, loaded.entries, loaded.snapshot) == (0, [], None)
    finally:
        c.close()
    d = Agent(tmp_path / "a")
    d.close()
