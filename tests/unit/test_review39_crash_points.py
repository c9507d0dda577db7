"""Review39: a randomized crash test of Storage over its own log (format 5, docs/data-model-v2.md
8.18), at EVERY durability-relevant call of a random workload (appends, truncations, votes,
applies, compactions on 16 KiB-window, 64 KiB segments), with two crash models:

* kill -9: the process stops right before the call; everything written so far (page cache)
  stays, LMDB's committed transactions stay.
* power loss: also right before the call, but only what was flushed stays: each file as of
  its last fsync/fdatasync, the log folder's names as of its last fsync, data.mdb as of the
  last `env.sync` (Storage.sync; pessimistic: MDB_NOMETASYNC keeps all but the last commit).

The model is what was acknowledged: the log, term and vote when `durable()` (the server's
send of the Ready's Raft messages) last ran. After the crash the store must open and load
without refusal; its term and vote must be the acknowledged ones or the in-flight Ready's; its
log the acknowledged one, or the in-flight Ready's whole or cut after some of its records;
applied never past the log, and (kill -9) never below what completed. Then one more Ready and
a reopen (the store must keep working after the crash)."""

from __future__ import annotations

import contextlib
import os
import random
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent.logsegments import SegmentLog
from superstatic_agent.raft.types import Entry, EntryKind, HardState, SnapshotMeta
from superstatic_agent.storage import LOG_DIR, Storage
from test_storage import CONF, Agent, ready

SEGMENT_BYTES = 64 << 10
READIES = 36


class Crash(BaseException):
    """The process dies here."""


@dataclass
class Disk:
    """What a power loss keeps, by inode (files) and the log folder's names."""

    path: Path
    files: dict[int, bytes] = field(default_factory=dict)  # inode -> bytes at its last flush
    names: dict[str, int] = field(default_factory=dict)  # raftlog/ name -> inode, last fsync
    lmdb: bytes | None = None

    def flushed(self, fd: int) -> None:
        st = os.fstat(fd)
        folder = self.path / LOG_DIR
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == str(folder.resolve()):
                self.names = {p.name: p.stat().st_ino for p in folder.iterdir()}
            return
        self.files[st.st_ino] = os.pread(fd, st.st_size, 0)

    def power_loss(self) -> None:
        folder = self.path / LOG_DIR
        for p in folder.iterdir():
            p.unlink()
        for name, inode in self.names.items():
            # A name made durable before its file's first flush (a spare whose making the
            # crash cut, named by a later flush of the folder): its data may be gone.
            (folder / name).write_bytes(self.files.get(inode, b""))
        (self.path / "lock.mdb").unlink(missing_ok=True)
        assert self.lmdb is not None
        (self.path / "data.mdb").write_bytes(self.lmdb)


class Faults:
    """Counts durability-relevant calls; raises Crash at call number `at` (1-based)."""

    def __init__(self, at: int, disk: Disk) -> None:
        self.at = at
        self.calls = 0
        self.disk = disk
        self.armed = False
        self.depth = 0  # > 0: inside a compaction, an install's base write or a log reset
        self.rare: set[int] = set()  # the calls made there and the one after (each crashed at)
        self.after = False  # the next call is the first after such a window

    def point(self) -> None:
        if not self.armed:
            return
        self.calls += 1
        if self.depth or self.after:
            self.rare.add(self.calls)
            self.after = False
        if self.calls == self.at:
            raise Crash

    def around(self, fn: Any) -> Any:
        def counted(*args: Any, **kw: Any) -> Any:
            self.depth += 1
            try:
                return fn(*args, **kw)
            finally:
                self.depth -= 1
                self.after = True  # a crash right after the window: all of it done

        return counted


