"""Histories: the events concurrent clients record, paired into operations, kept as JSON Lines.

Jepsen's vocabulary. A client records `invoke` before it sends an operation and exactly one
completion after: `ok` (it happened, with this answer), `fail` (it definitely did not happen)
or `info` (unknown: it may take effect at any time after its invoke, or never). An invoke with
no completion at the end of a history is an `info` (the client died waiting).

One JSON object a line:

    {"type": "invoke", "process": 0, "f": "write", "key": "x", "value": 3, "time": 1200}
    {"type": "ok",     "process": 0, "f": "write", "key": "x", "value": 3, "time": 1450}

`time` is any monotonic clock (int or float), the same clock for every process. A process
has at most one operation outstanding; its events are in order in the list (the list need not
be in global time order). Values are null, ints, strings or arrays of values (arrays become
tuples, so every value is hashable). Rules that depend on the model (which `f`s exist, which
read, the shape of a value) are checked by the model, see models.py.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

EventType = Literal["invoke", "ok", "fail", "info"]
Status = Literal["ok", "fail", "info"]
Key = str | int
# None, int, str, or a tuple of Values (a recursive alias type checkers handle poorly).
Value = Any

EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))
FIELDS_REQUIRED: tuple[str, ...] = ("type", "process", "f", "key", "value", "time")
FIELDS_OPTIONAL: tuple[str, ...] = ("error",)
# Nesting bound for values: deeper is certainly a recording bug, and recursion must be bounded.
VALUE_DEPTH_MAX = 32
# The types of a flat array's items that need no further look. type(True) is bool, not int, so
# a bool takes the slow path and is refused there.
_SCALAR_TYPES: frozenset[type] = frozenset({int, str, type(None)})


class HistoryError(ValueError):
    """A history that cannot be checked; the message names the line (or event) and field."""

    def __init__(self, where: str, field_name: str | None, message: str) -> None:
        self.where = where
        self.field_name = field_name
        prefix = f"{where}, field '{field_name}'" if field_name else where
        super().__init__(f"{prefix}: {message}")


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    process: int
    f: str
    key: Key
    value: Value
    time: int | float
    error: str | None = None
    # The line of the JSONL file it came from (1-based); None when recorded in memory.
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Operation:
    """One invoke and its completion. `value` is the ok answer (a read's result), else the
    invoke's value. `return_time` is when the completion was recorded, math.inf if never."""

    index: int  # order of invocation in the history, from 0
    process: int
    f: str
    key: Key
    value: Value
    status: Status
    call_time: int | float
    return_time: int | float
    invoke: Event = field(repr=False, compare=False)
    completion: Event | None = field(repr=False, compare=False)
    # Where each event was recorded, for messages: "line 12" (file) or "event 12" (list).
    where_invoke: str = field(default="", repr=False, compare=False)
    where_completion: str = field(default="", repr=False, compare=False)

    def where(self) -> str:
        if self.where_completion:
            return f"{self.where_invoke}-{self.where_completion.split()[-1]}"
        return self.where_invoke

    def describe(self) -> str:
        answer = "" if self.status == "ok" else f" [{self.status}]"
        end = "inf" if math.isinf(self.return_time) else f"{self.return_time}"
        return (
            f"p{self.process} {self.f} {self.key!r} {self.value!r}{answer} "
            f"[{self.call_time}, {end}] ({self.where()})"
        )


def where_of(event: Event, index: int) -> str:
    return f"line {event.line}" if event.line is not None else f"event {index + 1}"


# -- values ------------------------------------------------------------------------------------


def value_of_json(obj: Any, where: str, field_name: str, depth: int = 0) -> Value:
    """A JSON value as a hashable Value: arrays become tuples; floats, bools, objects are
    refused (float equality and bool-is-int would make models lie quietly)."""
    if depth > VALUE_DEPTH_MAX:
        raise HistoryError(where, field_name, f"value nested deeper than {VALUE_DEPTH_MAX}")
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, list | tuple):
        # Reads of a set or a list answer everything: histories are quadratic in size, so the
        # common flat array is checked in C (map, set) before any per-item Python.
        if set(map(type, obj)) <= _SCALAR_TYPES:
            return tuple(obj)
        return tuple(value_of_json(item, where, field_name, depth + 1) for item in obj)
    raise HistoryError(
        where, field_name, f"{type(obj).__name__} {obj!r} is not null, int, string or array"
    )


