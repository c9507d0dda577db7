"""The client protocol between an app and its agent: one ZeroMQ message per frame.

A frame is CBOR `[PROTOCOL_VERSION, type, req_id, body]` (docs/architecture.md section 5). This
module is pure: it turns frames into bytes and bytes into validated frames, and nothing else. Both
the agent (server side) and `superstatic.client.connection` (client side) use it, so the two
cannot drift.

Decoding never trusts its input: size first, then a scan of the CBOR headers bounded in items,
depth and the length of every text (CLIENT_TEXT_BYTES_MAX, refused at its header) that admits
only the codec's registered tags (`codec.loads` with `DecodeLimits`), then the shape, then
every field of the frame's type (`check_client_body`). (EVENTS frames, the app's
most frequent, are decoded by cbor2 without the scan when every value of them is then checked,
which refuses exactly what the scan refuses: `_events_frame_sure`; so are the agent's frames of
the usual shape, their body map's header bounding what they hold: `_client_frame_shallow`,
docs/data-model-v2.md 8.13.) Anything off raises a `ProtocolError` (a `codec.FrameError` with a
reason slug) naming the field, its type and size and the limit, never the value; the caller
counts and drops it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import cbor2

from superstatic.protocol import codec
from superstatic.protocol.codec import DecodeLimits, FrameError, describe
from superstatic.protocol.errors import LimitExceeded

PROTOCOL_VERSION = 1
# The data model the agent and the library speak (docs/data-model-v2.md section 7): the agent
# says it in its HELLO reply, the library in its HELLO and SUBSCRIBE; each refuses the other
# without it (model 1 streamed whole-record snapshots a model-2 library cannot read, and back).
DATA_MODEL = 2

# One frame carries at most one snapshot chunk or one batch of events; 16 MiB keeps a single
# frame from pinning unbounded memory in either process while leaving room for large batches.
FRAME_BYTES_MAX = 16 << 20
# Depth of nested CBOR a frame may hold: bodies are shallow maps, the deepest legitimate content
# is a transaction body carried as bytes (decoded separately under its own limits).
FRAME_DEPTH_MAX = 16
# Client ids are chosen by clients (128-bit random hex); the bound keeps session keys small.
CLIENT_ID_CHARS_MAX = 64
# req_id is echoed back; it must fit the 64-bit unsigned range so both sides can store it cheaply.
REQ_ID_MAX = (1 << 64) - 1
# CBOR items in an app -> agent frame. The largest is a PROPOSE: [v, type, req_id, map of 5] =
# 15 items (its transaction body is one byte string, scanned separately); 64 leaves room for new
# fields. Counted while scanning, so a 15 MiB frame of empty arrays is refused at its header.
CLIENT_FRAME_ITEMS_MAX = 64
# The longest text any field of an app -> agent frame may hold, in UTF-8 bytes: an INSPECT path
# step of INSPECT_KEY_CHARS_MAX 4-byte characters (client ids, root names, oids and endpoints are
# shorter). The scan refuses a longer text, a map key too, at its header before it is built
# (review 27: a text of 4-byte characters costs CPython ~6x its bytes while it is decoded, so a
# 16 MiB frame's refusal peaked at ~100 MiB); an unknown field's text must fit it as well.
CLIENT_TEXT_BYTES_MAX = 4 << 10
# Proposals one PROPOSE_MANY frame may carry (and FRAME_BYTES_MAX bounds their bytes): what the
# library's I/O thread coalesces from concurrent callers in one go.
PROPOSE_ITEMS_MAX = 256
# CBOR items of one PROPOSE_MANY item: [req_id, seq, kind, body, trace] and its array header.
PROPOSE_ITEM_CBOR_ITEMS = 6
# CBOR items in a PROPOSE_MANY frame: its header and fields (as CLIENT_FRAME_ITEMS_MAX allows a
# PROPOSE) plus PROPOSE_ITEMS_MAX items. Chosen by the frame's type, read from its first bytes
# before anything is decoded, so other frames keep the small bound.
PROPOSE_MANY_FRAME_ITEMS_MAX = CLIENT_FRAME_ITEMS_MAX + PROPOSE_ITEMS_MAX * PROPOSE_ITEM_CBOR_ITEMS
# Answers one REPLY_MANY frame carries at most (and FRAME_BYTES_MAX bounds their bytes): as
# many as one PROPOSE_MANY frame asks, so the agent's chunks follow the app's frames.
REPLY_ITEMS_MAX = PROPOSE_ITEMS_MAX
# The write frames' (PROPOSE, PROPOSE_MANY) field saying this connection reads REPLY_MANY: an
# agent that predates it ignores it (unknown fields are), one that knows it answers without it
# with REPLYs only, so either side may be older (docs/data-model-v2.md 8.11).
REPLY_MANY_FIELD = "reply_many"
# CBOR items in an agent -> app frame (decoded by the library): an EVENTS frame holds up to
# events_frame_entries_max events of ~8 items, a SNAPSHOT frame ~1 MiB of [oid, record] pairs.
AGENT_FRAME_ITEMS_MAX = 1 << 22
# seq, seq_low, SUBSCRIBE.from: stored as 64-bit signed ints in the log (payload.PAYLOAD_INT_MAX).
SEQ_MAX = (1 << 63) - 1
INDEX_MAX = (1 << 63) - 1
# INSPECT root names (the agent's ROOT_NAME_CHARS_MAX agrees).
ROOT_NAME_CHARS_MAX = 256
# A session id is the log index of its "open" entry: a 63-bit int like every stored index.
SESSION_ID_MAX = (1 << 63) - 1
# Agent ids in a MEMBERS request: the agent's own bound on node ids (config.NODE_ID_CHARS_MAX;
# the agent asserts the two agree, this module may not import the agent).
MEMBER_ID_CHARS_MAX = 64
# A peer endpoint in a MEMBERS request: the Raft core's bound on stored addresses
# (raft.types.ADDRESS_BYTES_MAX; asserted equal by the agent too).
MEMBER_ADDRESS_BYTES_MAX = 1024
# What zmq.connect accepts between agents (the same list as a peer JOIN).
MEMBER_ADDRESS_SCHEMES = ("tcp://", "ipc://")


class FrameType(enum.IntEnum):
    # client -> agent
    HELLO = 1
    PROPOSE = 2
    SUBSCRIBE = 3
    UNSUBSCRIBE = 4
    READ_INDEX = 5
    STATUS = 6
    INSPECT = 7
    PING = 8
    MEMBERS = 9
    PROPOSE_MANY = 10  # many PROPOSEs of one connection in one frame (docs/data-model-v2.md 6)
    # The virtual heap (docs/virtual-heap.md section 2.2): fault nodes in, drop them, declare
    # the held set after a reconnect.
    LOAD = 11
    DROP = 12
    HOLD = 13
    # agent -> client
    REPLY = 64
    ERROR = 65
    EVENTS = 66
    SNAPSHOT = 67
    LOADED = 68  # on the stream: the subscription's req_id
    # The REPLYs one Ready gives one connection, in one frame (docs/data-model-v2.md 8.11).
    REPLY_MANY = 69


CLIENT_TO_AGENT = frozenset(
    {
        FrameType.HELLO,
        FrameType.PROPOSE,
        FrameType.SUBSCRIBE,
        FrameType.UNSUBSCRIBE,
        FrameType.READ_INDEX,
        FrameType.STATUS,
        FrameType.INSPECT,
        FrameType.PING,
        FrameType.MEMBERS,
        FrameType.PROPOSE_MANY,
        FrameType.LOAD,
        FrameType.DROP,
        FrameType.HOLD,
    }
)
AGENT_TO_CLIENT = frozenset(
    {
        FrameType.REPLY,
        FrameType.ERROR,
        FrameType.EVENTS,
        FrameType.SNAPSHOT,
        FrameType.LOADED,
        FrameType.REPLY_MANY,
    }
)
HEAP_FRAMES = frozenset({FrameType.LOAD, FrameType.DROP, FrameType.HOLD})


class ErrorCode(enum.StrEnum):
    NOT_LEADER = "not_leader"  # no leader known; retry elsewhere or later
    UNAVAILABLE = "unavailable"  # no quorum / shutting down; outcome of a PROPOSE unknown
    TOO_LARGE = "too_large"  # a named size limit was hit; never retry unchanged
    BAD_REQUEST = "bad_request"  # malformed or invalid body; never retry unchanged
    BUSY = "busy"  # a bounded queue is full; retry after a pause
    LAGGING = "lagging"  # subscriber fell behind the bounded buffer: resubscribe
    STORE_FULL = "store_full"  # the agent's store is (nearly) full: the write was not proposed
    FORBIDDEN = "forbidden"  # the key's role may not do this, or the key was revoked: AuthError


PROPOSE_KINDS = frozenset({"txn", "open", "close"})
# MEMBERS ops: three configuration changes through the log, and a leadership transfer.
MEMBERS_OPS = frozenset({"add_learner", "promote", "remove", "transfer"})


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    req_id: int
    body: Any


# The body fields of app -> agent frames (every key `check_client_body` and the agent read): a
# refusal names one of these, or says "a field" (a key is never quoted: it is untrusted).
_BODY_FIELDS = frozenset(
    {
        "client", "seq", "seq_low", "kind", "body", "session", REPLY_MANY_FIELD, "items",
        "from", "model", "heap", "hold_parts", "answers", "sub", "oids", "keys",
        "prefetch_bytes", "whole", "part", "last", "root", "oid", "list", "depth", "limit",
        "path", "op", "node", "address", "stream", "trace",
    }
)  # fmt: skip
# Longest key compared with _BODY_FIELDS.
_BODY_FIELD_CHARS_MAX = 16
_ENVELOPE = ("version", "type", "req_id", "body")


def client_field(data: bytes, path: tuple[tuple[int, int], ...]) -> str:
    """The field of an app's frame at `path` (codec.item_path), for a refusal's message: the
    envelope's position, or the body field by its name when it is one the agent reads, or a
    key; a fixed text, never the value."""
    frame_type = _FRAME_TYPES.get(_type_of(data) or -1)
    frame = "a client frame"
    if frame_type is not None:
        frame = f"{'an' if frame_type.name[0] in 'AEIOU' else 'a'} {frame_type.name} frame"
    if not path:
        return frame
    index = path[0][0]
    if index < 3 or len(path) == 1:
        return f"{_ENVELOPE[index] if index < 4 else 'an item'} of {frame}"
    step, key_at = path[1]
    if not step & 1:
        return f"a key of the body of {frame}"
    name = "a field"
    initial = data[key_at] if 0 <= key_at < len(data) else 0
    if 0x61 <= initial <= 0x60 + _BODY_FIELD_CHARS_MAX:
        key = data[key_at + 1 : key_at + 1 + (initial - 0x60)]
        if key.isascii() and key.decode() in _BODY_FIELDS:
            name = f"the field {key.decode()}"
    nested = " (inside it)" if len(path) > 2 else ""
    return f"{name}{nested} of the body of {frame}"


CLIENT_FRAME_LIMITS = DecodeLimits(
    what="client frame",
    bytes_max=FRAME_BYTES_MAX,
    bytes_name="FRAME_BYTES_MAX",
    items_max=CLIENT_FRAME_ITEMS_MAX,
    items_name="CLIENT_FRAME_ITEMS_MAX",
    depth_max=FRAME_DEPTH_MAX,
    depth_name="FRAME_DEPTH_MAX",
    text_bytes_max=CLIENT_TEXT_BYTES_MAX,
    text_name="CLIENT_TEXT_BYTES_MAX",
    field_of=client_field,
)
PROPOSE_MANY_FRAME_LIMITS = DecodeLimits(
    what="client frame",
    bytes_max=FRAME_BYTES_MAX,
    bytes_name="FRAME_BYTES_MAX",
    items_max=PROPOSE_MANY_FRAME_ITEMS_MAX,
    items_name="PROPOSE_MANY_FRAME_ITEMS_MAX",
    depth_max=FRAME_DEPTH_MAX,
    depth_name="FRAME_DEPTH_MAX",
    text_bytes_max=CLIENT_TEXT_BYTES_MAX,
    text_name="CLIENT_TEXT_BYTES_MAX",
    field_of=client_field,
)
AGENT_FRAME_LIMITS = DecodeLimits(
    what="agent frame",
    bytes_max=FRAME_BYTES_MAX,
    bytes_name="FRAME_BYTES_MAX",
    items_max=AGENT_FRAME_ITEMS_MAX,
    items_name="AGENT_FRAME_ITEMS_MAX",
    depth_max=FRAME_DEPTH_MAX,
    depth_name="FRAME_DEPTH_MAX",
)


def encode(frame_type: FrameType, req_id: int, body: Any) -> bytes:
    """Encodes one frame; raises LimitExceeded if it would not fit FRAME_BYTES_MAX."""
    assert 0 <= req_id <= REQ_ID_MAX, req_id
    data = cbor2.dumps([PROTOCOL_VERSION, int(frame_type), req_id, body])
    if len(data) > FRAME_BYTES_MAX:
        raise LimitExceeded("FRAME_BYTES_MAX", FRAME_BYTES_MAX, len(data), "frame size in bytes")
    return data


def decode(data: bytes, allowed: frozenset[FrameType], limits: DecodeLimits | None = None) -> Frame:
    """Decodes and validates one frame whose type must be in `allowed`.

    Raises ProtocolError for anything else: too large, too many items or too deep (a
    `LimitExceeded` too), not CBOR, a tag outside the registry, wrong version, unknown type,
    wrong shape. The message names the problem so the agent's log says what a bad peer sent.
    `limits` defaults to the bounds of the direction (app -> agent frames are small).
    """
    if limits is None:
        limits = CLIENT_FRAME_LIMITS if allowed <= CLIENT_TO_AGENT else AGENT_FRAME_LIMITS
        if FrameType.PROPOSE_MANY in allowed and _type_of(data) == FrameType.PROPOSE_MANY:
            limits = PROPOSE_MANY_FRAME_LIMITS
    raw = codec.NOT_DECODED
    if allowed <= CLIENT_TO_AGENT:
        # The agent's frames from apps: those of our shape decoded by cbor2 alone (the same
        # value as through codec.loads, or codec.loads decides: _client_frame_shallow).
        raw = _client_frame_shallow(data, limits)
    elif limits is AGENT_FRAME_LIMITS and _type_of(data) == FrameType.EVENTS:
        # The app's most frequent frame: decoded without the scan when every value of it is
        # checked by _events_frame_sure (the same frame and outcome as through codec.loads).
        raw = codec.loads_unscanned(data, limits)
        if raw is not codec.NOT_DECODED and not _events_frame_sure(raw):
            raw = codec.NOT_DECODED
    if raw is codec.NOT_DECODED:
        raw = codec.loads(data, limits)
    return _frame_of(raw, allowed)


def decode_scanned(
    data: bytes, allowed: frozenset[FrameType], limits: DecodeLimits | None = None
) -> Frame:
    """`decode` the old way, for every frame: `codec.loads` (the scan, then cbor2), then the
    checks. What `decode` falls back to, and what tests compare its fast paths with."""
    if limits is None:
        limits = CLIENT_FRAME_LIMITS if allowed <= CLIENT_TO_AGENT else AGENT_FRAME_LIMITS
        if FrameType.PROPOSE_MANY in allowed and _peek_header(data, 1) == FrameType.PROPOSE_MANY:
            limits = PROPOSE_MANY_FRAME_LIMITS
    return _frame_of(codec.loads(data, limits), allowed)


def _type_of(data: bytes) -> int | None:
    """_peek_header(data, 1), read directly from the frame's first three bytes when they are
    what our encoder writes (an array of 4, version 1, a type below 24)."""
    if len(data) > 2 and data[0] == 0x84 and data[1] == PROTOCOL_VERSION and data[2] < 24:
        return data[2]
    return _peek_header(data, 1)


# Frame types by value: a dict lookup, not the enum's call (several times its cost).
_FRAME_TYPES: dict[int, FrameType] = {member.value: member for member in FrameType}


def _frame_of(raw: Any, allowed: frozenset[FrameType]) -> Frame:
    """The Frame of a decoded frame's value, its envelope checked."""
    if type(raw) is not list or len(raw) != 4:
        raise FrameError("shape", "frame must be a CBOR array [version, type, req_id, body]")
    version, type_raw, req_id, body = raw
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise FrameError(
            "version",
            f"protocol version must be the int {PROTOCOL_VERSION}, got {describe(version)}",
        )
    if type(type_raw) is not int:
        raise FrameError("type", f"frame type must be an integer, got {describe(type_raw)}")
    frame_type = _FRAME_TYPES.get(type_raw)
    if frame_type is None:
        raise FrameError("type", f"unknown frame type ({describe(type_raw)})")
    if frame_type not in allowed:
        raise FrameError(
            "direction", f"frame type {frame_type.name} is not allowed in this direction"
        )
    if type(req_id) is not int or not 0 <= req_id <= REQ_ID_MAX:
        raise FrameError(
            "req_id", f"req_id must be an integer in [0, 2**64), got {describe(req_id)}"
        )
    if type(body) is not dict:
        raise FrameError("body", f"{frame_type.name} body must be a map, got {describe(body)}")
    return Frame(frame_type, req_id, body)