def install_faults(monkeypatch: pytest.MonkeyPatch, faults: Faults) -> None:
    real = {name: getattr(os, name) for name in ("pwrite", "write", "fsync", "fdatasync")}
    real_rename, real_unlink = os.rename, os.unlink

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        faults.point()
        return real["pwrite"](fd, data, offset)

    def write(fd: int, data: bytes) -> int:
        faults.point()
        return real["write"](fd, data)

    def flush(name: str) -> Any:
        def flush_fd(fd: int) -> None:
            faults.point()
            real[name](fd)
            faults.disk.flushed(fd)

        return flush_fd

    def rename(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
        faults.point()
        real_rename(src, dst, *args, **kw)

    def unlink(p: Any, *args: Any, **kw: Any) -> None:
        faults.point()
        real_unlink(p, *args, **kw)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", flush("fsync"))
    monkeypatch.setattr(os, "fdatasync", flush("fdatasync"))
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "unlink", unlink)
    real_sync, real_committed = Storage.sync, Storage._committed

    def sync(self: Storage) -> None:
        faults.point()
        real_sync(self)
        faults.disk.lmdb = (faults.disk.path / "data.mdb").read_bytes()

    def committed(self: Storage) -> None:
        faults.point()  # the commit is done: a crash right after it
        real_committed(self)

    monkeypatch.setattr(Storage, "sync", sync)
    monkeypatch.setattr(Storage, "_committed", committed)
    monkeypatch.setattr(Storage, "compact", faults.around(Storage.compact))
    monkeypatch.setattr(Storage, "_write_base", faults.around(Storage._write_base))
    monkeypatch.setattr(SegmentLog, "reset", faults.around(SegmentLog.reset))
    # A roll to a new segment: the spare's rename and the folder's flush, then the next
    # spare's making (on the caller's thread here: log_spare_thread=False), every step crashed.
    monkeypatch.setattr(SegmentLog, "_new_segment", faults.around(SegmentLog._new_segment))


class SmallAgent(Agent):
    def __init__(self, path: Path) -> None:
        init = Storage.__init__

        def small(self_: Storage, p: Path, **kw: Any) -> None:
            # The spare segment made where its thread would start, so that every crash point
            # comes in one order (a thread's writes would interleave at random).
            init(self_, p, **kw, log_segment_bytes=SEGMENT_BYTES, log_spare_thread=False)

        Storage.__init__ = small  # type: ignore[method-assign]
        try:
            super().__init__(path)
        finally:
            Storage.__init__ = init  # type: ignore[method-assign]


@dataclass
class Model:
    log: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # index -> (term, data)
    hard: tuple[int, str | None] | None = None
    applied: int = 0
    compacted: int = 0

    def last(self) -> int:
        return max(self.log, default=self.compacted)

    def copy(self) -> Model:
        return Model(dict(self.log), self.hard, self.applied, self.compacted)


def entry(index: int, term: int, rng: random.Random) -> Entry:
    return Entry(index, term, EntryKind.NOOP, bytes([index % 251]) * rng.randrange(200, 6_000))


def stage_snapshot(agent: SmallAgent, state: dict[str, Any], at: int) -> SnapshotMeta:
    """A source store applied up to `at`, its snapshot staged into `agent` (outside the
    Ready: the faults are off meanwhile)."""
    faults: Faults = state["faults"]
    faults.armed = False
    try:
        root: Path = state["source_root"]
        state["sources"] = state.get("sources", 0) + 1
        source = Agent(root / f"src{state['sources']}")
        try:
            source.persist_and_apply(
                [Entry(i, 1, EntryKind.NOOP, b"") for i in range(1, at + 1)], commit=at
            )
            with source.storage.env.begin() as txn:
                chunks = list(source.sm.snapshot_chunks(txn, 64))
        finally:
            source.close()
        with agent.storage.env.begin(write=True) as txn:
            for chunk in chunks:
                agent.sm.stage_chunk(txn, chunk)
    finally:
        faults.armed = True
    return SnapshotMeta(at, 1, CONF)


