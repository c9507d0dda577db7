"""A headless Chromium the tests drive through the DevTools protocol, with no dependency: the
protocol's JSON goes over a WebSocket, and this module holds the few lines of a WebSocket
client it needs (RFC 6455: a handshake, masked text frames out, unmasked frames in).

Used by the status page test: the page stays loaded while the cluster changes, and the test
reads the page's DOM as it updates itself (`evaluate`), which a one-shot `--dump-dom` cannot
show. The browser is started by `Browser.start()` and stopped by PID in `close()`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

INSTALL_HINT = "apt-get install -y --no-install-recommends chromium (as root)"
TIMEOUT_S_START = 60.0
TIMEOUT_S_CALL = 30.0
# A DevTools answer larger than this is not one we asked for.
MESSAGE_BYTES_MAX = 16 << 20
# Messages (events) skipped while waiting for one answer.
MESSAGES_SKIPPED_MAX = 10_000


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.profile = Path(tempfile.mkdtemp(prefix="superstatic-chromium-"))
        self.sock: socket.socket | None = None
        self._ids = 0

    def start(self, url: str) -> Browser:
        binary = chromium_path()
        assert binary is not None, INSTALL_HINT
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # root in CI; the page is our own
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1280,1000",
                f"--remote-debugging-port={self.port}",
                "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + TIMEOUT_S_START
        target: dict[str, Any] | None = None
        while target is None:
            assert self.process.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium's DevTools port did not answer"
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT"
                )
                with urllib.request.urlopen(request, timeout=5) as resp:
                    target = json.loads(resp.read())
            except OSError:
                time.sleep(0.2)
        self._connect(str(target["webSocketDebuggerUrl"]))
        return self

    def _connect(self, ws_url: str) -> None:
        parsed = urlparse(ws_url)
        sock = socket.create_connection((parsed.hostname, parsed.port), timeout=TIMEOUT_S_CALL)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "DevTools closed the connection during the handshake"
            head += chunk
            assert len(head) < 65536
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        self.sock = sock

    def _send(self, text: str) -> None:
        assert self.sock is not None
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read_exact(self, n: int) -> bytes:
        assert self.sock is not None
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "DevTools closed the connection"
            out += chunk
        return out

    def _recv(self) -> str:
        parts = b""
        while True:
            first, second = self._read_exact(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read_exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read_exact(8))
            assert n <= MESSAGE_BYTES_MAX, n
            if second & 0x80:  # a masked frame from the server: not expected, but legal
                mask = self._read_exact(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read_exact(n)))
            else:
                data = self._read_exact(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x9, 0xA):  # ping / pong: not part of a message
                continue
            parts += data
            if first & 0x80:  # FIN
                return parts.decode()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        ident = self._ids
        self._send(json.dumps({"id": ident, "method": method, "params": params}))
        for _ in range(MESSAGES_SKIPPED_MAX):
            message = json.loads(self._recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return dict(message.get("result", {}))
        raise RuntimeError(f"no answer to {method}")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self, element_id: str) -> str | None:
        value = self.evaluate(
            f"(e => e ? e.textContent : null)(document.getElementById({json.dumps(element_id)}))"
        )
        return None if value is None else str(value)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        if self.process is not None and self.process.poll() is None:
            # Its whole session: chromium's renderer and GPU helpers are its children.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)
