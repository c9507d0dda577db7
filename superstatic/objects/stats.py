"""What the library measures in an app's process, for the app's own metrics.

    superstatic.stats()                       # a plain dict, no dependency
    superstatic.metrics()                     # registers a collector on prometheus_client's
    superstatic.metrics(registry=my_registry) # default registry, or on yours

Counted for every connection of the process (apps usually have one):

- `superstatic_client_commit_seconds`: histogram, a PROPOSE submitted to its answer
  (quorum-durable and applied at the agent), retries across agents included;
- `superstatic_client_commits_total{outcome}`: answers by outcome (ok, conflict, error;
  `unavailable` when no answer came in time);
- `superstatic_client_resends_total`: PROPOSEs sent again with the same seq (a lost reply, a
  refusal, a failover); `superstatic_client_failovers_total`: moves to another agent;
- `superstatic_client_txn_retries_total`: transaction bodies run again after a conflict;
  `superstatic_client_conflict_errors_total`: transactions that gave up (`ConflictError`);
- the virtual heap of partial replicas (`connect(replicate="partial")`, docs/virtual-heap.md),
  `stats()["heap"]`: gauges `held_nodes` (nodes held whole or per key), `held_bytes` (the
  eviction clock's estimate, what `cache_bytes` bounds: held contents and every node's
  record, stubs included) and `stubs` (hollow nodes kept: known
  by a reference, not loaded), summed over the process's live partial replicas; counters
  `faults` (accesses that waited for a load: a node, a key, or a per-key dict read whole),
  `loads` (loads asked of the agent: faults of one node by several threads share one),
  `evictions` (nodes and dict keys the clock let go) and `refaults` (faults of a node the
  clock had let go). As `superstatic_client_heap_*` in `metrics()`.

prometheus_client is imported only by `metrics()`: an app that does not call it does not need
the package. Counting costs one lock and a bisect per commit.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superstatic.objects.replica import Replica

# The virtual heap's counters (stats()["heap"]); its gauges are read from the replicas.
HEAP_COUNTERS = ("faults", "loads", "evictions", "refaults")
HEAP_GAUGES = ("held_nodes", "held_bytes", "stubs")

# Upper bounds of the commit latency histogram, seconds (the agent's, agent/metrics.py).
LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)


class LibraryStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency = [0] * (len(LATENCY_BOUNDS_S) + 1)
        self._latency_sum_s = 0.0
        self._commits: Counter[str] = Counter()
        self._events: Counter[str] = Counter()  # resends, failovers, txn_retries, conflict_errors
        # Counted by every partial replica of the process (a counter outlives its replica:
        # a closed session's faults stay counted), and the live ones for the gauges.
        self._heap: Counter[str] = Counter()
        self._replicas: weakref.WeakSet[Replica] = weakref.WeakSet()

    def committed(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._latency[bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
            self._latency_sum_s += seconds
            self._commits[outcome] += 1

    def note(self, event: str, count: int = 1) -> None:
        with self._lock:
            self._events[event] += count

    def heap_count(self, counter: str, count: int = 1) -> None:
        with self._lock:
            self._heap[counter] += count

    def add_replica(self, replica: Replica) -> None:
        """A partial replica of this process: its held nodes count in the heap gauges while
        it lives."""
        with self._lock:
            self._replicas.add(replica)

    def _heap_snapshot(self) -> dict[str, int]:
        with self._lock:
            replicas = list(self._replicas)
            heap = {name: self._heap[name] for name in HEAP_COUNTERS}
        for name in HEAP_GAUGES:
            heap[name] = 0
        for replica in replicas:
            for name, value in replica.heap_gauges().items():
                heap[name] += value
        return heap

    def snapshot(self) -> dict[str, Any]:
        heap = self._heap_snapshot()  # (outside the lock: it reads the replicas)
        with self._lock:
            return {
                "commit_seconds": {
                    "bounds": LATENCY_BOUNDS_S,
                    "counts": tuple(self._latency),
                    "sum": self._latency_sum_s,
                    "count": sum(self._latency),
                },
                "commits": dict(self._commits),
                "resends": self._events["resends"],
                "failovers": self._events["failovers"],
                "txn_retries": self._events["txn_retries"],
                "conflict_errors": self._events["conflict_errors"],
                "heap": heap,
            }


STATS = LibraryStats()
_registered: dict[int, Any] = {}
_registered_lock = threading.Lock()


def stats() -> dict[str, Any]:
    """The process's counts so far (see the module docstring)."""
    return STATS.snapshot()


class LibraryCollector:
    """A prometheus_client collector over STATS."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = STATS.snapshot()
        latency = snap["commit_seconds"]
        buckets = []
        running = 0
        for bound, n in zip((*LATENCY_BOUNDS_S, float("inf")), latency["counts"], strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        family = HistogramMetricFamily(
            "superstatic_client_commit_seconds",
            "A PROPOSE submitted to its answer, retries across agents included.",
        )
        family.add_metric([], buckets, sum_value=latency["sum"])
        yield family
        commits = CounterMetricFamily(
            "superstatic_client_commits", "Answers to PROPOSEs by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(snap["commits"].items()):
            commits.add_metric([outcome], float(count))
        yield commits
        for name, doc in (
            ("resends", "PROPOSEs sent again with the same seq."),
            ("failovers", "Moves to another agent."),
            ("txn_retries", "Transaction bodies run again after a conflict."),
            ("conflict_errors", "Transactions that raised ConflictError."),
        ):
            yield CounterMetricFamily(f"superstatic_client_{name}", doc, value=float(snap[name]))
        heap = snap["heap"]
        for name, doc in (
            ("faults", "Accesses that waited for a load (partial replicas)."),
            ("loads", "Loads asked of the agent (partial replicas)."),
            ("evictions", "Nodes and dict keys the eviction clock let go."),
            ("refaults", "Faults of a node the eviction clock had let go."),
        ):
            yield CounterMetricFamily(
                f"superstatic_client_heap_{name}", doc, value=float(heap[name])
            )
        for name, doc in (
            ("held_nodes", "Nodes held whole or per key by partial replicas."),
            ("held_bytes", "Estimated bytes of partial replicas' nodes, stubs included."),
            ("stubs", "Hollow nodes kept by partial replicas (known, not loaded)."),
        ):
            yield GaugeMetricFamily(f"superstatic_client_heap_{name}", doc, value=float(heap[name]))


def metrics(registry: Any = None) -> LibraryCollector:
    """Registers the library's collector on `registry` (prometheus_client's default registry
    if None) once, and returns it. Needs the prometheus_client package."""
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - it is a dependency of superstatic
        raise ImportError(
            "superstatic.metrics() needs prometheus_client: pip install prometheus_client"
        ) from exc
    target = prometheus_client.REGISTRY if registry is None else registry
    with _registered_lock:
        known = _registered.get(id(target))
        if known is not None:
            return known  # type: ignore[no-any-return]
        collector = LibraryCollector()
        target.register(collector)
        _registered[id(target)] = collector
        return collector
