"""The hostile-input limits are flags with defaults (docs/agent.md "Limits and hostile input"),
checked when the agent starts; the transport applies them to its sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq
from superstatic_agent import cli
from superstatic_agent.config import PEER_FRAME_BYTES_MAX, AgentConfig
from superstatic_agent.transport import ClientTransport, DropCounter, PeerTransport

from superstatic.protocol.errors import LimitExceeded
from superstatic.tools.localcluster import free_ports

# Frames a test sender tries to queue at an agent that does not read, their size, and how long
# it waits for its socket to become writable before concluding it is held back.
QUEUE_PROBE_FRAMES = 400
QUEUE_PROBE_FRAME_BYTES = 256 << 10
QUEUE_PROBE_PAUSE_MS = 500
# Loopback: without --keys an agent refuses any other address (docs/security.md).
BASE = [
    "--id",
    "a",
    "--data-dir",
    "/tmp/x",
    "--peers",
    "a=tcp://127.0.0.1:1",
    "--client",
    "tcp://127.0.0.1:2",
]
FLAGS = {
    "--client-recv-queue-frames-max": "client_recv_queue_frames_max",
    "--client-send-queue-frames-max": "client_send_queue_frames_max",
    "--peer-recv-queue-frames-max": "peer_recv_queue_frames_max",
    "--peer-send-queue-frames-max": "peer_send_queue_frames_max",
    "--peer-frame-bytes-max": "peer_frame_bytes_max",
    "--recv-bytes-per-turn-max": "recv_bytes_per_turn_max",
    "--sessions-per-connection-max": "sessions_per_connection_max",
    "--sessions-per-address-max": "sessions_per_address_max",
}


def config(*argv: str) -> AgentConfig:
    return cli.config_from(cli.parser().parse_args([*BASE, *argv]))


def test_defaults_and_every_flag_reach_the_config() -> None:
    defaults = config()
    assert defaults.sessions_per_connection_max == 64
    assert defaults.sessions_per_address_max == 4_096
    assert defaults.client_recv_queue_frames_max == 16
    assert defaults.peer_frame_bytes_max == PEER_FRAME_BYTES_MAX
    for flag, name in FLAGS.items():
        value = {"--peer-frame-bytes-max": 16 << 20, "--recv-bytes-per-turn-max": 2 << 20}.get(
            flag, 3
        )
        assert getattr(config(flag, str(value)), name) == value, flag


@pytest.mark.parametrize("flag", list(FLAGS))
def test_a_limit_below_one_is_refused_naming_it(flag: str) -> None:
    with pytest.raises((ValueError, LimitExceeded), match=FLAGS[flag]):
        config(flag, "0")


def test_peer_frames_must_hold_what_the_agent_sends() -> None:
    with pytest.raises(LimitExceeded, match="batch_bytes_max"):
        config("--peer-frame-bytes-max", str(4 << 20))  # below the 4 MiB batch + envelope
    with pytest.raises(LimitExceeded, match="PEER_FRAME_BYTES_MAX"):
        config("--peer-frame-bytes-max", str(PEER_FRAME_BYTES_MAX + 1))
    with pytest.raises(LimitExceeded, match="PEER_ENTRIES_PER_MESSAGE_MAX"):
        config("--batch-entries-max", str(1 << 20))
    assert config("--peer-frame-bytes-max", str(16 << 20)).peer_frame_bytes_max == 16 << 20


def test_the_transport_sets_its_queue_bounds(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    pa, pc = free_ports(2)
    peers = PeerTransport(
        ctx,
        "a",
        f"tcp://127.0.0.1:{pa}",
        DropCounter(),
        recv_queue_frames_max=3,
        send_queue_frames_max=5,
        frame_bytes_max=2 << 20,
    )
    clients = ClientTransport(
        ctx,
        f"tcp://127.0.0.1:{pc}",
        DropCounter(),
        recv_queue_frames_max=7,
        send_queue_frames_max=9,
    )
    try:
        assert peers.router.getsockopt(zmq.RCVHWM) == 3
        assert peers.router.getsockopt(zmq.MAXMSGSIZE) == 2 << 20
        peers.set_peers({"b": "tcp://127.0.0.1:1"})
        dealer = peers._dealers["b"][1]
        assert dealer.getsockopt(zmq.SNDHWM) == 5
        assert dealer.getsockopt(zmq.HEARTBEAT_IVL) > 0  # a stolen identity is noticed
        assert clients.router.getsockopt(zmq.RCVHWM) == 7
        assert clients.router.getsockopt(zmq.SNDHWM) == 9
    finally:
        peers.close()
        clients.close()
        ctx.term()


def test_a_turn_takes_at_most_its_byte_budget(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    (port,) = free_ports(1)
    server = ClientTransport(
        ctx, f"tcp://127.0.0.1:{port}", DropCounter(), recv_bytes_per_turn_max=3 << 20
    )
    app = ctx.socket(zmq.DEALER)
    app.setsockopt(zmq.LINGER, 0)
    app.connect(f"tcp://127.0.0.1:{port}")
    try:
        for _ in range(8):
            app.send(b"x" * (1 << 20))
        got: list[int] = []
        for _ in range(200):
            if server.router.poll(100, zmq.POLLIN):
                got.append(len(server.recv()))
            if sum(got) == 8:
                break
        # Each turn stops once 3 MiB were taken (the frame that crosses it included).
        assert sum(got) == 8 and max(got) <= 3, got
    finally:
        app.close(linger=0)
        server.close()
        ctx.term()


def test_a_receive_queue_holds_a_bounded_number_of_frames() -> None:
    """A sender faster than the agent is held back (TCP back-pressure) after RCVHWM frames:
    its frames pile up on its side, not in the agent."""
    ctx: zmq.Context[Any] = zmq.Context()
    (port,) = free_ports(1)
    server = ClientTransport(ctx, f"tcp://127.0.0.1:{port}", DropCounter(), recv_queue_frames_max=2)
    app = ctx.socket(zmq.DEALER)
    app.setsockopt(zmq.LINGER, 0)
    app.setsockopt(zmq.SNDHWM, 1)
    app.setsockopt(zmq.SNDBUF, 1 << 16)
    app.connect(f"tcp://127.0.0.1:{port}")
    frame = b"x" * QUEUE_PROBE_FRAME_BYTES
    queued = 0
    try:
        for _ in range(QUEUE_PROBE_FRAMES):
            # Writable again within the pause: the agent's side still takes frames.
            if not app.poll(QUEUE_PROBE_PAUSE_MS, zmq.POLLOUT):
                break
            app.send(frame, zmq.NOBLOCK)
            queued += 1
        # RCVHWM 2 + the one being read + SNDHWM 1 + what the kernel's buffers hold (about 13
        # here; with the old RCVHWM of 100 000 frames all 400 went in).
        assert queued < QUEUE_PROBE_FRAMES // 4, queued
        got = 0
        while got < queued and server.router.poll(5_000, zmq.POLLIN):
            got += len(server.recv())
        assert got == queued  # nothing was lost, only held back
    finally:
        app.close(linger=0)
        server.close()
        ctx.term()
