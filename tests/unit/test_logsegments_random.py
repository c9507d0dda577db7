"""agent/logsegments.py under random operations (review32): appends with conflicting suffixes,
hard states, syncs, compactions and resets, checked against a model after every step, after
every reopen and after simulated crashes. A crash keeps the bytes synced last and a random
subset of the 512-byte sectors written since (out of order, as a disk may): the reopened log
must equal the model as of the last sync or of some record after it, never lose a synced
entry or hard state, and never refuse a log a crash could leave as damaged. A crash also
leaves the log's spare segment (segspare) whole, cut, of another size or garbage: the open
deletes it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from superstatic_agent.logsegments import SegmentLog

Entry = tuple[int, int, int, bytes]
SECTOR_BYTES = 512


@dataclass
class Model:
    base: int = 0
    entries: dict[int, Entry] = field(default_factory=dict)
    hard: tuple[int, str | None] | None = None

    @property
    def last_index(self) -> int:
        return self.base + len(self.entries)

    def copy(self) -> Model:
        return Model(self.base, dict(self.entries), self.hard)


def agrees(log: SegmentLog, model: Model) -> bool:
    """The log holds the model's entries and hard state (it may keep more below the model's
    base: compaction deletes whole segments only, and a reopen may find an older base)."""
    return (
        log.hard == model.hard
        and log.last_index == model.last_index
        and log.base <= model.base
        and all(log.entry(i) == e for i, e in model.entries.items())
    )


def adopt(log: SegmentLog, model: Model) -> None:
    """The model takes what the log holds (below its old base too)."""
    model.base = log.base
    model.entries = {i: log.entry(i) for i in range(log.base + 1, log.last_index + 1)}


class Run:
    """One random run: the log, its model, and for crashes the bytes of the last sync."""

    def __init__(
        self,
        folder: Path,
        seed: int,
        segment_bytes: int,
        window_bytes: int,
        *,
        spare_thread: bool = True,
    ) -> None:
        self.folder = folder
        self.spare_thread = spare_thread
        self.rnd = random.Random(seed)
        self.spare_rnd = random.Random(-seed - 1)  # apart: each seed's steps as before spares
        self.segment_bytes = segment_bytes
        self.window_bytes = window_bytes
        self.model = Model()
        self.since_sync: list[Model] = []  # the model at the last sync, then after each record
        self.synced: dict[str, bytes] = {}
        self.term = 1
        self.log = self.open()
        self.mark_synced()  # an empty log: nothing written yet

    def open(self) -> SegmentLog:
        log = SegmentLog(
            self.folder,
            segment_bytes=self.segment_bytes,
            unsynced_bytes_max=self.window_bytes,
            spare_thread=self.spare_thread,
        )
        real_sync = log.sync

        def sync() -> None:  # every sync, also those append makes on its own
            real_sync()
            self.mark_synced()

        log.sync = sync  # type: ignore[method-assign]
        return log

    def mark_synced(self) -> None:
        self.synced = {p.name: p.read_bytes() for p in self.folder.glob("*.seg")}
        self.since_sync = [self.model.copy()]

    def step(self, crashes: bool) -> None:
        rnd, model, log = self.rnd, self.model, self.log
        last = model.last_index
        choice = rnd.random()
        if choice < 0.55:
            first = last + 1
            if last > model.base and rnd.random() < 0.3:
                first = rnd.randint(model.base + 1, last)  # a conflicting suffix
            if rnd.random() < 0.2:
                self.term += 1
            size_max = self.window_bytes // 6
            entries = [
                (first + n, self.term, 0, bytes([rnd.randint(0, 255)]) * rnd.randint(1, size_max))
                for n in range(rnd.randint(1, 3))
            ]
            hard = (self.term, rnd.choice("abc")) if rnd.random() < 0.3 else None
            log.append(entries, hard=hard)
            for index in [i for i in model.entries if i >= first]:
                del model.entries[index]
            model.entries.update((e[0], e) for e in entries)
            model.hard = hard or model.hard
            self.since_sync.append(model.copy())
        elif choice < 0.62:
            # The model changes after the append: an append that syncs first (the first
            # record, a full window, a roll) snapshots the model as synced, and a hard state
            # set before it was taken as synced though not written (seeds 135, 139, 198 and
            # 299 of 300 failed on that, not on the log).
            hard = (self.term, rnd.choice("xyz"))
            log.append([], hard=hard)
            model.hard = hard
            self.since_sync.append(model.copy())
        elif choice < 0.75:
            log.sync()
        elif choice < 0.85 and last > model.base:
            upto = rnd.randint(model.base, last)
            log.sync()
            log.compact(upto)
            assert log.base <= upto or log.base == model.base, (log.base, upto)
            for index in [i for i in model.entries if i <= log.base]:
                del model.entries[index]
            model.base = log.base
            self.mark_synced()  # the deletions are durable too (folder fsynced)
        elif choice < 0.88:
            after = rnd.randint(model.base, last + 5)
            log.reset(after)
            model.base, model.entries = after, {}
            self.mark_synced()
        elif crashes:
            self.crash()
        else:
            log.sync()
            log.close()
            self.log = self.open()
            assert agrees(self.log, model)
            adopt(self.log, model)
        assert agrees(self.log, self.model)

    def crash(self) -> None:
        now = {p.name: p.read_bytes() for p in self.folder.glob("*.seg")}
        spares = {p.name: p.read_bytes() for p in self.folder.glob("spare-*")}
        self.log.close()  # removes the spare: put back below as a crash may leave it
        for name, data in spares.items():
            # Whole, cut anywhere (its zeros half-written), of another size, or garbage: the
            # open must delete it whatever it holds and never read it as a segment.
            shape = self.spare_rnd.choice(["whole", "cut", "longer", "garbage", "gone"])
            if shape == "cut":
                data = data[: self.spare_rnd.randrange(len(data) + 1)]
            elif shape == "longer":
                data += bytes(SECTOR_BYTES)
            elif shape == "garbage":
                data = bytes([self.spare_rnd.randint(1, 255)]) * SECTOR_BYTES + data[SECTOR_BYTES:]
            if shape != "gone":
                (self.folder / name).write_bytes(data)
        for name, data in now.items():
            kept = bytearray(self.synced.get(name, bytes(self.segment_bytes)))
            for start in range(0, self.segment_bytes, SECTOR_BYTES):
                sector = data[start : start + SECTOR_BYTES]
                if sector != kept[start : start + SECTOR_BYTES] and self.rnd.random() < 0.5:
                    kept[start : start + SECTOR_BYTES] = sector
            (self.folder / name).write_bytes(bytes(kept))
        self.log = self.open()
        assert not set(spares) & {p.name for p in self.folder.iterdir()}, "a spare kept"
        matches = [m for m in self.since_sync if agrees(self.log, m)]
        assert matches, "after a crash the log is none of the states since the last sync"
        self.model = matches[0].copy()
        adopt(self.log, self.model)
        self.mark_synced()


@pytest.mark.parametrize("seed", range(60))
def test_random_operations_and_reopens_agree_with_the_model(tmp_path: Path, seed: int) -> None:
    # Small segments so that suffix cuts and compactions cross segment boundaries often; the
    # author's code failed this in 6 of the first 400 seeds (compaction after a cut).
    run = Run(tmp_path, seed, segment_bytes=4096, window_bytes=1024)
    for _ in range(run.rnd.randint(20, 120)):
        run.step(crashes=False)
    run.log.close()


@pytest.mark.parametrize("seed", range(60))
def test_random_crashes_lose_no_synced_record(tmp_path: Path, seed: int) -> None:
    # Records up to the window's size span sectors, so sectors reaching the disk out of order
    # tear records in the middle; mutating the torn test to "trailer missing" alone fails it.
    # The spare made on this thread (spare_thread=False): the crash then finds it in one
    # state for a seed, not whichever the thread had reached.
    run = Run(tmp_path, seed, segment_bytes=8192, window_bytes=4096, spare_thread=False)
    for _ in range(run.rnd.randint(10, 80)):
        run.step(crashes=True)
    run.log.close()
