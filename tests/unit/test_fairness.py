"""Fairness between optimistic writers: winners yield only while another client is starving."""

from __future__ import annotations

from superstatic.objects import fairness
from superstatic.objects.fairness import ContentionTracker


def test_nobody_waits_without_conflicts() -> None:
    tracker = ContentionTracker()
    for _ in range(10):
        tracker.observe("a", "ok")
        tracker.observe("b", "ok")
    assert tracker.yield_s("a") == 0.0


def test_a_winner_yields_to_a_starving_client_within_bounds() -> None:
    tracker = ContentionTracker()
    tracker.record_round_trip(0.004)
    for _ in range(fairness.STARVING_CONFLICTS_MIN):
        tracker.observe("loser", "conflict")
        tracker.observe("winner", "ok")
    pause = tracker.yield_s("winner")
    assert fairness.YIELD_S_MIN <= pause <= fairness.YIELD_S_MAX
    # The loser itself never yields to the ones that beat it.
    assert tracker.yield_s("loser") == 0.0
    # Once the loser commits, nobody yields any more.
    tracker.observe("loser", "ok")
    assert tracker.yield_s("winner") == 0.0


def test_one_conflict_is_not_starvation_and_equal_runs_do_not_yield() -> None:
    tracker = ContentionTracker()
    tracker.observe("b", "conflict")
    assert tracker.yield_s("a") == 0.0
    tracker.observe("b", "conflict")
    tracker.observe("a", "conflict")
    tracker.observe("a", "conflict")
    assert tracker.yield_s("a") == 0.0


def test_tracked_clients_are_bounded() -> None:
    tracker = ContentionTracker()
    for i in range(fairness.TRACKED_CLIENTS_MAX + 50):
        tracker.observe(f"c{i}", "conflict")
    assert len(tracker._runs) == fairness.TRACKED_CLIENTS_MAX
