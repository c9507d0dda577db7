"""The agent's HTTP port (`--metrics HOST:PORT`): Prometheus metrics and a live status page.

| path | what |
|---|---|
| `/metrics` | the Prometheus text format (`generate_latest` of the agent's own registry) |
| `/` | the status page: one self-contained HTML file (inline CSS, JS and SVG; no external asset) |
| `/status.json` | what the page polls every second: STATUS, facts, history, events, roots |
| `/healthz` | 200 `ok` while the loop publishes; 503 once its snapshot is `STALE_S` old |

Read-only: GET and HEAD only. One thread serves one request at a time (an HTTP server per
request thread would be unbounded); each read of a connection gets `REQUEST_TIMEOUT_S` and the
whole connection `REQUEST_DEADLINE_S` (its socket is shut down then), so a slow, silent or
trickling client cannot hold the port, nor `HttpStatus.stop`, for long.

Hostile input (docs/security.md): a request's head (its request line and headers) is read up to
`REQUEST_HEAD_BYTES_MAX` bytes and answered 431 past them, before the rest is built (the
standard library alone builds up to 100 header lines of 64 KiB, ~6.5 MiB, before refusing);
nothing a client sends is logged or echoed back but the known paths and methods (the standard
library logs the request line as it came, control characters included, and quotes it in its
error pages). The thread reads only
`Recorder.published` (an immutable snapshot, see agent/metrics.py) and never touches the Raft
core or LMDB.

There is no authentication on this port (CURVE keys cover the ZeroMQ ports only): it shows the
cluster's members and addresses, root names and sizes (never values). A non-loopback HOST is
refused unless the agent runs with `--insecure` (docs/operations.md, "Metrics and the status
page": bind to loopback and put an authenticating proxy in front, or firewall it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from superstatic_agent.metrics import ROOTS_WANTED_S, Recorder, registry_for

log = logging.getLogger("superstatic.agent")

# Seconds a connection has to send its request (and to read our answer).
REQUEST_TIMEOUT_S = 5.0
# /healthz answers 503 when the loop's last snapshot is older than this (a stuck loop).
STALE_S = 10.0
# History points /status.json carries (5 minutes at one a second).
STATUS_HISTORY_POINTS_MAX = 300
# A whole connection's time (reading its head, answering, draining after a 431): the socket
# timeout above bounds each read only, so a client sending a byte every few seconds held the
# one serving thread, and stop() waiting for it, for as long as it liked (review33). Past it
# the socket is shut down, which ends any read or write the thread is in.
REQUEST_DEADLINE_S = 10.0
# How often serve_forever looks at its stop flag.
POLL_INTERVAL_S = 0.5
# The bytes of a request's head (request line and headers) read at most: a browser sends one or
# two KiB, cookies included (every port of a host shares its cookies: other local services' may
# come along). A longer head is answered 431 unread.
REQUEST_HEAD_BYTES_MAX = 32 << 10
# After a 431, what the client still sends is read and dropped (into one reused buffer) up to
# this many bytes, so that it reads our answer instead of a reset; then the connection closes.
REFUSED_DISCARD_BYTES_MAX = 16 << 20
_DISCARD_CHUNK_BYTES = 64 << 10
# What the log may say of a request: these paths and methods by name, anything else by its kind.
_PATHS = frozenset({"/", "/index.html", "/metrics", "/status.json", "/healthz"})
_METHODS = frozenset({"GET", "HEAD"})
_HEAD_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"request head over REQUEST_HEAD_BYTES_MAX=%d bytes\n" % REQUEST_HEAD_BYTES_MAX
)


class MetricsBindError(OSError):
    """The --metrics address cannot be bound (taken, or not an address of this host)."""


class _Watchdog:
    """Shuts the connection being served down at its deadline, from a thread of its own (the
    serving thread's blocked read or write then returns). One thread for the port's life, armed
    per connection: a timer thread per request doubled a request's CPU (~250 us more)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._conn: socket.socket | None = None
        self._deadline = 0.0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="superstatic-http-deadline")
        self._thread.daemon = True
        self._thread.start()

    def arm(self, conn: socket.socket, seconds: float) -> None:
        with self._cond:
            self._conn, self._deadline = conn, time.monotonic() + seconds
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._conn = None  # no notify: a wait past a disarmed deadline finds nothing

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._conn is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                with contextlib.suppress(OSError):  # closed already
                    self._conn.shutdown(socket.SHUT_RDWR)
                self._conn = None


class _Server(HTTPServer):
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], status: HttpStatus) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.status = status
        self.watchdog: _Watchdog | None = None  # from HttpStatus.start


class _HeadTooLarge(Exception):
    """The request's head crossed REQUEST_HEAD_BYTES_MAX."""


