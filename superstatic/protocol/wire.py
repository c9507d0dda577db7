"""The client protocol between an app and its agent: one ZeroMQ message per frame.

A frame is CBOR `[PROTOCOL_VERSION, type, req_id, body]` (docs/architecture.md section 5). This
module is pure: it turns frames into bytes and bytes into validated frames, and nothing else. Both
the agent (server side) and `superstatic.client.connection` (client side) use it, so the two
cannot drift.

Decoding never trusts its input: size first, then CBOR with a depth limit, then shape. Anything
off raises `ProtocolError` naming what was wrong; the caller counts and drops it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import cbor2

from superstatic.protocol.errors import LimitExceeded, ProtocolError

PROTOCOL_VERSION = 1

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


PROPOSE_KINDS = frozenset({"txn", "open", "close"})
# MEMBERS ops: three configuration changes through the log, and a leadership transfer.
MEMBERS_OPS = frozenset({"add_learner", "promote", "remove", "transfer"})


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    req_id: int
    body: Any


def encode(frame_type: FrameType, req_id: int, body: Any) -> bytes:
    """Encodes one frame; raises LimitExceeded if it would not fit FRAME_BYTES_MAX."""
    assert 0 <= req_id <= REQ_ID_MAX, req_id
    data = cbor2.dumps([PROTOCOL_VERSION, int(frame_type), req_id, body])
    if len(data) > FRAME_BYTES_MAX:
        raise LimitExceeded("FRAME_BYTES_MAX", FRAME_BYTES_MAX, len(data), "frame size in bytes")
    return data


def decode(data: bytes, allowed: frozenset[FrameType]) -> Frame:
    """Decodes and validates one frame whose type must be in `allowed`.

    Raises ProtocolError for anything else: too large, not CBOR, wrong version, unknown type,
    wrong shape. The message names the problem so the agent's log says what a bad peer sent.
    """
    if len(data) > FRAME_BYTES_MAX:
        raise ProtocolError(
            f"frame of {len(data)} bytes is above FRAME_BYTES_MAX={FRAME_BYTES_MAX}"
        )
    try:
        raw = cbor2.loads(data, max_depth=FRAME_DEPTH_MAX)
    except Exception as exc:  # cbor2 raises several types on garbage; all mean the same here
        raise ProtocolError(f"frame is not valid CBOR: {exc}") from None
    if not isinstance(raw, list) or len(raw) != 4:
        raise ProtocolError("frame must be a CBOR array [version, type, req_id, body]")
    version, type_raw, req_id, body = raw
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not {PROTOCOL_VERSION}")
    if not isinstance(type_raw, int) or isinstance(type_raw, bool):
        raise ProtocolError(f"frame type must be an integer, got {type(type_raw).__name__}")
    try:
        frame_type = FrameType(type_raw)
    except ValueError:
        raise ProtocolError(f"unknown frame type {type_raw}") from None
    if frame_type not in allowed:
        raise ProtocolError(f"frame type {frame_type.name} is not allowed in this direction")
    if not isinstance(req_id, int) or isinstance(req_id, bool) or not 0 <= req_id <= REQ_ID_MAX:
        raise ProtocolError(f"req_id must be an integer in [0, 2**64), got {req_id!r}")
    if not isinstance(body, dict):
        raise ProtocolError(f"{frame_type.name} body must be a map, got {type(body).__name__}")
    return Frame(frame_type, req_id, body)


# -- body accessors: each names the frame and field it was reading when it fails ------------------


def field_str(frame: Frame, key: str, *, chars_max: int, required: bool = True) -> str | None:
    value = frame.body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{frame.type.name}.{key} must be a non-empty string")
    if len(value) > chars_max:
        raise ProtocolError(
            f"{frame.type.name}.{key} has {len(value)} characters, above the limit {chars_max}"
        )
    return value


def field_int(frame: Frame, key: str, *, minimum: int = 0, maximum: int = REQ_ID_MAX) -> int:
    value = frame.body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ProtocolError(
            f"{frame.type.name}.{key} must be an integer in [{minimum}, {maximum}], got {value!r}"
        )
    return value


def field_bytes(frame: Frame, key: str, *, bytes_max: int) -> bytes:
    value = frame.body.get(key)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{frame.type.name}.{key} must be a byte string")
    if len(value) > bytes_max:
        raise ProtocolError(
            f"{frame.type.name}.{key} has {len(value)} bytes, above the limit {bytes_max}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Proposal:
    """A validated PROPOSE body."""

    client: str
    seq: int
    seq_low: int
    kind: str
    body: bytes


def parse_propose(frame: Frame, *, body_bytes_max: int) -> Proposal:
    assert frame.type is FrameType.PROPOSE
    client = field_str(frame, "client", chars_max=CLIENT_ID_CHARS_MAX)
    assert client is not None
    seq = field_int(frame, "seq", minimum=1)
    seq_low = field_int(frame, "seq_low", minimum=0)
    if seq_low > seq:
        raise ProtocolError(f"PROPOSE.seq_low {seq_low} is above PROPOSE.seq {seq}")
    kind = frame.body.get("kind", "txn")
    if kind not in PROPOSE_KINDS:
        raise ProtocolError(f"PROPOSE.kind must be one of {sorted(PROPOSE_KINDS)}, got {kind!r}")
    body = field_bytes(frame, "body", bytes_max=body_bytes_max) if kind == "txn" else b""
    return Proposal(client, seq, seq_low, kind, body)


@dataclass(frozen=True, slots=True)
class MembersRequest:
    """A validated MEMBERS body: `address` is the new member's peer endpoint for add_learner,
    "" for every other op."""

    op: str
    node: str
    address: str


def parse_members(frame: Frame) -> MembersRequest:
    assert frame.type is FrameType.MEMBERS
    op = frame.body.get("op")
    if op not in MEMBERS_OPS:
        raise ProtocolError(f"MEMBERS.op must be one of {sorted(MEMBERS_OPS)}, got {op!r}")
    node = field_str(frame, "node", chars_max=MEMBER_ID_CHARS_MAX)
    assert node is not None
    if op != "add_learner":
        if frame.body.get("address") not in (None, ""):
            raise ProtocolError(f"MEMBERS.address is only for add_learner, not {op}")
        return MembersRequest(op, node, "")
    address = field_str(frame, "address", chars_max=MEMBER_ADDRESS_BYTES_MAX)
    assert address is not None
    if len(address.encode()) > MEMBER_ADDRESS_BYTES_MAX:
        raise ProtocolError(
            f"MEMBERS.address has {len(address.encode())} bytes, above the limit "
            f"MEMBER_ADDRESS_BYTES_MAX={MEMBER_ADDRESS_BYTES_MAX}"
        )
    if not address.startswith(MEMBER_ADDRESS_SCHEMES) or len(address) <= len("tcp://"):
        raise ProtocolError(
            f"MEMBERS.address must be a peer endpoint starting with one of "
            f"{MEMBER_ADDRESS_SCHEMES}, got {address!r}"
        )
    return MembersRequest(op, node, address)


def error_body(code: ErrorCode, message: str, leader: str | None = None) -> dict[str, Any]:
    return {"code": str(code), "message": message, "leader": leader}
