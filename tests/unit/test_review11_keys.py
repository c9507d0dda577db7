"""Review 11 findings on hostile keys (issue 11, data model v2): a key that passed the codec
must give every replica an outcome, never an ApplyFailed halt."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent.statemachine import ApplyFailed
from support import store

from superstatic.objects import replica as replica_module
from superstatic.protocol import codec, ops
from superstatic.protocol.keynorm import ekey, key_norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_keyreads import Replica, with_dict

# An aware time at an offset within a microsecond of -24h: its whole-second offset (what CPython
# compares aware times by) is -86400 s, one past the -(24h - 1s) the normal form assumed.
_OFFSET = datetime.timedelta(days=-1, microseconds=1)
_LATE = datetime.time(23, 59, 59, tzinfo=codec.ZoneStub("Etc/Far", _OFFSET))


def snapshot_of(r: Replica) -> list[tuple[str, int, str, Any]]:
    """The agent's nodes as an app snapshot hands them to a replica (wire values)."""
    return [
        (oid, version, kind, contents)
        for oid, (version, kind, contents) in store.objects(r.env).items()
    ]


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


# Two datetimes a raw client can send: the same wall time in America/New_York's zone stand-in
# with different offsets (the library never makes the first: its offset is not the zone's).
# The agent compares them by instant (two keys); an app that has the zone turns both into the
# same ZoneInfo datetime (one key).
_NY_WINTER = datetime.datetime(2026, 1, 15, 12, 0)
_K_WRONG = _NY_WINTER.replace(
    tzinfo=codec.ZoneStub("America/New_York", datetime.timedelta(hours=3))
)
_K_RIGHT = _NY_WINTER.replace(
    tzinfo=codec.ZoneStub("America/New_York", datetime.timedelta(hours=-5))
)
# The repeated hour of 2026-11-01 (fold 0: EDT, fold 1: EST): refused as keys by the library,
# not by the agent, which has no zone database.
_NY_FALL = datetime.datetime(2026, 11, 1, 1, 30)
_K_FOLD0 = _NY_FALL.replace(tzinfo=codec.ZoneStub("America/New_York", datetime.timedelta(hours=-4)))
_K_FOLD1 = _NY_FALL.replace(
    tzinfo=codec.ZoneStub("America/New_York", datetime.timedelta(hours=-5)), fold=1
)


@pytest.mark.parametrize(("first", "second"), [(_K_WRONG, _K_RIGHT), (_K_FOLD0, _K_FOLD1)])
def test_an_app_replica_fed_the_events_holds_the_keys_the_agent_holds(
    r: Replica, first: datetime.datetime, second: datetime.datetime
) -> None:
    pytest.importorskip("zoneinfo").ZoneInfo("America/New_York")
    with_dict(r)
    before = r.index
    snapshot = snapshot_of(r)
    body = [["set", "c.d", first, 1], ["set", "c.d", second, 2], ["del", "c.d", first]]
    assert r.v1(body).outcome == "ok"
    agent = r.node("c.d")[2]
    assert len(agent) == 1  # `second` stays: a snapshot gives new apps this
    # An app replica that loaded the snapshot before the body and was fed its event, and one
    # that loads the snapshot after it: both hold what the agent holds.
    fed = replica_module.Replica()
    fed.load_snapshot(before, snapshot)
    fed.apply_events([(r.index, "c", 1, "ok", ops.encode_txn({}, body), (), 0)])
    late = replica_module.Replica()
    late.load_snapshot(r.index, snapshot_of(r))
    assert len(fed.nodes["c.d"].live) == len(late.nodes["c.d"].live) == len(agent)
