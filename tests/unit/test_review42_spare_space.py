"""review42: Storage.space() with the Raft log's spare segment being made (segspare; docs/data-
model-v2.md 8.18 "The spare segment"). The zeros a spare has still to write are not yet out of
the disk's free space, so the store's room must not count them (or LMDB grows into the room the
spare is about to take, and one of the two hits ENOSPC). segspare's own test checked the log's
`spare_outstanding_bytes()` alone: dropping the term from Storage.space() left every test green.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import logsegments
from superstatic_agent.storage import Storage

SEGMENT_BYTES = 1 << 20
MAP_BYTES = 256 << 20  # far above the disk's (faked) free space: the disk bounds the room
FREE_SEGMENTS = 3  # the disk's free space: enough for a spare (SPARE_ROOM_SEGMENTS_MIN) and more
WAIT_S = 60.0


def test_the_room_excludes_the_zeros_a_spare_being_made_has_still_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_statvfs = os.statvfs

    class Disk:
        """The real file system's block size with FREE_SEGMENTS segments free."""

        def __init__(self, path: Any) -> None:
            self.f_frsize = real_statvfs(path).f_frsize
            self.f_bavail = FREE_SEGMENTS * SEGMENT_BYTES // self.f_frsize

    started, release = threading.Event(), threading.Event()
    real_fill = logsegments._zero_fill

    def held(fd: int, size: int, *rest: Any) -> bool:
        if threading.current_thread() is not threading.main_thread():
            started.set()  # the spare thread, before its first write
            assert release.wait(WAIT_S)
        return real_fill(fd, size, *rest)

    monkeypatch.setattr(os, "statvfs", Disk)
    monkeypatch.setattr(logsegments, "_zero_fill", held)
    store = Storage(tmp_path / "a", map_bytes=MAP_BYTES, log_segment_bytes=SEGMENT_BYTES)
    try:
        assert started.wait(WAIT_S), "no spare was started"
        assert store.log.spare_outstanding_bytes() == SEGMENT_BYTES
        space = store.space()
        # One segment kept free for the log, one about to be written by the spare: at most
        # one of the three left for LMDB.
        assert space.free_bytes <= (FREE_SEGMENTS - 2) * SEGMENT_BYTES, space
    finally:
        release.set()
        store.close()


def test_a_roll_while_the_spare_is_being_made_waits_for_it_and_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # segspare's own tests waited for the spare (spare_wait) before every roll: a roll that
    # took the slot without waiting for the thread left every test green, and made the segment
    # on the loop while the thread went on writing a second file nobody would take (64 MiB
    # and a descriptor until the next open). The thread is held until the roll joins it.
    release = threading.Event()
    real_fill = logsegments._zero_fill
    loop_writes: list[int] = []
    real_write = os.write

    def held(fd: int, size: int, *rest: Any) -> bool:
        if threading.current_thread() is not threading.main_thread():
            assert release.wait(WAIT_S)
        return real_fill(fd, size, *rest)

    def write(fd: int, data: Any) -> int:
        if threading.current_thread() is threading.main_thread():
            loop_writes.append(len(data))  # the zero-fill's writes (records go with pwrite)
        return real_write(fd, data)

    monkeypatch.setattr(logsegments, "_zero_fill", held)
    monkeypatch.setattr(os, "write", write)
    log = logsegments.SegmentLog(
        tmp_path, segment_bytes=SEGMENT_BYTES, unsynced_bytes_max=SEGMENT_BYTES // 4
    )
    try:
        worker = log._spare_worker
        assert worker is not None and worker.is_alive()
        real_join = worker.join

        def join(timeout: float | None = None) -> None:
            release.set()  # the roll waits for the thread: now let it finish
            real_join(timeout)

        worker.join = join  # type: ignore[method-assign]
        log.append([(1, 1, 0, b"x")])  # the first segment: a roll with the spare not ready
        log.sync()
        assert log.spare_misses == 1
        assert not loop_writes, "the segment was zero-filled on the loop"
        assert log.spare_wait(WAIT_S)
        assert len(list(tmp_path.glob("spare-*"))) == 1, "more than one spare"
    finally:
        release.set()
        log.close()
    assert not list(tmp_path.glob("spare-*"))


def spare_descriptors(folder: Path) -> list[str]:
    """This process's open descriptors on a spare's file in `folder` (removed or not): only
    this test's, whatever other tests of the process left open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since the listing
        if target.startswith(f"{folder}/spare-"):
            held.append(target)
    return held


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_bug_in_the_spare_thread_leaves_no_descriptor_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception other than OSError in the thread (a bug) removed the spare's file but kept
    # its descriptor open for the process's life: one more at every roll while the bug stays.
    def broken(fd: int, size: int, *rest: Any) -> bool:
        raise RuntimeError("a bug in the zero-fill")

    monkeypatch.setattr(logsegments, "_zero_fill", broken)
    log = logsegments.SegmentLog(
        tmp_path, segment_bytes=SEGMENT_BYTES, unsynced_bytes_max=SEGMENT_BYTES // 4
    )
    try:
        assert not log.spare_wait(WAIT_S)
        assert not list(tmp_path.glob("spare-*"))
        assert not spare_descriptors(tmp_path), "the failed spare's descriptor is still open"
    finally:
        log.close()
