"""The proxy of a shared set.

`add`, `update`, `|=`, `discard`, `difference_update`, `-=` and `clear` are blind. `remove`
and `symmetric_difference_update` / `^=` depend on the members they name (a read of each),
`pop` and `intersection_update` / `&=` on the whole set (a read of its content).
"""

from __future__ import annotations

from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.node import Node
from superstatic.objects.proxy_base import NodeProxy, adopt_fast_lookup, register_overlays
from superstatic.objects.txn import Txn

_current = _txn.current
_EMPTY: Any = object()


def _lookups(txn: Txn, node: Node, items: Any) -> list[Any]:
    """Arguments of discard-like methods, as the stored elements they name (never new nodes).
    A value that could not be stored, but may equal a stored element, is looked up among the
    elements (which reads the set)."""
    out = []
    view = None
    for x in items:
        storable, value = _values.lookup_value(x, for_set=True)
        if storable:
            out.append(value)
            continue
        if view is None:
            view = txn.view(node)
        found = _values.find_equal(list(view), value)
        txn.stable()
        if found is not _values.MISSING:
            out.append(found)
    return out


def _is_setlike(other: Any) -> bool:
    return isinstance(other, (set, frozenset))


class SetProxy(NodeProxy):
    _READ_METHODS = frozenset(
        {
            "copy",
            "union",
            "intersection",
            "difference",
            "symmetric_difference",
            "issubset",
            "issuperset",
            "isdisjoint",
        }
    )
    _PLAIN = set
    _LABEL = "Set"

    def add(self, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.add(value))
        node = self._self_node
        txn.check(node)
        hash(value)
        (v,) = _values.store_many(txn, node, [(value, _values.ELEMENT)])
        txn.emit(node, ["add", node.oid, [v]])
        return None

    def update(self, *iterables: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.update(*iterables))
        node = self._self_node
        txn.check(node)
        items = [x for it in iterables for x in it]
        for x in items:
            hash(x)
        if items:
            stored = _values.store_many(txn, node, [(x, _values.ELEMENT) for x in items])
            txn.emit(node, ["add", node.oid, stored])
        return None

    def discard(self, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.discard(value))
        node = self._self_node
        txn.check(node)
        found = _lookups(txn, node, [value])
        if found:
            txn.emit(node, ["discard", node.oid, found])
        return None

    def difference_update(self, *iterables: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.difference_update(*iterables))
        node = self._self_node
        txn.check(node)
        found = _lookups(txn, node, [x for it in iterables for x in it])
        if found:
            txn.emit(node, ["discard", node.oid, found])
        return None

    def remove(self, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.remove(value))
        node = self._self_node
        try:
            present = value in txn.view_key(node, value)
        finally:
            txn.stable()
        if not present:
            raise KeyError(value)
        txn.emit(node, ["discard", node.oid, _lookups(txn, node, [value])])
        return None

    def pop(self) -> Any:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.pop())
        node = self._self_node
        view = txn.view(node)
        value = next(iter(view), _EMPTY)
        txn.stable()
        if value is _EMPTY:
            raise KeyError("pop from an empty set")
        txn.emit(node, ["discard", node.oid, [value]])
        return value

    def clear(self) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.clear())
        node = self._self_node
        txn.emit(node, ["clear", node.oid])
        return None

    def intersection_update(self, *iterables: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.intersection_update(*iterables))
        node = self._self_node
        items = list(txn.view(node))
        txn.stable()
        keep = set(items)
        for it in iterables:
            keep.intersection_update(it)
        gone = [x for x in items if x not in keep]
        if gone:
            txn.emit(node, ["discard", node.oid, gone])
        return None

    def symmetric_difference_update(self, iterable: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.symmetric_difference_update(iterable))
        node = self._self_node
        other = list(dict.fromkeys(iterable))  # distinct, in a stable order
        present = [x in txn.view_key(node, x) for x in other]
        txn.stable()
        gone = [x for x, p in zip(other, present, strict=True) if p]
        new = [x for x, p in zip(other, present, strict=True) if not p]
        stored = _values.store_many(txn, node, [(x, _values.ELEMENT) for x in new])
        if gone:
            txn.emit(node, ["discard", node.oid, _lookups(txn, node, gone)])
        if stored:
            txn.emit(node, ["add", node.oid, stored])
        return None

    def __ior__(self, other: Any) -> SetProxy:
        if not _is_setlike(other):
            return NotImplemented
        self.update(other)
        return self

    def __iand__(self, other: Any) -> SetProxy:
        if not _is_setlike(other):
            return NotImplemented
        self.intersection_update(other)
        return self

    def __isub__(self, other: Any) -> SetProxy:
        if not _is_setlike(other):
            return NotImplemented
        self.difference_update(other)
        return self

    def __ixor__(self, other: Any) -> SetProxy:
        if not _is_setlike(other):
            return NotImplemented
        self.symmetric_difference_update(other)
        return self


_node.PROXY_TYPES.add(SetProxy)
register_overlays(
    SetProxy,
    (
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__or__",
        "__ror__",
        "__and__",
        "__rand__",
        "__sub__",
        "__rsub__",
        "__xor__",
        "__rxor__",
    ),
    keyed=True,
)
adopt_fast_lookup(SetProxy)
