"""Per-key dicts on the eviction clock (docs/virtual-heap.md 5.2, objects/eviction.py
`_evict_keys`): the keys a partial app loads of big dicts count in its held bytes and go,
oldest first, past cache_bytes (the agent is told: key DROPs), so touching many keys of big
dicts stays bounded; what the app reads is what a full replica of the same log reads."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import WHOLE_ENTRIES_MAX, partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import eviction
from superstatic.objects.node import PARTIAL, node_of

BUCKETS = 3
ENTRIES = WHOLE_ENTRIES_MAX + 200  # each bucket is held per key
CACHE_BYTES = 8_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def _fill(cluster: InprocCluster) -> Any:
    writer = cluster.session()
    top = writer.root("big", dict)
    for b in range(BUCKETS):

        def fill(b: int = b) -> None:
            top[f"b{b}"] = {f"k{i}": ({"i": i} if i % 10 == 0 else i) for i in range(ENTRIES)}

        writer.run(fill)
    return writer, top


def _plain(value: Any) -> Any:
    return superstatic.plain(value) if isinstance(value, dict) else value


@pytest.mark.parametrize("seed", [1, 2])
def test_model_many_keys_of_big_dicts_under_a_tiny_cache(cluster: InprocCluster, seed: int) -> None:
    rng = random.Random(seed)
    _writer, full = _fill(cluster)
    app = partial_session(cluster, cache_bytes=CACHE_BYTES)
    mine = app.root("big", dict)
    buckets = [mine[f"b{b}"] for b in range(BUCKETS)]  # held by user code all along
    assert all("k1" in bucket for bucket in buckets)
    assert all(node_of(bucket).state == PARTIAL for bucket in buckets)
    most = 0
    drops: list[Any] = []
    for step in range(600):
        b = rng.randrange(BUCKETS)
        key = f"k{rng.randrange(ENTRIES + 20)}"  # some never there
        choice = rng.random()
        if choice < 0.2:
            full[f"b{b}"][key] = rng.randrange(1000)
        elif choice < 0.25:
            full[f"b{b}"].pop(key, None)
        app.sync()
        bucket = buckets[b]
        how = rng.random()
        if how < 0.5:
            got = _plain(bucket.get(key, "absent"))
        elif how < 0.75:
            got = _plain(bucket[key]) if key in bucket else "absent"
        else:
            got = app.run(lambda bucket=bucket, key=key: _plain(bucket.get(key, "absent")))
        expected = _plain(full[f"b{b}"].get(key, "absent"))
        assert got == expected, (step, b, key)
        most = max(most, app.replica.held_bytes)
        drops.extend(app.replica.take_key_drops())
    touched_bytes = (
        len({(oid, k) for oid, ks in drops for k in ks}) * eviction.ELEMENT_BYTES["dict"]
    )
    assert drops, "no key was let go: the cache was not small enough to matter"
    assert touched_bytes > 2 * CACHE_BYTES
    # Bounded: the three buckets' bases, the nodes whose reference bit still spares them
    # and one load's keys above cache_bytes, never the keys touched so far.
    assert most < 2 * CACHE_BYTES, most
    # Every key read again after its eviction answers as the full replica does.
    for b in range(BUCKETS):
        for i in range(0, ENTRIES, 37):
            key = f"k{i}"
            assert _plain(buckets[b].get(key)) == _plain(full[f"b{b}"].get(key))


def test_a_key_let_go_is_known_no_more_and_its_drop_is_owed(cluster: InprocCluster) -> None:
    _writer, full = _fill(cluster)
    app = partial_session(cluster, cache_bytes=1 << 30)
    bucket = app.root("big", dict)["b0"]
    assert [bucket[f"k{i}"] for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert bucket.get("nope") is None
    node = node_of(bucket)
    live = node.live
    before = app.replica.held_bytes
    # Two keys' worth beyond the key known absent (every such key goes first, and counts:
    # eviction.ABSENT_KEY_BYTES).
    freed = 2 * eviction.ELEMENT_BYTES["dict"] + eviction.ABSENT_KEY_BYTES
    with app.replica.lock:
        eviction._evict_keys(app.replica, node, before - freed)
    assert [k for k in dict.keys(live)] == ["k3", "k4", "k5"]  # the oldest two went
    assert "nope" not in live.absent
    assert app.replica.held_bytes == before - freed
    assert app.replica.take_key_drops() == [(node.oid, ["nope", "k1", "k2"])]
    full["b0"]["k1"] = "changed"
    app.sync()  # the event is skipped: k1 is not held any more
    assert not live.known("k1")
    assert bucket["k1"] == "changed"  # loaded again, current
    assert app.replica.stats.evictions == 2
