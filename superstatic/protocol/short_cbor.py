"""Cheaper bounded decoding of many short CBOR items (a peer snapshot's records: a follower
validates every one of them, docs/data-model-v2.md section 10.1).

`codec.loads(data, limits)` first walks every item header in Python (`codec.scan`), then lets
cbor2's C decoder build the value: for a record of a few dozen bytes the walk and the call
cost three times the decoding itself. The two functions here answer the same question for
short items without the walk, and say so when they cannot be sure:

* `scalar_ok(data)`: True only if `data` is one CBOR scalar whose item alone fixes its length
  (an int, a short byte or ASCII text string, false, true, null, a float) and nothing else, which
  `loads(data, limits)` accepts whatever the limits (one item of at most
  `SCALAR_BYTES_MAX` bytes). False means "not sure", never "invalid".
* `loads_each(values, limits)`: each value decoded by one cbor2 decoder reading them end to end,
  configured so that whatever it returns is exactly what `loads(value, limits)` returns and
  where `loads` would not raise; `UNSURE` in a value's place otherwise. The caller then runs
  the full check on that value (which raises, or accepts: a non-minimal int, a bignum, a
  Decimal, a UUID, a map, a deeply nested value, a long one all take that way).

Why the answers are exact (tests/unit/test_short_cbor.py checks them against `loads` on
random and mutated items): `scan` refuses more than the limits' bytes, items or depth; a tag
outside the registry; an indefinite length; a simple value or reserved header; bytes after the
item; a Decimal mantissa over `DECIMAL_MANTISSA_BYTES_MAX`. Here:
* only values of at most `SHORT_BYTES_MAX` bytes are decoded, and only when the limits allow
  that many bytes and items (an item takes at least one byte) and strings of that many bytes,
  so bytes, items and strings are within them; nesting is cut at `SHORT_DEPTH_MAX` levels of
  arrays (a tag of the registry wraps an array or a scalar), far below any limit this is used
  with (checked at the call);
* every tag cbor2 decodes itself is refused, the ones the registry keeps too (bignums,
  Decimal, UUID: their full check decides), so no mantissa is ever converted; every other tag
  goes through codec's own tag hook, which builds registered values exactly as `loads` does and
  refuses the rest;
* indefinite lengths are refused by cbor2 (`allow_indefinite=False`), and so are reserved
  headers; maps by the object hook (a record never holds one: the full check decides). cbor2
  would build a simple value or `undefined`, which `scan` refuses: a value holding any byte
  that could start one (0xe0-0xf3, 0xf7, 0xf8) anywhere, even inside a string or an int's
  argument, is not decoded here but by `loads` itself, its header walk included (one
  regular-expression pass over all the values finds them);
* the decoder reads the values end to end from one buffer: a value is decoded only if the
  decoder stopped exactly at its end (`tell()`), so neither trailing bytes nor a value that
  runs on into the next one are taken. After any doubt the next value is read by a new
  decoder from its own start.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import cbor2

from superstatic.protocol.codec import (
    _SEMANTIC_KEPT,
    _SEMANTIC_REFUSED,
    OID_CHARS_MAX,
    TAG_REF,
    DecodeLimits,
    Ref,
    _refuse,
    _tag_hook,
    loads,
    strings_unbounded_below,
)
from superstatic.protocol.errors import ProtocolError

# Longest value `loads_each` decodes; longer ones take the full check (their decoding, not the
# header walk, is most of its cost). Ids, headers, entries and keys are far shorter.
SHORT_BYTES_MAX = 4096
# Nesting of arrays the decoder follows; deeper values take the full check. A limit used here
# must allow twice as much (a registry tag may wrap each array).
SHORT_DEPTH_MAX = 16
# Bytes the decoder reads ahead (cbor2's default, 4,096, copied a page per short value).
_READ_BYTES = 16
# Longest item `scalar_ok` answers for (a string with a one-byte length: 2 + 255 bytes).
SCALAR_BYTES_MAX = 257


class _Unsure:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSURE"


# In a value's place: not decoded here; the caller checks that value fully.
UNSURE: Any = _Unsure()

# Every tag cbor2 would build itself, refused before it reads the payload.
_NATIVE_TAGS_REFUSED = {tag: _refuse for tag in (*_SEMANTIC_REFUSED, *_SEMANTIC_KEPT)}


# Initial bytes of simple values (0-19, 23 `undefined`, and one-byte simple values 32-255),
# which `scan` refuses and cbor2 builds.
_SIMPLE_INITIAL = re.compile(rb"[\xe0-\xf3\xf7\xf8]")


def _no_maps(*_args: Any) -> Any:
    raise cbor2.CBORDecodeError("a map (its full check decides)")


def _ref_first(tag: cbor2.CBORTag, immutable: bool) -> Any:
    """codec's tag hook, a Ref (the commonest tag in records) tested first: the same result."""
    if tag.tag == TAG_REF:
        oid = tag.value
        if type(oid) is str and 0 < len(oid) <= OID_CHARS_MAX:
            return Ref(oid)
    return _tag_hook(tag, immutable)


