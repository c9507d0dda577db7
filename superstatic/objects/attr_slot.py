"""Setting a proxy class's attribute slot (`tp_getattro`) to CPython's generic lookup.

Why (docs/library.md, "Reads"): every subclass of wrapt's C proxy gets CPython's `__getattr__`
hook as its `tp_getattro` (wrapt's C type defines a `__getattr__` method), and CPython 3.11 takes
its fast attribute paths only for a type whose slot *is* `PyObject_GenericGetAttr` (a pointer
comparison in `_PyObject_GetMethod`, behind every `p.get(...)`, and in the specializer). wrapt's
own C `tp_getattro` is no better: it finds its module state by walking the MRO and proxies
`__module__`/`__doc__` on every lookup (measured ~1 ns faster than the hook, against ~5 ns for the
generic slot). Without a compiler the only way to give a class that slot is to write the
pointer into its type object, which is what this module does, refusing on any doubt.

What it writes, per class: `tp_getattro` (the generic lookup: no `__getattr__` fallback, so the
caller, proxy_base, gives the class what makes a fallback unnecessary) and `tp_name` (the name
CPython's own messages use, e.g. "'dict' object has no attribute 'x'"; `__name__` and
`__qualname__` are separate objects and stay). The name written is the plain type's own
`tp_name` pointer: a static type's, a C string in the interpreter's image, so it lives as long
as the process (a buffer owned by a Python object did not: review 26). Then `PyType_Modified`.
Refused (nothing written, a debug log line saying why) unless: the interpreter is CPython of a
validated version, not a debug or trace-refs build, 64-bit; the type object's size is the one
validated; `object`'s slot read at the computed offset is the address of
`PyObject_GenericGetAttr` and its name reads "object" (and the same for `dict`); the class's
slot is the `__getattr__` hook (compared with a probe class's) and its name reads its
`__name__`. CPython recomputes the slot itself whenever a class (or a subclass) later gets
`__getattr__` or `__getattribute__` assigned, and a new subclass gets the hook as usual, so a
later Python override is still honoured.

`SUPERSTATIC_PROXY_FAST_GETATTR=0` in the environment turns it off (read at import).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Any

log = logging.getLogger("superstatic.objects.attr_slot")

ENV_FAST_GETATTR = "SUPERSTATIC_PROXY_FAST_GETATTR"

# CPython versions whose PyTypeObject layout was checked (Include/cpython/object.h), with
# sizeof(PyHeapTypeObject) (`type.__basicsize__`) there: 3.11.7 on x86-64 measured 904.
_VALIDATED_TYPE_SIZE = {(3, 11): 904}
# Offsets in PyTypeObject (64-bit, no Py_TRACE_REFS): PyObject_VAR_HEAD is 24 bytes.
_TP_NAME_OFFSET = 24
_TP_GETATTRO_OFFSET = 144
_OBJECT_HEAD_SIZE = 16

_Py_TPFLAGS_HEAPTYPE = 1 << 9


class _HookProbe:
    """A class whose slot CPython sets to its `__getattr__` hook (`slot_tp_getattr_hook`)."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _address(fn: Any) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


def _slot(cls: type) -> ctypes.c_void_p:
    return ctypes.c_void_p.from_address(id(cls) + _TP_GETATTRO_OFFSET)


def _name_field(cls: type) -> ctypes.c_char_p:
    return ctypes.c_char_p.from_address(id(cls) + _TP_NAME_OFFSET)


def getattro_of(cls: type) -> int:
    """The address in `cls`'s `tp_getattro` (tests check which lookup a class has)."""
    if layout_refusal() is not None:
        raise RuntimeError("the type layout is not validated in this interpreter")
    return _slot(cls).value or 0


def generic_getattr_address() -> int:
    return _address(ctypes.pythonapi.PyObject_GenericGetAttr)


def hook_address() -> int:
    """Where CPython's `__getattr__` hook is (read from a probe class)."""
    return getattro_of(_HookProbe)


