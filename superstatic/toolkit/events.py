"""Cluster events: leader changes, members joining and leaving, this app's liveness lapsing.

`cluster_events(callback)` calls `callback(event)` on the toolkit's dispatcher thread;
`cluster_events()` without a callback returns an iterator (bounded: the oldest events are
dropped, and counted, when nobody reads). Where they come from: the stream shows every NOOP
entry (each new leader appends one) and CONF entry (a membership change); at each, and every
STATUS_POLL_S, the toolkit asks the connected agent for its STATUS and reports what changed.
"session_expired" comes from the liveness keeper (superstatic/toolkit/runtime.py).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator

from superstatic.toolkit.runtime import ClusterEvent, Runtime, runtime

# Events an iterator keeps for a reader that is not reading; older ones are dropped.
EVENTS_BUFFERED_MAX = 1_000


class ClusterEvents:
    """A subscription to cluster events: an iterator (`for event in events`), or
    `get(timeout)`; `close()` (or a `with` block) ends it."""

    def __init__(self, rt: Runtime, callback: Callable[[ClusterEvent], None] | None = None) -> None:
        self._rt = rt
        self._callback = callback
        self._buffer: collections.deque[ClusterEvent] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False
        rt.add_event_sink(self._deliver)

    def _deliver(self, event: ClusterEvent) -> None:
        """On the dispatcher thread."""
        if self._callback is not None:
            self._callback(event)
            return
        with self._cond:
            if len(self._buffer) >= EVENTS_BUFFERED_MAX:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(event)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> ClusterEvent | None:
        """The next event, waiting up to `timeout` seconds (None: forever); None past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._buffer.popleft() if self._buffer else None

    def __iter__(self) -> Iterator[ClusterEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self._rt.remove_event_sink(self._deliver)
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __enter__(self) -> ClusterEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cluster_events(callback: Callable[[ClusterEvent], None] | None = None) -> ClusterEvents:
    """Subscribes to cluster events (module doc)."""
    return ClusterEvents(runtime(), callback)
