"""The linearizability checker (tests/support/checker): known histories, the search against an
exhaustive reference, simulated histories, limits, and replay from a file."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.checker import (
    COUNTER,
    LIST_APPEND,
    MODELS,
    REGISTER,
    SET,
    Event,
    Model,
    Result,
    Verdict,
    check_events,
    describe_verdict,
    pair_operations,
)
from support.checker.__main__ import EXIT_INPUT, EXIT_OK, EXIT_UNKNOWN, EXIT_VIOLATION, main
from support.checker.brute import brute_linearizable
from support.checker.build import events_of, op
from support.checker.history import save_jsonl
from support.checker.simulate import corrupt_read, simulate


def result(model: Model, *specs: object, **kwargs: object) -> Result:
    verdict = check_events(events_of(*specs), model, **kwargs)  # type: ignore[arg-type]
    assert_witness(verdict, model)
    return verdict.result


def assert_witness(verdict: Verdict, model: Model) -> None:
    """An OK verdict's linearization must replay in the model and respect real time; an
    ILLEGAL one's prefix must replay and leave its stuck operation out."""
    for key_verdict in verdict.keys:
        state = model.init
        for op_ in key_verdict.order:
            legal, state = model.step(state, op_)
            assert legal, ("the witness does not replay", op_)
        if key_verdict.result is Result.OK:
            positions = {o.index: n for n, o in enumerate(key_verdict.order)}
            for a in key_verdict.order:
                for b in key_verdict.order:
                    if a.status == "ok" and a.return_time < b.call_time:
                        assert positions[a.index] < positions[b.index], ("real time", a, b)
        if key_verdict.result is Result.ILLEGAL:
            explanation = key_verdict.explanation
            assert explanation is not None
            assert explanation.stuck.index not in {o.index for o in explanation.prefix}
            assert explanation.stuck in [c for c, _ in explanation.candidates]


# -- known good ----------------------------------------------------------------------------------


def test_sequential_register_is_linearizable() -> None:
    assert (
        result(
            REGISTER,
            op(0, "read", None, 0, 1),
            op(0, "write", 1, 2, 3),
            op(1, "read", 1, 4, 5),
            op(1, "cas", (1, 2), 6, 7),
            op(0, "read", 2, 8, 9),
        )
        is Result.OK
    )


def test_overlapping_read_may_see_old_or_new() -> None:
    for answer in (None, 1):
        assert result(REGISTER, op(0, "write", 1, 0, 10), op(1, "read", answer, 2, 3)) is Result.OK


def test_reads_of_concurrent_writes_in_either_order() -> None:
    # Two overlapping writes; readers after both agree on the last, whichever it is.
    for last in (1, 2):
        assert (
            result(
                REGISTER,
                op(0, "write", 1, 0, 5),
                op(1, "write", 2, 1, 4),
                op(2, "read", last, 6, 7),
                op(3, "read", last, 8, 9),
            )
            is Result.OK
        )


def test_a_touching_operation_counts_as_concurrent() -> None:
    # The read returned at the instant the write was invoked: a clock tie, not an accusation.
    assert result(REGISTER, op(0, "read", 1, 0, 5), op(1, "write", 1, 5, 6)) is Result.OK


def test_info_write_that_took_effect() -> None:
    assert (
        result(REGISTER, op(0, "write", 1, 0, 1, status="info"), op(1, "read", 1, 5, 6))
        is Result.OK
    )


def test_info_write_that_never_took_effect() -> None:
    assert (
        result(
            REGISTER,
            op(0, "write", 1, 0, 1),
            op(1, "write", 2, 2, 3, status="info"),
            op(2, "read", 1, 4, 5),
            op(2, "read", 1, 6, 7),
        )
        is Result.OK
    )


