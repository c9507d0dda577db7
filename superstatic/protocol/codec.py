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
| datetime / time: a zone, fold=1, a named offset | tags 55806 / 55807 `[naive ISO, fold, tz]` |
| Decimal NaN, sNaN, Infinity, -0 (what tag 4 cannot carry) | tag 55808, its text |
| timedelta | tag 55809 `[days, seconds, microseconds]` |
| Fraction | tag 55810 `[numerator, denominator]` |
| a member of a registered Enum | tag 55811 `[class name, kind, key]` |

Lists, dicts, sets and registered objects are never inline: each is a node with an object id,
referenced by `Ref` (docs/data-model.md). Decoding never imports or executes anything: the tags
above map to a fixed set of constructors, every other tag is rejected, and cbor2's own semantic
decoders that build richer objects (regular expressions, MIME messages, shared references,
sets, IP addresses, ...) are switched off. Every decoding failure is a `ProtocolError` naming
what was wrong.

Bounded decoding (`loads(data, limits)`): before cbor2 builds a single object, `scan` walks the
CBOR item headers (never the payload bytes of strings) and refuses, as soon as a bound is
crossed, more items or deeper nesting than the `DecodeLimits` allow, any tag outside the
registry (so shared references, regular expressions, MIME, IP addresses, fractions never reach
cbor2's constructors), indefinite lengths, simple values, trailing bytes, Decimal mantissas
whose conversion would be quadratic, and texts or byte strings longer than the limits'
`text_bytes_max` / `blob_bytes_max` (a frame's longest field: a text is refused at its header,
never decoded, since CPython's UTF-8 decoder peaks at ~6x its bytes). A scan costs
O(min(items, items_max)), so a 15 MiB frame of empty arrays is refused after reading one
header. The agent's frame decoders (client and peer ports) and transaction bodies go through
it; records the state machine wrote itself use plain `loads(data)`. `loads_unscanned` skips the
scan for callers that then check every decoded value (the app's event bodies and EVENTS
frames): it refuses exactly what the scan refuses. `loads_shallow` does the same for the
agent's frames whose headers bound their items (peer frames, an APPEND's entries, the apps'
write frames: docs/data-model-v2.md 8.13).
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import io
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2

from superstatic.protocol.errors import LimitExceeded, ProtocolError

TAG_TUPLE = 55800
TAG_FROZENSET = 55801
TAG_REF = 55802
TAG_DATETIME = 55803
TAG_DATE = 55804
TAG_TIME = 55805
TAG_DATETIME_X = 55806
TAG_TIME_X = 55807
TAG_DECIMAL_TEXT = 55808
TAG_TIMEDELTA = 55809
TAG_FRACTION = 55810
TAG_ENUM = 55811

# Nesting of decoded data (containers inside containers). Records and ops add 3-4 levels to the
# value itself, whose own nesting the library bounds at 200 (values.VALUE_DEPTH_MAX).
DECODE_DEPTH_MAX = 256
# Object ids are short (client id prefix + counter, or "@roots"); a long one is garbage.
OID_CHARS_MAX = 128
# An object id is the key of its `oids` record at the agent: LMDB takes keys of at most 511
# bytes, and 128 chars of 4-byte UTF-8 are 512 (review 11: the put failed inside apply).
OID_BYTES_MAX = 511

NODE_KINDS = ("dict", "list", "set", "obj")

# cbor2 semantic tags whose decoded value is one of our storable scalars: kept.
_SEMANTIC_KEPT = frozenset({2, 3, 4, 37})
# cbor2 semantic tags that would build something we never store (or that we never emit): their
# built-in decoders are replaced by a refusal, so hostile bytes cannot make a regex, a MIME
# message, a set or a shared-reference graph. Every tag cbor2 6.x builds natively outside
# _SEMANTIC_KEPT (tests/unit/test_codec_ops.py enumerates them, so an upgrade that adds one
# fails a test); `scan` refuses them all anyway, whatever cbor2 version is installed.
_SEMANTIC_REFUSED = (
    0, 1, 5, 25, 28, 29, 30, 35, 36, 52, 54, 100, 256, 258, 260, 261, 1004, 43000, 55799,
)  # fmt: skip
# Every tag cbor2 6.x builds an object for by itself: what a decoder of tag-free CBOR (the
# agent's own records: agent/payload.py loads_plain) must refuse before anything is built.
SEMANTIC_TAGS_NATIVE = _SEMANTIC_KEPT | frozenset(_SEMANTIC_REFUSED)
# THE registry: every tag a superstatic value may carry. Anything else is refused.
REGISTERED_TAGS = _SEMANTIC_KEPT | {
    TAG_TUPLE,
    TAG_FROZENSET,
    TAG_REF,
    TAG_DATETIME,
    TAG_DATE,
    TAG_TIME,
    TAG_DATETIME_X,
    TAG_TIME_X,
    TAG_DECIMAL_TEXT,
    TAG_TIMEDELTA,
    TAG_FRACTION,
    TAG_ENUM,
}
_TAG_DECIMAL = 4
_TAG_BIGNUMS = (2, 3)
# cbor2 turns a Decimal's mantissa into digits in time quadratic in its size (a 1 MB mantissa
# took 99 s, 100 KB 1.4 s): 1 KiB (about 2,466 digits) costs 0.1 ms. Ints themselves are
# decoded in linear time and are not bounded here.
DECIMAL_MANTISSA_BYTES_MAX = 1024
# cbor2's own error text quoted in a refusal (it describes the structure; capped all the same).
CBOR_MESSAGE_CHARS_MAX = 160

# ---------------------------------------------------------------------------------- registry
#
# The types of the registry beyond CBOR's own (issue 10): each has a tag, an encoder (value ->
# CBORTag) and a decoder (payload -> value) that builds it from plain data with a fixed
# constructor. Decoders raise ValueError/TypeError/OverflowError on a bad payload (the decoding
# machinery turns that into a ProtocolError).
#
# Two of them decode to stand-ins, because the agent (which decodes and re-encodes every value it
# stores) must not depend on what the apps have: a datetime's zone decodes to `ZoneStub` (the
# key and the UTC offset of that instant: no tz database needed) and an enum member to
# `EnumInt` / `EnumStr` / `EnumMember` (its registered class name and value). Both compare and
# hash as the real value does wherever the agent compares values (dict keys, set elements; zoned
# datetimes whose offset is ambiguous are refused as keys by the library), re-encode to the same
# bytes, and are turned into the real value by the app's replica.

# Longest text of a Decimal (digits and exponent) and of a zone key the decoder accepts.
DECIMAL_TEXT_CHARS_MAX = 4096
ZONE_KEY_CHARS_MAX = 128
# Bits of a Fraction's numerator and denominator: Fraction() reduces them with a gcd, whose cost
# grows with their size, and no stored value needs more.
FRACTION_BITS_MAX = 4096
# Enum payload kinds: by member name (plain Enum), by int value (IntEnum, IntFlag, int mixins),
# by str value (StrEnum, str mixins), by int value of a Flag that is not an int.
ENUM_BY_NAME, ENUM_BY_INT, ENUM_BY_STR, ENUM_FLAG = 0, 1, 2, 3
ENUM_CLASS_CHARS_MAX = 256


class ZoneStub(datetime.tzinfo):
    """The zone of a decoded datetime on the agent: its key and its UTC offset at that instant."""

    __slots__ = ("key", "offset")

    def __init__(self, key: str, offset: datetime.timedelta | None) -> None:
        self.key = key
        self.offset = offset

    def utcoffset(self, dt: Any) -> datetime.timedelta | None:
        return self.offset

    def dst(self, dt: Any) -> None:
        return None

    def tzname(self, dt: Any) -> str:
        return self.key

    def __repr__(self) -> str:
        return f"ZoneStub({self.key!r}, {self.offset!r})"


class EnumInt(int):
    """A member of a registered int-valued Enum (IntEnum, IntFlag), as the agent holds it:
    equal to its value, as the member is."""

    enum_class: str

    def __repr__(self) -> str:
        return f"<{self.enum_class}: {int(self)}>"


class EnumStr(str):
    """A member of a registered str-valued Enum (StrEnum), as the agent holds it."""

    enum_class: str

    def __repr__(self) -> str:
        return f"<{self.enum_class}: {str(self)!r}>"


class EnumMember:
    """A member of a registered plain Enum (or Flag), as the agent holds it: equal only to the
    same member, as the real member is."""

    __slots__ = ("enum_class", "key", "kind")

    def __init__(self, enum_class: str, kind: int, key: Any) -> None:
        self.enum_class = enum_class
        self.kind = kind
        self.key = key

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is EnumMember
            and other.enum_class == self.enum_class
            and other.kind == self.kind
            and other.key == self.key
        )

    def __hash__(self) -> int:
        return hash(("superstatic.EnumMember", self.enum_class, self.kind, self.key))

    def __repr__(self) -> str:
        return f"<{self.enum_class}.{self.key}>"


