"""The Raft log's spare segment (segspare; docs/data-model-v2.md 8.18 "The spare segment"):
the next segment is made ahead of need by a thread of the log's own, so that a roll to a new
segment costs the loop a rename and a folder flush, never the zero-fill (review40 item 3:
0.5-1.2 s of stall at load 12). What is checked here: where the zero-fill runs (a hook on the
writes, never a timing); a roll with no spare (no room, an error in the thread) makes the
segment on the loop, counted, and the log stays right; a failed spare's error is logged and,
when the loop's own attempt fails too, surfaces there as before; close stops and joins the
thread and leaves no spare; a leftover spare of any shape is deleted at open."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import logsegments
from superstatic_agent.logsegments import SegmentLog

SEGMENT_BYTES = 64 << 10
WINDOW_BYTES = 16 << 10
ENTRY_BYTES = 6_000  # ~10 records to a segment
ROLLS = 3


def open_log(folder: Path, **kw: Any) -> SegmentLog:
    return SegmentLog(folder, segment_bytes=SEGMENT_BYTES, unsynced_bytes_max=WINDOW_BYTES, **kw)


def entry(index: int, term: int = 1) -> tuple[int, int, int, bytes]:
    return index, term, 0, bytes([index % 251]) * ENTRY_BYTES


def fill_until(log: SegmentLog, segments: int, before_each: Callable[[], None]) -> None:
    """Appends (and syncs) entries until the log has `segments` segments."""
    while len(log.segments) < segments:
        before_each()
        log.append([entry(log.last_index + 1)])
        log.sync()


def spares(folder: Path) -> list[Path]:
    return sorted(folder.glob("spare-*"))


def held(log: SegmentLog) -> list[tuple[int, int, int, bytes]]:
    return list(log.read(log.base + 1, log.last_index + 1))


@pytest.fixture
def zero_writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One item per os.write (the zero-fill's call; records go with pwrite): whether it ran
    on the main thread, which here stands for the agent's loop."""
    calls: list[bool] = []
    real = os.write

    def write(fd: int, data: Any) -> int:
        calls.append(threading.current_thread() is threading.main_thread())
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return calls


def test_a_roll_runs_no_zero_fill_on_the_loop(tmp_path: Path, zero_writes: list[bool]) -> None:
    # review40: each roll wrote and flushed the whole next segment on the loop. With the spare
    # ready (waited for: no timing), a roll is a rename and a folder flush.
    log = open_log(tmp_path)
    try:
        fill_until(log, ROLLS, lambda: log.spare_wait())
        assert len(log.segments) == ROLLS
        assert zero_writes, "no segment was zero-filled at all"
        assert not any(zero_writes), "a segment was zero-filled on the loop's thread"
        assert log.spare_misses == 0
        assert [e[0] for e in held(log)] == list(range(1, log.last_index + 1))
    finally:
        log.close()
    again = open_log(tmp_path)
    try:
        assert [e[0] for e in held(again)] == list(range(1, again.last_index + 1))
        assert len(again.segments) == ROLLS
    finally:
        again.close()


def test_a_reset_takes_the_spare_too(tmp_path: Path, zero_writes: list[bool]) -> None:
    log = open_log(tmp_path)
    try:
        fill_until(log, 2, lambda: log.spare_wait())
        log.spare_wait()
        zero_writes.clear()
        log.reset(100)
        assert not any(zero_writes)
        assert log.base == 100 and log.last_index == 100
    finally:
        log.close()


def test_no_room_for_a_spare_makes_the_segment_on_the_loop_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zero_writes: list[bool]
) -> None:
    # The store keeps one segment of the disk free for the log (review40); a spare is made only
    # when the disk keeps that room beside it. Here the disk "has" one segment free.
    real_statvfs = os.statvfs

    class Small:
        def __init__(self, real: os.statvfs_result) -> None:
            self.f_frsize = real.f_frsize
            self.f_bavail = SEGMENT_BYTES // real.f_frsize

    monkeypatch.setattr(os, "statvfs", lambda p: Small(real_statvfs(p)))
    log = open_log(tmp_path)
    try:
        fill_until(log, 2, lambda: log.spare_wait())
        assert log.spare_misses == 2  # the first segment and the second
        assert log.spare_failures == 0
        assert zero_writes and all(zero_writes)  # made on the loop, as before the spare
        assert not spares(tmp_path)
        assert [e[0] for e in held(log)] == list(range(1, log.last_index + 1))
    finally:
        log.close()


def failing_fill(fail_on: Callable[[], bool]) -> Any:
    real = logsegments._zero_fill

    def fill(fd: int, size: int, *rest: Any) -> bool:
        if fail_on():
            os.write(fd, b"\0" * 4096)  # a part written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, size, *rest)

    return fill


