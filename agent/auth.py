"""Who may talk to this agent: ZeroMQ CURVE on both ports, allow lists, roles (docs/security.md).

With `--keys DIR` both ROUTERs are CURVE servers and pyzmq's ZAP authenticator
(`zmq.auth.thread.ThreadAuthenticator`, one per agent context) admits a connection only if its
client key is in the allow list of that port's ZAP domain:

* `peer`: the agents' public keys, DIR/agents/ID.key. The peer port serves with this agent's
  own key pair, and each DEALER to member X checks X's key (mutual authentication). A peer
  frame's sender is the id its key is listed under (the frame's ZAP User-Id is the key), never
  what the connection claims: DEALERs carry no routing identity in this mode, so there is
  nothing to hand over (ROUTER_HANDOVER) and no identity another key could take.
* `client`: the apps' public keys with their roles, DIR/clients/NAME.key. The client port
  serves with the cluster's key pair (DIR/cluster.key_secret), which every app's key file
  names. Every frame's key is looked up again (a dict lookup), so a revoked key is refused at
  its next frame, even on a connection opened before the revocation, and its role decides what
  it may send (keyfiles.ROLE_FRAMES).

The allow lists are re-read when a file in them changes (checked every ALLOW_LIST_CHECK_MS) or
on SIGHUP; this agent's own key and the cluster key are read once (rotating them is a restart,
docs/security.md). Refusals are counted by kind (STATUS `auth.refused`) and logged in summary
lines, at most REFUSAL_LOG_LINES_MAX per kind per REFUSAL_LOG_WINDOW_S: a stranger hammering a
port costs one counter increment per handshake, not a log line.

Without `--keys`, nothing is authenticated; `config.py` lets that bind loopback only, unless
`--insecure` (then the log and every STATUS say which ports are exposed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from superstatic.protocol import keyfiles
from superstatic.protocol.wire import FrameType

log = logging.getLogger("superstatic.agent")

ZAP_DOMAIN_PEER = "peer"
ZAP_DOMAIN_CLIENT = "client"
# How often the allow lists' files are checked for a change (one stat per file).
ALLOW_LIST_CHECK_MS = 1_000
# Refusal summaries: at most this many log lines per kind per window; every refusal is counted.
REFUSAL_LOG_LINES_MAX = 5
REFUSAL_LOG_WINDOW_S = 60.0
# Monitor events taken per housekeeping pass (the rest wait for the next pass).
MONITOR_EVENTS_PER_DRAIN_MAX = 1_000
# Problems of the allow lists shown in STATUS (all are logged at each reload).
STATUS_PROBLEMS_MAX = 20
# Handshake failures the sockets' monitors report (a refused key is counted by ZAP instead).
_MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
# Refusal kinds counted per connection (a handshake), not per frame.
_HANDSHAKE_KINDS = ("unknown_key", "no_curve", "handshake")


def insecure_warning(exposed: Sequence[str]) -> str:
    """The loud line for ports bound beyond loopback without keys (--insecure)."""
    return (
        f"INSECURE: this agent binds {', '.join(exposed)} without --keys (--insecure): anyone "
        "who can reach these ports can read everything, write anything, change the membership "
        "and disrupt the cluster, and nothing is encrypted. Use --keys DIR (superstatic keys "
        "new) for anything but a trusted lab network."
    )


class Refusals:
    """Counts refused connections and frames by kind, from any thread (the ZAP callbacks run in
    the authenticator's thread); the loop's housekeeping logs bounded summaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._last: dict[str, str] = {}
        self._logged: Counter[str] = Counter()
        self._window_start = time.monotonic()

    def refuse(self, kind: str, detail: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            self._unlogged[kind] += 1
            self._last[kind] = detail

    def log_summary(self, now: float) -> None:
        with self._lock:
            if now - self._window_start >= REFUSAL_LOG_WINDOW_S:
                self._logged.clear()
                self._window_start = now
            for kind, count in self._unlogged.items():
                if self._logged[kind] >= REFUSAL_LOG_LINES_MAX:
                    continue  # counted; the next window logs the backlog in one line
                self._logged[kind] += 1
                # Handshake refusals are per connection; the others per frame.
                unit = "connection" if kind.endswith(_HANDSHAKE_KINDS) else "frame"
                plural = "s" if count > 1 else ""
                log.warning(
                    "refused %d %s%s (%s); last: %s",
                    count,
                    unit,
                    plural,
                    kind,
                    self._last.get(kind, ""),
                )
                self._unlogged[kind] = 0
            for kind in [k for k, n in self._unlogged.items() if n == 0]:
                del self._unlogged[kind]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))


