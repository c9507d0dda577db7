"""What the dict, list and set proxies share.

A container proxy is a `wrapt.BaseObjectProxy` around the replica's real container. Reads that
Python dispatches through type slots (`p[k]`, `len(p)`, `k in p`, `bool(p)`) run in wrapt's C
code and cost close to a plain read. Attribute lookups do not go through wrapt's own
`__getattribute__` (wrapt 2's finds its module state by walking the type's MRO on every lookup:
about 50 ns): the proxy classes' slot is CPython's generic lookup (`adopt_fast_lookup`,
objects/attr_slot.py), so names the proxy class or its instance dict holds cost what they cost
on any object whose instance dict CPython does not specialize; a name of the plain type the
class lacks is a `_Forward` on NodeProxy, which forwards to the real container, as
`__getattr__` does where the hook is kept. For named read methods (`p.get`, `p.keys`, ...) the
first lookup caches the real container's bound method in the proxy's instance dict, after which
`p.get(k)` costs about 1.6x `d.get(k)` on a plain dict. A node's container is fixed while it is
held; the swaps (hollow.py, replica.py) set `__wrapped__` (`_set_wrapped`, which also picks the
class) and empty or replace the cache.

While a transaction body runs anywhere in the process, `txn.register_overlay` installs Python
versions of those read methods that consult the current transaction (record what was read: the
key for `d[k]`, `d.get(k)`, `k in d`, `x in s`; the node's shape for `len`, `bool` and iterating
a dict or set; its whole content for everything else, every list read but `len` included; read
its shadow if this transaction wrote it; then validate: `Txn.stable`). Named methods are
overlaid with data descriptors so they win over the cached bound methods in the instance dict.
Inside a transaction, `keys()`, `values()` and `items()` return live views over the proxy (so a
view taken after a write still follows the object), and iterating a list reads it by index, so
elements appended while iterating are visited, as with a plain list.

Every mutator is always a Python method here: it never reaches the wrapped container directly.
Calling a proxy class like its container type (`type(p)(iterable)`, as `dataclasses.asdict`
and `copy` helpers do) makes a plain container.
"""

from __future__ import annotations

import copy as _copy
import gc
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import wrapt

from superstatic.objects import attr_slot
from superstatic.objects import txn as _txn
from superstatic.objects.node import NODE_TYPES, PROXY_TYPES, Node
from superstatic.objects.operators import BINARY_OPERATORS
from superstatic.objects.plain_copy import plain
from superstatic.protocol.errors import Error
from superstatic.protocol.ops import READ_SHAPE

if TYPE_CHECKING:
    from superstatic.objects.txn import Txn

_current = _txn.current
_referents = gc.get_referents


class NodeProxy(wrapt.BaseObjectProxy):  # type: ignore[misc]
    """Base of DictProxy, ListProxy and SetProxy. `_self_node` is the replica node."""

    # Names of read-only methods of the wrapped type, served from the instance-dict cache
    # outside transactions and overlaid inside them. Set by each subclass.
    _READ_METHODS: frozenset[str] = frozenset()
    # The plain type the proxy stands for, and how its iterators name it in errors.
    _PLAIN: type = object
    _LABEL = ""
    # A slot, not an entry of the proxy's instance dict: every shared container has a proxy,
    # and the dict stays empty until a named read method is first cached in it.
    __slots__ = ("_self_node",)
    _self_node: Node

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 2 and type(args[1]) in NODE_TYPES and not kwargs:
            return super().__new__(cls, *args)
        # `type(proxy)(...)`: code that rebuilds a container of the same type gets a plain one.
        return cls._PLAIN(*args, **kwargs)

    def __init__(self, container: Any, node: Node) -> None:
        super().__init__(container)
        self._self_node = node
        if type(container) is not self._PLAIN and type(self) in _HOOKED:
            _set_class(self, _HOOKED[type(self)])
        # wrapt's __init__ copies the container's `__module__` / `__doc__` into the proxy's
        # instance dict, for its own attribute lookup, which proxies do not use (see the module
        # doc): emptied, the dict gives its table back (about 120 bytes per shared container).
        for held in _referents(self):
            if type(held) is dict and held is not container:
                held.clear()

    # Plain attribute lookup (see the module doc); wrapt's version differs only in proxying
    # `__module__` and `__doc__`, which here are the proxy class's.
    __getattribute__ = object.__getattribute__

    def __getattr__(self, name: str) -> Any:
        return _forward(self, name)

    # Not on the hot path, and wrapt's versions would show the wrapped container rather than
    # what a transaction sees, so these are always Python.
    def __iter__(self) -> Iterator[Any]:
        node = self._self_node
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return iter(self.__wrapped__)
        return self._txn_iter(txn, False)

    def __reversed__(self) -> Iterator[Any]:
        node = self._self_node
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return reversed(self.__wrapped__)
        return self._txn_iter(txn, True)

    def _txn_iter(self, txn: Txn, backwards: bool) -> Iterator[Any]:
        # Dicts and sets: the elements as they are now (a read of the keys / members: shape);
        # a write to the node while iterating raises like a plain dict/set does when it
        # changes size under its iterator.
        view = txn.view(self._self_node, READ_SHAPE)
        items = list(reversed(view) if backwards else view)
        txn.stable()
        return _SnapshotIter(self._self_node, items, len(view), self._LABEL)

    def __repr__(self) -> str:
        return _read(self, repr)

    def __str__(self) -> str:
        return _read(self, str)

    def __format__(self, spec: str) -> str:
        return _read(self, lambda view: format(view, spec))

    def __copy__(self) -> Any:
        # A shallow plain copy: nested shared containers stay shared, as copy.copy promises.
        return _read(self, _copy.copy)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return plain(self, memo)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "superstatic objects cannot be pickled (superstatic never pickles); "
            "use superstatic.plain(obj) for a plain copy"
        )

    __reduce__ = __reduce_ex__

    def _superstatic_autocommit(self, write: Callable[[], Any]) -> Any:
        """Runs a write made outside any transaction as a transaction of its own."""
        node = self._self_node
        session = node.replica.session
        if node.txn is not None or session is None:
            raise Error(f"object {node.oid} is not attached to a running superstatic connection")
        return session.run(write)