def test_an_error_in_the_spare_thread_is_logged_counted_and_the_loop_makes_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    in_thread = lambda: threading.current_thread() is not threading.main_thread()  # noqa: E731
    monkeypatch.setattr(logsegments, "_zero_fill", failing_fill(in_thread))
    caplog.set_level(logging.WARNING, logger="superstatic.agent")
    log = open_log(tmp_path)
    try:
        log.spare_wait()
        assert not spares(tmp_path), "a failed spare was left on the disk"
        assert "spare segment could not be made (ENOSPC)" in caplog.text
        fill_until(log, 2, lambda: log.spare_wait())
        assert log.spare_failures == 2 and log.spare_misses == 2
        assert [e[0] for e in held(log)] == list(range(1, log.last_index + 1))
    finally:
        log.close()
    assert not list(tmp_path.glob("*.new"))


def test_when_the_loops_own_attempt_fails_too_the_error_surfaces_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk stays full: the roll's own making raises OSError as it did before the spare
    # (the agent halts, store_full), and nothing half-made stays.
    monkeypatch.setattr(logsegments, "_zero_fill", failing_fill(lambda: True))
    log = open_log(tmp_path)
    try:
        log.spare_wait()
        with pytest.raises(OSError, match="No space left"):
            log.append([entry(1)])
        assert log.spare_failures == 1
        assert not list(tmp_path.iterdir())
    finally:
        log.close()


def test_close_stops_a_spare_being_made_and_joins_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    real = logsegments._zero_fill

    def blocked(fd: int, size: int, *rest: Any) -> bool:
        if threading.current_thread() is not threading.main_thread():
            started.set()
            stop = rest[2]
            assert stop.wait(60), "close never stopped the spare"
        return real(fd, size, *rest)

    monkeypatch.setattr(logsegments, "_zero_fill", blocked)
    log = open_log(tmp_path)
    assert started.wait(60)
    worker = log._spare_worker
    assert worker is not None and worker.is_alive()
    assert len(spares(tmp_path)) == 1  # the file being made
    log.close()
    assert not worker.is_alive()
    assert not spares(tmp_path), "close left the spare being made"


def test_close_removes_a_ready_spare(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert log.spare_wait()
    assert [p.stat().st_size for p in spares(tmp_path)] == [SEGMENT_BYTES]
    log.close()
    assert not spares(tmp_path)
    assert not any(t.name == "log-spare" for t in threading.enumerate())


@pytest.mark.parametrize(
    "leftover",
    [b"\0" * SEGMENT_BYTES, b"\0" * 1000, b"", b"\0" * (2 * SEGMENT_BYTES), b"\xff" * 4096],
    ids=["whole", "half-made", "empty", "wrong-size", "garbage"],
)
def test_a_leftover_spare_is_deleted_at_open_and_the_log_opens(
    tmp_path: Path, leftover: bytes
) -> None:
    log = open_log(tmp_path, spare_thread=False)
    fill_until(log, 2, lambda: None)
    want = held(log)
    # A crash leaves the spare as it was (what close() would remove); its descriptor closes
    # with the process, as the segments' do here.
    spare = log._spare
    if spare is not None and spare.fd is not None:
        os.close(spare.fd)
    log._spare = None
    for segment in log.segments:
        os.close(segment.fd)
    (old,) = spares(tmp_path)
    old.write_bytes(leftover)
    again = open_log(tmp_path)
    try:
        assert held(again) == want
        assert not old.exists()
        again.spare_wait()
        assert [p.stat().st_size for p in spares(tmp_path)] == [SEGMENT_BYTES]
        fill_until(again, 3, lambda: again.spare_wait())
        assert again.spare_misses == 0
    finally:
        again.close()


def test_space_outstanding_counts_a_spare_being_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Storage.space() keeps a segment free beside the spare and also counts what a spare being
    # made has still to write (its zeros are not yet out of the disk's free space).
    started, release = threading.Event(), threading.Event()
    real = logsegments._zero_fill

    def slow(fd: int, size: int, *rest: Any) -> bool:
        if threading.current_thread() is not threading.main_thread():
            started.set()
            assert release.wait(60)
        return real(fd, size, *rest)

    monkeypatch.setattr(logsegments, "_zero_fill", slow)
    log = open_log(tmp_path)
    try:
        assert started.wait(60)
        assert log.spare_outstanding_bytes() == SEGMENT_BYTES
        release.set()
        assert log.spare_wait()
        assert log.spare_outstanding_bytes() == 0
    finally:
        release.set()
        log.close()


def test_fsync_off_makes_the_spare_without_a_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real(fd)))
    log = open_log(tmp_path, fsync=False)
    try:
        fill_until(log, 2, lambda: log.spare_wait())
        assert log.spare_misses == 0
        assert not flushed
    finally:
        log.close()


def test_the_spare_is_flushed_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop's own fdatasync queues behind the disk's writeback: a spare's zeros flushed all
    # at once put a whole segment ahead of it. Flushed every SPARE_FLUSH_BYTES instead.
    monkeypatch.setattr(logsegments, "SPARE_FLUSH_BYTES", 1 << 20)
    flushes: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            flushes.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    log = SegmentLog(tmp_path, segment_bytes=4 << 20, unsynced_bytes_max=WINDOW_BYTES)
    try:
        assert log.spare_wait()
        assert flushes == [1 << 20, 2 << 20, 3 << 20]  # then the whole file's fsync
    finally:
        log.close()
