"""A Raft log of its own: append-only, pre-zeroed segment files (docs/data-model-v2.md 8.16).

The agent's Raft log since store format 5 (agent/storage.py, docs/data-model-v2.md 8.18):
`DATA_DIR/raftlog/`. One writer, on the agent loop's thread; every reader on the same thread.

Layout: a folder of segments named `<sequence, 16 hex digits>.seg`, each created at
`segment_bytes` and written with zeros (then fsynced, and renamed into place so that a crash
never leaves a half-made segment under a segment's name). Zero-filled, not merely reserved: an
append then rewrites blocks that are already allocated and written, so its `fdatasync` flushes
the data alone, with no size change and no "unwritten extent" conversion for ext4's journal to
commit (measured in 8.16: 148 us against 195 us for a file that grows).

A record is one `append` call: 4-byte big-endian payload length, the same length's complement
(so that a damaged length is told from a torn header), `synced` (how far the segment had been
flushed when the record was written), 4-byte big-endian CRC-32 (zlib.crc32) over those 12 bytes
and the payload, the payload, one trailer byte (0xA5, written last, so a write cut at any byte
lacks it), then zeros to a multiple of 16 bytes (so the 16-byte header never straddles a
sector). The payload is CBOR `[first_index, [[term, kind,
data], ...], hard, reset]`: `hard` is the term and vote as of this record (`[term, vote]` or
None), in EVERY record, so that compaction, which deletes old segments, never deletes the
latest hard state; `reset` true says the log starts after first_index - 1 (a snapshot's
index) and holds nothing before. A record whose first index is at or below the log's last
index replaces the suffix from there: a conflicting suffix is cut by the record that follows
it, never by an overwrite in place (a torn overwrite would leave an older valid record behind a
torn one: unreadable as torn tail or as damage).

Torn tail against damage. Bytes written since the last `sync` are at most `unsynced_bytes_max`
(append syncs first when a record would pass it), and the writes before a new segment are
synced before it is used. So a crash can tear only the last segment's bytes from the first
unsynced record onward, within that bound; a sector of it may reach the disk while an earlier
one does not (a sector is written whole or not at all, and one not written reads as the zeros
the segment was made of). At open, the scan stops at the first record that is not whole. It is
a torn tail, cut (its bytes are zeroed again before anything is appended), only if it is in the
last segment, every non-zero byte after it lies within `unsynced_bytes_max` of it, and it shows
a write that stopped: its header is zeros or a prefix of a header then zeros (never written,
or cut inside it), or its trailer byte is 0 (cut at some byte), or some 512-byte sector of it is
all zeros (sectors reached the disk out of order). Anything else is damage: `LogDamaged` is
raised, never cut (a flipped bit leaves the trailer and no sector of zeros; one in the header
leaves the length and its complement disagreeing; and a record that looks torn is damage if a
whole record after it says the segment was flushed past it). Limitation: a record of the last
flushed batch, with no record written after it, whose payload holds a sector of zeros of its
own and is then damaged reads as torn and is cut (nothing on disk says it was flushed).

Open flushes the last segment and the folder before it returns: what the scan found may be in
the page cache alone after a kill -9, and must not be reported held before it is durable.

A flush that fails fails the log (`LogFailed`): it is never retried, since a second fdatasync
may succeed with the first one's pages lost.

The next segment is made ahead of need, off the loop (docs/data-model-v2.md 8.18, "The spare
segment"): a thread of the log's own writes a spare, `spare-<16 random hex digits>.new`, at
`segment_bytes` with zeros, flushed every SPARE_FLUSH_BYTES (so that the loop's own flushes
never queue behind a whole segment's writeback) and at its end; when the last segment fills,
the loop renames the spare to the next segment's name and flushes the folder (the zero-fill
and its fsync, 0.5-1.2 s of stall at load 12, no longer run on the loop). At most one spare
exists (being made or ready); the thread touches its own file and a lock-protected slot only,
never the segments or the index. The spare's name ends in `.new`, like a segment being made
on the loop: open deletes every `*.new` before it scans, so a crash while making the spare,
after making it, or between its rename and the folder's flush leaves a log that opens (a
renamed spare is a segment of zeros, as a segment made on the loop is after a crash before its
first record). A roll with no spare ready waits for the one being made (counted in
`spare_misses`), or makes the segment on the loop as before (no spare: the disk had no room
for one beside the segment the store's space check keeps free, or the thread failed: logged,
counted in `spare_failures`, the spare discarded; the loop's own attempt then fails as it did
before the spare if the trouble stays). `close` stops the thread (checked between 1 MiB
writes) and joins it, at most SPARE_JOIN_TIMEOUT_S.

Compaction deletes whole segments whose entries are all at or below the index given; the
segments left must say on their own where the log starts: the oldest one's first record gives it
(a record without entries carries the index the next entry would have), a record cutting below
it in any segment restarts it there, and a last segment with no record gets one before older
segments go. Segment sequence numbers are consecutive: a gap is damage.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import secrets
import struct
import threading
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from superstatic.protocol.errors import LimitExceeded

SEGMENT_BYTES_DEFAULT = 64 << 20
# Bytes appended without an fdatasync at most: the window in which a crash may leave torn bytes.
UNSYNCED_BYTES_MAX_DEFAULT = 8 << 20
# Payload length, its complement, `synced`, CRC-32 over the header's first 12 bytes and the
# payload (review32). The complement tells a damaged length from a torn one: a write cut short
# leaves a prefix of the header and zeros, a flipped bit a whole header whose two length fields
# disagree (before it, a length one larger pointed the trailer check at the zero padding, and
# the record and the synced records after it were cut as torn). `synced` is how far the segment
# was flushed when the record was written: a whole record after a bad one that says the bad
# one's bytes were flushed proves it damage, not torn.
HEADER = struct.Struct(">IIII")
LENGTH_MASK = 0xFFFFFFFF
RECORD_ALIGN_BYTES = 16  # records start at multiples of this: a header never straddles a sector
SEGMENT_BYTES_MAX = 1 << 32  # offsets, and `synced`, fit in 4 bytes
SECTOR_BYTES = 512  # the smallest unit a disk writes whole (a torn write leaves whole sectors)
TRAILER = 0xA5  # the last byte of every record: a write cut short lacks it
ZERO_CHUNK_BYTES = 1 << 20
SEGMENT_SUFFIX = ".seg"
SEGMENTS_MAX = 1 << 20  # segments a folder may hold; past it the folder is not one we wrote
# A file being made: a segment made on the loop before its rename, or a spare. Never a segment
# (open reads `.seg` files only) and deleted by every open before it scans.
SCRATCH_SUFFIX = ".new"
SPARE_PREFIX = "spare-"
# close() waits this long for the spare thread: it checks the stop flag between 1 MiB writes,
# but an fsync in progress (~1 s for 64 MiB at load 12) cannot be cut short. Past it the thread
# is left (a daemon): its file, if any, is deleted by the next open.
SPARE_JOIN_TIMEOUT_S = 30.0
# The spare is made only when the disk keeps this many segments' room beside it: the store's
# space check (agent/storage.py Storage.space, review40) keeps one segment free for the log,
# which a spare must not take (the loop's own attempt after a failed spare needs it).
SPARE_ROOM_SEGMENTS_MIN = 2
# The spare thread flushes its zeros every this many bytes: the loop's own fdatasync of the
# last segment queues behind whatever the disk is writing back, and 64 MiB of a spare's dirty
# pages flushed at once delayed it by hundreds of ms (the loop stall moved, not gone).
SPARE_FLUSH_BYTES = 4 << 20

log = logging.getLogger("superstatic.agent")

Entry = tuple[int, int, int, bytes]  # index, term, kind, data


class LogFailed(Exception):
    """An earlier flush of this log failed: what it wrote may be lost though a later flush
    succeeds (Linux may mark the failed pages clean), so nothing more is written or reported
    durable; the process must reopen the log, whose scan finds what reached the disk."""

    def __init__(self) -> None:
        super().__init__("an earlier flush of the log failed: reopen it")


class LogDamaged(Exception):
    """A record that is not whole where no crash could have torn it: this copy is damaged."""

    def __init__(self, segment: Path, offset: int, why: str) -> None:
        super().__init__(
            f"log segment {segment.name} is damaged at byte {offset} ({why}): not a torn tail "
            "of the last write, so it was not cut"
        )
        self.segment = segment
        self.offset = offset


@dataclass(slots=True)
class _Segment:
    path: Path
    sequence: int
    fd: int
    end: int  # bytes in use: the next record goes here
    last_index: int  # the highest index a record in it wrote (0: none)


@dataclass(slots=True)
class _Spare:
    """The next segment's file, made by the spare thread. Every field but `path` is written by
    the thread and read by the loop under SegmentLog._spare_lock."""

    path: Path
    written: int = 0  # bytes of zeros written so far (the space check counts the rest)
    done: bool = False  # the thread is finished with it: `fd`, `error`, or neither (no room)
    fd: int | None = None  # whole and flushed: the loop's to rename
    error: OSError | None = None  # its making failed (the file was removed)


@dataclass(slots=True)
class _Place:
    segment: _Segment
    offset: int  # of the record
    position: int  # of the entry within the record's list


class _Index:
    """index -> (segment, record offset, position in the record), for entries base + 1 ...:
    three machine-word arrays, not one Python object per entry (8.16 (d): a log of 150,000
    entries, --log-retain-entries' bound before compaction, held ~15 MB of _Place objects;
    these arrays hold 20 bytes an entry). Segments are named by their sequence number."""

    __slots__ = ("_offsets", "_positions", "_segments", "_sequences")

    def __init__(self) -> None:
        self._sequences = array("Q")
        self._offsets = array("Q")
        self._positions = array("I")
        self._segments: dict[int, _Segment] = {}

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, n: int) -> _Place:
        segment = self._segments[self._sequences[n]]
        return _Place(segment, self._offsets[n], self._positions[n])

    def sequence(self, n: int) -> int:
        return self._sequences[n]

    def extend(self, segment: _Segment, offset: int, count: int) -> None:
        self._segments[segment.sequence] = segment
        self._sequences.extend([segment.sequence] * count)
        self._offsets.extend([offset] * count)
        self._positions.extend(range(count))

    def truncate(self, length: int) -> None:
        """Keeps the first `length` places."""
        del self._sequences[length:], self._offsets[length:], self._positions[length:]

    def drop_front(self, count: int) -> None:
        del self._sequences[:count], self._offsets[:count], self._positions[:count]

    def forget(self, segment: _Segment) -> None:
        """A deleted segment: no place may name it any more."""
        self._segments.pop(segment.sequence, None)


class SegmentLog:
    """The log's records in a folder; see the module docstring. One writer; not thread-safe."""

    def __init__(
        self,
        folder: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES_DEFAULT,
        unsynced_bytes_max: int = UNSYNCED_BYTES_MAX_DEFAULT,
        fsync: bool = True,
        spare_thread: bool = True,
    ) -> None:
        """`spare_thread` False makes the spare on the caller's thread where the thread would be
        started (at open, after each roll): the crash tests need every write in one order."""
        assert 0 < unsynced_bytes_max <= segment_bytes < SEGMENT_BYTES_MAX, segment_bytes
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.unsynced_bytes_max = unsynced_bytes_max
        self.fsync = fsync
        self.segments: list[_Segment] = []
        self.base = 0  # entries start after this index
        self.places = _Index()  # places[i] holds entry base + 1 + i
        self.hard: tuple[int, str | None] | None = None
        self.torn_bytes_cut = 0  # what open() cut as a torn tail
        self._failed = False  # a flush failed: see LogFailed
        self._base_from_reset = False  # open: the base was written by a reset, not inferred
        self.syncs = 0
        self._unsynced = 0
        self.spare_thread = spare_thread
        self.spare_misses = 0  # rolls with no spare ready: waited for, or made on the loop
        self.spare_failures = 0  # spares whose making failed (seen at a roll)
        self._spare: _Spare | None = None  # being made or ready (at most one)
        self._spare_worker: threading.Thread | None = None
        self._spare_lock = threading.Lock()
        self._spare_stop = threading.Event()
        self._open()
        self._spare_request()

    # ------------------------------------------------------------ reading

    @property
    def last_index(self) -> int:
        return self.base + len(self.places)

    def entry(self, index: int) -> Entry:
        """The stored entry at `index` (base < index <= last_index)."""
        assert self.base < index <= self.last_index, (index, self.base, self.last_index)
        place = self.places[index - self.base - 1]
        first, items = self._read(place.segment, place.offset)
        if first + place.position != index or place.position >= len(items):
            # Not an assert (gone under -O): a reader's place in a segment that compaction
            # deleted reads whatever file took its descriptor's number (review32).
            raise LogDamaged(place.segment.path, place.offset, "a record of another index")
        term, kind, data = items[place.position]
        return index, term, kind, data

    def read(self, lo: int, hi: int) -> Iterator[Entry]:
        """Entries lo <= index < hi (base < lo), in order, each record read and decoded once
        (entry() per index would decode a record of n entries n times). Lazy: a caller that
        stops early reads no further. On the caller's thread between writes: nothing here is
        safe against a compaction that deletes a segment while the iterator is suspended."""
        assert self.base < lo, (lo, self.base)
        hi = min(hi, self.last_index + 1)
        held: tuple[int, int] | None = None  # (sequence, offset) of `items`
        items: list[Any] = []
        first = 0
        for index in range(lo, hi):
            place = self.places[index - self.base - 1]
            if held != (place.segment.sequence, place.offset):
                first, items = self._read(place.segment, place.offset)
                held = (place.segment.sequence, place.offset)
            if first + place.position != index or place.position >= len(items):
                raise LogDamaged(place.segment.path, place.offset, "a record of another index")
            term, kind, data = items[place.position]
            yield index, term, kind, data

    def _read(self, segment: _Segment, offset: int) -> tuple[int, list[Any]]:
        header = os.pread(segment.fd, HEADER.size, offset)
        length, inverse, _synced, crc = HEADER.unpack(header)
        # Checked before the payload is read: a damaged length would ask for up to 4 GiB.
        if inverse != length ^ LENGTH_MASK or offset + HEADER.size + length >= self.segment_bytes:
            raise LogDamaged(segment.path, offset, "a damaged length on read")
        payload = os.pread(segment.fd, length, offset + HEADER.size)
        if zlib.crc32(payload, zlib.crc32(header[:12])) != crc:
            raise LogDamaged(segment.path, offset, "a checksum mismatch on read")
        first, items, _hard, _reset = cbor2.loads(payload)
        return first, items

    # ------------------------------------------------------------ writing

    def append(self, entries: Sequence[Entry], hard: tuple[int, str | None] | None = None) -> None:
        """Writes one record: `entries` (contiguous; the first at most last_index + 1, cutting
        the stored suffix from there) and/or the hard state. Durable after `sync`."""
        assert entries or hard is not None
        first = entries[0][0] if entries else self.last_index + 1
        assert self.base < first <= self.last_index + 1, ("gap or below base", first, self.base)
        for offset, entry in enumerate(entries):
            assert entry[0] == first + offset, ("entries not contiguous", entry[0], first)
        now_hard = self.hard if hard is None else hard
        items = [[t, k, d] for _i, t, k, d in entries]
        offset = self._write([first, items, None if now_hard is None else [*now_hard], False])
        self.hard = now_hard
        self.places.truncate(first - self.base - 1)
        segment = self.segments[-1]
        self.places.extend(segment, offset, len(entries))
        if entries:
            segment.last_index = self.last_index

    def reset(self, after_index: int) -> None:
        """Drops every entry; the log starts after `after_index` (a snapshot's; or 0 when a
        repair empties the store and keeps the term and vote). Durable at once: a fresh
        segment holds the reset, and every older segment is deleted."""
        assert after_index >= 0, after_index
        self.sync()
        self._new_segment()
        self._write([after_index + 1, [], None if self.hard is None else [*self.hard], True])
        self.sync()
        for segment in self.segments[:-1]:
            self._delete(segment)
        self.segments = self.segments[-1:]
        self.base = after_index
        self.places = _Index()

    def compact(self, upto_index: int) -> int:
        """Deletes whole segments whose entries are all at or below `upto_index` (which must be
        durable and applied); the last segment is kept. Returns the segments deleted."""
        if len(self.segments) > 1 and self.segments[-1].end == 0:
            # The last segment holds no record (its first was torn and cut at open, or a crash
            # came between making it and writing it): the hard state and the log's position
            # are only in older segments. A durable record here first, or deleting them
            # would lose the vote and start the log at 0 on the next open (review32).
            self._write(
                [self.last_index + 1, [], None if self.hard is None else [*self.hard], False]
            )
            self.sync()
        gone: list[_Segment] = []
        while len(self.segments) > 1 and self.segments[0].last_index <= upto_index:
            # A segment with no entry of its own (last_index 0) holds nothing to keep either.
            gone.append(self.segments.pop(0))
            self._delete(gone[-1])
        # The entries held by the deleted segments: a prefix of the log (a record cuts every
        # entry from its first on, so live entries lie in segments in index order). Not "every
        # entry before the first kept segment's": after a cut into an older segment the live
        # entries after it may lie in a later segment, none in the first kept one (review32).
        gone_sequences = {segment.sequence for segment in gone}
        drop = 0
        while drop < len(self.places) and self.places.sequence(drop) in gone_sequences:
            drop += 1
        self.base += drop
        self.places.drop_front(drop)
        for segment in gone:
            self.places.forget(segment)
        return len(gone)

    def sync(self) -> None:
        """ONE fdatasync of the segment written since the last sync (earlier segments were
        synced before the next was used)."""
        if self._failed:
            raise LogFailed()
        if self._unsynced and self.fsync:
            try:
                os.fdatasync(self.segments[-1].fd)
            except BaseException:
                # Never retried: a second fdatasync can succeed with the records lost
                # ("fsyncgate"; review32), and the caller would acknowledge them.
                self._failed = True
                raise
            self.syncs += 1
        self._unsynced = 0

    def close(self) -> None:
        self._spare_close()
        for segment in self.segments:
            os.close(segment.fd)
        self.segments = []

    # ------------------------------------------------------------ the spare segment

    def spare_wait(self, timeout_s: float | None = None) -> bool:
        """Waits for the spare being made, if any (tests and benchmarks: a roll that must find
        it ready). Whether a spare is ready."""
        worker = self._spare_worker
        if worker is not None:
            worker.join(timeout_s)
        with self._spare_lock:
            return self._spare is not None and self._spare.fd is not None

    def spare_outstanding_bytes(self) -> int:
        """Bytes the spare being made has still to take on the disk (0: none being made)."""
        with self._spare_lock:
            spare = self._spare
            if spare is None or spare.done:
                return 0
            return self.segment_bytes - spare.written

    def _spare_request(self) -> None:
        """Starts making a spare if none is made or being made."""
        if self._spare is not None or self._spare_stop.is_set():
            return
        spare = _Spare(self.folder / f"{SPARE_PREFIX}{secrets.token_hex(8)}{SCRATCH_SUFFIX}")
        self._spare = spare
        if not self.spare_thread:
            self._spare_make(spare)
            return
        self._spare_worker = threading.Thread(
            target=self._spare_thread_main, args=(spare,), name="log-spare", daemon=True
        )
        self._spare_worker.start()

    def _spare_thread_main(self, spare: _Spare) -> None:
        try:
            self._spare_make(spare)
        except BaseException:
            # A bug, not the disk's error: no spare (the roll makes the segment on the loop),
            # its file removed; the traceback goes to threading's excepthook.
            with contextlib.suppress(OSError):
                spare.path.unlink(missing_ok=True)
            with self._spare_lock:
                spare.done = True
            raise

    def _spare_make(self, spare: _Spare) -> None:
        """The spare thread: writes the spare and hands it over through `spare` (under the
        lock). Touches nothing else of the log: the loop owns the segments and the index."""
        fd: int | None = None
        error: OSError | None = None
        try:
            vfs = os.statvfs(self.folder)
            # No room beside the reserve: no spare, the roll makes the segment as before.
            if vfs.f_bavail * vfs.f_frsize >= SPARE_ROOM_SEGMENTS_MIN * self.segment_bytes:
                fd = os.open(spare.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                stop, lock = self._spare_stop, self._spare_lock
                paced = SPARE_FLUSH_BYTES if self.fsync else None
                if not _zero_fill(fd, self.segment_bytes, spare, lock, stop, paced):
                    _discard(fd, spare.path)  # stopped by close()
                    fd = None
                elif self.fsync:
                    os.fsync(fd)
        except OSError as exc:
            # Disk full, EIO: the file goes at once (a full disk must not stay full of it), the
            # error is logged here and counted at the roll, which then makes the segment on
            # the loop: if the trouble stays, that attempt fails as it did before the spare.
            if fd is not None:
                _discard(fd, spare.path)
                fd = None
            error = exc
            log.warning(
                "the Raft log's spare segment could not be made (%s): the next segment will "
                "be made on the loop",
                errno.errorcode.get(exc.errno or 0, "no errno"),
            )
        except BaseException:
            # A bug, not the disk's error: the file and its descriptor go here, where the
            # descriptor is known (the caller only removes the file; review42 found the
            # descriptor kept open for the process's life, one more at every roll).
            if fd is not None:
                _discard(fd, spare.path)
            raise
        with self._spare_lock:
            if self._spare_stop.is_set() and fd is not None:
                _discard(fd, spare.path)  # closed while it was flushed: nobody will take it
                fd = None
            spare.fd, spare.error, spare.done = fd, error, True

    def _spare_take(self) -> tuple[int, Path] | None:
        """On the loop, at a roll: the spare's descriptor and name (whole and flushed), or None
        (the segment is to be made on the loop). Waits for a spare being made: the rest of its
        making costs no more than making the segment here, and a second file would double the
        writes."""
        spare, worker = self._spare, self._spare_worker
        self._spare, self._spare_worker = None, None
        if spare is None:
            self.spare_misses += 1
            return None
        with self._spare_lock:
            ready = spare.done and spare.fd is not None
        if not ready:
            self.spare_misses += 1
        if worker is not None:
            worker.join()  # being made: waited for; finished: returns at once
        with self._spare_lock:
            fd, error = spare.fd, spare.error
        if error is not None:
            self.spare_failures += 1
        return None if fd is None else (fd, spare.path)

    def _spare_close(self) -> None:
        self._spare_stop.set()
        worker, spare = self._spare_worker, self._spare
        self._spare, self._spare_worker = None, None
        if worker is not None:
            worker.join(SPARE_JOIN_TIMEOUT_S)
            if worker.is_alive():
                log.warning(
                    "the Raft log's spare thread did not stop within %d s: its file is "
                    "removed at the next open",
                    SPARE_JOIN_TIMEOUT_S,
                )
                return
        if spare is not None:
            with self._spare_lock:
                fd, spare.fd = spare.fd, None
            if fd is not None:
                _discard(fd, spare.path)  # a stopped log keeps no spare on the disk

    def _write(self, record: list[Any]) -> int:
        """Writes one record; returns its offset in the last segment."""
        if self._failed:
            raise LogFailed()
        payload = cbor2.dumps(record)
        size = -(-(HEADER.size + len(payload) + 1) // RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
        if size > self.unsynced_bytes_max:
            raise LimitExceeded("unsynced_bytes_max", self.unsynced_bytes_max, size, "a log record")
        if self._unsynced + size > self.unsynced_bytes_max:
            self.sync()  # keeps what a crash can tear within the window the scan allows
        if not self.segments or self.segments[-1].end + size > self.segment_bytes:
            self.sync()  # a segment before the last is never torn (the scan relies on it)
            self._new_segment()
        segment = self.segments[-1]
        synced = segment.end - self._unsynced  # this segment's bytes flushed so far
        start = struct.pack(">III", len(payload), len(payload) ^ LENGTH_MASK, synced)
        header = start + zlib.crc32(payload, zlib.crc32(start)).to_bytes(4, "big")
        padding = bytes(size - HEADER.size - len(payload) - 1)
        offset = segment.end
        os.pwrite(segment.fd, header + payload + bytes([TRAILER]) + padding, offset)
        segment.end += size
        self._unsynced += size
        return offset

    def _new_segment(self) -> None:
        sequence = self.segments[-1].sequence + 1 if self.segments else 1
        path = self.folder / f"{sequence:016x}{SEGMENT_SUFFIX}"
        spare = self._spare_take()
        if spare is not None:
            fd, scratch = spare
        else:
            # No spare: made here, as before the spare (the loop stalls while it is written).
            scratch = path.with_suffix(SCRATCH_SUFFIX)
            fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if spare is None:
                _zero_fill(fd, self.segment_bytes)  # no stop flag: always whole
                if self.fsync:
                    os.fsync(fd)
            # The spare was flushed by its thread: only its new name needs the folder's flush.
            os.rename(scratch, path)
            self._sync_folder()
        except BaseException:
            os.close(fd)
            # Not left behind until the next open: a disk that filled while it was written
            # would stay full (up to a segment) under a halted agent (review40).
            scratch.unlink(missing_ok=True)
            raise
        self.segments.append(_Segment(path, sequence, fd, 0, 0))
        self._spare_request()  # the next one, made while this one fills

    def _delete(self, segment: _Segment) -> None:
        os.close(segment.fd)
        segment.path.unlink()
        self._sync_folder()

    def _sync_folder(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        except BaseException:
            self._failed = True  # as for a segment's flush: never retried
            raise
        finally:
            os.close(fd)

    # ------------------------------------------------------------ open: scan, verify, cut

    def _open(self) -> None:
        for stale in self.folder.glob(f"*{SCRATCH_SUFFIX}"):
            # A segment whose making on the loop was interrupted, or a spare (half-made,
            # whole, or of another size: never checked, always deleted; the next is made
            # off the loop once open returns): never a segment.
            stale.unlink()
        names = sorted(p for p in self.folder.iterdir() if p.suffix == SEGMENT_SUFFIX)
        if len(names) > SEGMENTS_MAX:
            raise LimitExceeded("SEGMENTS_MAX", SEGMENTS_MAX, len(names), "log segments")
        try:
            for n, path in enumerate(names):
                self._scan(path, last=n == len(names) - 1)
            if self.segments and self.fsync:
                # What the scan found may be in the page cache alone (a kill -9 between a
                # write and its flush): flushed now, before the log reports it held and a
                # follower acknowledges it (review32). The folder too: a segment's name may
                # not be durable yet. Earlier segments were flushed before the last was used.
                os.fdatasync(self.segments[-1].fd)
                self._sync_folder()
        except BaseException:
            self.close()
            raise

    def _scan(self, path: Path, *, last: bool) -> None:
        try:
            sequence = int(path.stem, 16)
        except ValueError:
            raise LogDamaged(path, 0, "not a segment's name") from None
        fd = os.open(path, os.O_RDWR)
        size = os.fstat(fd).st_size
        segment = _Segment(path, sequence, fd, 0, 0)
        self.segments.append(segment)
        if self.segments[:-1] and self.segments[-2].sequence + 1 != sequence:
            # Compaction deletes from the front and a reset keeps the newest alone: a gap is
            # never ours, and the missing segment may have held a suffix's cut (review32).
            raise LogDamaged(path, 0, "segments out of order or one missing")
        if size != self.segment_bytes:
            raise LogDamaged(path, 0, "its size is not the segment size")
        # Mapped, not read: a 64 MiB segment read whole and its tail copied for each check
        # took ~256 MiB at peak (8.16 (d)); slices of the map copy only what they take.
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as data:
            self._scan_mapped(segment, data, size, last=last)

    def _scan_mapped(self, segment: _Segment, data: mmap.mmap, size: int, *, last: bool) -> None:
        path, fd = segment.path, segment.fd
        offset = 0
        torn = False
        while offset + HEADER.size <= size:
            header = data[offset : offset + HEADER.size]
            length, inverse, _synced, crc = HEADER.unpack(header)
            end = offset + HEADER.size + length  # the trailer's offset
            if inverse != length ^ LENGTH_MASK:
                # Zeros (the end, or a header never written) or a prefix of a header then
                # zeros (a write cut inside it) is torn; anything else is a damaged header.
                written = header.rstrip(b"\0")
                whole = HEADER.pack(length, length ^ LENGTH_MASK, 0, 0)
                torn = len(written) <= 8 and whole.startswith(written)
                break
            if end >= size:
                break  # a whole header whose length passes the segment: damage
            payload = data[offset + HEADER.size : end]
            crc_ok = zlib.crc32(payload, zlib.crc32(header[:12])) == crc
            if not crc_ok or data[end] != TRAILER:
                torn = data[end] == 0 or _has_zero_sector(data, offset, end + 1)
                break
            self._replay(segment, offset, payload)
            offset = -(-(end + 1) // RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
        segment.end = offset
        if _zeros(data, offset, size):
            return  # the zeros after the last record: a clean end
        if not last:
            raise LogDamaged(path, offset, "a record that is not whole before the last segment")
        if not torn:
            raise LogDamaged(path, offset, "a record that is not whole, with no unwritten sector")
        window_end = offset + self.unsynced_bytes_max
        if not _zeros(data, window_end, size):
            raise LogDamaged(path, offset, "a record that is not whole, with data after it")
        if _flushed_past(data, offset, min(window_end, size)):
            raise LogDamaged(path, offset, "a record that is not whole, flushed before a later one")
        # A torn tail: cut, and zeroed again so that the next scan finds the clean end.
        cut = _last_nonzero(data, offset, min(window_end, size)) - offset
        os.pwrite(fd, bytes(cut), offset)
        if self.fsync:
            os.fdatasync(fd)
        self.torn_bytes_cut = cut

    def _replay(self, segment: _Segment, offset: int, payload: bytes) -> None:
        first, items, hard, reset = cbor2.loads(payload)
        if reset:
            self.base, self.places = first - 1, _Index()
            self._base_from_reset = True
        elif not self.places and segment is self.segments[0] and not self._base_from_reset:
            # The oldest segment's first record says where compaction left the log: its first
            # index, or for a record without entries the index the next one would have had
            # (written as last_index + 1; review32: a segment of hard states alone kept no base).
            self.base = first - 1
        if items:
            if first <= self.base and not self._base_from_reset:
                # Entries at or below where the log seemed to start: a conflicting suffix cut
                # and rewritten after entries that compaction deleted (in the oldest segment or,
                # after a cut into an older segment, in a later one): the log restarts there.
                self.base, self.places = first - 1, _Index()
            if not self.base < first <= self.last_index + 1:
                raise LogDamaged(segment.path, offset, "entries that do not follow the log")
            self.places.truncate(first - self.base - 1)
            self.places.extend(segment, offset, len(items))
            segment.last_index = self.last_index
        self.hard = None if hard is None else (hard[0], hard[1])


def _zero_fill(
    fd: int,
    size: int,
    spare: _Spare | None = None,
    lock: threading.Lock | None = None,
    stop: threading.Event | None = None,
    flush_every: int | None = None,
) -> bool:
    """Writes `size` bytes of zeros from the file's start, ZERO_CHUNK_BYTES at a time; for a
    spare, its progress recorded under `lock`, `stop` checked between writes, and a flush each
    `flush_every` bytes (the last part is left to the caller's fsync). Whether it wrote them
    all (False: stopped)."""
    zeros = bytes(ZERO_CHUNK_BYTES)
    written = flushed = 0
    while written < size:
        if stop is not None and stop.is_set():
            return False
        written += os.write(fd, zeros[: size - written])
        if flush_every is not None and written - flushed >= flush_every and written < size:
            os.fdatasync(fd)
            flushed = written
        if spare is not None and lock is not None:
            with lock:
                spare.written = written
    return True


def _discard(fd: int, path: Path) -> None:
    """Closes and removes a spare no one will use. An error here changes nothing for the log
    (a leftover spare is deleted by the next open), so none is raised."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _zeros(data: mmap.mmap, start: int, end: int) -> bool:
    """Whether data[start:end] is all zeros, read ZERO_CHUNK_BYTES at a time."""
    for at in range(start, end, ZERO_CHUNK_BYTES):
        if data[at : min(end, at + ZERO_CHUNK_BYTES)].strip(b"\0"):
            return False
    return True


def _last_nonzero(data: mmap.mmap, start: int, end: int) -> int:
    """The offset just past the last non-zero byte of data[start:end] (start if none)."""
    at = end
    while at > start:
        lo = max(start, at - ZERO_CHUNK_BYTES)
        kept = len(data[lo:at].rstrip(b"\0"))
        if kept:
            return lo + kept
        at = lo
    return start


def _flushed_past(data: mmap.mmap, offset: int, window_end: int) -> bool:
    """Whether a whole record after `offset` (below window_end) says the segment was flushed
    past `offset` when it was written. Records written after a crash's last flush say at most
    that flush's end, which is at or before the torn record; so one that says more shows the
    bad record was flushed, then damaged. Only on the bad path: a check per 16 bytes."""
    start = offset + RECORD_ALIGN_BYTES
    for at in range(start, window_end - HEADER.size + 1, RECORD_ALIGN_BYTES):
        length, inverse, synced, crc = HEADER.unpack_from(data, at)
        if inverse != length ^ LENGTH_MASK or synced <= offset:
            continue
        end = at + HEADER.size + length
        if end >= len(data) or data[end] != TRAILER:
            continue
        if zlib.crc32(data[at + HEADER.size : end], zlib.crc32(data[at : at + 12])) == crc:
            return True
    return False


def _has_zero_sector(data: mmap.mmap, start: int, end: int) -> bool:
    """Whether some disk sector overlapping data[start:end] is all zeros within that range:
    the mark of a write that did not reach the disk whole."""
    sector = start - start % SECTOR_BYTES
    while sector < end:
        lo, hi = max(sector, start), min(sector + SECTOR_BYTES, end)
        if not data[lo:hi].strip(b"\0"):
            return True
        sector += SECTOR_BYTES
    return False
