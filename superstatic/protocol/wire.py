"""The client protocol between an app and its agent: one ZeroMQ message per frame.

A frame is CBOR `[PROTOCOL_VERSION, type, req_id, body]` (docs/architecture.md section 5). This
module is pure: it turns frames into bytes and bytes into validated frames, and nothing else. Both
the agent (server side) and `superstatic.client.connection` (client side) use it, so the two
cannot drift.

Decoding never trusts its input: size first, then a scan of the CBOR headers bounded in items
and depth that admits only the codec's registered tags (`codec.loads` with `DecodeLimits`), then
the shape, then every field of the frame's type (`check_client_body`). Anything off raises a
`ProtocolError` (a `codec.FrameError` with a reason slug) naming the field, its type and size
and the limit, never the value; the caller counts and drops it.
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
# Proposals one PROPOSE_MANY frame may carry (and FRAME_BYTES_MAX bounds their bytes): what the
# library's I/O thread coalesces from concurrent callers in one go.
PROPOSE_ITEMS_MAX = 256
# CBOR items of one PROPOSE_MANY item: [req_id, seq, kind, body, trace] and its array header.
PROPOSE_ITEM_CBOR_ITEMS = 6
# CBOR items in a PROPOSE_MANY frame: its header and fields (as CLIENT_FRAME_ITEMS_MAX allows a
# PROPOSE) plus PROPOSE_ITEMS_MAX items. Chosen by the frame's type, read from its first bytes
# before anything is decoded, so other frames keep the small bound.
PROPOSE_MANY_FRAME_ITEMS_MAX = CLIENT_FRAME_ITEMS_MAX + PROPOSE_ITEMS_MAX * PROPOSE_ITEM_CBOR_ITEMS
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
    # agent -> client
    REPLY = 64
    ERROR = 65
    EVENTS = 66
    SNAPSHOT = 67


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
    }
)
AGENT_TO_CLIENT = frozenset(
    {FrameType.REPLY, FrameType.ERROR, FrameType.EVENTS, FrameType.SNAPSHOT}
)


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


CLIENT_FRAME_LIMITS = DecodeLimits(
    what="client frame",
    bytes_max=FRAME_BYTES_MAX,
    bytes_name="FRAME_BYTES_MAX",
    items_max=CLIENT_FRAME_ITEMS_MAX,
    items_name="CLIENT_FRAME_ITEMS_MAX",
    depth_max=FRAME_DEPTH_MAX,
    depth_name="FRAME_DEPTH_MAX",
)
PROPOSE_MANY_FRAME_LIMITS = DecodeLimits(
    what="client frame",
    bytes_max=FRAME_BYTES_MAX,
    bytes_name="FRAME_BYTES_MAX",
    items_max=PROPOSE_MANY_FRAME_ITEMS_MAX,
    items_name="PROPOSE_MANY_FRAME_ITEMS_MAX",
    depth_max=FRAME_DEPTH_MAX,
    depth_name="FRAME_DEPTH_MAX",
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
        if FrameType.PROPOSE_MANY in allowed and _peek_header(data, 1) == FrameType.PROPOSE_MANY:
            limits = PROPOSE_MANY_FRAME_LIMITS
    raw = codec.loads(data, limits)
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
    try:
        frame_type = FrameType(type_raw)
    except ValueError:
        raise FrameError("type", f"unknown frame type ({describe(type_raw)})") from None
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


def check_client_body(frame: Frame, *, body_bytes_max: int) -> Proposal | list[ManyItem] | None:
    """Type- and range-checks every field the agent reads from an app -> agent frame, before
    any of it is used; returns the parsed PROPOSE or PROPOSE_MANY (None for other types).
    Unknown fields are ignored (forward compatibility; the items bound keeps them small). A
    PROPOSE body above `body_bytes_max` is a LimitExceeded (too_large)."""
    t = frame.type
    if t is FrameType.PROPOSE:
        return parse_propose(frame, body_bytes_max=body_bytes_max)
    if t is FrameType.PROPOSE_MANY:
        return parse_propose_many(frame, body_bytes_max=body_bytes_max)
    if t is FrameType.HELLO:
        field_str(frame, "client", chars_max=CLIENT_ID_CHARS_MAX)
    elif t is FrameType.SUBSCRIBE:
        field_int(frame, "from", minimum=0, maximum=INDEX_MAX)
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
    return Proposal(client, seq, seq_low, kind, body, session)


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


def error_body(code: ErrorCode, message: str, leader: str | None = None) -> dict[str, Any]:
    return {"code": str(code), "message": message, "leader": leader}


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
