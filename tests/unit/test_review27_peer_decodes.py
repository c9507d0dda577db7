"""Review 27 of branch fastdecode: what `peer_codec.decode`'s fast path costs on the frames it
does not answer itself (docs/data-model-v2.md 8.13).

Only a MSG is answered by the fast path (`_message_fast`); every other kind goes to
`decode_scanned`. Decoding any other frame by cbor2 first decodes it twice: every snapshot
CHUNK's data, and a stranger's JOIN or HELLO (the kinds the agent decodes from senders it does
not know), whose scan would have refused it before anything was built."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from typing import Any

from superstatic_agent import peer_codec as pc

from superstatic.protocol.codec import FrameError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import hostile

# A large field, as the frames of a hostile stranger or a snapshot's chunks carry.
FIELD_BYTES = 4 << 20
# What a refusal by the scan allocates (it builds nothing): far below one field.
REFUSAL_BYTES_MAX = 1 << 20


def traced_peak(call: Any, *args: Any) -> tuple[int, Any]:
    """Python memory `call` allocated at its peak (the input excluded), and its answer."""
    tracemalloc.start()
    try:
        try:
            answer: Any = call(*args)
        except FrameError as exc:
            answer = ("refused", str(exc), exc.reason)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, answer


def test_a_stranger_s_frame_the_scan_refuses_builds_nothing() -> None:
    """A JOIN, a HELLO (what a sender not in the cluster may send) and every kind but MSG with
    a 4 MiB field, then a simple value: the scan refuses them having built nothing; a cbor2
    decode before it would build the field (a text of 4-byte characters: 6x its bytes in Python
    memory) to throw it away. (Since branch textcap the scan refuses the text itself at its
    header, over PEER_TEXT_BYTES_MAX, before it reaches the simple value.)"""
    field = hostile.text("\U0001f600" * (FIELD_BYTES // 4))
    for kind in pc.PeerKind:
        if kind is pc.PeerKind.MSG:
            continue
        data = hostile.arr(hostile.uint(1), hostile.uint(int(kind)), field, b"\xf7")
        peak, answer = traced_peak(pc.decode, data)
        assert answer == traced_peak(pc.decode_scanned, data)[1]
        assert answer[2] == "PEER_TEXT_BYTES_MAX", answer
        assert peak < REFUSAL_BYTES_MAX, (kind.name, peak)


def test_a_snapshot_chunk_is_decoded_once() -> None:
    """A CHUNK of 4 MiB: its data is built once (by decode_scanned), not twice."""
    chunk = pc.SnapshotChunk("a", "b", 3, 10, 0, False, b"\x07" * FIELD_BYTES)
    data = pc.encode_chunk(chunk)
    peak, answer = traced_peak(pc.decode, data)
    assert answer == chunk
    scanned_peak, _ = traced_peak(pc.decode_scanned, data)
    assert scanned_peak < 1.5 * FIELD_BYTES  # (what the test relies on: one copy)
    assert peak < 1.5 * FIELD_BYTES, peak / FIELD_BYTES


def test_a_frame_that_is_not_bytes_is_refused_as_before() -> None:
    """Text where bytes belong (a caller's mistake): the scanned way's FrameError naming the
    type, not a TypeError from comparing its first character with an int."""
    for data in ("\x8e\x01\x00", "abc"):
        assert traced_peak(pc.decode, data)[1] == traced_peak(pc.decode_scanned, data)[1]