def enum_form(enum_class: str, kind: int, key: Any) -> Any:
    """The registry form of an enum member (what the library encodes and the agent decodes)."""
    if kind == ENUM_BY_INT:
        value: Any = EnumInt(key)
    elif kind == ENUM_BY_STR:
        value = EnumStr(key)
    else:
        return EnumMember(enum_class, kind, key)
    value.enum_class = enum_class
    return value


def _offset_us(offset: datetime.timedelta | None) -> int | None:
    return None if offset is None else offset // datetime.timedelta(microseconds=1)


def _tz_payload(tz: datetime.tzinfo | None, dt: Any) -> Any:
    if tz is None:
        return None
    tp = type(tz)
    if tp is datetime.timezone:
        name = tz.tzname(None)
        offset = tz.utcoffset(None)
        default = datetime.timezone(offset).tzname(None)
        return [0, _offset_us(offset), None if name == default else name]
    if tp is zoneinfo.ZoneInfo or tp is ZoneStub:
        key = tz.key
        if type(key) is not str or not key:
            raise ProtocolError("a ZoneInfo without a key (from_file) cannot be stored")
        return [1, key, _offset_us(dt.utcoffset())]
    raise ProtocolError(
        f"cannot encode a datetime whose tzinfo is a {tp.__qualname__}: only "
        "datetime.timezone and zoneinfo.ZoneInfo zones are storable"
    )


