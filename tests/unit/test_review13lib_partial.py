"""Hostile review of the library half of the virtual heap (issue 13): what user code holds of a
dict held per key (docs/virtual-heap.md 4.3) across the switch to held whole."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import WHOLE_ENTRIES_MAX, partial_session
from support.inproc import InprocCluster

from superstatic.objects.node import HELD, PARTIAL, node_of

BIG = WHOLE_ENTRIES_MAX + 10


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        writer = c.session()
        big = writer.root("big", dict)
        writer.run(lambda: [big.__setitem__(f"k{i}", i) for i in range(BIG)])
        yield c


def test_a_bound_lookup_held_across_a_whole_load_sees_later_writes(
    cluster: InprocCluster,
) -> None:
    # A bound `get` (or `__contains__`) taken while the dict is held per key belongs to the
    # PartialDict; a shape read then makes the node held whole in a new container. The bound
    # method must go on answering the node's current contents, not a frozen copy.
    app = partial_session(cluster)
    big = app.root("big", dict)
    get = big.get
    has = big.__contains__
    assert get("k1") == 1 and not has("late")
    assert node_of(big).state == PARTIAL
    assert len(big) == BIG  # loaded whole
    assert node_of(big).state == HELD
    other = cluster.session().root("big", dict)
    other["k1"] = "changed"
    other["late"] = 5
    app.sync()
    assert big["k1"] == "changed"  # what the app has seen through the proxy
    assert get("k1") == "changed"  # never older than that
    assert has("late") and get("late") == 5


def test_a_bound_read_method_held_keeps_its_dict_from_the_clock(cluster: InprocCluster) -> None:
    # `d.get` is cached in the proxy (proxy_base: the cache's reference to the container is
    # the library's own); user code holding that same bound method holds the container too.
    # Hollowed under it, the method would read the old container forever.
    from superstatic.objects import eviction

    writer = cluster.session()
    writer.root("top", dict)["small"] = {"k": 1}
    app = partial_session(cluster)
    top = app.root("top", dict)
    get = top["small"].get  # only the bound method is held, not the proxy
    assert get("k") == 1
    node = node_of(top["small"])
    assert node.state == HELD
    with app.replica.lock:
        node.bit = False
        app.replica.cache_bytes = 1
        eviction.sweep(app.replica)  # must keep it
    writer.root("top", dict)["small"]["k"] = 2
    app.sync()
    assert top["small"]["k"] == 2 and get("k") == 2
    del get
    with app.replica.lock:
        node.bit = False
        eviction.sweep(app.replica)
    assert node.state != HELD  # only the cache holds the method now: the clock may take it


def test_copy_and_fromkeys_of_a_dict_held_per_key_behave_as_on_a_held_one(
    cluster: InprocCluster,
) -> None:
    # Partial is the default for every app: a dict of more than 256 entries is held per key,
    # and `copy.copy(d)` / `d.fromkeys(...)` must not depend on that.
    import copy

    app = partial_session(cluster)
    big = app.root("big", dict)
    assert big.get("k1") == 1 and node_of(big).state == PARTIAL
    shallow = copy.copy(big)
    assert type(shallow) is dict and shallow == {f"k{i}": i for i in range(BIG)}
    assert big.fromkeys(["a"], 0) == {"a": 0} and type(big.fromkeys(["a"])) is dict


def test_a_held_snapshot_refreshes_the_keys_held_of_a_per_key_dict(
    cluster: InprocCluster,
) -> None:
    # A resubscription that found the events since the replica's index compacted gets a held
    # snapshot (docs/virtual-heap.md 4.1): every held key read again at its index. Keys held
    # before must take the snapshot's values, present or absent, not keep what they were.
    app = partial_session(cluster, held=True)  # (entries reach it only when it asks)
    big = app.root("big", dict)
    assert big["k1"] == 1 and "k2" in big and "zz" not in big
    node = node_of(big)
    other = cluster.session().root("big", dict)
    other["k1"] = "new"
    other["zz"] = 5
    del other["k2"]
    connection = app.connection
    with cluster.events_lock:  # the entries in between are the compacted ones
        index = cluster.log.last_index
        connection._next = len(cluster.events)  # type: ignore[attr-defined]
    run = (node.oid, [("k1", "new"), ("zz", 5)], ["k2"])
    app.replica.load_held(index, [], [], [], [run], [node.oid], 0)
    assert big["k1"] == "new" and big["zz"] == 5 and "k2" not in big
    assert node.state == PARTIAL


def test_the_held_estimate_counts_the_stubs_a_held_container_makes(tmp_path: Path) -> None:
    # A held list of N refs makes N hollow stubs (identity must hold for each); cache_bytes
    # bounds the estimate, so the estimate must see them: measured with tracemalloc, 10,000
    # refs held cost 4.6 MB against an estimate of 100 KB (a 1 MiB cache_bytes was 4.6x over).
    # Each stub now counts eviction.STUB_BYTES (docs/virtual-heap.md 5.2).
    n = 5_000
    with InprocCluster(tmp_path) as c:
        writer = c.session()
        top = writer.root("top", dict)
        writer.run(lambda: top.__setitem__("l", [{"v": i} for i in range(n)]))
        app = partial_session(c)
        assert len(app.root("top", dict)["l"]) == n
        gauges = app.replica.heap_gauges()
        assert gauges["stubs"] == n
        assert gauges["held_bytes"] >= n * 100


def test_stubs_over_the_budget_go_with_the_held_node_that_made_them(tmp_path: Path) -> None:
    # Over cache_bytes because of stubs: the sweep hollows the list that references them
    # (when user code does not hold it), and its stubs go with it; the bytes that frees are
    # the stubs' too, so the sweep stops there (the small dicts loaded after the list stay).
    # A list user code holds stays, and so do its stubs; a stub user code holds stays.
    from superstatic.objects import eviction

    n = 5_000

    def loaded(c: InprocCluster) -> tuple[Any, Any, Any, list[Any]]:
        """An app that loaded the list, then 20 small dicts; the clock's bits cleared and
        cache_bytes made CACHE_BYTES_MIN (the list's n stubs are about twice that)."""
        app = partial_session(c)
        mine = app.root("top", dict)
        held = mine["l"]
        assert len(held) == n  # loaded: n stubs
        assert [mine[f"s{i}"]["v"] for i in range(20)] == list(range(20))
        small = [node_of(mine[f"s{i}"]) for i in range(20)]
        with app.replica.lock:
            for node in app.replica.nodes.values():
                node.bit = False
            app.replica.cache_bytes = 1 << 20
        assert app.replica.held_bytes > app.replica.cache_bytes
        return app, mine, held, small

    with InprocCluster(tmp_path) as c:
        writer = c.session()
        top = writer.root("top", dict)
        writer.run(lambda: top.__setitem__("l", [{"v": i} for i in range(n)]))
        writer.run(lambda: [top.__setitem__(f"s{i}", {"v": i}) for i in range(20)])

        app, mine, held, small = loaded(c)
        with app.replica.lock:
            eviction.sweep(app.replica)
        assert all(node.state != HELD for node in small)  # what could go went (stubs now)
        assert node_of(held).state == HELD and app.replica.heap_gauges()["stubs"] == n + 20

        app, mine, held, small = loaded(c)
        one = held[7]  # a stub user code holds
        list_node = node_of(held)
        del held
        with app.replica.lock:
            eviction.sweep(app.replica)
        gauges = app.replica.heap_gauges()
        assert list_node.state != HELD and node_of(one).state != HELD
        assert node_of(mine["l"]) is list_node  # a stub still: the same identity
        assert gauges["stubs"] == 2  # the list (`top` references it) and `one`
        assert gauges["held_bytes"] <= app.replica.cache_bytes
        assert all(node.state == HELD for node in small)  # not needed: not hollowed
        assert one["v"] == 7  # the stub kept is faulted in as ever


def test_a_lookup_with_a_key_no_app_could_store(cluster: InprocCluster) -> None:
    # A held dict answers `d.get(object())` with the default; held per key, the lookup cannot
    # be asked of the agent (the key has no wire form) and must not fail an internal check.
    class Alias:
        """Equal to a stored key (and hashed like it), so found as that key."""

        def __hash__(self) -> int:
            return hash("k3")

        def __eq__(self, other: object) -> bool:
            return other == "k3"

    app = partial_session(cluster)
    big = app.root("big", dict)
    assert big.get(object(), "D") == "D" and object() not in big
    assert big.get(Alias()) == 3 and Alias() in big
    other = partial_session(cluster)
    fresh = other.root("big", dict)  # the same inside a transaction

    def body() -> Any:
        fresh["new"] = 1
        return fresh.get(object(), "D"), fresh.get("new")

    assert fresh.get("k1") == 1 and node_of(fresh).state == PARTIAL
    assert other.run(body) == ("D", 1)
