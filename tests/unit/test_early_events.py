"""Events before the apply's commit (docs/agent.md): the agent sends a write's stream event from
inside the write transaction that applies it, before that transaction's commit and fsync, so a
caller waits one fsync less. Safe because the entry is committed (durable on a majority); the
tests here drive a real agent (a `Server` in a thread, real ZeroMQ and LMDB) and watch the order
of its commits and its sends from inside its loop thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import RawClient, txn_extend
from support.agent_thread import TIMEOUT_MS, Agent
from support.stream_harness import Harness

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import wire
from superstatic.protocol.codec import Ref

FRAMES_MAX = 50


class Watch:
    """The agent loop's own record, in order: ("apply", last index of a batch), ("commit",)
    after each write transaction commits, ("events", to) for each EVENTS frame sent."""

    def __init__(self, agent: Agent) -> None:
        self.order: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        server = agent.server
        apply_batch, committed, send = (
            server.sm.apply_batch,
            server.storage._committed,
            server.clients.send,
        )

        def applying(txn: Any, entries: Any) -> Any:
            results = apply_batch(txn, entries)
            if results:
                self.note("apply", results[-1].index)
            return results

        def commit_done() -> None:
            committed()
            self.note("commit")

        def sending(identity: bytes, data: bytes) -> str:
            frame = wire.decode(data, wire.AGENT_TO_CLIENT)
            if frame.type is wire.FrameType.EVENTS:
                self.note("events", frame.body["to"])
            elif frame.type is wire.FrameType.REPLY:
                self.note("reply", identity, frame.req_id, frame.body.get("index"))
            return send(identity, data)

        server.sm.apply_batch = applying  # type: ignore[method-assign]
        server.storage._committed = commit_done  # type: ignore[method-assign]
        server.clients.send = sending  # type: ignore[method-assign]

    def note(self, *what: Any) -> None:
        with self.lock:
            self.order.append(what)

    def commit_after_apply_of(self, index: int) -> int:
        """The position of the commit of the write transaction that applied `index` (waited
        for: an event sent early reaches the app while the loop is still in the transaction)."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while True:
            with self.lock:
                order = list(self.order)
            applied = next(i for i, w in enumerate(order) if w[0] == "apply" and w[1] >= index)
            commits = [i for i in range(applied, len(order)) if order[i] == ("commit",)]
            if commits:
                return commits[0]
            assert time.monotonic() < deadline, ("no commit after the apply", order)
            time.sleep(0.01)

    def events_sent_for(self, index: int) -> int:
        with self.lock:
            order = list(self.order)
        return next(i for i, w in enumerate(order) if w[0] == "events" and w[1] >= index)


def subscribe(agent: Agent, on: RawClient | None = None, **fields: Any) -> tuple[RawClient, int]:
    sub = on or RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    start = agent.status()["applied"]
    req_id = sub.send(wire.FrameType.SUBSCRIBE, {"from": start, "model": wire.DATA_MODEL, **fields})
    return sub, req_id


def wait_events(sub: RawClient, req_id: int, index: int) -> None:
    for _ in range(FRAMES_MAX):
        frame = sub.recv(TIMEOUT_MS)
        assert frame is not None, "no stream frame"
        assert frame.type is not wire.FrameType.ERROR, frame.body
        events = frame.req_id == req_id and frame.type is wire.FrameType.EVENTS
        if events and frame.body["to"] >= index:
            return
    raise AssertionError(f"no EVENTS frame reached {index}")


@pytest.mark.parametrize("heap", ["all", "partial"])
def test_a_writes_event_is_sent_before_the_commit_of_its_apply(agent: Agent, heap: str) -> None:
    """To its caller's stream, which answers it (a stream with no call waiting gets it after
    the commit: tests/unit/test_review14_early.py)."""
    setup = agent.client
    assert setup.propose(setup.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    app = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    try:
        app.open_session(TIMEOUT_MS)  # answered by REPLY: not subscribed yet
        fields = {"heap": "partial", "client": app.client_id} if heap == "partial" else {}
        app, req_id = subscribe(agent, app, answers=True, **fields)
        watch = Watch(agent)
        for value in range(3):
            index = agent.server.applied + 1  # nothing else writes: this write's index
            app.send(
                wire.FrameType.PROPOSE, app.propose_body(txn_extend("l", [value]), app.take_seq())
            )
            wait_events(app, req_id, index)
            assert watch.events_sent_for(index) < watch.commit_after_apply_of(index), watch.order
    finally:
        app.close()


def test_a_write_answered_by_its_early_event_gets_no_reply(agent: Agent) -> None:
    """One frame back per call still holds when the event went before the commit: the agent
    sends no REPLY for an "ok" write of a connection whose stream (SUBSCRIBE "answers")
    already carried its event."""
    setup = agent.client
    assert setup.propose(setup.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    app = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    try:
        app.open_session(TIMEOUT_MS)  # answered by REPLY: not subscribed yet
        app, sub_req = subscribe(agent, app, answers=True)
        watch = Watch(agent)
        sent: list[int] = []
        for value in range(3):
            body = app.propose_body(txn_extend("l", [value]), app.take_seq())
            sent.append(app.send(wire.FrameType.PROPOSE, body))
            # Its event is the answer; the next write follows it (the agent's loop sends in
            # order, so a REPLY for this write would be recorded before the next event).
            wait_events(app, sub_req, agent.server.applied + 1)
        # A fence: the agent answers it after handling the Ready of the app's last write, so
        # a REPLY to that write would be in the record by the time this one returns.
        fence = setup.propose(txn_extend("l", ["fence"]), timeout_ms=TIMEOUT_MS)
        assert fence["outcome"] == "ok"
        replies = [
            w for w in watch.order if w[0] == "reply" and w[2] in sent and w[3] != fence["index"]
        ]
        assert replies == [], watch.order
        assert any(w[0] == "events" for w in watch.order)
    finally:
        app.close()


def test_only_subscribers_following_the_log_from_memory_are_served_early(tmp_path: Path) -> None:
    """The negative space, at the streams (all three with a call in the batch): a subscriber
    with a LOAD to serve (its LOADED is read from the committed store and follows the events
    before its index), one whose frame still waits for the socket, and one behind the events
    kept in memory get nothing from `pump_early`; they are served by the turn's `pump` after
    the commit."""
    h = Harness(tmp_path)
    try:
        h.commit([["new", "@roots", "dict", [["d", Ref("c.1")]]], ["new", "c.1", "dict", []]])
        body = wire.subscribe_body(1, heap="partial", client="cl")
        h.streams.on_subscribe(b"loading", wire.Frame(wire.FrameType.SUBSCRIBE, 5, body), 0.0)
        h.subscribe(b"following", 6, start=1)
        h.subscribe(b"behind", 7, start=1)
        h.streams.pump(h.index, 0.0)
        frame = wire.Frame(wire.FrameType.LOAD, 9, wire.load_body(5, ["c.1"]))
        h.streams.on_heap(b"loading", wire.parse_heap_request(frame), 9)
        h.streams._subscribers[b"behind"].next_index = 0  # as if behind what memory holds
        h.clients.sent.clear()
        applied = h.commit([["set", "c.1", "k", 1]])
        h.streams.pump_early(applied[-1].index, 0.0, [b"loading", b"following", b"behind"])
        assert [who for who, _data in h.clients.sent] == [b"following"]
    finally:
        h.close()
