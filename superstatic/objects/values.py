"""Storing a value into a shared node: checks, conversion to new nodes, and the wire form.

A value assigned into a shared container or object is *stored*:
- immutable values (None, bool, int, float, str, bytes, Decimal, UUID, datetime/date/time, and
  tuples / frozensets of storable values) are kept as they are;
- a proxy or shared instance of the same connection is kept as a reference (identity kept);
- a plain dict, list or set, or a plain instance of a registered class, becomes a new node
  (private to the transaction until it commits) whose contents are stored recursively; shared
  references and cycles inside the assigned value keep their identity;
- anything else raises `NotStorable` naming the path and the type, before anything is recorded.

Only exact types are accepted: a subclass (OrderedDict, defaultdict, IntEnum, a namedtuple)
would come back as its base type on every other replica, silently losing behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superstatic.objects import node as _node
from superstatic.objects import registry
from superstatic.protocol import codec as _codec
from superstatic.protocol.errors import LimitExceeded, NotStorable

if TYPE_CHECKING:
    from superstatic.objects.node import Node
    from superstatic.objects.txn import Txn

# The immutable values stored as they are (the codec encodes exactly these natively).
SCALAR_TYPES = _codec.SCALAR_TYPES
# Nesting of plain values converted in one assignment (each level is a Python stack frame).
VALUE_DEPTH_MAX = 200

_BUILTIN_BASES = (dict, list, set, tuple, frozenset, int, float, str, bytes)


class _Segment:
    """One step of a path, rendered only when an error needs it."""

    __slots__ = ("how", "what")

    def __init__(self, how: str, what: Any) -> None:
        self.how = how  # "item" | "attr" | "element" | "key"
        self.what = what

    def render(self) -> str:
        if self.how == "item":
            return f"[{self.what!r}]"
        if self.how == "attr":
            return f".{self.what}"
        if self.how == "key":
            return f" (the key {self.what!r})"
        return " (a set element)"


def item(key: Any) -> _Segment:
    return _Segment("item", key)


def attr(name: str) -> _Segment:
    return _Segment("attr", name)


ELEMENT = _Segment("element", None)


def render_path(owner: Node, segments: tuple[_Segment, ...]) -> str:
    return owner.replica.describe(owner) + "".join(s.render() for s in segments)


def store(txn: Txn, value: Any, owner: Node, segment: _Segment) -> Any:
    """The live value to put into `owner` for `value`; registers new nodes with `txn`."""
    tp = type(value)
    if tp in SCALAR_TYPES:
        return value
    existing = _node.node_of(value)
    if existing is not None:
        txn.note_ref(existing)
        return value
    converter = _Converter(txn, owner)
    live = converter.convert(value, (segment,), 0)
    if converter.created:
        txn.add_new(converter.created)
    return live


def lookup_value(value: Any) -> tuple[bool, Any]:
    """For membership-style arguments (set.discard, set.remove): (could be stored, value).
    Never creates nodes: a plain container or plain registered instance cannot be an element."""
    tp = type(value)
    if tp in SCALAR_TYPES or _node.node_of(value) is not None:
        return True, value
    if tp is tuple:
        for x in value:
            if not lookup_value(x)[0]:
                return False, value
        return True, value
    if tp is frozenset:
        return all(lookup_value(x)[0] for x in value), value
    hash(value)  # a plain list/dict/set raises TypeError here, exactly like the real set would
    return False, value


class _Converter:
    __slots__ = ("created", "memo", "owner", "txn")

    def __init__(self, txn: Txn, owner: Node) -> None:
        self.txn = txn
        self.owner = owner
        # Shared with the whole transaction: identity holds across assignments, not only
        # inside one assigned value.
        self.memo = txn.stored
        self.created: list[Node] = []

    def fail(self, path: tuple[_Segment, ...], value: Any, reason: str = "") -> NotStorable:
        return NotStorable(render_path(self.owner, path), type(value).__qualname__, reason)

    def convert(self, value: Any, path: tuple[_Segment, ...], depth: int) -> Any:
        tp = type(value)
        if tp in SCALAR_TYPES:
            return value
        if depth >= VALUE_DEPTH_MAX:
            raise LimitExceeded(
                "VALUE_DEPTH_MAX", VALUE_DEPTH_MAX, depth + 1, "nesting of the stored value"
            )
        if tp is tuple:
            return tuple(self.convert(x, (*path, item(i)), depth + 1) for i, x in enumerate(value))
        if tp is frozenset:
            return frozenset(self.convert(x, (*path, ELEMENT), depth + 1) for x in value)
        existing = _node.node_of(value)
        if existing is not None:
            self.txn.note_ref(existing)
            return value
        seen = self.memo.get(id(value))
        if seen is not None:
            return seen[1]
        if tp is dict:
            node = self._new(value, "dict", None)
            for k, v in value.items():
                key = self.convert(k, (*path, _Segment("key", k)), depth + 1)
                node.live[key] = self.convert(v, (*path, item(k)), depth + 1)
            return node.ref
        if tp is list:
            node = self._new(value, "list", None)
            node.live.extend(
                self.convert(x, (*path, item(i)), depth + 1) for i, x in enumerate(value)
            )
            return node.ref
        if tp is set:
            node = self._new(value, "set", None)
            node.live.update(self.convert(x, (*path, ELEMENT), depth + 1) for x in value)
            return node.ref
        class_name = registry.registered_name(tp)
        if class_name is not None:
            node = self._new(value, "obj", class_name)
            for name, v in vars(value).items():
                if not isinstance(name, str):
                    raise self.fail((*path, attr(repr(name))), name, "attribute names are str")
                node.live[name] = self.convert(v, (*path, attr(name)), depth + 1)
            return node.ref
        raise self.fail(path, value, _reason(tp))

    def _new(self, value: Any, kind: str, class_name: str | None) -> Node:
        session = self.txn.session
        node = self.txn.replica.new_node(session.new_oid(), kind, class_name, self.txn)
        self.memo[id(value)] = (value, node.ref)
        self.created.append(node)
        return node


def _reason(tp: type) -> str:
    for base in _BUILTIN_BASES:
        if issubclass(tp, base):
            return (
                f"it is a subclass of {base.__name__}; only the exact built-in types are "
                f"stored (convert it with {base.__name__}(...))"
            )
    if isinstance(tp, type) and hasattr(tp, "__dict__"):
        return "register its class with superstatic.register() to store its instances"
    return ""


def wire(value: Any) -> Any:
    """The codec form of a live value: proxies and shared instances become Refs."""
    tp = type(value)
    if tp in SCALAR_TYPES:
        return value
    node = _node.node_of(value)
    if node is not None:
        return _codec.Ref(node.oid)
    if tp is tuple:
        return tuple(wire(x) for x in value)
    if tp is frozenset:
        return frozenset(wire(x) for x in value)
    raise AssertionError(f"a live value of type {tp!r} was not checked when stored")
