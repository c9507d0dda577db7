"""Shared instances of user classes: generated subclasses, not wrapt proxies.

An attribute read through a wrapt proxy costs about 50x a plain one, so a shared object is a real
instance of a subclass generated from the user's class: `isinstance`, `repr`, methods and
attribute reads are native Python. The subclass only
- intercepts `__setattr__` / `__delattr__` (writes become ops; a property's setter runs as one
  transaction), and `__dict__` / `vars()` (a mapping over the node, whose writes are ops too),
- wraps the public methods of the class so that a call from outside any transaction runs as one
  serializable transaction (calls inside a transaction join it),
- gets a transaction-aware `__getattribute__` *only while a transaction body runs* in this
  process (txn.register_overlay), so reads outside transactions stay native,
- guards class-level mutable defaults (`items = []` on the class), which belong to no shared
  object: reading them works, mutating them through an instance is refused,
- compares equal to an equal plain instance when the user's class defines `__eq__` (a
  dataclass's `__eq__` requires the exact same class).

The instance's attributes are the node's attribute store (`AttrStore`), kept current by the
replica without running user code: an attribute that the class now serves through a data
descriptor (a stored field turned into a property, schema evolution) is kept in the instance's
own dict, never handed to the property.
"""

from __future__ import annotations

import collections
import copy as _copy
import dataclasses
import enum
import functools
import gc
import inspect
import types
import weakref
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import wrapt

from superstatic.objects import registry
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.node import Shared, node_get, node_of, node_peek
from superstatic.protocol import codec as _codec
from superstatic.protocol.errors import Error, NotStorable
from superstatic.protocol.ops import READ_CONTENT, READ_SHAPE

if TYPE_CHECKING:
    from superstatic.objects.node import Node


_NOT_FOUND: Any = object()
_current = _txn.current

_obj_getattribute = object.__getattribute__
_obj_setattr = object.__setattr__
_obj_delattr = object.__delattr__


# ---------------------------------------------------------------------------------- attributes


