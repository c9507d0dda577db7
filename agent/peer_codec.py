"""Agent <-> agent frames: Raft messages, join requests and snapshot chunks as CBOR.

A peer frame is one ZeroMQ message holding a CBOR array that starts with
`[PEER_PROTOCOL_VERSION, kind, ...]`:

- `MSG`: `[v, 0, type, frm, to, term, log_term, index, entries, commit, reject, reject_hint,
  context, snapshot]`, where `entries` is a byte string holding the CBOR array
  `[[index, term, kind, data], ...]` (encoded once per batch and reused for every follower that
  gets the same range) and `snapshot` is null or `[index, term, voters, learners, addresses]`.
  An APPEND whose `context` is `b"no-ack"` (the core's `UNACKED_CONTEXT`) is a commit-only
  APPEND the leader wants no answer to if accepted (docs/raft.md, "Commit-only APPENDs go
  unanswered"); agents before it send and ignore an APPEND's context, so no version changes.
- `JOIN`: `[v, 1, frm, address]`: an agent outside the configuration asks to be added as a
  learner reachable at `address`.
- `CHUNK`: `[v, 2, frm, to, term, snap_index, part, last, data]`: one piece of the object table
  the leader ships before a SNAPSHOT message.
- `WELCOME`: `[v, 3, frm, to, [voters, learners, addresses]]`: a member tells a joiner the
  cluster's initial configuration (at index 0), which its core starts from: a joiner never
  builds one from its own --peers (issue 9, bug 1).
- `PROBE`: `[v, 4, frm, to]`: a voter starting with an empty data directory asks a peer whether
  it was a member before (docs/agent.md, "A voter that lost its data").
- `PROBE_REPLY`: `[v, 5, frm, to, term, commit, heard_term]`: the peer's term and commit index,
  and the highest term of a Raft message it received from the asker since it started (0: none).
- `CHUNK_ACK`: `[v, 6, frm, to, term, snap_index, part]`: a follower staged `part` of the
  snapshot at `snap_index` (the leader keeps a window of chunks unacknowledged: shipping.py).
- `HELLO`: `[v, 7, frm, to, term, address]`: a leader in `term` tells a member it has not heard
  from where to answer it: a member cut off while the leader joined does not list it yet
  (docs/agent.md, "A member that missed a promotion"). Agents before it count it as a bad frame.
- `RULES`: `[v, 8, frm, to, rules_max]`: a member tells the leader the newest state-machine
  rules version it applies (its --rules-max; docs/agent.md, "Rules versions"): the leader moves
  the cluster up only when every member said it knows the version. Agents before it count it
  as a bad frame, and never send it, so a cluster with one of them stays at rules 1.

Decoding trusts nothing: size, then a scan of the CBOR headers bounded in items, depth and the
length of every string (PEER_TEXT_BYTES_MAX; PEER_NO_BYTES_MAX for the kinds without a byte
string: refused at the header, never built) that admits only the codec's registered tags
(`codec.loads` with `DecodeLimits`: the one decoder of both ports), then shape, types, ranges
(every index and term within 63 bits), and the invariants the Raft core asserts on its inputs
(contiguous APPEND entries, entry terms not above the message term, CONF entries that decode, a
snapshot meta with a sane configuration). Anything off raises `ProtocolError` (a
`codec.FrameError` with a reason slug) naming the field, its type and size and the limit, never
the value, so the transport can count and drop the frame instead of the core tripping an
assertion.

The usual frames take a shorter way to the same answer (docs/data-model-v2.md 8.13): a MSG
whose header says it is an array of 14 items is decoded by cbor2 alone at depth 1
(`_loads_flat`: its items cannot exceed the limit, whatever its bytes), its fields are
checked inline (`_message_fast`), and its entries blob is read in one pass of its headers
(`_entries_fast`: never by cbor2, which would build a text in it before any check could refuse
it; review33). Other kinds go the scanned way only (the
fast path would decode them twice). Each accepts only what the scanned way
accepts, with the same result; at any doubt the frame goes the scanned way
(`decode_scanned`), which refuses it with its message or accepts it.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
from superstatic_agent.config import (
    NODE_ID_CHARS_MAX,
    PEER_ENTRIES_PER_MESSAGE_MAX,
    PEER_FRAME_BYTES_MAX,
    PEERS_MAX,
    node_id_valid,
)
from superstatic_agent.raft.types import (
    ADDRESS_BYTES_MAX,
    CONF_CHANGE_BYTES_MAX,
    CONF_OPS,
    NODE_ID_BYTES_MAX,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MsgType,
    SnapshotMeta,
)

from superstatic.protocol import codec
from superstatic.protocol.codec import DecodeLimits, FrameError, describe

# Enum members by value: a dict lookup, not the enum's call (~10x the cost), per message and
# per entry of every APPEND; only ints reach them (checked before).
_MSG_TYPES: dict[int, MsgType] = {member.value: member for member in MsgType}
_ENTRY_KINDS: dict[int, EntryKind] = {member.value: member for member in EntryKind}

PEER_PROTOCOL_VERSION = 1
# Outer array, the snapshot meta, its lists of ids and [id, address] pairs: 4 levels; slack.
PEER_DEPTH_MAX = 8
# [[index, term, kind, data], ...]: 3 levels; slack.
ENTRIES_DEPTH_MAX = 4
# More entries than this in one message is not something our own agents ever send
# (--batch-entries-max is at most this, checked by the config): refuse rather than build a
# huge tuple.
ENTRIES_PER_MESSAGE_MAX = PEER_ENTRIES_PER_MESSAGE_MAX
# CBOR items in a peer frame: a MSG is 14 fields plus a snapshot meta of at most PEERS_MAX
# voters, PEERS_MAX learners and 2 * PEERS_MAX [id, address] pairs (~530 items).
PEER_FRAME_ITEMS_MAX = 1_024
# An entries blob is an array of [index, term, kind, data]: 5 items per entry.
ENTRY_ITEMS = 5
# A CONF entry's data: [op, node, address].
CONF_CHANGE_ITEMS_MAX = 4
# Read contexts are a node id plus a counter (a few dozen bytes).
CONTEXT_BYTES_MAX = 256
# The longest text any field of a peer frame holds, in UTF-8 bytes: an endpoint (JOIN, HELLO, a
# WELCOME's or a SNAPSHOT's addresses); node ids are shorter (NODE_ID_BYTES_MAX). The scan refuses
# a longer text at its header, before it is built (review 27: a stranger's 60 MiB JOIN whose
# address was a text of 4-byte characters peaked at 360 MiB while CPython decoded it).
PEER_TEXT_BYTES_MAX = ADDRESS_BYTES_MAX
# The longest byte string of the kinds that carry none (all but MSG and CHUNK, whose entries and
# data are bounded by the frame's bytes): one is refused at its header, not copied first.
PEER_NO_BYTES_MAX = 0
# An entries blob holds ints and byte strings only: any text in it is refused unbuilt.
ENTRIES_TEXT_BYTES_MAX = 0
# Raft indices and terms are 64-bit on disk; anything above is garbage.
INDEX_MAX = (1 << 63) - 1
# Transports a peer endpoint may use (what zmq.connect accepts between agents).
ENDPOINT_SCHEMES = ("tcp://", "ipc://")


class PeerKind(enum.IntEnum):
    MSG = 0
    JOIN = 1
    CHUNK = 2
    WELCOME = 3
    PROBE = 4
    PROBE_REPLY = 5
    CHUNK_ACK = 6
    HELLO = 7
    RULES = 8


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


@dataclass(frozen=True, slots=True)
class ChunkAck:
    frm: str  # the follower
    to: str  # the leader that ships
    term: int
    snap_index: int
    part: int  # staged, with every part before it


@dataclass(frozen=True, slots=True)
class Welcome:
    frm: str
    to: str
    conf0: ConfState  # the cluster's configuration at index 0


@dataclass(frozen=True, slots=True)
class Probe:
    frm: str
    to: str


@dataclass(frozen=True, slots=True)
class ProbeReply:
    frm: str
    to: str
    term: int
    commit: int
    heard_term: int  # highest term of a Raft message from the asker since we started; 0: none


@dataclass(frozen=True, slots=True)
class Hello:
    frm: str  # a leader
    to: str
    term: int  # the term it leads
    address: str  # its peer endpoint, as the configuration it replicates records it


@dataclass(frozen=True, slots=True)
class RulesKnown:
    frm: str  # a member
    to: str  # the leader it follows
    rules_max: int  # the newest state-machine rules version it applies


PeerFrame = (
    Message
    | JoinRequest
    | SnapshotChunk
    | ChunkAck
    | Welcome
    | Probe
    | ProbeReply
    | Hello
    | RulesKnown
)


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


def encode_welcome(welcome: Welcome) -> bytes:
    w = welcome
    return cbor2.dumps(
        [PEER_PROTOCOL_VERSION, int(PeerKind.WELCOME), w.frm, w.to, _conf_fields(w.conf0)]
    )


def encode_probe(probe: Probe) -> bytes:
    return cbor2.dumps([PEER_PROTOCOL_VERSION, int(PeerKind.PROBE), probe.frm, probe.to])


def encode_probe_reply(reply: ProbeReply) -> bytes:
    r = reply
    return cbor2.dumps(
        [
            PEER_PROTOCOL_VERSION,
            int(PeerKind.PROBE_REPLY),
            r.frm,
            r.to,
            r.term,
            r.commit,
            r.heard_term,
        ]
    )


def encode_hello(hello: Hello) -> bytes:
    h = hello
    return cbor2.dumps([PEER_PROTOCOL_VERSION, int(PeerKind.HELLO), h.frm, h.to, h.term, h.address])


def encode_rules_known(known: RulesKnown) -> bytes:
    k = known
    return cbor2.dumps([PEER_PROTOCOL_VERSION, int(PeerKind.RULES), k.frm, k.to, k.rules_max])


def encode_chunk_ack(ack: ChunkAck) -> bytes:
    return cbor2.dumps(
        [
            PEER_PROTOCOL_VERSION,
            int(PeerKind.CHUNK_ACK),
            ack.frm,
            ack.to,
            ack.term,
            ack.snap_index,
            ack.part,
        ]
    )


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


def frame_limits(bytes_max: int = PEER_FRAME_BYTES_MAX) -> DecodeLimits:
    """A peer frame's limits (`decode_scanned` adds PEER_NO_BYTES_MAX for kinds without a byte
    string: _kind_limits)."""
    return DecodeLimits(
        what="peer frame",
        bytes_max=bytes_max,
        bytes_name="peer_frame_bytes_max",
        items_max=PEER_FRAME_ITEMS_MAX,
        items_name="PEER_FRAME_ITEMS_MAX",
        depth_max=PEER_DEPTH_MAX,
        depth_name="PEER_DEPTH_MAX",
        text_bytes_max=PEER_TEXT_BYTES_MAX,
        text_name="PEER_TEXT_BYTES_MAX",
        field_of=peer_field,
    )


# Each kind's fields after [version, kind], as named in the module's docstring: what a refusal
# of a string in one of them names (a fixed name, never the value).
_FIELD_NAMES: dict[PeerKind, tuple[str, ...]] = {
    PeerKind.MSG: (
        "type", "frm", "to", "term", "log_term", "index", "entries", "commit", "reject",
        "reject_hint", "context", "snapshot",
    ),
    PeerKind.JOIN: ("frm", "address"),
    PeerKind.CHUNK: ("frm", "to", "term", "snap_index", "part", "last", "data"),
    PeerKind.WELCOME: ("frm", "to", "conf"),
    PeerKind.PROBE: ("frm", "to"),
    PeerKind.PROBE_REPLY: ("frm", "to", "term", "commit", "heard_term"),
    PeerKind.CHUNK_ACK: ("frm", "to", "term", "snap_index", "part"),
    PeerKind.HELLO: ("frm", "to", "term", "address"),
    PeerKind.RULES: ("frm", "to", "rules_max"),
}  # fmt: skip


def peer_field(data: bytes, path: tuple[tuple[int, int], ...]) -> str:
    """The field of a peer frame at `path` (codec.item_path), for a refusal's message: its
    position, its name by the frame's kind, and whether the item is nested in it."""
    kind = peek_kind(data)
    frame = f"a peer {kind.name} frame" if kind is not None else "a peer frame"
    if not path:
        return frame
    index = path[0][0]
    names = ("version", "kind", *_FIELD_NAMES.get(kind, ())) if kind is not None else ()
    name = f" ({names[index]})" if index < len(names) else ""
    nested = " (inside it)" if len(path) > 1 else ""
    return f"field {index}{name}{nested} of {frame}"