def needs_extended_form(tz: datetime.tzinfo | None, fold: int) -> bool:
    """Whether a datetime/time needs tag 55806/55807 (ISO text would lose something)."""
    if fold:
        return True
    if tz is None:
        return False
    if type(tz) is not datetime.timezone:
        return True
    offset = tz.utcoffset(None)
    return tz.tzname(None) != datetime.timezone(offset).tzname(None)


def _encode_datetime(value: datetime.datetime) -> cbor2.CBORTag:
    tz = value.tzinfo
    if not needs_extended_form(tz, value.fold):
        return cbor2.CBORTag(TAG_DATETIME, value.isoformat())
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return cbor2.CBORTag(TAG_DATETIME_X, [naive, value.fold, _tz_payload(tz, value)])


def _encode_time(value: datetime.time) -> cbor2.CBORTag:
    tz = value.tzinfo
    if not needs_extended_form(tz, value.fold):
        return cbor2.CBORTag(TAG_TIME, value.isoformat())
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return cbor2.CBORTag(TAG_TIME_X, [naive, value.fold, _tz_payload(tz, value)])


def _encode_decimal(value: decimal.Decimal) -> Any:
    if value.is_finite() and not (value.is_zero() and value.is_signed()):
        return value  # cbor2's tag 4 (exponent, mantissa) is exact for these
    return cbor2.CBORTag(TAG_DECIMAL_TEXT, str(value))


def _encode_timedelta(value: datetime.timedelta) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_TIMEDELTA, [value.days, value.seconds, value.microseconds])


def _encode_fraction(value: fractions.Fraction) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_FRACTION, [value.numerator, value.denominator])


def _encode_enum_int(value: EnumInt) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_ENUM, [value.enum_class, ENUM_BY_INT, int(value)])


def _encode_enum_str(value: EnumStr) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_ENUM, [value.enum_class, ENUM_BY_STR, str(value)])


def _encode_enum_member(value: EnumMember) -> cbor2.CBORTag:
    return cbor2.CBORTag(TAG_ENUM, [value.enum_class, value.kind, value.key])


class BadPayload(ValueError):
    """A registry tag's payload of the wrong shape; the message names the shape expected, never
    the data (a hostile payload may be huge)."""


def _items(payload: Any, n: int, what: str) -> Any:
    if type(payload) not in (list, tuple) or len(payload) != n:
        raise BadPayload(f"{what} payload is an array of {n}")
    return payload


def _decode_tz(tz: Any) -> datetime.tzinfo | None:
    if tz is None:
        return None
    if type(tz) in (list, tuple) and len(tz) == 3 and tz[0] == 0 and type(tz[1]) is int:
        offset = datetime.timedelta(microseconds=tz[1])
        if tz[2] is None:
            return datetime.timezone(offset)
        if type(tz[2]) is not str:
            raise BadPayload("a timezone name is a str")
        return datetime.timezone(offset, tz[2])
    if type(tz) in (list, tuple) and len(tz) == 3 and tz[0] == 1 and type(tz[1]) is str:
        key, offset_us = tz[1], tz[2]
        if not 0 < len(key) <= ZONE_KEY_CHARS_MAX:
            raise BadPayload(f"a zone key has 1..{ZONE_KEY_CHARS_MAX} characters")
        if offset_us is not None and type(offset_us) is not int:
            raise BadPayload("a zone offset is an int of microseconds or null")
        offset = None if offset_us is None else datetime.timedelta(microseconds=offset_us)
        if offset is not None and not abs(offset) < datetime.timedelta(days=1):
            raise BadPayload("a zone offset is less than a day")
        return ZoneStub(key, offset)
    raise BadPayload("a tz is null, [0, offset_us, name] or [1, key, offset_us]")


def _decode_datetime_x(payload: Any) -> datetime.datetime:
    naive, fold, tz = _items(payload, 3, "datetime")
    if type(naive) is not str or fold not in (0, 1) or type(fold) is not int:
        raise BadPayload("datetime payload is [naive ISO text, fold 0|1, tz]")
    value = datetime.datetime.fromisoformat(naive)
    if value.tzinfo is not None:
        raise BadPayload("the ISO text of tag 55806 is naive")
    return value.replace(tzinfo=_decode_tz(tz), fold=fold)


def _decode_time_x(payload: Any) -> datetime.time:
    naive, fold, tz = _items(payload, 3, "time")
    if type(naive) is not str or fold not in (0, 1) or type(fold) is not int:
        raise BadPayload("time payload is [naive ISO text, fold 0|1, tz]")
    value = datetime.time.fromisoformat(naive)
    if value.tzinfo is not None:
        raise BadPayload("the ISO text of tag 55807 is naive")
    return value.replace(tzinfo=_decode_tz(tz), fold=fold)


def _decode_decimal_text(payload: Any) -> decimal.Decimal:
    if type(payload) is not str or not 0 < len(payload) <= DECIMAL_TEXT_CHARS_MAX:
        raise BadPayload(f"a Decimal text has 1..{DECIMAL_TEXT_CHARS_MAX} characters")
    try:
        return decimal.Decimal(payload)
    except decimal.InvalidOperation:
        raise BadPayload(f"a str of {len(payload)} chars is not a Decimal") from None


