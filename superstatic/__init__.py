"""superstatic: Terracotta-style clustered objects for Python.

    import superstatic

    @superstatic.clustered
    class Inventory:
        def __init__(self):          # runs once per cluster, ever
            self.stock = {}

        def add(self, sku, n):       # each outside call = one serializable transaction
            self.stock[sku] = self.stock.get(sku, 0) + n

    inv = Inventory()                # the cluster-wide singleton
    cfg = superstatic.root("config", dict)
    with superstatic.transaction():  # several objects, one atomic commit
        ...
    superstatic.sync()               # linearizable barrier

See docs/library.md for the semantics and costs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from superstatic.protocol.errors import (
    AuthError,
    ConflictError,
    Error,
    LimitExceeded,
    NotStorable,
    ProtocolError,
    StoreFull,
    Unavailable,
)

if TYPE_CHECKING:
    from types import ModuleType

    from superstatic.decorators import clustered, register
    from superstatic.objects.plain_copy import json_default, plain
    from superstatic.objects.session import TransactionBlock
    from superstatic.objects.stats import metrics, stats
    from superstatic.toolkit.errors import LeaseLost, QueueFull, Timeout
    from superstatic.toolkit.events import ClusterEvents, cluster_events
    from superstatic.toolkit.lock import Lock, RLock
    from superstatic.toolkit.queue import Job, Queue
    from superstatic.toolkit.results import Results
    from superstatic.toolkit.runtime import ClusterEvent
    from superstatic.toolkit.waiting import Watch, wait_for, watch

    heapq: ModuleType

__all__ = [
    "AuthError",
    "ClusterEvent",
    "ClusterEvents",
    "ConflictError",
    "Error",
    "Job",
    "LeaseLost",
    "LimitExceeded",
    "Lock",
    "NotStorable",
    "ProtocolError",
    "Queue",
    "QueueFull",
    "RLock",
    "Results",
    "StoreFull",
    "Timeout",
    "Unavailable",
    "Watch",
    "close",
    "cluster_events",
    "clustered",
    "connect",
    "heapq",
    "json_default",
    "metrics",
    "plain",
    "register",
    "root",
    "stats",
    "sync",
    "transaction",
    "wait_for",
    "watch",
]

# The agent imports superstatic.protocol, which imports this package first:
# the library proper (wrapt, proxies, replica) loads only when an app first uses it.
_LAZY = {
    "clustered": "superstatic.decorators",
    "register": "superstatic.decorators",
    "plain": "superstatic.objects.plain_copy",
    "json_default": "superstatic.objects.plain_copy",
    "metrics": "superstatic.objects.stats",  # the app's Prometheus collector (docs/operations.md)
    "stats": "superstatic.objects.stats",  # the same counts as a plain dict
    # The HA-server toolkit (docs/toolkit.md).
    "Queue": "superstatic.toolkit.queue",
    "Job": "superstatic.toolkit.queue",
    "Lock": "superstatic.toolkit.lock",
    "RLock": "superstatic.toolkit.lock",
    "Results": "superstatic.toolkit.results",
    "wait_for": "superstatic.toolkit.waiting",
    "watch": "superstatic.toolkit.waiting",
    "Watch": "superstatic.toolkit.waiting",
    "cluster_events": "superstatic.toolkit.events",
    "ClusterEvents": "superstatic.toolkit.events",
    "ClusterEvent": "superstatic.toolkit.runtime",
    "LeaseLost": "superstatic.toolkit.errors",
    "QueueFull": "superstatic.toolkit.errors",
    "Timeout": "superstatic.toolkit.errors",
}
# Names that are whole modules: `from superstatic import heapq` (heap functions that work on
# shared lists; the standard heapq accepts only real lists).
_LAZY_MODULES = {"heapq": "superstatic.objects.heap"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(_LAZY_MODULES[name])
    else:
        raise AttributeError(f"module 'superstatic' has no attribute {name!r}")
    globals()[name] = value
    return value


def _session() -> Any:
    from superstatic.client import default as session_default

    return session_default.get()


def connect(
    endpoints: list[str] | str | None = None,
    *,
    keys: str | None = None,
    replicate: str | None = None,
    cache_bytes: int | None = None,
) -> None:
    """Connects to the cluster; optional (the first use connects with the defaults).
    Endpoints: this argument, else $SUPERSTATIC_AGENT, else an embedded single-node agent.
    Keys: this app's key file (`superstatic keys`), else $SUPERSTATIC_KEYS; an agent that
    refuses it raises AuthError. `replicate`: "partial" (the default, else
    $SUPERSTATIC_REPLICATE) loads objects when first touched and keeps about `cache_bytes` of
    them (else $SUPERSTATIC_CACHE_BYTES); "all" holds every object in this process
    (docs/virtual-heap.md)."""
    from superstatic.client import default as session_default

    session_default.connect(endpoints, keys, replicate=replicate, cache_bytes=cache_bytes)


def close() -> None:
    """Closes the default connection (also done at exit)."""
    import sys

    from superstatic.client import default as session_default

    toolkit = sys.modules.get("superstatic.toolkit.runtime")
    if toolkit is not None:
        toolkit.close_all()  # give up claimed jobs and locks while the connection works
    session_default.close()


def root(name: str, kind: type) -> Any:
    """The named cluster-wide dict, list or set (created empty if it does not exist)."""
    return _session().root(name, kind)


def transaction() -> TransactionBlock:
    """`with transaction():` commits the block's writes atomically at its end (nothing if it
    raises); `async with transaction():` the same, the commit awaited without blocking the event
    loop. `@transaction()` on a function runs each call as a transaction, re-run on conflict.
    Transactions belong to the thread / asyncio task that opened them."""
    from superstatic.objects.session import TransactionBlock

    return TransactionBlock(_session)


def sync() -> None:
    """Linearizable barrier: the local view now includes every write committed anywhere before
    the call began."""
    _session().sync()
