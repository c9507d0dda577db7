"""The proxy of a shared list.

`append` / `extend` / `+=` are blind ("extend" op: no read recorded, so concurrent appenders
never conflict). Everything that needs the current length or contents to mean something (index
assignment, insert, pop, remove, del, slices, sort, reverse, `*=`) records the read and becomes a
"splice" with absolute bounds.
"""

from __future__ import annotations

import operator
from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.proxy_base import NodeProxy, register_overlays


def _store_all(txn: _txn.Txn, node: Any, items: list[Any], first_index: int) -> list[Any]:
    return [_values.store(txn, x, node, _values.item(first_index + i)) for i, x in enumerate(items)]


class ListProxy(NodeProxy):
    _READ_METHODS = frozenset({"index", "count", "copy"})

    def __setitem__(self, index: Any, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__setitem__(index, value))
        node = self._self_node
        view = txn.view(node)
        n = len(view)
        if isinstance(index, slice):
            items = list(value)
            start, stop, step = index.indices(n)
            if step == 1:
                stop = max(stop, start)
                txn.emit(
                    node, ["splice", node.oid, start, stop, _store_all(txn, node, items, start)]
                )
                return None
            slots = len(range(start, stop, step))
            if slots != len(items):
                raise ValueError(
                    f"attempt to assign sequence of size {len(items)} "
                    f"to extended slice of size {slots}"
                )
            new = list(view)
            new[index] = _store_all(txn, node, items, 0)
            txn.emit(node, ["splice", node.oid, 0, n, new])
            return None
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list assignment index out of range")
        v = _values.store(txn, value, node, _values.item(i))
        if _node.node_of(v) is not None and view[i] is v:
            return None  # `lst[i] += ...` on a shared container: the same reference
        txn.emit(node, ["splice", node.oid, i, i + 1, [v]])
        return None

    def __delitem__(self, index: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__delitem__(index))
        node = self._self_node
        view = txn.view(node)
        n = len(view)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                if stop > start:
                    txn.emit(node, ["splice", node.oid, start, stop, []])
                return None
            new = list(view)
            del new[index]
            if len(new) != n:
                txn.emit(node, ["splice", node.oid, 0, n, new])
            return None
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list assignment index out of range")
        txn.emit(node, ["splice", node.oid, i, i + 1, []])
        return None

    def append(self, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.append(value))
        node = self._self_node
        txn.check(node)
        v = _values.store(txn, value, node, _values.item("<appended>"))
        txn.emit(node, ["extend", node.oid, [v]])
        return None

    def extend(self, iterable: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.extend(iterable))
        node = self._self_node
        txn.check(node)
        items = list(iterable)  # reads `iterable` (a proxy records its read) before writing
        if items:
            stored = [_values.store(txn, x, node, _values.item("<appended>")) for x in items]
            txn.emit(node, ["extend", node.oid, stored])
        return None

    def __iadd__(self, other: Any) -> ListProxy:
        self.extend(other)
        return self

    def __imul__(self, count: Any) -> ListProxy:
        txn = _txn.state.txn
        if txn is None:
            self._superstatic_autocommit(lambda: self.__imul__(count))
            return self
        n_times = operator.index(count)
        node = self._self_node
        view = txn.view(node)
        if n_times <= 0:
            if view:
                txn.emit(node, ["clear", node.oid])
        elif n_times > 1 and view:
            txn.emit(node, ["extend", node.oid, list(view) * (n_times - 1)])
        return self

    def insert(self, index: Any, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.insert(index, value))
        node = self._self_node
        n = len(txn.view(node))
        i = operator.index(index)
        i = max(0, i + n) if i < 0 else min(i, n)
        v = _values.store(txn, value, node, _values.item(i))
        txn.emit(node, ["splice", node.oid, i, i, [v]])
        return None

    def pop(self, index: Any = -1) -> Any:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.pop(index))
        node = self._self_node
        view = txn.view(node)
        n = len(view)
        if n == 0:
            raise IndexError("pop from empty list")
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("pop index out of range")
        value = view[i]
        txn.emit(node, ["splice", node.oid, i, i + 1, []])
        return value

    def remove(self, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.remove(value))
        node = self._self_node
        view = txn.view(node)
        try:
            i = view.index(value)
        except ValueError:
            raise ValueError("list.remove(x): x not in list") from None
        txn.emit(node, ["splice", node.oid, i, i + 1, []])
        return None

    def clear(self) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.clear())
        node = self._self_node
        txn.emit(node, ["clear", node.oid])
        return None

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.sort(key=key, reverse=reverse))
        node = self._self_node
        view = txn.view(node)
        new = sorted(view, key=key, reverse=reverse)
        if any(a is not b for a, b in zip(new, view, strict=True)):
            txn.emit(node, ["splice", node.oid, 0, len(view), new])
        return None

    def reverse(self) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.reverse())
        node = self._self_node
        view = txn.view(node)
        if len(view) > 1:
            txn.emit(node, ["splice", node.oid, 0, len(view), view[::-1]])
        return None


_node.PROXY_TYPES.add(ListProxy)
register_overlays(
    ListProxy,
    (
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__add__",
        "__radd__",
        "__mul__",
        "__rmul__",
    ),
)
