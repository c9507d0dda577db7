"""Checking the queue workload's history (queue_workload.py) against what docs/toolkit.md
promises of `superstatic.Queue`, no weaker:

- no acknowledged put lost: after the drain emptied the queue and its dead letters, every put
  that returned ok was acked ok by someone (or its ack's outcome is unknown); a drain that could
  not empty the queue of a healed cluster is a violation of its own (`not-drained`);
- nothing delivered that was not put (`never-put`), or whose put failed with a known outcome
  ("nothing changed", `failed-delivered`), and one put is one item (`two-items`: a value under
  two item ids is a put applied twice);
- a delivery is one claim: two gets never return the same delivery of an item
  (`same-delivery-twice`), and deliveries only grow (`delivery-regressed`: a get that began after
  another returned delivery n gets more than n);
- an ack is final and exclusive: an item is acked ok at most once (`acked-twice`), and never
  both acked ok at delivery n and delivered again (delivery m > n, or into the dead letters):
  an ack after a take-over must raise `LeaseLost` and change nothing, and an acked item is gone
  (`ack-and-redelivery`). This is the "exactly-once effect" the toolkit promises, and the only
  redelivery the history can judge exactly: when a redelivery happens (a lease or a liveness ran
  out in *log* time, which follows the leader's clock, and a lease starts at the claimer's
  replica's log time, which may lag) is not observable from wall-clock histories, so early
  redelivery is not checked here;
- FIFO to within `SPREAD` (8): a claim takes one of the first 8 ready items, so when an item is
  first delivered, fewer than 8 items that were put before it (their put returned before its put
  began) can still be waiting (first delivered by a get that began after this one returned)
  (`fifo`).

Delivery itself is at least once: an item not acked comes back, so redeliveries are counted,
not forbidden.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.checker import Event, HistoryError, Operation, pair_operations

from superstatic.toolkit.queue import SPREAD

from .queue_workload import KEY_DEAD, KEY_QUEUE, MODEL

SHOWN_MAX = 10  # problems of one kind printed in a report
KINDS = (
    "lost",
    "not-drained",
    "never-put",
    "failed-delivered",
    "two-items",
    "same-delivery-twice",
    "delivery-regressed",
    "acked-twice",
    "ack-and-redelivery",
    "fifo",
)


@dataclass
class QueueProblem:
    kind: str
    detail: str


@dataclass
class QueueResult:
    events: int
    counts: dict[str, int]  # ok / fail / info operations
    stats: Counter[str] = field(default_factory=Counter)
    problems: list[QueueProblem] = field(default_factory=list)
    error: str = ""  # a history the checker could not read

    model = MODEL

    @property
    def violations(self) -> int:
        return len(self.problems) + (1 if self.error else 0)

    def count(self, *kinds: str) -> int:
        return sum(1 for p in self.problems if p.kind in kinds)

    def summary(self) -> str:
        s = self.stats
        return (
            f"puts ok {s['put ok']} / fail {s['put fail']} / info {s['put info']}; "
            f"deliveries {s['deliveries']} ({s['redeliveries']} redelivered); acks ok "
            f"{s['ack ok']}, refused {s['ack refused']}; drained {s['drained']}, dead letters "
            f"{s['dead letters']}; most overtaken {s['most overtaken']} (FIFO bound {SPREAD - 1})"
        )

    def describe(self) -> str:
        lines = [f"== {MODEL}: {self.events} events, {self.counts}", self.summary()]
        if self.error:
            lines.append(f"history unreadable: {self.error}")
        by_kind: dict[str, list[QueueProblem]] = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p)
        for kind, found in by_kind.items():
            lines.append(f"{kind}: {len(found)}")
            lines.extend(f"  {p.detail}" for p in found[:SHOWN_MAX])
        return "\n".join(lines)


def _delivery(op: Operation) -> tuple[Any, str, int] | None:
    """(value, item id, deliveries) of an ok get that delivered, else None."""
    if op.f != "get" or op.status != "ok" or op.value is None:
        return None
    value, item_id, deliveries = op.value
    return value, item_id, deliveries


def check_queue(
    events: Sequence[Event], left: dict[str, int] | None, drain_process: int | None = None
) -> QueueResult:
    """`left`: the items the drain found in the queue and its dead letters at the end (None:
    there was no drain, so losses cannot be told from items still queued)."""
    counts = {"ok": 0, "fail": 0, "info": 0}
    try:
        ops = pair_operations(events)
    except HistoryError as exc:
        return QueueResult(len(events), counts, error=str(exc))
    for op in ops:
        counts[op.status] += 1
    result = QueueResult(len(events), counts)
    try:
        _check(ops, left, drain_process, result)
    except (HistoryError, ValueError, TypeError) as exc:  # a value not of the workload's shape
        result.error = str(exc)
    return result


def _check(
    ops: Sequence[Operation],
    left: dict[str, int] | None,
    drain_process: int | None,
    result: QueueResult,
) -> None:
    stats, problems = result.stats, result.problems

    def problem(kind: str, detail: str) -> None:
        problems.append(QueueProblem(kind, detail))

    puts: dict[Any, Operation] = {}
    for op in ops:
        if op.f == "put":
            stats[f"put {op.status}"] += 1
            if op.value in puts:
                raise HistoryError(op.where(), "value", f"{op.value!r} put twice by the clients")
            puts[op.value] = op
    # Deliveries per item (per key: an item moved to the dead letters keeps its id).
    gets: dict[tuple[str, str], list[Operation]] = defaultdict(list)
    ids_of: dict[Any, set[str]] = defaultdict(set)
    for op in ops:
        found = _delivery(op)
        if found is None:
            continue
        value, item_id, deliveries = found
        gets[(op.key, item_id)].append(op)
        ids_of[value].add(item_id)
        stats["deliveries"] += 1
        stats["redeliveries"] += deliveries > 1
        stats["dead letters"] += op.key == KEY_DEAD
        stats["drained"] += op.process == drain_process
        put = puts.get(value)
        if put is None:
            problem("never-put", f"{op.describe()}: delivers {value!r}, which no client put")
        elif put.status == "fail":
            problem("failed-delivered", f"{op.describe()}: delivers the failed {put.describe()}")
    for value, ids in ids_of.items():
        if len(ids) > 1:
            problem("two-items", f"{value!r} delivered as {len(ids)} items: {sorted(ids)}")
    for (key, item_id), delivered in gets.items():
        seen = Counter(_delivery(op)[2] for op in delivered)  # type: ignore[index]
        for n, times in seen.items():
            if times > 1:
                problem(
                    "same-delivery-twice",
                    f"{key} item {item_id}: delivery {n} returned by {times} gets",
                )
        by_return = sorted(delivered, key=lambda o: o.return_time)
        for earlier in by_return:
            n = _delivery(earlier)[2]  # type: ignore[index]
            for later in delivered:
                m = _delivery(later)[2]  # type: ignore[index]
                if later.call_time > earlier.return_time and m < n:
                    problem(
                        "delivery-regressed",
                        f"{later.describe()} began after {earlier.describe()} returned",
                    )
    # Acks.
    acked: dict[str, list[Operation]] = defaultdict(list)
    unknown_acks: set[Any] = set()
    for op in ops:
        if op.f != "ack":
            continue
        value, item_id, deliveries = op.value
        if op.status == "ok":
            stats["ack ok"] += 1
            acked[item_id].append(op)
        elif op.status == "info":
            unknown_acks.add(value)
        elif (op.completion is not None and (op.completion.error or "")).startswith("LeaseLost"):
            stats["ack refused"] += 1
    acked_values = set()
    for item_id, acks in acked.items():
        acked_values.update(a.value[0] for a in acks)
        if len(acks) > 1:
            problem("acked-twice", f"item {item_id}: " + "; ".join(a.describe() for a in acks))
        for ack in acks:
            key, n = ack.key, ack.value[2]
            for get in gets.get((key, item_id), []):
                if _delivery(get)[2] > n:  # type: ignore[index]
                    problem("ack-and-redelivery", f"{ack.describe()}, yet {get.describe()}")
            if key == KEY_QUEUE:
                for get in gets.get((KEY_DEAD, item_id), []):
                    problem("ack-and-redelivery", f"{ack.describe()}, yet {get.describe()}")
    # Losses: only once the drain emptied everything.
    if left is not None and any(left.values()):
        problem("not-drained", f"items left after the drain: {left}")
    elif left is not None:
        for value, put in puts.items():
            if put.status == "ok" and value not in acked_values and value not in unknown_acks:
                problem("lost", f"{put.describe()}: never acked, and not in the drained queue")
    stats["most overtaken"] = _fifo(puts, gets, problem)


def _fifo(puts: dict[Any, Operation], gets: Any, problem: Any) -> int:
    """Items still waiting, put before an item B, when B was first delivered; each time more
    than SPREAD - 1 is a problem. Returns the largest number found."""
    first: dict[Any, Operation] = {}  # value -> its first delivery (deliveries 1, main queue)
    for (key, _item_id), delivered in gets.items():
        if key != KEY_QUEUE:
            continue
        for op in delivered:
            value, _, deliveries = _delivery(op)  # type: ignore[misc]
            if deliveries == 1:
                first[value] = op
    items = [
        (puts[v], g) for v, g in first.items() if v in puts and puts[v].status == "ok"
    ]  # (put, first get)
    # Sweep the Bs by their put's call time, adding the As whose put returned before it; count
    # the As whose first get began after B's first get returned (2-D dominance, sorted list).
    by_put_return = sorted(items, key=lambda pg: pg[0].return_time)
    waiting_calls: list[float] = []
    i = 0
    most = 0
    for put_b, get_b in sorted(items, key=lambda pg: pg[0].call_time):
        while i < len(by_put_return) and by_put_return[i][0].return_time < put_b.call_time:
            bisect.insort(waiting_calls, by_put_return[i][1].call_time)
            i += 1
        waiting = len(waiting_calls) - bisect.bisect_right(waiting_calls, get_b.return_time)
        most = max(most, waiting)
        if waiting > SPREAD - 1:
            problem(
                "fifo",
                f"{get_b.describe()}: first delivery while {waiting} items put before it "
                f"were still waiting (at most {SPREAD - 1})",
            )
    return most


def load_left(path: Path) -> dict[str, int] | None:
    """final-queue.jsonl: what the drain left, or None without one."""
    if not path.exists():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        if obj.get("key") == "left":
            return {str(k): int(v) for k, v in obj["value"].items()}
    return None
