"""Review 20 of branch `loadbug`: every wait a partial replica's load leaves is settled by the
agent's answer, against the agent's real streams (tests/support/heap_stream_app.py).

A key asked of a per-key dict while another thread's load of the whole dict is in flight: the
agent serves the whole load first (the dict is held whole from its index on) and answers the
key with a key run, which the held set covers (agent/heap.py `_request_keys`). The replica,
holding the dict whole by then, took that run for a protocol error ("a key run for an object
not held per key"): the connection resubscribed, asked the key again, got the same run, and so
on until the key's wait expired and the read raised `Unavailable` (the dict was there all
along).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.heap_inproc import WHOLE_ENTRIES_MAX
from support.heap_stream_app import WAIT_S_MAX, App
from support.stream_harness import Harness

from superstatic.objects.node import HELD, PARTIAL
from superstatic.protocol.codec import Ref

OTHER = "other"
BIG = "c.1"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def test_a_key_asked_while_the_whole_dict_loads_is_answered(h: Harness) -> None:
    entries = [[f"k{i}", i] for i in range(WHOLE_ENTRIES_MAX + 1)]
    h.commit(
        [["new", "@roots", "dict", [["big", Ref(BIG)]]], ["new", BIG, "dict", entries]],
        client=OTHER,
    )
    app = App(h)
    try:
        app.read(lambda: app.replica.root_ref("big"))
        node = app.replica.nodes[BIG]
        app.read(lambda: app.replica.fault(node))  # its header: held per key
        assert node.state == PARTIAL
        # One thread reads the dict's shape (loads it whole), another a key of it; the key is
        # asked after the whole load was sent, before its answer came.
        shape: list[Any] = []
        app.start_read(lambda: len(node.ref), shape)
        app.send()
        key: list[Any] = []
        app.start_read(lambda: node.ref.get("k7"), key)
        app.send()
        app.pump()  # both answers, in order: the whole dict, then the key's run
        for thread in app.threads:
            thread.join(WAIT_S_MAX)
        assert shape == [WHOLE_ENTRIES_MAX + 1] and key == [7]
        assert node.state == HELD and not app.replica._loads
    finally:
        app.finish()