def entries_limits(bytes_max: int, entries_max: int) -> DecodeLimits:
    """An entries blob: ENTRIES_ITEMS_MAX = 1 + ENTRY_ITEMS * entries_max items."""
    return DecodeLimits(
        what="peer entries blob",
        bytes_max=bytes_max,
        bytes_name="peer_frame_bytes_max",
        items_max=1 + ENTRY_ITEMS * entries_max,
        items_name="ENTRIES_ITEMS_MAX",
        depth_max=ENTRIES_DEPTH_MAX,
        depth_name="ENTRIES_DEPTH_MAX",
        text_bytes_max=ENTRIES_TEXT_BYTES_MAX,
        text_name="ENTRIES_TEXT_BYTES_MAX",
    )


_CONF_CHANGE_LIMITS = DecodeLimits(
    what="conf change",
    bytes_max=CONF_CHANGE_BYTES_MAX,
    bytes_name="CONF_CHANGE_BYTES_MAX",
    items_max=CONF_CHANGE_ITEMS_MAX,
    items_name="CONF_CHANGE_ITEMS_MAX",
    depth_max=1,
    depth_name="CONF_CHANGE_DEPTH_MAX",
)
_DEFAULT_LIMITS = frame_limits()


def peek_kind(data: bytes) -> PeerKind | None:
    """The kind of a peer frame read from its first two CBOR headers, without decoding it: the
    agent drops frames of senders it does not know unless they are JOINs, at no decoding cost."""
    if len(data) < 3 or data[0] >> 5 != 4 or data[1] != PEER_PROTOCOL_VERSION:
        return None
    # Kinds are small uints (major 0, value in the header byte); a dict lookup, not the enum's
    # call (several times its cost: decode_scanned peeks at every frame it scans).
    return _PEER_KINDS.get(data[2])


