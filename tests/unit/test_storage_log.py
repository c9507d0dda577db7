"""Storage over its own Raft log (format 5, docs/data-model-v2.md 8.18): the log in raftlog/
beside LMDB, reopened after writes, truncation, compaction and a snapshot install; the crash
window between an install's LMDB commit and the log's reset; the move of a format-3 store's
log by --migrate; a damaged segment and an old store refused with what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from superstatic_agent import migrate
from superstatic_agent.logsegments import SegmentLog
from superstatic_agent.raft.types import (
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    SnapshotMeta,
)
from superstatic_agent.storage import (
    FORMAT_OWN_LOG,
    KEY_FORMAT,
    LOG_DIR,
    StartRefused,
    Storage,
    encode_conf,
    encode_entry,
    encode_snapshot_meta,
    index_key,
    read_applied,
    record_get,
    record_put,
)
from test_storage import CONF, Agent, noops, ready

# Small segments, so that a few hundred entries span several and compaction deletes some.
SEGMENT_BYTES = 64 << 10
MAP_BYTES = 64 << 20


class SmallAgent(Agent):
    """test_storage's Agent on a log of SEGMENT_BYTES segments."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        original = Storage.__init__

        def small(self_: Storage, p: Path, **kw: Any) -> None:
            original(self_, p, **kw, log_segment_bytes=SEGMENT_BYTES)

        Storage.__init__ = small  # type: ignore[method-assign]
        try:
            super().__init__(path, fsync=fsync)
        finally:
            Storage.__init__ = original  # type: ignore[method-assign]


def padded(lo: int, hi: int, term: int = 1, size: int = 1_000) -> list[Entry]:
    return [Entry(i, term, EntryKind.NOOP, bytes([i % 251]) * size) for i in range(lo, hi + 1)]


def segments(path: Path) -> list[str]:
    # Segments only: the log's spare (spare-*.new, made ahead by its thread) is none.
    return sorted(p.name for p in (path / LOG_DIR).glob("*.seg"))


def test_a_fresh_store_is_format_5_with_its_log_beside_it(tmp_path: Path) -> None:
    a = SmallAgent(tmp_path / "a")
    try:
        with a.storage.env.begin() as txn:
            assert cbor2.loads(record_get(txn, a.storage.dbs.meta, "meta", KEY_FORMAT)) == 5
        a.storage.write(ready(entries=tuple(noops(1, 2))), None)
        assert segments(tmp_path / "a") == ["0000000000000001.seg"]
        assert (tmp_path / "a" / LOG_DIR / "0000000000000001.seg").stat().st_size == SEGMENT_BYTES
    finally:
        a.close()


def test_load_after_writes_across_segments(tmp_path: Path) -> None:
    a = SmallAgent(tmp_path / "a")
    entries = padded(1, 200)
    try:
        for lo in range(1, 201, 20):
            a.storage.write(
                ready(hard_state=HardState(3, "b", 0), entries=tuple(entries[lo - 1 : lo + 19])),
                None,
            )
        assert len(segments(tmp_path / "a")) > 2
        assert a.storage.entries(150, 160, 1 << 20) == entries[149:159]
    finally:
        a.close()
    b = SmallAgent(tmp_path / "a")
    try:
        loaded = b.storage.load()
        assert loaded.entries == entries and loaded.hard_state == HardState(3, "b", 0)
        assert b.storage.term_vote_durable == (3, "b")
    finally:
        b.close()


def test_truncation_then_reopen(tmp_path: Path) -> None:
    a = SmallAgent(tmp_path / "a")
    try:
        a.persist_and_apply(padded(1, 120), commit=2)
        a.persist_and_apply(padded(5, 6, term=2), commit=2)  # cuts 5..120
        a.persist_and_apply(padded(7, 7, term=2), commit=2)
    finally:
        a.close()
    b = SmallAgent(tmp_path / "a")
    try:
        assert b.storage.load().entries == [*padded(1, 4), *padded(5, 7, term=2)]
        assert b.storage.entries(5, 100, 1 << 20) == padded(5, 7, term=2)
    finally:
        b.close()


