"""The checker's sequential models, its persistent list state and its info pruning."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.checker import (
    COUNTER,
    LIST_APPEND,
    REGISTER,
    SET,
    HistoryError,
    Model,
    Operation,
    Result,
    check_events,
    model_named,
    pair_operations,
)
from support.checker.brute import brute_linearizable
from support.checker.build import events_of, op
from support.checker.models import LIST_EMPTY, ListState


def operation(model: Model, f: str, value: object) -> Operation:
    """An ok operation in the model's form, as the checker would step it."""
    events = events_of(op(0, f, value, 0, 1))
    return model.validate(pair_operations(events)[0])


def run(model: Model, *steps: tuple[str, object]) -> list[bool]:
    state = model.init
    legal_each = []
    for f, value in steps:
        legal, state = model.step(state, operation(model, f, value))
        legal_each.append(legal)
    return legal_each


def test_register() -> None:
    assert run(REGISTER, ("read", None), ("write", 1), ("read", 1), ("read", 2)) == [
        True,
        True,
        True,
        False,
    ]
    assert run(REGISTER, ("write", 1), ("cas", (1, 2)), ("read", 2), ("cas", (1, 3))) == [
        True,
        True,
        True,
        False,
    ]
    assert run(REGISTER, ("cas", (None, "a")), ("read", "a")) == [True, True]
    assert run(REGISTER, ("write", (1, "t")), ("read", (1, "t"))) == [True, True]


def test_counter() -> None:
    assert run(COUNTER, ("read", 0), ("add", 5), ("add", -2), ("read", 3), ("read", 5)) == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_set() -> None:
    assert run(SET, ("read", ()), ("add", 1), ("add", 1), ("add", "b"), ("read", ("b", 1))) == [
        True,
        True,
        True,
        True,
        True,
    ]
    assert run(SET, ("add", 1), ("read", (1, 2))) == [True, False]


def test_list_append() -> None:
    assert run(LIST_APPEND, ("read", ()), ("append", 1), ("append", 2), ("read", (1, 2))) == [
        True,
        True,
        True,
        True,
    ]
    assert run(LIST_APPEND, ("append", 1), ("append", 2), ("read", (2, 1))) == [True, True, False]
    assert run(LIST_APPEND, ("append", 1), ("read", (1, 1))) == [True, False]
    assert run(LIST_APPEND, ("append", 1), ("read", ())) == [True, False]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=8), st.lists(st.integers(0, 3), max_size=8))
def test_list_state_equality_and_hash_follow_the_items(a: list[int], b: list[int]) -> None:
    def build(items: list[int]) -> ListState:
        state = LIST_EMPTY
        for item in items:
            state = state.append(item)
        return state

    left, right = build(a), build(b)
    assert left.items() == tuple(a)
    assert (left == right) == (a == b)
    assert left.equals(tuple(b)) == (a == b)
    if a == b:
        assert hash(left) == hash(right)
    # Sharing a prefix, as the search's states do.
    assert (left.append(9) == left.append(9)) and left.append(9) != left.append(8)


@pytest.mark.parametrize(
    ("model", "f", "value", "field_message"),
    [
        (REGISTER, "write", None, "None is not an int, string or array"),
        (REGISTER, "cas", 1, "cas value must be [expected, new]"),
        (REGISTER, "cas", (1, 2, 3), "cas value must be [expected, new]"),
        (REGISTER, "incr", 1, "'incr' is not an operation of register (cas, read, write)"),
        (COUNTER, "add", "1", "'1' is not an int"),
        (SET, "add", None, "None is not an int, string or array"),
        (LIST_APPEND, "append", None, "None is not an int, string or array"),
    ],
)
def test_invoke_values_are_checked(model: Model, f: str, value: object, field_message: str) -> None:
    events = events_of(op(0, f, value, 0, 1))
    with pytest.raises(HistoryError, match="event 1") as raised:
        check_events(events, model)
    assert field_message in str(raised.value)