_PEER_KINDS: dict[int, PeerKind] = {member.value: member for member in PeerKind}
assert max(_PEER_KINDS) < 24


def decode(
    data: bytes,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    entries_max: int = ENTRIES_PER_MESSAGE_MAX,
) -> PeerFrame:
    """Decodes and validates one peer frame; ProtocolError names what was wrong. `limits`
    bounds the frame (its bytes_max is the agent's peer_frame_bytes_max), `entries_max` the
    entries an APPEND or PROPOSE may carry."""
    # Only a MSG of 14 fields (the array's header and the kind, one byte each) is decoded by
    # cbor2 first: the fast path answers no other kind, so any other frame would be decoded
    # twice, a snapshot CHUNK's data built twice and a stranger's JOIN or HELLO the scan refuses
    # built whole before the refusal (review 27). Anything the fast checks are unsure of is
    # refused or accepted by decode_scanned, as ever.
    if len(data) > 2 and data[0] == _MSG_HEAD and data[2] == _MSG_KIND:
        raw = _loads_flat(data, limits)
        if raw is not None:
            message = _message_fast(raw, limits.bytes_max, entries_max)
            if message is not None:
                return message
            del raw  # its strings are not kept while the scanned way builds them again
    return decode_scanned(data, limits=limits, entries_max=entries_max)


# A MSG's first bytes: an array of 14 items, then the version and the kind (PeerKind.MSG).
_MSG_HEAD = 0x80 | 14
_MSG_KIND = int(PeerKind.MSG)