def value_to_json(value: Value) -> Any:
    if isinstance(value, tuple):
        return [value_to_json(item) for item in value]
    if isinstance(value, frozenset | set):
        # Sets are stored as arrays in a stable order, so saved files diff cleanly.
        return [value_to_json(item) for item in sorted(value, key=repr)]
    return value


# -- events ------------------------------------------------------------------------------------


def check_event(event: Event, where: str) -> None:
    """The model-independent rules for one event; raises HistoryError."""
    if event.type not in EVENT_TYPES:
        raise HistoryError(where, "type", f"{event.type!r} is not one of {sorted(EVENT_TYPES)}")
    if not isinstance(event.process, int) or isinstance(event.process, bool):
        raise HistoryError(where, "process", f"{event.process!r} is not an int")
    if not isinstance(event.f, str) or not event.f:
        raise HistoryError(where, "f", f"{event.f!r} is not a non-empty string")
    if isinstance(event.key, bool) or not isinstance(event.key, str | int):
        raise HistoryError(where, "key", f"{event.key!r} is not a string or int")
    if isinstance(event.time, bool) or not isinstance(event.time, int | float):
        raise HistoryError(where, "time", f"{event.time!r} is not a number")
    if not math.isfinite(event.time):
        raise HistoryError(where, "time", f"{event.time!r} is not finite")
    if event.error is not None and not isinstance(event.error, str):
        raise HistoryError(where, "error", f"{event.error!r} is not a string")
    # Values built in memory get the same check as loaded ones (a list would not be hashable).
    if not _is_value(event.value):
        value_of_json(event.value, where, "value")  # raises, saying what is wrong
        raise HistoryError(where, "value", f"{event.value!r} is not made of tuples")


def _is_value(value: Value, depth: int = 0) -> bool:
    if type(value) in _SCALAR_TYPES:
        return True
    if type(value) is not tuple or depth >= VALUE_DEPTH_MAX:
        return False
    if set(map(type, value)) <= _SCALAR_TYPES:
        return True
    return all(_is_value(item, depth + 1) for item in value)


def event_of_json(obj: Any, line: int) -> Event:
    where = f"line {line}"
    if not isinstance(obj, dict):
        raise HistoryError(where, None, f"expected a JSON object, got {type(obj).__name__}")
    for name in FIELDS_REQUIRED:
        if name not in obj:
            raise HistoryError(where, name, "missing")
    for name in obj:
        if name not in FIELDS_REQUIRED and name not in FIELDS_OPTIONAL:
            raise HistoryError(where, name, "unknown field")
    event = Event(
        type=obj["type"],
        process=obj["process"],
        f=obj["f"],
        key=obj["key"],
        value=value_of_json(obj["value"], where, "value"),
        time=obj["time"],
        error=obj.get("error"),
        line=line,
    )
    check_event(event, where)
    return event


def event_to_json(event: Event) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": event.type,
        "process": event.process,
        "f": event.f,
        "key": event.key,
        "value": value_to_json(event.value),
        "time": event.time,
    }
    if event.error is not None:
        obj["error"] = event.error
    return obj


def parse_jsonl(lines: Iterable[str]) -> list[Event]:
    """Events from JSON Lines; blank lines are skipped but still counted for line numbers."""
    events: list[Event] = []
    for line_number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"line {line_number}", None, f"not JSON: {exc.msg}") from None
        events.append(event_of_json(obj, line_number))
    return events


def load_jsonl(path: str | Path) -> list[Event]:
    with open(path, encoding="utf-8") as file:
        return parse_jsonl(file)


