"""Review 20 of branch `loadbug`: every wait a partial replica's load leaves is settled by the
agent's answer, against the agent's real streams (tests/support/heap_stream_app.py).

A key asked of a per-key dict while another thread's load of the whole dict is in flight: the
agent serves the whole load first (the dict is held whole from its index on) and answers the
key with a key run, which the held set covers (agent/heap.py `_request_keys`). The replica,
holding the dict whole by then, took that run for a protocol error ("a key run for an object
not held per key"): the connection resubscribed, asked the key again, got the same run, and so
on until the key's wait expired and the read raised `Unavailable` (the dict was there all
along).

A held snapshot (the app behind the log) answering absent a node the replica held whole left it
held: a collected node, alive in this replica only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent.storage import Trimmed
from support.heap_inproc import WHOLE_ENTRIES_MAX
from support.heap_stream_app import WAIT_S_MAX, App
from support.stream_harness import Harness

from superstatic.objects.node import HELD, PARTIAL
from superstatic.protocol.codec import Ref

OTHER = "other"
# Writes that drop a reference, at most, before the collection must have run (agent/gc.py).
COLLECT_WRITES_MAX = 50
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


def test_a_held_node_a_held_snapshot_answers_absent_dies(h: Harness) -> None:
    """A partial replica behind the log gets a held snapshot (docs/virtual-heap.md 4.1): a node
    it held whole that was collected in the gap is answered absent and must die, as on a full
    replica after a snapshot (`Replica._swap_in`). It stayed held: its old contents readable
    by a body as if it existed, on the clock, and declared again on every resubscription."""
    h.sm.gc_threshold = 1  # a collection at every write that drops a reference
    h.commit(
        [
            ["new", "@roots", "dict", [["p", Ref("c.1")], ["q", Ref("c.2")]]],
            ["new", "c.1", "obj", ["Point", [["x", 1]]]],
            ["new", "c.2", "obj", ["Point", [["x", 2]]]],
        ],
        client=OTHER,
    )
    app = App(h)
    try:
        app.read(lambda: app.replica.root_ref("p"))
        app.read(lambda: app.replica.root_ref("q"))
        for oid in ("c.1", "c.2"):
            node = app.replica.nodes[oid]
            app.read(lambda node=node: app.replica.fault(node))
            assert node.state == HELD
        gone = app.replica.nodes["c.1"]
        # The app reads slowly: the event dropping the reference waits in its socket, and
        # the log is compacted past the one collecting the node.
        h.clients.send = lambda who, data: "full"  # type: ignore[method-assign]
        h.commit([["del", "@roots", "p"]], client=OTHER)
        app.pump()
        h.commit([["set", "c.2", "x", 3]], client=OTHER)
        for i in range(COLLECT_WRITES_MAX):  # later entries, until one collects c.1
            new = f"t.{i}"
            applied = h.commit(
                [["new", new, "list", []], ["set", "@roots", "t", Ref(new)]], client=OTHER
            )
            if "c.1" in applied[0].collected:
                break
        else:
            raise AssertionError(f"c.1 was not collected in {COLLECT_WRITES_MAX} writes")
        first = h.index + 1

        def compacted(start: int, count_max: int, bytes_max: int) -> Any:
            raise Trimmed(start, first)

        h.storage.events = compacted  # type: ignore[method-assign]
        h.streams.snapshot_installed(h.index)
        del h.clients.send
        app.pump()
        assert app.replica.applied_index == h.index, "the held snapshot was installed"
        kept = app.replica.nodes["c.2"]
        assert kept.state == HELD and kept.live["x"] == 3, "held nodes are read again"
        assert gone.dead and "c.1" not in app.replica.nodes, "a collected node stayed held"
        assert "c.1" not in app.replica.held_set()[0]
    finally:
        app.finish()