def run_workload(agent: SmallAgent, rng: random.Random, state: dict[str, Any]) -> None:
    """Random Readies; state["acked"] / ["inflight"] / ["done"] / ["first"] follow them."""
    model: Model = state["done"]
    term, vote = 1, "a"
    first_write = True
    for _ in range(READIES):
        new = model.copy()
        roll = rng.random()
        entries: list[Entry] = []
        if roll < 0.12:
            term += 1
            vote = rng.choice(["a", "b", "c"])
        elif roll < 0.25 and new.last() > new.applied + 1:
            term += 1
            lo = rng.randrange(max(new.applied, new.compacted) + 1, new.last() + 1)
            entries = [entry(i, term, rng) for i in range(lo, lo + rng.randrange(1, 6))]
        elif roll < 0.31 and state.get("source_root") is not None:
            # A snapshot install from a "leader" applied a few entries past this log's end.
            at = new.last() + rng.randrange(1, 6)
            term += 1
            meta = stage_snapshot(agent, state, at)
            new.log, new.applied, new.compacted = {}, at, at
            entries = [entry(i, term, rng) for i in range(at + 1, at + 1 + rng.randrange(0, 4))]
            for e in entries:
                new.log[e.index] = (e.term, e.data)
            new.hard = (term, vote)

            def durable_install(new: Model = new) -> None:
                state["acked"] = new

            state["inflight"] = new
            state["first"] = entries[0].index if entries else None
            agent.storage.write(
                ready(hard_state=HardState(term, vote, at), snapshot=meta, entries=tuple(entries)),
                None,
                durable=durable_install,
            )
            state["done"] = model = new
            continue
        elif roll < 0.38 and new.applied > new.compacted:
            upto = rng.randrange(new.compacted + 1, new.applied + 1)
            state["inflight"] = new
            state["first"] = None
            agent.storage.compact(upto)
            new.compacted = upto
            new.log = {i: v for i, v in new.log.items() if i > upto}
            state["done"] = state["acked"] = model = new
            continue
        else:
            lo = new.last() + 1
            entries = [entry(i, term, rng) for i in range(lo, lo + rng.randrange(1, 9))]
        if entries:
            for i in [i for i in new.log if i >= entries[0].index]:
                del new.log[i]
            for e in entries:
                new.log[e.index] = (e.term, e.data)
        new.hard = (term, vote)
        commit = new.applied
        if rng.random() < 0.6 and new.last() > new.applied:
            # Commit only what the previous Readies made durable (as Raft does).
            durable_last = min(max(model.log, default=model.compacted), new.last())
            if durable_last > new.applied:
                commit = rng.randrange(new.applied + 1, durable_last + 1)
        to_apply = [
            Entry(i, new.log[i][0], EntryKind.NOOP, new.log[i][1])
            for i in range(new.applied + 1, commit + 1)
        ]
        new.applied = commit

        def apply_fn(txn: Any, to_apply: list[Entry] = to_apply) -> None:
            for e in to_apply:
                agent.sm.apply(txn, e)

        def durable(new: Model = new) -> None:
            state["acked"] = new

        state["inflight"] = new
        state["first"] = entries[0].index if entries else None
        agent.storage.write(
            ready(hard_state=HardState(term, vote, commit), entries=tuple(entries)),
            apply_fn if to_apply else None,
            conf=CONF if first_write else None,
            durable=durable,
        )
        first_write = False
        state["done"] = model = new