class _AllowListProvider:
    """The ZAP callback of one domain: True if the key is in that domain's current list."""

    def __init__(self, auth: AgentAuth, domain: str) -> None:
        self._auth = auth
        self._domain = domain

    def callback(self, domain: str, key: bytes) -> bool:
        z85 = key.decode("ascii", "replace")
        lists = self._auth.lists  # one reference read: a reload swaps the whole object
        allowed = z85 in (lists.agents if self._domain == ZAP_DOMAIN_PEER else lists.clients)
        if not allowed:
            self._auth.refusals.refuse(
                f"{self._domain}.unknown_key",
                f"a {self._domain} connection with key {z85} not in the allow list",
            )
        return allowed


class AgentAuth:
    """This agent's security: the key pairs it serves with, the allow lists, the authenticator.

    `keyed` False: no CURVE (loopback only, or --insecure); every method then lets things
    through as before and `peer_sender` returns None (the transport uses routing ids).
    `exposed`: the non-loopback endpoints the agent binds (config.exposed_endpoints)."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        node_id: str,
        keys_dir: Path | None,
        *,
        exposed: Sequence[str] = (),
    ) -> None:
        self.node_id = node_id
        self.keys_dir = keys_dir
        self.keyed = keys_dir is not None
        # Unauthenticated ports beyond loopback (only with --insecure: config refuses else).
        self.exposed = [] if self.keyed else list(exposed)
        self.insecure = bool(self.exposed)
        self.refusals = Refusals()
        self.reloads = 0
        self.lists = keyfiles.AllowLists({}, {})
        self._stamp: tuple[object, ...] = ()
        self._next_check = 0.0
        self._reload_requested = False
        self._monitors: list[tuple[str, zmq.Socket[Any], zmq.Socket[Any]]] = []
        self._authenticator: ThreadAuthenticator | None = None
        if keys_dir is None:
            return
        # Read (and checked: present, owner-only) before anything binds: a bad key is a refusal
        # to start with the reason, never an agent that quietly serves without authentication.
        self._own = keyfiles.agent_key_pair(keys_dir, node_id)
        self._cluster = keyfiles.cluster_key_pair(keys_dir)
        self.reload("start")
        if self.lists.agents.get(self._own.public) != node_id:
            raise keyfiles.KeyFileError(
                f"{keys_dir}/{keyfiles.AGENTS_DIR}/{node_id}{keyfiles.PUBLIC_SUFFIX} does not "
                f"hold this agent's public key (the one in {self._own.path}): the other agents "
                "could not trust it; copy the matching public key file there"
            )
        # The ZAP handler must exist before a socket binds: libzmq admits every CURVE client
        # when no handler answers (it does not enforce the domain by default).
        self._authenticator = ThreadAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
        self._authenticator.start()
        for domain in (ZAP_DOMAIN_PEER, ZAP_DOMAIN_CLIENT):
            self._authenticator.configure_curve_callback(
                domain, credentials_provider=_AllowListProvider(self, domain)
            )

    # -- sockets ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "curve" if self.keyed else ("insecure" if self.insecure else "loopback-only")

    def configure_peer_router(self, sock: zmq.Socket[Any]) -> None:
        """Before bind: the peer port serves CURVE with this agent's key pair."""
        if not self.keyed:
            return
        self._serve(sock, self._own, ZAP_DOMAIN_PEER)
        # Senders are known by key, not by a claimed routing identity (none is set by our
        # DEALERs in this mode): a connection claiming an identity must not displace another.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0)

    def configure_client_router(self, sock: zmq.Socket[Any]) -> None:
        """Before bind: the client port serves CURVE with the cluster's key pair."""
        if self.keyed:
            self._serve(sock, self._cluster, ZAP_DOMAIN_CLIENT)

    def _serve(self, sock: zmq.Socket[Any], pair: keyfiles.KeyFile, domain: str) -> None:
        assert pair.secret is not None
        sock.curve_server = True
        sock.curve_publickey = pair.public.encode()
        sock.curve_secretkey = pair.secret.encode()
        sock.zap_domain = domain.encode()
        monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        self._monitors.append((domain, sock, monitor))

    def peer_server_key(self, node_id: str) -> bytes | None:
        """The public key a DEALER to `node_id` must find there; None if `node_id` has none in
        the allow list (then we do not connect). Unkeyed: b"" (no CURVE)."""
        if not self.keyed:
            return b""
        key = self.lists.agent_key(node_id)
        return key.encode() if key is not None else None

    def configure_dealer(self, sock: zmq.Socket[Any], server_key: bytes) -> None:
        """Before connect: a DEALER to a peer is a CURVE client with this agent's key pair."""
        if not self.keyed:
            return
        assert self._own.secret is not None and server_key
        sock.curve_publickey = self._own.public.encode()
        sock.curve_secretkey = self._own.secret.encode()
        sock.curve_serverkey = server_key

    # -- frames -------------------------------------------------------------------------------

    def peer_sender(self, frame: zmq.Frame) -> str | None:
        """The member a peer frame comes from: the id its CURVE key is listed under now. None
        if the key is no longer listed (revoked since the connection was admitted)."""
        user = _user_id(frame)
        sender = self.lists.agents.get(user) if user is not None else None
        if sender is None:
            self.refusals.refuse("peer.revoked", f"a frame from key {user}, not in the allow list")
        return sender

    def client_role(self, frame: zmq.Frame) -> str | None:
        """The role of a client frame's key now (None: revoked since it connected)."""
        if not self.keyed:
            return "admin"  # nothing is authenticated: everything is allowed
        user = _user_id(frame)
        client = self.lists.clients.get(user) if user is not None else None
        if client is None:
            self.refusals.refuse(
                "client.revoked", f"a frame from key {user}, no longer in the allow list"
            )
            return None
        return client.role

    def forbidden(self, role: str | None, frame_type: FrameType | None) -> str | None:
        """Why a frame of this type is refused for this role (None: allowed). A role None (a
        revoked key) is refused whatever the frame (counted in `client_role`)."""
        if role is None or frame_type is None:
            return (
                "this agent no longer trusts your key (it was revoked from the allow list); "
                "ask the cluster's operator for a new key file"
            )
        if frame_type in keyfiles.ROLE_FRAMES[role]:
            return None
        allowed_by = [r for r in keyfiles.ROLES if frame_type in keyfiles.ROLE_FRAMES[r]]
        self.refusals.refuse("client.forbidden", f"{frame_type.name} from a {role} key")
        return (
            f"your key's role {role!r} may not send {frame_type.name} (needs "
            f"{' or '.join(allowed_by)}); use a key file with that role"
        )

    # -- allow lists --------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: re-read the allow lists at the next housekeeping (signal-safe: a flag)."""
        self._reload_requested = True

    def maybe_reload(self, now: float) -> bool:
        """Re-reads the allow lists if asked or if a file changed; True if what is trusted
        changed (the server then reconnects to its peers with the keys now listed)."""
        if not self.keyed:
            return False
        requested, self._reload_requested = self._reload_requested, False
        if not requested and now < self._next_check:
            return False
        self._next_check = now + ALLOW_LIST_CHECK_MS / 1000
        assert self.keys_dir is not None
        if not requested and keyfiles.allow_lists_stamp(self.keys_dir) == self._stamp:
            return False
        return self.reload("SIGHUP" if requested else "a file changed")

    def reload(self, why: str) -> bool:
        assert self.keys_dir is not None
        stamp = keyfiles.allow_lists_stamp(self.keys_dir)
        lists = keyfiles.load_allow_lists(self.keys_dir)
        self._stamp = stamp
        changed = (lists.agents, lists.clients) != (self.lists.agents, self.lists.clients)
        self.lists = lists  # one reference swap: the ZAP thread reads either list, whole
        self.reloads += 1
        for problem in lists.problems:
            log.warning("allow list: %s", problem)
        if changed or why == "start":
            roles = Counter(c.role for c in lists.clients.values())
            log.info(
                "allow lists (%s): agents %s; app keys %s",
                why,
                ",".join(sorted(lists.agents.values())) or "-",
                ", ".join(f"{n} {r}" for r, n in sorted(roles.items())) or "-",
            )
        return changed

    # -- housekeeping and status --------------------------------------------------------------

    def housekeeping(self, now: float) -> bool:
        """Counts handshake failures the monitors saw, logs refusal summaries, reloads the
        allow lists when due; True if the trusted keys changed."""
        for domain, _sock, monitor in self._monitors:
            for _ in range(MONITOR_EVENTS_PER_DRAIN_MAX):
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                if event["value"] == _MECHANISM_MISMATCH:
                    self.refusals.refuse(
                        f"{domain}.no_curve", "a connection without CURVE keys (no key file)"
                    )
                else:
                    self.refusals.refuse(
                        f"{domain}.handshake",
                        "a CURVE handshake that failed (wrong server key: a key file of "
                        "another cluster?)",
                    )
        self.refusals.log_summary(now)
        return self.maybe_reload(now)

    def warning(self) -> str | None:
        return insecure_warning(self.exposed) if self.insecure else None

    def status(self) -> dict[str, Any]:
        roles = Counter(c.role for c in self.lists.clients.values())
        return {
            "mode": self.mode,
            "warning": self.warning(),
            "keys_dir": str(self.keys_dir) if self.keys_dir is not None else None,
            "agents_trusted": sorted(self.lists.agents.values()),
            "app_keys": {role: roles.get(role, 0) for role in keyfiles.ROLES},
            "reloads": self.reloads,
            "problems": list(self.lists.problems[:STATUS_PROBLEMS_MAX]),
            "refused": self.refusals.snapshot(),
        }

    def close(self) -> None:
        """Before the context terminates: monitors off, the authenticator stopped."""
        for _domain, sock, monitor in self._monitors:
            # The socket may be closed already: its monitor went with it.
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


def _user_id(frame: zmq.Frame) -> str | None:
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return None  # no such property: the connection did not authenticate
