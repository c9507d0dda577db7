"""Hollow refs: what user code holds of a node whose contents are not in this process.

A hollow node keeps its identity (the same proxy or shared instance before, during and after a
fault: docs/virtual-heap.md section 3.4), so the switch happens *inside* the ref, the way
`Replica.detach` switches the refs of a closed connection:

* a container proxy wraps a `_Hollow` (and the node's `live` is the same `_Hollow`, since the
  overlaid read paths outside transactions read `node.live`): every use of it asks the replica
  for the contents (`Replica.fault`), then repeats the operation on the real container;
* a shared instance's class is switched to a generated subclass of its class (layout
  compatible, so `isinstance` holds while hollow) whose attribute reads and writes fault, switch
  the class back and repeat.

Nothing is tested on the read path of a held node: after the fault the proxy wraps the real
container again and the instance has its own class, so reads cost what they cost before.
"""

from __future__ import annotations

import copy as _copy
import operator
from collections.abc import Callable
from typing import Any

from superstatic.objects import registry
from superstatic.objects.node import Node, node_peek
from superstatic.objects.operators import BINARY_OPERATORS

_PLAIN_TYPES: dict[str, type] = {"dict": dict, "list": list, "set": set}
_get = object.__getattribute__


def _live(stand_in: Any) -> Any:
    node: Node = _get(stand_in, "node")
    node.replica.fault(node)
    return node.live


class Hollow:
    """What a hollow container node's proxy wraps (and its `live` is)."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        object.__setattr__(self, "node", node)

    # `isinstance(proxy, dict)` asks the wrapped object's `__class__` (wrapt): answered without
    # a fault, as for a held proxy.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return _PLAIN_TYPES[_get(self, "node").kind]

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)  # wrapt and Python probing special names
        return getattr(_live(self), name)

    def __repr__(self) -> str:
        return repr(_live(self))

    def __str__(self) -> str:
        return str(_live(self))

    def __format__(self, spec: str) -> str:
        return format(_live(self), spec)

    def __copy__(self) -> Any:
        return _copy.copy(_live(self))

    def __hash__(self) -> int:
        return hash(_live(self))


def _unary(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any) -> Any:
        return fn(_live(self), *args)

    method.__name__ = name
    return method


def _binary(fn: Callable[[Any, Any], Any], reflected: bool, name: str) -> Callable[..., Any]:
    # Through the operator module, so that reflection still happens (a NotImplemented from the
    # real container's own method would otherwise be returned as the result).
    if reflected:

        def method(self: Any, other: Any) -> Any:
            return fn(other, _live(self))

    else:

        def method(self: Any, other: Any) -> Any:
            return fn(_live(self), other)

    method.__name__ = name
    return method


# Reads only: every mutator of a shared container is a Python method of the proxy (it never
# reaches the wrapped object).
for _name, _fn in {
    "__getitem__": operator.getitem,
    "__len__": len,
    "__iter__": iter,
    "__reversed__": reversed,
    "__contains__": operator.contains,
    "__bool__": bool,
}.items():
    setattr(Hollow, _name, _unary(_fn, _name))
for _name, (_fn, _reflected) in BINARY_OPERATORS.items():
    setattr(Hollow, _name, _binary(_fn, _reflected, _name))


# ---------------------------------------------------------------------------------- instances

_HOLLOW_CLASSES: dict[type, type] = {}
# generated hollow class -> the shared class it stands for.
HOLLOW_OF: dict[type, type] = {}


def hollow_class(cls: type) -> type:
    """The hollow subclass of the shared class `cls` (made once per class)."""
    found = _HOLLOW_CLASSES.get(cls)
    if found is not None:
        return found

    def fault(self: Any) -> None:
        node = node_peek(self)
        node.replica.fault(node)  # switches the class back (Replica.install)

    def read(self: Any, name: str) -> Any:
        fault(self)
        return getattr(self, name)

    def write(self: Any, name: str, value: Any) -> None:
        fault(self)
        setattr(self, name, value)

    def delete(self: Any, name: str) -> None:
        fault(self)
        delattr(self, name)

    with registry.lock:
        found = _HOLLOW_CLASSES.get(cls)
        if found is None:
            found = type(cls)(
                cls.__name__,
                (cls,),
                {
                    "__slots__": (),
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__getattribute__": read,
                    "__setattr__": write,
                    "__delattr__": delete,
                },
            )
            name = registry.SHARED_CLASSES.get(cls)
            if name is not None:
                # node_of() finds the node of a hollow instance as of any shared one.
                registry.SHARED_CLASSES[found] = name
            HOLLOW_OF[found] = cls
            _HOLLOW_CLASSES[cls] = found
    return found


def make_hollow(node: Node) -> None:
    """Switches `node`'s ref to hollow (call under the replica's lock, contents already gone
    or about to be: see Replica._hollow for the order)."""
    ref = node.ref
    if node.kind == "obj":
        cls = type(ref)
        if cls not in HOLLOW_OF:
            object.__setattr__(ref, "__class__", hollow_class(cls))
        return
    stand_in = Hollow(node)
    node.live = stand_in
    ref.__wrapped__ = stand_in
    _forget_cached_methods(ref)


def make_held(node: Node, live: Any) -> None:
    """Switches `node`'s ref back to its contents (`live`: a filled container; for a shared
    instance its attribute store, already filled)."""
    ref = node.ref
    if node.kind == "obj":
        cls = HOLLOW_OF.get(type(ref))
        if cls is not None:
            object.__setattr__(ref, "__class__", cls)
        return
    node.live = live
    ref.__wrapped__ = live
    _forget_cached_methods(ref)


def _forget_cached_methods(ref: Any) -> None:
    # Bound read methods cached in the proxy's instance dict (proxy_base) belong to the old
    # container.
    cached = ref.__self_dict__
    for name in type(ref)._READ_METHODS:
        cached.pop(name, None)


def is_hollow_instance(ref: Any) -> bool:
    return type(ref) in HOLLOW_OF