# CBOR items a frame [version, type, req_id, map of at most 23 pairs] holds when nothing in
# the map holds anything: the bound _client_frame_shallow relies on.
_FLAT_FRAME_ITEMS = 4 + 1 + 2 * 23
# Where a frame's body map starts, by the req_id's first byte (a uint: 0-23 in the byte, or
# 1, 2, 4, 8 bytes after it).
_BODY_AT = {**{b: 4 for b in range(24)}, 24: 5, 25: 6, 26: 8, 27: 12}
_SCALARS = codec.SHALLOW_SCALARS


def _client_frame_shallow(data: bytes, limits: DecodeLimits) -> Any:
    """`codec.loads(data, limits)` for an app's frame of the usual shape, decoded by cbor2
    alone (codec.loads_shallow), or codec.NOT_DECODED (codec.loads then decides: the same
    value or the same refusal). The usual shape: `[1, type, req_id, body]` with a body map of
    at most 23 pairs whose values are scalars, or, in a PROPOSE_MANY, "items" whose every item
    is a list of scalars.

    Why it is the same value: the body's header is read here, so with nothing nested in the
    map (depth 2) the frame holds at most _FLAT_FRAME_ITEMS items (CLIENT_FRAME_ITEMS_MAX is
    64); a PROPOSE_MANY nests deeper (depth 4) and is decoded only when its bytes are within
    its items limit (every item takes a byte). Bytes are checked here, depth by cbor2; tags,
    indefinite lengths, map keys other than strings and trailing bytes are refused by
    loads_shallow as by the scan; a duplicate map key (which cbor2.loads would let the last
    win) is refused there too; simple values come back as objects of their own types, which
    the type checks below send to the scan."""
    size = len(data)
    if size < 5 or size > limits.bytes_max or data[0] != 0x84 or data[1] != PROTOCOL_VERSION:
        return codec.NOT_DECODED
    frame_type = data[2]
    at = _BODY_AT.get(data[3], size)
    if frame_type > 23 or at >= size or not 0xA0 <= data[at] <= 0xB7:
        return codec.NOT_DECODED
    many = frame_type == FrameType.PROPOSE_MANY
    if many:
        if size > limits.items_max or limits.depth_max < 4:
            return codec.NOT_DECODED
    elif limits.items_max < _FLAT_FRAME_ITEMS or limits.depth_max < 2:
        return codec.NOT_DECODED
    # No text longer than the scan allows may be built (review 27): the body's headers are read
    # first where the frame could hold one (the envelope before it is ints, read above; a
    # PROPOSE_MANY this decodes is shorter than any text bound).
    text_max, blob_max = limits.text_bytes_max, limits.blob_bytes_max
    if (text_max is not None and size > text_max) or (blob_max is not None and size > blob_max):
        text_max = size if text_max is None else text_max
        blob_max = size if blob_max is None else blob_max
        pairs = data[at] & 31
        if many or not codec.strings_within(data, at + 1, 2 * pairs, text_max, blob_max):
            return codec.NOT_DECODED
    raw = codec.loads_shallow(data, 4 if many else 2)
    if raw is codec.NOT_DECODED:
        return raw
    for key, value in raw[3].items():
        if type(value) in _SCALARS:
            continue
        if not many or key != "items" or type(value) is not list:
            return codec.NOT_DECODED
        for item in value:
            if type(item) is not list or not _SCALARS.issuperset(map(type, item)):
                return codec.NOT_DECODED
    return raw


