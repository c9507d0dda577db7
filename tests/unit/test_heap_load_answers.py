"""Every wait a partial replica's load leaves is settled by the agent's answer (the loadbug).

1. A first read of a root against the agent's real streams. An app asks a root's key before
   the root table exists (answered absent: the agent holds the key, for the table's
   creation), another app creates the table, and the first app, not having applied that yet,
   asks whether the table exists (`Replica._probe_roots`, a LOAD naming "@roots"). Its answer
   named nothing (the agent left the header out of an answer for a dict the subscriber held
   already), so the app waited out its request timeout: "1 object(s) could not be loaded ...
   within 30000 ms" in tests/cluster/test_fidelity_cluster.py, 1 run in 6 to 8 under load
   (docs/agent.md, "Subscriptions"). The app and the agent's real streams are
   tests/support/heap_stream_app.py's.
2. A key asked of a per-key dict that is collected meanwhile: the agent answers the dict
   absent by its oid, and the key's waiter must find it gone at once (it waited out
   LOAD_WAIT_S_MAX and raised `Unavailable`), and the connection must not ask the key again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import heap_io_fake
from support.heap_inproc import WHOLE_ENTRIES_MAX, partial_session
from support.heap_stream_app import App
from support.inproc import InprocCluster
from support.stream_harness import Harness

from superstatic.client.stream import Loaded
from superstatic.objects import replica as replica_module
from superstatic.objects.node import PARTIAL, node_of
from superstatic.protocol.errors import Error

# Writes after the dict's last reference went, at most, before the collection must have run
# (agent/gc.py: when the candidates pass the nodes alive, a handful here).
COLLECT_WRITES_MAX = 50
OTHER = "other"


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