@pytest.mark.parametrize(
    ("model", "answer", "message"),
    [
        (COUNTER, "3", "'3' is not an int"),
        (SET, (1, 1), "a set read answers each element once"),
        (SET, 1, "a set read answers an array"),
        (LIST_APPEND, 1, "a list read answers an array"),
    ],
)
def test_read_answers_are_checked(model: Model, answer: object, message: str) -> None:
    events = events_of(op(0, "read", answer, 0, 1))
    with pytest.raises(HistoryError, match="event 2, field 'value'") as raised:
        check_events(events, model)
    assert message in str(raised.value)


def test_a_read_is_invoked_with_null_and_an_ok_write_answers_its_argument() -> None:
    invoke, ok = events_of(op(0, "read", 1, 0, 1))
    with pytest.raises(HistoryError, match="event 1, field 'value': a read is invoked with null"):
        check_events([replace(invoke, value=1), ok], REGISTER)
    invoke, ok = events_of(op(0, "write", 1, 0, 1))
    with pytest.raises(HistoryError, match="event 2, field 'value': ok write answers 2"):
        check_events([invoke, replace(ok, value=2)], REGISTER)


def test_model_named() -> None:
    assert model_named("set") is SET
    assert model_named(SET) is SET
    with pytest.raises(ValueError, match="no model 'queue'"):
        model_named("queue")


# -- dropping info writes nobody could observe ---------------------------------------------------


def test_unobserved_info_writes_are_dropped_and_observed_ones_kept() -> None:
    events = events_of(
        op(0, "append", 1, 0, 1, status="info"),
        op(1, "append", 2, 0, 1, status="info"),
        op(2, "read", (2,), 2, 3),
    )
    ops = [LIST_APPEND.validate(o) for o in pair_operations(events)]
    assert LIST_APPEND.unobserved is not None
    assert LIST_APPEND.unobserved(ops) == {0}
    register_events = events_of(
        op(0, "write", 1, 0, 1, status="info"),  # read: kept
        op(1, "write", 2, 0, 1, status="info"),  # expected by a cas: kept
        op(2, "write", 3, 0, 1, status="info"),  # nobody could tell: dropped
        op(3, "cas", (2, 4), 0, 1, status="info"),  # 4 unseen: dropped
        op(4, "read", 1, 2, 3),
    )
    ops = [REGISTER.validate(o) for o in pair_operations(register_events)]
    assert REGISTER.unobserved is not None
    assert REGISTER.unobserved(ops) == {2, 3}
    assert COUNTER.unobserved is None  # every add shows in every later total


@pytest.mark.parametrize("model", [REGISTER, SET, LIST_APPEND], ids=lambda m: m.name)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_dropping_unobserved_info_never_changes_the_verdict(
    model: Model, data: st.DataObject
) -> None:
    """Against the exhaustive reference, which keeps every info write."""
    element = st.integers(0, 2)
    specs = []
    for process in range(data.draw(st.integers(1, 7))):
        if data.draw(st.booleans()):
            f = "read"
            if model is REGISTER:
                value: object = data.draw(st.none() | element)
            elif model is SET:
                value = tuple(sorted(data.draw(st.frozensets(element))))
            else:
                value = tuple(data.draw(st.lists(element, max_size=3)))
            status = "ok"
        else:
            f = {"register": "write", "set": "add", "list-append": "append"}[model.name]
            if model is REGISTER and data.draw(st.booleans()):
                f, value = "cas", (data.draw(st.none() | element), data.draw(element))
            else:
                value = data.draw(element)
            status = data.draw(st.sampled_from(["ok", "info"]))
        call = data.draw(st.integers(0, 6))
        specs.append(
            op(process, f, value, call, call + data.draw(st.integers(0, 3)), status=status)
        )  # type: ignore[arg-type]
    events = events_of(*specs)
    pruned = check_events(events, model)
    unpruned = check_events(events, replace(model, unobserved=None))
    expected = brute_linearizable(pair_operations(events), model)
    assert pruned.ok == unpruned.ok == expected
    assert pruned.result is not Result.UNKNOWN
