"""agent/nodestore.py's RecordCache: bounded by bytes, oldest dropped first, a re-put counts
as new. Its eviction is O(1) per put (an OrderedDict): a catching-up agent puts every record
it writes, so a cache that cost O(items) per put once full made catch-up quadratic."""

from __future__ import annotations

from superstatic_agent import nodestore
from superstatic_agent.nodestore import CACHE_ITEM_OVERHEAD_BYTES, RecordCache

ABSENT = nodestore._ABSENT  # what get() returns for an item it does not hold

KEY_BYTES = 8


def key(i: int) -> bytes:
    return i.to_bytes(KEY_BYTES, "big")


def test_bounded_by_bytes_oldest_dropped_first() -> None:
    cost = 100 + KEY_BYTES + CACHE_ITEM_OVERHEAD_BYTES
    cache = RecordCache(cost * 3)
    for i in range(10_000):
        cache.put("entries", key(i), i, 100)
        assert cache.bytes() <= cost * 3
    assert len(cache) == 3
    assert [cache.get("entries", key(i)) for i in (9_997, 9_998, 9_999)] == [9_997, 9_998, 9_999]
    assert cache.get("entries", key(9_996)) is ABSENT
    assert cache.get("entries", key(0)) is ABSENT


def test_a_put_again_makes_an_item_the_newest() -> None:
    cost = 10 + KEY_BYTES + CACHE_ITEM_OVERHEAD_BYTES
    cache = RecordCache(cost * 2)
    cache.put("nodes", key(1), "one", 10)
    cache.put("nodes", key(2), "two", 10)
    cache.put("nodes", key(1), "one again", 10)
    cache.put("nodes", key(3), "three", 10)  # drops 2, the oldest
    assert cache.get("nodes", key(1)) == "one again"
    assert cache.get("nodes", key(3)) == "three"
    assert cache.get("nodes", key(2)) is ABSENT
    assert cache.bytes() == cost * 2


def test_an_item_above_the_bound_is_not_kept_and_drops_its_old_copy() -> None:
    cache = RecordCache(1_000)
    cache.put("entries", key(1), "small", 10)
    cache.put("entries", key(1), "big", 2_000)
    assert cache.get("entries", key(1)) is ABSENT
    assert len(cache) == 0 and cache.bytes() == 0
    cache.put("entries", key(2), "x", 10)
    cache.drop("entries", key(2))
    cache.drop("entries", key(2))
    assert len(cache) == 0 and cache.bytes() == 0
