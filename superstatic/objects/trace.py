"""The app's side of per-call tracing (SUPERSTATIC_TRACE=1; docs/performance.md, "Where one
call's time goes"). Off by default: every hook is `if trace.ENABLED:`, one module-level bool
read per call, nothing allocated when off.

Stamps of one call travel with its request (`connection._Request.trace`, a dict) from the
caller to the I/O thread and back in `Committed.trace`; the I/O thread also notes, per log
index, when an EVENTS frame carrying it arrived and when the replica had applied it (a call's
index is known only from its REPLY, which may come after its event). `finish()` adds the
caller's wake-up stamp and keeps the record. Both stores are bounded (oldest dropped).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from superstatic.protocol import trace as _proto

ENV_TRACE = "SUPERSTATIC_TRACE"
ENABLED: bool = os.environ.get(ENV_TRACE, "").strip() not in ("", "0")

# Finished call records kept for `take()`: a benchmark drains them; a forgotten tracing app
# keeps at most this many (~1 KB each).
TRACE_RECORDS_MAX = 10_000
# Log indexes whose (event received, replica applied) stamps are kept until a call claims them.
# The stream carries every entry, not only this app's: only the newest ones can still be
# claimed by a caller waiting for its REPLY.
TRACE_EVENT_INDEXES_MAX = 4_096

_lock = threading.Lock()
_records: deque[dict[str, Any]] = deque(maxlen=TRACE_RECORDS_MAX)
_events: OrderedDict[int, tuple[int, int]] = OrderedDict()


def enable(on: bool = True) -> None:
    """Turns tracing on or off in this process (tests, benchmarks); the env var sets it at
    import. Calls already in flight keep what they started with."""
    global ENABLED
    ENABLED = on


def begin() -> dict[str, int]:
    """A new call's stamps, starting with "call" (the caller, before queueing)."""
    return {"call": time.monotonic_ns()}


def note_events(first_index: int, last_index: int, rx_ns: int, applied_ns: int) -> None:
    """The I/O thread applied entries first_index..last_index from one EVENTS frame."""
    with _lock:
        # A huge catch-up frame: only its newest entries can belong to a waiting caller.
        first_kept = max(first_index, last_index - TRACE_EVENT_INDEXES_MAX + 1)
        for index in range(first_kept, last_index + 1):
            _events[index] = (rx_ns, applied_ns)
        while len(_events) > TRACE_EVENT_INDEXES_MAX:
            _events.popitem(last=False)


def feed_events(feeder: Any, body: dict[str, Any]) -> bool:
    """`feeder.feed_events(body)` (client/stream.py), noting when each entry it applied arrived
    and when it was applied (I/O thread, tracing only)."""
    rx_ns = time.monotonic_ns()
    before = feeder.sink.applied_index
    advanced = bool(feeder.feed_events(body))
    after = feeder.sink.applied_index
    if after > before:
        note_events(before + 1, after, rx_ns, time.monotonic_ns())
    return advanced


def finish(stamps: dict[str, int], index: int, acks: dict[str, int], agent: str) -> None:
    """The caller woke with its entry applied locally: stamp, assemble, keep."""
    stamps["woken"] = time.monotonic_ns()
    with _lock:
        seen = _events.pop(index, None)
    if seen is not None:
        stamps["event_rx"], stamps["replica_applied"] = seen
    record = _proto.assemble(stamps)
    record.update(index=index, stamps=dict(stamps), acks=dict(acks), agent=agent)
    with _lock:
        _records.append(record)


def finish_committed(committed: Any, agent: str) -> None:
    """finish() for a connection's Committed, if its call was traced (a test double's or an
    untraced call's has no stamps)."""
    stamps = getattr(committed, "trace", None)
    if stamps is not None:
        finish(stamps, committed.index, getattr(committed, "trace_acks", None) or {}, agent)


def take() -> list[dict[str, Any]]:
    """Every record kept so far (and forgets them)."""
    with _lock:
        out = list(_records)
        _records.clear()
    return out
