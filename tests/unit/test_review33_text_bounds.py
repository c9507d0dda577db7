"""review33 of the text bounds (docs/data-model-v2.md 8.13 "Bounded"): positions the branch's
tests did not reach. Each measures the Python memory a refusal allocates (tracemalloc, the
frame built before measuring), like tests/unit/test_text_bounds.py. No timing is asserted."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest
from superstatic_agent import peer_codec as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import hostile

from superstatic.protocol.errors import LimitExceeded, ProtocolError

# Python memory one refusal may allocate beyond the byte strings it copies (as in
# test_text_bounds.py).
REFUSAL_BYTES_MAX = 1 << 20
WIDE = "\U0001f600"


def test_a_text_in_an_entries_blob_the_shallow_path_decodes_is_refused_unbuilt() -> None:
    # The largest blob _entries_shallow decodes, its one entry's data a text.
    blob_bytes = 1 + pc.ENTRY_ITEMS * pc.ENTRIES_PER_MESSAGE_MAX
    text = hostile.text(WIDE * ((blob_bytes - 20) // 4))
    entries = hostile.arr(hostile.arr(hostile.uint(1), hostile.uint(1), hostile.uint(0), text))
    assert len(entries) <= blob_bytes
    data = hostile.arr(
        hostile.uint(1),
        hostile.uint(0),  # MSG
        hostile.uint(5),  # APPEND
        hostile.text("a"),
        hostile.text("b"),
        hostile.uint(1),
        hostile.uint(0),
        hostile.uint(0),
        hostile.blob(entries),
        hostile.uint(0),
        b"\xf4",
        hostile.uint(0),
        hostile.blob(b""),
        b"\xf6",
    )
    tracemalloc.start()
    try:
        with pytest.raises((ProtocolError, LimitExceeded), match="ENTRIES_TEXT_BYTES_MAX"):
            pc.decode(data)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # The blob itself is copied once (as in test_text_bounds.py); the text must not be built.
    assert peak < REFUSAL_BYTES_MAX + len(entries), peak
