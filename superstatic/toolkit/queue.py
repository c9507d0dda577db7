"""Durable work queues with leases: `Queue(name)`, `put`, `get -> Job`, `ack`/`nack`/`extend`.

Layout (root `superstatic.queue.<name>`, a dict):

    ready    {item id: item}   claimable now, in put order (dicts keep insertion order)
    delayed  {item id: item}   nacked with a delay: claimable once log time passes not_before_ms
    claimed  {item id: item}   delivered, in claim order, until acked or their claim expires
    keys     [shard, ...]      KEY_SHARDS dicts {idempotency key: (item id, expires_ms)}

Each item is its own dict node: {"value", "key", "state", "holder", "deliveries",
"lease_until_ms", "not_before_ms", "put_ms"}. Versions are per node, so a transaction that reads
one item conflicts only with another that changed that item: two consumers claiming the same item
conflict (one re-runs and takes another); consumers claiming different items, and producers
putting new ones, never conflict. That needs the index dicts written *blind* (no read recorded)
and read by *peeking* (superstatic/toolkit/shared.py): a claim peeks at the head of `ready` for a
candidate, then reads the candidate item itself, so the commit validates exactly what it acts on.

A claim is expired once log time passes its `lease_until_ms`, or its holder's liveness
(superstatic/toolkit/runtime.py): then any consumer may take the item again (delivery count + 1),
or move it to the dead-letter queue `<name>.dead` once it was delivered `max_deliveries` times.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from superstatic.protocol import codec
from superstatic.protocol.errors import LimitExceeded
from superstatic.toolkit import shared
from superstatic.toolkit.errors import LeaseLost, QueueFull
from superstatic.toolkit.runtime import Runtime, runtime

ROOT_PREFIX = "superstatic.queue."
DEAD_LETTER_SUFFIX = ".dead"
# Idempotency keys are spread over this many dict nodes: a keyed put reads (and conflicts on)
# only its shard, so concurrent producers rarely touch the same one.
KEY_SHARDS = 64
# Keys remembered per shard; a put that would go beyond refuses, naming the limit (it would
# otherwise silently forget keys that are still inside their ttl and break idempotency).
KEYS_PER_SHARD_MAX = 50_000
# How long a put's idempotency key is remembered (log time): a put repeated within it is a
# no-op returning the first put's item id, also after that item was acked.
KEY_TTL_S_DEFAULT = 24 * 3600.0
# Expired keys a keyed put deletes from its shard (cleanup as part of ordinary puts).
KEYS_CLEANUP_PER_PUT_MAX = 8
# Deliveries of one item before it goes to the dead-letter queue instead of a consumer.
MAX_DELIVERIES_DEFAULT = 10
# Concurrent consumers pick at random among the first SPREAD ready items, so they rarely
# collide on the head (approximately FIFO: an item waits behind at most SPREAD - 1 others).
SPREAD = 8
# Delayed and claimed entries a claim looks through for one that is due (bounded per call).
SCAN_MAX = 64
# Items moved to the dead-letter queue by one claim (each is a write in that transaction).
DEAD_LETTER_MOVES_PER_CLAIM_MAX = 16
LEASE_S_DEFAULT = 30.0
LEASE_S_MAX = 7 * 24 * 3600.0
NAME_CHARS_MAX = 200


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= NAME_CHARS_MAX:
        raise ValueError(f"a name is a str of 1..{NAME_CHARS_MAX} characters (NAME_CHARS_MAX)")


def _lease_ms(lease_s: float, what: str = "lease_s") -> int:
    if not isinstance(lease_s, (int, float)) or not 0 < lease_s <= LEASE_S_MAX:
        raise ValueError(f"{what} must be in (0, {LEASE_S_MAX}] seconds (LEASE_S_MAX)")
    return max(1, int(lease_s * 1000))


def key_shard(key: Any) -> int:
    """The shard of an idempotency key: a hash every process computes alike (not hash(),
    which is salted per process)."""
    return zlib.crc32(codec.dumps(key)) % KEY_SHARDS


@dataclass
class Job:
    """One delivery of an item to this process. `value` is a plain copy of what was put."""

    queue: Queue
    id: str
    value: Any
    key: Any
    deliveries: int
    lease_until_ms: int  # log time
    _item: Any = field(repr=False)
    _holder: str = field(repr=False)
    done: bool = False

    def _check(self) -> None:
        """Inside a transaction body: raises LeaseLost unless this delivery is still ours.
        Reads the item (its version), so a takeover racing this transaction conflicts it."""
        item = self._item
        if shared.is_dead(item):
            raise LeaseLost(
                f"job {self.id} of queue {self.queue.name!r} is gone: it was acked (by this "
                "process, or by another after its claim expired and it was delivered again)"
            )
        state, holder, deliveries = item.get("state"), item.get("holder"), item.get("deliveries")
        if state == "acked" and holder == self._holder and deliveries == self.deliveries:
            raise LeaseLost(f"job {self.id} of queue {self.queue.name!r} was already acked")
        if state != "claimed" or holder != self._holder or deliveries != self.deliveries:
            raise LeaseLost(
                f"job {self.id} of queue {self.queue.name!r} is no longer claimed by this "
                f"process (delivery {self.deliveries}; now {state}, delivery {deliveries}): "
                "its lease or this process's liveness ran out and it was delivered again, or "
                "it was nacked. Nothing was changed"
            )

    def ack(self) -> None:
        """The job is done: removes the item. Inside `transaction()` it commits atomically
        with the transaction's other changes (or not at all); raises LeaseLost (changing
        nothing) if the claim is no longer this process's."""
        claimed = self.queue._parts()[2]

        def body() -> None:
            self._check()
            self._item["state"] = "acked"
            shared.blind_del(claimed, self.id)  # unreachable now: collected by the cluster

        self.queue._rt.session.run(body)
        self.done = True

    def nack(self, delay_s: float = 0.0) -> None:
        """Gives the job back: delivered again (to anyone) now, or once `delay_s` of log time
        passed. The delivery counts toward max_deliveries."""
        if not isinstance(delay_s, (int, float)) or not 0 <= delay_s <= LEASE_S_MAX:
            raise ValueError(f"delay_s must be in [0, {LEASE_S_MAX}] seconds")
        _q, ready, delayed, claimed, _keys = self.queue._all_parts()
        rt = self.queue._rt

        def body() -> None:
            self._check()
            item = self._item
            item["state"] = "delayed" if delay_s > 0 else "ready"
            item["holder"] = None
            item["not_before_ms"] = rt.log_now_ms() + int(delay_s * 1000)
            shared.blind_del(claimed, self.id)
            shared.blind_set(delayed if delay_s > 0 else ready, self.id, item)

        rt.session.run(body)
        self.done = True

    def extend(self, lease_s: float) -> int:
        """Renews the lease: it now runs out `lease_s` of log time from now. Returns the new
        `lease_until_ms`. Raises LeaseLost if the claim is no longer this process's."""
        lease_ms = _lease_ms(lease_s)
        rt = self.queue._rt
        until = [0]

        def body() -> None:
            self._check()
            until[0] = rt.log_now_ms() + lease_ms
            self._item["lease_until_ms"] = until[0]

        rt.session.run(body)
        self.lease_until_ms = until[0]
        return until[0]


