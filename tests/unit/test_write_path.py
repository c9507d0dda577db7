"""benchmarks/write_path.py: it times what it says it times. No timing is asserted (a benchmark
reports numbers; the machine is shared and noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from superstatic_bench import write_path


def test_a_short_run_reports_every_row_and_syncs_where_it_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--ops", "3", "--warmup", "1", "--writers", "1,2", "--dir", str(tmp_path), "--json"]
    assert write_path.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    expected = [(what, shape, fsync) for what, shape, fsync in write_path.ROWS]
    assert [(r["what"], r["shape"], r["fsync"]) for r in rows] == expected * 2
    assert [r["writers"] for r in rows] == [1] * len(expected) + [2] * len(expected)
    for row in rows:
        assert row["p50_us"] > 0 and len(row["writer_p50s_us"]) == row["writers"]
        if row["what"] != "Storage.write":
            continue
        if not row["fsync"]:
            assert row["sync_p50_us"] is None  # fsync off: no explicit sync at all
        elif row["shape"] == "commit only":
            assert row["sync_p50_us"] == 0  # the commit index alone needs no explicit sync
        else:
            assert row["sync_p50_us"] > 0  # entries: synced before the write returns
    assert len(out["load_before"]) == 3
    assert list(tmp_path.iterdir()) == []  # the environments went with the run


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        write_path.main(["--ops", "0"])
    assert "--ops must be between 1 and OPS_MAX" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        write_path.main(["--writers", "1,x"])
    assert "--writers must be comma-separated whole numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        write_path.main(["--writers", "0"])
    assert "between 1 and WRITERS_MAX" in capsys.readouterr().err


def test_a_writer_that_dies_fails_its_row_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(folder: Path) -> None:
        raise OSError("no disk")

    # Forked writers inherit the patches.
    monkeypatch.setattr(write_path, "ROWS", (("fdatasync", "", True),))
    monkeypatch.setattr(write_path, "_fdatasync", broken)
    with pytest.raises(RuntimeError, match="a writer of the row 'fdatasync' exited with status"):
        write_path.measure(3, 0, 2, tmp_path)


def test_a_segment_row_writes_in_place_and_never_grows_the_file(tmp_path: Path) -> None:
    # The row stands for a log's append into a segment made before: if its writes grew the
    # file (an O_APPEND, a write past the end) it would time a journal commit it claims to avoid.
    for how in ("pre-zeroed", "fallocated"):
        folder = tmp_path / how
        folder.mkdir()
        step, close = write_path._segment(folder, how, write_path.SEGMENT_BYTES_MIN)
        try:
            for i in range(3):
                step(i)
        finally:
            close()
        data = (folder / "segment.bin").read_bytes()
        assert len(data) == write_path.SEGMENT_BYTES_MIN
        written = 3 * write_path.ENTRY_BYTES
        assert data[:written] == b"x" * written
        assert data[written:] == bytes(len(data) - written)