class AttrStore(MutableMapping[str, Any]):
    """An object node's contents: the instance's attributes, as a mapping.

    Never touches the instance's `__dict__` for ordinary attributes: on CPython 3.11 asking for
    it materializes a real dict and every later attribute read takes the slow path (about 15 ns
    instead of 2.6 ns). Attributes are set with object.__setattr__, which keeps the compact
    inline layout; the names are tracked here, in insertion order, because listing them would
    need `__dict__`. Names the class serves through a data descriptor (`shadowed`: a property,
    say) are kept in the instance dict directly, so the replica never calls the descriptor.
    """

    __slots__ = ("_instance", "_names", "shadowed")

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._names: dict[str, None] = {}
        self.shadowed: frozenset[str] = _shadowed_names(type(instance))

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name in self.shadowed:
            return _raw_dict(self._instance)[name]
        return _obj_getattribute(self._instance, name)

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self._names:
            return default
        if name in self.shadowed:
            return _raw_dict(self._instance)[name]
        return _obj_getattribute(self._instance, name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name in self.shadowed:
            _raw_dict(self._instance)[name] = value
        else:
            _obj_setattr(self._instance, name, value)
        self._names[name] = None

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        if name in self.shadowed:
            del _raw_dict(self._instance)[name]
        else:
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
            del self[name]

    def copy(self) -> dict[str, Any]:
        return {name: self[name] for name in self._names}

    def __repr__(self) -> str:
        return f"AttrStore({self.copy()!r})"


def attrs_of(instance: Any) -> AttrStore:
    return AttrStore(instance)


def _shadowed_names(cls: type) -> frozenset[str]:
    """Attribute names `cls` serves through data descriptors (properties, getset descriptors),
    which object.__setattr__ / getattr would hand to user code."""
    found = getattr(cls, "__superstatic_shadowed__", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    names = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if not name.startswith("__") and _is_data_descriptor(value):
                names.add(name)
    return frozenset(names)


_REAL_DICTS: dict[type, Any] = {}


def _raw_dict(instance: Any) -> dict[str, Any]:
    """The instance's real __dict__ (the generated class serves `__dict__` as SharedVars)."""
    cls = type(instance)
    getter = _REAL_DICTS.get(cls)
    if getter is None:
        for klass in cls.__mro__:
            found = vars(klass).get("__dict__")
            if type(found) is types.GetSetDescriptorType:
                getter = found
                break
        assert getter is not None, f"{cls!r} instances have no __dict__"
        _REAL_DICTS[cls] = getter
    return getter.__get__(instance)  # type: ignore[no-any-return]


class SharedVars(MutableMapping[str, Any]):
    """`obj.__dict__` / `vars(obj)` of a shared object: its stored attributes. Reads see what
    the running transaction sees; writes are the object's writes (ops), bypassing properties as
    writing a plain instance's __dict__ does; `update()` is one transaction."""

    __slots__ = ("_instance",)

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def _view(self, flags: int = READ_CONTENT) -> Any:
        node = node_get(self._instance)
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return _txn.held_live(node), None
        return txn.view(node, flags), txn

    def _view_key(self, name: Any) -> Any:
        node = node_get(self._instance)
        txn = _current()
        if txn is None or node.replica is not txn.replica:
            return _txn.held_live(node), None
        return txn.view_key(node, name), txn

    def __getitem__(self, name: str) -> Any:
        view, txn = self._view_key(name)
        try:
            return view[name]
        finally:
            if txn is not None:
                txn.stable()

    def __setitem__(self, name: str, value: Any) -> None:
        _write_attr(self._instance, name, value)

    def __delitem__(self, name: str) -> None:
        _delete_attr(self._instance, name, KeyError)

    def __iter__(self) -> Iterator[str]:
        view, txn = self._view(READ_SHAPE)
        names = list(view)
        if txn is not None:
            txn.stable()
        return iter(names)

    def __len__(self) -> int:
        view, txn = self._view(READ_SHAPE)
        n = len(view)
        if txn is not None:
            txn.stable()
        return n

    def __contains__(self, name: object) -> bool:
        view, txn = self._view_key(name)
        found = name in view
        if txn is not None:
            txn.stable()
        return found

    def update(self, *args: Any, **kwargs: Any) -> None:
        node = node_get(self._instance)
        if _current() is None:
            _autocommit(node, lambda: MutableMapping.update(self, *args, **kwargs))
        else:
            MutableMapping.update(self, *args, **kwargs)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _shared_vars(self: Any) -> SharedVars:
    return SharedVars(self)


# ---------------------------------------------------------------------------------- classes


def class_for(name: str) -> type:
    generated = registry.BY_NAME.get(name)
    if generated is None:
        generated = _unknown_class(name)
    return generated


def new_instance(class_name: str) -> Any:
    """A bare instance of the class registered as `class_name`: no __new__, no __init__ (the
    replica fills its attributes from the log)."""
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
    shadowed = _shadowed_names(generated)
    for instance in list(waiting or ()):
        node = node_peek(instance)
        with node.replica.lock:
            # Attributes the new class shadows with a descriptor move to the instance dict, where
            # AttrStore keeps such names (reading them natively now would run the descriptor).
            moved = {n: _obj_getattribute(instance, n) for n in node.live if n in shadowed}
            object.__setattr__(instance, "__class__", generated)
            node.live.shadowed = shadowed
            raw = _raw_dict(instance)
            raw.update(moved)


def _type_lookup(tp: type, name: str) -> Any:
    for klass in tp.__mro__:
        found = klass.__dict__.get(name, _NOT_FOUND)
        if found is not _NOT_FOUND:
            return found
    return _NOT_FOUND


def _is_data_descriptor(attr: Any) -> bool:
    tp = type(attr)
    return hasattr(tp, "__set__") or hasattr(tp, "__delete__")


def _refuse_special(name: Any, what: str) -> None:
    if type(name) is not str:
        raise TypeError(f"attribute name must be string, not '{type(name).__name__}'")
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(
            f"cannot {what} the special attribute {name!r} of a shared object: superstatic "
            "stores only ordinary attributes"
        )


def _setattr(self: Any, name: str, value: Any) -> None:
    _refuse_special(name, "set")
    tp = type(self)
    if tp.__superstatic_frozen__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    found = _type_lookup(tp, name)
    if found is not _NOT_FOUND and _is_data_descriptor(found):
        # A property setter writes other attributes: all of them, or none, commit (one
        # transaction), as a method's writes do.
        if _current() is None:
            _autocommit(node_get(self), lambda: found.__set__(self, value))
        else:
            found.__set__(self, value)
        return
    _write_attr(self, name, value)


def _write_attr(self: Any, name: str, value: Any) -> None:
    """Sets the node's attribute `name` itself (no descriptor involved)."""
    _refuse_special(name, "set")
    node = node_get(self)
    txn = _current()
    if txn is None:
        _autocommit(node, lambda: _write_attr(self, name, value))
        return
    txn.check(node)
    problem = _values.scalar_problem(name)
    if problem is not None:
        raise NotStorable(node.replica.describe(node), "str", f"an attribute name: {problem}")
    live = _values.store(txn, value, node, _values.attr(name))
    if node_of(live) is not None:
        same = txn.view_key(node, name).get(name, _NOT_FOUND) is live
        txn.stable()
        if same:
            return  # `self.items += [...]`: the same shared reference, nothing to write
    txn.emit(node, ["set", node.oid, name, live])


def _delattr(self: Any, name: str) -> None:
    _refuse_special(name, "delete")
    tp = type(self)
    if tp.__superstatic_frozen__:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    found = _type_lookup(tp, name)
    if found is not _NOT_FOUND and _is_data_descriptor(found):
        if _current() is None:
            _autocommit(node_get(self), lambda: found.__delete__(self))
        else:
            found.__delete__(self)
        return
    _delete_attr(self, name, AttributeError)


def _delete_attr(self: Any, name: str, missing: type[Exception]) -> None:
    node = node_get(self)
    txn = _current()
    if txn is None:
        _autocommit(node, lambda: _delete_attr(self, name, missing))
        return
    present = name in txn.view_key(node, name)
    txn.stable()
    if not present:
        if missing is KeyError:
            raise KeyError(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
    txn.emit(node, ["del", node.oid, name])


def _autocommit(node: Node, write: Callable[[], Any]) -> Any:
    session = node.replica.session
    if node.txn is not None or session is None:
        raise Error(f"object {node.oid} is not attached to a running superstatic connection")
    return session.run(write)


def _make_getattribute(base: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def __getattribute__(self: Any, name: str) -> Any:
        txn = _current()
        if txn is None or name[:2] == "__":
            return base(self, name)
        node = node_peek(self)
        if node.replica is not txn.replica:
            return base(self, name)  # another connection's object: not part of this txn
        tp = type(self)
        found = _type_lookup(tp, name)
        if found is not _NOT_FOUND:
            ftype = type(found)
            if hasattr(ftype, "__set__") or hasattr(ftype, "__delete__"):
                return base(self, name)  # a property: its getter's reads come back here
            # A method (or classmethod, staticmethod): code, not state; looking it up reads
            # nothing of the object unless an instance attribute shadows it.
            method_like = hasattr(ftype, "__get__") and ftype is not _ClassDefault
            if method_like and name not in txn.view_peek(node):
                return found.__get__(self, tp)
        # A read of the one attribute, present or not (absent: a class default or an
        # AttributeError, which a concurrent write of it changes).
        attrs = txn.view_key(node, name)
        try:
            value = attrs.get(name, _NOT_FOUND)
        finally:
            txn.stable()
        if value is not _NOT_FOUND:
            return value
        if found is _NOT_FOUND:
            raise AttributeError(f"{tp.__name__!r} object has no attribute {name!r}")
        # A class-level default read through the object (issue 10 row 1): the read is recorded
        # (the attribute's absence is the object's state), so `self.hits += 1` on a default
        # conflicts with a concurrent writer of the object instead of overwriting it blindly.
        getter = getattr(type(found), "__get__", None)
        return found if getter is None else getter(found, self, tp)

    return __getattribute__


def _wrap_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        node = node_get(self)
        txn = _current()
        if txn is not None and txn.replica is node.replica:
            return fn(self, *args, **kwargs)
        session = node.replica.session
        if session is None or node.txn is not None:
            raise Error(f"object {node.oid} is not attached to a running superstatic connection")
        return session.run(lambda: fn(self, *args, **kwargs))

    method.__superstatic_wrapped__ = fn  # type: ignore[attr-defined]
    return method


def _plain_copy_of(self: Any) -> Any:
    """An unshared instance of the user's class with the same attributes (shallow)."""
    base = type(self).__superstatic_base__
    clone = object.__new__(base)
    node = node_get(self)
    txn = _current()
    if txn is None or node.replica is not txn.replica:
        items = list(_txn.held_live(node).items())
    else:
        items = list(txn.view(node).items())
        txn.stable()
    clone.__dict__.update(items)
    return clone


def _copy_plain(self: Any) -> Any:
    """copy.copy of a shared object: an unshared instance of the user's class, same attributes."""
    return _plain_copy_of(self)


def _deepcopy_plain(self: Any, memo: dict[int, Any]) -> Any:
    base = type(self).__superstatic_base__
    clone = object.__new__(base)
    memo[id(self)] = clone
    for name, value in _plain_copy_of(self).__dict__.items():
        clone.__dict__[name] = _copy.deepcopy(value, memo)
    return clone


def _reduce_ex(self: Any, protocol: Any) -> Any:
    raise TypeError(
        "superstatic objects cannot be pickled (superstatic never pickles); "
        "use copy.deepcopy(obj) or superstatic.plain(obj) for an unshared copy"
    )


def _make_comparison(user: Callable[[Any, Any], Any], base: type) -> Callable[[Any, Any], Any]:
    """The user's __eq__ / __lt__ / ..., also against plain instances: a dataclass's methods
    compare only instances of the very same class, which a shared instance (of the generated
    subclass) and a plain one are not. The shared side is compared as a plain copy."""

    def compare(self: Any, other: Any) -> Any:
        if type(other) is base:
            return user(_plain_copy_of(self), other)
        return user(self, other)

    compare.__name__ = user.__name__
    return compare


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


def _plain_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    # Calling the shared class of a register()ed class (`type(p)(...)`, dataclasses.replace)
    # makes a plain instance, as calling the user's class does; it becomes shared when stored.
    return cls.__superstatic_base__(*args, **kwargs)  # type: ignore[attr-defined]


# Mutable container types whose class-level defaults are guarded (see _ClassDefault).
_MUTABLE_DEFAULTS = (list, dict, set, bytearray, collections.deque)


def _class_defaults(cls: type) -> dict[str, Any]:
    """Class-level mutable containers an instance would read as its own attribute."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("__"):
                continue
            if type(value) in _MUTABLE_DEFAULTS:
                found[name] = value
            else:
                found.pop(name, None)
    return found


def _check_class(cls: type, name: str) -> None:
    """Refuses, with what to do instead, classes whose instances cannot be shared faithfully."""
    what = cls.__qualname__
    if not isinstance(cls, type):
        raise Error(f"superstatic shares instances of classes; {cls!r} is not a class")
    if issubclass(cls, Shared):
        raise Error(
            f"{what} derives from a shared class ({cls.__mro__[1].__qualname__} is @clustered or "
            "registered): a shared class cannot derive from another one. Put what they share in "
            "a plain base class and decorate each subclass"
        )
    if issubclass(cls, enum.Enum):
        raise Error(
            f"{what} is an Enum: its members are values, not objects with identity. Register "
            f"it with superstatic.register({what}) to store its members"
        )
    for klass in cls.__mro__[:-1]:
        if not klass.__flags__ & (1 << 9):  # Py_TPFLAGS_HEAPTYPE: a built-in type
            raise Error(
                f"{what} derives from the built-in {klass.__qualname__}; superstatic shares "
                f"instances of plain classes. Store a {klass.__qualname__} in an attribute "
                f"instead (or use superstatic.root(name, {klass.__qualname__}) for a shared "
                "dict, list or set)"
            )
        slots = vars(klass).get("__slots__")
        if slots is not None:
            names = [slots] if isinstance(slots, str) else list(slots)
            if any(n not in ("__dict__", "__weakref__") for n in names):
                raise Error(
                    f"{what} uses __slots__ (in {klass.__qualname__}); a shared object keeps its "
                    "attributes in its node, so slots would not be replicated. Remove __slots__"
                )
    for method in ("__setattr__", "__delattr__"):
        user = getattr(cls, method)
        if user is getattr(object, method):
            continue
        params = getattr(cls, "__dataclass_params__", None)
        if params is not None and params.frozen:
            continue  # a frozen dataclass: refused assignments are reproduced, see _setattr
        raise Error(
            f"{what} defines {method}: superstatic intercepts attribute writes itself, and writes "
            f"that {method} makes through object.{method} would never be replicated. Validate in "
            "a property setter or a method instead"
        )


def make_shared_class(cls: type, name: str, metaclass: type | None = None) -> type:
    """The generated subclass of `cls` whose instances are shared objects, registered as `name`."""
    if not isinstance(name, str) or not name:
        raise Error(f"the registered name of {cls!r} must be a non-empty str, not {name!r}")
    with registry.lock:
        existing = registry.BY_NAME.get(name)
        if existing is not None:
            if existing.__superstatic_base__ is cls:
                return existing
            raise Error(
                f"the name {name!r} is already registered for {existing.__superstatic_base__!r}; "
                "give one of the classes another name"
            )
    _check_class(cls, name)
    params = getattr(cls, "__dataclass_params__", None)
    frozen = bool(params is not None and params.frozen)
    identity_eq = cls.__eq__ is object.__eq__ and cls.__hash__ is object.__hash__
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "__setattr__": _setattr,
        "__delattr__": _delattr,
        "__dict__": property(_shared_vars),
        "__copy__": _copy_plain,
        "__deepcopy__": _deepcopy_plain,
        "__reduce_ex__": _reduce_ex,
        "__reduce__": _reduce_ex,
        "__superstatic_name__": name,
        "__superstatic_base__": cls,
        "__superstatic_frozen__": frozen,
        "__superstatic_identity_eq__": identity_eq,
    }
    if metaclass is None:
        namespace["__new__"] = _plain_new
    for op in ("__eq__", "__lt__", "__le__", "__gt__", "__ge__"):
        user = getattr(cls, op)
        if user is not getattr(object, op):
            namespace[op] = _make_comparison(user, cls)
    if "__eq__" in namespace:
        namespace["__hash__"] = cls.__hash__  # defining __eq__ would otherwise unset it
    for attr_name, value in _class_defaults(cls).items():
        namespace[attr_name] = _ClassDefault(cls.__qualname__, attr_name, value)
    for method_name, fn in _public_functions(cls).items():
        namespace[method_name] = _wrap_method(fn)
    meta = metaclass if metaclass is not None else type(cls)
    with registry.lock:
        existing = registry.BY_NAME.get(name)
        if existing is not None:  # registered by another thread meanwhile
            if existing.__superstatic_base__ is cls:
                return existing
            raise Error(f"the name {name!r} is already registered for another class")
        generated = meta(cls.__name__, (cls, Shared), namespace)
        generated.__superstatic_shadowed__ = _shadowed_names(generated)
        if "__parameters__" in vars(cls):
            # A Generic class: typing's __init_subclass__ made the subclass non-generic; keep
            # the user's parameters so `Repo[int]()` still works.
            generated.__parameters__ = cls.__parameters__
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
    with registry.lock:
        other = registry.PLAIN_TO_NAME.get(cls)
    if other is not None and other != name:
        raise Error(f"{cls.__qualname__} is already registered as {other!r}")
    generated = make_shared_class(cls, name)
    with registry.lock:
        registry.PLAIN_TO_NAME[cls] = name
    return generated


def register_enum(cls: type[enum.Enum], name: str) -> None:
    """register() of an Enum: its members become storable values (tag 55811)."""
    if issubclass(cls, int):
        kind = _codec.ENUM_BY_INT
    elif issubclass(cls, str):
        kind = _codec.ENUM_BY_STR
    elif issubclass(cls, enum.Flag):
        kind = _codec.ENUM_FLAG
    elif cls._member_type_ is object:
        kind = _codec.ENUM_BY_NAME
    else:
        raise Error(
            f"{cls.__qualname__} mixes {cls._member_type_.__qualname__} into an Enum; storable "
            "enums are plain Enum, IntEnum/IntFlag (int), StrEnum (str) and Flag"
        )
    if kind in (_codec.ENUM_BY_INT, _codec.ENUM_FLAG):
        bad = [m for m in cls if type(m.value) is not int]
        if bad:
            raise Error(f"{cls.__qualname__}.{bad[0].name} has a non-int value; cannot store it")
    composable = issubclass(cls, enum.Flag) and (
        getattr(cls._missing_, "__func__", None) is enum.Flag._missing_.__func__  # type: ignore[attr-defined]
    )
    with registry.lock:
        existing = registry.ENUM_BY_NAME.get(name)
        if existing is not None and existing is not cls:
            raise Error(
                f"the name {name!r} is already registered for {existing!r}; give one of the "
                "enums another name"
            )
        other = registry.ENUM_NAMES.get(cls)
        if other is not None and other != name:
            raise Error(f"{cls.__qualname__} is already registered as {other!r}")
        if name in registry.BY_NAME:
            raise Error(f"the name {name!r} is already registered for a class")
        registry.ENUM_NAMES[cls] = name
        registry.ENUM_BY_NAME[name] = cls
        registry.ENUM_KINDS[cls] = kind
        registry.ENUM_COMPOSABLE[cls] = composable


def adopt_constructor_writes(txn: _txn.Txn, instance: Any, node: Node) -> None:
    """After a constructor ran on a new shared instance: attributes it set with
    object.__setattr__ (a frozen dataclass's __init__ does) bypassed the node; store them now,
    so they are replicated (and converted) like any other write."""
    store: AttrStore = node.live
    cls = type(instance)
    names: list[str] = [
        name for name in getattr(cls, "__dataclass_fields__", None) or () if name not in store
    ]
    # The instance's referents: its attribute values, its type and its node (the Shared slot).
    referents = [r for r in gc.get_referents(instance) if r is not cls and r is not node]
    held = len(referents)
    if any(type(r) is dict for r in referents) or held > len(store) + len(names):
        # Something else was set natively. Listing names needs the real __dict__ (slower reads
        # for this one instance; only constructors that bypass attribute assignment pay it).
        names.extend(n for n in _raw_dict(instance) if n not in store and n not in names)
    for name in names:
        try:
            value = _obj_getattribute(instance, name)
        except AttributeError:
            continue  # a field without a value (init=False, no default)
        live = _values.store(txn, value, node, _values.attr(name))
        txn.emit(node, ["set", node.oid, name, live])


class _ClassDefault:
    """A class-level mutable default (`items = []` in the class body) read through a shared
    instance. It belongs to the class in this process, not to any shared object, so mutating it
    through an instance would change it here only and never reach the cluster (issue 10 row 3):
    reading works, mutating it is refused with what to do. A non-data descriptor, so an
    attribute the object stores itself wins, natively."""

    __slots__ = ("cls_name", "name", "value")

    def __init__(self, cls_name: str, name: str, value: Any) -> None:
        self.cls_name = cls_name
        self.name = name
        self.value = value

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.value  # through the class itself: the plain class attribute
        return _ReadOnlyDefault(self.value, f"{self.cls_name}.{self.name}", self.name)


_DEFAULT_MUTATORS = (
    "append",
    "appendleft",
    "extend",
    "extendleft",
    "insert",
    "pop",
    "popleft",
    "popitem",
    "remove",
    "rotate",
    "clear",
    "sort",
    "reverse",
    "setdefault",
    "update",
    "add",
    "discard",
    "intersection_update",
    "difference_update",
    "symmetric_difference_update",
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "__ior__",
    "__iand__",
    "__isub__",
    "__ixor__",
)


class _ReadOnlyDefault(wrapt.ObjectProxy):  # type: ignore[misc]
    def __init__(self, wrapped: Any, where: str, name: str) -> None:
        super().__init__(wrapped)
        self._self_where = where
        self._self_name = name

    def _self_refuse(self, operation: str) -> Error:
        kind = type(self.__wrapped__).__name__
        return Error(
            f"{self._self_where} is a class-level {kind} default, not part of this shared "
            f"object: {operation}() on it would change this process's class attribute only and "
            f"never reach the cluster. Give the object its own value first (self.{self._self_name}"
            f" = {kind}(...), in __init__ or a migration method), then change that"
        )


def _refusing(operation: str) -> Callable[..., Any]:
    def refuse(self: _ReadOnlyDefault, *args: Any, **kwargs: Any) -> Any:
        raise self._self_refuse(operation)

    refuse.__name__ = operation
    return refuse


for _op in _DEFAULT_MUTATORS:
    setattr(_ReadOnlyDefault, _op, _refusing(_op))


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
            "__dict__": property(_shared_vars),
            "__reduce_ex__": _reduce_ex,
            "__reduce__": _reduce_ex,
            "__superstatic_name__": name,
            "__superstatic_base__": UnknownObject,
            "__superstatic_frozen__": False,
            "__superstatic_identity_eq__": True,
            "__superstatic_shadowed__": frozenset(),
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
