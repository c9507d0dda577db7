"""`PartialDict`: the contents of a dict held per key (docs/virtual-heap.md section 4.3).

A partial replica holds the root table (`@roots`) one key at a time: an app that reads one root
of 100,000 must not load them all. The node's `live` is a `PartialDict`, a real dict of the keys
loaded so far plus `absent`, the keys known not to be there. A lookup of any other key
(`get`, `d[k]`) loads that key (`Replica.fault_key`) and answers from what arrived.

A user dict the agent holds per key (above its LOAD_WHOLE_ENTRIES_MAX entries) is one too: a
lookup loads one key; a read of its shape or content loads it whole first. Only the library
reads the root table, and only by key (`Session._find_root` and the creation bodies:
`view_key(...).get(name)`), so its whole reads see the keys held. The replica applies ops to
it through the dict methods below, which keep `absent` right without loading anything (a
`del` makes the key known absent, a `set` known present); its own reads use `dict.*`
directly, never the loading overrides.

Loaded keys count in the replica's held bytes and are on the eviction clock with their node
(objects/eviction.py `_evict_keys`): past `cache_bytes` the oldest loaded go, and the agent is
told (a DROP of those keys); a later lookup loads such a key again.
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
    transaction's shadow of it is a `PartialDict` too (`partial_copy`), which loads an
    unknown key from the node and copies what arrived.

    Reads of one key load that key; reads of the shape or the content (`len`, iteration,
    `keys()`, `==`, `repr`, `copy()`) load the whole node first (`Replica.fault_whole`: it
    becomes an ordinary held dict) and answer from it, except for the root table (`fixed`),
    which only the library reads, by key: there they see the keys held."""

    __slots__ = ("absent", "fixed", "node", "retired")

    def __init__(self, node: Node, *, fixed: bool = False) -> None:
        super().__init__()
        self.node = node
        self.absent: set[Any] = set()
        self.fixed = fixed
        self.retired = False

    def retire(self) -> None:
        """The node is held whole now, in another container (Replica._fill_hollow), and ops
        no longer reach this one. User code may still hold it (a bound `get`, `__contains__`):
        emptied and never filled again, every lookup through it reads the node's current
        contents (`load`) instead of a frozen copy."""
        self.retired = True
        dict.clear(self)
        self.absent.clear()

    def known(self, key: Any) -> bool:
        return _contains(self, key) or key in self.absent

    def load(self, key: Any) -> Any:
        """Makes `key` known: loaded into the node (a round trip unless another thread did),
        and in a shadow copied from the node's own contents. Returns its value, or _MISSING
        if it is absent. The eviction clock may let the key go again between the load and
        this read (docs/virtual-heap.md 5.2: keys are on the clock): then it is loaded again,
        as a hollowed node's next use faults it in again."""
        node = self.node
        while True:
            node.replica.fault_key(node, key)
            source = node.live
            if type(source) is not PartialDict:
                if type(source) is not dict:
                    continue  # loaded whole, then hollowed by the clock: load it again
                # Loaded whole meanwhile (another thread read its shape): a plain held dict.
                found = dict.get(source, key, _MISSING)
                if self.retired:
                    return found
                if found is _MISSING:
                    self.absent.add(key)
                else:
                    _setitem(self, key, found)
                return found
            found = dict.get(source, key, _MISSING)
            if found is _MISSING and key not in source.absent:
                continue  # evicted before this read: ask again
            if source is not self and not self.retired:
                if found is _MISSING:
                    self.absent.add(key)
                else:
                    _setitem(self, key, found)
            return found

    def __contains__(self, key: object) -> bool:
        if _contains(self, key):
            return True
        if key in self.absent:
            return False
        return self.load(key) is not _MISSING

    def _whole(self) -> Any:
        """The whole contents: the node loaded whole (no longer per key), or this dict as it
        is for the root table."""
        if self.fixed:
            return _Plain(self)
        node = self.node
        node.replica.fault_whole(node)
        return node.live

    def __len__(self) -> int:
        return len(self._whole())

    def __iter__(self) -> Any:
        return iter(self._whole())

    def __reversed__(self) -> Any:
        return reversed(self._whole())

    def keys(self) -> Any:
        return self._whole().keys()

    def values(self) -> Any:
        return self._whole().values()

    def items(self) -> Any:
        return self._whole().items()

    def __eq__(self, other: object) -> bool:
        return self._whole() == other  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        return self._whole() != other  # type: ignore[no-any-return]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._whole())

    def __or__(self, other: Any) -> Any:
        return self._whole() | other

    def __ror__(self, other: Any) -> Any:
        return other | self._whole()

    def get(self, key: Any, default: Any = None) -> Any:
        found = dict.get(self, key, _MISSING)
        if found is _MISSING and key not in self.absent:
            found = self.load(key)
        return default if found is _MISSING else found

    def __missing__(self, key: Any) -> Any:
        if key in self.absent:
            raise KeyError(key)
        found = self.load(key)
        if found is _MISSING:
            raise KeyError(key)
        return found

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
        self.absent.update(dict.keys(self))
        dict.clear(self)

    def copy(self) -> Any:
        return dict(self._whole()) if not self.fixed else self.partial_copy()

    # copy.copy finds no __copy__ on a dict subclass and would fall back to __reduce_ex__ (the
    # pickle refusal below): a shallow copy is `copy()`'s, as for a held dict.
    def __copy__(self) -> Any:
        return self.copy()

    # A classmethod of dict that would build a PartialDict without a node: a plain dict, as
    # `d.fromkeys` of a held dict gives.
    @classmethod
    def fromkeys(cls, iterable: Any, value: Any = None) -> Any:  # type: ignore[override]
        return dict.fromkeys(iterable, value)

    def partial_copy(self) -> PartialDict:
        """What is known of it (a transaction's shadow: Txn._materialize)."""
        out = PartialDict(self.node, fixed=self.fixed)
        for key, value in dict.items(self):  # (dict.update would call the loading keys())
            _setitem(out, key, value)
        out.absent = set(self.absent)
        return out

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("superstatic objects cannot be pickled (superstatic never pickles)")


class _Plain(dict):  # type: ignore[type-arg]
    """The root table's keys held, as a plain dict (its whole reads see what is held)."""

    def __init__(self, source: PartialDict) -> None:
        super().__init__(dict.items(source))
