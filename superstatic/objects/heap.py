"""`superstatic.heapq`: the heap functions of the standard `heapq`, working on shared lists.

The standard module's functions are written in C and accept only real `list` objects (a shared
list is a proxy: "heap argument must be a list"). These are the same algorithms, over any
mutable sequence: on a plain list they do what `heapq` does, on a shared list each step is a
write of the shared list (call them inside a method or `transaction()` to make one commit).
`nlargest`, `nsmallest` and `merge` only iterate and work on shared lists as they are.
"""

from __future__ import annotations

import heapq as _heapq
from typing import Any

# The pure-Python sift helpers of the standard module (the C module replaces only the public
# functions, not these).
_siftdown = _heapq._siftdown  # type: ignore[attr-defined]
_siftup = _heapq._siftup  # type: ignore[attr-defined]

nlargest = _heapq.nlargest
nsmallest = _heapq.nsmallest
merge = _heapq.merge

__all__ = ["heapify", "heappop", "heappush", "heappushpop", "heapreplace", "merge", "nlargest"]
__all__ += ["nsmallest"]


def heappush(heap: Any, item: Any) -> None:
    """Push item onto heap, maintaining the heap invariant."""
    heap.append(item)
    _siftdown(heap, 0, len(heap) - 1)


def heappop(heap: Any) -> Any:
    """Pop the smallest item off the heap, maintaining the heap invariant."""
    last = heap.pop()
    if heap:
        smallest = heap[0]
        heap[0] = last
        _siftup(heap, 0)
        return smallest
    return last


def heapreplace(heap: Any, item: Any) -> Any:
    """Pop and return the smallest item, and add the new item (the heap must not be empty)."""
    smallest = heap[0]
    heap[0] = item
    _siftup(heap, 0)
    return smallest


def heappushpop(heap: Any, item: Any) -> Any:
    """Push item on the heap, then pop and return the smallest item, faster than separately."""
    if heap and heap[0] < item:
        item, heap[0] = heap[0], item
        _siftup(heap, 0)
    return item


def heapify(x: Any) -> None:
    """Transform a list into a heap, in place, in O(len(x)) time."""
    for i in reversed(range(len(x) // 2)):
        _siftup(x, i)
