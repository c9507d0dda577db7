"""ZeroMQ sockets of the agent: one ROUTER for peers, DEALERs to each peer, one ROUTER for apps.

Everything here is non-blocking and bounded: receives drain at most a named number of frames
and bytes per loop turn, sends never wait (a full queue drops the frame and counts it: Raft
retransmits, and a client that does not read its replies has stopped being a client). Bad frames
are counted and logged at a bounded rate, so a hostile sender can neither crash the agent nor
flood its log.

Memory in bytes: ZeroMQ bounds its queues in frames, per connection, so every socket also
bounds the size of a frame (MAXMSGSIZE: a larger frame costs its sender the connection, before
it is buffered). A receive queue then holds at most (RCVHWM + 1) x MAXMSGSIZE bytes per
connection, and the receive HWMs are small (config: client_recv_queue_frames_max,
peer_recv_queue_frames_max): a sender beyond them waits (TCP back-pressure), nothing is lost.

Topology: each agent binds a ROUTER on its own peer endpoint and connects one DEALER (identity =
its node id) to every other member's endpoint. A message to node X leaves through our DEALER to
X and arrives at X's ROUTER tagged with our id, so the receiver knows who sent it without
trusting the payload (and checks that the payload's `frm` agrees). With keys (agent/auth.py),
the sender is the id our CURVE key is listed under instead, and DEALERs carry no identity.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import zmq
from superstatic_agent.config import PEER_FRAME_BYTES_MAX

from superstatic.protocol import wire

if TYPE_CHECKING:
    from superstatic_agent.auth import AgentAuth

# Frames taken from one socket per loop turn: the loop must also tick, write and answer.
# Peer frames are cheap to step. Client frames become entries that every agent applies in one
# Ready: their bound caps the length of a turn under overload (a 1,000-entry turn already
# takes 300-600 ms of Python on every agent here), so heartbeats keep flowing and leaders keep their
# quorum; the rest waits in the socket for the next turn.
PEER_FRAMES_PER_TURN_MAX = 4_096
CLIENT_FRAMES_PER_TURN_MAX = 256
# Defaults of the queue bounds (the agent passes its config's; see config.py):
# frames queued towards one peer before sends drop (Raft resends what was lost) ...
PEER_SNDHWM_FRAMES = 10_000
# ... from one peer connection before ZeroMQ stops reading it (x peer_frame_bytes_max).
PEER_RCVHWM_FRAMES = 8
# Frames queued towards one app; beyond it that app's frames wait (streams) or drop (replies).
CLIENT_SNDHWM_FRAMES = 10_000
# Frames queued from one app connection before ZeroMQ stops reading it (x FRAME_BYTES_MAX).
CLIENT_RCVHWM_FRAMES = 16
# Bytes taken from one socket per loop turn (at least one frame is always taken).
RECV_BYTES_PER_TURN_MAX = 64 << 20
# Largest message a peer DEALER accepts: none is expected, but the ZMTP handshake counts.
DEALER_RECV_BYTES_MAX = 4_096
# What `address` is for a client that connected over ipc:// (ZeroMQ reports no address).
LOCAL_ADDRESS = "local"
# Reconnection backoff to a dead peer: quick first retry, capped so a restart is found soon.
RECONNECT_MS = 100
RECONNECT_MS_MAX = 1_000
# A peer that refused our CURVE key (ZAP said no: it does not list us yet, or any more) gets a
# fresh connection this long after: libzmq never retries a refused handshake by itself, and a
# member whose allow list is updated a little after ours must still be reached.
PEER_REFUSED_RETRY_MS = 1_000
# ZMTP heartbeats on each DEALER to a peer, without keys only. There ROUTER_HANDOVER (below)
# gives a peer's identity to whichever connection claims it last, and leaves the previous
# connection a zombie: anyone who connects claiming a member's id would silently cut that
# member's link to us for good; with heartbeats the member's DEALER notices within the timeout
# and reconnects, taking the identity back. With keys our DEALERs claim no identity (peers are
# known by key), so there is nothing to steal, and the heartbeats are left off: in libzmq 4.3.5
# a heartbeat timeout on a connection whose receive queue is full aborts the process
# (`Assertion failed: !_io_error`, libzmq#3937/#4364), and the nemesis met that after every
# healed 12 s partition (all three agents dead within seconds of the heal), besides the pause
# case in docs/agent.md.
PEER_HEARTBEAT_MS = 250
PEER_HEARTBEAT_TIMEOUT_MS = 1_000
# How long a stalled link to a peer may last, so that a healed partition is noticed within
# about a second whatever the cut's length (the nemesis's finding 4, docs/reliability.md). A
# connect() whose SYNs go unanswered is abandoned after this and dialled again (RECONNECT_MS..
# _MAX) instead of waiting out the kernel's SYN backoff (1, 2, 4, 8 ... s) ...
PEER_CONNECT_TIMEOUT_MS = 1_000
# ... and a connection whose data goes unacknowledged this long is dropped and redialled
# instead of waiting out TCP's retransmission backoff (after a 20 s cut, the next retransmission
# came about 6 s after the heal). The kernel acknowledges for a busy or paused agent too.
PEER_TCP_MAXRT_MS = 2_000
# Log at most this many lines about dropped frames per category per window; count all of them.
DROP_LOG_LINES_MAX = 5
DROP_LOG_WINDOW_S = 60.0

log = logging.getLogger("superstatic.agent")


class DropCounter:
    """Counts dropped/bad frames (and other anomalies, e.g. slow loop turns) by category and
    logs a bounded number of lines per category per minute."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()
        self._window_start = time.monotonic()

    def drop(self, category: str, detail: str, reason: str = "") -> None:
        """Counts a dropped or refused frame under `category` and, when given, under
        `category.reason` too (STATUS shows both: which port and rule, and why)."""
        if reason:
            self.counts[f"{category}.{reason}"] += 1
        self.note(category, f"dropped {category}: {detail}")

    def note(self, category: str, line: str) -> None:
        """Counts one anomaly of `category` and logs `line` within the per-category budget."""
        self.counts[category] += 1
        now = time.monotonic()
        if now - self._window_start >= DROP_LOG_WINDOW_S:
            suppressed = {
                c: n - DROP_LOG_LINES_MAX for c, n in self._logged.items() if n > DROP_LOG_LINES_MAX
            }
            if suppressed:
                log.warning("counted but not logged in the last minute: %s", suppressed)
            self._logged.clear()
            self._window_start = now
        self._logged[category] += 1
        if self._logged[category] <= DROP_LOG_LINES_MAX:
            log.warning("%s", line[:300])

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class ListenError(OSError):
    """An endpoint this agent listens on cannot be bound (taken by another process, or not an
    address of this host): the start is refused with this message, never a traceback."""


