"""The linearizability search of one sub-history: Wing & Gong, with Lowe's memoization.

The history becomes a doubly linked list of entries in time order, a call entry and a return
entry per operation (a call sorts before a return at the same time, so touching operations
count as concurrent: the checker never accuses on a clock tie). Scanning from the head, any
call met before the first return belongs to an operation that may take effect now. To
linearize it: step the model; if legal, push (entry, state before) and lift its call and return
out of the list, then scan again from the head. Meeting a return means its operation had to take
effect before now and none of the orders tried made that possible: pop the last choice, put it
back (unlift) and try the next call after it. The history is linearizable when every ok
operation has been lifted; illegal when a return is met with nothing left to pop.

Lowe's memoization makes this tractable: the configuration after a choice is fully described by
the set of operations lifted (a bitset, here a Python int) and the model state, and a
configuration seen before has already been explored, so it is not entered twice.

Operations whose outcome is unknown (`info`) get a return at +infinity: they may take effect
anywhere after their invoke. They may also never take effect, which is why success is "every ok
operation lifted", not "the list is empty". Failed operations never reach the search.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .history import Operation
from .models import Model

# A search that needs more steps than this is stopped and answers UNKNOWN. A step is one visit
# of a list entry; this is some tens of seconds of CPython on histories that need it all.
SEARCH_STEPS_MAX = 10_000_000
# The clock is read once every this many steps: reading it every step would cost more than the
# step itself.
DEADLINE_CHECK_STEPS = 1024


class Result(enum.Enum):
    OK = "ok"  # a linearization exists (and one was found)
    ILLEGAL = "illegal"  # none exists: the whole space was searched
    UNKNOWN = "unknown"  # the search ran out of steps or time before it knew


@dataclass(frozen=True, slots=True)
class SearchResult:
    result: Result
    steps: int
    # OK: a linearization (info operations left out do not appear). Otherwise the longest
    # linearizable prefix found. Indices into the operations searched.
    order: tuple[int, ...]
    why_unknown: str | None = None  # "steps" or "timeout", only for UNKNOWN


def search(
    ops: Sequence[Operation], model: Model, *, steps_max: int, deadline: float
) -> SearchResult:
    """Searches ok and info operations (no fail, no info read) of one independent object.
    `deadline` is a time.monotonic() value."""
    assert steps_max > 0, steps_max
    count = len(ops)
    ok_of = [op.status == "ok" for op in ops]
    for op in ops:
        assert op.status in ("ok", "info"), ("failed operations never reach the search", op)
    ok_left = sum(ok_of)
    if ok_left == 0:
        return SearchResult(Result.OK, 0, ())

    # Node 0 is the head sentinel, nodes 1..2*count the entries in time order, then the tail.
    entries = sorted(
        [(op.call_time, 0, i) for i, op in enumerate(ops)]
        + [(op.return_time if ok_of[i] else math.inf, 1, i) for i, op in enumerate(ops)]
    )
    tail = 2 * count + 1
    next_of = [*range(1, tail + 1), tail]
    prev_of = [0, *range(0, tail)]
    op_of = [-1] * (tail + 1)
    return_of = [0] * (tail + 1)  # a call node's return node; 0 for every other node
    return_node_of_op = [0] * count
    for node, (_, kind, i) in enumerate(entries, start=1):
        op_of[node] = i
        if kind == 1:
            return_node_of_op[i] = node
    for node, (_, kind, i) in enumerate(entries, start=1):
        if kind == 0:
            return_of[node] = return_node_of_op[i]
            assert return_of[node] > node, "a return sorts after its call"

    step = model.step
    bits = [1 << i for i in range(count)]
    state: Any = model.init
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    # One frame per operation lifted: (its call node, the state and bitset before it).
    stack: list[tuple[int, Any, int]] = []
    longest: tuple[int, ...] = ()
    node = next_of[0]
    steps = 0
    while True:
        if steps >= steps_max:
            return SearchResult(Result.UNKNOWN, steps, longest, "steps")
        if steps % DEADLINE_CHECK_STEPS == 0 and time.monotonic() >= deadline:
            return SearchResult(Result.UNKNOWN, steps, longest, "timeout")
        steps += 1
        return_node = return_of[node]
        if return_node:
            i = op_of[node]
            legal, state_after = step(state, ops[i])
            if legal:
                linearized_after = linearized | bits[i]
                configuration = (linearized_after, state_after)
                if configuration not in seen:
                    seen.add(configuration)
                    stack.append((node, state, linearized))
                    state = state_after
                    linearized = linearized_after
                    # Lift the call, then the return (dancing links: unlift in reverse order).
                    next_of[prev_of[node]] = next_of[node]
                    prev_of[next_of[node]] = prev_of[node]
                    next_of[prev_of[return_node]] = next_of[return_node]
                    prev_of[next_of[return_node]] = prev_of[return_node]
                    if ok_of[i]:
                        ok_left -= 1
                        if ok_left == 0:
                            order = tuple(op_of[frame[0]] for frame in stack)
                            return SearchResult(Result.OK, steps, order)
                    node = next_of[0]
                    continue
            node = next_of[node]
            continue
        # A return: info returns sort after every ok one, and the search ends when the last
        # ok operation is lifted, so this is an ok operation that had to be linearized by now.
        assert node != tail and ok_of[op_of[node]], ("return of a non-ok operation", node)
        if len(stack) > len(longest):
            longest = tuple(op_of[frame[0]] for frame in stack)
        if not stack:
            return SearchResult(Result.ILLEGAL, steps, longest)
        node, state, linearized = stack.pop()
        return_node = return_of[node]
        next_of[prev_of[return_node]] = return_node
        prev_of[next_of[return_node]] = return_node
        next_of[prev_of[node]] = node
        prev_of[next_of[node]] = node
        if ok_of[op_of[node]]:
            ok_left += 1
        node = next_of[node]
