"""Histories that are linearizable by construction, for testing and measuring the checker.

Simulated clients interleave against atomic objects: each operation is recorded as invoked,
later takes effect at one instant (applied to a plain Python value, not the checker's model,
so the two are independent), later returns. Events carry a logical clock that never goes
back, so the instant of effect lies inside [invoke, return]: a linearization point.

Concurrency is at most `processes` operations in flight (plus info ones): what keeps the
search cheap, so tests stay fast whatever the random choices.

A register writes values from a small range (so a read has many explanations, the hard case)
unless `unique_writes`, as a harness should: then every write and cas writes a fresh value.

With fail/info percentages some operations end differently: `fail` before taking effect (it
never will); `info` before taking effect (it may still take effect later, or never: a request
still in flight when its client gave up); `info` after taking effect (the answer was lost).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .history import Event, Key, Value

# A cas compares against values in this range, so that some succeed.
REGISTER_VALUES = 5
# Rounds per operation the scheduler may spend; only bounds the loop, never reached in practice.
ROUNDS_PER_OPERATION_MAX = 100


@dataclass(frozen=True, slots=True)
class Simulation:
    events: list[Event]
    # Every key's state once all is over (an operation still in flight is applied or dropped at
    # random), as a read would answer it: what a harness reads after healing.
    finals: dict[Key, Value]


@dataclass(slots=True)
class _Pending:
    f: str
    key: Key
    value: Value
    applied: bool = False
    answer: Value = None


def simulate(
    rng: random.Random,
    model_name: str,
    *,
    processes: int,
    operations: int,
    keys: Sequence[Key] = ("x",),
    fail_percent: int = 0,
    info_percent: int = 0,
    tie_every: int = 10,
    unique_writes: bool = False,
) -> Simulation:
    """`operations` operations from `processes` clients over `keys`."""
    assert processes > 0 and operations >= 0 and keys
    assert 0 <= fail_percent + info_percent <= 100
    assert tie_every >= 0
    objects: dict[Key, Any] = {key: _initial(model_name) for key in keys}
    pending: dict[int, _Pending] = {}
    in_flight: list[_Pending] = []  # given up on by their client (info), not yet applied
    events: list[Event] = []
    clock = 0
    invoked = 0
    unique = 0  # a fresh element for every add and append, so acks can count them

    def record(kind: str, process: int, op: _Pending, value: Value) -> None:
        nonlocal clock
        # Every tie_every-th event shares the time of the one before (a clock tie). Not drawn at
        # random: a run of ties makes everything concurrent and the search exponential.
        if tie_every == 0 or len(events) % tie_every != tie_every - 1:
            clock += 1
        events.append(Event(kind, process, op.f, op.key, value, clock))  # type: ignore[arg-type]

    for _ in range(ROUNDS_PER_OPERATION_MAX * (operations + 1)):
        idle = [p for p in range(processes) if p not in pending]
        if invoked == operations and not pending:
            break
        choices = len(pending) + len(in_flight) + (1 if idle and invoked < operations else 0)
        pick = rng.randrange(choices)
        if pick < len(pending):
            process = sorted(pending)[pick]
            op = pending[process]
            roll = rng.randrange(100)
            if not op.applied and roll < fail_percent:
                del pending[process]
                record("fail", process, op, op.value)
            elif roll < fail_percent + info_percent:
                del pending[process]
                record("info", process, op, op.value)
                if not op.applied and rng.randrange(2):
                    in_flight.append(op)  # may take effect later; else it was dropped
            elif not op.applied:
                _apply(objects, op)
                if op.f == "cas" and not op.answer:
                    del pending[process]  # the comparison failed: Jepsen records a fail
                    record("fail", process, op, op.value)
            else:
                del pending[process]
                record("ok", process, op, op.answer if op.f == "read" else op.value)
        elif pick < len(pending) + len(in_flight):
            op = in_flight.pop(pick - len(pending))
            _apply(objects, op)
        else:
            process = rng.choice(idle)
            key = rng.choice(list(keys))
            f, value = _random_op(rng, model_name, unique, unique_writes, objects[key])
            unique += 1
            op = _Pending(f, key, value)
            pending[process] = op
            invoked += 1
            record("invoke", process, op, op.value)
    assert invoked == operations and not pending, "the scheduler ran out of rounds"
    for op in in_flight:
        if rng.randrange(2):
            _apply(objects, op)
    return Simulation(events, {key: _read(value) for key, value in objects.items()})


def _initial(model_name: str) -> Any:
    return {"register": None, "counter": 0, "set": set(), "list-append": []}[model_name]


def _random_op(
    rng: random.Random, model_name: str, unique: int, unique_writes: bool, current: Value
) -> tuple[str, Value]:
    """`current`: the object's value now; with unique writes a cas expects it, so that some
    succeed."""
    if rng.randrange(100) < 40:
        return "read", None
    if model_name == "register" and unique_writes:
        if rng.randrange(2):
            return "write", unique
        return "cas", (current, unique)
    if model_name == "register":
        if rng.randrange(2):
            return "write", rng.randrange(REGISTER_VALUES)
        expected = rng.choice([None, *range(REGISTER_VALUES)])
        return "cas", (expected, rng.randrange(REGISTER_VALUES))
    if model_name == "counter":
        return "add", rng.choice([-2, -1, 1, 2, 3])
    if model_name == "set":
        return "add", unique
    assert model_name == "list-append", model_name
    return "append", unique


def _apply(objects: dict[Key, Any], op: _Pending) -> None:
    """Takes effect now, on a plain Python value: the atomic object."""
    assert not op.applied
    op.applied = True
    current = objects[op.key]
    if op.f == "read":
        op.answer = _read(current)
    elif op.f == "write":
        objects[op.key] = op.value
    elif op.f == "cas":
        expected, new = op.value
        op.answer = current == expected
        if op.answer:
            objects[op.key] = new
    elif op.f == "add" and isinstance(current, set):
        current.add(op.value)
    elif op.f == "add":
        objects[op.key] = current + op.value
    else:
        assert op.f == "append", op.f
        current.append(op.value)


def _read(current: Any) -> Value:
    if isinstance(current, set):
        return tuple(sorted(current))
    if isinstance(current, list):
        return tuple(current)
    return current


NEVER_WRITTEN = "never-written"  # writers only write ints


def corrupt_read(events: Sequence[Event], model_name: str, choice: int) -> list[Event] | None:
    """The events with the answer of ok read number `choice` (modulo their count) changed to
    one no write could produce; None if there is no ok read."""
    reads = [i for i, e in enumerate(events) if e.type == "ok" and e.f == "read"]
    if not reads:
        return None
    at = reads[choice % len(reads)]
    event = events[at]
    if model_name == "register":
        wrong: Value = NEVER_WRITTEN
    elif model_name == "counter":
        # Above the sum of every add's magnitude, so beyond any total.
        wrong = 1 + sum(abs(e.value) for e in events if e.type == "invoke" and e.f == "add")
    else:
        wrong = (*event.value, NEVER_WRITTEN)
    changed = list(events)
    changed[at] = Event(event.type, event.process, event.f, event.key, wrong, event.time)
    return changed