def test_info_write_may_take_effect_long_after_its_client_gave_up() -> None:
    # p0's write of 1 was still in flight when p1 wrote 2 and p2 read 2: it lands last.
    assert (
        result(
            REGISTER,
            op(0, "write", 1, 0, 1, status="info"),
            op(1, "write", 2, 2, 3),
            op(2, "read", 2, 4, 5),
            op(2, "read", 1, 6, 7),
        )
        is Result.OK
    )


def test_invoke_without_completion_is_info() -> None:
    events = events_of(op(0, "write", 1, 0, None), op(1, "read", 1, 5, 6))
    assert [o.status for o in pair_operations(events)] == ["info", "ok"]
    assert check_events(events, REGISTER).ok


def test_info_operation_is_never_needed() -> None:
    # An info append nobody saw does not have to be placed.
    assert (
        result(
            LIST_APPEND,
            op(0, "append", 1, 0, 1),
            op(1, "append", 2, 0, 1, status="info"),
            op(2, "read", (1,), 2, 3),
        )
        is Result.OK
    )


def test_info_cas_happened_or_not() -> None:
    for final in (1, 2):
        assert (
            result(
                REGISTER,
                op(0, "write", 1, 0, 1),
                op(1, "cas", (1, 2), 2, 3, status="info"),
                op(2, "read", final, 4, 5),
            )
            is Result.OK
        )


def test_failed_write_is_dropped() -> None:
    assert (
        result(
            REGISTER,
            op(0, "write", 1, 0, 1),
            op(1, "write", 2, 2, 3, status="fail"),
            op(2, "read", 1, 4, 5),
        )
        is Result.OK
    )


def test_info_read_constrains_nothing() -> None:
    assert (
        result(REGISTER, op(0, "write", 1, 0, 1), op(1, "read", None, 2, 3, status="info"))
        is Result.OK
    )


# -- known bad -----------------------------------------------------------------------------------


def test_stale_read_after_a_completed_write() -> None:
    assert (
        result(
            REGISTER,
            op(0, "write", 1, 0, 1),
            op(0, "write", 2, 2, 3),
            op(1, "read", 1, 4, 5),
        )
        is Result.ILLEGAL
    )


def test_lost_cas() -> None:
    assert (
        result(
            REGISTER,
            op(0, "write", 0, 0, 1),
            op(1, "cas", (0, 1), 2, 3),
            op(2, "read", 0, 4, 5),
        )
        is Result.ILLEGAL
    )


def test_two_cas_from_the_same_value_cannot_both_succeed() -> None:
    assert (
        result(
            REGISTER,
            op(0, "write", 0, 0, 1),
            op(1, "cas", (0, 1), 2, 5),
            op(2, "cas", (0, 2), 2, 5),
        )
        is Result.ILLEGAL
    )


def test_read_sees_a_write_invoked_after_it_returned() -> None:
    assert result(REGISTER, op(0, "read", 5, 0, 1), op(1, "write", 5, 2, 3)) is Result.ILLEGAL


def test_a_failed_write_must_not_be_seen() -> None:
    assert (
        result(REGISTER, op(0, "write", 1, 0, 1, status="fail"), op(1, "read", 1, 2, 3))
        is Result.ILLEGAL
    )


def test_reads_must_not_go_back_in_time() -> None:
    # New value seen, then the old one, both after the write began: not linearizable.
    assert (
        result(
            REGISTER,
            op(0, "write", 1, 0, 1),
            op(1, "write", 2, 2, 10),
            op(2, "read", 2, 3, 4),
            op(3, "read", 1, 5, 6),
        )
        is Result.ILLEGAL
    )


def test_counter_read_out_of_range() -> None:
    adds = [op(0, "add", 1, 0, 1), op(1, "add", 2, 0, 1)]
    assert result(COUNTER, *adds, op(2, "read", 4, 2, 3)) is Result.ILLEGAL
    assert result(COUNTER, *adds, op(2, "read", 1, 2, 3)) is Result.ILLEGAL
    assert result(COUNTER, *adds, op(2, "read", 3, 2, 3)) is Result.OK
    # Concurrent with both adds, any partial sum is fine.
    for total in (0, 1, 2, 3):
        assert result(COUNTER, *adds, op(2, "read", total, 0, 1)) is Result.OK