def check(loaded: Any, first: int, state: dict[str, Any], *, power: bool) -> None:
    acked: Model = state["acked"]
    inflight: Model = state["inflight"]
    done: Model = state["done"]
    hard = None if loaded.hard_state is None else (loaded.hard_state.term, loaded.hard_state.vote)
    assert hard in (acked.hard, inflight.hard), ("term/vote", hard, acked.hard, inflight.hard)
    got = {e.index: (e.term, e.data) for e in loaded.entries}
    last = max(got, default=first - 1)

    def agrees(model: Model, upto: int) -> bool:
        want = {i: v for i, v in model.log.items() if first <= i <= upto}
        return got == want

    allowed = agrees(acked, acked.last()) or agrees(inflight, inflight.last())
    if not allowed and state["first"] is not None:
        # The in-flight Ready's records cut after some of them (no flush since: none acked).
        allowed = state["first"] - 1 <= last <= inflight.last() and agrees(inflight, last)
    assert allowed, ("log", sorted(got)[:3], last, acked.last(), inflight.last(), first)
    assert loaded.applied <= max(last, first - 1)
    if not power:
        assert loaded.applied >= min(done.applied, acked.applied), ("applied lost", loaded.applied)
    snap = 0 if loaded.snapshot is None else loaded.snapshot.index
    assert snap >= min(done.compacted, acked.compacted), ("compaction undone", snap)


def crash_run(tmp: Path, seed: int, at: int, *, power: bool, monkeypatch: Any) -> Faults | None:
    """Runs the workload of `seed` with a crash at call `at`; None if it finished first (its
    Faults otherwise, or with at=0: a dry run that counts the calls)."""
    path = tmp / f"s{seed}-{at}-{int(power)}"
    disk = Disk(path)
    faults = Faults(at, disk)
    with monkeypatch.context() as m:
        install_faults(m, faults)
        agent = SmallAgent(path)
        disk.lmdb = (path / "data.mdb").read_bytes()  # the fresh store's format: synced
        disk.names = {p.name: p.stat().st_ino for p in (path / LOG_DIR).iterdir()}
        state: dict[str, Any] = {"acked": Model(), "inflight": Model(), "done": Model()}
        state["first"] = None
        state["faults"] = faults
        state["source_root"] = tmp / f"src-{seed}-{at}-{int(power)}"
        faults.armed = True
        crashed = False
        try:
            run_workload(agent, random.Random(seed), state)
        except Crash:
            crashed = True
        faults.armed = False
        for segment in agent.storage.log.segments:  # the dead process's descriptors
            with contextlib.suppress(OSError):  # closed by the crashed call (a deletion)
                os.close(segment.fd)
        agent.storage.env.close()
    if not crashed:
        return faults if at == 0 else None
    if power:
        disk.power_loss()
    again = SmallAgent(path)
    try:
        loaded = again.storage.load()
        check(loaded, again.storage.first_index(), state, power=power)
        # Keeps working: one more Ready at a higher term, then a reopen.
        term = (loaded.hard_state.term if loaded.hard_state else 0) + 1
        nxt = again.storage.last_index + 1
        extra = Entry(nxt, term, EntryKind.NOOP, b"after")
        again.storage.write(ready(hard_state=HardState(term, "b", 0), entries=(extra,)), None)
    finally:
        again.close()
    final = SmallAgent(path)
    try:
        reloaded = final.storage.load()
        assert reloaded.entries[-1] == extra and reloaded.hard_state is not None
        assert (reloaded.hard_state.term, reloaded.hard_state.vote) == (term, "b")
    finally:
        final.close()
    return faults


@pytest.mark.parametrize(
    ("seed", "power"), [(1, False), (2, True)], ids=["kill9-seed1", "power_loss-seed2"]
)
def test_every_crash_point_keeps_what_was_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, power: bool
) -> None:
    dry = crash_run(tmp_path, seed, 0, power=power, monkeypatch=monkeypatch)
    assert dry is not None
    # Every call early (the first Readies, segment rolls) and every call inside a compaction,
    # an install, a reset or a roll to a new segment with its spare's making (the rare
    # windows); the rest sampled.
    points = sorted({*range(1, 30), *range(30, dry.calls + 1, 15), *dry.rare})
    for at in points:
        assert crash_run(tmp_path, seed, at, power=power, monkeypatch=monkeypatch) is not None
    print(f"seed {seed} power {power}: {len(points)} of {dry.calls} crash points")
    assert len(dry.rare) > 10, len(dry.rare)
