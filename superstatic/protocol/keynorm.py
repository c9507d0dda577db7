"""The normal form of a dict key / set member (docs/data-model-v2.md section 2).

Python makes `1`, `1.0`, `True`, `Decimal(1)`, `Fraction(1)` and an IntEnum member of value 1
the same dict key. A per-key record is found by the bytes of its key, so the key is first put
in a normal form; `ekey(key) = codec.dumps(key_norm(key))` is the key of its record. Equal keys
(as a Python dict matches them) have one normal form, unequal keys different ones.

| key | normal form |
|---|---|
| bool, int, int-valued enum member (`EnumInt`), integral float / Decimal / Fraction | `int` |
| non-integral float, and a Decimal / Fraction exactly equal to a float | `float` |
| other finite Decimal / Fraction | `Fraction` |
| +-infinite float or Decimal | `float` |
| str-valued enum member (`EnumStr`, StrEnum) | `str` |
| naive datetime / time | itself with fold 0 (fold takes no part in their equality) |
| aware datetime | the same instant in UTC (`datetime.timezone.utc`) |
| aware time | the same instant in UTC; past midnight, at offset -+(24h - 1s) |
| tuple / frozenset | of the normal forms of their items |
| NaN (float or Decimal), sNaN | refused: NaN keys match only themselves by identity |
| anything else storable (str, bytes, None, UUID, date, timedelta, Ref, enums) | itself |

Refusals raise `KeyRefused` naming the rule or limit, never the value. Pure: the agent applies
it to every key of an op and of a read set, the library to the keys it records.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import math
from typing import Any

from superstatic.protocol import codec
from superstatic.protocol.errors import ProtocolError

# A Decimal key's adjusted exponent (its power of ten) is within +-this: converting it to an
# int or a Fraction costs time and memory in its size (Decimal('1e999999999') would make a
# billion-digit int). Python itself refuses to print ints of more than 4,300 digits.
KEY_DECIMAL_EXPONENT_MAX = 4300

_UTC = datetime.UTC
_DAY_S = 86_400
# The most negative offset a time may have: a microsecond above -24h.
_OFFSET_PAST_MIDNIGHT_MAX = datetime.timedelta(days=-1, microseconds=1)


class KeyRefused(ProtocolError):
    """A key no replica can store as a dict key or set member; the message names the rule."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"this key cannot be stored: {rule}")
        self.rule = rule


_NAN = "a NaN key (float or Decimal) is refused: NaN is unequal to itself, no replica could find it"


def key_norm(key: Any) -> Any:
    """The normal form of a storable hashable key (see the module docstring)."""
    tp = type(key)
    if tp is str or tp is bytes or key is None or tp is codec.Ref:
        return key
    if tp is int:
        return key
    if tp is float:
        return _norm_float(key)
    if tp is tuple:
        return tuple(key_norm(x) for x in key)
    if tp is frozenset:
        return frozenset(key_norm(x) for x in key)
    if tp is decimal.Decimal:
        return _norm_decimal(key)
    if tp is fractions.Fraction:
        return _norm_fraction(key)
    if tp is datetime.datetime:
        return _norm_datetime(key)
    if tp is datetime.time:
        return _norm_time(key)
    if isinstance(key, bool | int):  # bool, EnumInt, IntEnum / IntFlag members
        return int(key)
    if isinstance(key, str):  # EnumStr, StrEnum members
        return str(key)
    if isinstance(key, float):
        return _norm_float(float(key))
    return key  # date, timedelta, UUID, EnumMember, plain Enum members


def ekey(key: Any) -> bytes:
    """The record key bytes of a key: the canonical CBOR of its normal form."""
    return codec.dumps(key_norm(key))


def _norm_float(value: float) -> Any:
    if value != value:
        raise KeyRefused(_NAN)
    if math.isinf(value) or not value.is_integer():
        return value
    return int(value)


def _norm_decimal(value: decimal.Decimal) -> Any:
    if value.is_nan():
        raise KeyRefused(_NAN)
    if value.is_infinite():
        return float(value)
    if value.is_zero():
        return 0
    if abs(value.adjusted()) > KEY_DECIMAL_EXPONENT_MAX:
        raise KeyRefused(
            "a Decimal key's exponent is within +-KEY_DECIMAL_EXPONENT_MAX="
            f"{KEY_DECIMAL_EXPONENT_MAX}"
        )
    if value == value.to_integral_value():
        return int(value)
    return _norm_rational(fractions.Fraction(value))


def _norm_fraction(value: fractions.Fraction) -> Any:
    if value.denominator == 1:
        return value.numerator
    return _norm_rational(value)


def _norm_rational(value: fractions.Fraction) -> Any:
    """A non-integral rational: the float equal to it if there is one, else itself."""
    try:
        as_float = value.numerator / value.denominator
    except OverflowError:
        return value
    if math.isfinite(as_float) and fractions.Fraction(as_float) == value:
        return as_float
    return value


def _norm_datetime(value: datetime.datetime) -> datetime.datetime:
    offset = value.utcoffset()
    if offset is None:
        return value.replace(fold=0) if value.fold else value
    try:
        return (value.replace(tzinfo=None, fold=0) - offset).replace(tzinfo=_UTC)
    except OverflowError:
        # Outside datetime's range once moved to UTC: it equals no in-range datetime.
        return value


def _norm_time(value: datetime.time) -> datetime.time:
    offset = value.utcoffset()
    if offset is None:
        return value.replace(fold=0) if value.fold else value
    # CPython compares aware times by whole seconds of (time - offset), then by their own
    # microseconds; an offset's sub-second part takes no part (nor here).
    offset_s = offset.days * 86_400 + offset.seconds
    utc_s = value.hour * 3600 + value.minute * 60 + value.second - offset_s
    if utc_s == 2 * _DAY_S - 1:
        # Only 23:59:59 at an offset in (-24h, -(24h - 1s)) holds it: such an offset's whole
        # seconds are -24h (CPython counts days and seconds, not microseconds), no time at
        # -(24h - 1s) reaches it. Its holder: that time at the offset 1 us above -24h.
        return datetime.time(
            23, 59, 59, value.microsecond, tzinfo=datetime.timezone(_OFFSET_PAST_MIDNIGHT_MAX)
        )
    if utc_s >= _DAY_S:
        # Past midnight the instant is held by no time in UTC: its canonical holder is the
        # time at the most negative whole-second offset, -(24h - 1s).
        local_s, offset_s = utc_s - _DAY_S + 1, -(_DAY_S - 1)
    elif utc_s < 0:
        local_s, offset_s = utc_s + _DAY_S - 1, _DAY_S - 1
    else:
        local_s, offset_s = utc_s, 0
    tz = _UTC if offset_s == 0 else datetime.timezone(datetime.timedelta(seconds=offset_s))
    minutes, second = divmod(local_s, 60)
    hour, minute = divmod(minutes, 60)
    return datetime.time(hour, minute, second, value.microsecond, tzinfo=tz)
