"""A partial replica subscribed to an agent's real `Streams` (tests/support/stream_harness.py),
fed through the library's own `StreamFeeder`: the virtual heap's two halves without sockets.

The app's I/O thread is the test's thread: what the replica asks for (its loader) is queued,
and the test sends it to the agent as a LOAD frame (`send`, `serve`); every frame the agent
sends is fed to the replica in order (`pump`). Reads that fault run on other threads (`read`,
`start_read`), since a fault waits for its answer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from superstatic.client.stream import StreamFeeder
from superstatic.objects.replica import Replica
from superstatic.objects.values import wire as wire_value
from superstatic.protocol import wire
from superstatic.protocol.errors import Error
from support.stream_harness import Harness

SUB = 5
ME = "me"
# How long a test waits for the replica's thread to ask, or to finish once answered: a bound
# on a hang, never a measure (both happen at once when the code is right).
WAIT_S_MAX = 30.0


class App:
    """A partial replica subscribed to the harness's agent streams, with the library's feeder."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.replica = Replica()
        self.asked: queue.Queue[tuple[list[str], list[tuple[str, list[Any]]], bool]]
        self.asked = queue.Queue()
        self.replica.start_partial(0, self._loader, 1 << 30)
        self.replica.io_thread = threading.get_ident()
        self.feeder = StreamFeeder(self.replica, filtered=True)
        self.fed = 0  # frames of the fake socket fed so far
        self.req_ids = iter(range(100, 1_000))
        self.threads: list[threading.Thread] = []
        self.raised: list[Exception] = []  # by the reads on other threads
        body = wire.subscribe_body(0, heap="partial", client=ME)
        h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
        self.pump()  # the subscription's first answer: the replica starts at its index

    def _loader(self, oids: list[str], keys: list[tuple[str, list[Any]]], whole: bool) -> None:
        self.asked.put((oids, keys, whole))

    def pump(self) -> None:
        """The agent sends what is due; the replica is fed every frame, as the I/O thread does."""
        for _ in range(4):
            self.h.streams.clear_body_cache()
            self.h.streams.pump(self.h.index, 0.0)
        frames = [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in self.h.clients.sent]
        for frame in frames[self.fed :]:
            assert frame.req_id == SUB and frame.type is not wire.FrameType.ERROR, frame
            if frame.type is wire.FrameType.LOADED:
                self.feeder.feed_loaded(frame.body)
            else:
                self.feeder.feed_events(frame.body)
        self.fed = len(frames)

    def send(self) -> None:
        """Sends the next LOAD the replica's threads asked for (not yet answered)."""
        oids, keys, whole = self.asked.get(timeout=WAIT_S_MAX)
        wire_keys = [(oid, [wire_value(k) for k in ks]) for oid, ks in keys]
        req_id = next(self.req_ids)
        body = wire.load_body(SUB, oids, wire_keys, whole=whole)
        frame = wire.Frame(wire.FrameType.LOAD, req_id, body)
        self.h.streams.on_heap(b"app", wire.parse_heap_request(frame), req_id)

    def serve(self) -> None:
        """Sends the LOAD the replica's thread asked for, then what the agent answers."""
        self.send()
        self.pump()

    def start_read(self, read: Callable[[], Any], out: list[Any]) -> None:
        """`read` on another thread: its result goes to `out`, or the exception it raised to
        `self.raised` (kept apart: `isinstance` of a hollow proxy would fault it in)."""

        def run() -> None:
            try:
                out.append(read())
            except Exception as exc:  # (the caller raises it)
                self.raised.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()

    def finish(self) -> None:
        """Fails every wait left unanswered, so the read threads end with the test."""
        self.replica.load_failed(list(self.replica._loads), Error("the test ended"))
        for thread in self.threads:
            thread.join(WAIT_S_MAX)

    def read(self, read: Callable[[], Any]) -> Any:
        """`read` on another thread (it waits for its load), answered from this one."""
        out: list[Any] = []
        self.start_read(read, out)
        try:
            self.serve()
            # The answer was installed as it was fed: nothing may still wait for it.
            assert not self.replica._loads, f"unanswered: {list(self.replica._loads)}"
            self.threads[-1].join(WAIT_S_MAX)
            if self.raised:
                raise self.raised.pop()
            assert out, "the read was not answered"
            return out[0]
        finally:
            self.finish()