_EVENTS_KEYS = frozenset({"ev", "to", "t"})


def _events_frame_sure(raw: Any) -> bool:
    """Whether an EVENTS frame decoded without the scan (codec.loads_unscanned) holds only
    values the scan would have let through: each of a known type (no simple value, no tag but
    the ints cbor2 makes of bignums), str map keys, nesting far below FRAME_DEPTH_MAX. Anything
    else (an unusual field, an agent of another version) is left to codec.loads, which decides."""
    if type(raw) is not list or len(raw) != 4:
        return False
    version, frame_type, req_id, body = raw
    if type(version) is not int or type(frame_type) is not int or type(req_id) is not int:
        return False
    if type(body) is not dict or not body.keys() <= _EVENTS_KEYS:
        return False
    for key, value in body.items():
        if type(key) is not str:
            return False
        if key != "ev" and type(value) is not int:
            return False
    events = body.get("ev")
    if events is None:
        return True
    if type(events) is not list:
        return False
    for event in events:
        if type(event) is not list or not 6 <= len(event) <= 8:
            return False
        index, client, seq, outcome, event_body, collected = event[:6]
        if (
            type(index) is not int
            or (client is not None and type(client) is not str)
            or (seq is not None and type(seq) is not int)
            or type(outcome) is not str
            or (event_body is not None and type(event_body) is not bytes)
            or type(collected) is not list
        ):
            return False
        for oid in collected:
            if type(oid) is not str:
                return False
        if len(event) > 6 and type(event[6]) is not int:
            return False
        if len(event) > 7:
            heads = event[7]
            if type(heads) is not list:
                return False
            for head in heads:
                if type(head) is not list:
                    return False
                for field in head:
                    if field is not None and type(field) is not str:
                        return False
    return True


