"""Prefetch (docs/virtual-heap.md 3.3, client/heap_io.py): a walking app's LOADs ask the agent
for the small nodes their answers reference; a single lookup never does. The clock is a fake
(monkeypatched `time.monotonic`): the tests judge the policy, never timings."""

from __future__ import annotations

from typing import Any

import pytest
from support.heap_io_fake import setup, turn

from superstatic.client import heap_io
from superstatic.client.stream import Loaded
from superstatic.protocol import wire
from superstatic.protocol.errors import Error


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(heap_io.time, "monotonic", fake)
    return fake


def _fault(heap: heap_io.HeapIo, io: Any, clock: _Clock, gap_ms: float, oid: str) -> int:
    """One fault `gap_ms` after the last, sent in its own turn: the LOAD's prefetch_bytes."""
    clock.now += gap_ms / 1000
    heap.request([oid], [], False)
    turn(heap, io)
    body: dict[str, Any] = io.loads[-1]
    return int(body["prefetch_bytes"])


def test_a_single_lookup_never_prefetches(clock: _Clock) -> None:
    heap, io, _replica = setup()
    heap.request([], [("@roots", ["c"])], False)  # root("c"): its key...
    turn(heap, io)
    assert io.loads[-1]["prefetch_bytes"] == 0
    assert _fault(heap, io, clock, 1, "r1") == 0  # ...then the root: still not a walk
    # Later lookups, each alone, never prefetch either.
    assert _fault(heap, io, clock, 5_000, "r2") == 0
    assert _fault(heap, io, clock, 5_000, "r3") == 0


def test_a_burst_of_faults_prefetches_from_its_third(clock: _Clock) -> None:
    heap, io, _replica = setup()
    gap = heap_io.PREFETCH_WALK_MS / 2
    asked = [_fault(heap, io, clock, gap, f"n{i}") for i in range(6)]
    walk = heap_io.PREFETCH_WALK_FAULTS - 1
    assert asked == [0] * walk + [heap_io.PREFETCH_BYTES_DEFAULT] * (6 - walk)
    # A pause ends the walk: the next fault is a lookup again.
    assert _fault(heap, io, clock, heap_io.PREFETCH_WALK_MS * 3, "m") == 0


def test_a_slow_answer_does_not_end_a_walk(clock: _Clock) -> None:
    heap, io, _replica = setup()
    gap = heap_io.PREFETCH_WALK_MS / 2
    asked = []
    for i in range(4):
        asked.append(_fault(heap, io, clock, gap, f"n{i}"))
        clock.now += heap_io.PREFETCH_WALK_MS * 10 / 1000  # the round trip
        heap.on_loaded(Loaded())
    walk = heap_io.PREFETCH_WALK_FAULTS - 1
    assert asked == [0] * walk + [heap_io.PREFETCH_BYTES_DEFAULT] * (4 - walk)


def test_key_loads_of_a_walk_prefetch_too(clock: _Clock) -> None:
    heap, io, _replica = setup()
    for i in range(heap_io.PREFETCH_WALK_FAULTS):
        clock.now += 0.001
        heap.request([], [("bucket", [f"o{i}"])], False)
    turn(heap, io)
    assert len(io.loads) == 1  # one turn: one LOAD
    assert io.loads[0]["prefetch_bytes"] == heap_io.PREFETCH_BYTES_DEFAULT


def test_the_environment_sets_the_bytes_and_is_checked(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(heap_io.ENV_PREFETCH_BYTES, "0")
    heap, io, _replica = setup()
    assert [_fault(heap, io, clock, 1, f"n{i}") for i in range(5)] == [0] * 5
    monkeypatch.setenv(heap_io.ENV_PREFETCH_BYTES, "4096")
    heap, io, _replica = setup()
    assert [_fault(heap, io, clock, 1, f"n{i}") for i in range(3)][-1] == 4096
    for bad in ("-1", "64k", str(wire.LOAD_PREFETCH_BYTES_MAX + 1)):
        monkeypatch.setenv(heap_io.ENV_PREFETCH_BYTES, bad)
        with pytest.raises(Error, match=r"SUPERSTATIC_PREFETCH_BYTES.*LOAD_PREFETCH_BYTES_MAX"):
            setup()
