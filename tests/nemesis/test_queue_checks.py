"""The queue workload's checks (queue_checks.py) on hand-written histories: a correct one
passes, and each known-bad one is caught under its own kind (so each check can fail)."""

from __future__ import annotations

from typing import Any

import pytest
from support.checker import Event

from .queue_checks import QueueResult, check_queue
from .queue_workload import KEY_DEAD, KEY_QUEUE

DRAIN = 99
EMPTY = {KEY_QUEUE: 0, KEY_DEAD: 0}


class History:
    """Builds events; each op() is an invoke at `start` and a completion at `end`."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def op(
        self,
        process: int,
        f: str,
        value: Any,
        start: int,
        end: int,
        status: str = "ok",
        answer: Any = None,
        key: str = KEY_QUEUE,
        error: str | None = None,
    ) -> History:
        invoke_value = None if f == "get" else value
        done_value = answer if f == "get" else value
        self.events.append(Event("invoke", process, f, key, invoke_value, start))
        if status == "ok":
            self.events.append(Event("ok", process, f, key, done_value, end))
        else:
            self.events.append(Event(status, process, f, key, invoke_value, end, error=error))
        return self

    def put(self, x: int, start: int, end: int, status: str = "ok") -> History:
        return self.op(1, "put", x, start, end, status)

    def get(
        self, process: int, x: int, item: str, n: int, start: int, end: int, key: str = KEY_QUEUE
    ) -> History:
        return self.op(process, "get", None, start, end, answer=(x, item, n), key=key)

    def ack(
        self,
        process: int,
        x: int,
        item: str,
        n: int,
        start: int,
        end: int,
        status: str = "ok",
        error: str | None = None,
    ) -> History:
        return self.op(process, "ack", (x, item, n), start, end, status, error=error)

    def check(self, left: dict[str, int] | None = EMPTY) -> QueueResult:
        ordered = sorted(self.events, key=lambda e: e.time)
        return check_queue(ordered, left, DRAIN)


def kinds(result: QueueResult) -> set[str]:
    assert not result.error, result.error
    return {p.kind for p in result.problems}


def good() -> History:
    """Two items; the first skipped once (redelivered after its lease, the late ack refused),
    the second acked at once; a failed put never seen; an empty get."""
    h = History()
    h.put(10, 0, 5).put(11, 6, 9).put(12, 10, 12, status="fail")
    h.get(2, 10, "a", 1, 20, 25)  # consumer 2 skips the ack...
    h.get(3, 11, "b", 1, 26, 30).ack(3, 11, "b", 1, 31, 35)
    h.get(3, 10, "a", 2, 40, 45).ack(3, 10, "a", 2, 46, 50)  # ... redelivered
    h.ack(2, 10, "a", 1, 51, 55, status="fail", error="LeaseLost: no longer claimed")
    h.op(DRAIN, "get", None, 60, 70, answer=None)
    return h


def test_a_correct_history_passes() -> None:
    result = good().check()
    assert kinds(result) == set() and result.violations == 0
    s = result.stats
    assert (s["put ok"], s["put fail"], s["deliveries"], s["redeliveries"]) == (2, 1, 3, 1)
    assert (s["ack ok"], s["ack refused"]) == (2, 1)


def test_an_acknowledged_put_never_acked_is_lost() -> None:
    h = History().put(10, 0, 5).put(11, 6, 9).get(2, 11, "b", 1, 10, 12).ack(2, 11, "b", 1, 13, 14)
    assert kinds(h.check()) == {"lost"}
    # An ack whose outcome is unknown may have removed it: not counted lost.
    h.get(2, 10, "a", 1, 20, 22).ack(2, 10, "a", 1, 23, 24, status="info")
    assert kinds(h.check()) == set()


def test_items_left_after_the_drain_are_a_violation_and_hide_no_loss() -> None:
    h = History().put(10, 0, 5)
    assert kinds(h.check({KEY_QUEUE: 1, KEY_DEAD: 0})) == {"not-drained"}
    assert kinds(h.check(None)) == set()  # no drain: losses cannot be told


def test_a_value_never_put_or_put_failed_is_never_delivered() -> None:
    h = History().put(10, 0, 5, status="fail").get(2, 10, "a", 1, 6, 8).ack(2, 10, "a", 1, 9, 10)
    assert kinds(h.check()) == {"failed-delivered"}
    h = History().get(2, 77, "z", 1, 6, 8).ack(2, 77, "z", 1, 9, 10)
    assert kinds(h.check()) == {"never-put"}


def test_one_put_is_one_item() -> None:
    h = History().put(10, 0, 5)
    h.get(2, 10, "a", 1, 6, 8).ack(2, 10, "a", 1, 9, 10)
    h.get(3, 10, "a2", 1, 11, 12).ack(3, 10, "a2", 1, 13, 14)
    assert "two-items" in kinds(h.check())


def test_one_delivery_goes_to_one_consumer() -> None:
    h = History().put(10, 0, 5).get(2, 10, "a", 1, 6, 9).get(3, 10, "a", 1, 7, 10)
    h.ack(3, 10, "a", 1, 11, 12)
    assert kinds(h.check()) == {"same-delivery-twice"}


def test_deliveries_never_go_back() -> None:
    h = History().put(10, 0, 5).get(2, 10, "a", 2, 6, 9).get(3, 10, "a", 1, 10, 12)
    assert kinds(h.check(None)) == {"delivery-regressed"}


def test_an_item_is_acked_once() -> None:
    h = History().put(10, 0, 5).get(2, 10, "a", 1, 6, 9)
    h.ack(2, 10, "a", 1, 10, 12).ack(2, 10, "a", 1, 13, 14)
    assert kinds(h.check()) == {"acked-twice"}


def test_an_ack_after_a_takeover_must_be_refused() -> None:
    """Consumer 2's lease lapsed and consumer 3 took the item: 2's ack must raise LeaseLost."""
    h = History().put(10, 0, 5).get(2, 10, "a", 1, 6, 9).get(3, 10, "a", 2, 20, 22)
    h.ack(2, 10, "a", 1, 23, 25)
    assert kinds(h.check()) == {"ack-and-redelivery"}
    h.ack(3, 10, "a", 2, 26, 28)
    assert kinds(h.check()) == {"ack-and-redelivery", "acked-twice"}


def test_an_acked_item_never_reaches_the_dead_letters() -> None:
    h = History().put(10, 0, 5).get(2, 10, "a", 1, 6, 9).ack(2, 10, "a", 1, 10, 12)
    h.get(DRAIN, 10, "a", 11, 20, 22, key=KEY_DEAD)
    assert kinds(h.check()) == {"ack-and-redelivery"}


def test_a_dead_letter_drained_is_not_lost() -> None:
    h = History().put(10, 0, 5).get(2, 10, "a", 10, 6, 9)
    h.get(DRAIN, 10, "a", 11, 20, 22, key=KEY_DEAD).op(
        DRAIN, "ack", (10, "a", 11), 23, 24, key=KEY_DEAD
    )
    result = h.check()
    assert kinds(result) == set()
    assert (result.stats["dead letters"], result.stats["drained"]) == (1, 1)


@pytest.mark.parametrize(("overtakers", "bad"), [(7, False), (8, True)])
def test_fifo_within_spread(overtakers: int, bad: bool) -> None:
    """Items 0..k put one after another, then item k+1; k+1 delivered first while all of
    0..k still wait: more than SPREAD - 1 = 7 of them is out of order."""
    h = History()
    t = 0
    for x in range(overtakers + 1):
        h.put(x, t, t + 1)
        t += 2
    h.get(2, overtakers, "last", 1, 100, 101).ack(2, overtakers, "last", 1, 102, 103)
    t = 200
    for x in range(overtakers):
        h.get(2, x, f"i{x}", 1, t, t + 1).ack(2, x, f"i{x}", 1, t + 2, t + 3)
        t += 4
    result = h.check()
    assert kinds(result) == ({"fifo"} if bad else set())
    assert result.stats["most overtaken"] == overtakers


def test_a_history_not_of_the_workloads_shape_is_reported() -> None:
    h = History().put(10, 0, 5).op(2, "get", None, 6, 8, answer=(10, "a"))
    result = h.check()
    assert result.error and result.violations == 1