def _loads_flat(data: bytes, limits: DecodeLimits) -> list[Any] | None:
    """`codec.loads(data, limits)` for a frame that is an array of at most 23 scalars, with the
    version and kind of ours, decoded by cbor2 alone (codec.loads_shallow); None for anything
    else (decode_scanned decides). Every frame but a SNAPSHOT message and a WELCOME is one;
    `decode` asks it for MSGs only (the fast path answers no other kind).

    Why it is the same value: the header bounds the items to 24 (PEER_FRAME_ITEMS_MAX is
    1,024) and depth 1 keeps every item a scalar or an empty container, so bytes are the
    one limit left (checked here); cbor2 refuses tags, indefinite lengths, and bytes after
    the item here, as the scan does; a simple value comes back as an object of its own type,
    which the type check sends to the scan; strings, ints and floats decode the same way
    whatever their header's width (cbor2 builds both)."""
    if not 3 <= len(data) <= limits.bytes_max or not 0x82 <= data[0] <= 0x97:
        return None
    if data[1] != PEER_PROTOCOL_VERSION or data[2] > 23:
        return None  # version and kind as one-byte uints: anything else the slow way
    if limits.items_max < 24 or limits.depth_max < 1:  # (never with frame_limits)
        return None
    # No string longer than the scan allows may be built (review 27): their headers are read
    # first, where the frame is long enough to hold one (an APPEND with entries; not the
    # usual HEARTBEAT or APPEND_RESP of ~25 bytes).
    size = len(data)
    text_max, blob_max = limits.text_bytes_max, limits.blob_bytes_max
    if (text_max is not None and size > text_max) or (blob_max is not None and size > blob_max):
        text_max = size if text_max is None else text_max
        blob_max = size if blob_max is None else blob_max
        if not codec.strings_within(data, 1, data[0] & 31, text_max, blob_max):
            return None
    raw = codec.loads_shallow(data, 1)
    if raw is codec.NOT_DECODED or not _SCALARS.issuperset(map(type, raw)):
        return None
    result: list[Any] = raw
    return result


_SCALARS = codec.SHALLOW_SCALARS


def _message_fast(raw: list[Any], bytes_max: int, entries_max: int) -> Message | None:
    """The Message of a MSG frame's fields when every check passes (the checks of
    _decode_message, in an order of their own: this only accepts); None at the first doubt
    (decode_scanned then refuses it with its message, or accepts it). No snapshot (a
    SNAPSHOT's meta is not a scalar)."""
    (_, _, type_raw, frm, to, term, log_term, index, blob, commit, reject, hint, ctx, snap) = raw
    msg_type = _MSG_TYPES.get(type_raw) if type(type_raw) is int else None
    if (
        msg_type is None
        or msg_type is MsgType.SNAPSHOT
        or snap is not None
        or frm == to
        or type(frm) is not str
        or type(to) is not str
        or (frm not in _IDS_SEEN and not _id_ok(frm))
        or (to not in _IDS_SEEN and not _id_ok(to))
        or type(term) is not int
        or type(log_term) is not int
        or type(index) is not int
        or type(commit) is not int
        or type(hint) is not int
        or not 0 <= term <= INDEX_MAX
        or not 0 <= log_term <= INDEX_MAX
        or not 0 <= index <= INDEX_MAX
        or not 0 <= commit <= INDEX_MAX
        or not 0 <= hint <= INDEX_MAX
        or type(reject) is not bool
        or type(ctx) is not bytes
        or len(ctx) > CONTEXT_BYTES_MAX
        or type(blob) is not bytes
        or len(blob) > bytes_max
    ):
        return None
    entries: tuple[Entry, ...] | None = ()
    if blob:
        # The one-pass read only (review33): cbor2 would build a text in the blob before any
        # check could refuse it (ENTRIES_TEXT_BYTES_MAX is 0), and this reads its headers first.
        entries = _entries_fast(blob, msg_type, term, index, entries_max)
        if entries is None:
            return None
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
        context=ctx,
        snapshot=None,
    )


# Node ids a fast decode found valid (a cluster names a few): a set lookup instead of the
# character walk. Bounded: past _IDS_SEEN_MAX the walk runs for each new id, as before.
_IDS_SEEN: set[str] = set()
_IDS_SEEN_MAX = 64


def _id_ok(node: str) -> bool:
    if not node_id_valid(node):
        return False
    if len(_IDS_SEEN) < _IDS_SEEN_MAX:
        _IDS_SEEN.add(node)
    return True


def decode_scanned(
    data: bytes,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    entries_max: int = ENTRIES_PER_MESSAGE_MAX,
) -> PeerFrame:
    """`decode` the old way, for every frame: `codec.loads` (the scan, then cbor2), then the
    checks. What `decode` falls back to, and what tests compare it with (its fast paths must
    give the same frame, or this one's refusal)."""
    # (A caller's str is left to codec.loads, which names its type.)
    kind = peek_kind(data) if isinstance(data, bytes | bytearray | memoryview) else None
    raw = codec.loads(data, _kind_limits(limits, kind))
    if type(raw) is not list or len(raw) < 2:
        raise FrameError("shape", "peer frame must be a CBOR array [version, kind, ...]")
    if type(raw[0]) is not int or raw[0] != PEER_PROTOCOL_VERSION:
        raise FrameError(
            "version",
            f"peer protocol version must be the int {PEER_PROTOCOL_VERSION}, got "
            f"{describe(raw[0])}",
        )
    kind = raw[1]
    if type(kind) is int:
        if kind == PeerKind.MSG:
            return _decode_message(raw, limits.bytes_max, entries_max)
        if kind == PeerKind.JOIN:
            return _decode_join(raw)
        if kind == PeerKind.CHUNK:
            return _decode_chunk(raw, limits.bytes_max)
        if kind == PeerKind.WELCOME:
            return _decode_welcome(raw)
        if kind == PeerKind.PROBE:
            return _decode_probe(raw)
        if kind == PeerKind.PROBE_REPLY:
            return _decode_probe_reply(raw)
        if kind == PeerKind.CHUNK_ACK:
            return _decode_chunk_ack(raw)
        if kind == PeerKind.HELLO:
            return _decode_hello(raw)
        if kind == PeerKind.RULES:
            return _decode_rules_known(raw)
    raise FrameError("kind", f"unknown peer frame kind ({describe(kind)})")