def test_set_read_missing_an_acknowledged_add() -> None:
    assert (
        result(
            SET,
            op(0, "add", 1, 0, 1),
            op(1, "add", 2, 0, 3),
            op(2, "read", (2,), 4, 5),
        )
        is Result.ILLEGAL
    )
    assert (
        result(SET, op(0, "add", 1, 0, 1), op(1, "add", 2, 0, 3), op(2, "read", (2, 1), 4, 5))
        is Result.OK
    )


def test_list_reads_in_inconsistent_orders() -> None:
    appends = [op(0, "append", 1, 0, 3), op(1, "append", 2, 0, 3)]
    later = op(3, "read", (2, 1), 6, 7)
    assert result(LIST_APPEND, *appends, op(2, "read", (1, 2), 4, 5), later) is Result.ILLEGAL
    assert result(LIST_APPEND, *appends, op(2, "read", (2, 1), 4, 5), later) is Result.OK


def test_duplicate_append() -> None:
    assert (
        result(LIST_APPEND, op(0, "append", 1, 0, 1), op(1, "read", (1, 1), 2, 3)) is Result.ILLEGAL
    )


def test_explanation_names_the_key_the_read_and_the_prefix() -> None:
    events = events_of(
        op(0, "write", 1, 0, 1, key="y"),
        op(0, "write", 2, 2, 3, key="y"),
        op(1, "read", 1, 4, 5, key="y"),
        op(2, "write", 9, 0, 1, key="z"),
    )
    verdict = check_events(events, REGISTER)
    assert verdict.result is Result.ILLEGAL
    assert [k.key for k in verdict.illegal()] == ["y"]
    explanation = verdict.illegal()[0].explanation
    assert explanation is not None
    assert explanation.key == "y"
    assert [(o.f, o.value) for o in explanation.prefix] == [("write", 1), ("write", 2)]
    assert explanation.state == 2
    assert (explanation.stuck.f, explanation.stuck.value) == ("read", 1)
    assert [(c.f, allowed) for c, allowed in explanation.candidates] == [("read", False)]
    text = describe_verdict(verdict)
    assert "key 'y': not linearizable" in text
    assert "p1 read 'y' 1 [4, 5]" in text
    assert "'z'" not in text


# -- splitting by key ----------------------------------------------------------------------------


def test_keys_are_independent_objects() -> None:
    specs = [op(0, "write", 1, 0, 1, key="a"), op(1, "read", None, 2, 3, key="b")]
    assert result(REGISTER, *specs) is Result.OK
    one_register = replace(REGISTER, name="one-register", per_key=False)
    assert result(one_register, *specs) is Result.ILLEGAL


def test_one_illegal_key_makes_the_history_illegal() -> None:
    verdict = check_events(
        events_of(
            op(0, "write", 1, 0, 1, key=1),
            op(1, "read", 1, 2, 3, key=1),
            op(2, "read", 7, 0, 1, key="k"),
        ),
        REGISTER,
    )
    assert verdict.result is Result.ILLEGAL
    assert [(k.key, k.result) for k in verdict.keys] == [(1, Result.OK), ("k", Result.ILLEGAL)]


# -- limits --------------------------------------------------------------------------------------


def wide_history() -> list[Event]:
    """Ten concurrent writes and a read that only fits after all of them in a certain order:
    the search needs many steps, whatever the answer."""
    writes = [op(p, "write", p, 0, 10) for p in range(10)]
    return events_of(*writes, op(10, "read", 3, 11, 12))


def test_step_limit_gives_unknown_never_ok() -> None:
    events = wide_history()
    assert check_events(events, REGISTER).ok
    full_steps = check_events(events, REGISTER).keys[0].steps
    for steps_max in (1, 2, full_steps - 1):
        verdict = check_events(events, REGISTER, steps_max=steps_max)
        assert verdict.result is Result.UNKNOWN, steps_max
        assert verdict.keys[0].why_unknown == "steps"
        assert "UNKNOWN, ran out of search steps" in describe_verdict(verdict)


