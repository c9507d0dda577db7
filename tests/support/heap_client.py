"""A raw client of the virtual heap's frames (docs/virtual-heap.md section 2.2) for tests against
real agents: one DEALER, a partial (or full) subscription, LOAD / DROP / HOLD sent as given, and
every frame received kept in arrival order, so a test can check what the stream held and where.
Nothing here interprets the answers beyond wire.py's validation: that is what is under test."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import zmq

from superstatic.protocol import wire

TIMEOUT_S_DEFAULT = 10.0


class HeapClient:
    def __init__(self, endpoint: str, client_id: str = "heap-test-client") -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self._req_ids = itertools.count(1)
        self.received: list[wire.Frame] = []
        self.sub = 0
        self._stream_bytes = 0
        # False: stream bytes are acknowledged only by `ack` (an app that reads slowly, with
        # the agent's --subscriber-backlog-bytes-max small: one frame per acknowledgement).
        self.auto_ack = True

    def close(self) -> None:
        self.sock.close(linger=0)

    def send(self, frame_type: wire.FrameType, body: dict[str, Any]) -> int:
        req_id = next(self._req_ids)
        self.sock.send(wire.encode(frame_type, req_id, body))
        return req_id

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def hello(self) -> dict[str, Any]:
        req_id = self.send(wire.FrameType.HELLO, {"client": self.client_id})
        return self.reply(req_id)

    def subscribe(self, start: int = 0, *, heap: str = "partial", hold_parts: int = 0) -> int:
        body = wire.subscribe_body(start, heap=heap, client=self.client_id, hold_parts=hold_parts)
        self.sub = self.send(wire.FrameType.SUBSCRIBE, body)
        return self.sub

    def load(self, oids: list[str], *, prefetch_bytes: int = 0, sub: int | None = None) -> int:
        body = wire.load_body(self.sub if sub is None else sub, oids, prefetch_bytes=prefetch_bytes)
        return self.send(wire.FrameType.LOAD, body)

    def drop(self, oids: list[str]) -> int:
        return self.send(wire.FrameType.DROP, wire.drop_body(self.sub, oids))

    def hold(self, part: int, last: bool, oids: list[str]) -> int:
        return self.send(wire.FrameType.HOLD, wire.hold_body(self.sub, part, last, oids))

    def pump(self, timeout_s: float) -> None:
        """Receives for up to timeout_s (at least one poll), acknowledging stream bytes."""
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(left_ms, zmq.POLLIN):
                return
            data = self.sock.recv()
            frame = wire.decode(data, wire.AGENT_TO_CLIENT)
            self.received.append(frame)
            if frame.req_id == self.sub and frame.type in (
                wire.FrameType.EVENTS,
                wire.FrameType.LOADED,
                wire.FrameType.SNAPSHOT,
            ):
                self._stream_bytes += len(data)
                if self.auto_ack:
                    self.ack()
            if time.monotonic() >= deadline:
                return

    def ack(self) -> None:
        """Acknowledges every stream byte received so far (a PING)."""
        ping = {"stream": [self.sub, self._stream_bytes]}
        self.sock.send(wire.encode(wire.FrameType.PING, 0, ping))

    def wait_for(
        self, what: str, done: Callable[[], bool], timeout_s: float = TIMEOUT_S_DEFAULT
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {timeout_s} s; got {self.summary()}")
            self.pump(0.05)

    def reply(self, req_id: int, timeout_s: float = TIMEOUT_S_DEFAULT) -> dict[str, Any]:
        """The REPLY body for req_id (AssertionError on ERROR or silence)."""
        frame = self.answer(req_id, timeout_s)
        assert frame.type is wire.FrameType.REPLY, frame.body
        return frame.body  # type: ignore[no-any-return]

    def answer(self, req_id: int, timeout_s: float = TIMEOUT_S_DEFAULT) -> wire.Frame:
        """The REPLY or ERROR frame answering req_id (not a stream frame)."""

        def found() -> wire.Frame | None:
            for frame in self.received:
                if frame.req_id == req_id and frame.type in (
                    wire.FrameType.REPLY,
                    wire.FrameType.ERROR,
                ):
                    return frame
            return None

        self.wait_for(f"an answer to request {req_id}", lambda: found() is not None, timeout_s)
        answer = found()
        assert answer is not None
        return answer

    def stream(self) -> list[wire.Frame]:
        """The subscription's frames so far, in order."""
        kinds = (wire.FrameType.EVENTS, wire.FrameType.LOADED, wire.FrameType.SNAPSHOT)
        return [f for f in self.received if f.req_id == self.sub and f.type in kinds]

    def loaded(self, load: int, timeout_s: float = TIMEOUT_S_DEFAULT) -> list[wire.Frame]:
        """Every LOADED frame answering LOAD `load`, once its last one arrived."""

        def frames() -> list[wire.Frame]:
            return [
                f
                for f in self.stream()
                if f.type is wire.FrameType.LOADED and f.body.get("load") == load
            ]

        self.wait_for(
            f"the answer to LOAD {load}",
            lambda: any(f.body.get("last") for f in frames()),
            timeout_s,
        )
        return frames()

    def applied(self) -> int:
        """How far the stream reached: the last EVENTS' "to" or LOADED's index."""
        reached = 0
        for frame in self.stream():
            if frame.type is wire.FrameType.EVENTS:
                reached = max(reached, frame.body["to"])
            elif frame.type is wire.FrameType.LOADED:
                reached = max(reached, frame.body["index"])
        return reached

    def events(self) -> list[list[Any]]:
        return [e for f in self.stream() if f.type is wire.FrameType.EVENTS for e in f.body["ev"]]

    def summary(self) -> list[tuple[str, int, Any]]:
        out = []
        for frame in self.received[-20:]:
            reach = frame.body.get("to", frame.body.get("index", frame.body.get("code")))
            out.append((frame.type.name, frame.req_id, reach))
        return out
