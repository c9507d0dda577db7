"""Sequential specifications: what one object does, as a pure step function.

`step(state, op) -> (ok, new_state)`: may `op` (its `f` and `value`; for a read, `value` is the
answer it got) take effect in `state`, and what is the state after. States are hashable and
compared by value, because the search memoizes on them. A read's step never changes the state;
an operation whose step is not ok simply cannot be linearized there (the search tries another
order), it is not an error.

Models, by name:
- register: read (answer: the value, null before any write), write v, cas [expected, new].
  Jepsen convention: a cas whose comparison failed is recorded as `fail`, so an ok cas is one
  that swapped.
- counter: add n (any int, also negative), read (answer: the total, from 0).
- set: add x, read (answer: every element, as an array without duplicates).
- list-append: append x, read (answer: the whole list in order). Elle's append/read.

Every model is one independent object per key, so the checker may split a history by key.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .history import HistoryError, Operation, Value

State = Hashable
Step = Callable[[Any, Operation], tuple[bool, Any]]
# Checks a value and returns it in the model's form; raises ValueError saying what is wrong.
Normalize = Callable[[Value], Value]
# Given one object's ok and info operations: the indexes (Operation.index) of info operations
# no other operation could observe the effect of, so that leaving them out changes nothing.
Unobserved = Callable[[Sequence[Operation]], frozenset[int]]


@dataclass(frozen=True, slots=True)
class OpSpec:
    kind: Literal["read", "write"]  # write: may change the state; read: only observes it
    normalize: Normalize  # of the invoke's argument (write) or of the ok answer (read)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    init: State
    step: Step
    ops: Mapping[str, OpSpec]
    # Linearizability is local (Herlihy & Wing): if every key is an independent object, the
    # history is linearizable iff each key's sub-history is, and the search is exponential
    # in the size of what it is given, so splitting matters.
    per_key: bool = True
    # Every info write left in doubles the orders the search may have to try, so those that
    # cannot matter are dropped before it. None: keep them all.
    unobserved: Unobserved | None = None

    def is_read(self, f: str) -> bool:
        return self.ops[f].kind == "read"

    def validate(self, op: Operation) -> Operation:
        """The operation with its value in the model's form; raises HistoryError."""
        spec = self.ops.get(op.f)
        if spec is None:
            names = ", ".join(sorted(self.ops))
            raise HistoryError(
                op.where_invoke, "f", f"{op.f!r} is not an operation of {self.name} ({names})"
            )
        if spec.kind == "read":
            if op.invoke.value is not None:
                raise HistoryError(
                    op.where_invoke,
                    "value",
                    f"a {op.f} is invoked with null, not {op.invoke.value!r}",
                )
            if op.status != "ok":
                return op  # no answer to check; the checker drops it
            try:
                answer = spec.normalize(op.value)
            except ValueError as exc:
                raise HistoryError(_where_ok(op), "value", str(exc)) from None
            return replace(op, value=answer)
        try:
            argument = spec.normalize(op.invoke.value)
        except ValueError as exc:
            raise HistoryError(op.where_invoke, "value", str(exc)) from None
        if op.status == "ok" and op.value != op.invoke.value:
            raise HistoryError(
                _where_ok(op), "value", f"ok {op.f} answers {op.value!r}, not its argument"
            )
        return replace(op, value=argument)


def _where_ok(op: Operation) -> str:
    assert op.where_completion, "only a completed operation has an answer"
    return op.where_completion


# -- value shapes ------------------------------------------------------------------------------


def _element(value: Value) -> Value:
    """An int, a string, or a tuple of elements: what may be written, added or appended."""
    if isinstance(value, int | str) and not isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        for item in value:
            _element(item)
        return value
    raise ValueError(f"{value!r} is not an int, string or array")


def _element_or_null(value: Value) -> Value:
    return None if value is None else _element(value)


def _int(value: Value) -> Value:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not an int")


def _cas_argument(value: Value) -> Value:
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"cas value must be [expected, new], got {value!r}")
    return (_element_or_null(value[0]), _element(value[1]))


def _set_answer(value: Value) -> Value:
    if not isinstance(value, tuple):
        raise ValueError(f"a set read answers an array, got {value!r}")
    elements = frozenset(_element(item) for item in value)
    if len(elements) != len(value):
        raise ValueError(f"a set read answers each element once, got {value!r}")
    return elements


def _list_answer(value: Value) -> Value:
    if not isinstance(value, tuple):
        raise ValueError(f"a list read answers an array, got {value!r}")
    for item in value:
        _element(item)
    return value


# -- states ----------------------------------------------------------------------------------


