"""agent/logsegments.py, the record file of a Raft log of its own (not wired into the agent):
what a crash can leave is cut, what it cannot is refused, and truncation and compaction survive
a reopen."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from superstatic_agent.logsegments import HEADER, LogDamaged, LogFailed, SegmentLog

SEGMENT_BYTES = 4096
UNSYNCED_BYTES_MAX = 1024


def open_log(folder: Path) -> SegmentLog:
    return SegmentLog(folder, segment_bytes=SEGMENT_BYTES, unsynced_bytes_max=UNSYNCED_BYTES_MAX)


def entry(index: int, term: int = 1, size: int = 40) -> tuple[int, int, int, bytes]:
    return index, term, 0, bytes([index % 251 + 1]) * size


def held(log: SegmentLog) -> list[tuple[int, int, int, bytes]]:
    return [log.entry(i) for i in range(log.base + 1, log.last_index + 1)]


def segment_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.seg"))


def test_entries_and_hard_state_survive_a_reopen(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([entry(1), entry(2)], hard=(1, "a"))
    log.append([entry(3)])
    log.sync()
    assert log.syncs == 1  # one fdatasync for both records
    log.close()
    again = open_log(tmp_path)
    assert held(again) == [entry(1), entry(2), entry(3)]
    assert again.hard == (1, "a") and again.torn_bytes_cut == 0


def test_a_torn_last_record_is_cut_at_every_byte_offset(tmp_path: Path) -> None:
    # The last record was being written when the machine stopped: only its first `kept`
    # bytes reached the disk (the rest reads as the segment's zeros). Whatever `kept`, the
    # records before it stay, the torn one goes, and the log takes appends again.
    source = tmp_path / "source"
    log = open_log(source)
    log.append([entry(1), entry(2)], hard=(2, "b"))
    log.sync()
    start = log.segments[-1].end
    log.append([entry(3, 2, size=600)])
    end = log.segments[-1].end
    log.close()
    (segment,) = segment_files(source)
    whole = segment.read_bytes()
    written = len(whole[start:end].rstrip(b"\0"))  # up to its trailer; the padding is zeros
    assert written > 600
    for kept in range(written):
        folder = tmp_path / f"torn{kept}"
        shutil.copytree(source, folder)
        torn = whole[: start + kept] + bytes(len(whole) - start - kept)
        (folder / segment.name).write_bytes(torn)
        reopened = open_log(folder)
        assert held(reopened) == [entry(1), entry(2)], kept
        assert reopened.hard == (2, "b")
        reopened.append([entry(3, 2)])
        reopened.sync()
        reopened.close()
        assert held(open_log(folder)) == [entry(1), entry(2), entry(3, 2)], kept


def test_a_record_torn_in_its_middle_sector_is_cut(tmp_path: Path) -> None:
    # Sectors may reach the disk out of order: the header's sector and the last one written,
    # one in the middle not.
    log = open_log(tmp_path)
    log.append([entry(1)])
    log.sync()
    start = log.segments[-1].end
    log.append([entry(2, size=900)])
    log.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    hole = start - start % 512 + 512
    data[hole : hole + 512] = bytes(512)
    segment.write_bytes(bytes(data))
    assert held(open_log(tmp_path)) == [entry(1)]


def test_a_flipped_bit_in_the_middle_is_refused_not_cut(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for index in range(1, 8):
        log.append([entry(index)])
        log.sync()
    offset = log.places[2].offset + 20  # inside entry 3's record
    log.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0x10
    segment.write_bytes(bytes(data))
    with pytest.raises(LogDamaged, match="not a torn tail"):
        open_log(tmp_path)
    assert segment.read_bytes() == bytes(data)  # nothing was cut


def test_a_flipped_bit_in_the_last_record_is_refused_too(tmp_path: Path) -> None:
    # No sector of the record is zeros: a write that reached the disk whole, then damaged.
    log = open_log(tmp_path)
    log.append([entry(1)])
    log.append([entry(2)])
    offset = log.places[1].offset + 12
    log.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(LogDamaged):
        open_log(tmp_path)


def test_damage_in_a_segment_before_the_last_is_refused(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    index = 1
    while len(log.segments) < 3:
        log.append([entry(index, size=300)])
        index += 1
    log.sync()
    log.close()
    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[200:712] = bytes(512)  # a whole sector of its middle record, as if never written
    first.write_bytes(bytes(data))
    with pytest.raises(LogDamaged, match="before the last segment"):
        open_log(tmp_path)


def test_a_truncated_suffix_then_appends_survive_a_reopen(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([entry(i) for i in range(1, 6)], hard=(1, "a"))
    log.append([entry(3, 2), entry(4, 2)], hard=(2, "b"))  # a new leader's conflicting suffix
    log.append([entry(5, 2)])
    log.sync()
    expected = [entry(1), entry(2), entry(3, 2), entry(4, 2), entry(5, 2)]
    assert held(log) == expected
    log.close()
    again = open_log(tmp_path)
    assert held(again) == expected and again.hard == (2, "b")


def test_compaction_deletes_whole_segments_and_a_reopen_agrees(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    index = 1
    log.append([], hard=(3, "c"))  # the only hard state record: in the first segment
    while len(log.segments) < 4:
        log.append([entry(index, 3, size=300)])
        index += 1
    log.sync()
    last = log.last_index
    upto = log.segments[1].last_index
    assert log.compact(upto) == 2
    assert len(segment_files(tmp_path)) == 2
    kept = held(log)
    assert log.base <= upto and kept[-1][0] == last
    log.close()
    again = open_log(tmp_path)
    assert (again.base, held(again)) == (log.base, kept)
    assert again.hard == (3, "c")  # carried by every record, not lost with its segment


def test_compaction_after_a_suffix_cut_across_segments_reopens(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    index = 1
    while len(log.segments) < 2:
        log.append([entry(index, size=300)])
        index += 1
    cut = index - 3  # in the first segment
    log.append([entry(cut, 2, size=300)])  # a conflicting suffix from the first segment on
    log.append([entry(cut + 1, 2, size=300)])
    log.sync()
    expected_tail = [entry(cut, 2, size=300), entry(cut + 1, 2, size=300)]
    log.compact(log.segments[0].last_index)
    assert held(log)[-2:] == expected_tail
    base = log.base
    log.close()
    again = open_log(tmp_path)
    assert again.base == base and held(again)[-2:] == expected_tail


def test_a_reset_drops_every_entry_and_survives_a_reopen(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([entry(1), entry(2)], hard=(1, "a"))
    log.reset(40)  # a snapshot at 40 installed
    assert (log.base, log.last_index) == (40, 40)
    log.append([entry(41)])
    log.sync()
    log.close()
    assert len(segment_files(tmp_path)) == 1
    again = open_log(tmp_path)
    assert (again.base, held(again), again.hard) == (40, [entry(41)], (1, "a"))


def test_a_half_made_segment_is_ignored(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([entry(1)])
    log.sync()
    log.close()
    (tmp_path / "0000000000000002.new").write_bytes(b"\0" * 100)
    again = open_log(tmp_path)
    try:
        assert held(again) == [entry(1)]
        # Gone at open; the spare thread may already be making a spare of its own (CI saw it).
        assert not (tmp_path / "0000000000000002.new").exists()
    finally:
        again.close()
    assert not list(tmp_path.glob("*.new"))  # close removes the spare


def test_appends_rewrite_a_made_segment_and_never_grow_it(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([entry(1)])
    log.sync()
    (segment,) = segment_files(tmp_path)
    assert os.path.getsize(segment) == SEGMENT_BYTES
    log.close()


def test_an_unwritten_sector_far_before_the_end_is_refused(tmp_path: Path) -> None:
    # It looks like a torn write, but records synced long after it follow: only the last
    # unsynced_bytes_max bytes can be torn by a crash.
    log = open_log(tmp_path)
    for index in range(1, 8):
        log.append([entry(index, size=300)])
        log.sync()
    offset = log.places[1].offset  # entry 2's record, > UNSYNCED_BYTES_MAX before the end
    assert log.segments[-1].end - offset > UNSYNCED_BYTES_MAX
    log.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[offset : offset + HEADER.size] = bytes(HEADER.size)  # its header, as if never written
    segment.write_bytes(bytes(data))
    with pytest.raises(LogDamaged, match="with data after it"):
        open_log(tmp_path)


def test_a_record_damaged_after_open_is_refused_on_read(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([entry(1)])
    log.append([entry(2)])
    log.sync()
    (segment,) = segment_files(tmp_path)
    with segment.open("r+b") as file:
        file.seek(log.places[0].offset + 20)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0x04]))
    with pytest.raises(LogDamaged, match="checksum mismatch on read"):
        log.entry(1)
    assert log.entry(2) == entry(2)
    log.close()


# ---------------------------------------------------------------- review32 (hostile review)


def fill_until_segments(log: SegmentLog, count: int, index: int, term: int = 1) -> int:
    """Appends 300-byte entries from `index` on until the log has `count` segments; returns
    the next index."""
    while len(log.segments) < count:
        log.append([entry(index, term, size=300)])
        index += 1
    return index


def test_compaction_after_a_cut_into_an_older_segment_keeps_what_is_not_compacted(
    tmp_path: Path,
) -> None:
    # The first segment holds 1..k, the second k+1..m (an old leader's uncommitted suffix),
    # the third a new leader's record cutting at c < k and what follows it. Compacting up to
    # k must keep k+1.. (in the third segment, not in the segment compaction keeps first) and
    # the reopen must agree. Before the fix compaction emptied the log in memory and the
    # reopen refused a sound log as damaged ("entries that do not follow the log").
    log = open_log(tmp_path)
    following = fill_until_segments(log, 2, 1)
    k = following - 2  # the last entry of the first segment
    fill_until_segments(log, 3, following)
    c = k - 2
    for index in range(c, k + 3):
        log.append([entry(index, 2, size=300)])
    log.sync()
    assert log.segments[0].last_index == k
    expected = [entry(i, 2, size=300) for i in range(c, k + 3)]
    log.compact(k)
    assert log.base <= k and held(log)[-len(expected) :] == expected
    base = log.base
    log.close()
    again = open_log(tmp_path)
    assert (again.base, held(again)[-len(expected) :]) == (base, expected)


def test_compaction_when_the_last_segment_holds_no_record_keeps_base_and_hard_state(
    tmp_path: Path,
) -> None:
    # The first record of a new segment was torn by a crash (cut at open): the last segment
    # holds no record. Compacting everything then deleted the only segment holding the hard
    # state (the vote) and the log's position: the reopen found no vote and an empty log at 0.
    log = open_log(tmp_path)
    log.append([], hard=(3, "c"))
    following = fill_until_segments(log, 2, 1, term=3)
    last_synced = following - 2
    log.close()
    newest = segment_files(tmp_path)[-1]
    newest.write_bytes(bytes(SEGMENT_BYTES))  # its only record never reached the disk
    log = open_log(tmp_path)
    assert (log.last_index, log.hard) == (last_synced, (3, "c"))
    log.compact(last_synced)
    log.close()
    again = open_log(tmp_path)
    assert again.hard == (3, "c")  # a lost vote lets this node vote twice in term 3
    assert (again.base, again.last_index) == (last_synced, last_synced)


def test_compaction_when_the_last_segment_holds_only_hard_states_keeps_the_base(
    tmp_path: Path,
) -> None:
    # The segment roll-over came with a vote (a record without entries): compacting every
    # entry left the log's position nowhere on disk, and the reopen started it at 0.
    log = open_log(tmp_path)
    index = 1
    while log.segments[-1].end + 400 <= SEGMENT_BYTES if log.segments else True:
        log.append([entry(index, size=300)])
        index += 1
    while len(log.segments) < 2:
        log.append([], hard=(4, "d"))  # the records that open the second segment
    log.sync()
    assert log.segments[-1].last_index == 0
    last = log.last_index
    log.compact(last)
    assert (log.base, log.last_index) == (last, last)
    log.close()
    again = open_log(tmp_path)
    assert (again.base, again.last_index, again.hard) == (last, last, (4, "d"))


def test_a_flipped_bit_in_a_length_field_is_refused_not_cut(tmp_path: Path) -> None:
    # A length one larger points its trailer at the record's zero padding: the record then
    # read as torn, and it and every synced record after it (within the window) were zeroed.
    log = open_log(tmp_path)
    for index in range(1, 4):
        log.append([entry(index, size=40)])
        log.sync()
    offset = log.places[1].offset  # entry 2's record, synced, with two records after it
    log.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    length = int.from_bytes(data[offset : offset + 4], "big")
    assert length % 2 == 0 and data[offset + HEADER.size + length + 1] == 0  # even, padded
    data[offset + 3] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(LogDamaged):
        open_log(tmp_path)
    assert segment.read_bytes() == bytes(data)  # nothing was cut


def test_a_failed_fdatasync_is_never_reported_durable_by_a_later_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a failed fdatasync Linux may mark the dirty pages clean ("fsyncgate"): a second
    # fdatasync then succeeds without the record on disk. The log must stay failed.
    log = open_log(tmp_path)
    log.append([entry(1)])
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        log.sync()
    monkeypatch.setattr(os, "fdatasync", real)
    with pytest.raises(LogFailed):
        log.sync()  # before the fix: returned, and the caller would ack entry 1
    with pytest.raises(LogFailed):
        log.append([entry(2)])
    log.close()


def test_a_length_damaged_after_open_is_refused_without_reading_it(tmp_path: Path) -> None:
    # A read trusted the length on disk: a damaged one asked for up to 4 GiB.
    import tracemalloc

    log = open_log(tmp_path)
    log.append([entry(1)])
    log.sync()
    (segment,) = segment_files(tmp_path)
    with segment.open("r+b") as file:
        file.seek(log.places[0].offset)
        file.write((0x7FFF0000).to_bytes(4, "big"))
    tracemalloc.start()
    try:
        with pytest.raises(LogDamaged):
            log.entry(1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        log.close()
    assert peak < 16 * SEGMENT_BYTES


def test_a_missing_segment_in_the_middle_is_refused(tmp_path: Path) -> None:
    # Compaction deletes from the front and a reset keeps only the newest: a gap in the
    # sequence is never ours. Here the missing segment held a conflicting suffix's cut: without
    # it the older entries of term 1 came back as if never truncated, and the log opened.
    log = open_log(tmp_path)
    index = 1
    while not log.segments or log.segments[-1].end + 400 <= SEGMENT_BYTES:
        log.append([entry(index, size=300)])
        index += 1
    last = index - 1
    while len(log.segments) < 2:
        log.append([], hard=(2, "b"))
    for cut in range(last - 3, last + 1):  # the first of them cuts the suffix
        log.append([entry(cut, 2, size=300)])
    assert len(log.segments) == 2
    while len(log.segments) < 3:
        log.append([], hard=(2, "b"))
    log.append([entry(last + 1, 2, size=300)])
    log.sync()
    log.close()
    files = segment_files(tmp_path)
    assert len(files) == 3
    files[1].unlink()
    with pytest.raises(LogDamaged):
        open_log(tmp_path)


def test_damage_that_looks_torn_with_synced_records_after_it_is_refused(tmp_path: Path) -> None:
    # An entry of zeros gives its record a sector of zeros of its own; a bit flipped elsewhere
    # in it then reads as "sectors reached the disk out of order". Records synced after it show
    # it was synced too: before the fix it and they were cut (zeroed), acknowledged entries lost.
    log = SegmentLog(tmp_path, segment_bytes=8192, unsynced_bytes_max=4096)
    log.append([(1, 1, 0, bytes(1100))])
    log.sync()
    log.append([entry(2)])
    log.sync()
    log.append([entry(3)])
    log.sync()
    offset = log.places[0].offset + 20  # inside entry 1's record, before its zeros
    log.close()
    (segment,) = segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(LogDamaged):
        SegmentLog(tmp_path, segment_bytes=8192, unsynced_bytes_max=4096)
    assert segment.read_bytes() == bytes(data)  # nothing was cut


def test_open_makes_what_it_found_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a kill -9 between a write and its fdatasync the record is in the page cache: the
    # scan finds it whole, the log reports it held (a follower acknowledges it), and a power
    # loss then takes it. Open must flush the last segment (and the folder) before it returns.
    log = open_log(tmp_path)
    log.append([entry(1)])
    log.close()  # never synced: what a kill -9 leaves
    flushed: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        flushed.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    again = open_log(tmp_path)
    (segment,) = segment_files(tmp_path)
    assert held(again) == [entry(1)]
    assert os.stat(segment).st_ino in flushed
    again.close()
