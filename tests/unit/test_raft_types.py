"""Raft core boundary values: conf change codec, membership arithmetic, log and progress units."""

from __future__ import annotations

import cbor2
import pytest
from superstatic_agent.raft.log import RaftLog
from superstatic_agent.raft.membership import (
    apply_change,
    committed_index,
    refusal,
    vote_result,
)
from superstatic_agent.raft.progress import Progress
from superstatic_agent.raft.types import (
    CONF_CHANGE_BYTES_MAX,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    ProgressState,
    RaftConfig,
)

from superstatic.protocol.errors import ProtocolError


def test_conf_change_round_trip() -> None:
    for change in (
        ConfChange("add_learner", "n4", "tcp://10.0.0.4:7001"),
        ConfChange("promote", "n4", ""),
        ConfChange("add_voter", "n5", "tcp://h:1"),
        ConfChange("remove", "n1", ""),
    ):
        assert ConfChange.decode(change.encode()) == change


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps(["explode", "n1", ""]),
        cbor2.dumps(["remove", "", ""]),
        cbor2.dumps(["remove", "n1"]),
        cbor2.dumps({"op": "remove"}),
        cbor2.dumps(["remove", 1, ""]),
        b"\x00" * (CONF_CHANGE_BYTES_MAX + 1),
    ],
)
def test_conf_change_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ConfChange.decode(data)


def test_apply_change_sets_one_nodes_status_and_is_idempotent() -> None:
    conf = ConfState.make(["a", "b", "c"], [], {"a": "A", "b": "B", "c": "C"})
    added = apply_change(conf, ConfChange("add_learner", "d", "D"))
    assert added.learners == ("d",) and dict(added.addresses)["d"] == "D"
    promoted = apply_change(added, ConfChange("promote", "d", ""))
    assert promoted.voters == ("a", "b", "c", "d") and promoted.learners == ()
    assert apply_change(promoted, ConfChange("promote", "d", "")) == promoted
    removed = apply_change(promoted, ConfChange("remove", "a", ""))
    assert removed.voters == ("b", "c", "d") and "a" not in dict(removed.addresses)


def test_refusals() -> None:
    conf = ConfState.make(["a"], ["l"], {"a": "A", "l": "L"})
    assert refusal(conf, ConfChange("remove", "a", "")) == "cannot remove the last voter"
    assert refusal(conf, ConfChange("promote", "a", "")) == "a is not a learner"
    assert refusal(conf, ConfChange("add_learner", "x", "")) is not None  # needs an address
    assert refusal(conf, ConfChange("promote", "l", "")) is None
    assert refusal(conf, ConfChange("add_voter", "l", "")) is None


def test_majorities() -> None:
    voters = ("a", "b", "c", "d", "e")
    assert committed_index(voters, {"a": 9, "b": 7, "c": 5, "d": 3}) == 5
    assert committed_index(("a", "b", "c", "d"), {"a": 9, "b": 7, "c": 5, "d": 3}) == 5
    assert vote_result(voters, {"a": True, "b": True}) is None
    assert vote_result(voters, {"a": True, "b": True, "c": True}) is True
    assert vote_result(voters, {"a": False, "b": False, "c": False}) is False
    # Votes from non-voters (learners, strangers) never count.
    assert vote_result(("a", "b", "c"), {"a": True, "x": True, "y": True}) is None


def test_config_rejects_nonsense() -> None:
    with pytest.raises(AssertionError):
        RaftConfig(ticks_election=4, ticks_heartbeat=4)
    with pytest.raises(AssertionError):
        RaftConfig(inflight_max=0)


def entries(terms: list[int], start: int = 1) -> list[Entry]:
    return [Entry(start + i, t, EntryKind.NORMAL, b"") for i, t in enumerate(terms)]


def test_log_conflict_truncates_only_the_uncommitted_tail() -> None:
    log = RaftLog(0, 0, entries([1, 1, 2, 2, 2]))
    log.commit_to(2)
    result = log.maybe_append(2, 1, 2, entries([3, 3], start=3))
    assert result == (4, 3)
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 3, 3, None]
    assert log.unstable_from == 3 and log.stable_index == 2
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 2, entries([9], start=2))  # would replace a committed entry


def test_log_find_conflict_by_term_skips_whole_terms() -> None:
    log = RaftLog(0, 0, entries([1, 1, 1, 4, 4, 4, 4, 5, 5]))
    assert log.find_conflict_by_term(9, 3) == 3
    assert log.find_conflict_by_term(9, 5) == 9
    assert log.find_conflict_by_term(20, 4) == 7


def test_log_compaction_keeps_the_base_term() -> None:
    log = RaftLog(0, 0, entries([1, 1, 2, 2]))
    log.commit_to(3)
    log.handed_out()
    log.compact(3, 2)
    assert log.first_index == 4 and log.term(3) == 2 and log.term(2) is None
    assert log.slice(4, 4, 10, 10) == tuple(entries([2], start=4))


def test_progress_window_and_probe() -> None:
    pr = Progress(11, inflight_max=2)
    pr.sent_entries(11)
    assert pr.is_paused()  # a probe is out
    assert pr.maybe_update(11)
    pr.become_replicate()
    pr.sent_entries(13)
    pr.sent_entries(15)
    assert pr.is_paused() and pr.next == 16  # window of 2 full
    pr.inflights.free_le(13)
    assert not pr.is_paused()
    # A rejection of the APPEND at prev 13; the follower holds up to 12: probe from 13.
    assert pr.maybe_decr_to(13, 12)
    assert pr.state is ProgressState.PROBE and pr.next == 13
    assert not pr.maybe_decr_to(5, 4)  # stale: not the answer to our probe