class ListState:
    """An append-only list as a persistent chain: an append shares its prefix, and hash and
    length are computed once. The search keeps every state it memoizes, and tuples would
    make that quadratic in memory."""

    __slots__ = ("_hash", "last", "length", "prefix")

    def __init__(self, prefix: ListState | None, last: Value) -> None:
        self.prefix = prefix
        self.last = last
        self.length = 0 if prefix is None else prefix.length + 1
        self._hash = hash((None if prefix is None else prefix._hash, last))

    def append(self, value: Value) -> ListState:
        return ListState(self, value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ListState):
            return NotImplemented
        a: ListState | None = self
        b: ListState | None = other
        if self.length != other.length or self._hash != other._hash:
            return False
        # Bounded by the length; usually ends early at a shared prefix.
        while a is not b:
            assert a is not None and b is not None, "equal lengths end together"
            if a.last != b.last:
                return False
            a, b = a.prefix, b.prefix
        return True

    def equals(self, items: tuple[Value, ...]) -> bool:
        """Is this the list `items`? Compares from the end (where lists that differ usually
        differ) and only when the lengths agree."""
        if self.length != len(items):
            return False
        node: ListState | None = self
        for item in reversed(items):
            assert node is not None and node.prefix is not None
            if node.last != item:
                return False
            node = node.prefix
        return True

    def __iter__(self) -> Iterator[Value]:
        return iter(self.items())

    def items(self) -> tuple[Value, ...]:
        reversed_items: list[Value] = []
        node: ListState | None = self
        while node is not None and node.prefix is not None:
            reversed_items.append(node.last)
            node = node.prefix
        return tuple(reversed(reversed_items))

    def __repr__(self) -> str:
        return repr(self.items())


LIST_EMPTY = ListState(None, None)  # the head of every chain: holds no element


# -- pruning -----------------------------------------------------------------------------------


def _unobserved_elements(ops: Sequence[Operation]) -> frozenset[int]:
    """Set, list-append: an element no ok read contains. Had such an info add taken effect,
    every later read would contain it; none does, so it took effect after every read or
    never, and both are the same linearization without it."""
    seen: set[Value] = set()
    for op in ops:
        if op.f == "read" and op.status == "ok":
            seen.update(op.value)
    return frozenset(
        op.index for op in ops if op.status == "info" and op.f != "read" and op.value not in seen
    )


def _unobserved_register(ops: Sequence[Operation]) -> frozenset[int]:
    """Register: a write (or cas) of v no ok read returns and no cas expects. After it, until
    the next write, only reads of v or cas expecting v could follow; there are none, so it is
    overwritten unseen or last, and the linearization without it is one too."""
    seen: set[Value] = set()
    for op in ops:
        if op.f == "read" and op.status == "ok":
            seen.add(op.value)
        elif op.f == "cas":
            seen.add(op.value[0])

    def written(op: Operation) -> Value:
        return op.value[1] if op.f == "cas" else op.value

    return frozenset(
        op.index for op in ops if op.status == "info" and op.f != "read" and written(op) not in seen
    )


# -- steps -------------------------------------------------------------------------------------


def register_step(state: Value, op: Operation) -> tuple[bool, Value]:
    if op.f == "read":
        return op.value == state, state
    if op.f == "write":
        return True, op.value
    assert op.f == "cas", op.f
    expected, new = op.value
    if state == expected:
        return True, new
    return False, state


def counter_step(state: int, op: Operation) -> tuple[bool, int]:
    if op.f == "read":
        return op.value == state, state
    assert op.f == "add", op.f
    return True, state + op.value


def set_step(state: frozenset[Value], op: Operation) -> tuple[bool, frozenset[Value]]:
    if op.f == "read":
        return op.value == state, state
    assert op.f == "add", op.f
    return True, state | {op.value}


def list_append_step(state: ListState, op: Operation) -> tuple[bool, ListState]:
    if op.f == "read":
        return state.equals(op.value), state
    assert op.f == "append", op.f
    return True, state.append(op.value)


REGISTER = Model(
    name="register",
    init=None,
    step=register_step,
    ops={
        "read": OpSpec("read", _element_or_null),
        "write": OpSpec("write", _element),
        "cas": OpSpec("write", _cas_argument),
    },
    unobserved=_unobserved_register,
)
COUNTER = Model(
    name="counter",
    init=0,
    step=counter_step,
    ops={"read": OpSpec("read", _int), "add": OpSpec("write", _int)},
)
SET = Model(
    name="set",
    init=frozenset(),
    step=set_step,
    ops={"read": OpSpec("read", _set_answer), "add": OpSpec("write", _element)},
    unobserved=_unobserved_elements,
)
LIST_APPEND = Model(
    name="list-append",
    init=LIST_EMPTY,
    step=list_append_step,
    ops={"read": OpSpec("read", _list_answer), "append": OpSpec("write", _element)},
    unobserved=_unobserved_elements,
)

MODELS: Mapping[str, Model] = {m.name: m for m in (REGISTER, COUNTER, SET, LIST_APPEND)}


def model_named(model: Model | str) -> Model:
    if isinstance(model, Model):
        return model
    found = MODELS.get(model)
    if found is None:
        raise ValueError(f"no model {model!r}; models: {', '.join(sorted(MODELS))}")
    return found
