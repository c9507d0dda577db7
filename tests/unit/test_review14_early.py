"""Review 14 of events before the apply's commit (docs/agent.md, "Events before the apply's
commit"): what a failure while serving a stream early leaves behind, and which streams are
served inside the write transaction. Real agents (a `Server` in a thread, real ZeroMQ and
LMDB), as in tests/unit/test_early_events.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from superstatic_bench.loadgen import RawClient, txn_extend
from support.agent_thread import TIMEOUT_MS, Agent
from support.stream_harness import Harness
from test_early_events import FRAMES_MAX, wait_events

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import wire


def caller(agent: Agent, heap: str) -> tuple[RawClient, int]:
    """A connection with a session and a stream that answers its writes (SUBSCRIBE "answers",
    as the library subscribes), from the agent's applied index."""
    app = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    app.open_session(TIMEOUT_MS)  # answered by REPLY: not subscribed yet
    start = agent.status()["applied"]
    if heap == "partial":
        body = wire.subscribe_body(start, heap="partial", client=app.client_id)
    else:
        body = {"from": start, "model": wire.DATA_MODEL}
    return app, app.send(wire.FrameType.SUBSCRIBE, {**body, "answers": True})


def test_a_failure_serving_a_stream_early_ends_it_with_an_error_and_the_write_is_answered(
    agent: Agent,
) -> None:
    """A partial stream's cursor and held set move while its frame is built
    (`_next_filtered_frame`): a failure after that (a bug, a MemoryError) used to be logged and
    forgotten, leaving the cursor past events never sent. The app was then told nothing of its
    own write: no event, and no REPLY either (answers_by_event counted the event as sent). Now
    the stream ends with an ERROR (the app resubscribes from what it applied) and the write is
    answered by its REPLY."""
    setup = agent.client
    assert setup.propose(setup.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    app, sub_req = caller(agent, "partial")
    try:
        streams = agent.server.streams
        real_skip_frame = streams._skip_frame
        failed: list[int] = []

        def failing_once(sub: Any, to: int, *args: Any) -> None:
            if not failed:
                failed.append(to)
                raise RuntimeError("a failure building a frame")
            real_skip_frame(sub, to, *args)

        streams._skip_frame = failing_once  # type: ignore[method-assign]
        seq = app.take_seq()
        write_req = app.send(wire.FrameType.PROPOSE, app.propose_body(txn_extend("l", [1]), seq))
        event_seen = stream_error = replied = False
        for _ in range(FRAMES_MAX):
            frame = app.recv(TIMEOUT_MS)
            assert frame is not None, (
                f"no answer to the write (failed at {failed}, event {event_seen}, stream error "
                f"{stream_error}, REPLY {replied})"
            )
            if frame.req_id == sub_req and frame.type is wire.FrameType.ERROR:
                stream_error = True
            elif frame.req_id == sub_req and frame.type is wire.FrameType.EVENTS:
                event_seen = event_seen or any(e[1] == app.client_id for e in frame.body["ev"])
            elif frame.req_id == write_req:
                assert frame.type is wire.FrameType.REPLY, frame.body
                assert frame.body["outcome"] == "ok", frame.body
                replied = True
            if event_seen or (stream_error and replied):
                break
        assert failed, "the early pump never built a frame: the test did not test anything"
        assert event_seen or (stream_error and replied)
    finally:
        app.close()


class Sends:
    """The agent loop's own record, in order: ("commit",) after each write transaction commits,
    ("events", req_id, to) for each EVENTS frame sent."""

    def __init__(self, agent: Agent) -> None:
        self.order: list[tuple[Any, ...]] = []
        server = agent.server
        committed, send = server.storage._committed, server.clients.send

        def commit_done() -> None:
            committed()
            self.order.append(("commit",))

        def sending(identity: bytes, data: bytes) -> str:
            frame = wire.decode(data, wire.AGENT_TO_CLIENT)
            if frame.type is wire.FrameType.EVENTS:
                self.order.append(("events", frame.req_id, frame.body["to"]))
            return send(identity, data)

        server.storage._committed = commit_done  # type: ignore[method-assign]
        server.clients.send = sending  # type: ignore[method-assign]

    def first_events(self, req_id: int, index: int) -> int:
        order = list(self.order)  # the loop thread appends; a copy is read
        return next(
            i for i, w in enumerate(order) if w[0] == "events" and w[1] == req_id and w[2] >= index
        )

    def commit_after(self, position: int) -> int:
        """The first commit recorded after `position` (waited for: an event sent early reaches
        the app while the loop is still in the transaction)."""
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while True:
            order = list(self.order)
            found = [i for i in range(position, len(order)) if order[i] == ("commit",)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, ("no commit recorded", order)
            time.sleep(0.01)

    def commit_before(self, position: int) -> int:
        order = list(self.order)
        return max((i for i in range(position) if order[i] == ("commit",)), default=-1)


def writes_answered_before_the_commit(
    agent: Agent,
    writer: RawClient,
    answering: tuple[RawClient, int],
    bystander: tuple[RawClient, int],
) -> None:
    """Three writes of `writer`: each one's event reaches the answering stream from inside the
    write transaction (before its commit), and the bystander's stream only after that commit."""
    sends = Sends(agent)
    (stream, stream_sub), (other, other_sub) = answering, bystander
    for value in range(3):
        index = agent.server.applied + 1  # nothing else writes: this write's index
        seq = writer.take_seq()
        writer.send(wire.FrameType.PROPOSE, writer.propose_body(txn_extend("l", [value]), seq))
        wait_events(stream, stream_sub, index)
        wait_events(other, other_sub, index)
        early = sends.first_events(stream_sub, index)
        late = sends.first_events(other_sub, index)
        assert early < sends.commit_after(early), sends.order  # the caller's: before it
        assert sends.commit_before(late) >= sends.commit_after(early), sends.order


@pytest.mark.parametrize("heap", ["all", "partial"])
def test_only_the_streams_that_answer_a_call_of_the_batch_are_served_before_the_commit(
    agent: Agent, heap: str
) -> None:
    """Every frame sent inside the write transaction holds its commit, the fsync after it and
    the Raft messages that wait for both (a follower's acks, the leader's own durable copy):
    with the whole fan-out there, 300 subscribers kept the commit waiting 3.5 ms (review 14) to
    save their callers 0.1 ms. So only the streams that settle a call of this batch go before
    the commit; a subscriber with no call waiting gets the same events after it."""
    setup = agent.client
    assert setup.propose(setup.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    app, app_sub = caller(agent, heap)
    bystander = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    try:
        start = agent.status()["applied"]
        bystander_sub = bystander.send(
            wire.FrameType.SUBSCRIBE, {"from": start, "model": wire.DATA_MODEL}
        )
        assert bystander_sub != app_sub  # the two streams are told apart by their req_id
        writes_answered_before_the_commit(agent, app, (app, app_sub), (bystander, bystander_sub))
    finally:
        bystander.close()
        app.close()


def test_a_write_through_another_connection_is_answered_early_on_its_clients_stream(
    agent: Agent,
) -> None:
    """An app attached to a follower writes through its link to the leader (another
    connection, the same client id): its own agent has no waiter for the write, and still
    serves the write's event early to the stream that answers that client (a partial SUBSCRIBE
    names its client). A bystander's stream still waits for the commit."""
    setup = agent.client
    assert setup.propose(setup.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    stream = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    link = RawClient(agent.config.client_endpoint, keys=NO_KEYS, client_id=stream.client_id)
    bystander = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    try:
        link.open_session(TIMEOUT_MS)
        start = agent.status()["applied"]
        body = wire.subscribe_body(start, heap="partial", client=stream.client_id)
        stream_sub = stream.send(wire.FrameType.SUBSCRIBE, {**body, "answers": True})
        bystander.request(wire.FrameType.STATUS, timeout_ms=TIMEOUT_MS)  # its next req_id: 2
        bystander_sub = bystander.send(
            wire.FrameType.SUBSCRIBE, {"from": start, "model": wire.DATA_MODEL}
        )
        assert bystander_sub != stream_sub  # the two streams are told apart by their req_id
        writes_answered_before_the_commit(
            agent, link, (stream, stream_sub), (bystander, bystander_sub)
        )
    finally:
        bystander.close()
        link.close()
        stream.close()


def test_a_write_retried_after_a_full_map_sends_its_event_once(agent: Agent) -> None:
    """The map found full at the end of the apply's write transaction (after the apply sent
    its events): `Storage` frees pages and runs the apply's transaction again (format 5: the
    retry is per LMDB transaction, the log's records being already written and flushed).
    The events went out once and are not recorded or sent again; the write is answered once,
    by its event; the stream goes on without a gap or a repeat."""
    setup = agent.client
    assert setup.propose(setup.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    app, sub_req = caller(agent, "all")
    try:
        storage = agent.server.storage
        real_write = storage.write
        full_once: list[int] = []

        def write(ready: Any, apply: Any, **kwargs: Any) -> None:
            if apply is None or full_once:
                real_write(ready, apply, **kwargs)
                return

            def apply_then_full(txn: Any) -> None:
                if full_once:  # the retry
                    apply(txn)
                    return
                full_once.append(ready.committed[-1].index)  # first: the apply sends events
                apply(txn)
                raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL")  # aborts it all

            real_write(ready, apply_then_full, **kwargs)

        storage.write = write  # type: ignore[method-assign]
        first = agent.server.applied + 1
        writes: dict[int, int] = {}
        for value in range(3):
            seq = app.take_seq()
            writes[seq] = app.send(
                wire.FrameType.PROPOSE, app.propose_body(txn_extend("l", [value]), seq)
            )
        last = first + 2
        events: list[int] = []
        others: list[Any] = []
        while not events or events[-1] < last:
            frame = app.recv(TIMEOUT_MS)
            assert frame is not None, (events, others, full_once)
            if frame.req_id == sub_req and frame.type is wire.FrameType.EVENTS:
                events.extend(e[0] for e in frame.body["ev"])
            else:
                others.append((frame.type, frame.req_id, frame.body))
        assert full_once, "no write met the full map: the test did not test anything"
        assert events == list(range(first, last + 1)), events  # each once, in order
        assert agent.status()["applied"] == last
        # Answered by their events only: a REPLY (or an ERROR) to a write would come before the
        # stream frames of the next turn; a PING's answer marks the end of what was sent.
        ping = app.send(wire.FrameType.PING, {})
        for _ in range(FRAMES_MAX):
            frame = app.recv(TIMEOUT_MS)
            assert frame is not None, "no answer to a PING"
            if frame.req_id == ping:
                break
            others.append((frame.type, frame.req_id, frame.body))
        assert [o for o in others if o[1] in writes.values()] == [], others
    finally:
        app.close()


def test_a_full_stream_is_never_sent_past_the_applied_index(tmp_path: Path) -> None:
    """After a halt that followed an early send, the events kept in memory run past what the
    store applied: `pump` at the applied index sends none of them (review14, Low)."""
    h = Harness(tmp_path)
    try:
        h.commit([["new", "@roots", "dict", []]])
        h.subscribe(b"app", 3, start=1)
        h.commit([["set", "@roots", "a", 1]])
        h.commit([["set", "@roots", "b", 2]])  # recorded, as if its commit then failed
        h.streams.pump(h.index - 1, 0.0)
        frames = [wire.decode(d, wire.AGENT_TO_CLIENT) for who, d in h.clients.sent]
        assert [f.body["to"] for f in frames if f.type is wire.FrameType.EVENTS] == [h.index - 1]
    finally:
        h.close()
