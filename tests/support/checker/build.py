"""Hand-written histories for tests: one line per operation instead of two events.

events_of(
    op(0, "write", 1, 0, 1),                  # p0 wrote 1 during [0, 1], ok
    op(1, "read", 1, 2, 3),                   # p1 read 1 during [2, 3]
    op(2, "write", 2, 4, 5, status="info"),   # p2's write of 2: outcome unknown
    op(3, "write", 3, 6, None),               # p3 never heard back: an info too
)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .history import Event, Key, Status, Value


@dataclass(frozen=True, slots=True)
class Spec:
    process: int
    f: str
    value: Value  # a read's answer; anything else's argument
    call_time: int
    return_time: int | None  # None: no completion recorded
    status: Status
    key: Key


def op(
    process: int,
    f: str,
    value: Value,
    call_time: int,
    return_time: int | None,
    *,
    status: Status = "ok",
    key: Key = "x",
) -> Spec:
    return Spec(process, f, value, call_time, return_time, status, key)


def events_of(*specs: Spec, reads: Iterable[str] = ("read",)) -> list[Event]:
    """The events, in time order (a completion before an invoke at the same time, so a process
    may invoke again at the instant its last operation returned)."""
    read_fs = set(reads)
    timed: list[tuple[int, int, Event]] = []
    for s in specs:
        is_read = s.f in read_fs
        invoke_value = None if is_read else s.value
        timed.append(
            (s.call_time, 1, Event("invoke", s.process, s.f, s.key, invoke_value, s.call_time))
        )
        if s.return_time is None:
            continue
        assert s.return_time >= s.call_time
        answer = s.value if s.status == "ok" else None if is_read else s.value
        completion = Event(s.status, s.process, s.f, s.key, answer, s.return_time)
        # An operation that took no time completes after its own invoke, still before others'.
        timed.append((s.return_time, 0 if s.return_time > s.call_time else 2, completion))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [event for _, _, event in timed]
