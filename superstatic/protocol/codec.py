"""CBOR with an explicit type registry: the only form values take on the wire and on disk.

Storable values (design brief section 2) and how they are encoded:

| Python | CBOR |
|---|---|
| None, bool, int, float, str, bytes | native (big ints: tags 2/3) |
| Decimal | native tag 4 |
| UUID | native tag 37 |
| tuple | tag 55800 [items] |
| frozenset | tag 55801 [items], sorted by their encoding (canonical) |
| Ref (a mutable node) | tag 55802 oid |
| datetime / date / time | tags 55803 / 55804 / 55805, ISO 8601 text |

Lists, dicts, sets and registered objects are never inline: each is a node with an object id,
referenced by `Ref` (docs/data-model.md). Decoding never imports or executes anything: the tags
above map to a fixed set of constructors, every other tag is rejected, and cbor2's own semantic
decoders that build richer objects (regular expressions, MIME messages, shared references,
sets, IP addresses, ...) are switched off. Every decoding failure is a `ProtocolError` naming
what was wrong.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterator
from typing import Any

import cbor2

from superstatic.protocol.errors import ProtocolError

TAG_TUPLE = 55800
TAG_FROZENSET = 55801
TAG_REF = 55802
TAG_DATETIME = 55803
TAG_DATE = 55804
TAG_TIME = 55805

# Nesting of decoded data (containers inside containers). Records and ops add 3-4 levels to the
# value itself, whose own nesting the library bounds at 200 (values.VALUE_DEPTH_MAX).
DECODE_DEPTH_MAX = 256
# Object ids are short (client id prefix + counter, or "@roots"); a long one is garbage.
OID_CHARS_MAX = 128

NODE_KINDS = ("dict", "list", "set", "obj")

# cbor2 semantic tags whose decoded value is one of our storable scalars: kept.
_SEMANTIC_KEPT = frozenset({2, 3, 4, 37})
# cbor2 semantic tags that would build something we never store (or that we never emit): their
# built-in decoders are replaced by a refusal, so hostile bytes cannot make a regex, a MIME
# message, a set or a shared-reference graph.
_SEMANTIC_REFUSED = (0, 1, 5, 25, 28, 29, 30, 35, 36, 100, 256, 258, 260, 261, 1004, 55799)

SCALAR_TYPES = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        decimal.Decimal,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        datetime.time,
    }
)


class Ref:
    """A reference to a mutable node (dict, list, set or shared object) by its object id."""

    __slots__ = ("oid",)

    def __init__(self, oid: str) -> None:
        self.oid = oid

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and other.oid == self.oid

    def __hash__(self) -> int:
        return hash(("superstatic.Ref", self.oid))

    def __repr__(self) -> str:
        return f"Ref({self.oid!r})"


# ---------------------------------------------------------------------------------- encoding


def _tagged(value: Any) -> Any:
    """The cbor2-encodable form of a value or structure: our types become tags."""
    tp = type(value)
    if tp in PASS_TYPES:
        return value
    # Scalars are checked inline (no call per element): records and op arrays are mostly
    # scalars, and this walk runs for every record the state machine writes.
    if tp is list:
        return [x if type(x) in PASS_TYPES else _tagged(x) for x in value]
    if tp is tuple:
        return cbor2.CBORTag(TAG_TUPLE, [x if type(x) in PASS_TYPES else _tagged(x) for x in value])
    if tp is Ref:
        return cbor2.CBORTag(TAG_REF, value.oid)
    if tp is frozenset:
        items = sorted(cbor2.dumps(_tagged(x), default=_default) for x in value)
        return cbor2.CBORTag(TAG_FROZENSET, _Raw(items))
    if tp is dict:
        return {_tagged(k): _tagged(v) for k, v in value.items()}
    if tp is datetime.datetime:
        return cbor2.CBORTag(TAG_DATETIME, value.isoformat())
    if tp is datetime.date:
        return cbor2.CBORTag(TAG_DATE, value.isoformat())
    if tp is datetime.time:
        return cbor2.CBORTag(TAG_TIME, value.isoformat())
    raise ProtocolError(f"cannot encode a value of type {tp.__qualname__}: it is not storable")


class _Raw:
    """Already-encoded CBOR items spliced into an array (canonical frozenset order)."""

    __slots__ = ("items",)

    def __init__(self, items: list[bytes]) -> None:
        self.items = items


def _default(encoder: Any, value: Any) -> None:
    if type(value) is _Raw:
        # Array header then the pre-encoded items: the sort order survives exactly.
        encoder.encode_length(4, len(value.items))
        for item in value.items:
            encoder.write(item)
        return
    raise ProtocolError(f"cannot encode a value of type {type(value).__qualname__}")


# Encoded by cbor2 itself, no tag of ours: checked inline on hot paths.
PASS_TYPES = frozenset({type(None), bool, int, float, str, bytes, decimal.Decimal, uuid.UUID})


def dumps(value: Any) -> bytes:
    """CBOR of a storable value, or of a structure (lists, str-keyed maps) holding them."""
    return cbor2.dumps(_tagged(value), default=_default)


def tagged(value: Any) -> Any:
    """The encodable form of one value (itself for scalars): for callers that build a big
    structure themselves (a node record) and then encode it with `dumps_tagged`."""
    return value if type(value) in PASS_TYPES else _tagged(value)


def dumps_tagged(structure: Any) -> bytes:
    """CBOR of a structure whose values already went through `tagged` (no second walk)."""
    return cbor2.dumps(structure, default=_default)


# ---------------------------------------------------------------------------------- decoding


def _refuse(*_args: Any) -> Any:
    raise cbor2.CBORDecodeError("this CBOR tag is not part of the superstatic type registry")


_SEMANTIC_DECODERS = {tag: _refuse for tag in _SEMANTIC_REFUSED}


def _tag_hook(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    # cbor2 decodes a tag's array payload as a tuple (hashable, in case the tag is a map key).
    number, payload = tag.tag, tag.value
    if number == TAG_TUPLE and type(payload) in (list, tuple):
        return tuple(payload)
    if number == TAG_FROZENSET and type(payload) in (list, tuple):
        try:
            return frozenset(payload)
        except TypeError as e:
            raise cbor2.CBORDecodeError(f"frozenset element is not hashable: {e}") from None
    if number == TAG_REF and type(payload) is str and 0 < len(payload) <= OID_CHARS_MAX:
        return Ref(payload)
    if type(payload) is str:
        try:
            if number == TAG_DATETIME:
                return datetime.datetime.fromisoformat(payload)
            if number == TAG_DATE:
                return datetime.date.fromisoformat(payload)
            if number == TAG_TIME:
                return datetime.time.fromisoformat(payload)
        except ValueError as e:
            raise cbor2.CBORDecodeError(f"tag {number}: {e}") from None
    raise cbor2.CBORDecodeError(
        f"tag {number} with a {type(payload).__name__} payload is not part of the superstatic "
        "type registry"
    )


def loads(data: bytes) -> Any:
    """Decodes CBOR made by `dumps`; anything else raises ProtocolError naming the problem."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"expected CBOR bytes, got {type(data).__qualname__}")
    try:
        return cbor2.loads(
            data,
            tag_hook=_tag_hook,
            semantic_decoders=_SEMANTIC_DECODERS,
            max_depth=DECODE_DEPTH_MAX,
        )
    except cbor2.CBORDecodeError as e:
        raise ProtocolError(f"undecodable CBOR: {e}") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as e:
        # cbor2 lets a few of these through on hostile input (e.g. an unhashable map key).
        raise ProtocolError(f"undecodable CBOR: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------- values


def check_value(value: Any, what: str, depth: int = 0) -> None:
    """Raises ProtocolError unless `value` is a storable value in its wire form (scalars,
    tuples, frozensets, Refs). `what` names where it came from, for the message."""
    tp = type(value)
    if tp in SCALAR_TYPES or tp is Ref:
        return
    if depth >= DECODE_DEPTH_MAX:
        raise ProtocolError(f"{what}: nesting deeper than DECODE_DEPTH_MAX={DECODE_DEPTH_MAX}")
    if tp is tuple or tp is frozenset:
        for x in value:
            check_value(x, what, depth + 1)
        return
    raise ProtocolError(f"{what}: a {tp.__qualname__} is not a storable value in wire form")


def refs_in(value: Any) -> Iterator[str]:
    """Object ids a value references (recursing through tuples and frozensets)."""
    tp = type(value)
    if tp is Ref:
        yield value.oid
    elif tp is tuple or tp is frozenset:
        for x in value:
            yield from refs_in(x)


def refs_in_contents(kind: str, contents: Any) -> Iterator[str]:
    """Object ids a node record's contents reference."""
    if kind == "dict":
        for key, value in contents:
            yield from refs_in(key)
            yield from refs_in(value)
    elif kind == "obj":
        for _name, value in contents[1]:
            yield from refs_in(value)
    else:
        for value in contents:
            yield from refs_in(value)


# ---------------------------------------------------------------------------------- records


def encode_record(version: int, kind: str, contents: Any) -> bytes:
    """A node record: CBOR [version, kind, contents] (architecture section 4)."""
    assert version >= 0 and kind in NODE_KINDS, (version, kind)
    return dumps([version, kind, contents])


def decode_record(data: bytes) -> tuple[int, str, Any]:
    """(version, kind, contents) of a node record, its shape checked."""
    record = loads(data)
    if type(record) is not list or len(record) != 3:
        raise ProtocolError("a node record is a 3-element array [version, kind, contents]")
    version, kind, contents = record
    if type(version) is not int or version < 0:
        raise ProtocolError(
            f"node record version must be an int >= 0, got a {type(version).__qualname__}"
        )
    check_contents(kind, contents, "node record")
    return version, kind, contents


def check_contents(kind: Any, contents: Any, what: str) -> None:
    """Raises ProtocolError unless `contents` is well-formed for a node of `kind`."""
    if kind not in NODE_KINDS:
        # The kind's type only: a hostile kind may be an int too long to print.
        raise ProtocolError(
            f"{what}: unknown node kind (a {type(kind).__qualname__}; known: "
            f"{', '.join(NODE_KINDS)})"
        )
    if kind == "obj":
        if (
            type(contents) is not list
            or len(contents) != 2
            or type(contents[0]) is not str
            or type(contents[1]) is not list
        ):
            raise ProtocolError(f"{what}: obj contents are [class_name, [[attr, value], ...]]")
        for pair in contents[1]:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise ProtocolError(f"{what}: an obj attribute is [str name, value]")
            check_value(pair[1], f"{what} attribute")
        return
    if type(contents) is not list:
        raise ProtocolError(f"{what}: {kind} contents are an array")
    if kind == "dict":
        for pair in contents:
            if type(pair) is not list or len(pair) != 2:
                raise ProtocolError(f"{what}: a dict item is [key, value]")
            check_value(pair[0], f"{what} key")
            check_value(pair[1], f"{what} value")
            _check_hashable(pair[0], what)
        return
    for x in contents:
        check_value(x, f"{what} {kind} element")
        if kind == "set":
            _check_hashable(x, what)


def _check_hashable(value: Any, what: str) -> None:
    try:
        hash(value)
    except TypeError:
        raise ProtocolError(f"{what}: an unhashable key or set element") from None
