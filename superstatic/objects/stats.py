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
  `superstatic_client_conflict_errors_total`: transactions that gave up (`ConflictError`).

prometheus_client is imported only by `metrics()`: an app that does not call it does not need
the package. Counting costs one lock and a bisect per commit.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import Any

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

    def committed(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._latency[bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
            self._latency_sum_s += seconds
            self._commits[outcome] += 1

    def note(self, event: str, count: int = 1) -> None:
        with self._lock:
            self._events[event] += count

    def snapshot(self) -> dict[str, Any]:
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
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

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
