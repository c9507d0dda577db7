"""Latency samples and their summaries: percentiles, reservoir sampling, merging.

Latencies travel as integer microseconds (JSON-friendly, exact enough for sub-millisecond
operations). A client process keeps at most `SAMPLES_PER_PROCESS_MAX` of them with reservoir
sampling, so a fast system cannot make a run's memory or its JSON grow without bound, while the
percentiles stay unbiased; the operation count is always exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Samples one client process reports per run (reservoir beyond this).
SAMPLES_PER_PROCESS_MAX = 100_000
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values: the smallest value such that at least
    p percent of the values are <= it. p in (0, 100]."""
    assert 0.0 < p <= 100.0, p
    assert len(sorted_values) > 0, "percentile of no values"
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


@dataclass
class Reservoir:
    """Algorithm R: a uniform sample of at most `capacity` values out of `seen`."""

    capacity: int = SAMPLES_PER_PROCESS_MAX
    seed: int = 0
    values: list[int] = field(default_factory=list)
    seen: int = 0

    def __post_init__(self) -> None:
        assert self.capacity > 0, self.capacity
        self._rng = random.Random(self.seed)

    def add(self, value: int) -> None:
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.values[slot] = value


def summarize_us(samples: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean of microsecond samples (an empty dict for no samples)."""
    ordered = sorted(samples)
    if not ordered:
        return {}
    out: dict[str, float] = {"count": float(len(ordered))}
    for p in PERCENTILES:
        out[f"p{p:g}"] = percentile(ordered, p)
    out["max"] = float(ordered[-1])
    out["mean"] = sum(ordered) / len(ordered)
    return out


def summarize_groups_us(groups: Sequence[tuple[Sequence[int], int]]) -> dict[str, float]:
    """Summary over several processes' samples, each given as (sampled values, operations seen).
    A process that sampled (seen > len(values)) stands for more operations per sample, so each
    value weighs seen / len(values): the merged percentiles are those of all operations."""
    weighted: list[tuple[float, float]] = []
    total_seen = 0
    for values, seen in groups:
        if not values:
            continue
        assert seen >= len(values), (seen, len(values))
        weight = seen / len(values)
        weighted.extend((float(v), weight) for v in values)
        total_seen += seen
    if not weighted:
        return {}
    weighted.sort()
    total_weight = sum(w for _, w in weighted)
    out: dict[str, float] = {"count": float(total_seen)}
    targets = [(p, p / 100.0 * total_weight) for p in PERCENTILES]
    cumulative = 0.0
    pending = list(targets)
    for value, weight in weighted:
        cumulative += weight
        # A small tolerance: floating sums of equal weights must still reach p100-style ranks.
        while pending and cumulative >= pending[0][1] - 1e-9 * total_weight:
            out[f"p{pending[0][0]:g}"] = value
            pending.pop(0)
    for p, _ in pending:
        out[f"p{p:g}"] = weighted[-1][0]
    out["max"] = weighted[-1][0]
    out["mean"] = sum(v * w for v, w in weighted) / total_weight
    return out


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    assert len(values) > 0, "median of no values"
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0