def _decode_timedelta(payload: Any) -> datetime.timedelta:
    days, seconds, micros = _items(payload, 3, "timedelta")
    if not all(type(x) is int for x in (days, seconds, micros)):
        raise BadPayload("timedelta payload is [days, seconds, microseconds] ints")
    if not (0 <= seconds < 86400 and 0 <= micros < 1_000_000):
        raise BadPayload("timedelta seconds and microseconds are normalized")
    return datetime.timedelta(days=days, seconds=seconds, microseconds=micros)


def _decode_fraction(payload: Any) -> fractions.Fraction:
    num, den = _items(payload, 2, "Fraction")
    if type(num) is not int or type(den) is not int or den <= 0:
        raise BadPayload("Fraction payload is [numerator, denominator > 0] ints")
    if max(num.bit_length(), den.bit_length()) > FRACTION_BITS_MAX:
        raise BadPayload(f"a Fraction has at most FRACTION_BITS_MAX={FRACTION_BITS_MAX} bits")
    return fractions.Fraction(num, den)


def _decode_enum(payload: Any) -> Any:
    name, kind, key = _items(payload, 3, "enum")
    if type(name) is not str or not 0 < len(name) <= ENUM_CLASS_CHARS_MAX:
        raise BadPayload(f"an enum class name has 1..{ENUM_CLASS_CHARS_MAX} characters")
    expected = {ENUM_BY_NAME: str, ENUM_BY_INT: int, ENUM_BY_STR: str, ENUM_FLAG: int}
    if type(kind) is not int or kind not in expected or type(key) is not expected[kind]:
        raise BadPayload("enum payload is [class name, kind 0..3, member name or value]")
    return enum_form(name, kind, key)


# Values beyond CBOR's own that are stored as they are.
_REGISTRY_TYPES: dict[type, Callable[[Any], Any]] = {
    datetime.datetime: _encode_datetime,
    datetime.time: _encode_time,
    decimal.Decimal: _encode_decimal,
    datetime.timedelta: _encode_timedelta,
    fractions.Fraction: _encode_fraction,
    EnumInt: _encode_enum_int,
    EnumStr: _encode_enum_str,
    EnumMember: _encode_enum_member,
}
_REGISTRY_TAGS: dict[int, Callable[[Any], Any]] = {
    TAG_DATETIME_X: _decode_datetime_x,
    TAG_TIME_X: _decode_time_x,
    TAG_DECIMAL_TEXT: _decode_decimal_text,
    TAG_TIMEDELTA: _decode_timedelta,
    TAG_FRACTION: _decode_fraction,
    TAG_ENUM: _decode_enum,
}

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
        datetime.timedelta,
        fractions.Fraction,
        EnumInt,
        EnumStr,
        EnumMember,
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
    if tp is datetime.date:
        return cbor2.CBORTag(TAG_DATE, value.isoformat())
    encoder = _REGISTRY_TYPES.get(tp)
    if encoder is not None:
        return encoder(value)
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


