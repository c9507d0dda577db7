"""CBOR written by hand in every form a decoder must take, and values at the edges where a fast
path and the full one could part: for the tests that compare the agent's fast paths with the
generic ones (tests/unit/test_set_bodies.py, test_fastpath_parity.py).

cbor2 and codec.dumps always write an item's header in its shortest form; a hostile client may
write any of the four widths (an int 5 as `18 05`, `19 00 05`, ...), and every decoder of the
cluster must read them alike. `encode` writes ints, texts, arrays and maps with a header width
drawn per item; anything else (tags, floats, bytes, simple values) as codec.dumps does.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from superstatic.protocol import codec

# Header argument widths in bytes: 0 is the shortest form (inline when below 24).
WIDTHS = (0, 1, 2, 4, 8)
_INFO_OF_WIDTH = {1: 24, 2: 25, 4: 26, 8: 27}

# Ints at every header boundary, at the int64 / uint64 edges and past them (bignums, tag 2/3).
EDGE_INTS = (
    0, 1, 23, 24, 255, 256, 65_535, 65_536, (1 << 32) - 1, 1 << 32,
    (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64,
    -1, -24, -25, -256, -257, -(1 << 63), -(1 << 63) - 1, -(1 << 64), -(1 << 64) - 1,
)  # fmt: skip
# Texts at the one-byte-header boundary (23 / 24 bytes), the one-byte-length one (255 / 256),
# NUL, a BOM (which "utf-8-sig" would strip), non-BMP chars, dunders (refused as attributes),
# and the texts of ints (a different key than the int).
EDGE_TEXTS = (
    "", "k", "1", "\x00", "a\x00b", "x" * 23, "x" * 24, "y" * 255, "z" * 256, "é" * 12,
    "\U0001f600" * 6, "\ufeffk", "__class__", "__x__", "v" * 100,
)  # fmt: skip
# UTF-8 no strict decoder accepts: a surrogate, overlong NUL and '/', a 5-byte form, past
# U+10FFFF, a lone continuation byte, a truncated 3-byte char.
INVALID_UTF8 = (
    b"\xed\xa0\x80", b"\xc0\x80", b"\xe0\x80\xaf", b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80",
    b"\x80", b"a\xe2\x82",
)  # fmt: skip
# Values a lone set may carry that are not a text or an int: each needs the full path (a tag,
# a float, a simple value), and several equal an int or a text as a Python key (True == 1,
# 1.0 == 1, Decimal(1) == 1) but are another value on the wire.
OTHER_VALUES = (
    None, True, False, 1.0, 0.0, -0.0, 1.5, float("inf"), b"", b"k", decimal.Decimal(1),
    decimal.Decimal("-0"), decimal.Decimal("1.5"), fractions.Fraction(1, 2), (1,), (), ("k",),
    frozenset({1}), uuid.UUID(int=5), datetime.date(2026, 12, 7), codec.Ref("kv"),
    # An IntEnum / StrEnum member as the agent holds it: an int / a str to isinstance, and
    # equal to 1 / "r" as a key, but tag 55811 on the wire and in every record.
    codec.enum_form("Color", codec.ENUM_BY_INT, 1), codec.enum_form("Mode", codec.ENUM_BY_STR, "r"),
)  # fmt: skip

edge_ints = st.sampled_from(EDGE_INTS) | st.integers(-30, 30)
edge_texts = st.sampled_from(EDGE_TEXTS) | st.text(max_size=30)
other_values = st.sampled_from(OTHER_VALUES)
scalars = edge_ints | edge_texts | other_values


class Raw:
    """Bytes `encode` writes as they are (an item no encoder would make, e.g. bad UTF-8)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def text_item(utf8: bytes, width: int = 0) -> Raw:
    """A text item of these bytes, valid UTF-8 or not."""
    return Raw(head(3, len(utf8), width) + utf8)


def head(major: int, arg: int, width: int) -> bytes:
    """An item header; `width` 0 is the shortest form, else the argument takes `width` bytes
    (widened to the shortest that holds it)."""
    assert 0 <= arg < 1 << 64, arg
    if width == 0:
        if arg < 24:
            return bytes([major << 5 | arg])
        width = 1 if arg < 1 << 8 else 2 if arg < 1 << 16 else 4 if arg < 1 << 32 else 8
    while arg >= 1 << (8 * width):
        width *= 2
    return bytes([major << 5 | _INFO_OF_WIDTH[width]]) + arg.to_bytes(width, "big")


def fixed(width: int) -> Callable[[], int]:
    """Every header `width` wide (0: the shortest form, as cbor2 writes it)."""
    return lambda: width


def encode(value: Any, width: Callable[[], int]) -> bytes:
    """CBOR of `value`, each int / text / array / map header `width()` wide."""
    tp = type(value)
    if tp is Raw:
        return value.data  # type: ignore[no-any-return]
    if tp is int and -(1 << 64) <= value < 1 << 64:
        return head(0, value, width()) if value >= 0 else head(1, -1 - value, width())
    if tp is str:
        data = value.encode()
        return head(3, len(data), width()) + data
    if tp is list:
        return head(4, len(value), width()) + b"".join(encode(x, width) for x in value)
    if tp is dict:
        items = b"".join(encode(k, width) + encode(v, width) for k, v in value.items())
        return head(5, len(value), width()) + items
    return codec.dumps(value)


def strict(value: Any) -> Any:
    """`value` with every type made part of it (and a float's sign and bits), for comparing
    decoded structures: `==` alone takes True for 1, 1.0 for 1 and -0.0 for 0.0."""
    tp = type(value)
    if tp is list or tp is tuple:
        return (tp.__name__, [strict(x) for x in value])
    if tp is dict:
        return ("dict", [(strict(k), strict(v)) for k, v in value.items()])
    if tp is float:
        return ("float", value.hex())
    if tp is frozenset:
        return ("frozenset", sorted(repr(strict(x)) for x in value))
    return (tp.__qualname__, value)
