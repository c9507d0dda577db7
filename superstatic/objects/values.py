"""Storing a value into a shared node: checks, conversion to new nodes, and the wire form.

A value assigned into a shared container or object is *stored*:
- immutable values (None, bool, int, float, str, bytes, Decimal, UUID, datetime/date/time,
  timedelta, Fraction, members of registered Enums, and tuples / frozensets of storable values)
  are kept as they are;
- a proxy or shared instance of the same connection is kept as a reference (identity kept);
- a plain dict, list or set, or a plain instance of a registered class, becomes a new node
  (private to the transaction until it commits) whose contents are stored recursively; shared
  references and cycles inside the assigned value keep their identity. Storing *copies* the
  plain value as it is at the assignment (snapshot semantics): later changes to the plain value
  are not seen by the shared one. Stored again in the same transaction while unchanged, it is the
  same shared object (`d.update({"x": v, "y": v})` gives `d["x"] is d["y"]`); changed in between,
  the new assignment stores its new contents as a new object;
- anything else raises `NotStorable` naming the path and the type, before anything is recorded.
  A refused value leaves no trace in the transaction: nodes made for its parts are discarded.

Only exact types are accepted: a subclass (OrderedDict, defaultdict, a namedtuple, a str
subclass) would come back as its base type on every other replica, silently losing behaviour.
Enum members are the exception: their class is registered (`superstatic.register(Color)`).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import zoneinfo
from typing import TYPE_CHECKING, Any

from superstatic.objects import node as _node
from superstatic.objects import registry
from superstatic.protocol import codec as _codec
from superstatic.protocol import keynorm as _keynorm
from superstatic.protocol.errors import LimitExceeded, NotStorable

if TYPE_CHECKING:
    from superstatic.objects.node import Node
    from superstatic.objects.txn import Txn

# The immutable values stored as they are (the codec encodes exactly these).
SCALAR_TYPES = _codec.SCALAR_TYPES
# Scalars that need no look at their contents to be storable (str: lone surrogates cannot be
# encoded; datetime/time: only some tzinfo types are storable).
_PLAIN_SCALARS = SCALAR_TYPES - {str, datetime.datetime, datetime.time}
# Nesting of plain values converted in one assignment (each level is a Python stack frame).
VALUE_DEPTH_MAX = 200

_BUILTIN_BASES = (dict, list, set, tuple, frozenset, int, float, str, bytes)
_MISSING: Any = object()


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


def key(value: Any) -> _Segment:
    return _Segment("key", value)


ELEMENT = _Segment("element", None)


def render_path(owner: Node, segments: tuple[_Segment, ...]) -> str:
    return owner.replica.describe(owner) + "".join(s.render() for s in segments)


# ---------------------------------------------------------------------------------- scalars


def scalar_problem(value: Any) -> str | None:
    """Why a str / datetime / time cannot be stored exactly, or None if it can."""
    tp = type(value)
    if tp is str:
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return (
                "it contains a lone surrogate, which UTF-8 (and so CBOR) cannot carry; store "
                "value.encode('utf-8', 'surrogatepass') as bytes instead"
            )
        return None
    tz = value.tzinfo
    if tz is None or type(tz) is datetime.timezone:
        return None
    if type(tz) is zoneinfo.ZoneInfo:
        if not tz.key:
            return "its ZoneInfo has no key (made by ZoneInfo.from_file); use ZoneInfo(key)"
        return None
    if type(tz) is _codec.ZoneStub:
        return None
    return (
        f"its tzinfo is a {type(tz).__qualname__}; storable zones are datetime.timezone and "
        "zoneinfo.ZoneInfo (convert with value.astimezone(zoneinfo.ZoneInfo(key)))"
    )


def _ambiguous_zoned(value: Any) -> bool:
    """A zoned datetime at a DST transition (ambiguous or skipped wall time): Python compares two
    such datetimes of the same zone by wall time, ignoring fold, which the agent (comparing
    instants) cannot reproduce, so they are refused as dict keys and set elements."""
    if type(value) is not datetime.datetime or type(value.tzinfo) is not zoneinfo.ZoneInfo:
        return False
    return value.replace(fold=0).utcoffset() != value.replace(fold=1).utcoffset()


# ---------------------------------------------------------------------------------- storing


def store(txn: Txn, value: Any, owner: Node, segment: _Segment) -> Any:
    """The live value to put into `owner` for `value`; registers new nodes with `txn`. All or
    nothing: if it raises, the transaction holds nothing of the value."""
    tp = type(value)
    if tp in _PLAIN_SCALARS:
        return value
    if tp is str and value.isascii():
        return value
    existing = _node.node_of(value)
    if existing is not None:
        txn.note_ref(existing)
        return value
    return store_many(txn, owner, [(value, segment)])[0]


def store_many(txn: Txn, owner: Node, values: list[tuple[Any, _Segment]]) -> list[Any]:
    """Stores several values as one step: if any is refused, none leaves a trace."""
    converter = _Converter(txn, owner)
    try:
        out = []
        for value, segment in values:
            live = converter.convert(value, (segment,), 0)
            if segment.how == "key" or segment.how == "element":
                # Dict keys and set elements must compare the same way on the agent.
                converter._check_elements((live,), (), segment)
            out.append(live)
        if converter.created:
            txn.add_new(converter.created)
    except BaseException:
        converter.rollback()
        raise
    return out


def check_hashed(owner: Node, live: Any, segment: _Segment) -> None:
    """A dict key or set element about to be stored: it must hash and compare the same way on
    the agent (which compares shared objects by identity and datetimes by instant) as here."""
    problem = _hashed_problem(live)
    if problem is not None:
        bad, reason = problem
        raise NotStorable(render_path(owner, (segment,)), type(bad).__qualname__, reason)


def _key_refused(value: Any) -> str | None:
    """Why the agent would refuse `value` (live, storable) as a dict key or set member (NaN,
    a Decimal beyond KEY_DECIMAL_EXPONENT_MAX: keynorm), or None. Plain str / int / bytes /
    None keys, nearly all of them, need no look."""
    tp = type(value)
    if tp is str or tp is int or tp is bytes or value is None:
        return None
    try:
        _keynorm.key_norm(wire(value))
    except _keynorm.KeyRefused as e:
        return e.rule
    return None


def _hashed_problem(value: Any) -> tuple[Any, str] | None:
    tp = type(value)
    if tp is float or tp is decimal.Decimal:
        refused = _key_refused(value)
        return None if refused is None else (value, refused)
    if tp is tuple or tp is frozenset:
        for x in value:
            found = _hashed_problem(x)
            if found is not None:
                return found
        return None
    if tp in registry.SHARED_CLASSES and not getattr(tp, "__superstatic_identity_eq__", True):
        return value, (
            "as a dict key or set element a shared object is compared by identity on every "
            "replica, but its class defines __eq__/__hash__; use a tuple of the fields that "
            "identify it as the key instead"
        )
    if _ambiguous_zoned(value):
        return value, (
            "it is a zoned datetime at a DST transition, which Python compares by wall time "
            "within its zone; as a dict key or set element convert it to UTC first "
            "(value.astimezone(datetime.timezone.utc))"
        )
    return None


def lookup_value(value: Any, for_set: bool = False) -> tuple[bool, Any]:
    """For lookup arguments (`del d[k]`, `d.pop(k)`, `s.discard(x)`, `s.remove(x)`): whether the
    value could be stored as it is, so that it means the same on the agent; and the value itself
    (a plain set becomes a frozenset for set lookups, as `set.discard` does). Never creates
    nodes; raises TypeError for an unhashable value, exactly like the real container. A value
    that could not be stored (say, an instance with a custom __eq__ equal to a stored key) is
    looked up by the caller among the stored values (`find_equal`)."""
    tp = type(value)
    if tp is float or tp is decimal.Decimal:
        # A NaN is never a stored key (refused when stored): looked up as a non-storable value.
        return _key_refused(value) is None, value
    if tp in _PLAIN_SCALARS or tp in registry.ENUM_NAMES or _node.node_of(value) is not None:
        return True, value
    if tp is str or tp is datetime.datetime or tp is datetime.time:
        return scalar_problem(value) is None, value
    if tp is tuple or tp is frozenset:
        hash(value)
        return all(lookup_value(x)[0] for x in value), value
    if for_set and tp is set:
        return lookup_value(frozenset(value))
    hash(value)  # a plain list/dict raises TypeError here, exactly like the real container
    return False, value


def read_key(value: Any) -> tuple[bool, Any]:
    """A key a transaction read one by one (`d[k]`, `k in s`, `obj.attr`), in wire form for the
    model-2 body: (True, wire value), or (False, None) when it cannot travel as it is (never
    storable as a key, so the read is sent as a whole read of its node instead). Never raises:
    the read itself already ran."""
    if type(value) is set:
        value = frozenset(value)  # what set.__contains__ looks up for a plain set
    try:
        storable, _value = lookup_value(value)
    except TypeError:
        return False, None
    if not storable or _hashed_problem(value) is not None or _key_refused(value) is not None:
        return False, None
    return True, wire(value)


def find_equal(container: Any, value: Any) -> Any:
    """The stored key/element equal to `value` (which could not itself be stored), or _MISSING."""
    for stored in container:
        if stored == value:
            return stored
    return _MISSING


MISSING = _MISSING


class _Converter:
    __slots__ = ("added", "created", "fresh", "memo", "owner", "txn")

    def __init__(self, txn: Txn, owner: Node) -> None:
        self.txn = txn
        self.owner = owner
        # Shared with the whole transaction: identity holds across assignments, not only
        # inside one assigned value.
        self.memo = txn.stored
        self.created: list[Node] = []
        self.added: list[int] = []  # memo keys this conversion added (undone by rollback)
        self.fresh: set[int] = set()  # values converted by this very conversion

    def rollback(self) -> None:
        for key in self.added:
            self.memo.pop(key, None)
        for node in self.created:
            node.dead = True
            node.txn = None
        self.created.clear()

    def fail(self, path: tuple[_Segment, ...], value: Any, reason: str = "") -> NotStorable:
        return NotStorable(render_path(self.owner, path), type(value).__qualname__, reason)

    def convert(self, value: Any, path: tuple[_Segment, ...], depth: int) -> Any:
        tp = type(value)
        if tp in _PLAIN_SCALARS:
            return value
        if tp is str or tp is datetime.datetime or tp is datetime.time:
            problem = scalar_problem(value)
            if problem is not None:
                raise self.fail(path, value, problem)
            return value
        if tp in registry.ENUM_NAMES:
            return value
        if depth >= VALUE_DEPTH_MAX:
            raise LimitExceeded(
                "VALUE_DEPTH_MAX", VALUE_DEPTH_MAX, depth + 1, "nesting of the stored value"
            )
        if tp is tuple:
            return tuple(self.convert(x, (*path, item(i)), depth + 1) for i, x in enumerate(value))
        if tp is frozenset:
            out = frozenset(self.convert(x, (*path, ELEMENT), depth + 1) for x in value)
            self._check_elements(out, path)
            return out
        existing = _node.node_of(value)
        if existing is not None:
            self.txn.note_ref(existing)
            return value
        seen = self.memo.get(id(value))
        if seen is not None and (id(value) in self.fresh or self._unchanged(value, set())):
            return seen[1]
        if tp is dict:
            node = self._new(value, "dict", None)
            for k, v in value.items():
                stored_key = self.convert(k, (*path, key(k)), depth + 1)
                self._check_elements((stored_key,), path, key(k))
                node.live[stored_key] = self.convert(v, (*path, item(k)), depth + 1)
            return node.ref
        if tp is list:
            node = self._new(value, "list", None)
            node.live.extend(
                self.convert(x, (*path, item(i)), depth + 1) for i, x in enumerate(value)
            )
            return node.ref
        if tp is set:
            node = self._new(value, "set", None)
            elements = [self.convert(x, (*path, ELEMENT), depth + 1) for x in value]
            self._check_elements(elements, path)
            node.live.update(elements)
            return node.ref
        class_name = registry.registered_name(tp)
        if class_name is not None:
            node = self._new(value, "obj", class_name)
            for name, v in vars(value).items():
                if type(name) is not str or scalar_problem(name) is not None:
                    raise self.fail((*path, attr(repr(name))), name, "attribute names are str")
                node.live[name] = self.convert(v, (*path, attr(name)), depth + 1)
            return node.ref
        raise self.fail(path, value, _reason(value))

    def _check_elements(
        self, elements: Any, path: tuple[_Segment, ...], leaf: _Segment = ELEMENT
    ) -> None:
        for x in elements:
            problem = _hashed_problem(x)
            if problem is not None:
                bad, reason = problem
                raise self.fail((*path, leaf), bad, reason)

    def _new(self, value: Any, kind: str, class_name: str | None) -> Node:
        session = self.txn.session
        node = self.txn.replica.new_node(session.new_oid(), kind, class_name, self.txn)
        key_id = id(value)
        self.memo[key_id] = (value, node.ref, _shallow(value))
        self.added.append(key_id)
        self.fresh.add(key_id)
        self.created.append(node)
        return node

    def _unchanged(self, value: Any, visiting: set[int]) -> bool:
        """Whether a plain value converted earlier in this transaction still has the contents
        it had then (recursively, through the plain values it holds)."""
        if id(value) in visiting or id(value) in self.fresh:
            return True
        entry = self.memo.get(id(value))
        if entry is None:
            return True
        visiting.add(id(value))
        now = _shallow(value)
        then = entry[2]
        if len(now) != len(then) or any(a is not b for a, b in zip(now, then, strict=True)):
            return False
        return all(self._unchanged(child, visiting) for child in now if id(child) in self.memo)


def _shallow(value: Any) -> tuple[Any, ...]:
    """What a plain container or instance holds, flat (keys and values alike)."""
    tp = type(value)
    if tp is dict:
        return tuple(x for pair in value.items() for x in pair)
    if tp is list or tp is set:
        return tuple(value)
    return tuple(x for pair in vars(value).items() for x in pair)


def _reason(value: Any) -> str:
    tp = type(value)
    if isinstance(value, enum.Enum):
        return (
            f"register the enum with superstatic.register({tp.__qualname__}) to store its members"
        )
    for base in _BUILTIN_BASES:
        if issubclass(tp, base):
            return (
                f"it is a subclass of {base.__name__}; only the exact built-in types are "
                f"stored (convert it with {base.__name__}(...))"
            )
    if callable(value) and not isinstance(value, type) and hasattr(value, "__code__"):
        return "functions and lambdas are code, not data: store their result, or a name"
    if isinstance(tp, type) and hasattr(tp, "__dict__") and not isinstance(value, type):
        return "register its class with superstatic.register() to store its instances"
    return ""


def wire(value: Any) -> Any:
    """The codec form of a live value: proxies and shared instances become Refs, enum members
    their registry form."""
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
    name = registry.ENUM_NAMES.get(tp)
    if name is not None:
        return enum_wire(value, name)
    raise AssertionError(f"a live value of type {tp!r} was not checked when stored")


def enum_wire(member: Any, name: str) -> Any:
    kind = registry.ENUM_KINDS[type(member)]
    if kind == _codec.ENUM_BY_NAME:
        return _codec.enum_form(name, kind, member.name)
    if kind == _codec.ENUM_BY_STR:
        return _codec.enum_form(name, kind, str.__str__(member))
    return _codec.enum_form(name, kind, int(member.value))


def live_key_of_wire(value: Any) -> Any:
    """live_of_wire for a dict key or set member: a zoned datetime whose real zone would make it
    equal to a key the agent holds apart (its stand-in's offset is not the zone's at that wall
    time, or the wall time is at a transition, where Python compares by wall time) keeps its
    stand-in, which compares by instant as the agent does. The library never writes such keys
    (_ambiguous_zoned); a raw client can, and app replicas fed events or a snapshot would then
    hold different keys (review 11)."""
    live = live_of_wire(value)
    if live is value or type(value) is not datetime.datetime:
        return live
    if live.utcoffset() != value.utcoffset() or _ambiguous_zoned(live):
        return value
    return live


def live_of_wire(value: Any) -> Any:
    """A decoded scalar as this process holds it: an enum form becomes the member of the
    registered class, a datetime's zone stand-in the real ZoneInfo (both when available here;
    else the stand-in stays, and still compares as the real value does). Never runs user code:
    members are found in the enum's own tables."""
    tp = type(value)
    if tp is _codec.EnumInt or tp is _codec.EnumStr or tp is _codec.EnumMember:
        cls = registry.ENUM_BY_NAME.get(value.enum_class)
        if cls is None:
            return value
        if tp is _codec.EnumMember and value.kind == _codec.ENUM_BY_NAME:
            return cls._member_map_.get(value.key, value)
        if tp is _codec.EnumMember:
            raw: Any = value.key
        else:
            raw = int(value) if tp is _codec.EnumInt else str.__str__(value)
        member = cls._value2member_map_.get(raw)
        if member is None and registry.ENUM_COMPOSABLE.get(cls, False):
            member = cls(raw)  # a Flag combination: enum's own code makes the pseudo-member
        return value if member is None else member
    tz = value.tzinfo
    if type(tz) is _codec.ZoneStub:
        try:
            zone = zoneinfo.ZoneInfo(tz.key)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            return value  # no such zone on this machine: the stand-in keeps offset and key
        return value.replace(tzinfo=zone)
    return value
