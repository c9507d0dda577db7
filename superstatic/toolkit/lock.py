"""Fenced, fair cluster-wide locks: `Lock(name)` and `RLock(name)`.

Layout (root `superstatic.lock.<name>`, a dict):

    grant    {"holder": holder id | None}   written only to take or give the lock
    waiters  {holder id: process id}        the queue of waiting acquisitions, in arrival order

A holder id is `<process id>/<n>`, the process id being the holder of the process's liveness
record (superstatic/toolkit/runtime.py). The lock is held while `grant.holder` is set and that
process is alive (log time has not passed its liveness): a holder that dies (kill -9, a cut
network) stops renewing and the lock is free one session ttl later, for the first waiter that
is still alive. Waiting is FIFO: a free lock goes to the first live waiter in `waiters`, which
is in the log order of their arrival.

The fencing token is a log index between the entry that granted the lock and the next grant:
the index this process's replica had applied when it saw the grant name it (it checks, under
the replica's lock, that the grant still names it, so no later grant is applied yet). Indexes
only grow, so every later holder's token is larger, also across restarts and leader changes.
Pass it to the resource you protect and have it refuse tokens older than the largest it has
seen (docs/toolkit.md).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from superstatic.toolkit import shared
from superstatic.toolkit.errors import LeaseLost
from superstatic.toolkit.queue import _check_name
from superstatic.toolkit.runtime import Runtime, runtime

ROOT_PREFIX = "superstatic.lock."
# Waiters a taking transaction looks through (dead ones before it are removed as it goes).
WAITERS_SCAN_MAX = 256


class Lock:
    """A cluster-wide mutual-exclusion lock with fencing tokens and FIFO waiting. Not
    re-entrant (see RLock). Any thread of the process may release it, as with threading.Lock."""

    def __init__(self, name: str, *, _rt: Runtime | None = None) -> None:
        _check_name(name)
        self.name = name
        self._rt = _rt or runtime()
        self._parts_cache: tuple[Any, Any] | None = None
        self._state = threading.Lock()
        self._held: tuple[str, int] | None = None  # (holder id, token) while this handle holds

    def _parts(self) -> tuple[Any, Any]:
        found = self._parts_cache
        if found is not None and not any(shared.is_dead(p) for p in found):
            return found
        session = self._rt.session
        root = session.root(ROOT_PREFIX + self.name, dict)

        def create() -> tuple[Any, Any]:
            if "grant" not in root:
                root["grant"] = {"holder": None}
            if "waiters" not in root:
                root["waiters"] = {}
            return root["grant"], root["waiters"]

        peeked = shared.peek(root)
        if "grant" in peeked and "waiters" in peeked:
            parts = (peeked["grant"], peeked["waiters"])
        else:
            parts = session.run(create)
        self._parts_cache = parts
        return parts

    # ------------------------------------------------------------------ acquire / release

    def acquire(self, timeout: float | None = None) -> int | None:
        """Waits (on the local replica) until this process holds the lock, then returns the
        fencing token (a log index: larger for every later holder). Past `timeout` seconds
        (None: forever; 0: do not wait) returns None and leaves the queue."""
        shared.outside_transaction("Lock.acquire")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        rt = self._rt
        rt.ensure_alive()
        grant, waiters = self._parts()
        me = f"{rt.holder}/{rt.unique_id()}"  # unique per acquisition, whatever the handle
        deadline = None if timeout is None else time.monotonic() + timeout
        queued = [False]
        taken = False
        try:
            with rt.waiter() as waiter:
                while True:
                    got, log_deadline, seen = self._try_take(me, grant, waiters, queued)
                    if got:
                        taken = True
                        break
                    waiter.watch([shared.node(grant).oid, shared.node(waiters).oid], seen)
                    if deadline is not None and time.monotonic() >= deadline:
                        return None
                    waiter.wait(deadline, log_deadline)
        finally:
            if not taken and queued[0] and not rt.session.closed:
                rt.session.run(lambda: shared.blind_del(waiters, me))  # leave the queue
        token = self._token_of(me, grant)
        with self._state:
            self._held = (me, token)
        return token

    def _try_take(
        self, me: str, grant: Any, waiters: Any, queued: list[bool]
    ) -> tuple[bool, int | None, int]:
        rt = self._rt
        result: list[Any] = [False, None, 0, False]

        def body() -> None:
            result[:] = [False, None, rt.replica.applied_index, queued[0]]
            now = rt.log_now_ms()
            holder = grant.get("holder")
            if holder is not None:
                alive = rt.alive_until(_process(holder))
                if alive >= now:
                    wait(alive + 1)
                    return
            # Free, or its holder is dead: the first live waiter takes it.
            view = waiters  # recorded: a waiter arriving meanwhile is ordered after us
            for other, process in itertools.islice(list(view.items()), WAITERS_SCAN_MAX):
                if other == me:
                    break
                alive = rt.alive_until(process)
                if alive >= now:
                    wait(alive + 1)
                    return
                del waiters[other]  # a waiter that died while waiting
            grant["holder"] = me
            if result[3]:
                shared.blind_del(waiters, me)
            result[0] = True

        def wait(log_deadline: int) -> None:
            result[1] = log_deadline
            if not result[3]:
                shared.blind_set(waiters, me, rt.holder)  # join the queue (FIFO by log order)
                result[3] = True

        rt.session.run(body)
        queued[0] = result[3]
        return result[0], result[1], result[2]

    def _token_of(self, me: str, grant: Any) -> int:
        """The fencing token: the replica's applied index while the grant names `me` (the
        replica keeps no node versions; any index from the granting entry up to the next grant
        orders holders the same way)."""
        with self._rt.replica.lock:
            if shared.peek(grant).get("holder") != me:
                raise LeaseLost(
                    f"lock {self.name!r} was taken over right after it was granted (this "
                    "process's liveness lapsed)"
                )
            return self._rt.replica.applied_index

    def release(self) -> None:
        """Gives the lock up. Raises LeaseLost if it was no longer this process's (its
        liveness lapsed and another process took it: the protected section was not
        exclusive for its whole length)."""
        with self._state:
            held, self._held = self._held, None
        if held is None:
            raise RuntimeError(f"release of lock {self.name!r}, which this handle does not hold")
        me, token = held
        grant, _waiters = self._parts()

        def body() -> None:
            if grant.get("holder") != me:
                raise LeaseLost(
                    f"lock {self.name!r} (token {token}) was no longer held by this process at "
                    "release: its liveness lapsed and another process may have held it since"
                )
            grant["holder"] = None

        self._rt.session.run(body)

    # ------------------------------------------------------------------ inspection

    @property
    def token(self) -> int | None:
        """The fencing token while this handle holds the lock, else None."""
        held = self._held
        return None if held is None else held[1]

    def locked(self) -> bool:
        """Whether some live process holds the lock (this process's replica; no network)."""
        grant, _waiters = self._parts()
        holder = shared.peek(grant).get("holder")
        if holder is None:
            return False
        live = shared.peek(self._rt.live_root())
        return bool(live.get(_process(holder), 0) >= self._rt.log_now_ms())

    def waiting(self) -> int:
        """Acquisitions queued (this process's replica)."""
        return len(shared.peek(self._parts()[1]))

    def __enter__(self) -> int:
        token = self.acquire()
        assert token is not None
        return token

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.release()
        except LeaseLost:
            if exc_type is None:
                raise  # the section finished believing it was exclusive: say it was not

    def __repr__(self) -> str:
        return f"superstatic.{type(self).__name__}({self.name!r})"


class RLock(Lock):
    """A re-entrant Lock: the thread holding it may acquire it again (same token); it is
    released when that thread released it as many times. Only the owner thread releases."""

    def __init__(self, name: str, *, _rt: Runtime | None = None) -> None:
        super().__init__(name, _rt=_rt)
        self._owner: int | None = None
        self._count = 0

    def acquire(self, timeout: float | None = None) -> int | None:
        me = threading.get_ident()
        if self._owner == me:
            self._count += 1
            return self.token
        token = super().acquire(timeout)
        if token is not None:
            self._owner, self._count = me, 1
        return token

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError(f"release of RLock {self.name!r} by a thread that does not own it")
        self._count -= 1
        if self._count:
            return
        self._owner = None
        super().release()


def _process(holder: str) -> str:
    return holder.rsplit("/", 1)[0]
