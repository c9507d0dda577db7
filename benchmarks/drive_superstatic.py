"""The superstatic driver: the public library only (connect, root, @clustered)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import superstatic

KV_ROOT = "bench.kv"

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

    def close(self) -> None:
        superstatic.close()