class Queue:
    """A durable, cluster-wide work queue (docs/toolkit.md). Handles are cheap; every process
    opening the same name shares one queue. Give every handle of a name the same options."""

    def __init__(
        self,
        name: str,
        maxsize: int | None = None,
        *,
        max_deliveries: int | None = MAX_DELIVERIES_DEFAULT,
        key_ttl_s: float = KEY_TTL_S_DEFAULT,
        _rt: Runtime | None = None,
    ) -> None:
        _check_name(name)
        if maxsize is not None and (not isinstance(maxsize, int) or maxsize < 1):
            raise ValueError("maxsize must be a positive int or None")
        if max_deliveries is not None and (
            not isinstance(max_deliveries, int) or max_deliveries < 1
        ):
            raise ValueError("max_deliveries must be a positive int or None (no dead letters)")
        self.name = name
        self.maxsize = maxsize
        self.max_deliveries = max_deliveries
        self.key_ttl_ms = _lease_ms(key_ttl_s, "key_ttl_s")
        self._rt = _rt or runtime()
        self._parts_cache: tuple[Any, Any, Any, Any, Any] | None = None
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._dead_letters: Queue | None = None

    # ------------------------------------------------------------------ structure

    def _all_parts(self) -> tuple[Any, Any, Any, Any, Any]:
        """(root, ready, delayed, claimed, keys), created on first use."""
        found = self._parts_cache
        if found is not None and not any(shared.is_dead(p) for p in found):
            return found
        session = self._rt.session
        root = session.root(ROOT_PREFIX + self.name, dict)

        def create() -> tuple[Any, Any, Any, Any, Any]:
            for part in ("ready", "delayed", "claimed"):
                if part not in root:
                    root[part] = {}
            if "keys" not in root:
                root["keys"] = [{} for _ in range(KEY_SHARDS)]
            return root, root["ready"], root["delayed"], root["claimed"], root["keys"]

        peeked = shared.peek(root)
        if all(p in peeked for p in ("ready", "delayed", "claimed", "keys")):
            parts = (root, peeked["ready"], peeked["delayed"], peeked["claimed"], peeked["keys"])
        else:
            parts = session.run(create)
        self._parts_cache = parts
        return parts

    def _parts(self) -> tuple[Any, Any, Any]:
        _root, ready, delayed, claimed, _keys = self._all_parts()
        return ready, delayed, claimed

    @property
    def dead_letters(self) -> Queue:
        """The dead-letter queue: items delivered max_deliveries times without an ack."""
        if self._dead_letters is None:
            self._dead_letters = Queue(
                self.name + DEAD_LETTER_SUFFIX, max_deliveries=None, _rt=self._rt
            )
        return self._dead_letters

    def _new_id(self) -> str:
        # Unique per process, not per handle: handles of one name share the queue.
        return self._rt.unique_id()

    # ------------------------------------------------------------------ producers

    def put(self, item: Any, key: Any = None) -> str:
        """Appends `item` (any storable value); returns its id. With a `key` (str, bytes, int
        or tuple of those) the put is idempotent: repeated within key_ttl_s of log time it
        changes nothing and returns the first put's id. Inside `transaction()` it commits with
        the transaction. Raises QueueFull at maxsize (see docs/toolkit.md for its precision)."""
        if key is not None and not _storable_key(key):
            raise TypeError(
                f"an idempotency key is a str, bytes, int or a tuple of those, got "
                f"{type(key).__name__}"
            )
        _root, ready, delayed, claimed, keys = self._all_parts()
        rt = self._rt
        item_id = self._new_id()
        shard = None if key is None else keys[key_shard(key)]

        def body() -> str:
            now = rt.log_now_ms()
            if shard is not None:
                found = shard.get(key)
                if found is not None and found[1] >= now:
                    return str(found[0])
                self._clean_keys(shard, now)
                if len(shard) >= KEYS_PER_SHARD_MAX:
                    raise LimitExceeded(
                        "KEYS_PER_SHARD_MAX",
                        KEYS_PER_SHARD_MAX,
                        len(shard) + 1,
                        f"idempotency keys remembered in one shard of queue {self.name!r} "
                        "(lower key_ttl_s)",
                    )
                shard[key] = (item_id, now + self.key_ttl_ms)
            if self.maxsize is not None:
                size = (
                    len(shared.peek(ready)) + len(shared.peek(delayed)) + len(shared.peek(claimed))
                )
                if size >= self.maxsize:
                    raise QueueFull(self.name, self.maxsize, size)
            shared.blind_set(
                ready,
                item_id,
                {
                    "value": item,
                    "key": key,
                    "state": "ready",
                    "holder": None,
                    "deliveries": 0,
                    "lease_until_ms": 0,
                    "not_before_ms": 0,
                    "put_ms": now,
                },
            )
            return item_id

        return rt.session.run(body)

    def _clean_keys(self, shard: Any, now: int) -> None:
        """Deletes a few expired keys (the shard was read already: no new conflicts)."""
        view = shared.peek(shard)
        expired = [
            k
            for k, entry in itertools.islice(view.items(), KEYS_CLEANUP_PER_PUT_MAX)
            if entry[1] < now
        ]
        for k in expired:
            del shard[k]

    # ------------------------------------------------------------------ consumers

    def get(self, timeout: float | None = None, lease_s: float = LEASE_S_DEFAULT) -> Job | None:
        """Claims one item for this process for `lease_s` seconds of log time and returns its
        Job; waits (on the local replica, never polling) up to `timeout` seconds (None:
        forever; 0: do not wait) and returns None if nothing could be claimed by then."""
        shared.outside_transaction("Queue.get")
        lease_ms = _lease_ms(lease_s)
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        rt = self._rt
        rt.ensure_alive()
        ready, delayed, _claimed = self._parts()
        deadline = None if timeout is None else time.monotonic() + timeout
        watched = [shared.node(ready).oid, shared.node(delayed).oid]
        with rt.waiter() as waiter:
            while True:
                job, log_deadline, seen = self._claim(lease_ms)
                if job is not None:
                    return job
                waiter.watch(watched, seen)
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                waiter.wait(deadline, log_deadline)

    def _claim(self, lease_ms: int) -> tuple[Job | None, int | None, int]:
        """One claiming transaction: (the job or None, the log time at which a delayed item or
        an expired claim becomes claimable (None: nothing to wait for but a put), the applied
        index the attempt saw)."""
        _root, ready, delayed, claimed, _keys = self._all_parts()
        rt = self._rt
        holder = rt.holder
        live = rt.live_root()
        dead_letters = self.dead_letters if self.max_deliveries is not None else None
        dlq_ready = None if dead_letters is None else dead_letters._parts()[0]
        outcome: list[Any] = [None, None, 0]

        def take(item_id: str, item: Any, source: Any, now: int) -> Job | None:
            deliveries = item.get("deliveries", 0)
            if self.max_deliveries is not None and deliveries >= self.max_deliveries:
                item["state"] = "ready"
                item["holder"] = None
                shared.blind_del(source, item_id)
                shared.blind_set(dlq_ready, item_id, item)
                return None
            lease_until = now + lease_ms
            item["state"] = "claimed"
            item["holder"] = holder
            item["deliveries"] = deliveries + 1
            item["lease_until_ms"] = lease_until
            shared.blind_del(source, item_id)  # also from `claimed`: back at its end
            shared.blind_set(claimed, item_id, item)
            return Job(
                queue=self,
                id=item_id,
                value=shared.plain_value(item.get("value")),
                key=item.get("key"),
                deliveries=deliveries + 1,
                lease_until_ms=lease_until,
                _item=item,
                _holder=holder,
            )

        def body() -> Job | None:
            outcome[1] = None
            outcome[2] = rt.replica.applied_index
            now = rt.log_now_ms()
            moved = 0
            # 1. Ready items: a random one among the first SPREAD.
            head = list(itertools.islice(shared.peek(ready).items(), SPREAD))
            self._rng.shuffle(head)
            for item_id, item in head:
                if shared.is_dead(item):
                    continue
                job = take(item_id, item, ready, now)
                if job is not None:
                    return job
                moved += 1
                if moved >= DEAD_LETTER_MOVES_PER_CLAIM_MAX:
                    return None
            # 2. Delayed items whose time has come.
            for item_id, item in itertools.islice(shared.peek(delayed).items(), SCAN_MAX):
                if shared.is_dead(item):
                    continue
                not_before = shared.peek(item).get("not_before_ms", 0)
                if not_before > now:
                    outcome[1] = _earliest(outcome[1], not_before)
                    continue
                if item.get("not_before_ms", 0) > now:  # the recorded read decides
                    continue
                job = take(item_id, item, delayed, now)
                if job is not None:
                    return job
                moved += 1
                if moved >= DEAD_LETTER_MOVES_PER_CLAIM_MAX:
                    return None
            # 3. Claims that expired: the lease ran out, or the holder's liveness.
            lives = shared.peek(live)
            for item_id, item in itertools.islice(shared.peek(claimed).items(), SCAN_MAX):
                if shared.is_dead(item):
                    continue
                peeked = shared.peek(item)
                owner = peeked.get("holder")
                if owner == holder:
                    expiry = peeked.get("lease_until_ms", 0)  # our own liveness is renewed
                else:
                    expiry = min(peeked.get("lease_until_ms", 0), lives.get(owner, 0))
                if expiry >= now:
                    outcome[1] = _earliest(outcome[1], expiry + 1)
                    continue
                # Decide on recorded reads: a renewal or extension racing us conflicts.
                lease_until = item.get("lease_until_ms", 0)
                alive = rt.alive_until(owner) if owner != holder else lease_until
                if min(lease_until, alive) >= now:
                    continue
                job = take(item_id, item, claimed, now)
                if job is not None:
                    return job
                moved += 1
                if moved >= DEAD_LETTER_MOVES_PER_CLAIM_MAX:
                    return None
            return None

        with self._lock:  # one claim at a time per handle: threads share the candidates
            outcome[0] = rt.session.run(body)
        return outcome[0], outcome[1], outcome[2]

    # ------------------------------------------------------------------ inspection

    def stats(self) -> dict[str, int]:
        """Item counts in this process's replica (no network): ready, delayed, claimed."""
        ready, delayed, claimed = self._parts()
        return {
            "ready": len(shared.peek(ready)),
            "delayed": len(shared.peek(delayed)),
            "claimed": len(shared.peek(claimed)),
        }

    def __len__(self) -> int:
        """Items not yet acked (ready, delayed and claimed), in this process's replica."""
        return sum(self.stats().values())

    def __repr__(self) -> str:
        return f"superstatic.Queue({self.name!r})"


def _earliest(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)


def _storable_key(key: Any) -> bool:
    if isinstance(key, bool) or key is None:
        return False
    if type(key) in (str, bytes, int):
        return True
    return type(key) is tuple and all(_storable_key(k) for k in key)
