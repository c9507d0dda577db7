"""Review 14 of events before the apply's commit (docs/agent.md, "Events before the apply's
commit"): what a failure while serving a stream early leaves behind, and which streams are
served inside the write transaction. Real agents (a `Server` in a thread, real ZeroMQ and
LMDB), as in tests/unit/test_early_events.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import RawClient, txn_create_roots, txn_extend
from test_agent_halts import TIMEOUT_MS, Agent

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import wire

FRAMES_MAX = 50


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    a = Agent(tmp_path / "a")
    try:
        yield a
    finally:
        a.stop()


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
    assert setup.propose(txn_create_roots({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
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
