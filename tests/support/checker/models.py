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
# Given one object's operations as the search holds them, a test the search applies after
# each legal step: viable(position, state_after, ok_placed), where position indexes the
# operations given and ok_placed has bit p set for each ok operation at position p placed so
# far. False only if no completion can exist: every ok read not yet placed comes later, and
# some of them cannot see state_after. A necessary condition, never a guess.
Viable = Callable[[int, Any, int], bool]
Lookahead = Callable[[Sequence[Operation]], Viable]


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
    # WGL checks a read only where it is placed; with many concurrent writes and a read far
    # later, it would try every order of the writes first. None: no lookahead.
    lookahead: Lookahead | None = None

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


_ELEMENT_TYPES: frozenset[type] = frozenset({int, str})  # exact types: a bool is no int here


def _element(value: Value) -> Value:
    """An int, a string, or a tuple of elements: what may be written, added or appended."""
    if type(value) in _ELEMENT_TYPES:
        return value
    if isinstance(value, tuple):
        _elements(value)
        return value
    raise ValueError(f"{value!r} is not an int, string or array")


def _elements(items: tuple[Value, ...]) -> None:
    # A read's answer holds everything written: checked in C (map, set) when flat.
    if not set(map(type, items)) <= _ELEMENT_TYPES:
        for item in items:
            _element(item)


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
    _elements(value)
    elements = frozenset(value)
    if len(elements) != len(value):
        raise ValueError(f"a set read answers each element once, got {value!r}")
    return elements


def _list_answer(value: Value) -> Value:
    if not isinstance(value, tuple):
        raise ValueError(f"a list read answers an array, got {value!r}")
    _elements(value)
    return value


# -- states ----------------------------------------------------------------------------------


class ListState:
    """An append-only list as a persistent chain: an append shares its prefix, and hash and
    length are computed once. The search keeps every state it memoizes, and tuples would
    make that quadratic in memory."""

    __slots__ = ("_hash", "known", "last", "length", "prefix")

    def __init__(self, prefix: ListState | None, last: Value) -> None:
        self.prefix = prefix
        self.last = last
        self.length = 0 if prefix is None else prefix.length + 1
        self._hash = hash((None if prefix is None else prefix._hash, last))
        # A tuple of the same items, once a read has shown one: later comparisons against this
        # node or its descendants then compare most of their length in C.
        self.known: tuple[Value, ...] | None = None if prefix is not None else ()

    def append(self, value: Value) -> ListState:
        return ListState(self, value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ListState):
            return NotImplemented
        if self.length != other.length or self._hash != other._hash:
            return False
        a: ListState | None = self
        b: ListState | None = other
        # Bounded by the length; usually ends early at a shared prefix.
        while a is not b:
            assert a is not None and b is not None, "equal lengths end together"
            if a.last != b.last:
                return False
            a, b = a.prefix, b.prefix
        return True

    def equals(self, items: tuple[Value, ...]) -> bool:
        """Is this the list `items`? Walks back from the end (where lists that differ usually
        differ) to the nearest node a read already matched, then compares the rest in C."""
        if self.length != len(items):
            return False
        node = self
        index = len(items)
        while node.known is None:  # bounded: the head's known is ()
            assert node.prefix is not None
            index -= 1
            if node.last != items[index]:
                return False
            node = node.prefix
        assert len(node.known) == index
        if index and node.known != items[:index]:
            return False
        self.known = items
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


# -- lookahead ---------------------------------------------------------------------------------


