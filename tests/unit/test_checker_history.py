"""The checker's histories: strict JSON Lines, pairing into operations, the thread-safe recorder."""

from __future__ import annotations

import itertools
import json
import math
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from support.checker import (
    REGISTER,
    Event,
    HistoryError,
    Recorder,
    check_events,
    load_jsonl,
    pair_operations,
    parse_jsonl,
    save_jsonl,
)
from support.checker.build import events_of, op

GOOD = {"type": "invoke", "process": 0, "f": "write", "key": "x", "value": 1, "time": 5}


def line_with(**changes: object) -> str:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not DROP})


DROP = object()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        (line_with(time=DROP), "line 2, field 'time': missing"),
        (line_with(node="n1"), "line 2, field 'node': unknown field"),
        (line_with(type="start"), "line 2, field 'type': 'start' is not one of"),
        (line_with(process="p0"), "line 2, field 'process': 'p0' is not an int"),
        (line_with(process=True), "line 2, field 'process': True is not an int"),
        (line_with(f=""), "line 2, field 'f': '' is not a non-empty string"),
        (line_with(key=1.5), "line 2, field 'key': 1.5 is not a string or int"),
        (line_with(key=None), "line 2, field 'key': None is not a string or int"),
        (line_with(value=1.5), "line 2, field 'value': float 1.5 is not null, int"),
        (line_with(value=True), "line 2, field 'value': bool True is not null, int"),
        (line_with(value={"a": 1}), "line 2, field 'value': dict"),
        (line_with(value=[1, [2.0]]), "line 2, field 'value': float 2.0"),
        (line_with(time="5"), "line 2, field 'time': '5' is not a number"),
        (line_with(error=3), "line 2, field 'error': 3 is not a string"),
    ],
)
def test_each_bad_line_is_named_with_its_field(text: str, message: str) -> None:
    with pytest.raises(HistoryError) as raised:
        parse_jsonl(["", text])
    assert str(raised.value).startswith(message), str(raised.value)


def test_values_become_hashable_and_times_may_be_floats() -> None:
    (event,) = parse_jsonl([line_with(value=[1, ["a", None]], time=1.25, error="timeout")])
    assert event.value == (1, ("a", None))
    assert event.time == 1.25
    assert event.error == "timeout"
    assert event.line == 1
    hash(event.value)


def test_infinite_time_is_refused() -> None:
    with pytest.raises(HistoryError, match="field 'time': inf is not finite"):
        pair_operations([Event("invoke", 0, "read", "x", None, math.inf)])


def test_in_memory_values_must_be_tuples() -> None:
    with pytest.raises(HistoryError, match=r"event 1, field 'value': \[1\] is not made of tuples"):
        pair_operations([Event("invoke", 0, "write", "x", [1], 0)])


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (
            [Event("invoke", 0, "read", "x", None, 0), Event("invoke", 0, "read", "x", None, 1)],
            "event 2, field 'process': 0 invokes while its op at event 1 pends",
        ),
        ([Event("ok", 3, "read", "x", None, 0)], "event 1, field 'process': 3 completes nothing"),
        (
            [Event("invoke", 0, "read", "x", None, 0), Event("ok", 0, "write", "x", 1, 1)],
            "event 2, field 'f': 'write' completes an invoke of 'read'",
        ),
        (
            [Event("invoke", 0, "read", "x", None, 0), Event("ok", 0, "read", "y", None, 1)],
            "event 2, field 'key': 'y' completes an invoke on 'x'",
        ),
        (
            [Event("invoke", 0, "read", "x", None, 5), Event("ok", 0, "read", "x", None, 4)],
            "event 2, field 'time': 4 is before its invoke's 5",
        ),
        (
            [Event("invoke", 0, "write", "x", 1, 0), Event("fail", 0, "write", "x", 2, 1)],
            "event 2, field 'value': fail value 2 differs from the invoke's",
        ),
    ],
)
def test_pairing_rules(events: list[Event], message: str) -> None:
    with pytest.raises(HistoryError) as raised:
        pair_operations(events)
    assert str(raised.value).startswith(message), str(raised.value)