def salvage_req_id(data: bytes) -> int | None:
    """The req_id of a frame that failed validation, if one can be read, to answer ERROR
    (read from the frame's first CBOR headers only: nothing is decoded)."""
    return _peek_header(data, 2)


def _peek_header(data: bytes, position: int) -> int | None:
    """Header `position` (0 version, 1 type, 2 req_id) of a frame, read from its first CBOR
    heads without decoding anything (so a hostile frame costs nothing more); None if the frame
    does not start like `[version, type, req_id, ...]` with plain ints."""
    pos = 0
    size = len(data)
    for index in range(4):
        if pos >= size:
            return None
        initial = data[pos]
        major, info = initial >> 5, initial & 31
        if info > 27 or (index == 0 and major != 4) or (index > 0 and major != 0):
            return None
        width = 0 if info < 24 else 1 << (info - 24)
        if pos + 1 + width > size:
            return None
        arg = info if info < 24 else int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        pos += 1 + width
        if index == 0 and arg != 4:
            return None
        if index == position + 1:
            return arg  # uint of at most 8 bytes: within [0, REQ_ID_MAX]
    return None  # pragma: no cover - the loop returns at index position + 1 <= 3


# -- body accessors: each names the frame and field it was reading when it fails ------------------


def field_str(frame: Frame, key: str, *, chars_max: int, required: bool = True) -> str | None:
    value = frame.body.get(key)
    if value is None and not required:
        return None
    if type(value) is not str or not value:
        raise FrameError(
            "field", f"{frame.type.name}.{key} must be a non-empty string, got {describe(value)}"
        )
    if len(value) > chars_max:
        raise FrameError(
            "field",
            f"{frame.type.name}.{key} has {len(value)} characters, above the limit {chars_max}",
        )
    return value


def field_int(frame: Frame, key: str, *, minimum: int = 0, maximum: int = REQ_ID_MAX) -> int:
    value = frame.body.get(key)
    if type(value) is not int or not minimum <= value <= maximum:
        raise FrameError(
            "field",
            f"{frame.type.name}.{key} must be an integer in [{minimum}, {maximum}], got "
            f"{describe(value)}",
        )
    return value


def field_bytes(frame: Frame, key: str, *, bytes_max: int) -> bytes:
    value = frame.body.get(key)
    if type(value) is not bytes:
        raise FrameError(
            "field", f"{frame.type.name}.{key} must be a byte string, got {describe(value)}"
        )
    if len(value) > bytes_max:
        raise FrameError(
            "field", f"{frame.type.name}.{key} has {len(value)} bytes, above the limit {bytes_max}"
        )
    return value


def field_choice(frame: Frame, key: str, choices: frozenset[str], default: str | None) -> str:
    """A str field whose value must be one of `choices` (absent: `default`, if any)."""
    value = frame.body.get(key, default)
    # type() first: a list or map is never hashed or compared with the choices.
    if type(value) is not str or value not in choices:
        raise FrameError(
            "field",
            f"{frame.type.name}.{key} must be one of {sorted(choices)}, got {describe(value)}",
        )
    return value


