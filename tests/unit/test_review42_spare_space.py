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
