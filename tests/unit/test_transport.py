"""The agent's sockets on loopback: delivery with sender identity, bounded drops, counters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from superstatic_agent.transport import ClientTransport, DropCounter, PeerTransport

from superstatic.tools.localcluster import free_ports

DELIVERY_TIMEOUT_S = 10.0


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.term()


def receive(transport: PeerTransport | ClientTransport, count: int) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while len(got) < count and time.monotonic() < deadline:
        if transport.router.poll(100, zmq.POLLIN):
            got.extend(transport.recv())
    return got


def test_peers_deliver_with_the_sender_identity(ctx: zmq.Context[Any]) -> None:
    pa, pb = free_ports(2)
    addresses = {"a": f"tcp://127.0.0.1:{pa}", "b": f"tcp://127.0.0.1:{pb}"}
    a = PeerTransport(ctx, "a", addresses["a"], DropCounter())
    b = PeerTransport(ctx, "b", addresses["b"], DropCounter())
    try:
        assert a.set_peers(addresses) == ["b"]
        assert b.set_peers(addresses) == ["a"]
        assert a.set_peers(addresses) == []  # idempotent
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        # IMMEDIATE: nothing is queued until the connection is up, so retry the first send.
        while not a.send("b", b"hello") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receive(b, 1) == [("a", b"hello")]
        for i in range(100):
            assert a.send("b", b"m%d" % i)
        assert receive(b, 100) == [("a", b"m%d" % i) for i in range(100)]
        assert not a.send("zz", b"x")
        assert a.drops.counts["peer_send_unknown"] == 1
        # Removing a peer closes its socket; sends to it are then refused and counted.
        assert a.set_peers({"a": addresses["a"]}) == []
        assert a.peers() == {}
        assert not a.send("b", b"x")
    finally:
        a.close()
        b.close()


def test_multipart_garbage_is_counted_and_dropped(ctx: zmq.Context[Any]) -> None:
    (port,) = free_ports(1)
    drops = DropCounter()
    server = PeerTransport(ctx, "a", f"tcp://127.0.0.1:{port}", drops)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"x")
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send_multipart([b"one", b"two"])
        sock.send(b"fine")
        assert receive(server, 1) == [("x", b"fine")]
        assert drops.counts["peer_bad_frame"] == 1
        assert drops.counts["peer_bad_frame.parts"] == 1
    finally:
        sock.close(linger=0)
        server.close()


def test_client_router_answers_and_reports_gone_apps(ctx: zmq.Context[Any]) -> None:
    (port,) = free_ports(1)
    drops = DropCounter()
    server = ClientTransport(ctx, f"tcp://127.0.0.1:{port}", drops)
    app = ctx.socket(zmq.DEALER)
    app.setsockopt(zmq.LINGER, 0)
    app.connect(f"tcp://127.0.0.1:{port}")
    try:
        app.send(b"ping")
        [(identity, data, address, role)] = receive(server, 1)
        assert data == b"ping" and address == "127.0.0.1" and role == "admin"  # no keys
        assert server.send(identity, b"pong") == "ok"
        assert app.poll(int(DELIVERY_TIMEOUT_S * 1000), zmq.POLLIN)
        assert app.recv() == b"pong"
        assert server.send(b"\x00nobody", b"x") == "gone"
    finally:
        app.close(linger=0)
        server.close()


def test_drop_counter_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    drops = DropCounter()
    with caplog.at_level("WARNING", logger="superstatic.agent"):
        for i in range(50):
            drops.drop("client_bad_frame", f"frame {i}")
    assert drops.snapshot() == {"client_bad_frame": 50}
    drops.drop("client_bad_frame", "one more", "FRAME_DEPTH_MAX")
    assert drops.snapshot()["client_bad_frame.FRAME_DEPTH_MAX"] == 1
    assert len(caplog.records) == 5


def test_an_unparseable_peer_endpoint_is_skipped_not_fatal(ctx: zmq.Context[Any]) -> None:
    (port,) = free_ports(1)
    drops = DropCounter()
    a = PeerTransport(ctx, "a", f"tcp://127.0.0.1:{port}", drops)
    try:
        assert a.set_peers({"b": "tcp://no-port-here"}) == []
        assert drops.counts["peer_bad_address"] == 1
        assert not a.send("b", b"x")
    finally:
        a.close()
