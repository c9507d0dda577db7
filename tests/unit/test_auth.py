"""agent/auth.py with real ZeroMQ sockets in one process: the ZAP authenticator admits listed
keys only, a frame's sender and role come from its key, revocation applies to open connections,
refusals are counted. The same through real agents: tests/cluster/test_security.py."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from superstatic_agent import cli, logs
from superstatic_agent import server as server_module
from superstatic_agent.auth import AgentAuth
from superstatic_agent.transport import ClientTransport, DropCounter, PeerTransport

from superstatic.client import keys as client_keys
from superstatic.protocol import keyfiles, wire
from superstatic.protocol.keyfiles import KeyFileError
from superstatic.tools.localcluster import free_ports
from superstatic.tools.status import format_auth

TIMEOUT_S = 10.0


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    client_keys.create_keys_dir(path, ["a", "b", "c"], [("app", "app"), ("ro", "read")])
    return path


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def auth(ctx: zmq.Context[Any], keys_dir: Path) -> Iterator[AgentAuth]:
    agent_auth = AgentAuth(ctx, "a", keys_dir)
    yield agent_auth
    agent_auth.close()


def eventually(what: str, probe: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {TIMEOUT_S} s")


def dealer(
    ctx: zmq.Context[Any],
    endpoint: str,
    *,
    pair: keyfiles.KeyFile | None = None,
    server: str | None = None,
    identity: bytes | None = None,
) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if pair is not None:
        assert pair.secret is not None and server is not None
        sock.curve_publickey = pair.public.encode()
        sock.curve_secretkey = pair.secret.encode()
        sock.curve_serverkey = server.encode()
    sock.connect(endpoint)
    return sock


def pair(keys_dir: Path, sub: str, name: str) -> keyfiles.KeyFile:
    return keyfiles.read_key_file(keys_dir / sub / f"{name}.key_secret", secret=True)


def test_client_frames_carry_their_keys_role_and_revocation_applies_at_once(
    ctx: zmq.Context[Any], auth: AgentAuth, keys_dir: Path
) -> None:
    (port,) = free_ports(1)
    endpoint = f"tcp://127.0.0.1:{port}"
    server = ClientTransport(ctx, endpoint, DropCounter(), auth=auth)
    cluster_key = keyfiles.cluster_key_pair(keys_dir).public
    app = dealer(ctx, endpoint, pair=pair(keys_dir, "clients", "app"), server=cluster_key)
    ro = dealer(ctx, endpoint, pair=pair(keys_dir, "clients", "ro"), server=cluster_key)
    try:
        app.send(b"from app")
        ro.send(b"from ro")
        got: list[tuple[bytes, bytes, str, str | None]] = []
        eventually("two frames", lambda: got.extend(server.recv()) or len(got) == 2)
        roles = {data: role for _, data, _, role in got}
        assert roles == {b"from app": "app", b"from ro": "read"}
        assert auth.forbidden("read", wire.FrameType.PROPOSE) is not None
        assert auth.forbidden("read", wire.FrameType.SUBSCRIBE) is None
        assert auth.forbidden("app", wire.FrameType.MEMBERS) is not None
        assert auth.forbidden("admin", wire.FrameType.MEMBERS) is None

        # Revoked while connected: its next frame has no role (the server refuses it).
        client_keys.revoke(keys_dir, ["app"])
        assert auth.reload("test")
        app.send(b"after revoke")
        got.clear()
        eventually("a frame", lambda: got.extend(server.recv()) or got)
        assert (got[0][1], got[0][3]) == (b"after revoke", None)
        assert auth.refusals.snapshot()["client.revoked"] == 1
        assert auth.refusals.snapshot()["client.forbidden"] == 2  # the two probes above
    finally:
        app.close(linger=0)
        ro.close(linger=0)
        server.close()


def test_strangers_are_refused_and_counted(
    ctx: zmq.Context[Any], auth: AgentAuth, keys_dir: Path, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    endpoint = f"tcp://127.0.0.1:{port}"
    server = ClientTransport(ctx, endpoint, DropCounter(), auth=auth)
    other = tmp_path / "other"
    client_keys.create_keys_dir(other, ["a"], [("app", "app")])
    cluster_key = keyfiles.cluster_key_pair(keys_dir).public
    strangers = [
        dealer(ctx, endpoint),  # no key at all
        dealer(ctx, endpoint, pair=pair(other, "clients", "app"), server=cluster_key),
        dealer(ctx, endpoint, pair=pair(keys_dir, "agents", "b"), server=cluster_key),
    ]
    try:
        for sock in strangers:
            sock.send(b"let me in")

        def counted() -> bool:
            auth.housekeeping(time.monotonic())  # drains the monitor's handshake failures
            refused = auth.refusals.snapshot()
            return refused.get("client.no_curve", 0) >= 1 and (
                refused.get("client.unknown_key", 0) >= 2
            )

        eventually("the refusals counted", counted)
        # An agent's key is not an app key: the client port has its own allow list.
        assert server.recv() == []
        assert auth.status()["refused"]["client.unknown_key"] >= 2
    finally:
        for sock in strangers:
            sock.close(linger=0)
        server.close()


def test_a_peer_is_known_by_its_key_whatever_identity_it_claims(
    ctx: zmq.Context[Any], auth: AgentAuth, keys_dir: Path
) -> None:
    (port,) = free_ports(1)
    endpoint = f"tcp://127.0.0.1:{port}"
    drops = DropCounter()
    peers = PeerTransport(ctx, "a", endpoint, drops, auth=auth)
    own = pair(keys_dir, "agents", "a").public
    b = dealer(ctx, endpoint, pair=pair(keys_dir, "agents", "b"), server=own, identity=b"c")
    c = dealer(ctx, endpoint, pair=pair(keys_dir, "agents", "c"), server=own)
    try:
        b.send(b"one")
        c.send(b"two")
        got: list[tuple[str, bytes]] = []
        eventually("two frames", lambda: got.extend(peers.recv()) or len(got) == 2)
        assert sorted(got) == [("b", b"one"), ("c", b"two")]
        assert peers.set_peers({"b": "tcp://127.0.0.1:1", "zz": "tcp://127.0.0.1:2"}) == ["b"]
        assert drops.counts["peer_no_key"] == 1  # zz has no key: not connected
    finally:
        b.close(linger=0)
        c.close(linger=0)
        peers.close()


def test_an_agent_will_not_start_with_unusable_keys(ctx: zmq.Context[Any], keys_dir: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        AgentAuth(ctx, "zz", keys_dir)
    os.chmod(keys_dir / "agents" / "b.key_secret", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        AgentAuth(ctx, "b", keys_dir)
    # Its public file must hold its key, or the others could not trust it.
    (keys_dir / "agents" / "c.key").write_text((keys_dir / "agents" / "a.key").read_text())
    with pytest.raises(KeyFileError, match="does not hold this agent's public key"):
        AgentAuth(ctx, "c", keys_dir)


def test_ports_exposed_without_keys_are_said_loudly(
    ctx: zmq.Context[Any], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    exposed = ["tcp://0.0.0.0:7501"]
    auth = AgentAuth(ctx, "a", None, exposed=exposed)
    try:
        status = auth.status()
        assert status["mode"] == "insecure"
        assert "INSECURE" in status["warning"] and exposed[0] in status["warning"]
        assert format_auth(status) == status["warning"]  # what `superstatic status` prints
    finally:
        auth.close()
    assert AgentAuth(ctx, "a", None).status()["warning"] is None  # loopback only: nothing

    # The agent's command line logs it at start (a stand-in server: nothing is bound here).
    class NoServer:
        def __init__(self, config: Any) -> None:
            self.config = config

        def install_signal_handlers(self) -> None:
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr(server_module, "Server", NoServer)
    # cli.main sets the process's root logger up as an agent's: put pytest's back after.
    monkeypatch.setattr(logs, "current_limit", logs.current_limit)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    peer, data = free_ports(1)[0], ["--data-dir", "/nonexistent"]
    argv = ["--id", "a", *data, "--peers", f"a=tcp://127.0.0.1:{peer}", "--client", exposed[0]]
    try:
        with pytest.raises(SystemExit) as refused:
            cli.main(argv)  # without --insecure: refused
        assert refused.value.code == 2
        assert "refusing to bind tcp://0.0.0.0:7501 without --keys" in capfd.readouterr().err
        assert cli.main([*argv, "--insecure"]) == 0
        assert f"INSECURE: this agent binds {exposed[0]} without --keys" in capfd.readouterr().err
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