# Encoded by cbor2 itself, no tag of ours: checked inline on hot paths. (Decimal is not: its
# special values and -0 need tag 55808.)
PASS_TYPES = frozenset({type(None), bool, int, float, str, bytes, uuid.UUID})


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
    decoder = _REGISTRY_TAGS.get(number)
    if decoder is not None:
        try:
            return decoder(payload)
        except BadPayload as e:  # our own message: it names the shape, never the data
            raise cbor2.CBORDecodeError(f"tag {number}: {e}") from None
        except (ValueError, TypeError, OverflowError, ProtocolError, decimal.DecimalException):
            # A constructor refused it (its message may quote the data): the type only.
            raise cbor2.CBORDecodeError(
                f"tag {number}: a malformed {type(payload).__name__} payload"
            ) from None
    if type(payload) is str:
        try:
            if number == TAG_DATETIME:
                return datetime.datetime.fromisoformat(payload)
            if number == TAG_DATE:
                return datetime.date.fromisoformat(payload)
            if number == TAG_TIME:
                return datetime.time.fromisoformat(payload)
        except ValueError:
            # Not the text: its length is all the message may say about it.
            raise cbor2.CBORDecodeError(
                f"tag {number}: a str of {len(payload)} chars is not ISO 8601"
            ) from None
    raise cbor2.CBORDecodeError(
        f"tag {number} with a {type(payload).__name__} payload is not part of the superstatic "
        "type registry"
    )


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds `scan` enforces before anything is built. Each bound has the name a refusal
    quotes (a constant or a config field), so an operator can tell which limit was hit."""

    what: str  # what is being decoded, for messages: "client frame", "peer entries", ...
    bytes_max: int
    bytes_name: str
    items_max: int  # CBOR data items: every int, string, array, map key and value, tag
    items_name: str
    depth_max: int  # nesting of arrays, maps and tags
    depth_name: str
    # Map keys must be text or byte strings: a map with colliding int keys would cost
    # quadratic time to build. Frames and transaction bodies only ever use str keys.
    str_keys_only: bool = True
    # The longest text (its UTF-8 bytes) and byte string any field may hold, checked at the
    # string's header before cbor2 builds it (review 27: CPython's UTF-8 decoder peaks at ~6x a
    # text of 4-byte characters while building it, so a 60 MiB text cost 360 MiB before the
    # field's own check refused it). None: only `bytes_max` bounds them (values, records).
    text_bytes_max: int | None = None
    text_name: str = ""
    blob_bytes_max: int | None = None
    blob_name: str = ""
    # Names the field holding an item (given the data and the item's path, `item_path`), for a
    # refusal's message: a fixed name, never a value.
    # Called only when a string is refused. None: the refusal names the `what` alone.
    field_of: Callable[[bytes, tuple[tuple[int, int], ...]], str] | None = None


class FrameError(ProtocolError):
    """A refused frame, body or value. `reason` is a short slug the agent counts in STATUS
    (`dropped`, `<category>.<reason>`); the message names the field, its type and size and the
    limit, never the value itself."""

    def __init__(self, reason: str, message: str) -> None:
        ProtocolError.__init__(self, message)
        self.reason = reason


class DecodeLimitExceeded(FrameError, LimitExceeded):
    """A decoding bound was crossed: both a ProtocolError (the input is refused) and a
    LimitExceeded (the client is told `too_large`, naming the limit)."""

    def __init__(self, limit_name: str, limit: int, actual: int, what: str) -> None:
        LimitExceeded.__init__(self, limit_name, limit, actual, what)
        self.reason = limit_name


def describe(value: Any) -> str:
    """The type and size of an untrusted value, for an error message: never the value itself
    (its repr can be gigabytes for a shared-reference graph, or raise for a huge int)."""
    tp = type(value)
    if value is None or tp is bool:
        return repr(value)
    if tp is int:
        return f"an int of {value.bit_length()} bits"
    if tp in (str, bytes, bytearray):
        unit = "chars" if tp is str else "bytes"
        return f"a {tp.__name__} of {len(value)} {unit}"
    if tp in (list, tuple, dict, set, frozenset):
        return f"a {tp.__name__} of {len(value)} items"
    return f"a {tp.__qualname__}"


def _refuse_bytes(data: bytes, limits: DecodeLimits) -> None:
    if len(data) > limits.bytes_max:
        raise DecodeLimitExceeded(
            limits.bytes_name, limits.bytes_max, len(data), f"{limits.what} size in bytes"
        )


def scan(data: bytes, limits: DecodeLimits) -> int:
    """Walks the CBOR item headers of `data` without building anything; returns the number of
    items. Raises DecodeLimitExceeded (bytes, items, depth) or FrameError (malformed, a tag
    outside the registry, ...) as soon as the input is known to be refused.

    Cost: about 0.15-0.3 us per item, and never more than items_max items are visited: an
    array or map whose declared length would take the count past items_max is refused at its
    header (so every item read is already within the budget: no per-item check)."""
    _refuse_bytes(data, limits)
    size = len(data)
    items_max, depth_max = limits.items_max, limits.depth_max
    strict = limits.str_keys_only
    pos = 0
    items = 0
    # Per enclosing container: items still to read there, shifted left once, low bit set for a
    # map (one list, one push and pop per container).
    stack: list[int] = []
    remaining = 1  # items still to read at the current level (the top level holds one)
    in_map = False
    # By major type (2 bytes, 3 text): the longest string allowed; no string outruns `size`.
    strings_max = (
        size,
        size,
        size if limits.blob_bytes_max is None else limits.blob_bytes_max,
        size if limits.text_bytes_max is None else limits.text_bytes_max,
    )
    try:
        while True:
            if not remaining:
                if not stack:
                    break
                top = stack.pop()
                remaining, in_map = top >> 1, bool(top & 1)
                continue
            initial = data[pos]  # IndexError past the end: truncated (below)
            pos += 1
            major = initial >> 5
            # A map's items alternate key, value; `remaining` counts both, so a key when even.
            if in_map and strict and not remaining & 1 and major != 2 and major != 3:
                raise FrameError("map_key", f"a map key in a {limits.what} is not a string")
            remaining -= 1
            items += 1
            info = initial & 31
            arg = info
            if info >= 24:
                if info > 27:
                    # 28-30 reserved, 31 indefinite length: never produced by our encoders.
                    raise FrameError(
                        "cbor", f"{limits.what} uses an indefinite length or a reserved header"
                    )
                end = pos + (1 << (info - 24))
                if end > size:
                    raise IndexError
                arg = int.from_bytes(data[pos:end], "big")
                pos = end
            if major < 2:
                continue
            if major < 4:
                if arg > strings_max[major]:
                    start = pos - 1 - (0 if info < 24 else 1 << (info - 24))
                    refused = _string_refused(data, start, major, arg, limits)
                    if refused is None:
                        raise IndexError  # no bound but the data's: truncated
                    raise refused
                pos += arg
                if pos > size:
                    raise IndexError
                continue
            if major == 7:
                # false, true, null; floats (their bytes were consumed as the argument).
                # Simple values and undefined are not storable.
                if 20 <= info <= 22 or 25 <= info <= 27:
                    continue
                raise FrameError("cbor", f"{limits.what} holds a CBOR simple value")
            if major == 6:
                if arg not in REGISTERED_TAGS:
                    raise FrameError(
                        "tag", f"a {limits.what} holds a CBOR tag outside the superstatic registry"
                    )
                if arg == _TAG_DECIMAL:
                    pos, items = _scan_decimal(data, pos, items, limits)
                    continue
                count = 1
            elif major == 4:
                count = arg
            else:
                count = 2 * arg
            if not count:
                continue
            if items + count > items_max:
                raise DecodeLimitExceeded(
                    limits.items_name, items_max, items + count, f"CBOR items in a {limits.what}"
                )
            stack.append(remaining << 1 | in_map)
            if len(stack) > depth_max:
                raise DecodeLimitExceeded(
                    limits.depth_name, depth_max, len(stack), f"nesting of a {limits.what}"
                )
            remaining = count
            in_map = major == 5
    except IndexError:
        raise FrameError("cbor", f"{limits.what} is truncated CBOR") from None
    if pos != size:
        raise FrameError("cbor", f"{limits.what} has {size - pos} bytes after its CBOR item")
    if items > items_max:  # a lone top-level item with items_max 0
        raise DecodeLimitExceeded(
            limits.items_name, items_max, items, f"CBOR items in a {limits.what}"
        )
    return items


def _string_refused(
    data: bytes, start: int, major: int, length: int, limits: DecodeLimits
) -> DecodeLimitExceeded | None:
    """The refusal of the string whose header starts at `start`: its limit, its length in
    bytes and the field holding it (limits.field_of), never its content. None when its kind of
    string has no bound of its own (it is longer than the data: truncated)."""
    text = major == 3
    name = limits.text_name if text else limits.blob_name
    limit = limits.text_bytes_max if text else limits.blob_bytes_max
    if limit is None:
        return None
    where = f"a {limits.what}"
    if limits.field_of is not None:
        where = limits.field_of(data, item_path(data, start))
    kind = "a text" if text else "a byte string"
    return DecodeLimitExceeded(name, limit, length, f"the length in bytes of {kind} in {where}")


def item_path(data: bytes, target: int) -> tuple[tuple[int, int], ...]:
    """The path to the item whose header starts at offset `target`: per enclosing array, map or
    tag, outermost first, the item's index in it (a map counts keys and values: a key even, its
    value odd) and the offset where the item before it there starts (-1: none; a map value's
    key). The top-level item's path is (). For a refusal's message only: `data` up to `target`
    is what `scan` walked already (definite headers, within the items bound), so this walk is as
    bounded; anything unexpected ends it with the path so far."""
    pos = 0
    # Per open container: [index of the item read next in it, items it holds, where the item
    # being read starts, where the one before it started].
    stack: list[list[int]] = []
    try:
        while True:
            if stack:
                top = stack[-1]
                top[3], top[2] = top[2], pos
            if pos >= target:
                break
            initial = data[pos]
            major, info = initial >> 5, initial & 31
            pos += 1
            arg = info
            if info >= 24:
                if info > 27:
                    break
                end = pos + (1 << (info - 24))
                arg = int.from_bytes(data[pos:end], "big")
                pos = end
            if major == 2 or major == 3:
                pos += arg
            count = arg if major == 4 else 2 * arg if major == 5 else 1 if major == 6 else 0
            if count:
                stack.append([0, count, -1, -1])
                continue
            # An item read whole: the next one is its container's next, or its parent's.
            while stack:
                stack[-1][0] += 1
                if stack[-1][0] < stack[-1][1]:
                    break
                stack.pop()
            if not stack:
                break
    except IndexError:
        pass
    return tuple((index, before) for index, _count, _start, before in stack)


def _scan_decimal(data: bytes, pos: int, items: int, limits: DecodeLimits) -> tuple[int, int]:
    """A Decimal's payload, [exponent, mantissa]: ints, the mantissa's bignum bounded."""
    size = len(data)

    def head(at: int) -> tuple[int, int, int]:
        if at >= size:
            raise FrameError("cbor", f"{limits.what} is truncated CBOR")
        initial = data[at]
        info = initial & 31
        if info < 24:
            return initial >> 5, info, at + 1
        if info > 27:
            raise FrameError("decimal", f"a Decimal in a {limits.what} is malformed")
        end = at + 1 + (1 << (info - 24))
        if end > size:
            raise FrameError("cbor", f"{limits.what} is truncated CBOR")
        return initial >> 5, int.from_bytes(data[at + 1 : end], "big"), end

    major, arg, pos = head(pos)
    if major != 4 or arg != 2:
        raise FrameError("decimal", f"a Decimal in a {limits.what} is not [exponent, mantissa]")
    major, _, pos = head(pos)
    if major > 1:
        raise FrameError("decimal", f"a Decimal exponent in a {limits.what} is not an int")
    major, arg, pos = head(pos)
    if major == 6 and arg in _TAG_BIGNUMS:
        major, arg, pos = head(pos)
        if major != 2:
            raise FrameError("decimal", f"a Decimal mantissa in a {limits.what} is malformed")
        if arg > DECIMAL_MANTISSA_BYTES_MAX:
            raise DecodeLimitExceeded(
                "DECIMAL_MANTISSA_BYTES_MAX",
                DECIMAL_MANTISSA_BYTES_MAX,
                arg,
                f"Decimal mantissa bytes in a {limits.what}",
            )
        pos += arg
        if pos > size:
            raise FrameError("cbor", f"{limits.what} is truncated CBOR")
        items += 2
    elif major > 1:
        raise FrameError("decimal", f"a Decimal mantissa in a {limits.what} is not an int")
    items += 3  # the array, the exponent, the mantissa
    if items > limits.items_max:
        raise DecodeLimitExceeded(
            limits.items_name, limits.items_max, items, f"CBOR items in a {limits.what}"
        )
    return pos, items


def loads(data: bytes, limits: DecodeLimits | None = None) -> Any:
    """Decodes CBOR made by `dumps`; anything else raises ProtocolError naming the problem.

    With `limits` (anything that came from outside this process: frames, transaction bodies),
    the input is first `scan`ned, so nothing is built unless it fits the limits and only
    registered tags occur. Without, the caller vouches for the bytes (a record it wrote)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError("type", f"expected CBOR bytes, got {type(data).__qualname__}")
    if limits is not None:
        scan(data, limits)
        depth_max = DECODE_DEPTH_MAX
        strict = limits.str_keys_only
    else:
        depth_max, strict = DECODE_DEPTH_MAX, False
    try:
        return cbor2.loads(
            data,
            tag_hook=_tag_hook,
            semantic_decoders=_SEMANTIC_DECODERS,
            max_depth=depth_max,
            strict_hashable_types=strict,
        )
    except cbor2.CBORDecodeError as e:
        # cbor2's and _tag_hook's messages describe the structure, not the data; capped anyway.
        raise FrameError("cbor", f"undecodable CBOR: {str(e)[:CBOR_MESSAGE_CHARS_MAX]}") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as e:
        # cbor2 lets a few of these through on hostile input (e.g. an unhashable map key).
        raise FrameError(
            "cbor", f"undecodable CBOR: {type(e).__name__}: {str(e)[:CBOR_MESSAGE_CHARS_MAX]}"
        ) from None


