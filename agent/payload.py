"""The payload of a NORMAL log entry, as the agent makes it from a client request.

CBOR `[kind, client_id, seq, seq_low, time_ms, body, session]` (docs/architecture.md section 3).
Read by the state machine (to apply it) and by storage (to stream applied entries to apps), so
it lives below both. `time_ms` is stamped by the leader that appends the entry (0: unstamped, a
follower forwarding it); `session` is the index of the "open" entry that started the client's
session (0 for an "open" that starts one). Six-element payloads (written before sessions had
ids) read as session 0.

Kind "rules" is the agent's own entry, never a client's (wire.PROPOSE_KINDS does not admit
it): it moves the cluster to the state-machine rules version in its `seq` (agent/rules.py);
its client field names the agent that proposed it and no session is touched.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cbor2
from superstatic_agent.raft.types import Entry, EntryKind

from superstatic.protocol import codec
from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.ops import describe
from superstatic.protocol.wire import CLIENT_ID_CHARS_MAX

# Depth of an entry payload's CBOR: [kind, client, seq, seq_low, time_ms, body bytes, session].
PAYLOAD_DEPTH_MAX = 2
# seq, seq_low and time_ms are stored as CBOR ints; beyond 64 bits they are garbage.
PAYLOAD_INT_MAX = (1 << 63) - 1

PAYLOAD_KINDS = ("txn", "open", "close", "rules")


class Payload(NamedTuple):
    """A NORMAL entry's data: [kind, client_id, seq, seq_low, time_ms, body, session].

    A NamedTuple, not a frozen dataclass: every applied entry builds one (and the leader one
    more per proposal to stamp it), and a frozen dataclass's __init__ sets each of its seven
    fields through object.__setattr__ (about 3x the cost; docs/data-model-v2.md 8.6)."""

    kind: str
    client: str
    seq: int
    seq_low: int
    time_ms: int
    body: bytes
    session: int = 0


def _no_tags(*_args: Any) -> Any:
    raise cbor2.CBORDecodeError("CBOR tags have no place here")


# Every semantic tag cbor2 would build an object for (bignums, dates, regexes, MIME, shared
# references, sets, IP addresses, ...), refused as well as unknown tags: the agent's own
# records are plain. One list, codec's, so a tag cbor2 learns is refused everywhere at once.
_TAGS_REFUSED = {tag: _no_tags for tag in codec.SEMANTIC_TAGS_NATIVE}


def loads_plain(data: bytes, depth_max: int) -> Any:
    """CBOR without any tag (the agent's own records: payloads, sessions, snapshot chunks),
    nested at most depth_max. ProtocolError for anything else, never another exception: the
    input may come from a peer, and nothing here may build objects from it (decode
    amplification) or raise what a caller does not expect."""
    try:
        return cbor2.loads(
            data, tag_hook=_no_tags, semantic_decoders=_TAGS_REFUSED, max_depth=depth_max
        )
    except RecursionError:
        raise
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise ProtocolError(f"not plain CBOR: {type(exc).__name__}") from None


def encode_payload(payload: Payload) -> bytes:
    p = payload
    return cbor2.dumps([p.kind, p.client, p.seq, p.seq_low, p.time_ms, p.body, p.session])


# A payload's kind is its array's first item: a "rules" payload's bytes start with the array
# header and then this (a text of 5 bytes: no other kind has these bytes).
_RULES_KIND_CBOR = cbor2.dumps("rules")


def is_rules(data: bytes) -> bool:
    """True if `data` is a "rules" payload's bytes (read from its head, nothing decoded): the
    leader drops one a peer forwards, since only a leader itself appends them. Exact only for
    canonical bytes (encode_payload's, stamp_payload's): CBOR spells one value several ways,
    so a peer's bytes are told only once stamped (review 28)."""
    return data[1 : 1 + len(_RULES_KIND_CBOR)] == _RULES_KIND_CBOR


def stamp_payload(data: bytes, time_ms: int) -> bytes:
    """The payload with the leader's log time; data that is not a payload is left as it is
    (the state machine answers it with an error either way)."""
    try:
        payload = parse_payload(data)
    except ProtocolError:
        return data
    p = payload
    return cbor2.dumps([p.kind, p.client, p.seq, p.seq_low, time_ms, p.body, p.session])


def parse_payload(data: bytes) -> Payload:
    """The payload of a NORMAL entry; ProtocolError naming what is wrong."""
    try:
        value: Any = loads_plain(data, PAYLOAD_DEPTH_MAX)
    except ProtocolError as exc:
        raise ProtocolError(f"entry payload: {exc}") from None
    if type(value) is not list or len(value) not in (6, 7):
        raise ProtocolError(
            "entry payload is not [kind, client, seq, seq_low, time_ms, body, session]"
        )
    kind, client, seq, seq_low, time_ms, body = value[:6]
    session = value[6] if len(value) == 7 else 0
    if type(kind) is not str or kind not in PAYLOAD_KINDS:
        # Never the value itself: a hostile kind may be an int too long to print.
        raise ProtocolError(
            f"entry kind ({describe(kind)}) is not one of {', '.join(PAYLOAD_KINDS)}"
        )
    if type(client) is not str or not 1 <= len(client) <= CLIENT_ID_CHARS_MAX:
        raise ProtocolError(f"client id is a str of 1..{CLIENT_ID_CHARS_MAX} chars")
    if type(seq) is not int or not 1 <= seq <= PAYLOAD_INT_MAX:
        raise ProtocolError(f"seq must be an int in 1..{PAYLOAD_INT_MAX}")
    if type(seq_low) is not int or not 0 <= seq_low <= seq:
        raise ProtocolError(f"seq_low must be an int in 0..seq ({seq})")
    if type(time_ms) is not int or not 0 <= time_ms <= PAYLOAD_INT_MAX:
        raise ProtocolError(f"time_ms must be an int in 0..{PAYLOAD_INT_MAX}")
    if type(body) is not bytes:
        raise ProtocolError("body must be bytes")
    if type(session) is not int or not 0 <= session <= PAYLOAD_INT_MAX:
        raise ProtocolError(f"session must be an int in 0..{PAYLOAD_INT_MAX}")
    return Payload(kind, client, seq, seq_low, time_ms, body, session)


def event_fields(entry: Entry, outcome: str) -> tuple[str | None, int | None, bytes | None]:
    """(client, seq, body) of the stream event of an applied entry with this outcome: exactly
    the Applied fields the state machine returned for it."""
    if entry.kind != EntryKind.NORMAL:
        return None, None, None
    try:
        payload = parse_payload(entry.data)
    except ProtocolError:
        return None, None, None
    if payload.kind == "rules":  # the state machine's, not a client's (Applied: no client)
        return None, None, None
    body = payload.body if outcome == "ok" and payload.kind == "txn" else None
    return payload.client, payload.seq, body
