"""The transaction bodies nearly every write sends, decoded without the generic path.

A lone write (`kv[key] = value`, `obj.attr = value`) sends a model-2 body that reads nothing
and sets keys: `{"v": 2, "a": base, "r": {}, "o": [["set", oid, key, value], ...]}` with str
or int keys and values. `ops.decode_body` first walks every CBOR item header in Python
(`codec.scan`: the bounds, the tag registry), then has cbor2 build the map, then checks its
shape: about 7 us of a ~50 us apply per write (docs/data-model-v2.md 8.6). Here the bytes of
exactly that shape are read in one pass, and every op is then checked by `ops.check_op` as the
full path checks it.

Exactly as the full path or not at all: `decode_body` returns what `ops.decode_body` would
return for the same bytes. The fast reader accepts only a strict subset of what the scan and
cbor2 accept (shortest-form headers of the map and its keys, the 1-char keys in the encoder's
order, definite lengths, text or int items, no tags, nothing after the map; few enough ops
that the item and byte bounds cannot be reached), and builds the same values cbor2 builds
from them; anything else, and any op `check_op` refuses, takes `ops.decode_body`, which
accepts or refuses it with its own message. tests/unit/test_set_bodies.py compares the two on
encoded, mutated and random bodies.
"""

from __future__ import annotations

from typing import Any

from superstatic.protocol import ops

# {"v": 2, "a": then the base index; "r": {}, "o": then the ops array; each op's head.
_HEAD = b"\xa4\x61v\x02\x61a"
_NO_READS_THEN_OPS = b"\x61r\xa0\x61o"
_SET_OP = b"\x84\x63set"
# Ops a body may have to be read here: 9 + 5 per op CBOR items stay far below TXN_ITEMS_MAX
# (1 << 20), and a bigger body's one-time scan is small next to its apply.
FAST_OPS_MAX = 256
_INT64_MAX = (1 << 63) - 1


class _NotThisShape(Exception):
    """The bytes are not the shape read here (never escapes: the full path takes them)."""


def _head(body: bytes, pos: int) -> tuple[int, int, int]:
    """(major type, argument, position after the header) of the item at `pos`."""
    initial = body[pos]
    info = initial & 31
    if info < 24:
        return initial >> 5, info, pos + 1
    if info > 27:
        raise _NotThisShape  # indefinite lengths and reserved headers
    end = pos + 1 + (1 << (info - 24))
    if end > len(body):
        raise _NotThisShape
    return initial >> 5, int.from_bytes(body[pos + 1 : end], "big"), end


def _scalar(body: bytes, pos: int) -> tuple[Any, int]:
    """A text string or an int, as cbor2 decodes it."""
    initial = body[pos]
    if 0x60 <= initial <= 0x77:  # a text of at most 23 bytes: its header is one byte
        end = pos + initial - 0x5F
        if end > len(body):
            raise _NotThisShape
        return body[pos + 1 : end].decode("utf-8"), end  # strict, as cbor2's
    if initial < 24:  # an int 0..23
        return initial, pos + 1
    if initial == 0x78:  # a text of 24..255 bytes: a one-byte length
        start = pos + 2
        end = start + body[pos + 1]
        if end > len(body):
            raise _NotThisShape
        return body[start:end].decode("utf-8"), end
    major, arg, pos = _head(body, pos)
    if major == 3:
        end = pos + arg
        if end > len(body):
            raise _NotThisShape
        return body[pos:end].decode("utf-8"), end
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    raise _NotThisShape


def read_set_body(body: bytes) -> tuple[int, list[list[Any]]] | None:
    """(base index, ops) of a body of the shape above, as cbor2 would build them; None for
    any other bytes. Nothing is checked beyond the shape: see `decode_body`."""
    if not body.startswith(_HEAD) or len(body) > ops.TXN_BODY_BYTES_MAX:
        return None
    try:
        major, base, pos = _head(body, len(_HEAD))
        if major != 0 or body[pos : pos + len(_NO_READS_THEN_OPS)] != _NO_READS_THEN_OPS:
            return None
        major, count, pos = _head(body, pos + len(_NO_READS_THEN_OPS))
        if major != 4 or not 1 <= count <= FAST_OPS_MAX:
            return None
        wire_ops: list[list[Any]] = []
        for _ in range(count):
            if body[pos : pos + len(_SET_OP)] != _SET_OP:
                return None
            pos += len(_SET_OP)
            initial = body[pos]
            if 0x60 <= initial <= 0x77:  # a text of at most 23 bytes: its header is one byte
                end = pos + initial - 0x5F
                if end > len(body):
                    return None
                oid = body[pos + 1 : end].decode("utf-8")
                pos = end
            else:
                oid, pos = _scalar(body, pos)
                if type(oid) is not str:
                    return None
            key, pos = _scalar(body, pos)
            value, pos = _scalar(body, pos)
            wire_ops.append(["set", oid, key, value])
    except (_NotThisShape, IndexError, UnicodeDecodeError):
        return None
    if pos != len(body):
        return None
    return base, wire_ops


def decode_body(body: bytes) -> ops.TxnBody:
    """`ops.decode_body(body)`: the same TxnBody, or the same exception."""
    found = read_set_body(body)
    if found is not None:
        base, wire_ops = found
        if base <= _INT64_MAX:
            try:
                for i, op in enumerate(wire_ops):
                    ops.check_op(op, i)
            except Exception:
                pass  # refused: the full path refuses it the same way, with its message
            else:
                return ops.TxnBody(2, base, {}, {}, wire_ops)
    return ops.decode_body(body)