def _decoder(stream: io.BytesIO) -> Any:
    return cbor2.CBORDecoder(
        stream,
        tag_hook=_ref_first,
        object_hook=_no_maps,
        semantic_decoders=_NATIVE_TAGS_REFUSED,
        max_depth=SHORT_DEPTH_MAX,
        allow_indefinite=False,
        read_size=_READ_BYTES,
    )


def loads_each(values: Sequence[bytes], limits: DecodeLimits) -> list[Any]:
    """`[loads(v, limits) for v in values]` where that is certain to decode, `UNSURE` in the
    other places (see the module's docstring). Never raises for what the values hold."""
    if limits.depth_max < 2 * SHORT_DEPTH_MAX + 2 or not all(type(v) is bytes for v in values):
        return [UNSURE] * len(values)
    # A value no longer than the limits' string bounds holds no string crossing them.
    longest = min(SHORT_BYTES_MAX, strings_unbounded_below(limits), limits.items_max)
    data = b"".join(values)
    # Offsets of every byte that could start a simple value, in order (then a sentinel).
    doubts = [found.start() for found in _SIMPLE_INITIAL.finditer(data)]
    doubts.append(len(data))
    doubt = 0
    stream = io.BytesIO(data)
    decoder = _decoder(stream)
    decode, tell = decoder.decode, stream.tell
    out: list[Any] = []
    append = out.append
    end = 0
    for value in values:
        start = end
        end += len(value)
        while doubts[doubt] < start:
            doubt += 1
        if end - start > longest:
            append(UNSURE)
        elif doubts[doubt] >= end:
            try:
                decoded = decode()
            except Exception:  # cbor2 raises several types; the full check names the fault
                decoded = UNSURE
            if decoded is not UNSURE and tell() == end:
                append(decoded)
                continue
            append(UNSURE)
        else:
            # A byte that may start a simple value (most often inside an int's argument: a
            # value holding an int >= 24 has one in ~8% of its bytes): the walk decides.
            try:
                append(loads(value, limits))
            except ProtocolError:
                append(UNSURE)
        # The next value is read from its own start by a decoder without state.
        stream.seek(end)
        decoder = _decoder(stream)
        decode = decoder.decode
    return out


def _scalar_sizes() -> tuple[list[int], list[bool]]:
    """Per initial byte: the item's whole length when the byte fixes it (0: not a scalar we
    answer for; -1: a string whose one-byte length follows), and whether it is text."""
    sizes, text = [0] * 256, [False] * 256
    for major in (0, 1):  # ints: the argument in the byte, or 1, 2, 4, 8 bytes after it
        for info in range(28):
            sizes[major << 5 | info] = 1 if info < 24 else 1 + (1 << (info - 24))
    for major in (2, 3):  # byte and text strings: up to 23 bytes, or a one-byte length
        for info in range(25):
            sizes[major << 5 | info] = 1 + info if info < 24 else -1
            text[major << 5 | info] = major == 3
    for initial, size in ((0xF4, 1), (0xF5, 1), (0xF6, 1), (0xF9, 3), (0xFA, 5), (0xFB, 9)):
        sizes[initial] = size  # false, true, null; half, single and double floats
    return sizes, text


_SCALAR_SIZE, _SCALAR_TEXT = _scalar_sizes()


def scalar_ok(data: bytes) -> bool:
    """True only if `data` is exactly one CBOR int, byte string or ASCII text string (with at
    most a one-byte length), false, true, null or float: an item every `loads(data, limits)`
    with room for one item of `len(data)` bytes (and no string bound below that) accepts.
    False: not sure (check it fully)."""
    if not 0 < len(data) <= SCALAR_BYTES_MAX:
        return False
    initial = data[0]
    size = _SCALAR_SIZE[initial]
    if size >= 0:
        # Text must be UTF-8 to decode: ASCII is (a longer check is the full one's).
        return size == len(data) and (not _SCALAR_TEXT[initial] or data.isascii())
    # A string with a one-byte length (which may be 0x80 or more: not part of the text).
    return (
        len(data) > 1
        and 2 + data[1] == len(data)
        and (not _SCALAR_TEXT[initial] or data[2:].isascii())
    )
