"""Review 25, real agents with keys: who can get a HELLO (docs/agent.md, "A member that
missed a promotion") accepted, and what the dial it causes reaches. Without a key, with a key
nobody lists, with an app key, or with a listed agent key claiming another id: refused at the
handshake or dropped, nothing dialled. A listed agent key that is no member: refused for a term
that has a leader (review 25's fix), accepted for a later one, and then the agent opens a TCP
connection to the address the HELLO named before any key check (docs/security.md)."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from superstatic_agent import peer_codec

from superstatic.client import keys as client_keys
from superstatic.protocol import keyfiles
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
# A send waits this long for a pipe: a refused handshake leaves none (libzmq never retries).
SEND_TIMEOUT_MS = 1_000


def trap() -> socket.socket:
    """A plain TCP listener on a free loopback port: the address a hostile HELLO names."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    return sock


def endpoint(sock: socket.socket) -> str:
    return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def send_hello(
    ctx: zmq.Context[Any],
    target: str,
    server_key: str,
    pair: keyfiles.KeyFile | None,
    hello: peer_codec.Hello,
) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    if pair is not None:
        assert pair.secret is not None
        sock.curve_publickey = pair.public.encode()
        sock.curve_secretkey = pair.secret.encode()
        sock.curve_serverkey = server_key.encode()
    sock.connect(target)
    # zmq.Again: the handshake was refused; what the agent counted is checked by the caller.
    with contextlib.suppress(zmq.Again):
        sock.send(peer_codec.encode_hello(hello))
    return sock


def test_who_can_make_an_agent_dial_with_a_hello(tmp_path: Path) -> None:
    # Keys of its own: the suite's shared directory must not gain x and y.
    with LocalCluster(tmp_path / "agents", size=1, keys_dir=tmp_path / "keys") as cluster:
        cluster.start()
        cluster.leader()
        keys_dir = cluster.keys_dir
        assert keys_dir is not None
        # x and y: agent keys the cluster lists, of agents that are no members.
        client_keys.add_keys(keys_dir, ["x", "y"], [])
        reloads = cluster.status("a")["auth"]["reloads"]
        cluster.signal("a", signal.SIGHUP)
        cluster.wait_until(
            lambda: cluster.status("a")["auth"]["reloads"] > reloads, "reload", TIMEOUT_S_WAIT
        )
        stranger_dir = tmp_path / "stranger"
        client_keys.create_keys_dir(stranger_dir, ["x"], [])

        def pair(path: Path) -> keyfiles.KeyFile:
            return keyfiles.read_key_file(path, secret=True)

        a_key = keyfiles.read_key_file(keys_dir / "agents" / "a.key", secret=False).public
        target = cluster.agents["a"].peer_endpoint
        refused_trap, accepted_trap = trap(), trap()
        ctx: zmq.Context[Any] = zmq.Context()
        sockets: list[zmq.Socket[Any]] = []
        try:
            term = int(cluster.status("a")["term"])
            later = peer_codec.Hello("x", "a", term + 1, endpoint(refused_trap))
            for who in (
                None,  # no key
                pair(stranger_dir / "agents" / "x.key_secret"),  # a key nobody lists, as x
                pair(keys_dir / "clients" / "app.key_secret"),  # an app key on the peer port
                pair(keys_dir / "agents" / "y.key_secret"),  # y's listed key, claiming x
            ):
                sockets.append(send_hello(ctx, target, a_key, who, later))
            # x's own key, but a term that has a leader (a itself): no leader says that.
            ours = peer_codec.Hello("x", "a", term, endpoint(refused_trap))
            x_pair = pair(keys_dir / "agents" / "x.key_secret")
            sockets.append(send_hello(ctx, target, a_key, x_pair, ours))

            def all_refused() -> bool:
                st = cluster.status("a")
                refused = st["auth"]["refused"]
                keyless = refused.get("peer.no_curve", 0) + refused.get("peer.handshake", 0)
                return (
                    keyless >= 1
                    and refused.get("peer.unknown_key", 0) >= 2
                    and st["dropped"].get("peer_wrong_sender", 0) >= 1
                    and st["dropped"].get("peer_impossible", 0) >= 1
                )

            cluster.wait_until(all_refused, "every hostile HELLO refused", TIMEOUT_S_WAIT)
            assert cluster.status("a")["counters"]["unlisted_leaders"] == 0
            # x's key and a later term: a leader a may have missed. It is answered, and the
            # agent connects to the address named before its CURVE handshake can fail there.
            accepted = peer_codec.Hello("x", "a", term + 1, endpoint(accepted_trap))
            sockets.append(send_hello(ctx, target, a_key, x_pair, accepted))
            accepted_trap.settimeout(TIMEOUT_S_WAIT)
            conn, _peer = accepted_trap.accept()
            conn.close()
            assert cluster.status("a")["counters"]["unlisted_leaders"] == 1
            # The refused HELLOs dialled nothing (a dial takes milliseconds: the accepted one
            # arrived, so theirs would have by now).
            time.sleep(0.2)
            refused_trap.setblocking(False)
            with pytest.raises(BlockingIOError):
                refused_trap.accept()
            assert cluster.status("a")["role"] == "leader"
        finally:
            for sock in sockets:
                sock.close(linger=0)
            ctx.term()
            refused_trap.close()
            accepted_trap.close()