# ------------------------------------------------------------------- decoding without the scan
#
# `scan` walks every item header in Python before cbor2 builds anything: on the app, for every
# event body, it cost more than the decode and the checks together (docs/library.md, "Applying
# events"). `loads_unscanned` decodes with cbor2's C decoder under settings that refuse what
# the scan refuses and cbor2 alone would not: no indefinite lengths, no duplicate map keys (a
# discarded first value would never be checked), no tag 4 (a Decimal's mantissa is converted
# in time quadratic in its size: only the scan bounds it), exactly one item (cbor2 ignores
# trailing bytes), and at most `items_max` bytes (every CBOR item takes at least one byte, so
# the scan's item bound cannot be crossed). Unregistered tags are refused by the same hooks as
# in `loads`. What is left to the caller: the types of every decoded value (a simple value
# comes back as a CBORSimpleValue or `undefined`), map keys being strings, and the nesting:
# a caller that checks them all may use the value exactly as `loads(data, limits)` would have
# returned it, and must call `loads(data, limits)` for anything else (it then raises what it
# always raised). NOT_DECODED means "take loads".


class _NotDecoded:
    __slots__ = ()


NOT_DECODED: Any = _NotDecoded()
_UNSCANNED_SEMANTIC_DECODERS = {**_SEMANTIC_DECODERS, _TAG_DECIMAL: _refuse}


