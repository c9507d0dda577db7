"""@clustered (cluster-wide singletons) and register() (classes whose instances can be shared)."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from superstatic.objects import proxy_object as _proxy_object
from superstatic.protocol.errors import Error

C = TypeVar("C", bound=type)

_metas_lock = threading.Lock()
_metas: dict[type, type] = {}


def _singleton_call(cls: Any, *args: Any, **kwargs: Any) -> Any:
    from superstatic.client import default as session_default

    if "__superstatic_name__" not in cls.__dict__:
        # A subclass of a clustered class that is not decorated itself: calling it would attach
        # to (or create and initialise) its base class's singleton.
        base = next(k for k in cls.__mro__ if "__superstatic_name__" in k.__dict__)
        raise Error(
            f"{cls.__qualname__} derives from the clustered class {base.__qualname__} but is "
            f"not decorated itself, so {cls.__qualname__}() has no singleton of its own. Call "
            f"{base.__qualname__}() for that singleton; for a separate one, put what they share "
            "in a plain base class and decorate each class with @superstatic.clustered"
        )
    return session_default.get().attach(cls, args, kwargs)


def _clustered_meta(meta: type) -> type:
    """A metaclass deriving from the user's, whose call returns the singleton."""
    with _metas_lock:
        found = _metas.get(meta)
        if found is None:
            found = type(
                f"Clustered{meta.__name__.capitalize()}", (meta,), {"__call__": _singleton_call}
            )
            _metas[meta] = found
        return found


def default_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@overload
def clustered(cls: C, /) -> C: ...
@overload
def clustered(*, name: str | None = None) -> Callable[[C], C]: ...
def clustered(cls: Any = None, /, *, name: str | None = None) -> Any:
    """Marks a class as a cluster-wide singleton: `Cls()` attaches to the one shared instance,
    creating it (running `__init__` once per cluster, ever) if it does not exist yet. Its public
    methods run as transactions. The name defaults to `module.QualName`."""

    def apply(target: type) -> type:
        return _proxy_object.make_shared_class(
            target, name or default_name(target), metaclass=_clustered_meta(type(target))
        )

    return apply if cls is None else apply(cls)


@overload
def register(cls: C, /, name: str | None = None) -> C: ...
@overload
def register(cls: None = None, /, name: str | None = None) -> Callable[[C], C]: ...
def register(cls: Any = None, /, name: str | None = None) -> Any:
    """Registers a class whose plain instances become shared objects (with identity) when stored
    in a shared container or object; or an Enum, whose members become storable values. Returns
    the class unchanged; usable as a decorator."""

    def apply(target: type) -> type:
        if isinstance(target, type) and issubclass(target, enum.Enum):
            _proxy_object.register_enum(target, name or default_name(target))
        else:
            _proxy_object.register_plain(target, name or default_name(target))
        return target

    return apply if cls is None else apply(cls)
