"""The payload of a NORMAL log entry, as the agent makes it from a client request.

CBOR `[kind, client_id, seq, seq_low, time_ms, body]` (docs/architecture.md section 3). Read by
the state machine (to apply it) and by storage (to stream applied entries to apps), so it lives
below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2
from superstatic_agent.raft.types import Entry, EntryKind

from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.wire import CLIENT_ID_CHARS_MAX

# Depth of an entry payload's CBOR: [kind, client, seq, seq_low, time_ms, body bytes].
PAYLOAD_DEPTH_MAX = 2
# seq, seq_low and time_ms are stored as CBOR ints; beyond 64 bits they are garbage.
PAYLOAD_INT_MAX = (1 << 63) - 1

PAYLOAD_KINDS = ("txn", "open", "close")


@dataclass(frozen=True, slots=True)
class Payload:
    """A NORMAL entry's data: [kind, client_id, seq, seq_low, time_ms, body] (section 3)."""

    kind: str
    client: str
    seq: int
    seq_low: int
    time_ms: int
    body: bytes


def encode_payload(payload: Payload) -> bytes:
    p = payload
    return cbor2.dumps([p.kind, p.client, p.seq, p.seq_low, p.time_ms, p.body])


def parse_payload(data: bytes) -> Payload:
    """The payload of a NORMAL entry; ProtocolError naming what is wrong."""
    try:
        value: Any = cbor2.loads(data, max_depth=PAYLOAD_DEPTH_MAX)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise ProtocolError(f"entry payload is not CBOR: {exc}") from None
    if type(value) is not list or len(value) != 6:
        raise ProtocolError("entry payload is not [kind, client, seq, seq_low, time_ms, body]")
    kind, client, seq, seq_low, time_ms, body = value
    if kind not in PAYLOAD_KINDS:
        raise ProtocolError(f"entry kind {kind!r:.40} is not one of {', '.join(PAYLOAD_KINDS)}")
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
    return Payload(kind, client, seq, seq_low, time_ms, body)


def event_fields(entry: Entry, outcome: str) -> tuple[str | None, int | None, bytes | None]:
    """(client, seq, body) of the stream event of an applied entry with this outcome: exactly
    the Applied fields the state machine returned for it."""
    if entry.kind != EntryKind.NORMAL:
        return None, None, None
    try:
        payload = parse_payload(entry.data)
    except ProtocolError:
        return None, None, None
    body = payload.body if outcome == "ok" and payload.kind == "txn" else None
    return payload.client, payload.seq, body