def test_step_limit_gives_unknown_never_illegal() -> None:
    bad = events_of(*[op(p, "write", p, 0, 10) for p in range(10)], op(10, "read", 99, 11, 12))
    assert check_events(bad, REGISTER).result is Result.ILLEGAL
    assert check_events(bad, REGISTER, steps_max=5).result is Result.UNKNOWN


def test_timeout_gives_unknown() -> None:
    verdict = check_events(wide_history(), REGISTER, timeout_s=0)
    assert verdict.result is Result.UNKNOWN
    assert verdict.keys[0].why_unknown == "timeout"


def test_a_late_read_decides_the_order_of_many_appends_cheaply() -> None:
    """Fourteen concurrent appends, then one read: without the lookahead the search would try
    the appends' orders before ever meeting the read (14! of them)."""
    appends = [op(p, "append", p, 0, 10) for p in range(14)]
    order = tuple(reversed(range(14)))
    good = events_of(*appends, op(14, "read", order, 11, 12))
    bad = events_of(*appends, op(14, "read", (*order[:-1], 99), 11, 12))
    assert check_events(good, LIST_APPEND, steps_max=2_000).ok
    assert check_events(bad, LIST_APPEND, steps_max=2_000).result is Result.ILLEGAL


def test_many_alike_info_writes_are_searched_once() -> None:
    """Sixteen info writes of one value, every one possible forever, and an impossible read:
    without symmetry and dominance, every subset of the writes would be tried (2^16)."""
    infos = [op(p, "write", 1, 0, 1, status="info") for p in range(16)]
    events = events_of(
        *infos,
        op(16, "write", 2, 2, 3),
        op(17, "read", 1, 4, 5),
        op(17, "read", 2, 6, 7),
        op(17, "read", 3, 8, 9),
    )
    assert check_events(events, REGISTER, steps_max=5_000).result is Result.ILLEGAL


# -- against the exhaustive reference ------------------------------------------------------------


def small_values(model: Model) -> st.SearchStrategy[tuple[str, object]]:
    """(f, value) for one operation; a read's value is its answer."""
    element = st.integers(0, 2)
    if model is REGISTER:
        return st.one_of(
            st.tuples(st.just("read"), st.none() | element),
            st.tuples(st.just("write"), element),
            st.tuples(st.just("cas"), st.tuples(st.none() | element, element)),
        )
    if model is COUNTER:
        return st.one_of(
            st.tuples(st.just("read"), st.integers(-1, 4)),
            st.tuples(st.just("add"), st.sampled_from([-1, 1, 2])),
        )
    if model is SET:
        return st.one_of(
            st.tuples(st.just("read"), st.frozensets(element).map(lambda s: tuple(sorted(s)))),
            st.tuples(st.just("add"), element),
        )
    return st.one_of(
        st.tuples(st.just("read"), st.lists(element, max_size=3).map(tuple)),
        st.tuples(st.just("append"), element),
    )


@st.composite
def small_histories(draw: st.DrawFn, model: Model) -> list[Event]:
    count = draw(st.integers(1, 7))
    specs = []
    for process in range(count):
        f, value = draw(small_values(model))
        call = draw(st.integers(0, 8))
        status = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        end = None if status == "info" and draw(st.booleans()) else call + draw(st.integers(0, 4))
        key = draw(st.sampled_from(["x", "x", "y"]))
        specs.append(op(process, f, value, call, end, status=status, key=key))  # type: ignore[arg-type]
    return events_of(*specs)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_search_agrees_with_exhaustive_reference(name: str, data: st.DataObject) -> None:
    model = MODELS[name]
    events = data.draw(small_histories(model))
    verdict = check_events(events, model)
    assert verdict.result is not Result.UNKNOWN
    expected = brute_linearizable(pair_operations(events), model)
    assert verdict.ok == expected, describe_verdict(verdict)
    assert_witness(verdict, model)