def check_client_body(
    frame: Frame, *, body_bytes_max: int
) -> Proposal | list[ManyItem] | HeapRequest | Subscription | None:
    """Type- and range-checks every field the agent reads from an app -> agent frame, before
    any of it is used; returns the parsed PROPOSE, PROPOSE_MANY, LOAD / DROP / HOLD or
    SUBSCRIBE (None for other types). Unknown fields are ignored (forward compatibility; the
    items bound keeps them small). A PROPOSE body above `body_bytes_max`, or a LOAD / DROP /
    HOLD naming more than its limits, is a LimitExceeded (too_large)."""
    t = frame.type
    if t is FrameType.PROPOSE:
        return parse_propose(frame, body_bytes_max=body_bytes_max)
    if t is FrameType.PROPOSE_MANY:
        return parse_propose_many(frame, body_bytes_max=body_bytes_max)
    if t in HEAP_FRAMES:
        return parse_heap_request(frame)
    if t is FrameType.SUBSCRIBE:
        return parse_subscribe(frame)
    if t is FrameType.HELLO:
        field_str(frame, "client", chars_max=CLIENT_ID_CHARS_MAX)
    elif t is FrameType.INSPECT:
        parse_inspect(frame)
    elif t is FrameType.MEMBERS:
        parse_members(frame)
    elif t is FrameType.PING and "stream" in frame.body:
        # {"stream": [req_id, bytes received]}: the app acknowledging its subscription's frames.
        ack = frame.body["stream"]
        if (
            type(ack) is not list
            or len(ack) != 2
            or type(ack[0]) is not int
            or not 0 <= ack[0] <= REQ_ID_MAX
            or type(ack[1]) is not int
            or not 0 <= ack[1] <= INDEX_MAX
        ):
            raise FrameError(
                "field",
                f"PING.stream must be [req_id, bytes] of two ints within 64 bits, got "
                f"{describe(ack)}",
            )
    # STATUS, READ_INDEX, UNSUBSCRIBE: no fields.
    return None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A validated PROPOSE body."""

    client: str
    seq: int
    seq_low: int
    kind: str
    body: bytes
    session: int = 0  # the session's id (the index of its "open" entry); 0: an open starting one
    # The frame said its connection reads REPLY_MANY (REPLY_MANY_FIELD).
    reply_many: bool = False


def parse_propose(frame: Frame, *, body_bytes_max: int) -> Proposal:
    assert frame.type is FrameType.PROPOSE
    client = field_str(frame, "client", chars_max=CLIENT_ID_CHARS_MAX)
    assert client is not None
    seq = field_int(frame, "seq", minimum=1, maximum=SEQ_MAX)
    seq_low = field_int(frame, "seq_low", minimum=0, maximum=SEQ_MAX)
    if seq_low > seq:
        raise FrameError("field", "PROPOSE.seq_low is above PROPOSE.seq")
    kind = field_choice(frame, "kind", PROPOSE_KINDS, "txn")
    body = b""
    if kind == "txn":
        raw = frame.body.get("body")
        if type(raw) is bytes and len(raw) > body_bytes_max:
            # A size limit, not a malformed frame: the app is told too_large, naming it.
            raise LimitExceeded("body_bytes_max", body_bytes_max, len(raw), "PROPOSE body bytes")
        body = field_bytes(frame, "body", bytes_max=body_bytes_max)
    # The session's id (the index of its "open" entry); absent or 0: an "open" starting one.
    session = field_int(frame, "session", maximum=SESSION_ID_MAX) if "session" in frame.body else 0
    return Proposal(client, seq, seq_low, kind, body, session, field_reply_many(frame))


def field_reply_many(frame: Frame) -> bool:
    """A write frame's REPLY_MANY_FIELD: absent is False (an app that predates REPLY_MANY)."""
    value = frame.body.get(REPLY_MANY_FIELD, False)
    if type(value) is not bool:
        raise FrameError(
            "field",
            f"{frame.type.name}.{REPLY_MANY_FIELD} must be a boolean, got {describe(value)}",
        )
    return value


@dataclass(frozen=True, slots=True)
class ManyItem:
    """One proposal of a PROPOSE_MANY frame: answered (REPLY or ERROR) under its own req_id,
    exactly as a PROPOSE with that req_id would be. `error`: why this item alone is refused
    (a LimitExceeded or ProtocolError naming the field and limit); the others still go."""

    req_id: int
    proposal: Proposal | None
    trace: bool = False
    error: LimitExceeded | FrameError | None = None


def parse_propose_many(frame: Frame, *, body_bytes_max: int) -> list[ManyItem]:
    """`{"client", "seq_low", "session", "items": [[req_id, seq, kind, body, trace?], ...]}`:
    the shared fields are checked for the whole frame (a bad one refuses it all, under the
    frame's req_id); each item on its own, so one bad item is answered under its req_id and
    the others go. At most PROPOSE_ITEMS_MAX items (the frame's bytes: FRAME_BYTES_MAX)."""
    assert frame.type is FrameType.PROPOSE_MANY
    client = field_str(frame, "client", chars_max=CLIENT_ID_CHARS_MAX)
    assert client is not None
    seq_low = field_int(frame, "seq_low", minimum=0, maximum=SEQ_MAX)
    session = field_int(frame, "session", maximum=SESSION_ID_MAX) if "session" in frame.body else 0
    reply_many = field_reply_many(frame)
    items = frame.body.get("items")
    if type(items) is not list or not items:
        raise FrameError(
            "field", f"PROPOSE_MANY.items must be a non-empty list, got {describe(items)}"
        )
    if len(items) > PROPOSE_ITEMS_MAX:
        raise LimitExceeded(
            "PROPOSE_ITEMS_MAX", PROPOSE_ITEMS_MAX, len(items), "PROPOSE_MANY items"
        )
    out: list[ManyItem] = []
    seen: set[int] = set()
    for i, item in enumerate(items):
        # The usual item, [req_id, seq, "txn", body] (+ trace), checked inline: the same
        # checks as below and parse_propose's, the same ManyItem. Anything else goes below.
        if type(item) is list and 4 <= len(item) <= 5:
            req_id, seq, kind, body = item[0], item[1], item[2], item[3]
            if (
                type(req_id) is int
                and 0 <= req_id <= REQ_ID_MAX
                and req_id not in seen
                and type(seq) is int
                and 1 <= seq <= SEQ_MAX
                and seq_low <= seq
                and type(kind) is str
                and kind == "txn"
                and type(body) is bytes
                and len(body) <= body_bytes_max
            ):
                seen.add(req_id)
                proposal = Proposal(client, seq, seq_low, "txn", body, session, reply_many)
                out.append(ManyItem(req_id, proposal, len(item) == 5 and item[4] is True))
                continue
        if type(item) is not list or len(item) not in (4, 5):
            raise FrameError(
                "field",
                f"PROPOSE_MANY.items[{i}] must be [req_id, seq, kind, body] or [req_id, seq, "
                f"kind, body, trace], got {describe(item)}",
            )
        req_id = item[0]
        if type(req_id) is not int or not 0 <= req_id <= REQ_ID_MAX or req_id in seen:
            raise FrameError(
                "field",
                f"PROPOSE_MANY.items[{i}][0] (req_id) must be an integer in [0, 2**64) unique "
                f"in the frame, got {describe(req_id)}",
            )
        seen.add(req_id)
        trace = len(item) == 5 and item[4] is True
        fields = {
            "client": client,
            "seq": item[1],
            "seq_low": seq_low,
            "kind": item[2],
            "body": item[3],
            "session": session,
            REPLY_MANY_FIELD: reply_many,
        }
        try:
            proposal = parse_propose(
                Frame(FrameType.PROPOSE, req_id, fields), body_bytes_max=body_bytes_max
            )
        except (FrameError, LimitExceeded) as exc:
            out.append(ManyItem(req_id, None, trace, exc))
            continue
        out.append(ManyItem(req_id, proposal, trace))
    return out


@dataclass(frozen=True, slots=True)
class MembersRequest:
    """A validated MEMBERS body: `address` is the new member's peer endpoint for add_learner,
    "" for every other op."""

    op: str
    node: str
    address: str


