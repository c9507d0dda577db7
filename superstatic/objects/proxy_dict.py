"""The proxy of a shared dict: reads pass through, every mutator becomes ops.

Blind writes (`d[k] = v`, `update`, `clear`) record no read; mutators whose effect or result
depends on the current contents (`del d[k]`, `pop`, `popitem`, `setdefault`) record the read.
"""

from __future__ import annotations

from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.proxy_base import NodeProxy, register_overlays

_MISSING: Any = object()


class DictProxy(NodeProxy):
    _READ_METHODS = frozenset({"get", "keys", "values", "items", "copy"})

    def __setitem__(self, key: Any, value: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__setitem__(key, value))
        node = self._self_node
        txn.check(node)
        hash(key)  # an unhashable key fails here, before any new node is made for it
        k = _values.store(txn, key, node, _values._Segment("key", key))
        v = _values.store(txn, value, node, _values.item(key))
        if _node.node_of(v) is not None and txn.view(node).get(k, _MISSING) is v:
            return None  # `d[k] += ...` on a shared container: the same reference, nothing to do
        txn.emit(node, ["set", node.oid, k, v])
        return None

    def __delitem__(self, key: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.__delitem__(key))
        node = self._self_node
        if key not in txn.view(node):
            raise KeyError(key)
        txn.emit(node, ["del", node.oid, key])
        return None

    def pop(self, key: Any, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.pop(key, *default))
        node = self._self_node
        view = txn.view(node)
        if key not in view:
            if default:
                return default[0]
            raise KeyError(key)
        value = view[key]
        txn.emit(node, ["del", node.oid, key])
        return value

    def popitem(self) -> tuple[Any, Any]:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.popitem())
        node = self._self_node
        view = txn.view(node)
        if not view:
            raise KeyError("popitem(): dictionary is empty")
        key = next(reversed(view))
        value = view[key]
        txn.emit(node, ["del", node.oid, key])
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.setdefault(key, default))
        node = self._self_node
        view = txn.view(node)
        if key in view:
            return view[key]
        hash(key)
        k = _values.store(txn, key, node, _values._Segment("key", key))
        v = _values.store(txn, default, node, _values.item(key))
        txn.emit(node, ["set", node.oid, k, v])
        return v

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.update(other, **kwargs))
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
        for key, value in pairs:
            self[key] = value
        return None

    def clear(self) -> None:
        txn = _txn.state.txn
        if txn is None:
            return self._superstatic_autocommit(lambda: self.clear())
        node = self._self_node
        txn.emit(node, ["clear", node.oid])
        return None

    def __ior__(self, other: Any) -> DictProxy:
        self.update(other)
        return self


_node.PROXY_TYPES.add(DictProxy)
register_overlays(DictProxy, ("__eq__", "__ne__", "__or__", "__ror__"))
