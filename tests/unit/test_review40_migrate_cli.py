"""review40: docs/operations.md ("Upgrading to format 5") tells the operator to run
`superstatic-agent --migrate --data-dir D [--log-segment-bytes N]`; the command must take the
flag and make the log at that size (8.16 (e): the size is stored with the log)."""

from __future__ import annotations

from pathlib import Path

from superstatic_agent import cli
from superstatic_agent.storage import Storage
from test_storage_log import MAP_BYTES, write_format3_store

SEGMENT_BYTES = 24 << 20  # not the default (64 MiB): the flag must be what made the log


def test_migrate_takes_the_documented_log_segment_bytes(tmp_path: Path) -> None:
    store = tmp_path / "a"
    write_format3_store(store, snapshot_index=0, last=5)
    argv = ["--migrate", "--data-dir", str(store), "--map-bytes", str(MAP_BYTES)]
    assert cli.main([*argv, "--log-segment-bytes", str(SEGMENT_BYTES)]) == 0
    storage = Storage(store, map_bytes=MAP_BYTES)
    try:
        assert storage.log.segment_bytes == SEGMENT_BYTES
        assert len(storage.load().entries) == 5
    finally:
        storage.close()
    assert all(p.stat().st_size == SEGMENT_BYTES for p in (store / "raftlog").glob("*.seg"))