class _CappedHead:
    """The connection's reader with a budget of bytes over all the lines read (the standard
    library reads the head with readline only, each line up to 64 KiB): past it _HeadTooLarge,
    before a longer line is read whole."""

    def __init__(self, raw: Any, budget: int) -> None:
        self.raw = raw
        self.left = budget

    def readline(self, size: int = -1) -> bytes:
        limit = self.left + 1 if size < 0 else min(size, self.left + 1)
        line: bytes = self.raw.readline(limit)
        self.left -= len(line)
        if self.left < 0:
            raise _HeadTooLarge
        return line

    def close(self) -> None:
        self.raw.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    server_version = "superstatic-agent"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers

    def setup(self) -> None:
        # The connection's deadline (one at a time: one thread serves one connection).
        if self.server.watchdog is not None:
            self.server.watchdog.arm(self.request, REQUEST_DEADLINE_S)
        super().setup()
        self.rfile = _CappedHead(self.rfile, REQUEST_HEAD_BYTES_MAX)  # type: ignore[assignment]

    def finish(self) -> None:
        if self.server.watchdog is not None:
            self.server.watchdog.disarm()
        # Shut down at the deadline: what was left unwritten is dropped.
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            # Shut down at the deadline (or reset by the client) mid-request: nothing to say,
            # and not the server's traceback on stderr (socketserver.handle_error).
            self.close_connection = True
        except _HeadTooLarge:
            self.close_connection = True
            log.debug(
                "http %s: request head over REQUEST_HEAD_BYTES_MAX=%d bytes, refused",
                self.client_address[0],
                REQUEST_HEAD_BYTES_MAX,
            )
            try:
                self.wfile.write(_HEAD_TOO_LARGE)
                self.wfile.flush()
            except OSError:
                return  # gone, or shut down at the deadline
            self._discard()

    def _discard(self) -> None:
        """Reads and drops what the client still sends (bounded), so that closing does not
        reset the connection before it read the 431."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            buffer = bytearray(_DISCARD_CHUNK_BYTES)
            for _ in range(REFUSED_DISCARD_BYTES_MAX // _DISCARD_CHUNK_BYTES):
                if not self.connection.recv_into(buffer):
                    break
        except OSError:
            pass  # gone, or silent past REQUEST_TIMEOUT_S: closed either way

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The code's own phrase and explanation: the standard library's messages quote the
        # request (its line, its version), which must not be echoed.
        super().send_error(code)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        command = getattr(self, "command", None)
        path = str(getattr(self, "path", "")).split("?", 1)[0]
        log.debug(
            "http %s %s %s %s",
            self.client_address[0],
            command if command in _METHODS else "(another method)",
            path if path in _PATHS else "(another path)",
            code,
        )

    def log_error(self, format: str, *args: Any) -> None:
        # The standard library's error lines quote the request; log_request follows each with
        # its code.
        return

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            code, content_type, body = self.server.status.render(path)
        except Exception:  # never let a rendering bug take the thread down
            log.exception("status page: failed to render %s", path)
            code, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Only log_request and log_error call it, both overridden above; kept silent so that a
        # future caller cannot log the request's text.
        return


class HttpStatus:
    """The port and its thread. Binds in __init__ (so a taken port fails the agent's start
    before it opens anything else); serves from start() until stop()."""

    def __init__(self, address: tuple[str, int], recorder: Recorder) -> None:
        self.recorder = recorder
        self.registry = registry_for(recorder)
        try:
            self._httpd = _Server(address, self)
        except OSError as exc:
            message = f"cannot serve --metrics on {address[0]}:{address[1]}: {exc.strerror}"
            raise MetricsBindError(exc.errno, message) from exc
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        assert self._thread is None
        self._httpd.watchdog = _Watchdog()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="superstatic-http",
            daemon=True,  # a stuck client must never keep the agent from exiting
        )
        self._thread.start()
        host, port = self.address
        log.info(
            "metrics on http://%s:%d/metrics, status page on http://%s:%d/", host, port, host, port
        )

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()  # waits for the current request (REQUEST_DEADLINE_S at most)
            self._thread.join(timeout=REQUEST_DEADLINE_S + 1)
            self._thread = None
        if self._httpd.watchdog is not None:
            self._httpd.watchdog.stop()
            self._httpd.watchdog = None
        self._httpd.server_close()

    # -- rendering (HTTP thread) ---------------------------------------------------------------

    def render(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/", "/index.html"):
            from superstatic_agent.status_page import PAGE

            return 200, "text/html; charset=utf-8", PAGE
        if path == "/status.json":
            # The page is being watched: the loop reads roots (and their sizes) again.
            self.recorder.roots_wanted_until = time.monotonic() + ROOTS_WANTED_S
            return 200, "application/json", json.dumps(self.status_json()).encode()
        if path == "/healthz":
            pub = self.recorder.published
            if pub is not None and time.monotonic() - pub.mono <= STALE_S:
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", b"stale: the agent loop is not publishing\n"
        return 404, "text/plain; charset=utf-8", b"not found: try /, /metrics, /status.json\n"

    def status_json(self) -> dict[str, Any]:
        pub = self.recorder.published
        if pub is None:
            return {"agent": self.recorder.node_id, "ready": False}
        latency = pub.histograms["commit_latency_seconds"]
        return {
            "agent": self.recorder.node_id,
            "ready": True,
            "age_s": round(max(0.0, time.monotonic() - pub.mono), 3),
            "published_ms": pub.wall_ms,
            "status": pub.status,
            "facts": pub.facts,
            "counts": pub.counts,
            "commit_latency_ms": {
                "p50": _ms(latency.quantile(0.5)),
                "p99": _ms(latency.quantile(0.99)),
                "count": latency.count,
            },
            "history": pub.history[-STATUS_HISTORY_POINTS_MAX:],
            "events": pub.events,
            "roots": pub.roots,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