def parse_members(frame: Frame) -> MembersRequest:
    assert frame.type is FrameType.MEMBERS
    op = field_choice(frame, "op", MEMBERS_OPS, None)
    node = field_str(frame, "node", chars_max=MEMBER_ID_CHARS_MAX)
    assert node is not None
    # The agent's rule for node ids (config.check_node_id): they end up in logs and STATUS.
    if not all(ch.isalnum() or ch in "-_." for ch in node):
        raise FrameError("field", "MEMBERS.node may hold only letters, digits, '-', '_', '.'")
    if op != "add_learner":
        address = frame.body.get("address")
        if address is not None and address != "":
            raise FrameError("field", f"MEMBERS.address is only for add_learner, not {op}")
        return MembersRequest(op, node, "")
    address = field_str(frame, "address", chars_max=MEMBER_ADDRESS_BYTES_MAX)
    assert address is not None
    if len(address.encode()) > MEMBER_ADDRESS_BYTES_MAX:
        raise FrameError(
            "field",
            f"MEMBERS.address has {len(address.encode())} bytes, above the limit "
            f"MEMBER_ADDRESS_BYTES_MAX={MEMBER_ADDRESS_BYTES_MAX}",
        )
    if not address.startswith(MEMBER_ADDRESS_SCHEMES) or len(address) <= len("tcp://"):
        raise FrameError(
            "field",
            f"MEMBERS.address must be a peer endpoint starting with one of "
            f"{MEMBER_ADDRESS_SCHEMES}, got {describe(address)}",
        )
    return MembersRequest(op, node, address)


def reply_many_body(items: list[list[Any]]) -> dict[str, Any]:
    """A REPLY_MANY body: `items` are [req_id, REPLY body] (1..REPLY_ITEMS_MAX of them)."""
    assert 0 < len(items) <= REPLY_ITEMS_MAX, len(items)
    return {"items": items}


def parse_reply_many(body: Any) -> list[tuple[int, dict[str, Any]]]:
    """A REPLY_MANY body's answers (app side), each checked before any is used: a FrameError
    naming the field (or REPLY_ITEMS_MAX, for too many items). What each REPLY body holds is
    checked as a REPLY's is, by whoever waits for that req_id; a req_id nobody waits for is
    ignored by the caller, as a REPLY's is."""
    if type(body) is not dict:
        raise FrameError("body", f"REPLY_MANY body must be a map, got {describe(body)}")
    items = body.get("items")
    if type(items) is not list or not items:
        raise FrameError(
            "field", f"REPLY_MANY.items must be a non-empty list, got {describe(items)}"
        )
    if len(items) > REPLY_ITEMS_MAX:
        # A FrameError, not a LimitExceeded: the app drops a frame past any limit as malformed.
        raise FrameError(
            "limit",
            f"REPLY_MANY has {len(items)} items, above the limit REPLY_ITEMS_MAX={REPLY_ITEMS_MAX}",
        )
    out: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(items):
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not int
            or not 0 <= item[0] <= REQ_ID_MAX
            or type(item[1]) is not dict
        ):
            got = describe(item)
            if type(item) is list and len(item) == 2:
                got = f"[{describe(item[0])}, {describe(item[1])}]"
            raise FrameError(
                "field",
                f"REPLY_MANY.items[{i}] must be [req_id, map] with req_id in [0, 2**64), got {got}",
            )
        out.append((item[0], item[1]))
    return out


def error_body(
    code: ErrorCode, message: str, leader: str | None = None, halted: str | None = None
) -> dict[str, Any]:
    """An ERROR frame's body. `halted`: one of HALT_REASONS, set by a halted agent on its
    `unavailable` refusals (HALTED_FIELD; absent otherwise, as from agents before it, whose
    libraries ignore it)."""
    body = {"code": str(code), "message": message, "leader": leader}
    if halted is not None:
        assert halted in HALT_REASONS, halted
        body[HALTED_FIELD] = halted
    return body


# Why a halted agent applies nothing more (docs/agent.md, STATUS `halted.reason`). Its
# `unavailable` refusals (stream, HELLO, requests) name one in HALTED_FIELD, so the library can
# say which in the error it finally raises: a word of this fixed set, never the refusal's
# message (free text from the wire, not formatted into an exception).
HALT_REASONS = frozenset({"poisoned", "rules_unknown", "store_full", "damaged"})
HALTED_FIELD = "halted"


def halt_reason(body: Any) -> str | None:
    """The halt reason an ERROR body names, if it is one of HALT_REASONS; None otherwise
    (anything else in the field is ignored, never echoed)."""
    if type(body) is not dict:
        return None
    reason = body.get(HALTED_FIELD)
    return reason if type(reason) is str and reason in HALT_REASONS else None


# -- INSPECT: the object-graph browser's requests (docs/operations.md, "Inspecting data") ---------

# Steps of a path below a root (`config.users[3].name` is 3 steps).
INSPECT_PATH_STEPS_MAX = 64
# A str step (a dict key or an attribute name).
INSPECT_KEY_CHARS_MAX = 1024
# An object id asked for with {"oid": ...} (ids are far shorter: codec.OID_CHARS_MAX).
INSPECT_OID_CHARS_MAX = 256
# Levels of nodes expanded below the one shown (deeper nodes are given as {"__ref__": oid}).
INSPECT_DEPTH_MAX = 100
# Roots one {"list": true} answer may name.
INSPECT_ROOTS_MAX = 1_000
# A step is a str (key or attribute) or an int (list index or int key), 64-bit.
INSPECT_INT_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class InspectRequest:
    """One INSPECT body. Exactly one of: `root` (with `path`: a node or value below it),
    `oid` (a node by id: following a reference), `list` (the roots with their sizes).
    `legacy`: the original `{"root": name}` form, answered with the root's whole JSON value."""

    root: str | None = None
    path: tuple[str | int, ...] = ()
    oid: str | None = None
    list: bool = False
    depth: int | None = None  # None: the agent's default
    limit: int | None = None  # roots listed (list only); None: INSPECT_ROOTS_MAX
    legacy: bool = False