def test_pairing() -> None:
    events = [
        Event("invoke", 0, "write", "x", 1, 0),
        Event("invoke", 1, "read", "x", None, 1),
        Event("invoke", 2, "write", "x", 2, 1),
        Event("ok", 1, "read", "x", 1, 3),
        Event("info", 0, "write", "x", None, 4, error="timeout"),
        Event("invoke", 1, "read", "x", None, 5),
    ]
    ops = pair_operations(events)
    assert [(o.index, o.process, o.f, o.value, o.status) for o in ops] == [
        (0, 0, "write", 1, "info"),  # an info completion keeps the invoke's value
        (1, 1, "read", 1, "ok"),
        (2, 2, "write", 2, "info"),  # never completed
        (3, 1, "read", None, "info"),
    ]
    assert [(o.call_time, o.return_time) for o in ops] == [
        (0, 4),
        (1, 3),
        (1, math.inf),
        (5, math.inf),
    ]
    assert ops[0].where() == "event 1-5"
    assert ops[2].where() == "event 3"


def test_jsonl_round_trip(tmp_path: Path) -> None:
    events = events_of(
        op(0, "write", (1, "a"), 0, 1),
        op(1, "read", (1, "a"), 2, 3),
        op(2, "write", 5, 2, 4, status="info"),
        op(3, "write", 6, 2, 4, status="fail", key=7),
        op(4, "write", 8, 5, None),
    )
    path = tmp_path / "h.jsonl"
    save_jsonl(path, events)
    loaded = load_jsonl(path)
    assert loaded == events
    assert [e.line for e in loaded] == list(range(1, len(events) + 1))
    assert pair_operations(loaded) == pair_operations(events)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "type": "invoke",
        "process": 0,
        "f": "write",
        "key": "x",
        "value": [1, "a"],
        "time": 0,
    }


def test_loaded_lines_name_file_lines_in_model_errors(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    invoke, ok = events_of(op(0, "write", 1, 0, 1))
    save_jsonl(path, [invoke, replace(ok, f="write", value=1)])
    text = path.read_text().replace('"f": "write"', '"f": "incr"')
    path.write_text("\n" + text)
    with pytest.raises(HistoryError, match="line 2, field 'f': 'incr' is not an operation"):
        check_events(load_jsonl(path), REGISTER)


def test_recorder_from_threads_gives_a_checkable_history(tmp_path: Path) -> None:
    ticks = itertools.count()
    recorder = Recorder(clock=lambda: next(ticks))
    register_lock = threading.Lock()
    register: list[int | None] = [None]

    def client(process: int) -> None:
        for n in range(20):
            if n % 2:
                recorder.invoke(process, "read", "x")
                with register_lock:
                    answer = register[0]
                recorder.ok(process, answer)
            else:
                recorder.invoke(process, "write", "x", process * 100 + n)
                with register_lock:
                    register[0] = process * 100 + n
                recorder.ok(process)
        recorder.invoke(process, "write", "x", -1)
        recorder.info(process, "gave up")  # never applied: allowed to never happen

    threads = [threading.Thread(target=client, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = recorder.events()
    assert len(events) == 4 * 21 * 2
    assert check_events(events, REGISTER).ok
    recorder.save(tmp_path / "r.jsonl")
    assert load_jsonl(tmp_path / "r.jsonl") == events


def test_recorder_turns_python_containers_into_tuples() -> None:
    recorder = Recorder(clock=itertools.count().__next__)
    recorder.invoke(0, "read", "s")
    recorder.ok(0, {3, 1})
    recorder.invoke(0, "append", "l", [1, [2]])
    recorder.fail(0)
    assert [e.value for e in recorder.events()] == [None, (1, 3), (1, (2,)), (1, (2,))]