# The kinds whose fields hold byte strings (a MSG's entries and context, a CHUNK's data), and
# an unknown kind (a frame whose kind is not a one-byte uint may still decode as one of them).
_KINDS_WITH_BYTES = frozenset({PeerKind.MSG, PeerKind.CHUNK, None})
# Limits with PEER_NO_BYTES_MAX, by the limits they tighten: one per limits an agent or a test
# uses (a few); cleared past _NO_BYTES_LIMITS_MAX rather than grown.
_NO_BYTES_LIMITS: dict[DecodeLimits, DecodeLimits] = {}
_NO_BYTES_LIMITS_MAX = 16


def _kind_limits(limits: DecodeLimits, kind: PeerKind | None) -> DecodeLimits:
    """`limits` for a frame of `kind`: those of a kind without byte strings refuse one at its
    header (PEER_NO_BYTES_MAX) instead of copying it before the field's check."""
    if kind in _KINDS_WITH_BYTES or limits.blob_bytes_max is not None:
        return limits
    tightened = _NO_BYTES_LIMITS.get(limits)
    if tightened is None:
        if len(_NO_BYTES_LIMITS) >= _NO_BYTES_LIMITS_MAX:
            _NO_BYTES_LIMITS.clear()
        tightened = _NO_BYTES_LIMITS[limits] = dataclasses.replace(
            limits, blob_bytes_max=PEER_NO_BYTES_MAX, blob_name="PEER_NO_BYTES_MAX"
        )
    return tightened


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= INDEX_MAX:
        raise FrameError(
            "field", f"peer {name} must be an integer in [{minimum}, 2**63), got {describe(value)}"
        )
    return value


def _node_id(value: Any, name: str) -> str:
    if type(value) is not str or not node_id_valid(value):
        raise FrameError(
            "field",
            f"peer {name} must be a node id of 1..{NODE_ID_CHARS_MAX} letters, digits, '-', '_' "
            f"or '.', got {describe(value)}",
        )
    return value


def _address(value: Any, name: str) -> str:
    if type(value) is not str or len(value.encode()) > ADDRESS_BYTES_MAX:
        raise FrameError(
            "field",
            f"peer {name} must be an endpoint of at most {ADDRESS_BYTES_MAX} bytes, got "
            f"{describe(value)}",
        )
    return value


def _bytes(value: Any, name: str, bytes_max: int) -> bytes:
    if type(value) is not bytes or len(value) > bytes_max:
        raise FrameError(
            "field",
            f"peer {name} must be a byte string of at most {bytes_max} bytes, got "
            f"{describe(value)}",
        )
    return value


def _decode_message(raw: list[Any], bytes_max: int, entries_max: int) -> Message:
    if len(raw) != 14:
        raise FrameError("shape", f"peer MSG must have 14 fields, got {len(raw)}")
    (_, _, type_raw, frm, to, term, log_term, index, blob, commit, reject, hint, ctx, snap) = raw
    if type(type_raw) is not int:
        raise FrameError("field", f"peer message type must be an integer, got {describe(type_raw)}")
    msg_type = _MSG_TYPES.get(type_raw)
    if msg_type is None:
        raise FrameError("field", f"unknown Raft message type ({describe(type_raw)})")
    frm = _node_id(frm, "frm")
    to = _node_id(to, "to")
    if frm == to:
        raise FrameError("field", "peer message from a node to itself")
    term = _int(term, "term")
    log_term = _int(log_term, "log_term")
    index = _int(index, "index")
    commit = _int(commit, "commit")
    hint = _int(hint, "reject_hint")
    if type(reject) is not bool:
        raise FrameError("field", f"peer reject must be a boolean, got {describe(reject)}")
    context = _bytes(ctx, "context", CONTEXT_BYTES_MAX)
    blob = _bytes(blob, "entries", bytes_max)
    entries = _decode_entries(blob, msg_type, term, index, entries_max) if blob else ()
    snapshot = _decode_snapshot(snap, term) if snap is not None else None
    if (msg_type is MsgType.SNAPSHOT) != (snapshot is not None):
        raise FrameError("field", "a snapshot meta comes with SNAPSHOT messages and only with them")
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


def _decode_entries(
    blob: bytes, msg_type: MsgType, term: int, prev: int, entries_max: int
) -> tuple[Entry, ...]:
    entries = _entries_fast(blob, msg_type, term, prev, entries_max)
    if entries is not None:
        return entries
    return _entries_full(blob, msg_type, term, prev, entries_max)


