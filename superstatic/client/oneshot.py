"""One request, one answer: a blocking call to an agent's client endpoint.

Used by the command line (`superstatic status`, `inspect`), the local cluster manager and tests:
places where a long-lived `Connection` (sessions, stream, failover) would be too much.
"""

from __future__ import annotations

import itertools
from typing import Any

import zmq

from superstatic.protocol import wire
from superstatic.protocol.errors import ProtocolError, Unavailable

TIMEOUT_MS_ONESHOT_DEFAULT = 5_000
# A oneshot socket skips frames that are not its answer (e.g. stream events); bound how many.
FRAMES_SKIPPED_MAX = 1_000

_req_ids = itertools.count(1)


def request(
    endpoint: str,
    frame_type: wire.FrameType,
    body: dict[str, Any] | None = None,
    *,
    timeout_ms: int = TIMEOUT_MS_ONESHOT_DEFAULT,
    context: zmq.Context[Any] | None = None,
) -> dict[str, Any]:
    """Sends one frame and returns the REPLY body.

    Raises Unavailable if nothing answers within timeout_ms (the request has no side effects
    worth knowing about: oneshot is for reads), ProtocolError on an ERROR answer or garbage.
    """
    assert frame_type in wire.CLIENT_TO_AGENT and frame_type is not wire.FrameType.PROPOSE
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        req_id = next(_req_ids)
        sock.send(wire.encode(frame_type, req_id, body or {}))
        for _ in range(FRAMES_SKIPPED_MAX):
            if not sock.poll(timeout_ms, zmq.POLLIN):
                raise Unavailable(
                    f"agent at {endpoint} did not answer {frame_type.name} within {timeout_ms} ms; "
                    "check that it is running (superstatic-agent) and the endpoint is right",
                    outcome_known=True,
                )
            frame = wire.decode(sock.recv(), wire.AGENT_TO_CLIENT)
            if frame.req_id != req_id:
                continue
            if frame.type is wire.FrameType.ERROR:
                raise ProtocolError(
                    f"agent at {endpoint} refused {frame_type.name}: "
                    f"{frame.body.get('code')}: {frame.body.get('message')}"
                )
            if frame.type is wire.FrameType.REPLY:
                return frame.body
        raise ProtocolError(f"no answer to {frame_type.name} among {FRAMES_SKIPPED_MAX} frames")
    finally:
        sock.close(linger=0)