# -- simulated clients ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=60, deadline=None)
@given(
    rng=st.randoms(use_true_random=False),
    processes=st.integers(1, 5),
    operations=st.integers(0, 40),
    fail_percent=st.sampled_from([0, 10]),
    info_percent=st.sampled_from([0, 10, 25]),
    unique_writes=st.booleans(),
)
def test_simulated_atomic_objects_are_linearizable(
    name: str,
    rng: random.Random,
    processes: int,
    operations: int,
    fail_percent: int,
    info_percent: int,
    unique_writes: bool,
) -> None:
    sim = simulate(
        rng,
        name,
        processes=processes,
        operations=operations,
        keys=("x", "y"),
        fail_percent=fail_percent,
        info_percent=info_percent,
        unique_writes=unique_writes,
    )
    verdict = check_events(sim.events, name)
    assert verdict.ok, describe_verdict(verdict)
    assert_witness(verdict, MODELS[name])


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    rng=st.randoms(use_true_random=False),
    processes=st.integers(1, 5),
    operations=st.integers(1, 40),
    info_percent=st.sampled_from([0, 10, 25]),
    unique_writes=st.booleans(),
    choice=st.integers(0, 1000),
)
def test_a_read_of_a_value_never_written_is_illegal(
    name: str,
    rng: random.Random,
    processes: int,
    operations: int,
    info_percent: int,
    unique_writes: bool,
    choice: int,
) -> None:
    sim = simulate(
        rng,
        name,
        processes=processes,
        operations=operations,
        info_percent=info_percent,
        unique_writes=unique_writes,
    )
    corrupted = corrupt_read(sim.events, name, choice)
    assume(corrupted is not None)
    assert corrupted is not None
    verdict = check_events(corrupted, name)
    assert verdict.result is Result.ILLEGAL, describe_verdict(verdict)
    assert_witness(verdict, MODELS[name])


# -- replay from a file --------------------------------------------------------------------------


def test_replay_from_a_saved_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    save_jsonl(good, events_of(op(0, "write", 1, 0, 1), op(1, "read", 1, 2, 3)))
    assert main([str(good), "--model", "register"]) == EXIT_OK
    assert "register: OK" in capsys.readouterr().out

    bad = tmp_path / "bad.jsonl"
    save_jsonl(bad, events_of(op(0, "write", 1, 0, 1), op(1, "read", 2, 2, 3)))
    assert main([str(bad), "--model", "register"]) == EXIT_VIOLATION
    out = capsys.readouterr().out
    assert "key 'x': not linearizable" in out
    assert "longest linearizable prefix found: 1 operations" in out
    assert "p1 read 'x' 2 [2, 3] (line 3-4)" in out

    wide = tmp_path / "wide.jsonl"
    save_jsonl(wide, wide_history())
    assert main([str(wide), "--model", "register", "--steps-max", "3"]) == EXIT_UNKNOWN

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"type": "invoke"}\n')
    assert main([str(broken), "--model", "register"]) == EXIT_INPUT
    assert "line 1, field 'process': missing" in capsys.readouterr().err


def test_replay_checks_final_states(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "h.jsonl"
    save_jsonl(history, events_of(op(0, "append", 1, 0, 1), op(1, "append", 2, 0, 1)))
    finals = tmp_path / "finals.jsonl"
    finals.write_text('{"key": "x", "value": [2]}\n')
    assert main([str(history), "--model", "list-append", "--final", str(finals)]) == (
        EXIT_VIOLATION
    )
    assert "key 'x': lost: 1 acknowledged lost" in capsys.readouterr().out
    finals.write_text('{"key": "x", "value": [2, 1]}\n')
    assert main([str(history), "--model", "list-append", "--final", str(finals)]) == EXIT_OK