def save_jsonl(path: str | Path, events: Iterable[Event]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for event in events:
            file.write(json.dumps(event_to_json(event), ensure_ascii=False) + "\n")


# -- pairing -----------------------------------------------------------------------------------


def pair_operations(events: Sequence[Event]) -> list[Operation]:
    """Operations in invocation order; raises HistoryError on any event that breaks the rules
    in the module docstring. Model-specific rules are left to the model."""
    pending: dict[int, tuple[int, Event]] = {}  # process → (operation index, its invoke)
    invokes: list[Event] = []
    completions: list[Event | None] = []
    wheres: list[list[str]] = []  # per operation: where its invoke and completion are
    for position, event in enumerate(events):
        where = where_of(event, position)
        check_event(event, where)
        if event.type == "invoke":
            if event.process in pending:
                earlier = wheres[pending[event.process][0]][0]
                raise HistoryError(
                    where, "process", f"{event.process} invokes while its op at {earlier} pends"
                )
            pending[event.process] = (len(invokes), event)
            invokes.append(event)
            completions.append(None)
            wheres.append([where, ""])
            continue
        if event.process not in pending:
            raise HistoryError(where, "process", f"{event.process} completes nothing it invoked")
        index, invoke = pending.pop(event.process)
        if event.f != invoke.f:
            raise HistoryError(where, "f", f"{event.f!r} completes an invoke of {invoke.f!r}")
        if event.key != invoke.key:
            raise HistoryError(where, "key", f"{event.key!r} completes an invoke on {invoke.key!r}")
        if event.time < invoke.time:
            raise HistoryError(where, "time", f"{event.time} is before its invoke's {invoke.time}")
        if event.type != "ok" and event.value is not None and event.value != invoke.value:
            # A fail or info carries no answer: only the invoke's value (or nothing) makes sense.
            raise HistoryError(
                where, "value", f"{event.type} value {event.value!r} differs from the invoke's"
            )
        completions[index] = event
        wheres[index][1] = where
    assert len(invokes) == len(completions)

    operations: list[Operation] = []
    for index, (invoke, completion) in enumerate(zip(invokes, completions, strict=True)):
        if completion is None:
            status: Status = "info"
            return_time: int | float = math.inf
            value = invoke.value
        else:
            status = completion.type  # type: ignore[assignment]  # never "invoke", see above
            return_time = completion.time
            value = completion.value if completion.type == "ok" else invoke.value
        assert status != "invoke"
        operations.append(
            Operation(
                index=index,
                process=invoke.process,
                f=invoke.f,
                key=invoke.key,
                value=value,
                status=status,
                call_time=invoke.time,
                return_time=return_time,
                invoke=invoke,
                completion=completion,
                where_invoke=wheres[index][0],
                where_completion=wheres[index][1],
            )
        )
    return operations


# -- recording ---------------------------------------------------------------------------------

_SAME = object()  # "the invoke's value", the usual answer of an ok write


class Recorder:
    """Thread-safe event log for a harness. Reads pass their answer to ok(); writes need not.

        recorder.invoke(process, "write", "x", 3); ...; recorder.ok(process)
        recorder.invoke(process, "read", "x"); ...; recorder.ok(process, answer)

    A process whose operation ends in info() may invoke again: an info operation stays
    possible forever, so reusing the id changes nothing for the checker.
    """

    def __init__(self, clock: Callable[[], int | float] = time.monotonic_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._pending: dict[int, Event] = {}

    def invoke(self, process: int, f: str, key: Key, value: Value = None) -> None:
        value = value_of_json(_plain(value), f"process {process}", "value")
        with self._lock:
            assert process not in self._pending, ("process already has an operation", process)
            event = Event("invoke", process, f, key, value, self._clock())
            self._pending[process] = event
            self._events.append(event)

    def ok(self, process: int, value: Value = _SAME) -> None:
        self._complete("ok", process, value, None)

    def fail(self, process: int, error: str | None = None) -> None:
        self._complete("fail", process, _SAME, error)

    def info(self, process: int, error: str | None = None) -> None:
        self._complete("info", process, _SAME, error)

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def save(self, path: str | Path) -> None:
        save_jsonl(path, self.events())

    def _complete(self, kind: EventType, process: int, value: Value, error: str | None) -> None:
        with self._lock:
            invoke = self._pending.pop(process)
            if value is _SAME:
                value = invoke.value
            else:
                value = value_of_json(_plain(value), f"process {process}", "value")
            event = Event(kind, process, invoke.f, invoke.key, value, self._clock(), error)
            self._events.append(event)


def _plain(value: Value) -> Value:
    """Python containers as tuples (sets in a stable order) so they can be recorded."""
    if isinstance(value, frozenset | set):
        return tuple(sorted((_plain(item) for item in value), key=repr))
    if isinstance(value, list | tuple):
        return tuple(_plain(item) for item in value)
    return value
