"""The proxy of a shared list.

`append` / `extend` / `+=` are blind ("extend" op: no read recorded, so concurrent appenders
never conflict). Everything that needs the current length or contents to mean something (index
assignment, insert, pop, remove, del, slices, sort, reverse, `*=`) records the read and becomes a
"splice" with absolute bounds. What they read is recorded as the list's content, except where
only its length matters (`lst[i] = v`, `del lst[i]`, `insert`, contiguous slice assignment and
deletion: a shape read, so a concurrent update of another position does not conflict).

Inside a transaction a list is iterated by index over what the transaction sees at each step,
as a plain list iterator does: `for x in q: ... q.append(y)` visits `y` too.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.node import Node
from superstatic.objects.proxy_base import NodeProxy, adopt_fast_lookup, register_overlays
from superstatic.objects.txn import Txn
from superstatic.protocol.ops import READ_SHAPE

_current = _txn.current


def _store_all(txn: Txn, node: Node, items: list[Any], first_index: int) -> list[Any]:
    return _values.store_many(
        txn, node, [(x, _values.item(first_index + i)) for i, x in enumerate(items)]
    )


class _ListIter:
    """Iterator of a shared list inside a transaction: by index, over the current view."""

    __slots__ = ("backwards", "node", "pos")

    def __init__(self, node: Node, start: int, backwards: bool) -> None:
        self.node: Node | None = node
        self.pos = start
        self.backwards = backwards

    def __iter__(self) -> _ListIter:
        return self

    def __next__(self) -> Any:
        node = self.node
        if node is None:
            raise StopIteration
        txn = _current()
        outside = txn is None or node.replica is not txn.replica
        view = node.live if outside else txn.view(node)  # type: ignore[union-attr]
        pos = self.pos
        if pos < 0 or pos >= len(view):
            self.node = None  # exhausted for good, like a list iterator
            raise StopIteration
        value = view[pos]
        self.pos = pos - 1 if self.backwards else pos + 1
        if not outside:
            txn.stable()  # type: ignore[union-attr]
        return value

    def __length_hint__(self) -> int:
        node = self.node
        if node is None:
            return 0
        return self.pos + 1 if self.backwards else max(0, len(node.live) - self.pos)


class ListProxy(NodeProxy):
    _READ_METHODS = frozenset({"index", "count", "copy"})
    _PLAIN = list
    _LABEL = "list"

    def _txn_iter(self, txn: Txn, backwards: bool) -> Iterator[Any]:
        node = self._self_node
        if not backwards:
            return _ListIter(node, 0, False)
        n = len(txn.view(node))
        txn.stable()
        return _ListIter(node, n - 1, True)

    def __setitem__(self, index: Any, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__setitem__(index, value))
        node = self._self_node
        n = len(txn.view(node, READ_SHAPE))
        txn.stable()
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
            new = list(txn.view(node))
            txn.stable()
            new[index] = _store_all(txn, node, items, 0)
            txn.emit(node, ["splice", node.oid, 0, n, new])
            return None
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list assignment index out of range")
        v = _values.store(txn, value, node, _values.item(i))
        if _node.node_of(v) is not None:
            same = txn.view(node)[i] is v
            txn.stable()
            if same:
                return None  # `lst[i] += ...` on a shared container: the same reference
        txn.emit(node, ["splice", node.oid, i, i + 1, [v]])
        return None

    def __delitem__(self, index: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__delitem__(index))
        node = self._self_node
        view = txn.view(node, READ_SHAPE)
        n = len(view)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                txn.stable()
                if stop > start:
                    txn.emit(node, ["splice", node.oid, start, stop, []])
                return None
            view = txn.view(node)  # which items remain: the content
            new = list(view)
            txn.stable()
            del new[index]
            if len(new) != n:
                txn.emit(node, ["splice", node.oid, 0, n, new])
            return None
        txn.stable()
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list assignment index out of range")
        txn.emit(node, ["splice", node.oid, i, i + 1, []])
        return None

    def append(self, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.append(value))
        node = self._self_node
        txn.check(node)
        v = _values.store(txn, value, node, _values.item("<appended>"))
        txn.emit(node, ["extend", node.oid, [v]])
        return None

    def extend(self, iterable: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.extend(iterable))
        node = self._self_node
        txn.check(node)
        items = list(iterable)  # reads `iterable` (a proxy records its read) before writing
        if items:
            stored = _values.store_many(txn, node, [(x, _values.item("<appended>")) for x in items])
            txn.emit(node, ["extend", node.oid, stored])
        return None

    def __iadd__(self, other: Any) -> ListProxy:
        self.extend(other)
        return self

    def __imul__(self, count: Any) -> ListProxy:
        txn = _current()
        if txn is None:
            self._superstatic_autocommit(lambda: self.__imul__(count))
            return self
        n_times = operator.index(count)
        node = self._self_node
        view = txn.view(node)
        items = list(view)
        txn.stable()
        if n_times <= 0:
            if items:
                txn.emit(node, ["clear", node.oid])
        elif n_times > 1 and items:
            txn.emit(node, ["extend", node.oid, items * (n_times - 1)])
        return self

    def insert(self, index: Any, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.insert(index, value))
        node = self._self_node
        n = len(txn.view(node, READ_SHAPE))
        txn.stable()
        i = operator.index(index)
        i = max(0, i + n) if i < 0 else min(i, n)
        v = _values.store(txn, value, node, _values.item(i))
        txn.emit(node, ["splice", node.oid, i, i, [v]])
        return None

    def pop(self, index: Any = -1) -> Any:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.pop(index))
        node = self._self_node
        view = txn.view(node)
        n = len(view)
        if n == 0:
            txn.stable()
            raise IndexError("pop from empty list")
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            txn.stable()
            raise IndexError("pop index out of range")
        value = view[i]
        txn.stable()
        txn.emit(node, ["splice", node.oid, i, i + 1, []])
        return value

    def remove(self, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.remove(value))
        node = self._self_node
        view = txn.view(node)
        try:
            i = view.index(value)
        except ValueError:
            txn.stable()
            raise ValueError("list.remove(x): x not in list") from None
        txn.stable()
        txn.emit(node, ["splice", node.oid, i, i + 1, []])
        return None

    def clear(self) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.clear())
        node = self._self_node
        txn.emit(node, ["clear", node.oid])
        return None

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.sort(key=key, reverse=reverse))
        node = self._self_node
        items = list(txn.view(node))
        txn.stable()
        new = sorted(items, key=key, reverse=reverse)
        if any(a is not b for a, b in zip(new, items, strict=True)):
            txn.emit(node, ["splice", node.oid, 0, len(items), new])
        return None

    def reverse(self) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.reverse())
        node = self._self_node
        items = list(txn.view(node))
        txn.stable()
        if len(items) > 1:
            txn.emit(node, ["splice", node.oid, 0, len(items), items[::-1]])
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
adopt_fast_lookup(ListProxy)
