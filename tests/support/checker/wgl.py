"""The linearizability search of one sub-history: Wing & Gong, with Lowe's memoization.

The ok operations become a doubly linked list of entries in time order, a call and a return
entry each (a call sorts before a return at the same time, so touching operations count as
concurrent: the checker never accuses on a clock tie). Scanning from the head, any call met
before the first return belongs to an operation that may take effect now. To linearize it:
step the model; if legal, push (entry, state before) and lift its call and return out of the
list, then scan again from the head. Meeting a return means its operation had to take effect by
then and none of the choices tried made that possible: pop the last choice, put it back
(unlift, dancing links) and try the next candidate after it. The history is linearizable when
every ok operation has been lifted; illegal when a configuration fails with nothing to pop.

Lowe's memoization makes this tractable: the configuration after a choice is fully described by
the set of operations placed (bitsets, here Python ints) and the model state, and a
configuration seen before has already been explored, so it is not entered twice.

Operations whose outcome is unknown (`info`) may take effect anywhere after their invoke, or
never: the search succeeds once every ok operation is placed, whatever info operations are
left. They live in a second list, by invoke time, with no return entry, and are tried as
candidates after the ok ones: only when a return is met, those invoked by then. The set of
candidates of each configuration is the same as with one list (so the answer is too); the order
makes a linearizable history cheap, because an info operation is placed only when an ok one
needs it. Alike info operations are placed in invoke order only (symmetry), and the memo skips
a configuration when one seen had the same ok operations, the same state and fewer info
operations used (dominance). A model may add a lookahead that rejects states no later read can
see. Failed operations never reach the search. docs/checker.md has the arguments for each.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .history import Operation
from .models import Model

# A search that needs more steps than this is stopped and answers UNKNOWN. A step is one visit
# of a list entry; all of them take 5 to 30 s of CPython.
SEARCH_STEPS_MAX = 10_000_000
# The memo stops growing past this estimate of its size. The search stays correct without it,
# only slower (it may explore a configuration again), so this bounds memory, not the answer.
MEMO_BYTES_MAX = 512 * 1024 * 1024
# Beyond sys.getsizeof of the bitsets and the state: the tuple or list slot, the dict's slot.
MEMO_BYTES_PER_ENTRY = 120
# Info bitsets kept per (ok operations placed, state): each new configuration is compared with
# all of them, so this bounds the cost of a step. Past it the memo forgets, never wrongly prunes.
INFO_SETS_PER_KEY_MAX = 1024
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
    ok_ids = [i for i, op in enumerate(ops) if op.status == "ok"]
    info_ids = sorted(
        (i for i, op in enumerate(ops) if op.status == "info"),
        key=lambda i: (ops[i].call_time, i),
    )
    assert len(ok_ids) + len(info_ids) == len(ops), "failed operations never reach the search"
    if not ok_ids:
        return SearchResult(Result.OK, 0, ())

    # Nodes: the main list (head 0, the call and return entries of ok operations in time
    # order, tail), then the info list (head, one node per info operation by invoke time, tail).
    main_tail = 2 * len(ok_ids) + 1
    info_head = main_tail + 1
    info_tail = info_head + len(info_ids) + 1
    size = info_tail + 1
    next_of = [*range(1, size), info_tail]
    prev_of = [0, *range(0, size - 1)]
    next_of[main_tail] = main_tail  # the two lists never link to each other
    prev_of[info_head] = info_head
    op_of = [-1] * size
    return_of = [0] * size  # a main call node's return node; 0 for every other node
    time_of: list[int | float] = [0] * size  # main return: its time; info node: its invoke
    twins_before = [0] * size  # info node: bitset of the info operations it must come after

    entries = sorted(
        [(ops[i].call_time, 0, i) for i in ok_ids] + [(ops[i].return_time, 1, i) for i in ok_ids]
    )
    return_node_of_op: dict[int, int] = {}
    for node, (moment, kind, i) in enumerate(entries, start=1):
        op_of[node] = i
        time_of[node] = moment
        if kind == 1:
            return_node_of_op[i] = node
    for node, (_, kind, i) in enumerate(entries, start=1):
        if kind == 0:
            return_of[node] = return_node_of_op[i]
            assert return_of[node] > node, "a return sorts after its call"
    # Info operations alike in key, f and value are interchangeable once both are invoked: only
    # orders that linearize them in invoke order are searched (a symmetry, not a guess).
    twins: dict[tuple[Any, ...], int] = {}
    for node, i in enumerate(info_ids, start=info_head + 1):
        op_of[node] = i
        time_of[node] = ops[i].call_time
        alike = (ops[i].key, ops[i].f, ops[i].value)
        twins_before[node] = twins.get(alike, 0)
        twins[alike] = twins_before[node] | (1 << i)

    step = model.step
    viable = model.lookahead(ops) if model.lookahead is not None else None
    bits = [1 << i for i in range(len(ops))]
    state: Any = model.init
    ok_done = 0  # bitset of the ok operations placed
    info_done = 0  # bitset of the info operations placed
    # (ok_done, state) → the info_done of each configuration seen with them. A configuration
    # is not entered if one seen had the same ok operations placed, the same state and a subset
    # of its info operations used: that one had every option this one has, and failed (or is
    # being explored on the stack). Equal bitsets are Lowe's memo; subsets are the dominance
    # that keeps info operations from multiplying the work. Proof sketch in docs/checker.md.
    seen: dict[tuple[int, Any], list[int]] = {}
    seen_bytes = 0
    # One frame per operation placed: its node, then the state, bitsets and limit before it.
    stack: list[tuple[int, Any, int, int, int | float]] = []
    longest: tuple[int, ...] = ()
    ok_left = len(ok_ids)
    limit: int | float = 0  # in the info list: info operations invoked by then may go next
    node = next_of[0]
    steps = 0
    while True:  # bounded: every pass is a step, and steps are bounded by steps_max
        if steps >= steps_max:
            return SearchResult(Result.UNKNOWN, steps, longest, "steps")
        if steps % DEADLINE_CHECK_STEPS == 0 and time.monotonic() >= deadline:
            return SearchResult(Result.UNKNOWN, steps, longest, "timeout")
        steps += 1
        if node < main_tail:
            assert node > 0
            return_node = return_of[node]
            if not return_node:
                # The first return left: its operation had to take effect by now and no ok
                # operation before it could. Info operations are tried only now, just in
                # time, so that a linearizable history does not pay for every place they
                # might go.
                limit = time_of[node]
                node = next_of[info_head]
                continue
        elif node != info_tail and time_of[node] <= limit:
            assert node > info_head
            return_node = 0
            mask = twins_before[node]
            if info_done & mask != mask:
                node = next_of[node]  # an alike operation invoked earlier is still unused
                continue
        else:
            assert node != main_tail, "ok operations remain, so a return precedes the tail"
            # Every candidate of this configuration failed: undo the last choice, try the next.
            if len(stack) > len(longest):
                longest = tuple(op_of[frame[0]] for frame in stack)
            if not stack:
                return SearchResult(Result.ILLEGAL, steps, longest)
            node, state, ok_done, info_done, limit = stack.pop()
            return_node = return_of[node]
            if return_node:
                next_of[prev_of[return_node]] = return_node
                prev_of[next_of[return_node]] = return_node
                ok_left += 1
            next_of[prev_of[node]] = node
            prev_of[next_of[node]] = node
            node = next_of[node]
            continue

        # `node` is a candidate: an ok call before the first return, or an info operation
        # invoked by then. Try to place it here.
        i = op_of[node]
        legal, state_after = step(state, ops[i])
        if legal:
            if return_node:
                ok_after, info_after = ok_done | bits[i], info_done
            else:
                ok_after, info_after = ok_done, info_done | bits[i]
            if viable is None or viable(i, state_after, ok_after):
                key = (ok_after, state_after)
                infos = seen.get(key)
                if infos is None or all(used | info_after != info_after for used in infos):
                    if seen_bytes < MEMO_BYTES_MAX:
                        if infos is None:
                            seen[key] = [info_after]
                            seen_bytes += memo_bytes(key)
                        elif len(infos) < INFO_SETS_PER_KEY_MAX:
                            infos.append(info_after)
                            seen_bytes += sys.getsizeof(info_after) + MEMO_BYTES_PER_ENTRY
                    stack.append((node, state, ok_done, info_done, limit))
                    state = state_after
                    ok_done = ok_after
                    info_done = info_after
                    # Lift the node, then its return (dancing links: the pop above undoes it).
                    next_of[prev_of[node]] = next_of[node]
                    prev_of[next_of[node]] = prev_of[node]
                    if return_node:
                        next_of[prev_of[return_node]] = next_of[return_node]
                        prev_of[next_of[return_node]] = prev_of[return_node]
                        ok_left -= 1
                        if ok_left == 0:
                            order = tuple(op_of[frame[0]] for frame in stack)
                            return SearchResult(Result.OK, steps, order)
                    node = next_of[0]
                    continue
        node = next_of[node]


def memo_bytes(key: tuple[int, Any]) -> int:
    """Roughly what a new memo key costs: shallow sizes, since a state's elements are shared
    with the operations (and a ListState with its prefix)."""
    ok_done, state = key
    return sys.getsizeof(ok_done) + sys.getsizeof(state) + 2 * MEMO_BYTES_PER_ENTRY
