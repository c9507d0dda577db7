"""The connection's second DEALER: to the leader, for writes (docs/data-model-v2.md 8.4).

An app attached to a follower would have every PROPOSE forwarded by it to the leader, and
learn the commit only when the leader's next message reaches the follower. The connection
therefore keeps a second socket to the leader's client endpoint and sends its writes there;
its stream (and so read-your-writes, which waits for the local replica) stays on its own
agent. The agents name the leader by id (HELLO, PING and not_leader answers); which of the
endpoints the app was given is that id is learned by a HELLO on this socket: a link whose agent
is not the leader is closed and the next endpoint not known yet is tried.

Only the connection's I/O state uses a link, under the connection's socket lock; the I/O thread
polls its descriptor and monitor. Nothing here decides retries or outcomes: a write sent on a
link is an attempt like any other (same req id rules, same seq on resend).
"""

from __future__ import annotations

import contextlib
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from superstatic.client import keys as client_keys
from superstatic.protocol import wire

# Bounded buffers of the link's socket (frames), as the connection's own socket.
LINK_HWM_FRAMES = 10_000
# Monitor events read per turn.
LINK_MONITOR_EVENTS_PER_TURN_MAX = 64
# Frames read from the link per turn (a REPLY or ERROR each: small).
LINK_FRAMES_PER_TURN_MAX = 512

_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | client_keys.HANDSHAKE_EVENTS


class LeaderLink:
    """One DEALER to one agent's client endpoint, meant to be the leader's."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        keys: client_keys.ClientKeys | None,
        poller: zmq.Poller,
    ) -> None:
        self.endpoint = endpoint
        self.agent: str | None = None  # its id, once its HELLO answered
        self.hello_req = 0
        self.connected = False  # handshake done
        self.ready = False  # its HELLO said it is the leader we want: writes go here
        self.opened_at = 0.0  # monotonic; set by the connection (LINK_PROBE_MS counts from it)
        self._poller = poller
        sock = ctx.socket(zmq.DEALER)
        monitor: zmq.Socket[Any] | None = None
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # a send that cannot go out fails now
            sock.setsockopt(zmq.SNDHWM, LINK_HWM_FRAMES)
            sock.setsockopt(zmq.RCVHWM, LINK_HWM_FRAMES)
            sock.setsockopt(zmq.MAXMSGSIZE, wire.FRAME_BYTES_MAX)
            if keys is not None:
                keys.apply(sock)  # the same CURVE identity as the connection's own socket
            monitor = sock.get_monitor_socket(_EVENTS)
            sock.connect(endpoint)
        except BaseException:
            # Never leave a half-made socket: the context's term() would wait for it forever.
            if monitor is not None:
                monitor.close(linger=0)
            sock.close(linger=0)
            raise
        self.sock: zmq.Socket[Any] = sock
        self.monitor: zmq.Socket[Any] = monitor
        self.fd = sock.get(zmq.FD)
        poller.register(self.fd, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)

    def close(self) -> None:
        self._poller.unregister(self.fd)
        self._poller.unregister(self.monitor)
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self.ready = self.connected = False

    def send(self, data: bytes) -> bool:
        """False if it could not go out now (no completed connection, or a full queue)."""
        if not self.connected:
            return False
        try:
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def events(self) -> list[tuple[int, Any]]:
        """The monitor's events waiting: (event, value)."""
        out = []
        for _ in range(LINK_MONITOR_EVENTS_PER_TURN_MAX):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            out.append((event["event"], event["value"]))
        return out

    def frames(self) -> list[bytes]:
        """Frames waiting (read until empty or the per-turn bound: the descriptor is
        edge-triggered, so `more()` says whether to look again at once)."""
        out = []
        for _ in range(LINK_FRAMES_PER_TURN_MAX):
            try:
                out.append(self.sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        return out

    def more(self) -> bool:
        return bool(self.sock.get(zmq.EVENTS) & zmq.POLLIN)
