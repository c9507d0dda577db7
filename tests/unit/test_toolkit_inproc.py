"""The toolkit's logic over the in-process log (the real state machine, no network): fast checks
of what tests/cluster/test_toolkit.py covers with real processes, plus the corner cases."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.heap_inproc import WHOLE_ENTRIES_MAX, partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import eviction
from superstatic.objects.node import HELD, HOLLOW, PARTIAL, node_of
from superstatic.objects.session import Session
from superstatic.toolkit.errors import LeaseLost, QueueFull
from superstatic.toolkit.lock import Lock
from superstatic.toolkit.queue import Queue, key_shard
from superstatic.toolkit.results import Results
from superstatic.toolkit.runtime import Runtime, runtime
from superstatic.toolkit.waiting import Watch


@pytest.fixture(params=["all", "partial"])
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Runtime, Runtime]]:
    """Two processes' runtimes, on full or on partial replicas (the default of connect(): each
    primitive must hold what it reads and waits on; a tiny cache evicts everything else)."""
    with InprocCluster(tmp_path) as cluster:
        if request.param == "all":
            a, b = runtime(cluster.session()), runtime(cluster.session())
        else:
            a = runtime(partial_session(cluster, cache_bytes=1))
            b = runtime(partial_session(cluster, cache_bytes=1))
        try:
            yield a, b
        finally:
            a.close()
            b.close()


def test_puts_through_two_handles_of_one_process_are_two_items(
    two: tuple[Runtime, Runtime],
) -> None:
    a, _b = two
    first, second = Queue("q", _rt=a), Queue("q", _rt=a)
    ids = {first.put("x"), second.put("y"), first.put("z")}
    assert len(ids) == 3 and len(first) == 3


def test_a_repeated_key_puts_nothing_and_returns_the_first_id(
    two: tuple[Runtime, Runtime],
) -> None:
    a, b = two
    qa, qb = Queue("q", _rt=a), Queue("q", _rt=b)
    first = qa.put({"n": 1}, key=("client", 7))
    assert qb.put({"n": 2}, key=("client", 7)) == first
    job = qb.get(timeout=0)
    assert job is not None and job.value == {"n": 1} and job.key == ("client", 7)
    job.ack()
    assert qa.put({"n": 3}, key=("client", 7)) == first, "remembered after the ack too"
    assert len(qa) == 0
    with pytest.raises(TypeError):
        qa.put(1, key=["a list"])


def test_key_shards_do_not_depend_on_the_process() -> None:
    assert 0 <= key_shard(("a", 1)) < 64
    keys = ["req-1", "req-2", ("a", 1), b"k", 12345]
    code = (
        "from superstatic.toolkit.queue import key_shard; "
        "print([key_shard(k) for k in ['req-1', 'req-2', ('a', 1), b'k', 12345]])"
    )
    for seed in ("1", "2"):  # hash() would differ between these processes; crc32 does not
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == str([key_shard(k) for k in keys]), out.stderr


def test_claims_go_to_one_consumer_and_acks_are_checked(two: tuple[Runtime, Runtime]) -> None:
    a, b = two
    qa, qb = Queue("q", _rt=a), Queue("q", _rt=b)
    qa.put("only")
    job = qa.get(timeout=0)
    assert job is not None and qb.get(timeout=0) is None
    job.nack()
    again = qb.get(timeout=0)
    assert again is not None and again.deliveries == 2
    with pytest.raises(LeaseLost):
        job.ack()  # a previous delivery
    again.ack()
    with pytest.raises(LeaseLost, match="already acked"):
        again.ack()


def test_lease_lost_inside_a_transaction_commits_nothing(two: tuple[Runtime, Runtime]) -> None:
    a, b = two
    qa = Queue("q", _rt=a)
    qa.put("w")
    job = qa.get(timeout=0)
    assert job is not None
    job.nack()
    taken = Queue("q", _rt=b).get(timeout=0)
    assert taken is not None
    state = a.session.root("state", dict)
    with pytest.raises(LeaseLost), a.session.transaction():
        state["x"] = 1
        job.ack()
    assert "x" not in state


def test_full_queue_names_maxsize(two: tuple[Runtime, Runtime]) -> None:
    a, _b = two
    q = Queue("small", maxsize=1, _rt=a)
    q.put(1)
    with pytest.raises(QueueFull, match="maxsize=1") as raised:
        q.put(2)
    assert raised.value.limit_name == "maxsize" and isinstance(raised.value, superstatic.Error)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="NAME_CHARS_MAX"):
        Queue("", _rt=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="LEASE_S_MAX"):
        Queue("q", key_ttl_s=0, _rt=object())  # type: ignore[arg-type]


def test_lock_handles_of_one_process_exclude_each_other(two: tuple[Runtime, Runtime]) -> None:
    a, b = two
    one, other, remote = Lock("L", _rt=a), Lock("L", _rt=a), Lock("L", _rt=b)
    token = one.acquire(timeout=0)
    assert token is not None and one.token == token and one.locked()
    assert other.acquire(timeout=0) is None
    assert remote.acquire(timeout=0) is None
    assert one.waiting() == 0, "timed-out waiters left the queue"
    one.release()
    later = remote.acquire(timeout=0)
    assert later is not None and later > token
    with pytest.raises(RuntimeError):
        one.release()
    remote.release()


def test_results_put_get_and_delete(two: tuple[Runtime, Runtime]) -> None:
    a, b = two
    ra, rb = Results("r", _rt=a), Results("r", _rt=b)
    ra.put("req", {"v": [1, 2]})
    assert rb.get("req", timeout=0) == {"v": [1, 2]}
    assert "req" in rb
    rb.delete("req")
    assert rb.get("req", timeout=0, default=None) is None
    with pytest.raises(superstatic.Timeout):
        rb.get("other", timeout=0)


def test_a_predicate_that_writes_is_refused(two: tuple[Runtime, Runtime]) -> None:
    a, _b = two
    d = a.session.root("d", dict)

    def writes() -> bool:
        d["x"] = 1
        return True

    with pytest.raises(superstatic.Error, match="must only read"):
        a.evaluate(writes)
    value, reads, _seen, held = a.evaluate(lambda: d.get("x"))
    assert value is None and reads is not None and len(reads) == 1
    assert [node_of(ref).oid for ref in held] == list(reads)


def test_blocking_calls_are_refused_inside_a_transaction(two: tuple[Runtime, Runtime]) -> None:
    a, _b = two
    q = Queue("q", _rt=a)
    session: Session = a.session
    with pytest.raises(superstatic.Error, match="inside a"), session.transaction():
        q.get(timeout=0)


def test_the_agents_session_expiry_reaches_cluster_events(tmp_path: Path) -> None:
    import threading

    from superstatic.toolkit.events import ClusterEvents

    with InprocCluster(tmp_path) as cluster:
        session = cluster.session()
        listeners: list[Any] = []
        session.connection.session_expired_listeners = listeners  # type: ignore[attr-defined]
        rt = runtime(session)
        try:
            assert len(listeners) == 1
            got: list[Any] = []
            done = threading.Event()
            events = ClusterEvents(rt, lambda event: (got.append(event), done.set()))
            listeners[0]("session 12 is unknown or expired")
            assert done.wait(10)
            assert got[0].kind == "session_expired" and "session 12" in got[0].detail
            events.close()
        finally:
            rt.close()


def _sweep(rt: Runtime) -> None:
    """Three rounds of the eviction clock (reference bits cleared, then judged)."""
    with rt.replica.lock:
        for _ in range(3):
            eviction.sweep(rt.replica)


def _evaluate_and_watch(rt: Runtime, waiter: Any, predicate: Any) -> tuple[Any, Any]:
    """wait_for's first step; the refs it took die with this frame: only the waiter keeps them."""
    value, reads, seen, held = rt.evaluate(predicate)
    waiter.watch(reads, seen, held)
    return value, reads


