"""Shared instances of user classes: generated subclasses, not wrapt proxies.

An attribute read through a wrapt proxy costs about 50x a plain one, so a shared object is a real
instance of a subclass generated from the user's class: `isinstance`, `repr`, methods and
attribute reads are native Python. The subclass only
- intercepts `__setattr__` / `__delattr__` (writes become ops),
- wraps the public methods of the class so that a call from outside any transaction runs as one
  serializable transaction (calls inside a transaction join it),
- gets a transaction-aware `__getattribute__` *only while a transaction body runs* in this
  process (txn.register_overlay), so reads outside transactions stay native.

The instance's `__dict__` is the node's attribute store, kept current by the replica.
"""

from __future__ import annotations

import copy as _copy
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from superstatic.objects import registry
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.node import Shared, node_get, node_of, node_peek
from superstatic.protocol.errors import Error

if TYPE_CHECKING:
    from superstatic.objects.node import Node


_NOT_FOUND: Any = object()


_obj_getattribute = object.__getattribute__
_obj_setattr = object.__setattr__
_obj_delattr = object.__delattr__


class AttrStore(MutableMapping[str, Any]):
    """An object node's contents: the instance's attributes, as a mapping.

    Never touches the instance's `__dict__`: on CPython 3.11 asking for it materializes a real
    dict and every later attribute read takes the slow path (about 15 ns instead of 2.6 ns).
    Attributes are set with object.__setattr__, which keeps the compact inline layout; the
    names are tracked here, in insertion order, because listing them would need `__dict__`.
    """

    __slots__ = ("_instance", "_names")

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._names: dict[str, None] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return _obj_getattribute(self._instance, name)

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self._names:
            return default
        return _obj_getattribute(self._instance, name)

    def __setitem__(self, name: str, value: Any) -> None:
        _obj_setattr(self._instance, name, value)
        self._names[name] = None

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        _obj_delattr(self._instance, name)
        del self._names[name]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def clear(self) -> None:
        for name in list(self._names):
            _obj_delattr(self._instance, name)
        self._names.clear()

    def copy(self) -> dict[str, Any]:
        instance = self._instance
        return {name: _obj_getattribute(instance, name) for name in self._names}

    def __repr__(self) -> str:
        return f"AttrStore({self.copy()!r})"


def attrs_of(instance: Any) -> AttrStore:
    return AttrStore(instance)


def class_for(name: str) -> type:
    generated = registry.BY_NAME.get(name)
    if generated is None:
        generated = _unknown_class(name)
    return generated


def new_instance(class_name: str) -> Any:
    cls = class_for(class_name)
    instance = object.__new__(cls)
    if cls.__superstatic_base__ is UnknownObject:
        _placeholders.setdefault(class_name, weakref.WeakSet()).add(instance)
    return instance


# Instances loaded before their class was registered in this process (a module imported after
# connect()): registering the class turns them into instances of it, in place, so references to
# them elsewhere in the replica stay the same objects.
_placeholders: dict[str, weakref.WeakSet[Any]] = {}


def _upgrade_placeholders(name: str, generated: type) -> None:
    waiting = _placeholders.pop(name, None)
    for instance in list(waiting or ()):
        object.__setattr__(instance, "__class__", generated)


def _type_lookup(tp: type, name: str) -> Any:
    for klass in tp.__mro__:
        found = klass.__dict__.get(name, _NOT_FOUND)
        if found is not _NOT_FOUND:
            return found
    return _NOT_FOUND


def _is_data_descriptor(attr: Any) -> bool:
    tp = type(attr)
    return hasattr(tp, "__set__") or hasattr(tp, "__delete__")


def _setattr(self: Any, name: str, value: Any) -> None:
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(f"cannot set the special attribute {name!r} of a shared object")
    found = _type_lookup(type(self), name)
    if found is not _NOT_FOUND and _is_data_descriptor(found):
        found.__set__(self, value)  # a property setter: its own writes are intercepted
        return
    node = node_get(self)
    txn = _txn.state.txn
    if txn is None:
        _autocommit(node, lambda: _setattr(self, name, value))
        return
    txn.check(node)
    live = _values.store(txn, value, node, _values.attr(name))
    if node_of(live) is not None and txn.view(node).get(name, _NOT_FOUND) is live:
        return  # `self.items += [...]`: the same shared reference, nothing to write
    txn.emit(node, ["set", node.oid, name, live])


def _delattr(self: Any, name: str) -> None:
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(f"cannot delete the special attribute {name!r} of a shared object")
    found = _type_lookup(type(self), name)
    if found is not _NOT_FOUND and _is_data_descriptor(found):
        found.__delete__(self)
        return
    node = node_get(self)
    txn = _txn.state.txn
    if txn is None:
        _autocommit(node, lambda: _delattr(self, name))
        return
    if name not in txn.view(node):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
    txn.emit(node, ["del", node.oid, name])


def _autocommit(node: Node, write: Callable[[], Any]) -> Any:
    session = node.replica.session
    if node.txn is not None or session is None:
        raise Error(f"object {node.oid} is not attached to a running superstatic connection")
    return session.run(write)