def _entries_fast(
    blob: bytes, msg_type: MsgType, term: int, prev: int, entries_max: int
) -> tuple[Entry, ...] | None:
    """The entries of a blob as our encoder writes it (`encode_entries`: definite, minimal
    headers) whose every entry is valid, read in one pass; None for anything else, which
    `_entries_full` then decodes or refuses with its own message. It accepts only what the full
    path accepts (scan, cbor2, the checks), with the same result: a strict subset, so the
    refusals are the full path's (tests/unit/test_peer_entries.py compares the two). Before,
    a follower's APPEND was walked by `codec.scan`, decoded by cbor2, then checked: ~2.2 us per
    entry (docs/data-model-v2.md 8.8). CONF entries go the full way (their check may refuse).

    Every header is read before anything is built, so a text (ENTRIES_TEXT_BYTES_MAX is 0) is
    never built here: the full path's scan refuses it at its header (review33). Each entry's
    headers up to its data's are read by one struct call for the widths of its index and term
    (`_EntryLayout`, kept while the entries keep them), which is what makes this as fast as
    cbor2 was for the blobs it took (docs/data-model-v2.md 8.13)."""
    if msg_type is MsgType.APPEND:
        append = True
    elif msg_type is MsgType.PROPOSE:
        append = False
    else:
        return None
    size = len(blob)
    from_bytes = int.from_bytes
    try:
        head = blob[0]
        if 0x81 <= head <= 0x97:
            count, pos = head - 0x80, 1
        elif head == 0x98:
            count, pos = blob[1], 2
            if count < 24:
                return None
        elif head == 0x99:
            count, pos = from_bytes(blob[1:3]), 3
            if count < 0x100:
                return None
        elif head == 0x9A:
            count, pos = from_bytes(blob[1:5]), 5
            if count < 0x10000:
                return None
        else:
            return None  # not an array, an empty one, or a non-minimal or indefinite header
        # Every entry takes at least ENTRY_ITEMS bytes: a count the blob cannot hold is refused
        # before the loop (a header may declare up to 2**32 - 1).
        if count > entries_max or prev + count > INDEX_MAX or count * ENTRY_ITEMS > size - pos:
            return None
        entries: list[Entry] = []
        add = entries.append
        entry = Entry
        normal = EntryKind.NORMAL
        # A PROPOSE's entries are [0, 0, 0, data]: the same comparisons with a step of 0.
        expected = prev + 1 if append else 0
        step = 1 if append else 0
        least_term = 1 if append else 0
        top_term = term if append else 0
        # Each entry is read by the layout of the widths of its index and term, the first
        # entry's (and, if one differs, the next one's: a log crossing 65,536, a term 24).
        layout = _layout_at(blob, pos)
        if layout is None:
            return None
        unpack, get, head_c, term_head_c, header_bytes, index_min, index_max, term_min, term_max = (
            layout
        )
        # The term's bounds at this width, folded into the ones that hold anyway: one chained
        # comparison per entry (minimal headers: a header byte of a value under 24 is the
        # value). The index's lower bound holds for every later entry of a layout once it holds
        # for its first (contiguous, or all 0 in a PROPOSE).
        least_term = max(least_term, term_min)
        top = min(top_term, term_max)
        if expected < index_min:
            return None
        for _ in range(count):
            head, term_head, kind, e_index, e_term, data_head = get(unpack(blob, pos))
            if (
                head != head_c
                or term_head != term_head_c
                or kind
                or e_index != expected
                or e_index > index_max
                or not least_term <= e_term <= top
            ):
                # The entry's own layout, once: its index or term is wider, or the bytes of a
                # wider one fit this layout's shape (a term from under 24 to 65,536 reads its
                # 4-byte header 0x1a and the zero byte after it as a term of 26 and a NORMAL
                # kind) and only the values tell (the full path answered the same, slower).
                relaid = _layout_at(blob, pos)
                if relaid is None or relaid is layout:
                    return None
                layout = relaid
                (unpack, get, head_c, term_head_c, header_bytes, index_min, index_max,
                 term_min, term_max) = layout  # fmt: skip
                head, term_head, kind, e_index, e_term, data_head = get(unpack(blob, pos))
                if head != head_c or term_head != term_head_c or kind or expected < index_min:
                    return None  # (a kind but NORMAL fails every layout)
                least_term = max(least_term, term_min)
                top = min(top_term, term_max)
                if e_index != expected or e_index > index_max or not least_term <= e_term <= top:
                    return None
            least_term = e_term  # terms never go down
            expected += step
            pos += header_bytes
            if data_head == 0x58:
                length = blob[pos]
                pos += 1
                if length < 24:
                    return None
            elif 0x40 <= data_head <= 0x57:
                length = data_head - 0x40
            elif data_head == 0x59:
                length = blob[pos] << 8 | blob[pos + 1]
                pos += 2
                if length < 0x100:
                    return None
            elif data_head == 0x5A:
                length = from_bytes(blob[pos : pos + 4])
                pos += 4
                if length < 0x10000:
                    return None
            else:
                return None  # a text, another type, or a longer or non-minimal header
            end = pos + length
            if end > size:
                return None
            add(entry(e_index, e_term, normal, blob[pos:end]))
            pos = end
    except (IndexError, struct.error):
        return None  # truncated
    if pos != size:
        return None
    return tuple(entries)


# An entry's headers up to its data's, for one width of its index and term (0: the value is
# the header byte, under 24; else 1, 2, 4 or 8 bytes after it): (unpack_from, a getter of
# (head, term header, kind, index, term, data header) from what it unpacked, the head's and the
# term header's constant values, the bytes read, the index's and the term's minimal range at
# that width). The head is 0x84 (an array of 4), with the index's header byte after it when
# that is not the value (one 16-bit field); a term in its header byte has the kind (0) read
# again as its "term header", so every layout compares the same three constants.
_EntryLayout = tuple[
    Callable[[bytes, int], tuple[int, ...]],
    Callable[[tuple[int, ...]], tuple[int, int, int, int, int, int]],
    int,
    int,
    int,
    int,
    int,
    int,
    int,
]
# A uint header byte's argument width (major type 0, minimal or not): anything else is absent.
_UINT_WIDTHS: dict[int, int] = {**{b: 0 for b in range(24)}, 24: 1, 25: 2, 26: 4, 27: 8}
_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_UINT_HEADS = {1: 24, 2: 25, 4: 26, 8: 27}
# The values a minimal header of each width holds (indices and terms: at most INDEX_MAX).
_UINT_RANGES = {
    0: (0, 23),
    1: (24, 0xFF),
    2: (0x100, 0xFFFF),
    4: (0x10000, 0xFFFFFFFF),
    8: (0x100000000, INDEX_MAX),
}