def test_compaction_deletes_segments_then_reopen(tmp_path: Path) -> None:
    a = SmallAgent(tmp_path / "a")
    change = ConfChange("add_learner", "d", "tcp://d")
    history = [*padded(1, 9), Entry(10, 1, EntryKind.CONF, change.encode()), *padded(11, 200)]
    try:
        a.persist_and_apply(history, commit=200)
        before = segments(tmp_path / "a")
        meta = a.storage.compact(150)
        assert meta is not None and meta.index == 150 and meta.term == 1
        assert "d" in dict(meta.conf.addresses), "the conf in force replays CONF entries"
        after = segments(tmp_path / "a")
        assert len(after) < len(before) and after[-1] == before[-1]
        assert a.storage.first_index() == 151
        with pytest.raises(Exception, match="compacted"):
            a.storage.entries(150, 160, 1 << 20)
        assert [e[0] for e in a.storage.events(151, 5, 1 << 20)] == [151, 152, 153, 154, 155]
        a.persist_and_apply(padded(201, 210), commit=205)
    finally:
        a.close()
    b = SmallAgent(tmp_path / "a")
    try:
        loaded = b.storage.load()
        assert loaded.snapshot == meta
        # Entries at or below the snapshot the kept segments still hold are not loaded.
        assert loaded.entries == padded(151, 210) and loaded.applied == 205
        assert b.storage.first_index() == 151
    finally:
        b.close()


def _staged_target(tmp_path: Path) -> tuple[Agent, Agent, SnapshotMeta]:
    """A source at index 10 and a target that staged its snapshot, holding entries 1..2."""
    source = Agent(tmp_path / "source")
    target = SmallAgent(tmp_path / "target")
    source.persist_and_apply(noops(1, 10), commit=10)
    target.persist_and_apply(noops(1, 2), commit=2)
    with source.storage.env.begin() as txn:
        chunks = list(source.sm.snapshot_chunks(txn, 64))
    with target.storage.env.begin(write=True) as txn:
        for chunk in chunks:
            target.sm.stage_chunk(txn, chunk)
    return source, target, SnapshotMeta(10, 1, CONF)


def test_snapshot_install_resets_the_log_then_reopen(tmp_path: Path) -> None:
    source, target, meta = _staged_target(tmp_path)
    try:
        target.storage.write(
            ready(hard_state=HardState(1, "a", 10), snapshot=meta, entries=tuple(noops(11, 12))),
            None,
        )
        assert target.storage.first_index() == 11
        assert target.storage.entries(11, 20, 1 << 20) == noops(11, 12)
    finally:
        source.close()
        target.close()
    again = SmallAgent(tmp_path / "target")
    try:
        loaded = again.storage.load()
        assert loaded.snapshot == meta and loaded.applied == 10
        assert loaded.entries == noops(11, 12)
    finally:
        again.close()


class Crash(BaseException):
    """Stands for the process dying at this point (a kill -9: LMDB's commit is kept)."""


@pytest.mark.parametrize(
    "old_log",
    [
        "shorter",  # the log ends below the snapshot's index
        "other_term",  # the log passes it, of another term at its index: a divergent suffix
        "same_term",  # the log holds the snapshot's entry: Raft may keep what follows it
    ],
)
def test_a_crash_between_the_install_and_the_log_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old_log: str
) -> None:
    """8.16 (f): LMDB's install commits (and syncs) first, then the log resets. A crash between
    the two leaves LMDB at the snapshot and the old log: the open must never serve entries of
    the old log that do not extend the snapshot, nor lose the term and vote."""
    source, target, meta = _staged_target(tmp_path)
    try:
        if old_log == "other_term":
            # Uncommitted entries 3..14 of term 2 (the snapshot's entry 10 is of term 1).
            target.storage.write(
                ready(hard_state=HardState(2, "c", 2), entries=tuple(noops(3, 14, term=2))), None
            )
        elif old_log == "same_term":
            target.storage.write(
                ready(hard_state=HardState(2, "c", 2), entries=tuple(noops(3, 14))), None
            )
        else:
            target.storage.write(ready(hard_state=HardState(2, "c", 2)), None)

        def crash(after_index: int) -> None:
            raise Crash

        monkeypatch.setattr(target.storage.log, "reset", crash)
        with pytest.raises(Crash):
            target.storage.write(ready(hard_state=HardState(2, "c", 10), snapshot=meta), None)
        monkeypatch.undo()
        # Not closed: the process died. The environment handle is dropped with it.
        target.storage.log.close()
        target.storage.env.close()
    finally:
        source.close()
    again = SmallAgent(tmp_path / "target")
    try:
        loaded = again.storage.load()
        assert loaded.snapshot == meta and loaded.applied == 10
        assert loaded.hard_state is not None and loaded.hard_state.vote == "c"
        assert again.storage.first_index() == 11
        if old_log == "same_term":
            assert loaded.entries == noops(11, 14)
        else:
            assert loaded.entries == []
            assert again.storage.log.base == 10, "reset at the open"
        again.persist_and_apply(noops(11, 11, term=3), commit=11)
        assert again.storage.load().entries[0] == noops(11, 11, term=3)[0]
    finally:
        again.close()