def refusal() -> str | None:
    """Why the slot cannot be written in this interpreter, or None if it can."""
    if os.environ.get(ENV_FAST_GETATTR, "1").strip() == "0":
        return f"turned off by {ENV_FAST_GETATTR}=0"
    return layout_refusal()


def layout_refusal() -> str | None:
    """Why the type layout is not the validated one (None: it is)."""
    if sys.implementation.name != "cpython":
        return "not CPython"
    size = _VALIDATED_TYPE_SIZE.get(sys.version_info[:2])
    if size is None:
        return "CPython version not validated"
    if hasattr(sys, "gettotalrefcount"):
        return "a debug build of CPython"
    if ctypes.sizeof(ctypes.c_void_p) != 8 or object.__basicsize__ != _OBJECT_HEAD_SIZE:
        return "object header layout not the validated one"
    if type.__basicsize__ != size:
        return "type object size not the validated one"
    generic = generic_getattr_address()
    for known, name in ((object, b"object"), (dict, b"dict")):
        if _slot(known).value != generic or _name_field(known).value != name:
            return "type object fields not where expected"
    hook = _slot(_HookProbe).value
    if not hook or hook == generic or _name_field(_HookProbe).value != b"_HookProbe":
        return "the __getattr__ hook not where expected"
    return None


def adopt_generic_getattr(cls: type, named_as: type) -> bool:
    """Gives `cls` the generic attribute slot and the C name of `named_as` (a static type:
    dict, list, set); False (nothing written) if anything is not as validated. The caller
    guarantees the semantics (the class must resolve every name its `__getattr__` would
    answer, and `__getattribute__` must be `object.__getattribute__`)."""
    why = refusal()
    if why is None:
        why = _class_refusal(cls) or _name_refusal(named_as)
    if why is not None:
        log.debug("attribute slot of %s left as it is: %s", cls.__qualname__, why)
        return False
    _write_name(cls, named_as)
    _slot(cls).value = generic_getattr_address()
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))
    if _slot(cls).value != generic_getattr_address():
        raise RuntimeError(f"writing the attribute slot of {cls.__qualname__} did not stick")
    return True


def rename(cls: type, named_as: type) -> bool:
    """Sets only `cls`'s C name (tp_name) to `named_as`'s, checked as above; False (nothing
    written) if refused."""
    why = refusal()
    if why is None and _name_field(cls).value != cls.__name__.encode("utf-8"):
        why = "tp_name does not read the class's name"
    if why is None:
        why = _name_refusal(named_as)
    if why is not None:
        log.debug("C name of %s left as it is: %s", cls.__qualname__, why)
        return False
    _write_name(cls, named_as)
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))
    return True


def _write_name(cls: type, named_as: type) -> None:
    # One pointer write, of a pointer to static storage (see _name_refusal): nothing Python
    # owns, which a module's globals cleared at shutdown or a reload of this module would free.
    address = ctypes.c_void_p.from_address(id(named_as) + _TP_NAME_OFFSET).value
    ctypes.c_void_p.from_address(id(cls) + _TP_NAME_OFFSET).value = address


def _name_refusal(named_as: type) -> str | None:
    # A static (C) type's tp_name is a string literal in the interpreter's image; a heap
    # type's lives in its own objects and goes with them.
    if not isinstance(named_as, type) or named_as.__flags__ & _Py_TPFLAGS_HEAPTYPE:
        return "the name's type is not a static type"
    if _name_field(named_as).value != named_as.__name__.encode("utf-8"):
        return "the name's type's tp_name does not read its name"
    return None


def _class_refusal(cls: type) -> str | None:
    if not isinstance(cls, type) or type(cls) is not type:
        return "not a plain class"
    if not cls.__flags__ & _Py_TPFLAGS_HEAPTYPE:  # never a static (C) type
        return "not a heap type"
    if cls.__getattribute__ is not object.__getattribute__:  # type: ignore[comparison-overlap]
        return "__getattribute__ is not object's"
    if _slot(cls).value != _slot(_HookProbe).value:
        return "its slot is not the __getattr__ hook"
    if _name_field(cls).value != cls.__name__.encode("utf-8"):
        return "tp_name does not read the class's name"
    return None
