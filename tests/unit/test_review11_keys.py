"""Review 11 findings on hostile keys (issue 11, data model v2): a key that passed the codec
must give every replica an outcome, never an ApplyFailed halt."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from superstatic_agent.statemachine import ApplyFailed

from superstatic.protocol import codec
from superstatic.protocol.keynorm import ekey, key_norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_keyreads import Replica, with_dict

# An aware time at an offset within a microsecond of -24h: its whole-second offset (what CPython
# compares aware times by) is -86400 s, one past the -(24h - 1s) the normal form assumed.
_OFFSET = datetime.timedelta(days=-1, microseconds=1)
_LATE = datetime.time(23, 59, 59, tzinfo=codec.ZoneStub("Etc/Far", _OFFSET))


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Replica]:
    replica = Replica(tmp_path / "r")
    try:
        yield replica
    finally:
        replica.close()


def test_a_time_key_at_an_offset_just_above_minus_a_day_has_a_normal_form() -> None:
    for tz in (codec.ZoneStub("Etc/Far", _OFFSET), datetime.timezone(_OFFSET)):
        for second in (58, 59):
            key = datetime.time(23, 59, second, 7, tzinfo=tz)
            norm = key_norm(key)
            assert norm == key
            assert ekey(norm) == ekey(key)
    # Unequal times stay apart: one second earlier is another instant.
    earlier = datetime.time(23, 59, 58, tzinfo=datetime.timezone(_OFFSET))
    assert earlier != _LATE and ekey(earlier) != ekey(_LATE)


def test_a_key_read_that_key_norm_cannot_handle_is_an_outcome_not_a_halt(r: Replica) -> None:
    with_dict(r, [["a", 1]])
    try:
        read = r.v2(r.index, {"c.d": (0, [_LATE])}, [["set", "c.d", "z", 1]])
    except ApplyFailed as exc:  # every replica halts at this committed entry
        pytest.fail(f"the body halted the agent: {exc}")
    assert read.outcome in ("ok", "error"), read.error
    for body in ([["set", "c.d", _LATE, 1]], [["del", "c.d", _LATE]]):
        assert r.v1(body).outcome == "ok"
    assert r.node("c.d")[2] == [["a", 1], ["z", 1]]
