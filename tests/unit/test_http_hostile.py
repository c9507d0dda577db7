"""Hostile requests at the agent's HTTP port (agent/http_status.py, `--metrics`): what a client
sends is bounded before it is built, and nothing of it reaches the log or the answer (review 27's
standard for every listening socket: docs/security.md "Hostile input").

A real HttpStatus on 127.0.0.1 and a free port, stopped in teardown; raw sockets send the bytes.
No timing is asserted.
"""

from __future__ import annotations

import logging
import socket
import tracemalloc
from collections.abc import Iterator

import pytest
from superstatic_agent.http_status import REQUEST_HEAD_BYTES_MAX, HttpStatus
from superstatic_agent.metrics import Recorder

# Python memory one refused request may cost the agent (the request's bytes built by the test
# before measuring): a few times REQUEST_HEAD_BYTES_MAX.
REFUSAL_BYTES_MAX = 1 << 20
# Headers of the largest request the standard library reads: 100 lines of 64 KiB (~6.3 MiB
# of Python memory on main before its "Too many headers").
HEADER_LINES = 100
HEADER_LINE_BYTES = 65_000


@pytest.fixture
def http() -> Iterator[HttpStatus]:
    status = HttpStatus(
        ("127.0.0.1", 0), Recorder("a", timeout_ms_proposal=30_000, publishing=False)
    )
    status.start()
    try:
        yield status
    finally:
        status.stop()


def ask(http: HttpStatus, data: bytes) -> bytes:
    """The whole answer to `data`, sent on a new connection."""
    with socket.create_connection(http.address, timeout=30) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the agent may answer and close before reading it all
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_huge_request_head_is_refused_before_it_is_built(http: HttpStatus) -> None:
    headers = b"".join(
        b"X-%d: " % i + b"h" * HEADER_LINE_BYTES + b"\r\n" for i in range(HEADER_LINES)
    )
    data = b"GET /healthz HTTP/1.1\r\n" + headers + b"\r\n"
    tracemalloc.start()
    try:
        answer = ask(http, data)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.0 431 "), answer[:80]
    assert peak < REFUSAL_BYTES_MAX, peak
    # As is a request line longer than the head's bound.
    answer = ask(http, b"GET /" + b"a" * REQUEST_HEAD_BYTES_MAX + b" HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 431 "), answer[:80]


def test_a_usual_request_is_answered(http: HttpStatus) -> None:
    # A browser's head, cookies of other local services included, fits the bound.
    cookie = b"Cookie: " + b"c" * (REQUEST_HEAD_BYTES_MAX // 2) + b"\r\n"
    answer = ask(http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + cookie + b"\r\n")
    assert answer.split(b"\r\n", 1)[0].split()[1] in (b"200", b"503"), answer[:80]
    answer = ask(http, b"GET /nowhere HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 404 "), answer[:80]


def test_nothing_a_client_sends_reaches_the_log_or_the_answer(
    http: HttpStatus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="superstatic.agent")
    marker = b"\x1b[31mFORGED\rline"
    requests = [
        b"GET /" + marker + b" HTTP/1.0\r\n\r\n",  # an unknown path: 404
        b"GET /" + marker + b" HTTP/9" + marker + b"\r\n\r\n",  # a bad version: 400
        b"BREW" + marker + b" / HTTP/1.0\r\n\r\n",  # an unknown method: 501
        b"GET / " + marker + b"\r\n\r\n",  # bad syntax: 400
    ]
    for data in requests:
        answer = ask(http, data)
        assert b"FORGED" not in answer, answer
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "FORGED" not in logged and "\x1b" not in logged and "\r" not in logged, logged
    assert "http 127.0.0.1" in logged  # the requests were logged, by what is known of them