def _make_layout(index_width: int, term_width: int) -> _EntryLayout:
    if index_width:
        fmt, head = ">H" + _UINT_CODES[index_width], 0x84 << 8 | _UINT_HEADS[index_width]
    else:
        fmt, head = ">BB", 0x84
    at = 2  # the index at 1
    if term_width:
        fmt += "B" + _UINT_CODES[term_width]
        term_head_at, term_head, term_at = at, _UINT_HEADS[term_width], at + 1
        at += 2
    else:
        fmt += "B"
        term_head_at, term_head, term_at = at + 1, int(EntryKind.NORMAL), at  # the kind
        at += 1
    fmt += "BB"  # the kind, the data's header byte
    layout = struct.Struct(fmt)
    return (
        layout.unpack_from,
        operator.itemgetter(0, term_head_at, at, 1, term_at, at + 1),
        head,
        term_head,
        layout.size,
        *_UINT_RANGES[index_width],
        *_UINT_RANGES[term_width],
    )


_LAYOUTS: dict[tuple[int, int], _EntryLayout] = {
    (i, t): _make_layout(i, t) for i in _UINT_RANGES for t in _UINT_RANGES
}


def _layout_at(blob: bytes, pos: int) -> _EntryLayout | None:
    """The layout of the entry at `pos` by its index's and term's header bytes; None if they
    are not uint headers (IndexError past the end)."""
    index_width = _UINT_WIDTHS.get(blob[pos + 1])
    if index_width is None:
        return None
    term_width = _UINT_WIDTHS.get(blob[pos + 2 + index_width])
    if term_width is None:
        return None
    return _LAYOUTS[index_width, term_width]


def _entries_full(
    blob: bytes, msg_type: MsgType, term: int, prev: int, entries_max: int
) -> tuple[Entry, ...]:
    if msg_type not in (MsgType.APPEND, MsgType.PROPOSE):
        raise FrameError("field", f"{msg_type.name} messages carry no entries")
    raw = codec.loads(blob, entries_limits(len(blob), entries_max))
    if type(raw) is not list or not raw:
        raise FrameError("field", f"peer entries must be a non-empty array, got {describe(raw)}")
    if len(raw) > entries_max:
        raise codec.DecodeLimitExceeded(
            "ENTRIES_PER_MESSAGE_MAX", entries_max, len(raw), "entries in one peer message"
        )
    if prev + len(raw) > INDEX_MAX:
        raise FrameError("field", "APPEND entries would run past index 2**63 - 1")
    entries: list[Entry] = []
    previous_term = 0
    for offset, item in enumerate(raw):
        if type(item) is not list or len(item) != 4:
            raise FrameError("field", "a peer entry must be [index, term, kind, data]")
        e_index = _int(item[0], "entry index")
        e_term = _int(item[1], "entry term")
        kind_raw = item[2]
        if type(kind_raw) is not int:
            raise FrameError("field", f"entry kind must be an integer, got {describe(kind_raw)}")
        kind = _ENTRY_KINDS.get(kind_raw)
        if kind is None:
            raise FrameError("field", f"unknown entry kind ({describe(kind_raw)})")
        data = item[3]
        if type(data) is not bytes:
            raise FrameError("field", f"entry data must be a byte string, got {describe(data)}")
        if msg_type is MsgType.PROPOSE:
            # Forwarded proposals are numbered by the leader, never by the sender.
            if e_index != 0 or e_term != 0 or kind is not EntryKind.NORMAL:
                raise FrameError(
                    "field", "forwarded proposals must be NORMAL entries without index"
                )
        else:
            if e_index != prev + 1 + offset:
                raise FrameError("field", f"APPEND entries not contiguous at offset {offset}")
            if not 1 <= e_term <= term or e_term < previous_term:
                raise FrameError(
                    "field",
                    f"APPEND entry at offset {offset} has a term of 0, above the message term, "
                    "or below the previous entry's",
                )
            previous_term = e_term
            if kind is EntryKind.CONF:
                # The core decodes CONF entries as they append: garbage must stop here.
                check_conf_change(data)
        entries.append(Entry(e_index, e_term, kind, data))
    return tuple(entries)


_NORMAL = int(EntryKind.NORMAL)
assert 0 <= _NORMAL < 24  # one header byte: `_EntryLayout` compares it directly


def check_conf_change(data: bytes) -> None:
    """Raises FrameError unless `data` is what ConfChange.encode makes (the core decodes it
    when the entry appends, and must never meet garbage there)."""
    value = codec.loads(data, _CONF_CHANGE_LIMITS)
    if not (
        type(value) is list
        and len(value) == 3
        and all(type(part) is str for part in value)
        and value[0] in CONF_OPS
        and 1 <= len(value[1].encode()) <= NODE_ID_BYTES_MAX
        and len(value[2].encode()) <= ADDRESS_BYTES_MAX
    ):
        raise FrameError("field", "a CONF entry is not [op, node, address] of bounded strings")


def _decode_snapshot(raw: Any, term: int) -> SnapshotMeta:
    if type(raw) is not list or len(raw) != 5:
        raise FrameError(
            "field", "snapshot meta must be [index, term, voters, learners, addresses]"
        )
    index = _int(raw[0], "snapshot index", minimum=1)
    snap_term = _int(raw[1], "snapshot term", minimum=1)
    if snap_term > term:
        raise FrameError("field", "snapshot term is above the message term")
    return SnapshotMeta(index, snap_term, _decode_conf(raw[2], raw[3], raw[4], "snapshot"))


