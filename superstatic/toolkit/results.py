"""Pending results: `Results(name, ttl_s)`, `put(request_id, value)`, `get(request_id, timeout)`.

Layout (root `superstatic.results.<name>`, a dict): `shards`, a list of SHARDS dicts
{request id: {"value": v, "expires_ms": t}}. A put is a blind write (it never conflicts with
other puts or gets); a result expires `ttl_s` of log time after its put. Nobody needs to come
back for it: each put also deletes a few expired results of its shard (a separate, bounded
transaction, so it never makes the put, or a transaction the put is part of, conflict; a put
inside a transaction leaves it to the next put outside one or the next get that finds a result),
and an expired result reads as absent even before it is deleted.
"""

from __future__ import annotations

import itertools
import logging
import time
import zlib
from typing import Any

from superstatic.objects.eviction import KeyPin
from superstatic.protocol import codec
from superstatic.protocol.errors import Error
from superstatic.toolkit import shared
from superstatic.toolkit.errors import Timeout
from superstatic.toolkit.queue import _check_name, _lease_ms, _storable_key
from superstatic.toolkit.runtime import Runtime, runtime

log = logging.getLogger("superstatic.toolkit")

ROOT_PREFIX = "superstatic.results."
SHARDS = 16
TTL_S_DEFAULT = 300.0
# Expired results one cleanup deletes (one per put, at most this many; the oldest first: a
# shard's dict keeps put order, and every result of a Results handle lives equally long).
CLEANUP_PER_PUT_MAX = 16
_MISSING: Any = object()


class Results:
    """Results waiting for the client that asked for them (docs/toolkit.md)."""

    def __init__(self, name: str, ttl_s: float = TTL_S_DEFAULT, *, _rt: Runtime | None = None):
        _check_name(name)
        self.name = name
        self.ttl_ms = _lease_ms(ttl_s, "ttl_s")
        self._rt = _rt or runtime()
        self._shards: Any = None
        self.cleaned = 0  # results this handle deleted as expired

    def _shard(self, request_id: Any) -> Any:
        if not _storable_key(request_id):
            raise TypeError(
                f"a request id is a str, bytes, int or a tuple of those, got "
                f"{type(request_id).__name__}"
            )
        shards = self._shards
        if shards is None or shared.is_dead(shards):
            session = self._rt.session
            root = session.root(ROOT_PREFIX + self.name, dict)

            def create() -> Any:
                if "shards" not in root:
                    root["shards"] = [{} for _ in range(SHARDS)]
                return root["shards"]

            peeked = shared.peek(root)
            shards = peeked["shards"] if "shards" in peeked else session.run(create)
            self._shards = shards
        return shared.peek(shards)[zlib.crc32(codec.dumps(request_id)) % SHARDS]

    def put(self, request_id: Any, value: Any) -> None:
        """Stores the result (replacing one stored before). Inside `transaction()` it commits
        with the transaction: the state change and its result, all or nothing."""
        shard = self._shard(request_id)
        rt = self._rt

        def body() -> None:
            entry = {"value": value, "expires_ms": rt.log_now_ms() + self.ttl_ms}
            shared.blind_set(shard, request_id, entry)

        rt.session.run(body)
        if _outside():
            self._clean(shard)

    def get(self, request_id: Any, timeout: float | None = None, default: Any = _MISSING) -> Any:
        """The result (a plain copy), waiting for it on the local replica up to `timeout`
        seconds (None: forever; 0: do not wait). If it is not there by then: `default` if
        given, else Timeout. A result that expired is absent."""
        shared.outside_transaction("Results.get")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        shard = self._shard(request_id)
        rt = self._rt
        deadline = None if timeout is None else time.monotonic() + timeout
        synced = False
        # A shard past LOAD_WHOLE_ENTRIES_MAX results is held per key by a partial replica: the
        # id stays loaded (known absent) while waited for, else the clock could let it go and
        # its put would never reach this process (docs/virtual-heap.md 4.3).
        pin = KeyPin(rt.replica, {shared.node(shard).oid: {request_id: None}})
        with rt.waiter() as waiter:
            while True:
                seen = rt.replica.applied_index
                found = self._lookup(shard, request_id)
                if found is not _MISSING:
                    self._clean(shard)  # puts inside transactions cannot: gets do it too
                    return found
                if not synced:
                    # Absent here may only mean not yet here: one barrier, then wait locally.
                    rt.session.sync()
                    synced = True
                    continue
                waiter.watch([shared.node(shard).oid], seen)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                waiter.wait(deadline)
        del pin  # (released: KeyPin.__del__; on a return above, with this frame)
        if default is not _MISSING:
            return default
        raise Timeout(
            f"no result for request {request_id!r} in {self.name!r} within {timeout} s (not put "
            f"yet, or expired: results are kept {self.ttl_ms / 1000:g} s)"
        )

    def _lookup(self, shard: Any, request_id: Any) -> Any:
        with self._rt.replica.lock:
            entry = shared.peek(shard).get(request_id)
            if entry is None or shared.is_dead(entry):
                return _MISSING
            view = shared.peek(entry)
            if view.get("expires_ms", 0) < self._rt.log_now_ms():
                return _MISSING
            return shared.plain_value(view.get("value"))

    def delete(self, request_id: Any) -> None:
        """Forgets a result (e.g. once the client confirmed it has it)."""
        shard = self._shard(request_id)
        self._rt.session.run(lambda: shared.blind_del(shard, request_id))

    def __contains__(self, request_id: Any) -> bool:
        return self._lookup(self._shard(request_id), request_id) is not _MISSING

    def _clean(self, shard: Any) -> None:
        """Deletes up to CLEANUP_PER_PUT_MAX expired results at the head of `shard`. Reads
        what it deletes, so a result put again meanwhile makes it conflict (and re-run)
        rather than delete the new one."""
        rt = self._rt
        now = rt.log_now_ms()
        head = itertools.islice(shared.peek(shard).items(), CLEANUP_PER_PUT_MAX)
        expired = [
            rid
            for rid, entry in head
            if shared.is_dead(entry) or shared.peek(entry).get("expires_ms", 0) < now
        ]
        if not expired:
            return
        deleted = [0]

        def body() -> None:
            deleted[0] = 0
            for rid in expired:
                entry = shard.get(rid)
                if entry is not None and entry["expires_ms"] < now:
                    del shard[rid]
                    deleted[0] += 1

        try:
            rt.session.run(body)
        except Error as exc:  # best effort: the next put or get tries again
            log.info("superstatic: cleaning expired results of %r failed: %s", self.name, exc)
            return
        self.cleaned += deleted[0]

    def __repr__(self) -> str:
        return f"superstatic.Results({self.name!r})"


def _outside() -> bool:
    from superstatic.objects import txn as _txn

    return _txn.current() is None
