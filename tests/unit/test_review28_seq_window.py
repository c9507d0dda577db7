"""Review 28: the library never meets rules 2's refusal mark.

Rules 2 refuses every unrecorded seq at or below the highest one refused at SESSION_SEQS_MAX
(agent/statemachine.py, `_late_copy`), so a write of a live caller still in flight could be
refused without ever having been refused itself. The library cannot meet it: it keeps its
seqs within SEQ_WINDOW_MAX of its seq_low, and a session records only seqs at or above the
highest seq_low applied, so its record holds fewer than SESSION_SEQS_MAX outcomes. That holds
only while the window is below the limit; raising one past the other must fail here first.
"""

from __future__ import annotations

from superstatic_agent.sessions import SESSION_SEQS_MAX

from superstatic.client import connection


def test_the_librarys_seq_window_is_below_the_sessions_outcome_limit() -> None:
    # Opens take seqs too; the window bounds every seq the library has not been answered.
    assert connection.SEQ_WINDOW_MAX < SESSION_SEQS_MAX
