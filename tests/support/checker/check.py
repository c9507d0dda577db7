"""Checks a whole history: validate, split by key, search each key, explain what is illegal."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .history import Event, Key, Operation, pair_operations
from .models import Model, model_named
from .wgl import SEARCH_STEPS_MAX, Result, search

# The whole check, over every key, gives up (UNKNOWN for the keys not done) after this long.
TIMEOUT_S_DEFAULT = 60.0


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one key is not linearizable, as far as the search got.

    After `prefix` (the longest linearizable prefix found) the object is in `state`. `stuck`
    is the ok operation that returned first among those not in the prefix: it had to take
    effect before it returned. `candidates` are the operations that could have taken effect
    next (invoked before `stuck` returned, not in the prefix; `stuck` is one of them), each with
    whether the model allows it in `state`. None allowed: the prefix cannot be extended. Some
    allowed: each leads to a dead end later (the search tried them all)."""

    key: Key | None
    prefix: tuple[Operation, ...]
    state: Any
    stuck: Operation
    candidates: tuple[tuple[Operation, bool], ...]


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    key: Key | None  # None when the model does not split by key
    result: Result
    operations: int  # searched: ok operations and info writes
    steps: int
    # OK: a linearization found. Otherwise the longest linearizable prefix found.
    order: tuple[Operation, ...]
    explanation: Explanation | None = None  # for ILLEGAL
    why_unknown: str | None = None  # for UNKNOWN: "steps" or "timeout"


@dataclass(frozen=True, slots=True)
class Verdict:
    model: str
    result: Result  # ILLEGAL if a key is, else UNKNOWN if a key is, else OK
    keys: tuple[KeyVerdict, ...]

    @property
    def ok(self) -> bool:
        return self.result is Result.OK

    def illegal(self) -> list[KeyVerdict]:
        return [k for k in self.keys if k.result is Result.ILLEGAL]

    def unknown(self) -> list[KeyVerdict]:
        return [k for k in self.keys if k.result is Result.UNKNOWN]


def check_events(
    events: Sequence[Event],
    model: Model | str,
    *,
    steps_max: int = SEARCH_STEPS_MAX,
    timeout_s: float = TIMEOUT_S_DEFAULT,
) -> Verdict:
    """Is the recorded history linearizable? Raises HistoryError if it is malformed."""
    return check_operations(
        pair_operations(events), model, steps_max=steps_max, timeout_s=timeout_s
    )


def check_operations(
    operations: Iterable[Operation],
    model: Model | str,
    *,
    steps_max: int = SEARCH_STEPS_MAX,
    timeout_s: float = TIMEOUT_S_DEFAULT,
) -> Verdict:
    """As check_events, for operations already paired. `steps_max` bounds each key's search;
    `timeout_s` bounds the whole check."""
    model = model_named(model)
    assert steps_max > 0 and timeout_s >= 0, (steps_max, timeout_s)
    deadline = time.monotonic() + timeout_s
    verdicts: list[KeyVerdict] = []
    for key, ops in sorted(partition(operations, model).items(), key=_key_order):
        if model.unobserved is not None:
            dropped = model.unobserved(ops)
            ops = [op for op in ops if op.index not in dropped]
        found = search(ops, model, steps_max=steps_max, deadline=deadline)
        order = tuple(ops[i] for i in found.order)
        explanation = None
        if found.result is Result.ILLEGAL:
            explanation = explain(key, ops, order, model)
        verdicts.append(
            KeyVerdict(
                key, found.result, len(ops), found.steps, order, explanation, found.why_unknown
            )
        )
    results = {v.result for v in verdicts}
    if Result.ILLEGAL in results:
        overall = Result.ILLEGAL
    elif Result.UNKNOWN in results:
        overall = Result.UNKNOWN
    else:
        overall = Result.OK
    return Verdict(model.name, overall, tuple(verdicts))


def partition(operations: Iterable[Operation], model: Model) -> dict[Key | None, list[Operation]]:
    """Validated operations that constrain the search, by key (or all under None).
    Dropped: fail (it did not happen) and info reads (no answer, no effect)."""
    parts: dict[Key | None, list[Operation]] = {}
    for op in operations:
        op = model.validate(op)
        if op.status == "fail":
            continue
        if op.status == "info" and model.is_read(op.f):
            continue
        parts.setdefault(op.key if model.per_key else None, []).append(op)
    return parts


def explain(
    key: Key | None, ops: Sequence[Operation], prefix: tuple[Operation, ...], model: Model
) -> Explanation:
    state = model.init
    for op in prefix:
        legal, state = model.step(state, op)
        assert legal, ("the prefix the search found does not replay", op)
    done = {op.index for op in prefix}
    rest = [op for op in ops if op.index not in done]
    waiting = [op for op in rest if op.status == "ok"]
    assert waiting, "an illegal search leaves an ok operation out of its longest prefix"
    stuck = min(waiting, key=lambda op: (op.return_time, op.index))
    candidates = sorted(
        (op for op in rest if op.call_time <= stuck.return_time),
        key=lambda op: (op.call_time, op.index),
    )
    return Explanation(
        key,
        prefix,
        state,
        stuck,
        tuple((op, model.step(state, op)[0]) for op in candidates),
    )


def _key_order(item: tuple[Key | None, list[Operation]]) -> tuple[str, Any]:
    # Keys may mix ints and strings: ints first, then strings, so that runs are repeatable.
    key = item[0]
    return (type(key).__name__, key if key is not None else 0)
