"""EVENTS bodies assembled from per-event bytes (docs/virtual-heap.md section 4.2).

Each event is encoded once, as the CBOR array the app reads (`event_item`), and a frame's body
is put together from those bytes: `{"ev": [item, ...], "to": index, "t": log_time_ms}`. So a
subscriber whose stream is filtered costs the agent the concatenation of what passes, never a
decode or an encode of an event. `"to"` is the last index the frame covers (events filtered out
of it included) and `"t"` the log time at `"to"`: an app's applied index and log time move to
them after the frame even when none of its events are in it.

The bytes are exactly `cbor2.dumps` of the same map (tests/unit/test_eventframes.py checks it):
cbor2 writes a map in insertion order and an array as its head then its items.
"""

from __future__ import annotations

from collections.abc import Sequence

import cbor2
from superstatic_agent.app_snapshot import array_head
from superstatic_agent.storage import Event

from superstatic.protocol import wire
from superstatic.protocol.errors import LimitExceeded

_MAP_OF_3 = b"\xa3"
_KEY_EV = cbor2.dumps("ev")
_KEY_TO = cbor2.dumps("to")
_KEY_T = cbor2.dumps("t")


def frame_bytes(frame_type: wire.FrameType, req_id: int, body: bytes) -> bytes:
    """wire.encode with the body already encoded: the same bytes, without re-encoding a body
    shared by several subscribers. A CBOR array of 4 is the byte 0x84 then its items."""
    data = b"\x84" + cbor2.dumps(wire.PROTOCOL_VERSION) + cbor2.dumps(int(frame_type))
    data += cbor2.dumps(req_id) + body
    if len(data) > wire.FRAME_BYTES_MAX:
        raise LimitExceeded("FRAME_BYTES_MAX", wire.FRAME_BYTES_MAX, len(data), "frame bytes")
    return data


def event_item(event: Event) -> bytes:
    """The encoded `[index, client, seq, outcome, body, collected, log_time_ms, heads]`."""
    heads = [list(head) for head in event[7]]
    return cbor2.dumps([*event[:5], list(event[5]), event[6], heads])


def events_body(items: Sequence[bytes], to: int, log_time_ms: int) -> bytes:
    """The encoded EVENTS body holding `items` (each from `event_item`), covering up to `to`."""
    return b"".join(
        (
            _MAP_OF_3,
            _KEY_EV,
            array_head(len(items)),
            *items,
            _KEY_TO,
            cbor2.dumps(to),
            _KEY_T,
            cbor2.dumps(log_time_ms),
        )
    )
