"""Waiting on shared state: `wait_for(predicate, timeout)` and `watch(obj, callback)`.

Both wait on the local replica, never on the network: a predicate is evaluated on one
consistent state while recording the nodes it reads (as a transaction body does), and is
evaluated again only after the stream applied an entry that touched one of them. A watch's
callback runs on the toolkit's dispatcher thread, after the change applied locally.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from superstatic.objects import node as _node
from superstatic.protocol.errors import Error
from superstatic.toolkit import shared
from superstatic.toolkit.runtime import Runtime, runtime

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float | None = None) -> T:
    """Returns the predicate's value once it is true (truthy), evaluated on the local replica
    each time an entry that touched what it read has applied. Past `timeout` seconds returns
    its last (falsy) value, like threading.Condition.wait_for. Never inside a transaction."""
    shared.outside_transaction("wait_for")
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    rt = runtime()
    deadline = None if timeout is None else time.monotonic() + timeout
    with rt.waiter() as waiter:
        while True:
            value, reads, seen, held = rt.evaluate(predicate)
            if value:
                return value
            waiter.watch(reads, seen, held)
            changed = waiter.wait(deadline)
            if not changed and deadline is not None and time.monotonic() >= deadline:
                return rt.evaluate(predicate)[0]


class Watch:
    """A registered watch; `cancel()` stops it. Notifications are coalesced: a callback
    already queued is not queued again, so a slow callback sees the latest state, not every
    intermediate one."""

    def __init__(self, rt: Runtime, obj: Any, callback: Callable[[Any], None]) -> None:
        found = _node.node_of(obj)
        if found is None:
            raise Error(
                f"watch() needs a shared object or container, got a {type(obj).__name__}; "
                "use wait_for() for predicates over several objects"
            )
        if found.txn is not None:
            raise Error("watch() of an object whose transaction has not committed yet")
        # A partial replica receives the changes of held nodes only, and of a per-key dict
        # only the keys it holds: load the object whole (self.obj then keeps it from eviction).
        if found.state == _node.PARTIAL:
            found.replica.fault_whole(found)
        elif found.state:
            found.replica.fault(found)
        self.rt = rt
        self.obj = obj
        self.oid = found.oid
        self.callback = callback
        self.cancelled = False
        self._queued = False
        self._lock = threading.Lock()
        self.calls = 0
        with rt.cond:
            rt.watches.setdefault(self.oid, set()).add(self)

    def notify(self, index: int) -> None:
        """A change touched the object (connection I/O thread): queue one callback."""
        with self._lock:
            if self.cancelled or self._queued:
                return
            self._queued = True
        self.rt.call_soon(self._run)

    def _run(self) -> None:
        with self._lock:
            self._queued = False
            if self.cancelled:
                return
        if shared.is_dead(self.obj):
            self.cancel()  # collected: it will never change again
            return
        self.calls += 1
        self.callback(self.obj)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
        with self.rt.cond:
            found = self.rt.watches.get(self.oid)
            if found is not None:
                found.discard(self)
                if not found:
                    del self.rt.watches[self.oid]

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def watch(obj: Any, callback: Callable[[Any], None]) -> Watch:
    """Calls `callback(obj)` after each change to the shared object or container `obj` has
    applied locally (changes of the object itself, not of objects it refers to), on a thread
    of the library. Returns a Watch; `cancel()` it (or use it as a context manager) to stop."""
    return Watch(runtime(), obj, callback)