def bind_router(router: zmq.Socket[Any], endpoint: str, what: str) -> None:
    """Binds `router` on `endpoint` (the operator's own flag, `what`), or closes it and raises
    ListenError naming both and the system's reason."""
    try:
        router.bind(endpoint)
    except zmq.ZMQError as exc:
        router.close(linger=0)
        raise ListenError(exc.errno, f"cannot listen on {what} {endpoint}: {exc.strerror}") from exc


class PeerTransport:
    """The agent's side of the Raft network."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        node_id: str,
        bind_endpoint: str,
        drops: DropCounter,
        *,
        recv_queue_frames_max: int = PEER_RCVHWM_FRAMES,
        send_queue_frames_max: int = PEER_SNDHWM_FRAMES,
        frame_bytes_max: int = PEER_FRAME_BYTES_MAX,
        recv_bytes_per_turn_max: int = RECV_BYTES_PER_TURN_MAX,
        auth: AgentAuth | None = None,
    ) -> None:
        assert recv_queue_frames_max >= 1 and send_queue_frames_max >= 1
        assert 0 < frame_bytes_max <= PEER_FRAME_BYTES_MAX and recv_bytes_per_turn_max >= 1
        self.node_id = node_id
        # With keys (auth.keyed), senders are known by their CURVE key (agent/auth.py).
        self._auth = auth if auth is not None and auth.keyed else None
        self.drops = drops
        self._ctx = ctx
        self._send_queue_frames_max = send_queue_frames_max
        self._recv_bytes_per_turn_max = recv_bytes_per_turn_max
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.RCVHWM, recv_queue_frames_max)
        # zmq refuses (and disconnects) a sender of a bigger frame before buffering it.
        self.router.setsockopt(zmq.MAXMSGSIZE, frame_bytes_max)
        # A restarted peer reconnects with the same identity before its old TCP connection is
        # noticed dead; without handover the ROUTER would ignore the new connection.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self._auth is not None:
            self._auth.configure_peer_router(self.router)  # CURVE options precede bind
        # The peer endpoint: --listen, else this agent's own entry in --peers.
        bind_router(self.router, bind_endpoint, "the peer endpoint")
        self._dealers: dict[str, tuple[str, zmq.Socket[Any]]] = {}
        # The server key each DEALER checks (b"" without keys): a reload that changes it
        # reconnects that peer.
        self._dealer_keys: dict[str, bytes] = {}
        # With keys: each DEALER's monitor (its handshake refused?), peers refused until when
        # (monotonic s), and the addresses last asked for (to reconnect a refused peer).
        self._dealer_monitors: dict[str, zmq.Socket[Any]] = {}
        self._refused_until: dict[str, float] = {}
        self._addresses: dict[str, str] = {}
        self.sent_frames = 0
        self.sent_bytes = 0

    def set_peers(self, addresses: dict[str, str]) -> list[str]:
        """Connect to exactly these peers (id -> endpoint); returns ids newly connected."""
        added = []
        self._addresses = dict(addresses)
        for node, (address, _sock) in list(self._dealers.items()):
            if addresses.get(node) != address or self._server_key(node) != self._dealer_keys.get(
                node
            ):
                self._close_dealer(node)
        now = time.monotonic()
        for node, address in sorted(addresses.items()):
            if node == self.node_id or not address or node in self._dealers:
                continue
            if self._refused_until.get(node, 0.0) > now:
                continue  # retry_refused() reconnects it when due
            server_key = self._server_key(node)
            if server_key is None:
                # A member with no key in the allow list: we could not tell it from an
                # impostor. Connected once its public key is listed (checked at every reload).
                self.drops.drop("peer_no_key", f"no public key for member {node}: not connecting")
                continue
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self._auth is None:
                sock.setsockopt(zmq.IDENTITY, self.node_id.encode())
            else:
                # No routing identity: the receiver knows us by our key, and a connection of
                # ours never competes with another for a name (no handover to abuse).
                self._auth.configure_dealer(sock, server_key)
                self._dealer_monitors[node] = sock.get_monitor_socket(
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH
                )
            sock.setsockopt(zmq.SNDHWM, self._send_queue_frames_max)
            # Nothing is read from a DEALER (answers come to our ROUTER): a peer that writes to
            # it anyway fills at most one small queue. (MAXMSGSIZE also bounds ZMTP commands:
            # the handshake's READY must fit.)
            sock.setsockopt(zmq.RCVHWM, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, DEALER_RECV_BYTES_MAX)
            # Queue nothing for a peer that is not connected: it would get stale messages later.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MS_MAX)
            sock.setsockopt(zmq.CONNECT_TIMEOUT, PEER_CONNECT_TIMEOUT_MS)
            sock.setsockopt(zmq.TCP_MAXRT, PEER_TCP_MAXRT_MS)
            if self._auth is None:
                sock.setsockopt(zmq.HEARTBEAT_IVL, PEER_HEARTBEAT_MS)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, PEER_HEARTBEAT_TIMEOUT_MS)
            try:
                sock.connect(address)
            except zmq.ZMQError as exc:
                # An endpoint zmq cannot parse (a hostile or mistyped join): never a crash.
                self._dealers[node] = (address, sock)
                self._close_dealer(node)
                self.drops.drop("peer_bad_address", f"{node} at {address!r}: {exc}")
                continue
            self._dealers[node] = (address, sock)
            self._dealer_keys[node] = server_key
            added.append(node)
        return added

    def _close_dealer(self, node: str) -> None:
        _address, sock = self._dealers.pop(node)
        self._dealer_keys.pop(node, None)
        monitor = self._dealer_monitors.pop(node, None)
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)

    def retry_refused(self, now: float) -> None:
        """With keys: a peer that refused our key is disconnected now and reconnected after
        PEER_REFUSED_RETRY_MS (called from the loop's housekeeping)."""
        for node, monitor in list(self._dealer_monitors.items()):
            refused = False
            while True:
                try:
                    monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                refused = True
            if refused:
                self.drops.drop(
                    "peer_refused_our_key",
                    f"member {node} refused this agent's key: it does not list it in its "
                    "allow list (yet); retrying",
                )
                self._close_dealer(node)
                self._refused_until[node] = now + PEER_REFUSED_RETRY_MS / 1000
        due = [node for node, until in self._refused_until.items() if until <= now]
        for node in due:
            del self._refused_until[node]
        if due:
            self.set_peers(self._addresses)

    def _server_key(self, node: str) -> bytes | None:
        return self._auth.peer_server_key(node) if self._auth is not None else b""

    def peers(self) -> dict[str, str]:
        return {node: address for node, (address, _) in self._dealers.items()}

    def send(self, to: str, data: bytes) -> bool:
        """Queues one frame to a peer; False (counted) if unknown or its queue is full."""
        entry = self._dealers.get(to)
        if entry is None:
            self.drops.drop("peer_send_unknown", f"no connection to {to}")
            return False
        try:
            entry[1].send(data, zmq.NOBLOCK, copy=len(data) < 65_536)
        except zmq.Again:
            self.drops.counts["peer_send_full"] += 1  # routine while a peer is down: no log
            return False
        self.sent_frames += 1
        self.sent_bytes += len(data)
        return True

    def recv(self, bytes_max: int | None = None) -> list[tuple[str, bytes]]:
        """Frames waiting on the ROUTER: (sender id as the socket saw it, payload). At most
        PEER_FRAMES_PER_TURN_MAX frames and about recv_bytes_per_turn_max bytes (or the
        caller's tighter `bytes_max`) per call."""
        out: list[tuple[str, bytes]] = []
        taken_bytes = 0
        limit = self._recv_bytes_per_turn_max
        if bytes_max is not None:
            limit = min(limit, bytes_max)
        for _ in range(PEER_FRAMES_PER_TURN_MAX):
            if taken_bytes >= limit:
                break
            try:
                # With keys, frames (not bytes): the sender is the key's, a frame property.
                parts = self.router.recv_multipart(zmq.NOBLOCK, copy=self._auth is None)
            except zmq.Again:
                break
            taken_bytes += sum(len(part) for part in parts)
            if len(parts) != 2:
                self.drops.drop(
                    "peer_bad_frame", f"{len(parts)} message parts, expected 1", "parts"
                )
                continue
            if self._auth is not None:
                sender = self._auth.peer_sender(parts[1])  # None: its key was revoked (counted)
                if sender is not None:
                    out.append((sender, parts[1].bytes))
                continue
            try:
                sender = parts[0].decode()
            except UnicodeDecodeError:
                self.drops.drop("peer_bad_frame", "sender identity is not UTF-8", "identity")
                continue
            out.append((sender, parts[1]))
        return out

    def close(self) -> None:
        for node in list(self._dealers):
            self._close_dealer(node)
        self.router.close(linger=0)


class ClientTransport:
    """The ROUTER apps talk to (superstatic/wire.py frames)."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        bind_endpoint: str,
        drops: DropCounter,
        *,
        recv_queue_frames_max: int = CLIENT_RCVHWM_FRAMES,
        send_queue_frames_max: int = CLIENT_SNDHWM_FRAMES,
        recv_bytes_per_turn_max: int = RECV_BYTES_PER_TURN_MAX,
        auth: AgentAuth | None = None,
    ) -> None:
        assert recv_queue_frames_max >= 1 and send_queue_frames_max >= 1
        assert recv_bytes_per_turn_max >= 1
        self.drops = drops
        self._auth = auth if auth is not None and auth.keyed else None
        self._recv_bytes_per_turn_max = recv_bytes_per_turn_max
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, send_queue_frames_max)
        self.router.setsockopt(zmq.RCVHWM, recv_queue_frames_max)
        # FRAME_BYTES_MAX, not the agent's (smaller) body_bytes_max: a PROPOSE body a little
        # too big is answered too_large, naming the limit, instead of costing the connection.
        self.router.setsockopt(zmq.MAXMSGSIZE, wire.FRAME_BYTES_MAX)
        # Report a full or vanished app instead of dropping silently: streams wait and retry.
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self._auth is not None:
            self._auth.configure_client_router(self.router)  # CURVE options precede bind
        bind_router(self.router, bind_endpoint, "--client")
        self.sent_frames = 0

    def send(self, identity: bytes, data: bytes) -> str:
        """ "ok", "full" (the app's queue is full: retry later) or "gone" (disconnected)."""
        try:
            self.router.send_multipart([identity, data], zmq.NOBLOCK, copy=len(data) < 65_536)
        except zmq.Again:
            return "full"
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return "gone"
            raise
        self.sent_frames += 1
        return "ok"

    def recv(self) -> list[tuple[bytes, bytes, str, str | None]]:
        """Frames waiting: (connection identity, payload, the app's address: its IP for
        tcp://, LOCAL_ADDRESS for ipc://, the role of its CURVE key now: None if the key was
        revoked, "admin" without keys, where nothing is authenticated). At most
        CLIENT_FRAMES_PER_TURN_MAX frames and about recv_bytes_per_turn_max bytes per call."""
        out: list[tuple[bytes, bytes, str, str | None]] = []
        taken_bytes = 0
        for _ in range(CLIENT_FRAMES_PER_TURN_MAX):
            if taken_bytes >= self._recv_bytes_per_turn_max:
                break
            try:
                # Frames, not bytes: the connection's address is a property of the message.
                parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            taken_bytes += sum(len(part) for part in parts)
            if len(parts) != 2:
                self.drops.drop(
                    "client_bad_frame", f"{len(parts)} message parts, expected 1", "parts"
                )
                continue
            try:
                address = parts[1].get("Peer-Address") or LOCAL_ADDRESS
            except zmq.ZMQError:
                address = LOCAL_ADDRESS
            role = self._auth.client_role(parts[1]) if self._auth is not None else "admin"
            out.append((parts[0].bytes, parts[1].bytes, address, role))
        return out

    def close(self) -> None:
        self.router.close(linger=0)