def _forward(proxy: NodeProxy, name: str) -> Any:
    """A name the proxy class lacks: the wrapped container's (a read method is cached)."""
    wrapped = proxy.__wrapped__
    attr = getattr(wrapped, name)
    if name in type(proxy)._READ_METHODS:
        proxy.__self_setattr__(name, attr)
        # A swap (hollow.py, replica.py) sets the container, then forgets the cache. If one ran
        # in another thread between our read of the container and our store, its forget may
        # have come first and our store would keep the old container's method for good (reads
        # answered from a container nobody updates). The swap's container is set before its
        # forget, so either it is visible here and we forget our own store, or the forget is
        # still to come and removes it.
        if proxy.__wrapped__ is not wrapped:
            proxy.__self_dict__.pop(name, None)
    return attr


class _Forward:
    """On NodeProxy, for each name the plain container types have and the proxy classes lack
    (`get`, `keys`, `index`, ...): what `__getattr__` does for that name, found by the class
    lookup instead (see adopt_fast_lookup). Not a data descriptor, so a bound method cached in
    the instance dict wins; below each proxy class in the MRO, so the transaction overlays
    (set on the proxy class itself) win while they are installed."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: Any, owner: type | None = None) -> Any:
        if proxy is None:
            # What the class lookup said before this descriptor existed.
            label = owner.__name__ if owner is not None else "NodeProxy"
            raise AttributeError(f"type object {label!r} has no attribute {self.name!r}")
        return _forward(proxy, self.name)


# Fast proxy class -> its hooked twin, and back (see adopt_fast_lookup).
_HOOKED: dict[type, type] = {}
_FAST: dict[type, type] = {}
_set_class = object.__dict__["__class__"].__set__
_wrapped_field = wrapt.BaseObjectProxy.__dict__["__wrapped__"]


def _set_wrapped(proxy: NodeProxy, container: Any) -> None:
    """`proxy.__wrapped__ = container`: the fast class while the container is the plain type,
    its hooked twin while it is anything else (a hollow stand-in, a closed connection's, a
    per-key dict), whose misses the wrapped object answers (faults, errors)."""
    _wrapped_field.__set__(proxy, container)
    cls = type(proxy)
    fast = _FAST.get(cls, cls)
    hooked = _HOOKED.get(fast)
    if hooked is None:
        return  # a class that was not adopted (a subclass made elsewhere) keeps its class
    want = fast if type(container) is fast._PLAIN else hooked
    if want is not cls:
        _set_class(proxy, want)


def _wrapped_delete(proxy: NodeProxy) -> None:
    _wrapped_field.__delete__(proxy)


def adopt_fast_lookup(cls: type[NodeProxy]) -> bool:
    """Gives a proxy class CPython's generic attribute lookup (docs/library.md, "Reads"):
    `p.get` then costs what a name in a plain object's instance dict costs, not the
    `__getattr__` hook's extra ~5 ns. Called once per proxy class, after its overlays are
    registered; True if adopted.

    The generic lookup never calls `__getattr__`, so the class must resolve every name the hook
    would have sent there, with the same result:
    * names of the plain type the class lacks: `_Forward` descriptors on NodeProxy, installed
      here whether or not the slot is adopted (both ways do the same for them);
    * any other name, on a plain dict / list / set: the container raises "'dict' object has no
      attribute 'x'"; the class's C name becomes the plain type's, so the generic lookup's
      own error reads the same;
    * a proxy whose container is not the plain type (hollow, closed connection, per-key dict)
      answers other names in its own way: such a proxy's class is switched to a twin subclass
      that keeps the hook (CPython gives it to every new subclass), see `_set_wrapped`.
    """
    plain = cls._PLAIN
    # (A forwarder another proxy class installed counts as present: it does the same here.)
    missing = [name for name in dir(plain) if not any(name in vars(k) for k in cls.__mro__)]
    for name in missing:
        if name[:2] == "__":
            # A special name the plain type has and the proxy lacks: Python may look it up on
            # the type, where a forwarder would answer differently; no fast slot then.
            attr_slot.log.debug("attribute slot of %s: %s is not proxied", cls.__qualname__, name)
            return False
    for name in missing:
        setattr(NodeProxy, name, _Forward(name))
    why = attr_slot.refusal()
    if why is None and cls.__getattr__ is not NodeProxy.__getattr__:  # type: ignore[comparison-overlap]
        why = "its __getattr__ is not NodeProxy's"
    if why is not None:
        attr_slot.log.debug("attribute slot of %s left as it is: %s", cls.__qualname__, why)
        return False
    # Made while `cls` still has the hook; a new subclass gets it from CPython anyway.
    hooked = type(cls)(
        cls.__name__,
        (cls,),
        {"__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__},
    )
    if not attr_slot.adopt_generic_getattr(cls, plain):
        return False  # `hooked` is unreferenced: collected
    attr_slot.rename(hooked, plain)
    _HOOKED[cls] = hooked
    _FAST[hooked] = cls
    PROXY_TYPES.add(hooked)
    if not isinstance(vars(NodeProxy).get("__wrapped__"), property):
        # The getter is the C field's own (no Python frame on reads of __wrapped__).
        NodeProxy.__wrapped__ = property(  # type: ignore[method-assign,assignment]
            _wrapped_field.__get__, _set_wrapped, _wrapped_delete, "the wrapped container"
        )
    return True


def _read(proxy: NodeProxy, fn: Callable[[Any], Any]) -> Any:
    """`fn` applied to what the current thread sees of the proxy's node, validated."""
    node = proxy._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return fn(node.live)
    try:
        return fn(txn.view(node))
    finally:
        txn.stable()


