"""Agent <-> agent frames: Raft messages, join requests and snapshot chunks as CBOR.

A peer frame is one ZeroMQ message holding a CBOR array that starts with
`[PEER_PROTOCOL_VERSION, kind, ...]`:

- `MSG`: `[v, 0, type, frm, to, term, log_term, index, entries, commit, reject, reject_hint,
  context, snapshot]`, where `entries` is a byte string holding the CBOR array
  `[[index, term, kind, data], ...]` (encoded once per batch and reused for every follower that
  gets the same range) and `snapshot` is null or `[index, term, voters, learners, addresses]`.
- `JOIN`: `[v, 1, frm, address]`: an agent outside the configuration asks to be added as a
  learner reachable at `address`.
- `CHUNK`: `[v, 2, frm, to, term, snap_index, part, last, data]`: one piece of the object table
  the leader ships before a SNAPSHOT message.

Decoding trusts nothing: size, CBOR depth, shape, types, ranges, and the invariants the Raft
core asserts on its inputs (contiguous APPEND entries, entry terms not above the message term,
a snapshot meta with a sane configuration). Anything off raises `ProtocolError` naming the
problem, so the transport can count and drop the frame instead of the core tripping an assertion.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import cbor2
from superstatic_agent.config import NODE_ID_CHARS_MAX, PEER_FRAME_BYTES_MAX, PEERS_MAX
from superstatic_agent.raft.types import (
    ADDRESS_BYTES_MAX,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MsgType,
    SnapshotMeta,
)

from superstatic.protocol.errors import ProtocolError

PEER_PROTOCOL_VERSION = 1
# Outer array, the snapshot meta, its lists of ids and [id, address] pairs: 4 levels; slack.
PEER_DEPTH_MAX = 8
# [[index, term, kind, data], ...]: 3 levels; slack.
ENTRIES_DEPTH_MAX = 4
# More entries than this in one message is not something our own agents ever send
# (append_entries_max is far below): refuse rather than build a huge tuple.
ENTRIES_PER_MESSAGE_MAX = 65_536
# Read contexts are a node id plus a counter (a few dozen bytes).
CONTEXT_BYTES_MAX = 256
# Raft indices and terms are 64-bit on disk; anything above is garbage.
INDEX_MAX = (1 << 63) - 1
# Transports a peer endpoint may use (what zmq.connect accepts between agents).
ENDPOINT_SCHEMES = ("tcp://", "ipc://")


class PeerKind(enum.IntEnum):
    MSG = 0
    JOIN = 1
    CHUNK = 2


@dataclass(frozen=True, slots=True)
class JoinRequest:
    frm: str
    address: str


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    frm: str
    to: str
    term: int
    snap_index: int
    part: int
    last: bool
    data: bytes


PeerFrame = Message | JoinRequest | SnapshotChunk


# -- encoding ---------------------------------------------------------------------------------


def encode_entries(entries: tuple[Entry, ...]) -> bytes:
    return cbor2.dumps([[e.index, e.term, int(e.kind), e.data] for e in entries])


def _conf_fields(conf: ConfState) -> list[Any]:
    return [list(conf.voters), list(conf.learners), [list(pair) for pair in conf.addresses]]


def encode_message(m: Message, entries_blob: bytes | None = None) -> bytes:
    """One Raft message. `entries_blob` is encode_entries(m.entries) when the caller cached it."""
    if entries_blob is None:
        entries_blob = encode_entries(m.entries) if m.entries else b""
    snapshot = None
    if m.snapshot is not None:
        s = m.snapshot
        snapshot = [s.index, s.term, *_conf_fields(s.conf)]
    return cbor2.dumps(
        [
            PEER_PROTOCOL_VERSION,
            int(PeerKind.MSG),
            int(m.type),
            m.frm,
            m.to,
            m.term,
            m.log_term,
            m.index,
            entries_blob,
            m.commit,
            m.reject,
            m.reject_hint,
            m.context,
            snapshot,
        ]
    )


def encode_join(frm: str, address: str) -> bytes:
    return cbor2.dumps([PEER_PROTOCOL_VERSION, int(PeerKind.JOIN), frm, address])


def encode_chunk(chunk: SnapshotChunk) -> bytes:
    return cbor2.dumps(
        [
            PEER_PROTOCOL_VERSION,
            int(PeerKind.CHUNK),
            chunk.frm,
            chunk.to,
            chunk.term,
            chunk.snap_index,
            chunk.part,
            chunk.last,
            chunk.data,
        ]
    )


# -- decoding ---------------------------------------------------------------------------------


def decode(data: bytes) -> PeerFrame:
    """Decodes and validates one peer frame; ProtocolError names what was wrong."""
    if len(data) > PEER_FRAME_BYTES_MAX:
        raise ProtocolError(
            f"peer frame of {len(data)} bytes is above PEER_FRAME_BYTES_MAX={PEER_FRAME_BYTES_MAX}"
        )
    raw = _loads(data, PEER_DEPTH_MAX, "peer frame")
    if not isinstance(raw, list) or len(raw) < 2:
        raise ProtocolError("peer frame must be a CBOR array [version, kind, ...]")
    if raw[0] != PEER_PROTOCOL_VERSION:
        raise ProtocolError(f"peer protocol version {raw[0]!r} is not {PEER_PROTOCOL_VERSION}")
    kind = raw[1]
    if kind == PeerKind.MSG and not isinstance(kind, bool):
        return _decode_message(raw)
    if kind == PeerKind.JOIN and not isinstance(kind, bool):
        return _decode_join(raw)
    if kind == PeerKind.CHUNK and not isinstance(kind, bool):
        return _decode_chunk(raw)
    raise ProtocolError(f"unknown peer frame kind {kind!r}")


def _loads(data: bytes, depth_max: int, what: str) -> Any:
    try:
        return cbor2.loads(data, max_depth=depth_max)
    except Exception as exc:  # cbor2 raises several types on garbage; all mean the same here
        raise ProtocolError(f"{what} is not valid CBOR: {exc}") from None


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= INDEX_MAX:
        raise ProtocolError(f"peer {name} must be an integer in [{minimum}, 2**63), got {value!r}")
    return value


def _node_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= NODE_ID_CHARS_MAX:
        raise ProtocolError(f"peer {name} must be a node id of 1..{NODE_ID_CHARS_MAX} characters")
    return value


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value.encode()) > ADDRESS_BYTES_MAX:
        raise ProtocolError(f"peer {name} must be an endpoint of at most {ADDRESS_BYTES_MAX} bytes")
    return value


def _bytes(value: Any, name: str, bytes_max: int) -> bytes:
    if not isinstance(value, bytes) or len(value) > bytes_max:
        raise ProtocolError(f"peer {name} must be a byte string of at most {bytes_max} bytes")
    return value


def _decode_message(raw: list[Any]) -> Message:
    if len(raw) != 14:
        raise ProtocolError(f"peer MSG must have 14 fields, got {len(raw)}")
    (_, _, type_raw, frm, to, term, log_term, index, blob, commit, reject, hint, ctx, snap) = raw
    if not isinstance(type_raw, int) or isinstance(type_raw, bool):
        raise ProtocolError(f"peer message type must be an integer, got {type_raw!r}")
    try:
        msg_type = MsgType(type_raw)
    except ValueError:
        raise ProtocolError(f"unknown Raft message type {type_raw}") from None
    frm = _node_id(frm, "frm")
    to = _node_id(to, "to")
    if frm == to:
        raise ProtocolError(f"peer message from {frm} to itself")
    term = _int(term, "term")
    log_term = _int(log_term, "log_term")
    index = _int(index, "index")
    commit = _int(commit, "commit")
    hint = _int(hint, "reject_hint")
    if not isinstance(reject, bool):
        raise ProtocolError("peer reject must be a boolean")
    context = _bytes(ctx, "context", CONTEXT_BYTES_MAX)
    blob = _bytes(blob, "entries", PEER_FRAME_BYTES_MAX)
    entries = _decode_entries(blob, msg_type, term, index) if blob else ()
    snapshot = _decode_snapshot(snap, term) if snap is not None else None
    if (msg_type is MsgType.SNAPSHOT) != (snapshot is not None):
        raise ProtocolError("a snapshot meta comes with SNAPSHOT messages and only with them")
    return Message(
        type=msg_type,
        frm=frm,
        to=to,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        reject=reject,
        reject_hint=hint,
        context=context,
        snapshot=snapshot,
    )


def _decode_entries(blob: bytes, msg_type: MsgType, term: int, prev: int) -> tuple[Entry, ...]:
    if msg_type not in (MsgType.APPEND, MsgType.PROPOSE):
        raise ProtocolError(f"{msg_type.name} messages carry no entries")
    raw = _loads(blob, ENTRIES_DEPTH_MAX, "peer entries")
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("peer entries must be a non-empty array")
    if len(raw) > ENTRIES_PER_MESSAGE_MAX:
        raise ProtocolError(
            f"{len(raw)} entries in one message, above ENTRIES_PER_MESSAGE_MAX="
            f"{ENTRIES_PER_MESSAGE_MAX}"
        )
    entries: list[Entry] = []
    previous_term = 0
    for offset, item in enumerate(raw):
        if not isinstance(item, list) or len(item) != 4:
            raise ProtocolError("a peer entry must be [index, term, kind, data]")
        e_index = _int(item[0], "entry index")
        e_term = _int(item[1], "entry term")
        kind_raw = item[2]
        if not isinstance(kind_raw, int) or isinstance(kind_raw, bool):
            raise ProtocolError(f"entry kind must be an integer, got {kind_raw!r}")
        try:
            kind = EntryKind(kind_raw)
        except ValueError:
            raise ProtocolError(f"unknown entry kind {kind_raw}") from None
        data = item[3]
        if not isinstance(data, bytes):
            raise ProtocolError("entry data must be a byte string")
        if msg_type is MsgType.PROPOSE:
            # Forwarded proposals are numbered by the leader, never by the sender.
            if e_index != 0 or e_term != 0 or kind is not EntryKind.NORMAL:
                raise ProtocolError("forwarded proposals must be NORMAL entries without index")
        else:
            if e_index != prev + 1 + offset:
                raise ProtocolError(f"APPEND entries not contiguous after {prev}: {e_index}")
            if not 1 <= e_term <= term or e_term < previous_term:
                raise ProtocolError(
                    f"APPEND entry {e_index} has term {e_term} (message term {term})"
                )
            previous_term = e_term
        entries.append(Entry(e_index, e_term, kind, data))
    return tuple(entries)


def _decode_snapshot(raw: Any, term: int) -> SnapshotMeta:
    if not isinstance(raw, list) or len(raw) != 5:
        raise ProtocolError("snapshot meta must be [index, term, voters, learners, addresses]")
    index = _int(raw[0], "snapshot index", minimum=1)
    snap_term = _int(raw[1], "snapshot term", minimum=1)
    if snap_term > term:
        raise ProtocolError(f"snapshot term {snap_term} is above the message term {term}")
    voters, learners, addresses = raw[2], raw[3], raw[4]
    for name, ids in (("voters", voters), ("learners", learners)):
        if not isinstance(ids, list) or len(ids) > PEERS_MAX:
            raise ProtocolError(f"snapshot {name} must be a list of at most {PEERS_MAX} ids")
        for node in ids:
            _node_id(node, f"snapshot {name[:-1]}")
    if not voters:
        raise ProtocolError("snapshot configuration has no voters")
    if len(set(voters)) != len(voters) or len(set(learners)) != len(learners):
        raise ProtocolError("snapshot configuration lists a member twice")
    if set(voters) & set(learners):
        raise ProtocolError("snapshot configuration has a node both voter and learner")
    if not isinstance(addresses, list) or len(addresses) > 2 * PEERS_MAX:
        raise ProtocolError("snapshot addresses must be a list of [id, endpoint]")
    pairs: dict[str, str] = {}
    for pair in addresses:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ProtocolError("snapshot addresses must be a list of [id, endpoint]")
        pairs[_node_id(pair[0], "address id")] = _address(pair[1], "address")
    conf = ConfState.make(voters, learners, pairs)
    return SnapshotMeta(index, snap_term, conf)


def _decode_join(raw: list[Any]) -> JoinRequest:
    if len(raw) != 4:
        raise ProtocolError(f"peer JOIN must have 4 fields, got {len(raw)}")
    address = _address(raw[3], "join address")
    if not address.startswith(ENDPOINT_SCHEMES):
        raise ProtocolError(f"peer JOIN address must start with one of {ENDPOINT_SCHEMES}")
    return JoinRequest(_node_id(raw[2], "join id"), address)


def _decode_chunk(raw: list[Any]) -> SnapshotChunk:
    if len(raw) != 9:
        raise ProtocolError(f"peer CHUNK must have 9 fields, got {len(raw)}")
    frm = _node_id(raw[2], "chunk frm")
    to = _node_id(raw[3], "chunk to")
    if not isinstance(raw[7], bool):
        raise ProtocolError("peer chunk 'last' must be a boolean")
    return SnapshotChunk(
        frm=frm,
        to=to,
        term=_int(raw[4], "chunk term", minimum=1),
        snap_index=_int(raw[5], "chunk snapshot index", minimum=1),
        part=_int(raw[6], "chunk part"),
        last=raw[7],
        data=_bytes(raw[8], "chunk data", PEER_FRAME_BYTES_MAX),
    )
