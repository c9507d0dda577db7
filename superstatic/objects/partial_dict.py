"""`PartialDict`: the contents of a dict held per key (docs/virtual-heap.md section 4.3).

A partial replica holds the root table (`@roots`) one key at a time: an app that reads one root
of 100,000 must not load them all. The node's `live` is a `PartialDict`, a real dict of the keys
loaded so far plus `absent`, the keys known not to be there. A lookup of any other key
(`get`, `d[k]`) loads that key (`Replica.fault_key`) and answers from what arrived.

Only the library reads the root table, and only by key (`Session._find_root` and the creation
bodies: `view_key(...).get(name)`), so whole reads (`len`, iteration) are not intercepted: they
see the keys loaded. The replica applies ops to it through the dict methods below, which keep
`absent` right without loading anything (a `del` makes the key known absent, a `set` known
present). Per-key dicts of user data (a dict above LOAD_WHOLE_ENTRIES_MAX entries) are not built
yet: they need the whole-node upgrade of section 4.3 for shape and content reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superstatic.objects.node import Node

_MISSING: Any = object()
_contains = dict.__contains__
_getitem = dict.__getitem__
_setitem = dict.__setitem__
_pop = dict.pop


class PartialDict(dict):  # type: ignore[type-arg]
    """Loaded keys (the dict itself) and keys known absent (`absent`) of a per-key node. A
    transaction's shadow of it is a `PartialDict` too (`copy`), which loads an unknown key
    from the node and copies what arrived."""

    __slots__ = ("absent", "node")

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.absent: set[Any] = set()

    def known(self, key: Any) -> bool:
        return _contains(self, key) or key in self.absent

    def load(self, key: Any) -> None:
        """Makes `key` known here: loaded into the node (a round trip unless another thread
        did), then, in a shadow, copied from the node's own contents."""
        node = self.node
        node.replica.fault_key(node, key)
        source = node.live
        if source is self:
            return
        found = _getitem(source, key) if _contains(source, key) else _MISSING
        if found is _MISSING:
            self.absent.add(key)
        else:
            _setitem(self, key, found)

    def get(self, key: Any, default: Any = None) -> Any:
        if not (_contains(self, key) or key in self.absent):
            self.load(key)
        return dict.get(self, key, default)

    def __missing__(self, key: Any) -> Any:
        if key in self.absent:
            raise KeyError(key)
        self.load(key)
        if _contains(self, key):
            return _getitem(self, key)
        raise KeyError(key)

    # The replica's (and a shadow's) ops: they change known keys only.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.absent.discard(key)
        _setitem(self, key, value)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        self.absent.add(key)
        if default is _MISSING:
            return _pop(self, key)
        return _pop(self, key, default)

    def clear(self) -> None:
        self.absent.update(self.keys())
        dict.clear(self)

    def copy(self) -> PartialDict:
        out = PartialDict(self.node)
        dict.update(out, self)
        out.absent = set(self.absent)
        return out

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("superstatic objects cannot be pickled (superstatic never pickles)")
