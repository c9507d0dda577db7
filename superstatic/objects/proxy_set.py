"""The proxy of a shared set.

`add`, `update`, `|=`, `discard`, `difference_update`, `-=` and `clear` are blind. `remove`,
`pop`, `intersection_update` / `&=` and `symmetric_difference_update` / `^=` depend on the current
contents and record the read.
"""

from __future__ import annotations

from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.proxy_base import NodeProxy, register_overlays


def _lookups(items: Any) -> list[Any]:
    """Arguments of discard-like methods: values that could be elements (never new nodes)."""
    out = []
    for x in items:
        storable, value = _values.lookup_value(x)
        if storable:
            out.append(value)
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

    def add(self, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.add(value))
        node = self._self_node
        txn.check(node)
        hash(value)
        v = _values.store(txn, value, node, _values.ELEMENT)
        txn.emit(node, ["add", node.oid, [v]])
        return None

    def update(self, *iterables: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.update(*iterables))
        node = self._self_node
        txn.check(node)
        items = [x for it in iterables for x in it]
        for x in items:
            hash(x)
        if items:
            stored = [_values.store(txn, x, node, _values.ELEMENT) for x in items]
            txn.emit(node, ["add", node.oid, stored])
        return None

    def discard(self, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.discard(value))
        node = self._self_node
        txn.check(node)
        found = _lookups([value])
        if found:
            txn.emit(node, ["discard", node.oid, found])
        return None

    def difference_update(self, *iterables: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.difference_update(*iterables))
        node = self._self_node
        txn.check(node)
        found = _lookups([x for it in iterables for x in it])
        if found:
            txn.emit(node, ["discard", node.oid, found])
        return None

    def remove(self, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.remove(value))
        node = self._self_node
        if value not in txn.view(node):
            raise KeyError(value)
        txn.emit(node, ["discard", node.oid, [value]])
        return None

    def pop(self) -> Any:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.pop())
        node = self._self_node
        view = txn.view(node)
        if not view:
            raise KeyError("pop from an empty set")
        value = next(iter(view))
        txn.emit(node, ["discard", node.oid, [value]])
        return value

    def clear(self) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.clear())
        node = self._self_node
        txn.emit(node, ["clear", node.oid])
        return None

    def intersection_update(self, *iterables: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.intersection_update(*iterables))
        node = self._self_node
        view = txn.view(node)
        keep = set(view)
        for it in iterables:
            keep.intersection_update(it)
        gone = [x for x in view if x not in keep]
        if gone:
            txn.emit(node, ["discard", node.oid, gone])
        return None

    def symmetric_difference_update(self, iterable: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.symmetric_difference_update(iterable))
        node = self._self_node
        view = txn.view(node)
        other = list(dict.fromkeys(iterable))  # distinct, in a stable order
        gone = [x for x in other if x in view]
        new = [x for x in other if x not in view]
        if gone:
            txn.emit(node, ["discard", node.oid, gone])
        if new:
            stored = [_values.store(txn, x, node, _values.ELEMENT) for x in new]
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
)