def _make_getattribute(base: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def __getattribute__(self: Any, name: str) -> Any:
        txn = _txn.state.txn
        if txn is None or name[:2] == "__":
            return base(self, name)
        node = node_peek(self)
        if node.replica is not txn.replica:
            return base(self, name)  # another connection's object: not part of this txn
        tp = type(self)
        found = _type_lookup(tp, name)
        if found is not _NOT_FOUND and _is_data_descriptor(found):
            return base(self, name)
        attrs = txn.view_peek(node)
        value = attrs.get(name, _NOT_FOUND)
        if value is not _NOT_FOUND:
            txn.record_read(node)
            return value
        if found is _NOT_FOUND:
            txn.record_read(node)  # the attribute's absence is state too
            raise AttributeError(f"{tp.__name__!r} object has no attribute {name!r}")
        getter = getattr(type(found), "__get__", None)
        return found if getter is None else getter(found, self, tp)

    return __getattribute__


def _wrap_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        node = node_get(self)
        txn = _txn.state.txn
        if txn is not None and txn.replica is node.replica:
            return fn(self, *args, **kwargs)
        session = node.replica.session
        if session is None or node.txn is not None:
            raise Error(f"object {node.oid} is not attached to a running superstatic connection")
        return session.run(lambda: fn(self, *args, **kwargs))

    method.__superstatic_wrapped__ = fn  # type: ignore[attr-defined]
    return method


def _copy_plain(self: Any) -> Any:
    """copy.copy of a shared object: an unshared instance of the user's class, same attributes."""
    base = type(self).__superstatic_base__
    clone = object.__new__(base)
    clone.__dict__.update(_txn.view_of(node_get(self)).items())
    return clone


def _deepcopy_plain(self: Any, memo: dict[int, Any]) -> Any:
    base = type(self).__superstatic_base__
    clone = object.__new__(base)
    memo[id(self)] = clone
    attrs = _txn.view_of(node_get(self))
    for name, value in list(attrs.items()):
        clone.__dict__[name] = _copy.deepcopy(value, memo)
    return clone


def _reduce_ex(self: Any, protocol: Any) -> Any:
    raise TypeError(
        "superstatic objects cannot be pickled (superstatic never pickles); "
        "use copy.deepcopy(obj) or superstatic.plain(obj) for an unshared copy"
    )


def _public_functions(cls: type) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(value) and not (
                inspect.isgeneratorfunction(value)
                or inspect.iscoroutinefunction(value)
                or inspect.isasyncgenfunction(value)
            ):
                found[name] = value
            else:
                found.pop(name, None)
    return found


def make_shared_class(cls: type, name: str, metaclass: type | None = None) -> type:
    """The generated subclass of `cls` whose instances are shared objects, registered as `name`."""
    if not isinstance(cls, type):
        raise TypeError(f"superstatic can only share classes, not {cls!r}")
    if "__dict__" not in dir(cls) and not any("__dict__" in vars(k) for k in cls.__mro__):
        raise TypeError(
            f"{cls.__qualname__} has __slots__ without __dict__; shared objects keep their "
            "attributes in __dict__"
        )
    if not isinstance(name, str) or not name:
        raise TypeError("the registered name must be a non-empty str")
    with registry.lock:
        existing = registry.BY_NAME.get(name)
        if existing is not None:
            if existing.__superstatic_base__ is cls:
                return existing
            raise Error(
                f"the name {name!r} is already registered for {existing.__superstatic_base__!r}; "
                "give one of the classes another name"
            )
        namespace: dict[str, Any] = {
            "__slots__": (),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__setattr__": _setattr,
            "__delattr__": _delattr,
            "__copy__": _copy_plain,
            "__deepcopy__": _deepcopy_plain,
            "__reduce_ex__": _reduce_ex,
            "__reduce__": _reduce_ex,
            "__superstatic_name__": name,
            "__superstatic_base__": cls,
        }
        for method_name, fn in _public_functions(cls).items():
            namespace[method_name] = _wrap_method(fn)
        meta = metaclass if metaclass is not None else type(cls)
        generated = meta(cls.__name__, (cls, Shared), namespace)
        registry.BY_NAME[name] = generated
        registry.SHARED_CLASSES[generated] = name
    base_getattribute = cls.__getattribute__
    _txn.register_overlay(generated, {"__getattribute__": _make_getattribute(base_getattribute)})
    if name in _placeholders:
        _txn.enable_overlay(generated)
        _upgrade_placeholders(name, generated)
    return generated


def register_plain(cls: type, name: str) -> type:
    """register(): plain instances of `cls` become shared objects when stored."""
    generated = make_shared_class(cls, name)
    with registry.lock:
        other = registry.PLAIN_TO_NAME.get(cls)
        if other is not None and other != name:
            raise Error(f"{cls.__qualname__} is already registered as {other!r}")
        registry.PLAIN_TO_NAME[cls] = name
    return generated


class UnknownObject:
    """A shared object whose class this process never registered: attributes are readable."""

    def __repr__(self) -> str:
        return f"<superstatic object of unregistered class {type(self).__superstatic_name__}>"


_UNKNOWN: dict[str, type] = {}


def _unknown_class(name: str) -> type:
    with registry.lock:
        known = _UNKNOWN.get(name)
    if known is not None:
        return known
    # Not registered under `name`, so a later register() of the real class still works for
    # objects that arrive after it; objects already loaded keep this placeholder type.
    generated = type(
        "UnknownObject",
        (UnknownObject, Shared),
        {
            "__slots__": (),
            "__setattr__": _setattr,
            "__delattr__": _delattr,
            "__reduce_ex__": _reduce_ex,
            "__reduce__": _reduce_ex,
            "__superstatic_name__": name,
            "__superstatic_base__": UnknownObject,
            "__copy__": _copy_plain,
            "__deepcopy__": _deepcopy_plain,
        },
    )
    with registry.lock:
        known = _UNKNOWN.get(name)
        if known is not None:
            return known
        _UNKNOWN[name] = generated
        registry.SHARED_CLASSES[generated] = name
    _txn.register_overlay(
        generated, {"__getattribute__": _make_getattribute(object.__getattribute__)}
    )
    return generated
