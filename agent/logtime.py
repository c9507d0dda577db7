"""Log time: the clock sessions expire by, stamped into entries by the leader alone.

Raft thesis 6.3: servers must agree on when a session expires, so time comes from the log. The
leader stamps every NORMAL entry it appends (its own clients' proposals and the ones followers
forward, which arrive unstamped); the state machine's log time is `max(previous, entry time)`.
One host with a wrong clock must not expire every session (issue 9, bug 3), so the stamp is
bounded:

    base  = inherited + (monotonic now - monotonic when this leadership began)
    stamp = clamp(wall clock, base - skew_ms_max, base + skew_ms_max), never below the last stamp
            of this leadership (never below `inherited`)

`inherited` is the log time this node had applied when it became leader. Within one leadership
the log advances at the rate of the leader's monotonic clock, which does not jump, and the wall
clock may only pull it by `skew_ms_max` either way. A leader whose wall clock is an hour ahead
stamps at most `skew_ms_max` ahead of what it inherited plus the time it really led; one an hour
behind stops nothing either (log time keeps moving at the monotonic rate, `skew_ms_max` late).
Each change of leader can add at most `skew_ms_max` on top of real elapsed time, so expiring a
session that keeps itself alive (a keep-alive every ttl/3) early takes many leader changes in a
row, all with clocks ahead: config requires `skew_ms_max <= session_ttl_ms / 10`.
"""

from __future__ import annotations

# log_time_skew_ms_max must leave room for many leader changes within a session's keep-alive.
SKEW_PER_TTL_MAX = 0.1


class LeaderStamp:
    """The stamps of one node while it leads; `lead` starts a leadership."""

    def __init__(self, skew_ms_max: int) -> None:
        assert skew_ms_max >= 0, skew_ms_max
        self.skew_ms_max = skew_ms_max
        self.term = 0  # the leadership (term) the base belongs to; 0: none yet
        self._inherited_ms = 0
        self._began_s = 0.0
        self._last_ms = 0

    def lead(self, term: int, inherited_ms: int, monotonic_s: float) -> None:
        assert term > self.term, (term, self.term)
        self.term = term
        self._inherited_ms = inherited_ms
        self._began_s = monotonic_s
        # Stamps never go back within a leadership. Across leaderships the state machine's
        # max(previous, stamp) keeps log time from going back; the stamps of an earlier
        # leadership must not carry over: they may never have committed (a leader stopped
        # for a while resumes leading its old term and stamps the pause), and starting from
        # them would jump log time past what the cluster applied, expiring live sessions.
        self._last_ms = inherited_ms

    def stamp(self, wall_ms: int, monotonic_s: float) -> int:
        assert self.term > 0, "stamping outside a leadership"
        elapsed_ms = max(0, int((monotonic_s - self._began_s) * 1000))
        base = self._inherited_ms + elapsed_ms
        bounded = min(max(wall_ms, base - self.skew_ms_max), base + self.skew_ms_max)
        self._last_ms = max(self._last_ms, bounded)
        return self._last_ms
