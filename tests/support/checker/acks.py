"""After healing: does the final state of each key agree with what clients were told?

Linearizability says nothing about operations nobody read afterwards. These checks take the
final state of each key (read once every fault is healed) and ask, per written value:
- lost: an ok write is missing (set: element absent; list: fewer copies than ok appends;
  counter: total below what ok adds guarantee; register: still null after an ok write);
- duplicated: applied more often than it was attempted (list: more copies than ok + info
  appends of it; counter: total above what ok and info adds allow);
- failed-applied: present although every attempt at it failed;
- never-written: present although nobody ever attempted it;
- unread: a key with ok writes has no final state (a harness that forgot to read would pass).
Info attempts are each allowed to have happened once, or not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .history import Event, HistoryError, Key, Operation, Value, pair_operations, value_of_json
from .models import Model, model_named

AckKind = Literal[
    "lost", "duplicated", "failed-applied", "never-written", "unread", "too-low", "too-high"
]


@dataclass(frozen=True, slots=True)
class AckProblem:
    key: Key
    kind: AckKind
    value: Value  # the element concerned, or the final value (register, counter)
    operations: tuple[Operation, ...]  # the writes concerned
    message: str


def check_acks(
    events: Sequence[Event], model: Model | str, finals: Mapping[Key, Value]
) -> list[AckProblem]:
    """Problems found, in key order (empty: none). Raises HistoryError if malformed."""
    return check_acks_operations(pair_operations(events), model, finals)


def check_acks_operations(
    operations: Iterable[Operation], model: Model | str, finals: Mapping[Key, Value]
) -> list[AckProblem]:
    model = model_named(model)
    check_key = _CHECKS.get(model.name)
    if check_key is None:
        raise ValueError(f"no acknowledgement check for model {model.name!r}")
    writes: dict[Key, list[Operation]] = {}
    for op in operations:
        op = model.validate(op)
        if not model.is_read(op.f):
            writes.setdefault(op.key, []).append(op)
    problems: list[AckProblem] = []
    for key in sorted(set(writes) | set(finals), key=lambda k: (type(k).__name__, k)):
        ops = writes.get(key, [])
        if key not in finals:
            acked = tuple(op for op in ops if op.status == "ok")
            if acked:
                message = f"{len(acked)} ok writes but no final state was read"
                problems.append(AckProblem(key, "unread", None, acked, message))
            continue
        final = _final_value(model, key, finals[key])
        problems.extend(check_key(key, ops, final))
    return problems


def _final_value(model: Model, key: Key, value: Value) -> Value:
    where = f"final state of key {key!r}"
    plain = value_of_json(_as_json(value), where, "value")
    try:
        return model.ops["read"].normalize(plain)
    except ValueError as exc:
        raise HistoryError(where, "value", str(exc)) from None


def _as_json(value: Value) -> Value:
    # Harnesses hand over what their clients returned: lists, sets, tuples.
    if isinstance(value, set | frozenset):
        return sorted((_as_json(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    return value


def _elements(key: Key, ops: list[Operation], final_counts: Counter[Value]) -> list[AckProblem]:
    """Set and list-append: every element, counted in the final state against its attempts."""
    by_status: dict[str, Counter[Value]] = {s: Counter() for s in ("ok", "info", "fail")}
    for op in ops:
        by_status[op.status][op.value] += 1
    problems: list[AckProblem] = []
    for value in sorted(set(final_counts) | set(by_status["ok"]), key=repr):
        ok = by_status["ok"][value]
        maybe = by_status["info"][value]
        failed = by_status["fail"][value]
        seen = final_counts[value]
        concerned = tuple(op for op in ops if op.value == value)
        counts = f"ok {ok}, info {maybe}, fail {failed}; final has {seen}"
        if seen < ok:
            problems.append(
                AckProblem(key, "lost", value, concerned, f"{value!r} acknowledged lost: {counts}")
            )
        elif seen > ok + maybe:
            if failed > 0:
                kind: AckKind = "failed-applied"
            elif ok + maybe > 0:
                kind = "duplicated"
            else:
                kind = "never-written"
            problems.append(AckProblem(key, kind, value, concerned, f"{value!r} {kind}: {counts}"))
    return problems


def _elements_check(key: Key, ops: list[Operation], final: Value) -> list[AckProblem]:
    # A set's final state counts each element once, a list's as often as it appears.
    return _elements(key, ops, Counter(final))


def _counter_check(key: Key, ops: list[Operation], final: Value) -> list[AckProblem]:
    sure = sum(op.value for op in ops if op.status == "ok")
    # Each info add may or may not have happened: the total lies between these.
    low = sure + sum(op.value for op in ops if op.status == "info" and op.value < 0)
    high = sure + sum(op.value for op in ops if op.status == "info" and op.value > 0)
    assert low <= high
    concerned = tuple(op for op in ops if op.status != "fail")
    if final < low:
        message = f"final {final} below {low}, the least the ok and info adds allow"
        return [AckProblem(key, "too-low", final, concerned, message)]
    if final > high:
        message = f"final {final} above {high}, the most the ok and info adds allow"
        return [AckProblem(key, "too-high", final, concerned, message)]
    return []


def _register_check(key: Key, ops: list[Operation], final: Value) -> list[AckProblem]:
    def written(op: Operation) -> Value:
        return op.value[1] if op.f == "cas" else op.value

    acked = tuple(op for op in ops if op.status == "ok")
    if final is None:
        if acked:
            message = f"still null after {len(acked)} ok writes"
            return [AckProblem(key, "lost", None, acked, message)]
        return []
    attempts = [op for op in ops if written(op) == final]
    if any(op.status != "fail" for op in attempts):
        return []
    kind: AckKind = "failed-applied" if attempts else "never-written"
    message = f"final {final!r}: {kind} ({len(attempts)} failed attempts wrote it)"
    return [AckProblem(key, kind, final, tuple(attempts), message)]


_CHECKS: Mapping[str, Callable[[Key, list[Operation], Value], list[AckProblem]]] = {
    "register": _register_check,
    "counter": _counter_check,
    "set": _elements_check,
    "list-append": _elements_check,
}
