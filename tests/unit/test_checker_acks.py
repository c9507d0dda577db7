"""The checker's final-state checks: nothing acknowledged lost, nothing applied twice, nothing
failed applied."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.checker import (
    COUNTER,
    LIST_APPEND,
    REGISTER,
    SET,
    AckProblem,
    HistoryError,
    check_acks,
    describe_acks,
)
from support.checker.build import events_of, op
from support.checker.simulate import simulate


def kinds(problems: list[AckProblem]) -> list[tuple[object, str, object]]:
    return [(p.key, p.kind, p.value) for p in problems]


APPENDS = events_of(
    op(0, "append", 1, 0, 1),
    op(1, "append", 2, 0, 1),
    op(2, "append", 3, 0, 1, status="info"),
    op(3, "append", 4, 0, 1, status="fail"),
)


def test_list_append_final_states() -> None:
    assert check_acks(APPENDS, LIST_APPEND, {"x": (2, 1)}) == []
    assert check_acks(APPENDS, LIST_APPEND, {"x": [1, 3, 2]}) == []  # the info one happened
    assert kinds(check_acks(APPENDS, LIST_APPEND, {"x": (1,)})) == [("x", "lost", 2)]
    assert kinds(check_acks(APPENDS, LIST_APPEND, {"x": (1, 2, 1)})) == [("x", "duplicated", 1)]
    assert kinds(check_acks(APPENDS, LIST_APPEND, {"x": (1, 2, 3, 3)})) == [("x", "duplicated", 3)]
    assert kinds(check_acks(APPENDS, LIST_APPEND, {"x": (1, 2, 4)})) == [("x", "failed-applied", 4)]
    assert kinds(check_acks(APPENDS, LIST_APPEND, {"x": (1, 2, 5)})) == [("x", "never-written", 5)]


def test_the_same_value_appended_twice_must_appear_twice() -> None:
    events = events_of(op(0, "append", 7, 0, 1), op(1, "append", 7, 2, 3))
    assert check_acks(events, LIST_APPEND, {"x": (7, 7)}) == []
    problems = check_acks(events, LIST_APPEND, {"x": (7,)})
    assert kinds(problems) == [("x", "lost", 7)]
    assert len(problems[0].operations) == 2


def test_set_final_states() -> None:
    adds = events_of(
        op(0, "add", 1, 0, 1),
        op(1, "add", 2, 0, 1, status="info"),
        op(2, "add", 3, 0, 1, status="fail"),
    )
    assert check_acks(adds, SET, {"x": {1}}) == []
    assert check_acks(adds, SET, {"x": {1, 2}}) == []
    assert kinds(check_acks(adds, SET, {"x": set()})) == [("x", "lost", 1)]
    assert kinds(check_acks(adds, SET, {"x": {1, 3}})) == [("x", "failed-applied", 3)]
    with pytest.raises(HistoryError, match="final state of key 'x', field 'value'"):
        check_acks(adds, SET, {"x": (1, 1)})


def test_counter_final_states() -> None:
    adds = events_of(
        op(0, "add", 5, 0, 1),
        op(1, "add", 2, 0, 1, status="info"),
        op(2, "add", -1, 0, 1, status="info"),
        op(3, "add", 100, 0, 1, status="fail"),
    )
    for total in (4, 5, 6, 7):
        assert check_acks(adds, COUNTER, {"x": total}) == [], total
    assert kinds(check_acks(adds, COUNTER, {"x": 3})) == [("x", "too-low", 3)]
    assert kinds(check_acks(adds, COUNTER, {"x": 8})) == [("x", "too-high", 8)]


def test_register_final_states() -> None:
    writes = events_of(
        op(0, "write", 1, 0, 1),
        op(1, "cas", (1, 2), 2, 3, status="info"),
        op(2, "write", 3, 0, 1, status="fail"),
    )
    assert check_acks(writes, REGISTER, {"x": 1}) == []
    assert check_acks(writes, REGISTER, {"x": 2}) == []
    assert kinds(check_acks(writes, REGISTER, {"x": None})) == [("x", "lost", None)]
    assert kinds(check_acks(writes, REGISTER, {"x": 3})) == [("x", "failed-applied", 3)]
    assert kinds(check_acks(writes, REGISTER, {"x": 4})) == [("x", "never-written", 4)]


def test_a_written_key_without_final_state_is_reported() -> None:
    problems = check_acks(APPENDS, LIST_APPEND, {"y": ()})
    assert kinds(problems) == [("x", "unread", None)]
    assert "key 'x': unread: 2 ok writes but no final state was read" in describe_acks(problems)


def test_a_key_nobody_wrote_must_be_empty() -> None:
    assert check_acks([], SET, {"z": ()}) == []
    assert kinds(check_acks([], SET, {"z": (1,)})) == [("z", "never-written", 1)]


@pytest.mark.parametrize("name", ["register", "counter", "set", "list-append"])
@settings(max_examples=50, deadline=None)
@given(rng=st.randoms(use_true_random=False), info_percent=st.sampled_from([0, 20]))
def test_simulated_final_states_have_no_problems(
    name: str, rng: random.Random, info_percent: int
) -> None:
    sim = simulate(
        rng,
        name,
        processes=3,
        operations=30,
        keys=("x", "y"),
        fail_percent=10,
        info_percent=info_percent,
    )
    problems = check_acks(sim.events, name, sim.finals)
    assert problems == [], describe_acks(problems)


@settings(max_examples=50, deadline=None)
@given(rng=st.randoms(use_true_random=False), choice=st.integers(0, 100))
def test_dropping_an_acknowledged_append_is_found(rng: random.Random, choice: int) -> None:
    sim = simulate(rng, "list-append", processes=3, operations=20, fail_percent=10)
    acked = [e.value for e in sim.events if e.type == "ok" and e.f == "append"]
    if not acked:
        return
    lost = acked[choice % len(acked)]
    final = tuple(v for v in sim.finals["x"] if v != lost)
    assert kinds(check_acks(sim.events, "list-append", {"x": final})) == [("x", "lost", lost)]
