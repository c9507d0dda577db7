"""What the dict, list and set proxies share.

A container proxy is a `wrapt.BaseObjectProxy` around the replica's real container. Reads that
Python dispatches through type slots (`p[k]`, `len(p)`, `k in p`, `==`, `bool(p)`) run in wrapt's
C code and cost close to a plain read. Named read methods (`p.get`, `p.keys`, ...) would fall back
to wrapt's `__getattr__` (about 450 ns); the first such lookup caches the real container's bound
method in the proxy's own instance dict, after which the lookup costs about 80 ns. A node's
container is fixed for the node's life, so the cache never goes stale.

While a transaction body runs anywhere in the process, `txn.register_overlay` installs Python
versions of those read methods that consult the current thread's transaction (record the node's
version, read its shadow if this transaction wrote it). Named methods are overlaid with data
descriptors so they win over the cached bound methods in the instance dict.

Every mutator is always a Python method here: it never reaches the wrapped container directly.
"""

from __future__ import annotations

import copy as _copy
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wrapt

from superstatic.objects import txn as _txn
from superstatic.objects.plain_copy import plain
from superstatic.protocol.errors import Error

if TYPE_CHECKING:
    from superstatic.objects.node import Node


class NodeProxy(wrapt.BaseObjectProxy):  # type: ignore[misc]
    """Base of DictProxy, ListProxy and SetProxy. `_self_node` is the replica node."""

    # Names of read-only methods of the wrapped type, served from the instance-dict cache
    # outside transactions and overlaid inside them. Set by each subclass.
    _READ_METHODS: frozenset[str] = frozenset()
    _self_node: Node

    def __init__(self, container: Any, node: Node) -> None:
        super().__init__(container)
        self._self_node = node

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.__wrapped__, name)
        if name in type(self)._READ_METHODS:
            self.__self_setattr__(name, attr)
        return attr

    # Not on the hot path, and wrapt's versions would show the wrapped container rather than
    # what a transaction sees, so these are always Python.
    def __iter__(self) -> Any:
        txn = _txn.state.txn
        if txn is None:
            return iter(self.__wrapped__)
        return iter(txn.view(self._self_node))

    def __reversed__(self) -> Any:
        return reversed(_txn.view_of(self._self_node))

    def __repr__(self) -> str:
        return repr(_txn.view_of(self._self_node))

    def __str__(self) -> str:
        return str(_txn.view_of(self._self_node))

    def __format__(self, spec: str) -> str:
        return format(_txn.view_of(self._self_node), spec)

    def __copy__(self) -> Any:
        # A shallow plain copy: nested shared containers stay shared, as copy.copy promises.
        return _copy.copy(_txn.view_of(self._self_node))

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
        if node.txn is not None or node.replica.session is None:
            raise Error(f"object {node.oid} is not attached to a running superstatic connection")
        return node.replica.session.run(write)


class _TxnRead:
    """Data descriptor overlaying a named read method while transactions run."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: Any, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        return getattr(_txn.view_of(proxy._self_node), self.name)

    def __set__(self, proxy: Any, value: Any) -> None:
        raise AttributeError(f"cannot replace the method {self.name!r} of a shared container")


def _getitem(self: NodeProxy, key: Any) -> Any:
    return _txn.view_of(self._self_node)[key]


def _len(self: NodeProxy) -> int:
    return len(_txn.view_of(self._self_node))


def _contains(self: NodeProxy, item: Any) -> bool:
    return item in _txn.view_of(self._self_node)


def _bool(self: NodeProxy) -> bool:
    return bool(_txn.view_of(self._self_node))


def _binary(fn: Callable[[Any, Any], Any], reflected: bool, name: str) -> Callable[..., Any]:
    # Through the operator module so that reflection still happens when the other operand is a
    # proxy too (calling view.__eq__ directly would return NotImplemented and stop there).
    if reflected:

        def overlay(self: NodeProxy, other: Any) -> Any:
            return fn(other, _txn.view_of(self._self_node))

    else:

        def overlay(self: NodeProxy, other: Any) -> Any:
            return fn(_txn.view_of(self._self_node), other)

    overlay.__name__ = name
    return overlay


_BINARY = {
    "__eq__": (operator.eq, False),
    "__ne__": (operator.ne, False),
    "__lt__": (operator.lt, False),
    "__le__": (operator.le, False),
    "__gt__": (operator.gt, False),
    "__ge__": (operator.ge, False),
    "__or__": (operator.or_, False),
    "__ror__": (operator.or_, True),
    "__and__": (operator.and_, False),
    "__rand__": (operator.and_, True),
    "__sub__": (operator.sub, False),
    "__rsub__": (operator.sub, True),
    "__xor__": (operator.xor, False),
    "__rxor__": (operator.xor, True),
    "__add__": (operator.add, False),
    "__radd__": (operator.add, True),
    "__mul__": (operator.mul, False),
    "__rmul__": (operator.mul, True),
}
_UNARY = {"__getitem__": _getitem, "__len__": _len, "__contains__": _contains, "__bool__": _bool}


def register_overlays(cls: type[NodeProxy], binary: tuple[str, ...]) -> None:
    """Gives a proxy class its transaction-aware reads.

    Toggled (installed only while a transaction body runs): the hot slot dunders wrapt serves in
    C (`[]`, `len`, `in`, `bool`), and the named read methods. Always installed: the binary
    operators and comparisons. Setting a binary dunder on a class costs about 550 ns (it updates
    several slots and the subclasses), against about 270 ns for a unary one and 90 ns for a
    named method, and these operators are not hot paths: they build new containers or compare
    whole ones. So they are ordinary Python methods, and the toggle stays near 5 us.
    """
    for name in binary:
        fn, reflected = _BINARY[name]
        setattr(cls, name, _binary(fn, reflected, name))
    attrs: dict[str, Any] = dict(_UNARY)
    for name in cls._READ_METHODS:
        attrs[name] = _TxnRead(name)
    _txn.register_overlay(cls, attrs)