def test_a_damaged_segment_is_refused_with_what_to_do(tmp_path: Path) -> None:
    a = SmallAgent(tmp_path / "a")
    try:
        a.persist_and_apply(padded(1, 100), commit=100)
        first = a.storage.log.places[0]
        segment, offset = first.segment.path, first.offset
    finally:
        a.close()
    with segment.open("r+b") as file:  # a flipped bit inside entry 1's (flushed) record
        file.seek(offset + 40)
        byte = file.read(1)[0]
        file.seek(offset + 40)
        file.write(bytes([byte ^ 0x10]))
    with pytest.raises(StartRefused, match=r"damaged.*add it back as a learner"):
        SmallAgent(tmp_path / "a")


def test_applied_past_the_log_is_refused(tmp_path: Path) -> None:
    """The log's flush comes before the apply's commit: LMDB ahead of the log is never ours
    (here: the log's folder swapped for an older copy of itself)."""
    a = SmallAgent(tmp_path / "a")
    try:
        a.storage.write(ready(entries=tuple(noops(1, 2))), None)
    finally:
        a.close()
    old = tmp_path / "old-log"
    (tmp_path / "a" / LOG_DIR).rename(old)
    (tmp_path / "a" / LOG_DIR).mkdir()
    for p in old.iterdir():
        (tmp_path / "a" / LOG_DIR / p.name).write_bytes(p.read_bytes())
    b = SmallAgent(tmp_path / "a")
    try:
        b.persist_and_apply(noops(3, 5), commit=5)
    finally:
        b.close()
    import shutil

    shutil.rmtree(tmp_path / "a" / LOG_DIR)
    old.rename(tmp_path / "a" / LOG_DIR)
    c = SmallAgent(tmp_path / "a")
    try:
        with pytest.raises(StartRefused, match="applied up to index 5 but its Raft log ends at 2"):
            c.storage.load()
    finally:
        c.close()


def test_a_log_without_its_store_is_refused(tmp_path: Path) -> None:
    a = SmallAgent(tmp_path / "a")
    try:
        a.storage.write(ready(hard_state=HardState(4, "a", 0)), None)
    finally:
        a.close()
    for name in ("data.mdb", "lock.mdb"):
        (tmp_path / "a" / name).unlink()
    with pytest.raises(StartRefused, match="holds a Raft log"):
        SmallAgent(tmp_path / "a")


# ------------------------------------------------------------------ from format 3


def write_format3_store(path: Path, *, snapshot_index: int, last: int) -> list[Entry]:
    """A store as the previous agent left it: format 3, the log in LMDB's `log` db, the term,
    vote and commit in meta `hard`, compacted at `snapshot_index` (entries at or below it
    gone, as that agent's compaction deleted them), applied up to `snapshot_index`."""
    env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=migrate.MIGRATE_DBS_MAX)
    entries = [Entry(i, 2, EntryKind.NOOP, b"e%d" % i) for i in range(snapshot_index + 1, last + 1)]
    try:
        meta = env.open_db(b"meta")
        log_db = env.open_db(b"log")
        sm_meta = env.open_db(b"sm_meta")
        with env.begin(write=True) as txn:
            record_put(txn, meta, KEY_FORMAT, cbor2.dumps(3))
            record_put(txn, meta, b"hard", cbor2.dumps([2, "b", last - 1]))
            record_put(txn, meta, b"conf", cbor2.dumps(encode_conf(CONF)))
            record_put(txn, meta, b"conf0", cbor2.dumps(encode_conf(CONF)))
            if snapshot_index:
                snap = SnapshotMeta(snapshot_index, 2, CONF)
                record_put(txn, meta, b"snap", encode_snapshot_meta(snap))
            record_put(txn, sm_meta, b"applied", cbor2.dumps([snapshot_index, 2, 0]))
            for entry in entries:
                record_put(txn, log_db, index_key(entry.index), encode_entry(entry))
    finally:
        env.close()
    return entries


def test_a_format_3_store_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    write_format3_store(tmp_path / "old", snapshot_index=0, last=3)
    with pytest.raises(StartRefused, match=r"format 3.*superstatic-agent --migrate --data-dir"):
        Storage(tmp_path / "old", map_bytes=MAP_BYTES)