def test_a_waiter_holds_what_its_predicate_read_in_a_partial_replica(tmp_path: Path) -> None:
    with InprocCluster(tmp_path) as cluster:
        writer = cluster.session()
        top = writer.root("top", dict)
        for i in range(20):
            top[f"k{i}"] = {"ready": False}
        rt = runtime(partial_session(cluster, cache_bytes=1))
        try:
            mine = rt.session.root("top", dict)
            watched = node_of(mine["k3"])
            with rt.waiter() as waiter:
                value, reads = _evaluate_and_watch(rt, waiter, lambda: mine["k3"]["ready"])
                assert value is False and reads is not None and watched.oid in reads
                _sweep(rt)
                # Held while waited on: an evicted node's changes would never arrive.
                assert watched.state == HELD
                top["k3"]["ready"] = True
                assert waiter.changed()
            del waiter
            _sweep(rt)
            assert watched.state == HOLLOW, "nothing holds it once the wait is over"
        finally:
            rt.close()


def test_a_watch_loads_its_object_whole_in_a_partial_replica(tmp_path: Path) -> None:
    with InprocCluster(tmp_path) as cluster:
        writer = cluster.session()
        top = writer.root("top", dict)
        top["big"] = {f"k{i}": i for i in range(WHOLE_ENTRIES_MAX + 10)}
        rt = runtime(partial_session(cluster, cache_bytes=1))
        try:
            big = rt.session.root("top", dict)["big"]
            assert big.get("k0") == 0
            assert node_of(big).state == PARTIAL  # one key held: others' changes skipped
            seen = threading.Event()
            with Watch(rt, big, lambda _obj: seen.set()):
                assert node_of(big).state == HELD
                _sweep(rt)
                assert node_of(big).state == HELD
                top["big"]["k200"] = -1  # a key this app never read
                assert seen.wait(10), "the watch missed a change of a key it had not read"
        finally:
            rt.close()
