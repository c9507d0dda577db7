"""Every wait a partial replica's load leaves is settled by the agent's answer (the loadbug).

1. A first read of a root against the agent's real streams. An app asks a root's key before
   the root table exists (answered absent: the agent holds the key, for the table's
   creation), another app creates the table, and the first app, not having applied that yet,
   asks whether the table exists (`Replica._probe_roots`, a LOAD naming "@roots"). Its answer
   named nothing (the agent left the header out of an answer for a dict the subscriber held
   already), so the app waited out its request timeout: "1 object(s) could not be loaded ...
   within 30000 ms" in tests/cluster/test_fidelity_cluster.py, 1 run in 6 to 8 under load
   (docs/agent.md, "Subscriptions"). Here the app's I/O thread is this test's thread: what
   the replica asks for goes to the agent's `Streams` (tests/support/stream_harness.py) as a
   LOAD frame, and every frame the agent sends is fed to the replica through the library's
   own `StreamFeeder`, in order.
2. A key asked of a per-key dict that is collected meanwhile: the agent answers the dict
   absent by its oid, and the key's waiter must find it gone at once (it waited out
   LOAD_WAIT_S_MAX and raised `Unavailable`), and the connection must not ask the key again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import heap_io_fake
from support.heap_inproc import WHOLE_ENTRIES_MAX, partial_session
from support.inproc import InprocCluster
from support.stream_harness import Harness

from superstatic.client.stream import Loaded, StreamFeeder
from superstatic.objects import replica as replica_module
from superstatic.objects.node import PARTIAL, node_of
from superstatic.objects.replica import Replica
from superstatic.objects.values import wire as wire_value
from superstatic.protocol import wire
from superstatic.protocol.errors import Error

SUB = 5
# Writes after the dict's last reference went, at most, before the collection must have run
# (agent/gc.py: when the candidates pass the nodes alive, a handful here).
COLLECT_WRITES_MAX = 50
ME = "me"
OTHER = "other"
# How long this test waits for the replica's thread to ask, or to finish once answered: a
# bound on a hang, never a measure (both happen at once when the code is right).
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

    def serve(self) -> None:
        """Sends the LOAD the replica's thread asked for, then what the agent answers."""
        oids, keys, whole = self.asked.get(timeout=WAIT_S_MAX)
        wire_keys = [(oid, [wire_value(k) for k in ks]) for oid, ks in keys]
        req_id = next(self.req_ids)
        body = wire.load_body(SUB, oids, wire_keys, whole=whole)
        frame = wire.Frame(wire.FrameType.LOAD, req_id, body)
        self.h.streams.on_heap(b"app", wire.parse_heap_request(frame), req_id)
        self.pump()

    def read(self, read: Callable[[], Any]) -> Any:
        """`read` on another thread (it waits for its load), answered from this one."""
        out: list[Any] = []
        thread = threading.Thread(target=lambda: out.append(read()), daemon=True)
        thread.start()
        try:
            self.serve()
            # The answer was installed as it was fed: nothing may still wait for it.
            assert not self.replica._loads, f"unanswered: {list(self.replica._loads)}"
            thread.join(WAIT_S_MAX)
            assert out, "the read was not answered"
            return out[0]
        finally:
            # A wait left unanswered is failed, so the thread ends with the test.
            self.replica.load_failed(list(self.replica._loads), Error("the test ended"))
            thread.join(WAIT_S_MAX)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def test_the_root_table_created_between_a_key_read_and_the_probe_is_found(h: Harness) -> None:
    h.commit([["new", "x", "dict", []]], client=OTHER)  # a cluster without a root table
    app = App(h)
    assert app.read(lambda: app.replica.root_ref("hits")) is None
    h.commit([["new", "@roots", "dict", [["hits", 1]]]], client=OTHER)
    # The probe is asked before the creating event reached the replica; its answer follows
    # that event in the stream.
    roots = app.read(app.replica.roots_node)
    assert roots is not None and roots.oid == "@roots"
    assert app.replica.applied_index == h.index
    assert not app.replica._loads, "no load is left waiting"
    # The key asked first came with the creating event (docs/virtual-heap.md 3.4).
    assert app.replica.root_ref("hits") == 1


def test_a_key_of_a_dict_collected_meanwhile_finds_it_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short, so the test ends soon if the waiter is not settled (it then raises Unavailable).
    monkeypatch.setattr(replica_module, "LOAD_WAIT_S_MAX", 5.0)
    with InprocCluster(tmp_path, gc_threshold=1) as cluster:
        writer = cluster.session()
        big = writer.root("big", dict)
        writer.run(lambda: [big.__setitem__(f"k{i}", i) for i in range(WHOLE_ENTRIES_MAX + 1)])
        # Held: it receives the log only when it loads (the load applies what precedes it).
        app = partial_session(cluster, held=True)
        mine = app.root("big", dict)
        assert mine["k1"] == 1 and node_of(mine).state == PARTIAL
        roots = writer.replica.nodes["@roots"].ref
        writer.run(lambda: roots.__delitem__("big"))
        oid = node_of(mine).oid
        other = writer.root("other", dict)
        for i in range(COLLECT_WRITES_MAX):  # later entries, until one collects the dict
            if oid not in {found for found, _record in cluster.log.snapshot()[1]}:
                break
            other[f"x{i}"] = {"i": i}
        else:
            raise AssertionError(f"{oid} was not collected in {COLLECT_WRITES_MAX} writes")
        with pytest.raises(Error, match="no longer exists"):
            mine["k2"]  # its load applies the collection first, then answers the dict absent
        assert not app.replica._loads


def test_the_keys_of_a_node_answered_absent_are_not_asked_again() -> None:
    heap, io, _replica = heap_io_fake.setup()
    heap.request([], [("d1", ["a", "b"])], False)
    heap_io_fake.turn(heap, io)
    answer = Loaded()
    answer.absent = ["d1"]
    heap.on_loaded(answer)
    assert not heap.asked
    io.resubscribe("a new subscription")
    heap_io_fake.turn(heap, io)
    assert len(io.loads) == 1, "asked again on the new subscription"
