"""The proxy of a shared dict: reads pass through, every mutator becomes ops.

Blind writes (`d[k] = v`, `update`, `clear`) record no read; mutators whose effect or result
depends on the current contents record the read: of the one key for `del d[k]`, `pop(k)` and
`setdefault(k)`, of the whole dict for `popitem` (which item is last depends on all of them).
Keys given to lookups (`del d[k]`, `pop(k)`) are converted like stored keys (values.lookup_value):
a key equal to a stored one but not storable itself (an instance with a custom __eq__) is
replaced by the stored key it matches, so the op means the same on the agent.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.proxy_base import NodeProxy, adopt_fast_lookup, register_overlays

_MISSING: Any = object()
_current = _txn.current


def _op_key(view: Any, key: Any) -> Any:
    """The key to name in a del op for `key`, known to be in `view`."""
    storable, value = _values.lookup_value(key)
    if storable:
        return value
    found = _values.find_equal(view, key)
    assert found is not _values.MISSING, "the caller checked the key is present"
    return found


class DictProxy(NodeProxy):
    _READ_METHODS = frozenset({"get", "keys", "values", "items", "copy"})
    _PLAIN = dict
    _LABEL = "dictionary"

    def __setitem__(self, key: Any, value: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__setitem__(key, value))
        node = self._self_node
        txn.check(node)
        hash(key)  # an unhashable key fails here, before any new node is made for it
        k, v = _values.store_many(txn, node, [(key, _values.key(key)), (value, _values.item(key))])
        if _node.node_of(v) is not None:
            same = txn.view_key(node, k).get(k, _MISSING) is v
            txn.stable()
            if same:
                return None  # `d[k] += ...` on a shared container: the same reference
        txn.emit(node, ["set", node.oid, k, v])
        return None

    def __delitem__(self, key: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__delitem__(key))
        node = self._self_node
        view = txn.view_key(node, key)
        present = key in view
        txn.stable()
        if not present:
            raise KeyError(key)
        txn.emit(node, ["del", node.oid, _op_key(view, key)])
        return None

    def pop(self, key: Any, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.pop(key, *default))
        node = self._self_node
        view = txn.view_key(node, key)
        value = view.get(key, _MISSING)
        txn.stable()
        if value is _MISSING:
            if default:
                return default[0]
            raise KeyError(key)
        txn.emit(node, ["del", node.oid, _op_key(view, key)])
        return value

    def popitem(self) -> tuple[Any, Any]:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.popitem())
        node = self._self_node
        view = txn.view(node)
        try:
            if not view:
                raise KeyError("popitem(): dictionary is empty")
            key = next(reversed(view))
            value = view[key]
        finally:
            txn.stable()
        txn.emit(node, ["del", node.oid, key])
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.setdefault(key, default))
        node = self._self_node
        found = txn.view_key(node, key).get(key, _MISSING)
        txn.stable()
        if found is not _MISSING:
            return found
        k, v = _values.store_many(
            txn, node, [(key, _values.key(key)), (default, _values.item(key))]
        )
        txn.emit(node, ["set", node.oid, k, v])
        return v

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.update(other, **kwargs))
        node = self._self_node
        txn.check(node)
        # dict.update's rules: a mapping is anything with keys(); else an iterable of pairs.
        pairs: list[tuple[Any, Any]] | None = None
        if hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]  # noqa: SIM118 (any mapping)
        if pairs is None:
            pairs = []
            for i, pair in enumerate(other):
                pair_list = list(pair)
                if len(pair_list) != 2:
                    raise ValueError(
                        f"dictionary update sequence element #{i} has length "
                        f"{len(pair_list)}; 2 is required"
                    )
                pairs.append((pair_list[0], pair_list[1]))
        pairs.extend(kwargs.items())
        if not pairs:
            return None
        for k, _v in pairs:
            hash(k)
        # Every pair is checked and converted before anything is written: a bad pair writes
        # nothing (plain dict.update would have applied the pairs before it).
        to_store: list[tuple[Any, Any]] = []
        for k, v in pairs:
            to_store.append((k, _values.key(k)))
            to_store.append((v, _values.item(k)))
        stored = _values.store_many(txn, node, to_store)
        for i in range(0, len(stored), 2):
            txn.emit(node, ["set", node.oid, stored[i], stored[i + 1]])
        return None

    def clear(self) -> None:
        txn = _current()
        if txn is None:
            return self._superstatic_autocommit(lambda: self.clear())
        node = self._self_node
        txn.emit(node, ["clear", node.oid])
        return None

    def __ior__(self, other: Any) -> DictProxy:
        self.update(other)
        return self


class _Keys(KeysView[Any]):
    """`d.keys()` inside a transaction: live, through the proxy."""

    __slots__ = ()

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._mapping)  # type: ignore[call-overload]

    def __repr__(self) -> str:
        return f"dict_keys({list(self)!r})"


class _Values(ValuesView[Any]):
    __slots__ = ()

    def __reversed__(self) -> Iterator[Any]:
        mapping = self._mapping
        for key in reversed(mapping):  # type: ignore[call-overload]
            yield mapping[key]

    def __repr__(self) -> str:
        return f"dict_values({list(self)!r})"


class _Items(ItemsView[Any, Any]):
    __slots__ = ()

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        mapping = self._mapping
        for key in reversed(mapping):  # type: ignore[call-overload]
            yield key, mapping[key]

    def __repr__(self) -> str:
        return f"dict_items({list(self)!r})"


_node.PROXY_TYPES.add(DictProxy)
register_overlays(
    DictProxy,
    ("__eq__", "__ne__", "__or__", "__ror__"),
    {"keys": _Keys, "values": _Values, "items": _Items},
    keyed=True,
)
adopt_fast_lookup(DictProxy)