def _bitset(positions: list[int], size: int) -> int:
    """Bits `positions` set, built in one pass (or-ing big ints one bit at a time would be
    quadratic in the history)."""
    buffer = bytearray((size + 7) // 8)
    for position in positions:
        assert 0 <= position < size
        buffer[position >> 3] |= 1 << (position & 7)
    return int.from_bytes(buffer, "little")


def _ok_reads(ops: Sequence[Operation]) -> list[tuple[int, Value]]:
    return [(pos, op.value) for pos, op in enumerate(ops) if op.f == "read" and op.status == "ok"]


def _set_lookahead(ops: Sequence[Operation]) -> Viable:
    """A set only grows: every ok read placed later contains every element added so far.

    Checked against a chain of reads, each a superset of the one before (in a linearizable
    history all ok reads form one; if not, any chain is still a sound subset to check). With
    reads ordered, the reads that lack element x are exactly those before the first that has
    it. The state before the step already passed against a superset of the reads waiting now
    (reads only leave along a path), so only the element just added needs checking."""
    chain: list[tuple[int, frozenset[Value]]] = []
    for pos, answer in sorted(_ok_reads(ops), key=lambda r: len(r[1])):
        if not chain or chain[-1][1] <= answer:
            chain.append((pos, answer))
    chain_mask = _bitset([pos for pos, _ in chain], len(ops))
    first_rank: dict[Value, int] = {}  # element → rank in the chain of the first read with it
    before_rank: list[int] = []  # rank → bitset of the chain reads before it
    seen: frozenset[Value] = frozenset()
    mask = 0
    for rank, (pos, answer) in enumerate(chain):
        before_rank.append(mask)
        for element in answer - seen:
            first_rank[element] = rank
        seen = answer
        mask |= 1 << pos
    is_add = [op.f != "read" for op in ops]

    def viable(position: int, state: Any, ok_placed: int) -> bool:
        if not is_add[position]:
            return True
        waiting = chain_mask & ~ok_placed
        if not waiting:
            return True
        rank = first_rank.get(ops[position].value)
        if rank is None:
            return False  # a chain read is still to come, and none has the element
        return waiting & before_rank[rank] == 0

    return viable


def _list_lookahead(ops: Sequence[Operation]) -> Viable:
    """A list only grows at its end: every ok read placed later starts with the list so far.

    Checked against a chain of reads, each a prefix of the next (as all ok reads of a
    linearizable history are; if not, any chain is still a sound subset), ending in the longest
    read. After appending x at index i: x must be the longest read's element i, and every
    waiting chain read must be longer than i."""
    chain: list[tuple[int, tuple[Value, ...]]] = []
    for pos, answer in sorted(_ok_reads(ops), key=lambda r: -len(r[1])):
        if not chain or chain[-1][1][: len(answer)] == answer:
            chain.append((pos, answer))
    chain.reverse()  # shortest first
    chain_mask = _bitset([pos for pos, _ in chain], len(ops))
    longest: tuple[Value, ...] = chain[-1][1] if chain else ()
    # index → bitset of the chain reads no longer than it: each must be placed already.
    short_at: list[int] = []
    mask = 0
    rank = 0
    for index in range(len(longest)):
        while rank < len(chain) and len(chain[rank][1]) <= index:
            mask |= 1 << chain[rank][0]
            rank += 1
        short_at.append(mask)  # the same int while no read ends here: memory per read, not index
    is_append = [op.f != "read" for op in ops]

    def viable(position: int, state: Any, ok_placed: int) -> bool:
        if not is_append[position]:
            return True
        waiting = chain_mask & ~ok_placed
        if not waiting:
            return True
        index = state.length - 1
        if index >= len(longest) or longest[index] != state.last:
            return False
        return waiting & short_at[index] == 0

    return viable


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
    lookahead=_set_lookahead,
)
LIST_APPEND = Model(
    name="list-append",
    init=LIST_EMPTY,
    step=list_append_step,
    ops={"read": OpSpec("read", _list_answer), "append": OpSpec("write", _element)},
    unobserved=_unobserved_elements,
    lookahead=_list_lookahead,
)

MODELS: Mapping[str, Model] = {m.name: m for m in (REGISTER, COUNTER, SET, LIST_APPEND)}


def model_named(model: Model | str) -> Model:
    if isinstance(model, Model):
        return model
    found = MODELS.get(model)
    if found is None:
        raise ValueError(f"no model {model!r}; models: {', '.join(sorted(MODELS))}")
    return found
