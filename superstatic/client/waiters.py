"""How the connection's I/O thread wakes its callers: each one exactly once, and only its own.

`Answer` is one call's result slot with a lock of its own, held from birth and released by the
I/O thread when the answer is in: the caller blocks on that lock alone, so settling a call costs
one release, with no condition variable, no waiter list and no other thread woken to recheck
(docs/data-model-v2.md 8.5 "The app's cost per write").

`AppliedWaiters` holds the callers of `wait_applied` by the index each waits for, lowest first:
when the replica advances, the I/O thread releases exactly those whose index it reached, in
O(log n) each, instead of waking every waiter to compare the applied index with its own.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any


class AnswerTimeout(Exception):
    """No answer arrived within the caller's wait."""


class Answer:
    """A one-shot result for exactly one waiting thread. `set` is called once per answer by
    whoever settles the request (the connection's I/O thread, or a lone caller under the socket
    lock: they never run at once); later calls are ignored, as a Future's would fail."""

    __slots__ = ("_error", "_lock", "_result", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # released once, by set(): that is the wake
        self._set = False
        self._result: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._set

    def set(self, result: Any = None, error: BaseException | None = None) -> bool:
        """Stores the answer and wakes its waiter; False if it was answered already."""
        if self._set:
            return False
        self._result, self._error = result, error
        self._set = True
        self._lock.release()
        return True

    def store(self, result: Any = None, error: BaseException | None = None) -> bool:
        """Stores the answer without waking its waiter (`wake` does, later); False if it was
        answered already. A waiter that looks meanwhile finds it and returns at once."""
        if self._set:
            return False
        self._result, self._error = result, error
        self._set = True
        return True

    def wake(self) -> None:
        """Wakes the waiter of an answer `store`d before; once."""
        assert self._set
        self._lock.release()

    def wait(self, timeout_s: float) -> Any:
        """The result (or raises the error) once set; AnswerTimeout after `timeout_s`."""
        if not self._set and not self._lock.acquire(timeout=max(0.0, timeout_s)) and not self._set:
            # Looked at again: an answer `store`d before the wait ran out is the answer, though
            # its `wake` (the I/O turn's end) comes later.
            raise AnswerTimeout
        if self._error is not None:
            raise self._error
        return self._result


class AppliedWaiters:
    """Threads waiting for the replica to reach an index, each with a lock of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heap: list[tuple[int, int, threading.Lock]] = []
        self._order = itertools.count()  # ties: never compares the locks
        self.wanted = 0  # the highest index ever waited for (the stream-stall check)

    def add(self, index: int) -> threading.Lock:
        """A held lock that is released once the replica reaches `index` (`wake_upto`), or by
        `wake_all`."""
        lock = threading.Lock()
        lock.acquire()
        with self._lock:
            self.wanted = max(self.wanted, index)
            heapq.heappush(self._heap, (index, next(self._order), lock))
        return lock

    def wake_upto(self, applied: int) -> int:
        """Releases every waiter of an index <= `applied`; returns how many. O(1) when none."""
        heap = self._heap
        if not heap or heap[0][0] > applied:
            return 0  # read without the lock: a waiter added meanwhile rechecks after adding
        woken = 0
        with self._lock:
            while heap and heap[0][0] <= applied:
                heapq.heappop(heap)[2].release()
                woken += 1
        return woken

    def wake_all(self) -> None:
        """The connection stopped: every waiter looks (and finds it closed)."""
        with self._lock:
            waiting, self._heap = self._heap, []
        for _index, _n, lock in waiting:
            lock.release()

    def __len__(self) -> int:
        return len(self._heap)