@pytest.mark.parametrize("snapshot_index", [0, 40])
def test_migrate_moves_a_format_3_log_into_raftlog(tmp_path: Path, snapshot_index: int) -> None:
    path = tmp_path / "old"
    entries = write_format3_store(path, snapshot_index=snapshot_index, last=snapshot_index + 25)
    done = migrate.migrate(path, map_bytes=MAP_BYTES, log_segment_bytes=SEGMENT_BYTES)
    assert done.log_entries == 25 and not done.already
    assert migrate.migrate(path, map_bytes=MAP_BYTES).already
    storage = Storage(path, map_bytes=MAP_BYTES)
    try:
        assert storage.log.segment_bytes == SEGMENT_BYTES, "the size stored with the log"
        loaded = storage.load()
        assert loaded.entries == entries
        assert loaded.hard_state == HardState(2, "b", snapshot_index)
        assert loaded.conf == CONF and loaded.applied == snapshot_index
        assert storage.first_index() == snapshot_index + 1
        with storage.env.begin() as txn:
            assert read_applied(txn, storage.dbs)[0] == snapshot_index
            assert record_get(txn, storage.dbs.meta, "meta", b"hard") is None
        assert b"log" not in _db_names(storage.env)
    finally:
        storage.close()


def _db_names(env: lmdb.Environment) -> set[bytes]:
    with env.begin() as txn:
        return {bytes(key) for key, _ in txn.cursor()}


def test_an_interrupted_log_move_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after raftlog/ was written but before LMDB's commit: the store is still format 3
    (refused by the agent), and the next --migrate writes the log again."""
    path = tmp_path / "old"
    entries = write_format3_store(path, snapshot_index=0, last=7)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    monkeypatch.setattr(migrate, "_fsync_dir", crash)
    with pytest.raises(Crash):
        migrate.migrate(path, map_bytes=MAP_BYTES, log_segment_bytes=SEGMENT_BYTES)
    monkeypatch.undo()
    assert (path / LOG_DIR).exists()
    with pytest.raises(StartRefused, match="--migrate"):
        Storage(path, map_bytes=MAP_BYTES)
    # A stray segment the interrupted run left must not survive into the new log.
    SegmentLog(
        path / LOG_DIR, segment_bytes=SEGMENT_BYTES, unsynced_bytes_max=SEGMENT_BYTES
    ).close()
    assert migrate.migrate(path, map_bytes=MAP_BYTES).log_entries == 7
    storage = Storage(path, map_bytes=MAP_BYTES)
    try:
        assert storage.load().entries == entries
        with storage.env.begin() as txn:
            raw = record_get(txn, storage.dbs.meta, "meta", KEY_FORMAT)
            assert raw is not None and cbor2.loads(raw) == FORMAT_OWN_LOG
    finally:
        storage.close()


def test_a_power_loss_during_compaction_loses_no_entry_lmdb_still_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8.16 (a): the apply's commits are not synced (MDB_NOMETASYNC), so a power loss may take
    LMDB back to its last `env.sync`; compaction syncs LMDB BEFORE the log deletes segments.
    Here the power fails at that sync: LMDB comes back as of its previous sync (applied 0, no
    snapshot) and every entry it must apply again is still in the log."""
    path = tmp_path / "a"
    a = SmallAgent(path)
    images: list[bytes] = []
    original_sync = Storage.sync

    def imaged_sync(self_: Storage) -> None:
        original_sync(self_)
        images.append((path / "data.mdb").read_bytes())  # what a power loss keeps

    monkeypatch.setattr(Storage, "sync", imaged_sync)
    try:
        a.persist_and_apply(padded(1, 5), commit=0)  # conf stored: LMDB synced (applied 0)
        durable = images[-1]
        a.persist_and_apply(padded(6, 200), commit=200, conf=None)  # applied, not synced
        assert len(segments(path)) > 2

        def power_fails(self_: Storage) -> None:
            raise Crash

        monkeypatch.setattr(Storage, "sync", power_fails)
        with pytest.raises(Crash):
            a.storage.compact(150)
        monkeypatch.undo()
        a.storage.log.close()
        a.storage.env.close()
    finally:
        monkeypatch.undo()
    (path / "data.mdb").write_bytes(durable)
    b = SmallAgent(path)
    try:
        loaded = b.storage.load()
        assert loaded.applied == 0 and loaded.snapshot is None
        assert loaded.entries == padded(1, 200), "the log still holds what LMDB must apply again"
    finally:
        b.close()