def parse_inspect(frame: Frame) -> InspectRequest:
    """Validates an INSPECT body; FrameError (a ProtocolError) naming the field otherwise."""
    assert frame.type is FrameType.INSPECT
    body = frame.body
    chosen = [key for key in ("root", "oid", "list") if body.get(key) is not None]
    if len(chosen) != 1:
        raise FrameError(
            "field",
            "INSPECT needs exactly one of root, oid, list; got " + (", ".join(chosen) or "none"),
        )
    depth = None
    if body.get("depth") is not None:
        depth = field_int(frame, "depth", minimum=0, maximum=INSPECT_DEPTH_MAX)
    if chosen[0] == "list":
        if body.get("list") is not True:
            raise FrameError("field", f"INSPECT.list must be true, got {describe(body['list'])}")
        limit = None
        if body.get("limit") is not None:
            limit = field_int(frame, "limit", minimum=1, maximum=INSPECT_ROOTS_MAX)
        return InspectRequest(list=True, limit=limit)
    if chosen[0] == "oid":
        oid = field_str(frame, "oid", chars_max=INSPECT_OID_CHARS_MAX)
        return InspectRequest(oid=oid, depth=depth)
    root = field_str(frame, "root", chars_max=ROOT_NAME_CHARS_MAX)
    raw_path = body.get("path")
    if raw_path is None:
        return InspectRequest(root=root, depth=depth, legacy=depth is None)
    if type(raw_path) is not list or len(raw_path) > INSPECT_PATH_STEPS_MAX:
        raise FrameError(
            "field",
            f"INSPECT.path must be a list of at most {INSPECT_PATH_STEPS_MAX} steps, got "
            f"{describe(raw_path)}",
        )
    steps: list[str | int] = []
    for i, step in enumerate(raw_path):
        if type(step) is str:
            if len(step) > INSPECT_KEY_CHARS_MAX:
                raise FrameError(
                    "field",
                    f"INSPECT.path[{i}] has {len(step)} characters, above the limit "
                    f"{INSPECT_KEY_CHARS_MAX}",
                )
        elif type(step) is not int or abs(step) > INSPECT_INT_MAX:
            raise FrameError(
                "field",
                f"INSPECT.path[{i}] must be a string or a 64-bit integer, got {describe(step)}",
            )
        steps.append(step)
    return InspectRequest(root=root, path=tuple(steps), depth=depth)


# -- the virtual heap's frames (docs/virtual-heap.md section 2.2) ---------------------------------
#
# This is the frame API the library half builds on: the constants, `Subscription`,
# `HeapRequest`, the `*_body` encoders (app side), the `parse_*` validators (agent side) and
# `parse_loaded` (app side). Keep it stable.

# The HELLO reply's "heap": the virtual heap's version this agent speaks (absent: none; a
# library then falls back to a full replica for that connection).
HEAP_VERSION = 1
# SUBSCRIBE "heap": "partial" holds only what the app loads, "all" (the default: what a
# library without the virtual heap means) streams the snapshot and every event.
HEAP_MODES = frozenset({"partial", "all"})
# Oids one LOAD or DROP names (the app merges every fault of an I/O turn into one LOAD).
LOAD_OIDS_MAX = 1_024
# Keys (of per-key dicts) one LOAD or DROP names, over all its nodes.
LOAD_KEYS_MAX = 1_024
# Oids and keys one HOLD part names (a reconnecting app declares its held set in parts).
HOLD_OIDS_MAX = 65_536
HOLD_KEYS_MAX = 65_536
# HOLD parts one SUBSCRIBE may announce: 1,024 x 65,536 is far above any subscriber's held
# set limit at the agent (which refuses, naming it, before this matters).
HOLD_PARTS_MAX = 1_024
# A LOAD's "prefetch_bytes": how much more than the requested nodes the answer may hold.
LOAD_PREFETCH_BYTES_MAX = 256 << 10
# An oid named in a LOAD / DROP / HOLD: the longest oid a node can have (codec.OID_CHARS_MAX;
# a longer one cannot exist, so it is refused as malformed rather than answered absent).
HEAP_OID_CHARS_MAX = codec.OID_CHARS_MAX
# The UTF-8 bytes of such an oid at most: the longest text an "oids" array may hold, refused at
# its header before it is built (review 27).
HEAP_OID_BYTES_MAX = 4 * HEAP_OID_CHARS_MAX
# CBOR items in a decoded "keys" list: each key is at least one item, each node two more.
_KEYS_ITEMS_PER_KEY = 8

# LOADED items beyond the snapshot's format-2 items 0-3 (agent/app_snapshot.py).
ITEM_HEAD = 4  # [4, oid, kind, extra]: a node the answer references, not sent whole
ITEM_ABSENT = 5  # [5, oid]: a requested node that does not exist at the answer's index
ITEM_KEY_RUN = 6  # [6, oid, run, absent_keys]: keys of a per-key dict (section 4.3)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A validated SUBSCRIBE body. `client` is "" when absent (an older library)."""

    start: int
    heap: str  # "partial" | "all"
    client: str
    hold_parts: int


@dataclass(frozen=True, slots=True)
class HeapRequest:
    """A validated LOAD, DROP or HOLD body. `keys`: per node, the keys in wire form (the agent
    normalizes them with keynorm). `prefetch_bytes` and `whole` are a LOAD's (`whole`: send
    its dicts whole even when they are held per key, docs/virtual-heap.md 4.3), `part` /
    `last` a HOLD's."""

    type: FrameType
    sub: int
    oids: tuple[str, ...]
    keys: tuple[tuple[str, tuple[Any, ...]], ...]
    prefetch_bytes: int = 0
    part: int = 0
    last: bool = True
    whole: bool = False

    def key_count(self) -> int:
        return sum(len(keys) for _oid, keys in self.keys)


def subscribe_body(
    start: int, *, heap: str = "all", client: str = "", hold_parts: int = 0
) -> dict[str, Any]:
    """The SUBSCRIBE body (the data model included) for `parse_subscribe`."""
    assert heap in HEAP_MODES and 0 <= hold_parts <= HOLD_PARTS_MAX, (heap, hold_parts)
    body: dict[str, Any] = {"from": start, "model": DATA_MODEL, "heap": heap}
    if client:
        body["client"] = client
    if hold_parts:
        body["hold_parts"] = hold_parts
    return body


def parse_subscribe(frame: Frame) -> Subscription:
    assert frame.type is FrameType.SUBSCRIBE
    start = field_int(frame, "from", minimum=0, maximum=INDEX_MAX)
    heap = field_choice(frame, "heap", HEAP_MODES, "all")
    client = ""
    if frame.body.get("client") is not None:
        client = field_str(frame, "client", chars_max=CLIENT_ID_CHARS_MAX) or ""
    hold_parts = 0
    if frame.body.get("hold_parts") is not None:
        hold_parts = field_int(frame, "hold_parts", maximum=HOLD_PARTS_MAX)
    if hold_parts and heap != "partial":
        raise FrameError("field", "SUBSCRIBE.hold_parts is only for heap 'partial'")
    return Subscription(start, heap, client, hold_parts)


def load_body(
    sub: int,
    oids: list[str],
    keys: list[tuple[str, list[Any]]] | None = None,
    prefetch_bytes: int = 0,
    whole: bool = False,
) -> dict[str, Any]:
    """A LOAD body: `sub` is the subscription's req_id; `keys` per node, in wire form."""
    body = {
        "sub": sub,
        "oids": cbor2.dumps(list(oids)),
        "keys": codec.dumps([[oid, list(k)] for oid, k in keys or ()]),
        "prefetch_bytes": prefetch_bytes,
    }
    if whole:
        body["whole"] = True
    return body


def drop_body(
    sub: int, oids: list[str], keys: list[tuple[str, list[Any]]] | None = None
) -> dict[str, Any]:
    return {
        "sub": sub,
        "oids": cbor2.dumps(list(oids)),
        "keys": codec.dumps([[oid, list(k)] for oid, k in keys or ()]),
    }