class _SnapshotIter:
    """Iterator of a dict or set inside a transaction (see NodeProxy._txn_iter)."""

    __slots__ = ("items", "label", "node", "pos", "size")

    def __init__(self, node: Node, items: list[Any], size: int, label: str) -> None:
        self.node = node
        self.items = items
        self.size = size
        self.label = label
        self.pos = 0

    def __iter__(self) -> _SnapshotIter:
        return self

    def __next__(self) -> Any:
        if self.pos >= len(self.items):
            raise StopIteration
        txn = _current()
        node = self.node
        in_txn = txn is not None and node.replica is txn.replica
        if in_txn and len(txn.view_peek(node)) != self.size:  # type: ignore[union-attr]
            self.pos = len(self.items)
            raise RuntimeError(f"{self.label} changed size during iteration")
        value = self.items[self.pos]
        self.pos += 1
        return value

    def __length_hint__(self) -> int:
        return len(self.items) - self.pos


class _TxnRead:
    """Data descriptor overlaying a named read method while transactions run."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: Any, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        node = proxy._self_node
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return getattr(node.live, self.name)
        name = self.name

        def call(*args: Any, **kwargs: Any) -> Any:
            return _read(proxy, lambda view: getattr(view, name)(*args, **kwargs))

        call.__name__ = name
        return call

    def __set__(self, proxy: Any, value: Any) -> None:
        raise AttributeError(f"cannot replace the method {self.name!r} of a shared container")


class _TxnGet(_TxnRead):
    """Overlay of dict.get: a read of the one key."""

    __slots__ = ()

    def __get__(self, proxy: Any, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        node = proxy._self_node
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return node.live.get

        def get(key: Any, default: Any = None) -> Any:
            try:
                return txn.view_key(node, key).get(key, default)
            finally:
                txn.stable()

        return get


class _TxnView(_TxnRead):
    """Overlay of dict.keys / values / items: inside a transaction, a live view over the proxy
    (not over the container the transaction happens to read now, which a later write replaces
    with a private copy)."""

    __slots__ = ("view_class",)

    def __init__(self, name: str, view_class: type) -> None:
        super().__init__(name)
        self.view_class = view_class

    def __get__(self, proxy: Any, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        node = proxy._self_node
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return getattr(node.live, self.name)
        view_class = self.view_class
        whole = self.name != "keys"

        def call() -> Any:
            if whole:
                # values() / items(): the values too, whichever are read through the view.
                txn.record_read(node)
            return view_class(proxy)

        call.__name__ = self.name
        return call


def _getitem(self: NodeProxy, key: Any) -> Any:
    # A list's item: READ_CONTENT (positions move with every insert before them).
    node = self._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return node.live[key]
    try:
        return txn.view(node)[key]
    finally:
        txn.stable()


def _getitem_key(self: NodeProxy, key: Any) -> Any:
    node = self._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return node.live[key]
    try:
        return txn.view_key(node, key)[key]
    finally:
        txn.stable()


def _len(self: NodeProxy) -> int:
    node = self._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return len(node.live)
    n = len(txn.view(node, READ_SHAPE))
    txn.stable()
    return n


def _contains(self: NodeProxy, item: Any) -> bool:
    # In a list: a scan of its values, READ_CONTENT.
    node = self._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return item in node.live
    try:
        return item in txn.view(node)
    finally:
        txn.stable()


def _contains_key(self: NodeProxy, item: Any) -> bool:
    node = self._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return item in node.live
    try:
        return item in txn.view_key(node, item)
    finally:
        txn.stable()


def _bool(self: NodeProxy) -> bool:
    node = self._self_node
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        return bool(node.live)
    b = bool(txn.view(node, READ_SHAPE))
    txn.stable()
    return b


def _binary(fn: Callable[[Any, Any], Any], reflected: bool, name: str) -> Callable[..., Any]:
    # Through the operator module so that reflection still happens when the other operand is a
    # proxy too (calling view.__eq__ directly would return NotImplemented and stop there).
    if reflected:

        def overlay(self: NodeProxy, other: Any) -> Any:
            return _read(self, lambda view: fn(other, view))

    else:

        def overlay(self: NodeProxy, other: Any) -> Any:
            return _read(self, lambda view: fn(view, other))

    overlay.__name__ = name
    return overlay


_UNARY = {"__getitem__": _getitem, "__len__": _len, "__contains__": _contains, "__bool__": _bool}
# Dicts and sets: item and membership reads are reads of one key.
_UNARY_KEYED = {**_UNARY, "__getitem__": _getitem_key, "__contains__": _contains_key}


def register_overlays(
    cls: type[NodeProxy],
    binary: tuple[str, ...],
    views: dict[str, type] | None = None,
    *,
    keyed: bool = False,
) -> None:
    """Gives a proxy class its transaction-aware reads.

    Toggled (installed only while a transaction body runs): the hot slot dunders wrapt serves in
    C (`[]`, `len`, `in`, `bool`), and the named read methods. `keyed` (dicts and sets): `[]`,
    `in` and `get` are reads of one key. Always installed: the binary
    operators and comparisons. Setting a binary dunder on a class costs about 550 ns (it updates
    several slots and the subclasses), against about 270 ns for a unary one and 90 ns for a
    named method, and these operators are not hot paths: they build new containers or compare
    whole ones. So they are ordinary Python methods, and the toggle stays near 5 us.
    """
    for name in binary:
        fn, reflected = BINARY_OPERATORS[name]
        setattr(cls, name, _binary(fn, reflected, name))
    attrs: dict[str, Any] = dict(_UNARY_KEYED if keyed else _UNARY)
    views = views or {}
    for name in cls._READ_METHODS:
        view_class = views.get(name)
        if view_class is not None:
            attrs[name] = _TxnView(name, view_class)
        elif keyed and name == "get":
            attrs[name] = _TxnGet(name)
        else:
            attrs[name] = _TxnRead(name)
    _txn.register_overlay(cls, attrs)
