"""The superstatic driver: the public library only (connect, root, @clustered)."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import superstatic

KV_ROOT = "bench.kv"
# bigdict: one root dict per size, its keys BIG_KEY % j for j in range(size).
BIG_ROOT = "bench.big.{size}"
BIG_KEY = "k{:06d}"
# disjoint: one shared dict, a key of its own per caller (client c, thread t).
DISJOINT_ROOT = "bench.disjoint"

# Bodies that ran in this process: a transaction that conflicts re-runs its body, so bodies
# run minus calls made is the number of conflict retries. The counters are process-local
# Python state, not shared: they measure the library, they are not part of the workload.
_hot_bodies = itertools.count()


@superstatic.clustered(name="bench.seq")
class SeqCounter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@superstatic.clustered(name="bench.hot")
class HotCounter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        next(_hot_bodies)
        self.n += 1
        return self.n


_hot_reads = itertools.count()


def hot_bodies_run() -> int:
    """Bodies of HotCounter.incr run so far in this process. Reading advances the shared
    count by one, so the reads made so far are subtracted (itertools.count is atomic)."""
    return next(_hot_bodies) - next(_hot_reads)


class SuperstaticDriver:
    system = "superstatic"

    def __init__(self, endpoints: list[str], options: dict[str, Any] | None = None) -> None:
        assert endpoints, "superstatic driver needs at least one agent endpoint"
        keys = (options or {}).get("keys")
        if keys is not None:
            # The suite says which key (or none: an unkeyed cluster) whatever the environment.
            os.environ.pop("SUPERSTATIC_KEYS", None)
        superstatic.connect(endpoints, keys=keys or None)
        self.kv: Any = superstatic.root(KV_ROOT, dict)
        self.seq: Any = SeqCounter()
        self.hot: Any = HotCounter()
        self._big: dict[int, Any] = {}
        self._increments: dict[str, Any] = {}

    def prepare(self) -> dict[str, Any]:
        return {"kv_items": len(self.kv)}

    def thread_state(self, thread_index: int) -> Any:
        return None  # the library is thread-safe: one session per process

    def write(self, state: Any, key: str, value: str) -> None:
        self.kv[key] = value  # a lone write: its own transaction, blind (never conflicts)

    def call(self, state: Any) -> None:
        self.seq.incr()

    def rmw(self, state: Any) -> None:
        self.hot.incr()  # a method: one serializable transaction, re-run on conflict

    def attempts(self) -> int:
        return hot_bodies_run()

    # ---- superstatic-only operations (the keyed workloads: bigdict, disjoint)

    def big_dict(self, size: int) -> Any:
        found = self._big.get(size)
        if found is None:
            found = self._big[size] = superstatic.root(BIG_ROOT.format(size=size), dict)
        return found

    def fill_big_dict(self, size: int, batch: int, value: str) -> dict[str, Any]:
        """Pre-fills the dict of `size` keys, `batch` keys per transaction."""
        big = self.big_dict(size)
        began = time.perf_counter()
        for first in range(0, size, batch):
            with superstatic.transaction():
                for j in range(first, min(first + batch, size)):
                    big[BIG_KEY.format(j)] = value
        return {"keys": len(big), "seconds": time.perf_counter() - began}

    def big_write(self, size: int, j: int, value: str) -> None:
        self.big_dict(size)[BIG_KEY.format(j)] = value  # a lone blind write of an existing key

    def disjoint_setup(self, keys: list[str]) -> None:
        """Creates this process's keys (0) in the shared dict, and each key's increment."""
        shared = superstatic.root(DISJOINT_ROOT, dict)
        with superstatic.transaction():
            for key in keys:
                shared[key] = 0
        for key in keys:

            @superstatic.transaction()  # a function: the library re-runs it on conflict
            def increment(key: str = key) -> None:
                shared[key] = shared[key] + 1

            self._increments[key] = increment

    def disjoint_rmw(self, key: str) -> None:
        self._increments[key]()

    def library_counts(self) -> dict[str, int]:
        """The library's own counters (superstatic.stats()): bodies re-run after a conflict,
        PROPOSEs the agent answered `conflict`, transactions that gave up."""
        snap = superstatic.stats()
        return {
            "txn_retries": int(snap["txn_retries"]),
            "conflict_answers": int(snap["commits"].get("conflict", 0)),
            "conflict_errors": int(snap["conflict_errors"]),
        }

    def close(self) -> None:
        superstatic.close()