def _decode_conf(voters: Any, learners: Any, addresses: Any, what: str) -> ConfState:
    """A configuration carried by a frame (`what`: "snapshot", "welcome")."""
    for name, ids in (("voters", voters), ("learners", learners)):
        if type(ids) is not list or len(ids) > PEERS_MAX:
            raise FrameError("field", f"{what} {name} must be a list of at most {PEERS_MAX} ids")
        for node in ids:
            _node_id(node, f"{what} {name[:-1]}")
    if not voters:
        raise FrameError("field", f"{what} configuration has no voters")
    if len(set(voters)) != len(voters) or len(set(learners)) != len(learners):
        raise FrameError("field", f"{what} configuration lists a member twice")
    if set(voters) & set(learners):
        raise FrameError("field", f"{what} configuration has a node both voter and learner")
    if type(addresses) is not list or len(addresses) > 2 * PEERS_MAX:
        raise FrameError("field", f"{what} addresses must be a list of [id, endpoint]")
    pairs: dict[str, str] = {}
    for pair in addresses:
        if type(pair) is not list or len(pair) != 2:
            raise FrameError("field", f"{what} addresses must be a list of [id, endpoint]")
        pairs[_node_id(pair[0], "address id")] = _address(pair[1], "address")
    return ConfState.make(voters, learners, pairs)


def _decode_welcome(raw: list[Any]) -> Welcome:
    if len(raw) != 5:
        raise FrameError("shape", f"peer WELCOME must have 5 fields, got {len(raw)}")
    conf = raw[4]
    if type(conf) is not list or len(conf) != 3:
        raise FrameError(
            "field", "peer WELCOME configuration must be [voters, learners, addresses]"
        )
    return Welcome(
        frm=_node_id(raw[2], "welcome frm"),
        to=_node_id(raw[3], "welcome to"),
        conf0=_decode_conf(conf[0], conf[1], conf[2], "welcome"),
    )


def _decode_probe(raw: list[Any]) -> Probe:
    if len(raw) != 4:
        raise FrameError("shape", f"peer PROBE must have 4 fields, got {len(raw)}")
    return Probe(frm=_node_id(raw[2], "probe frm"), to=_node_id(raw[3], "probe to"))


def _decode_probe_reply(raw: list[Any]) -> ProbeReply:
    if len(raw) != 7:
        raise FrameError("shape", f"peer PROBE_REPLY must have 7 fields, got {len(raw)}")
    return ProbeReply(
        frm=_node_id(raw[2], "probe reply frm"),
        to=_node_id(raw[3], "probe reply to"),
        term=_int(raw[4], "probe reply term"),
        commit=_int(raw[5], "probe reply commit"),
        heard_term=_int(raw[6], "probe reply heard term"),
    )


def _endpoint(value: Any, name: str) -> str:
    """An endpoint a sender asks us to dial (JOIN, HELLO): we log it and zmq takes it as a C
    string, so it must be printable (no newline forging a log line, no NUL cutting what is
    dialled short of what is logged; review 25)."""
    address = _address(value, name)
    if not address.startswith(ENDPOINT_SCHEMES) or len(address) <= len("tcp://"):
        raise FrameError("field", f"peer {name} must start with one of {ENDPOINT_SCHEMES}")
    if not address.isprintable():
        raise FrameError("field", f"peer {name} must be printable text (no control characters)")
    return address


def _decode_join(raw: list[Any]) -> JoinRequest:
    if len(raw) != 4:
        raise FrameError("shape", f"peer JOIN must have 4 fields, got {len(raw)}")
    address = _endpoint(raw[3], "JOIN address")
    return JoinRequest(_node_id(raw[2], "join id"), address)


def _decode_hello(raw: list[Any]) -> Hello:
    if len(raw) != 6:
        raise FrameError("shape", f"peer HELLO must have 6 fields, got {len(raw)}")
    return Hello(
        frm=_node_id(raw[2], "hello frm"),
        to=_node_id(raw[3], "hello to"),
        term=_int(raw[4], "hello term", minimum=1),
        address=_endpoint(raw[5], "HELLO address"),
    )


def _decode_rules_known(raw: list[Any]) -> RulesKnown:
    if len(raw) != 5:
        raise FrameError("shape", f"peer RULES must have 5 fields, got {len(raw)}")
    return RulesKnown(
        frm=_node_id(raw[2], "rules frm"),
        to=_node_id(raw[3], "rules to"),
        rules_max=_int(raw[4], "rules_max", minimum=1),
    )


def _decode_chunk_ack(raw: list[Any]) -> ChunkAck:
    if len(raw) != 7:
        raise FrameError("shape", f"peer CHUNK_ACK must have 7 fields, got {len(raw)}")
    return ChunkAck(
        frm=_node_id(raw[2], "chunk ack frm"),
        to=_node_id(raw[3], "chunk ack to"),
        term=_int(raw[4], "chunk ack term", minimum=1),
        snap_index=_int(raw[5], "chunk ack snapshot index", minimum=1),
        part=_int(raw[6], "chunk ack part"),
    )


def _decode_chunk(raw: list[Any], bytes_max: int) -> SnapshotChunk:
    if len(raw) != 9:
        raise FrameError("shape", f"peer CHUNK must have 9 fields, got {len(raw)}")
    frm = _node_id(raw[2], "chunk frm")
    to = _node_id(raw[3], "chunk to")
    if type(raw[7]) is not bool:
        raise FrameError("field", f"peer chunk 'last' must be a boolean, got {describe(raw[7])}")
    return SnapshotChunk(
        frm=frm,
        to=to,
        term=_int(raw[4], "chunk term", minimum=1),
        snap_index=_int(raw[5], "chunk snapshot index", minimum=1),
        part=_int(raw[6], "chunk part"),
        last=raw[7],
        data=_bytes(raw[8], "chunk data", bytes_max),
    )
