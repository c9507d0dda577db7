"""Per-request times of the connection's I/O thread, earliest first, in O(log n) per change.

The I/O thread needs, every turn, the earliest time something is due (how long to sleep) and
the requests due now (to expire or to send). Scanning every request in flight for that made
each turn cost O(requests) (docs/data-model-v2.md 8.5). `TimerHeap` keeps one current time per
key in a dict and a heap of (time, generation, key) entries: a change pushes a new entry, and an
entry whose generation is no longer its key's (the time changed, or was cancelled) is dropped
when it reaches the top (lazy deletion), or with all such entries once they outnumber the live
ones, so the heap stays within about twice the keys it times.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Stale entries tolerated beyond twice the live ones before the heap is rebuilt.
STALE_ENTRIES_SLACK = 64


class TimerHeap(Generic[K]):
    """At most one time per key; `earliest`, `pop_due` and `set`/`cancel` in O(log n)."""

    def __init__(self) -> None:
        self._current: dict[K, tuple[float, int]] = {}  # key -> (time, generation)
        self._heap: list[tuple[float, int, K]] = []
        self._generations = itertools.count()  # unique: entries never compare their keys

    def set(self, key: K, when: float) -> None:
        generation = next(self._generations)
        self._current[key] = (when, generation)
        heapq.heappush(self._heap, (when, generation, key))
        if len(self._heap) > 2 * len(self._current) + STALE_ENTRIES_SLACK:
            self._rebuild()

    def cancel(self, key: K) -> None:
        self._current.pop(key, None)

    def get(self, key: K) -> float | None:
        entry = self._current.get(key)
        return None if entry is None else entry[0]

    def earliest(self) -> float | None:
        """The earliest time of any key (None: none timed)."""
        heap, current = self._heap, self._current
        while heap:
            when, generation, key = heap[0]
            if current.get(key, (0.0, -1))[1] == generation:
                return when
            heapq.heappop(heap)  # stale: its key was re-timed or cancelled since
        return None

    def pop_due(self, now: float) -> list[K]:
        """The keys whose time is <= now, earliest first; they are no longer timed."""
        heap, current = self._heap, self._current
        due: list[K] = []
        while heap and heap[0][0] <= now:
            _when, generation, key = heapq.heappop(heap)
            if current.get(key, (0.0, -1))[1] == generation:
                del current[key]
                due.append(key)
        return due

    def __len__(self) -> int:
        return len(self._current)

    def entries(self) -> int:
        """Heap entries, stale ones included (tests: the heap stays bounded)."""
        return len(self._heap)

    def _rebuild(self) -> None:
        self._heap = [(when, generation, key) for key, (when, generation) in self._current.items()]
        heapq.heapify(self._heap)
