"""A client trickling bytes at the agent's HTTP port (agent/http_status.py, `--metrics`) cannot
hold its one serving thread (review33): the socket timeout (REQUEST_TIMEOUT_S) bounds each
read, not the request, so a client sending a byte every few seconds held the thread (and
`HttpStatus.stop`, which waits for the request being served) for as long as it liked: up to
REQUEST_HEAD_BYTES_MAX reads while the head is read, up to 256 reads while a 431 is drained.
Every connection now has REQUEST_DEADLINE_S in all.

A real HttpStatus on 127.0.0.1 and a free port, stopped in teardown; raw sockets. No timing is
asserted: the trickler gives up after TRICKLE_BYTES_MAX bytes, far past the (shortened)
deadline, and the test checks that the agent closed the connection first.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from superstatic_agent import http_status
from superstatic_agent.http_status import REQUEST_HEAD_BYTES_MAX, HttpStatus
from superstatic_agent.metrics import Recorder

# The deadline during these tests (seconds): short, so the trickler's budget stays small.
DEADLINE_S = 0.5
# One byte per TRICKLE_GAP_S (far below REQUEST_TIMEOUT_S, so no single read times out), at
# most TRICKLE_BYTES_MAX bytes: ~20 times the deadline, and fewer than the 256 reads a 431's
# drain made before it gave up.
TRICKLE_GAP_S = 0.05
TRICKLE_BYTES_MAX = 200


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpStatus]:
    monkeypatch.setattr(http_status, "REQUEST_DEADLINE_S", DEADLINE_S, raising=False)
    status = HttpStatus(
        ("127.0.0.1", 0), Recorder("a", timeout_ms_proposal=30_000, publishing=False)
    )
    status.start()
    try:
        yield status
    finally:
        status.stop()


def closed_by_agent(conn: socket.socket) -> bool:
    """Trickles bytes on `conn` until the agent has closed it, reading no more (True: a send
    fails), or the budget is spent (False). An answer and a half-close (the 431) are read and
    the trickle goes on: the agent may still be reading what is sent."""
    for _ in range(TRICKLE_BYTES_MAX):
        readable, _, _ = select.select([conn], [], [], TRICKLE_GAP_S)
        if readable:
            try:
                if not conn.recv(65536):  # an answer, or the end of the agent's side
                    time.sleep(TRICKLE_GAP_S)  # (which stays readable: still one byte a gap)
            except OSError:
                return True  # reset
        try:
            conn.send(b"x")
        except OSError:
            return True
    return False


def healthz(http: HttpStatus) -> bytes:
    with socket.create_connection(http.address, timeout=30) as conn:
        conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("phase", ["head", "drain"])
def test_a_trickling_client_cannot_hold_the_port(http: HttpStatus, phase: str) -> None:
    with socket.create_connection(http.address, timeout=30) as conn:
        if phase == "head":
            conn.sendall(b"GET /healthz HTTP/1.0\r\nX-Slow: ")
        else:  # a head over the bound: answered 431, then the rest is drained
            conn.sendall(b"GET /healthz HTTP/1.0\r\nX-Big: " + b"b" * REQUEST_HEAD_BYTES_MAX)
        assert closed_by_agent(conn)
    # And the port serves the next client.
    assert healthz(http).split(b"\r\n", 1)[0].split()[1] in (b"200", b"503")


def test_stop_returns_while_a_client_trickles(http: HttpStatus) -> None:
    conn = socket.create_connection(http.address, timeout=30)
    try:
        conn.sendall(b"GET /healthz HTTP/1.0\r\nX-Slow: ")
        trickler = threading.Thread(target=closed_by_agent, args=(conn,), daemon=True)
        trickler.start()
        stopper = threading.Thread(target=http.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=TRICKLE_BYTES_MAX * TRICKLE_GAP_S)
        assert not stopper.is_alive()
        trickler.join(timeout=TRICKLE_BYTES_MAX * TRICKLE_GAP_S)
    finally:
        conn.close()
