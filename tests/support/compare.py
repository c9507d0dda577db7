"""Runs one operation on a plain Python value and on its shared twin and compares everything."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from superstatic.objects.plain_copy import plain
from superstatic.objects.session import Session


def outcome(op: Callable[[Any], Any], target: Any) -> tuple[str, Any]:
    """("ok", plain result) or ("raised", exception type)."""
    try:
        result = op(target)
    except Exception as exc:  # the comparison is the point: any exception type must match
        return "raised", type(exc)
    return "ok", plain(result)


def check_same(
    session: Session,
    initial: Any,
    shared: Any,
    op: Callable[[Any], Any],
    *,
    in_txn: bool,
) -> Any:
    """Applies `op` to a deep copy of `initial` and to `shared` (lone writes, or all inside one
    transaction); asserts equal results or equal exception types, and equal states after.
    Returns the plain state after."""
    mine = copy.deepcopy(initial)
    expected = outcome(op, mine)
    if in_txn:
        # Inside the transaction: the body must see its own writes.
        def body() -> tuple[tuple[str, Any], Any]:
            got = outcome(op, shared)
            return got, plain(shared)

        got, seen_inside = session.run(body)
        assert seen_inside == mine, "the transaction did not see its own writes"
    else:
        got = outcome(op, shared)
    assert got == expected
    assert plain(shared) == mine
    return mine


def same_graph(a: Any, b: Any) -> bool:
    """Structural equality of two plain values that may share references or hold cycles; the
    two must also have the same sharing (a reference shared in one is shared in the other)."""
    pairs: dict[int, int] = {}
    reverse: dict[int, int] = {}
    keep: list[Any] = []  # keeps ids stable while comparing

    def eq(x: Any, y: Any) -> bool:
        if type(x) is not type(y):
            return False
        if isinstance(x, (dict, list, set)):
            if id(x) in pairs or id(y) in reverse:
                return pairs.get(id(x)) == id(y) and reverse.get(id(y)) == id(x)
            pairs[id(x)] = id(y)
            reverse[id(y)] = id(x)
            keep.extend((x, y))
            if len(x) != len(y):
                return False
            if isinstance(x, dict):
                return list(x) == list(y) and all(eq(x[k], y[k]) for k in x)
            if isinstance(x, list):
                return all(eq(p, q) for p, q in zip(x, y, strict=True))
            return x == y  # set elements are hashable, never containers
        if isinstance(x, tuple):
            return len(x) == len(y) and all(eq(p, q) for p, q in zip(x, y, strict=True))
        return bool(x == y)

    return eq(a, b)
