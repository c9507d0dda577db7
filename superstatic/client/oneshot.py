"""One request, one answer: a blocking call to an agent's client endpoint.

Used by the command line (`superstatic status`, `inspect`), the local cluster manager and tests:
places where a long-lived `Connection` (sessions, stream, failover) would be too much.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from superstatic.client import keys as client_keys
from superstatic.protocol import wire
from superstatic.protocol.errors import AuthError, ProtocolError, Unavailable

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
    keys: client_keys.KeysArg = None,
) -> dict[str, Any]:
    """Sends one frame and returns the REPLY body.

    Raises Unavailable if nothing answers within timeout_ms (the request has no side effects
    worth knowing about: oneshot is for reads), AuthError if the agent refuses our CURVE key
    (`keys`, else $SUPERSTATIC_KEYS; none: no CURVE) or its role, ProtocolError on an ERROR
    answer or garbage.
    """
    assert frame_type is not wire.FrameType.PROPOSE
    frame = exchange(endpoint, frame_type, body, timeout_ms=timeout_ms, context=context, keys=keys)
    if frame.type is wire.FrameType.ERROR:
        raise ProtocolError(
            f"agent at {endpoint} refused {frame_type.name}: "
            f"{frame.body.get('code')}: {frame.body.get('message')}"
        )
    return frame.body


def exchange(
    endpoint: str,
    frame_type: wire.FrameType,
    body: dict[str, Any] | None = None,
    *,
    timeout_ms: int = TIMEOUT_MS_ONESHOT_DEFAULT,
    context: zmq.Context[Any] | None = None,
    keys: client_keys.KeysArg = None,
) -> wire.Frame:
    """Sends one frame on a fresh DEALER and returns the answer, REPLY or ERROR (the ERROR body
    carries the leader hint). An ERROR `forbidden` and a refused handshake raise AuthError;
    silence past timeout_ms raises Unavailable (outcome unknown for MEMBERS, else known)."""
    assert frame_type in wire.CLIENT_TO_AGENT
    resolved = client_keys.resolve(keys)
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if resolved is not None:
        resolved.apply(sock)
    # A refused handshake is silent on the socket: its monitor tells, so a refusal is an
    # AuthError at once instead of a timeout.
    monitor = sock.get_monitor_socket(client_keys.HANDSHAKE_EVENTS)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    silent_failures = 0
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        sock.connect(endpoint)
        req_id = next(_req_ids)
        sock.send(wire.encode(frame_type, req_id, body or {}))
        for _ in range(FRAMES_SKIPPED_MAX):
            ready: dict[Any, int] = {}
            while sock not in ready:
                left_ms = math.ceil((deadline - time.monotonic()) * 1000)
                ready = dict(poller.poll(left_ms)) if left_ms > 0 else {}
                if not ready:
                    break
                if monitor in ready:
                    event = recv_monitor_message(monitor)
                    if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                        silent_failures += 1
                    refused = client_keys.refusal(
                        event["event"], event["value"], endpoint, resolved, silent_failures
                    )
                    if refused is not None:
                        raise AuthError(refused)
            if sock not in ready:
                raise Unavailable(
                    f"agent at {endpoint} did not answer {frame_type.name} within {timeout_ms} ms; "
                    "check that it is running (superstatic-agent) and the endpoint is right",
                    outcome_known=frame_type is not wire.FrameType.MEMBERS,
                )
            frame = wire.decode(sock.recv(), wire.AGENT_TO_CLIENT)
            if frame.req_id != req_id:
                continue
            if frame.type is wire.FrameType.ERROR and (
                frame.body.get("code") == wire.ErrorCode.FORBIDDEN
            ):
                raise AuthError(f"{frame_type.name} refused: {frame.body.get('message')}")
            if frame.type in (wire.FrameType.REPLY, wire.FrameType.ERROR):
                return frame
        raise ProtocolError(f"no answer to {frame_type.name} among {FRAMES_SKIPPED_MAX} frames")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
