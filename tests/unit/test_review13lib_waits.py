"""Hostile review of the virtual heap's library half (issue 13): waits on a dict held per key
(docs/virtual-heap.md 4.3, section 10) while the eviction clock lets its keys go."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import WHOLE_ENTRIES_MAX, partial_session
from support.inproc import InprocCluster

from superstatic.objects import eviction
from superstatic.objects.node import PARTIAL, node_of
from superstatic.toolkit.runtime import Runtime, runtime


def _sweep(rt: Runtime) -> None:
    replica = rt.session.replica
    with replica.lock:
        eviction.sweep(replica)


def test_a_wait_on_one_key_of_a_per_key_dict_wakes_after_the_clock_passed(
    tmp_path: Path,
) -> None:
    with InprocCluster(tmp_path) as cluster:
        writer = cluster.session()
        top = writer.root("top", dict)
        top["big"] = {f"k{i}": i for i in range(WHOLE_ENTRIES_MAX + 10)}
        rt = runtime(partial_session(cluster, cache_bytes=1))
        try:
            big: Any = rt.session.root("top", dict)["big"]
            with rt.waiter() as waiter:
                value, reads, seen, held = rt.evaluate(lambda: big.get("k3") == "done")
                waiter.watch(reads, seen, held)
                assert value is False and node_of(big).state == PARTIAL
                _sweep(rt)  # the clock passes while the app waits
                top["big"]["k3"] = "done"  # another app makes the predicate true
                assert waiter.changed(), "the wait missed the change of the key it read"
            with rt.waiter() as waiter:
                # The common wait: for a key to appear (Results.get). Known absent, then let go
                # by the clock, its insert would be skipped too.
                value, reads, seen, held = rt.evaluate(lambda: "late" in big)
                waiter.watch(reads, seen, held)
                del held
                assert value is False
                _sweep(rt)
                top["big"]["late"] = 1
                assert waiter.changed(), "the wait missed the insert of the key it read"
            assert not rt.session.replica.key_pins, "the pins go with the waits"
        finally:
            rt.close()


def test_results_get_wakes_for_a_result_put_into_a_per_key_shard(tmp_path: Path) -> None:
    # Past 16 x 256 live results a shard is held per key: the id a get waits for is known
    # absent, and the clock must not let it go (its insert would then never reach the app).
    import threading

    from superstatic.objects.node import node_of
    from superstatic.toolkit import results as _results
    from superstatic.toolkit.results import Results

    with InprocCluster(tmp_path) as cluster:
        writer = runtime(cluster.session())
        rt = runtime(partial_session(cluster, cache_bytes=1))
        try:
            put = Results("r", _rt=writer)
            put.put("first", 0)  # (log time starts with the first entry: expiries count from it)
            with writer.session.transaction():
                for i in range(_results.SHARDS * (WHOLE_ENTRIES_MAX + 10)):
                    put.put(i, i)
            got: list[Any] = []
            get = Results("r", _rt=rt)
            assert get.get(7, timeout=0) == 7
            late = "late"
            shard = get._shard(late)
            # No timeout: a missed insert is a hang (Results.get looks again only when woken),
            # found by the join below; closing the runtime ends the wait.
            waiting = threading.Thread(
                target=lambda: got.append(get.get(late, timeout=None)), daemon=True
            )
            waiting.start()
            try:
                for _ in range(2000):  # until the get waits (its id known absent)
                    if node_of(shard).state == PARTIAL and late in node_of(shard).live.absent:
                        with rt.cond:
                            if rt.waiters:
                                break
                    threading.Event().wait(0.01)
                else:
                    raise AssertionError(f"no wait on a per-key shard: {node_of(shard).state}")
                _sweep(rt)
                put.put(late, "here")
                waiting.join(60)
                assert got == ["here"], "Results.get missed the put it waited for"
            finally:
                rt.close()
                waiting.join(60)
        finally:
            rt.close()
            writer.close()