def hold_body(
    sub: int,
    part: int,
    last: bool,
    oids: list[str],
    keys: list[tuple[str, list[Any]]] | None = None,
) -> dict[str, Any]:
    return {**drop_body(sub, oids, keys), "part": part, "last": last}


def parse_heap_request(frame: Frame) -> HeapRequest:
    """Validates a LOAD, DROP or HOLD body: malformed is a FrameError (bad_request), more oids
    or keys than the frame type's limit a LimitExceeded (too_large) naming it."""
    t = frame.type
    assert t in HEAP_FRAMES, t
    sub = field_int(frame, "sub", minimum=1)
    if t is FrameType.HOLD:
        oids_max, keys_max = HOLD_OIDS_MAX, HOLD_KEYS_MAX
        oids_name, keys_name = "HOLD_OIDS_MAX", "HOLD_KEYS_MAX"
    else:
        oids_max, keys_max = LOAD_OIDS_MAX, LOAD_KEYS_MAX
        oids_name, keys_name = "LOAD_OIDS_MAX", "LOAD_KEYS_MAX"
    oids = _decode_oids(frame, oids_max, oids_name)
    keys = _decode_keys(frame, keys_max, keys_name)
    prefetch_bytes = part = 0
    last = True
    whole = False
    if t is FrameType.LOAD:
        if frame.body.get("prefetch_bytes") is not None:
            prefetch_bytes = field_int(frame, "prefetch_bytes", maximum=LOAD_PREFETCH_BYTES_MAX)
        whole = frame.body.get("whole", False)
        if type(whole) is not bool:
            raise FrameError("field", f"LOAD.whole must be a boolean, got {describe(whole)}")
        if not oids and not keys:
            raise FrameError("field", "LOAD names no oid and no key")
    elif t is FrameType.HOLD:
        part = field_int(frame, "part", maximum=HOLD_PARTS_MAX - 1)
        last = frame.body.get("last")
        if type(last) is not bool:
            raise FrameError("field", f"HOLD.last must be a boolean, got {describe(last)}")
    return HeapRequest(t, sub, oids, keys, prefetch_bytes, part, last, whole)


def _decode_oids(frame: Frame, count_max: int, count_name: str) -> tuple[str, ...]:
    name = f"{frame.type.name}.oids"
    raw = field_bytes(frame, "oids", bytes_max=count_max * (HEAP_OID_CHARS_MAX * 4 + 3) + 9)
    limits = DecodeLimits(
        what=name,
        bytes_max=len(raw),
        bytes_name="FRAME_BYTES_MAX",
        items_max=count_max + 1,
        items_name=count_name,
        depth_max=1,
        depth_name="HEAP_OIDS_DEPTH",
        text_bytes_max=HEAP_OID_BYTES_MAX,
        text_name="HEAP_OID_BYTES_MAX",
    )
    value = codec.loads(raw, limits)
    if type(value) is not list:
        raise FrameError("field", f"{name} must hold a CBOR array of oids, got {describe(value)}")
    if len(value) > count_max:
        raise LimitExceeded(count_name, count_max, len(value), f"oids in one {frame.type.name}")
    for i, oid in enumerate(value):
        if type(oid) is not str or not 0 < len(oid) <= HEAP_OID_CHARS_MAX:
            raise FrameError(
                "field",
                f"{name}[{i}] must be a string of 1..{HEAP_OID_CHARS_MAX} characters, got "
                f"{describe(oid)}",
            )
    return tuple(value)


def _decode_keys(
    frame: Frame, count_max: int, count_name: str
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    name = f"{frame.type.name}.keys"
    if frame.body.get("keys") is None:
        return ()
    raw = field_bytes(frame, "keys", bytes_max=FRAME_BYTES_MAX)
    limits = DecodeLimits(
        what=name,
        bytes_max=len(raw),
        bytes_name="FRAME_BYTES_MAX",
        items_max=count_max * _KEYS_ITEMS_PER_KEY + 1,
        items_name=count_name,
        depth_max=FRAME_DEPTH_MAX,
        depth_name="FRAME_DEPTH_MAX",
    )
    value = codec.loads(raw, limits)
    if type(value) is not list:
        raise FrameError(
            "field", f"{name} must hold a CBOR array of [oid, [key, ...]], got {describe(value)}"
        )
    out: list[tuple[str, tuple[Any, ...]]] = []
    count = 0
    for i, pair in enumerate(value):
        if type(pair) is not list or len(pair) != 2 or type(pair[1]) is not list:
            raise FrameError(
                "field", f"{name}[{i}] must be [oid, [key, ...]], got {describe(pair)}"
            )
        oid, node_keys = pair
        if type(oid) is not str or not 0 < len(oid) <= HEAP_OID_CHARS_MAX:
            raise FrameError(
                "field",
                f"{name}[{i}] oid must be a string of 1..{HEAP_OID_CHARS_MAX} characters, got "
                f"{describe(oid)}",
            )
        count += len(node_keys)
        if count > count_max:
            raise LimitExceeded(count_name, count_max, count, f"keys in one {frame.type.name}")
        out.append((oid, tuple(node_keys)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A LOADED body's envelope (its items are checked by the library as it reads them, as a
    snapshot's are). `load`: the LOAD's req_id it answers, 0 for the subscription's start (an
    empty or held-set answer)."""

    index: int
    part: int
    last: bool
    load: int
    items: list[Any]
    log_time_ms: int


def loaded_body(
    index: int, part: int, last: bool, load: int, items: list[Any], log_time_ms: int
) -> dict[str, Any]:
    return {
        "index": index,
        "part": part,
        "last": last,
        "fmt": 2,
        "load": load,
        "items": items,
        "log_time_ms": log_time_ms,
    }


def parse_loaded(body: Any) -> Loaded:
    """Validates a LOADED body's envelope (app side): a FrameError naming the field."""
    if type(body) is not dict:
        raise FrameError("body", f"LOADED body must be a map, got {describe(body)}")
    frame = Frame(FrameType.LOADED, 0, body)
    index = field_int(frame, "index", maximum=INDEX_MAX)
    part = field_int(frame, "part", maximum=INDEX_MAX)
    load = field_int(frame, "load")
    log_time_ms = field_int(frame, "log_time_ms", maximum=INDEX_MAX)
    last = body.get("last")
    if type(last) is not bool:
        raise FrameError("field", f"LOADED.last must be a boolean, got {describe(last)}")
    if body.get("fmt") != 2 or type(body.get("fmt")) is not int:
        raise FrameError("field", f"LOADED.fmt must be 2, got {describe(body.get('fmt'))}")
    items = body.get("items")
    if type(items) is not list:
        raise FrameError("field", f"LOADED.items must be an array, got {describe(items)}")
    return Loaded(index, part, last, load, items, log_time_ms)