class _Decoders(threading.local):
    """One reusable decoder per thread and (depth, strict) setting: a fresh decoder per call
    costs about as much as the decode of a small body itself."""

    def __init__(self) -> None:
        self.by_setting: dict[tuple[int, bool], cbor2.CBORDecoder] = {}


_DECODERS = _Decoders()
# The longest input a reused decoder may keep alive until its thread's next call.
_KEPT_INPUT_BYTES_MAX = 4096


def loads_unscanned(data: bytes, limits: DecodeLimits) -> Any:
    """`data` decoded without `scan` (see above), or NOT_DECODED. The value is NOT checked:
    the caller checks every decoded value's type, the map keys and the nesting, or calls
    `loads(data, limits)`."""
    if type(data) is not bytes or len(data) > limits.items_max or len(data) > limits.bytes_max:
        return NOT_DECODED
    bounded = limits.text_bytes_max is not None or limits.blob_bytes_max is not None
    if bounded and len(data) > strings_unbounded_below(limits):
        return NOT_DECODED  # a string in it could cross a string bound the scan enforces
    setting = (limits.depth_max, limits.str_keys_only)
    decoder = _DECODERS.by_setting.get(setting)
    if decoder is None:
        decoder = _DECODERS.by_setting[setting] = cbor2.CBORDecoder(
            io.BytesIO(b""),
            tag_hook=_tag_hook,
            semantic_decoders=_UNSCANNED_SEMANTIC_DECODERS,
            max_depth=limits.depth_max,
            strict_hashable_types=limits.str_keys_only,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    return _decode_whole(decoder, setting, data)


def strings_unbounded_below(limits: DecodeLimits) -> int:
    """The longest input in which no string can cross `limits`' string bounds (a string is
    shorter than the item holding it)."""
    bounds = (limits.text_bytes_max, limits.blob_bytes_max, limits.bytes_max)
    return min(bound for bound in bounds if bound is not None)


def strings_within(data: bytes, start: int, items: int, text_max: int, blob_max: int) -> bool:
    """Whether the `items` items from offset `start` (one level of an array: scalars or empty
    containers) hold no text longer than `text_max` bytes and no byte string longer than
    `blob_max`, read from their headers alone. False also for anything this does not walk (a
    non-empty container, a tag, an indefinite length, a reserved header, the data ending): the
    caller then takes `loads(data, limits)`, whose scan decides. What a fast decode
    (`loads_shallow`) checks before cbor2 builds a string (review 27). It stops early once the
    data left is too short to hold a string over either bound."""
    size = len(data)
    pos = start
    shortest = min(text_max, blob_max)
    try:
        for _ in range(items):
            if size - pos <= shortest:
                return True
            initial = data[pos]
            major, info = initial >> 5, initial & 31
            pos += 1
            arg = info
            if info >= 24:
                if info > 27:
                    return False
                end = pos + (1 << (info - 24))
                arg = int.from_bytes(data[pos:end], "big")
                pos = end
            if major == 3:
                if arg > text_max:
                    return False
                pos += arg
            elif major == 2:
                if arg > blob_max:
                    return False
                pos += arg
            elif major == 6 or (major > 3 and major < 7 and arg):
                return False  # a tag, or a non-empty array or map: not walked here
    except IndexError:
        return False
    return pos <= size


# Shallow decodes (`loads_shallow`) refuse every tag, cbor2's own included: the agent's frames
# never hold one, and a tag's payload is the one place the registry decides what is built.
_SHALLOW_SEMANTIC_DECODERS = {
    tag: _refuse for tag in (*_SEMANTIC_REFUSED, *_SEMANTIC_KEPT)
}  # fmt: skip
# The types a shallow decode may hand back that `scan` lets through as they are (a simple
# value comes back as a CBORSimpleValue or `undefined`, which scan refuses: not in here).
SHALLOW_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
# Nesting `loads_shallow` is ever asked for (a PROPOSE_MANY: frame, body, items, item).
SHALLOW_DEPTH_MAX = 4


def loads_shallow(data: bytes, depth: int) -> Any:
    """`data` decoded by cbor2's C decoder alone, or NOT_DECODED: at most `depth` levels of
    non-empty containers (arrays, maps; empty ones open no level), no tag at all, no indefinite
    length, map keys only text or byte strings and never twice in one map, exactly one item.
    Anything else, or any doubt, is NOT_DECODED: the caller then takes `loads(data, limits)`.

    For the agent's frames (peer frames, client frames: docs/data-model-v2.md 8.13). What the
    caller must ensure itself, as `scan` would: the bytes within its limit; the number of CBOR
    items within its limit BEFORE calling (cbor2 builds everything before anything is
    checked): from the container headers it read (an array header of at most 23 items with
    `depth` 1 bounds the value to 24 items, whatever its length in bytes) or because
    `len(data)` is at most the items limit (every item takes a byte); no string longer than the
    limits' string bounds, also BEFORE calling (cbor2 builds each string whole): from the
    headers (`strings_within`) or because `len(data)` is at most the bounds
    (`strings_unbounded_below`); and every decoded value's type in SHALLOW_SCALARS (or a list
    or dict whose contents it checks the same way)."""
    if type(data) is not bytes or not 0 < depth <= SHALLOW_DEPTH_MAX:
        return NOT_DECODED
    setting = (-depth, True)  # negative: never one of loads_unscanned's settings
    decoder = _DECODERS.by_setting.get(setting)
    if decoder is None:
        decoder = _DECODERS.by_setting[setting] = cbor2.CBORDecoder(
            io.BytesIO(b""),
            tag_hook=_refuse,
            semantic_decoders=_SHALLOW_SEMANTIC_DECODERS,
            max_depth=depth,
            strict_hashable_types=True,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    return _decode_whole(decoder, setting, data)


def _decode_whole(decoder: cbor2.CBORDecoder, setting: tuple[int, bool], data: bytes) -> Any:
    """`data` decoded by this thread's `decoder` for `setting`, if it is exactly one item."""
    stream = io.BytesIO(data)
    decoder.fp = stream
    try:
        value = decoder.decode()
    except Exception:
        # Hostile or unusual input: loads says what it says. A decoder that failed half way
        # is not reused (its state is cbor2's business).
        _DECODERS.by_setting.pop(setting, None)
        return NOT_DECODED
    end = stream.tell()
    if len(data) > _KEPT_INPUT_BYTES_MAX:
        # The decoder keeps `stream` until its next call: closed, it lets go of `data` (up to
        # a whole EVENTS frame per thread, kept alive for nothing otherwise). Shorter inputs
        # are not worth the call: cbor2 keeps its last read-ahead (4 KiB) anyway.
        stream.close()
    return value if end == len(data) else NOT_DECODED


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
        raise ProtocolError(f"node record version must be an int >= 0, got {describe(version)}")
    check_contents(kind, contents, "node record")
    return version, kind, contents


def check_contents(kind: Any, contents: Any, what: str) -> None:
    """Raises ProtocolError unless `contents` is well-formed for a node of `kind`."""
    # type() first: a list or map in the kind's place is never hashed or compared.
    if type(kind) is not str or kind not in NODE_KINDS:
        raise ProtocolError(
            f"{what}: the node kind must be one of {', '.join(NODE_KINDS)}, got {describe(kind)}"
        )
    if kind == "obj":
        if (
            type(contents) is not list
            or len(contents) != 2
            or type(contents[0]) is not str
            or type(contents[1]) is not list
        ):
            raise ProtocolError(f"{what}: obj contents are [class_name, [[attr, value], ...]]")
        for i, pair in enumerate(contents[1]):
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise ProtocolError(f"{what}: an obj attribute is [str name, value]")
            check_value(pair[1], f"{what} attribute #{i}")
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
