"""Review of the lean write path (issue 11 item 4, docs/data-model-v2.md 8.2): the agent skips
the REPLY of an "ok" write only when the connection's stream will carry the write's event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stream_harness import Harness
from test_heap_filter import SUB, events, pump, world

from superstatic.protocol import wire


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def test_a_partial_stream_without_a_client_id_is_not_trusted_to_answer_writes(
    h: Harness,
) -> None:
    world(h)
    body = {**wire.subscribe_body(0, heap="partial"), "answers": True}  # no "client"
    h.streams.on_subscribe(b"app", wire.Frame(wire.FrameType.SUBSCRIBE, SUB, body), 0.0)
    pump(h)
    mine = h.commit([["set", "o.a", "k", 1]], client="me")[0].index  # o.a is not held
    answered_by_event = h.streams.answers_by_event(b"app", mine, "me")
    pump(h)
    assert not answered_by_event or mine in events(h)
