"""An exhaustive reference for tiny histories, to test the search against.

Tries every order that respects real time, over all keys at once (so it does not rely on the
per-key split), without memoization, symmetry, pruning or the info-last order. Exponential:
only for a handful of operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .history import Key, Operation
from .models import Model

BRUTE_OPERATIONS_MAX = 9


def brute_linearizable(operations: Iterable[Operation], model: Model) -> bool:
    ops = []
    for op in operations:
        op = model.validate(op)
        if op.status == "fail" or (op.status == "info" and model.is_read(op.f)):
            continue
        ops.append(op)
    assert len(ops) <= BRUTE_OPERATIONS_MAX, "the brute force is for tiny histories"

    def object_of(op: Operation) -> Key | None:
        return op.key if model.per_key else None

    def linearizable(remaining: frozenset[int], states: dict[Key | None, Any]) -> bool:
        waiting = [ops[i].return_time for i in remaining if ops[i].status == "ok"]
        if not waiting:
            return True  # info operations left over never took effect
        # Whatever goes next must have been invoked before every waiting operation returned.
        deadline = min(waiting)
        for i in remaining:
            op = ops[i]
            if op.call_time > deadline:
                continue
            legal, after = model.step(states.get(object_of(op), model.init), op)
            if legal and linearizable(remaining - {i}, {**states, object_of(op): after}):
                return True
        return False

    return linearizable(frozenset(range(len(ops))), {})
