"""The leader's log-time stamps (agent/logtime.py): bounded against wrong and jumping clocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent.logtime import LeaderStamp

SKEW_MS = 1_000
HOUR_MS = 3_600_000


def test_a_clock_an_hour_ahead_stamps_at_most_the_skew_ahead() -> None:
    stamp = LeaderStamp(SKEW_MS)
    stamp.lead(term=3, inherited_ms=50_000, monotonic_s=100.0)
    assert stamp.stamp(wall_ms=50_000 + HOUR_MS, monotonic_s=100.0) == 51_000
    # Ten seconds of leading later: ten seconds more, never the hour.
    assert stamp.stamp(wall_ms=60_000 + HOUR_MS, monotonic_s=110.0) == 61_000


def test_a_clock_an_hour_behind_does_not_stop_log_time() -> None:
    stamp = LeaderStamp(SKEW_MS)
    stamp.lead(term=3, inherited_ms=50_000, monotonic_s=100.0)
    assert stamp.stamp(wall_ms=50_000 - HOUR_MS, monotonic_s=100.0) == 50_000  # never back
    assert stamp.stamp(wall_ms=60_000 - HOUR_MS, monotonic_s=110.0) == 59_000


def test_a_right_clock_is_followed_and_a_jump_mid_leadership_is_clamped() -> None:
    stamp = LeaderStamp(SKEW_MS)
    stamp.lead(term=1, inherited_ms=0, monotonic_s=0.0)
    assert stamp.stamp(wall_ms=300, monotonic_s=0.5) == 300
    assert stamp.stamp(wall_ms=2_000, monotonic_s=2.0) == 2_000
    assert stamp.stamp(wall_ms=2_000 + HOUR_MS, monotonic_s=2.1) == 3_100  # the jump: clamped
    assert stamp.stamp(wall_ms=2_200, monotonic_s=2.2) == 3_100  # and it never goes back


def test_a_new_leadership_starts_from_what_it_inherited() -> None:
    stamp = LeaderStamp(SKEW_MS)
    stamp.lead(term=1, inherited_ms=10_000, monotonic_s=0.0)
    assert stamp.stamp(wall_ms=10_000, monotonic_s=0.0) == 10_000
    stamp.lead(term=5, inherited_ms=20_000, monotonic_s=1.0)
    assert stamp.stamp(wall_ms=HOUR_MS, monotonic_s=1.0) == 21_000


def test_a_new_leadership_ignores_uncommitted_stamps_of_an_earlier_one() -> None:
    """A leader stopped for a minute resumes still leading its old term and stamps what its
    clients queued: inherited plus a minute. Those entries never commit (a new leader was
    elected meanwhile, and log time went on from where it stood). When this node leads again,
    its stamps start from the log time it inherited, within the skew, not a minute ahead."""
    stamp = LeaderStamp(SKEW_MS)
    stamp.lead(term=3, inherited_ms=10_000, monotonic_s=0.0)
    # Its wall clock stood still (or is behind): the skew below base, a minute on. Never committed.
    assert stamp.stamp(wall_ms=10_000, monotonic_s=60.0) == 69_000
    stamp.lead(term=5, inherited_ms=12_000, monotonic_s=62.0)
    assert stamp.stamp(wall_ms=12_000, monotonic_s=62.0) <= 12_000 + SKEW_MS


@settings(max_examples=200, deadline=None)
@given(
    inherited=st.integers(0, 10**12),
    steps=st.lists(st.tuples(st.integers(0, 10_000), st.integers(-(10**10), 10**10)), max_size=30),
)
def test_stamps_never_go_back_and_stay_within_the_skew_of_real_time(
    inherited: int, steps: list[tuple[int, int]]
) -> None:
    stamp = LeaderStamp(SKEW_MS)
    stamp.lead(term=1, inherited_ms=inherited, monotonic_s=0.0)
    elapsed_ms = 0
    last = inherited
    for advance_ms, wall_offset_ms in steps:
        elapsed_ms += advance_ms
        value = stamp.stamp(inherited + elapsed_ms + wall_offset_ms, elapsed_ms / 1000)
        assert value >= last
        assert value <= inherited + elapsed_ms + SKEW_MS
        last = value
