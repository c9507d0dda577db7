"""Fakes of what client/heap_io.py's HeapIo uses of the connection, its replica and the I/O
thread's state: which frames HeapIo sends, and when, is what the unit tests check."""

from __future__ import annotations

from typing import Any

from superstatic.client.heap_io import HeapIo
from superstatic.protocol import wire


class FakeConn:
    timeout_ms_request = 60_000
    endpoint = "tcp://127.0.0.1:1"

    def _wake(self) -> None:
        pass


class FakeReplica:
    def __init__(self) -> None:
        self.failed: list[Any] = []

    def held_set(self) -> tuple[list[str], list[tuple[str, list[Any]]]]:
        return [], []

    def take_drops(self) -> list[str]:
        return []

    def take_key_drops(self) -> list[tuple[str, list[Any]]]:
        return []

    def load_failed(self, waits: list[Any], error: BaseException) -> None:
        self.failed.extend(waits)


class FakeIo:
    """What HeapIo uses of the connection's _IoState: send (None while `ready` is False) and
    resubscribe (a new subscription, as _IoState.subscribe does it)."""

    def __init__(self, heap: HeapIo) -> None:
        self.heap = heap
        self.sub_req = 1
        self.next_req = 2
        self.ready = True
        self.loads: list[dict[str, Any]] = []

    def send(self, frame_type: wire.FrameType, body: dict[str, Any]) -> int | None:
        if not self.ready:
            return None
        req_id = self.next_req
        self.next_req += 1
        if frame_type is wire.FrameType.LOAD:
            self.loads.append(body)
        return req_id

    def resubscribe(self, reason: str) -> None:
        self.heap.on_subscribe(self)  # type: ignore[arg-type]
        self.sub_req = self.next_req
        self.next_req += 1


def setup() -> tuple[HeapIo, FakeIo, FakeReplica]:
    replica = FakeReplica()
    heap = HeapIo(FakeConn(), replica, RuntimeError)  # type: ignore[arg-type]
    return heap, FakeIo(heap), replica


def turn(heap: HeapIo, io: FakeIo) -> None:
    heap.on_turn(io, 0.0)  # type: ignore[arg-type]
