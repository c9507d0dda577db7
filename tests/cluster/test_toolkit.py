"""The HA-server toolkit against real agents and real app processes (docs/toolkit.md).

The agents run with a short session ttl (TTL_MS), so a killed holder's liveness, and with it
its claimed jobs and held locks, lapses in seconds. Time bounds below are generous liveness
bounds, never performance assertions.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TESTS_DIR = Path(__file__).resolve().parents[1]
TTL_MS = 3_000
# Liveness bound for anything that waits on a ttl (several ttls, on a loaded 2-core machine).
TIMEOUT_S = 60.0


@pytest.fixture
def toolkit_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(
        tmp_path / "agents", size=3, agent_args=["--session-ttl-ms", str(TTL_MS)]
    ) as c:
        c.start()
        c.leader()
        yield c


@pytest.fixture
def app(toolkit_cluster: LocalCluster) -> Iterator[list[str]]:
    endpoints = toolkit_cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        yield endpoints
    finally:
        superstatic.close()


class Worker:
    """A support.toolkit_app process; stopped by PID at the end of the test."""

    def __init__(self, endpoints: list[str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.toolkit_app", ",".join(endpoints), *args],
            cwd=TESTS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.stop()
            raise AssertionError(f"no output within {timeout_s} s: {self.stderr()}")
        text = self.proc.stdout.readline()
        if not text:
            raise AssertionError(f"worker ended: {self.stderr()}")
        return json.loads(text)  # type: ignore[no-any-return]

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def finish(self) -> None:
        """Closes stdin (a holder lets go) and waits for a clean exit."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(TIMEOUT_S) == 0, self.stderr()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def start(workers: list[Worker], endpoints: list[str], *args: str) -> Worker:
    worker = Worker(endpoints, *args)
    workers.append(worker)
    return worker


# ---------------------------------------------------------------------------------- queues


def test_job_of_a_killed_holder_is_delivered_again(app: list[str], workers: list[Worker]) -> None:
    q = superstatic.Queue("t.redeliver")
    first = q.put({"order": 1})
    # A long lease: only the holder's death (its liveness lapsing) can free the job.
    holder = start(workers, app, "hold", "t.redeliver", "600")
    held = holder.line()
    assert held == {"id": first, "value": {"order": 1}, "deliveries": 1}
    assert q.get(timeout=0) is None, "claimed by a live process: not deliverable"
    holder.kill9()
    job = q.get(timeout=TIMEOUT_S)
    assert job is not None, "not delivered again after its holder was killed"
    assert (job.id, job.value, job.deliveries) == (first, {"order": 1}, 2)
    job.ack()
    assert q.stats() == {"ready": 0, "delayed": 0, "claimed": 0}


def test_expired_lease_is_delivered_again_and_the_late_ack_is_refused(
    app: list[str], workers: list[Worker]
) -> None:
    q = superstatic.Queue("t.lease")
    q.put("slow")
    job = q.get(timeout=TIMEOUT_S, lease_s=1.0)  # this process stays alive; the lease runs out
    assert job is not None and job.deliveries == 1
    other = start(workers, app, "consume", "t.lease", "1", "30")
    taken = other.line()
    assert taken == {"id": job.id, "value": "slow", "deliveries": 2}
    other.finish()
    marker = superstatic.root("t.lease.effects", dict)
    with pytest.raises(superstatic.LeaseLost), superstatic.transaction():
        marker["applied"] = True  # must not commit: the ack inside the block fails
        job.ack()
    superstatic.sync()
    assert "applied" not in marker
    assert len(q) == 0


def test_ack_commits_atomically_with_the_state_change(app: list[str]) -> None:
    q = superstatic.Queue("t.atomic")
    for i in range(3):
        q.put(i, key=f"req-{i}")
    assert q.put(0, key="req-0") is not None and len(q) == 3, "a repeated key puts nothing"
    ledger = superstatic.root("t.atomic.ledger", dict)

    @superstatic.transaction()
    def apply(job: superstatic.Job) -> None:
        ledger[job.value] = ledger.get(job.value, 0) + 1
        job.ack()

    for _ in range(3):
        job = q.get(timeout=TIMEOUT_S)
        assert job is not None
        apply(job)
        with pytest.raises(superstatic.LeaseLost):
            apply(job)  # a second application is refused whole
    assert dict(ledger) == {0: 1, 1: 1, 2: 1}
    assert q.get(timeout=0) is None and len(q) == 0


def test_nack_delay_and_dead_letters(app: list[str]) -> None:
    q = superstatic.Queue("t.dlq", max_deliveries=2)
    q.put("poison")
    first = q.get(timeout=TIMEOUT_S)
    assert first is not None
    first.nack(delay_s=1.0)
    assert q.stats()["delayed"] == 1
    again = q.get(timeout=TIMEOUT_S)  # waits for log time to pass the delay (ticks)
    assert again is not None and again.deliveries == 2
    again.nack()
    assert q.get(timeout=0.5) is None, "delivered max_deliveries times: dead-lettered"
    dead = q.dead_letters.get(timeout=TIMEOUT_S)
    assert dead is not None and dead.value == "poison" and dead.deliveries == 3
    dead.ack()
    assert len(q) == 0 and len(q.dead_letters) == 0


def test_maxsize_refuses_puts_naming_the_limit(app: list[str]) -> None:
    q = superstatic.Queue("t.full", maxsize=2)
    q.put(1)
    q.put(2)
    with pytest.raises(superstatic.QueueFull, match="maxsize=2"):
        q.put(3)
    job = q.get(timeout=TIMEOUT_S)
    assert job is not None
    job.ack()
    q.put(3)


def test_blocking_get_wakes_for_a_put_from_another_process(
    app: list[str], workers: list[Worker]
) -> None:
    q = superstatic.Queue("t.blocking")
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=TIMEOUT_S)))
    waiter.start()
    time.sleep(0.5)  # the get is waiting now (not required for correctness)
    producer = start(workers, app, "put", "t.blocking", "hello")
    producer.line()
    waiter.join(TIMEOUT_S)
    assert got and got[0] is not None and got[0].value == "hello"
    got[0].ack()


# ---------------------------------------------------------------------------------- locks


def test_lock_of_a_killed_holder_is_freed_and_tokens_increase(
    app: list[str], workers: list[Worker]
) -> None:
    lock = superstatic.Lock("t.lock")
    first = start(workers, app, "lock", "t.lock", "-1")
    token1 = first.line()["token"]
    assert lock.acquire(timeout=0.5) is None, "held by a live process"
    first.kill9()  # never releases: its liveness lapses after a ttl
    token2 = lock.acquire(timeout=TIMEOUT_S)
    assert token2 is not None and token2 > token1
    assert lock.token == token2
    lock.release()
    second = start(workers, app, "lock", "t.lock", "0")
    token3 = second.line()["token"]
    assert token3 > token2
    assert second.line()["released"] == token3
    second.finish()
    with lock as token4:
        assert token4 > token3


def test_lock_waiters_are_served_in_arrival_order(app: list[str], workers: list[Worker]) -> None:
    lock = superstatic.Lock("t.fifo")
    assert lock.acquire(timeout=TIMEOUT_S) is not None
    waiters = []
    for _ in range(3):
        waiters.append(start(workers, app, "lock", "t.fifo", "0.2"))
        # Each is queued before the next starts (a process's queueing is one commit).
        deadline = time.monotonic() + TIMEOUT_S
        queued = len(waiters)
        while lock.waiting() < queued:
            assert time.monotonic() < deadline, "a waiter never queued"
            time.sleep(0.05)
    lock.release()
    tokens = [w.line()["token"] for w in waiters]
    assert tokens == sorted(tokens), "not served in arrival order"
    for w in waiters:
        w.line()  # released
        w.finish()


def test_rlock_is_reentrant_with_one_token(app: list[str]) -> None:
    lock = superstatic.RLock("t.rlock")
    with lock as outer, lock as inner:
        assert outer == inner == lock.token
    assert lock.token is None and not lock.locked()


# ---------------------------------------------------------------------------------- waiting


def test_wait_for_wakes_on_the_event_that_touches_what_it_read(
    app: list[str], workers: list[Worker]
) -> None:
    flags = superstatic.root("t.flags", dict)
    noise = superstatic.root("t.noise", dict)
    evaluations = [0]
    returned: list[Any] = []

    def ready() -> Any:
        evaluations[0] += 1
        return flags.get("go")

    thread = threading.Thread(
        target=lambda: returned.append(superstatic.wait_for(ready, timeout=TIMEOUT_S))
    )
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while evaluations[0] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for i in range(20):
        noise[i] = i  # commits that do not touch what the predicate read
    superstatic.sync()
    assert evaluations[0] == 1, "re-evaluated for writes it did not read"
    setter = start(workers, app, "set", "t.flags", "go", "7")
    setter.line()
    thread.join(TIMEOUT_S)
    assert returned == [7]
    assert evaluations[0] == 2, "woken by exactly the one event that set the flag"


def test_wait_for_times_out_with_the_falsy_value(app: list[str]) -> None:
    flags = superstatic.root("t.never", dict)
    assert superstatic.wait_for(lambda: flags.get("x"), timeout=0.3) is None


def test_watch_calls_back_on_a_library_thread(app: list[str], workers: list[Worker]) -> None:
    config = superstatic.root("t.watched", dict)
    seen: list[tuple[Any, str]] = []
    done = threading.Event()

    def callback(obj: Any) -> None:
        seen.append((obj.get("k"), threading.current_thread().name))
        if obj.get("k") == 2:
            done.set()

    with superstatic.watch(config, callback):
        start(workers, app, "set", "t.watched", "k", "1").line()
        start(workers, app, "set", "t.watched", "k", "2").line()
        assert done.wait(TIMEOUT_S)
    assert seen[-1][0] == 2
    assert all(name == "superstatic-toolkit-callbacks" for _value, name in seen)


# ---------------------------------------------------------------------------------- results


def test_results_are_collected_elsewhere_and_expire(app: list[str], workers: list[Worker]) -> None:
    # Collected by other processes: the default ttl (300 s). With a 2 s one this raced the
    # reader's start: its own session's first entry, committed once the new process had
    # connected (seconds at load 15-20), moved log time past the expiry, and the reader found
    # nothing (1 failure in a loop of tests/cluster at load ~18).
    results = superstatic.Results("t.results")
    results.put("req-1", {"total": 42})
    reader = start(workers, app, "result", "t.results", "req-1", "30")
    assert reader.line() == {"value": {"total": 42}}
    waiting = start(workers, app, "result", "t.results", "req-2", "30")
    time.sleep(0.5)
    results.put("req-2", "later")
    assert waiting.line() == {"value": "later"}
    # Nobody collects these: expired by log time (ticks move it on an idle cluster).
    expiring = superstatic.Results("t.expiring", ttl_s=2.0)
    expiring.put("req-1", {"total": 42})
    deadline = time.monotonic() + TIMEOUT_S
    while "req-1" in expiring:
        assert time.monotonic() < deadline, "result never expired"
        superstatic.Queue("t.tick").put("tick")  # any entry moves log time on
        time.sleep(0.2)
    assert expiring.get("req-1", timeout=0, default="gone") == "gone"
    expiring.put("req-3", 3)  # cleans the expired ones of its shard
    assert expiring.get("req-3", timeout=0) == 3


# ---------------------------------------------------------------------------------- events


def test_cluster_events_report_a_new_leader(toolkit_cluster: LocalCluster, app: list[str]) -> None:
    with superstatic.cluster_events() as events:
        time.sleep(0.5)  # the first status is the baseline
        old = toolkit_cluster.leader()
        toolkit_cluster.kill(old)
        superstatic.root("t.events", dict)["after"] = 1  # commits through the new leader
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert event is not None, "no leader_changed event"
            if event.kind == "leader_changed":
                assert event.leader != old
                break


def test_a_paused_process_learns_its_liveness_lapsed_and_loses_its_lock(
    app: list[str], workers: list[Worker]
) -> None:
    lock = superstatic.Lock("t.lapse")
    paused = start(workers, app, "lapse", "t.lapse")
    token1 = paused.line()["token"]
    os.kill(paused.proc.pid, signal.SIGSTOP)  # cut off (GC pause, swapped out) past the ttl
    try:
        token2 = lock.acquire(timeout=TIMEOUT_S)
        assert token2 is not None and token2 > token1
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)
    # Two sources raise it, whichever comes first: the toolkit's liveness record lapsed, or the
    # agent answered "session_expired" for the connection's session (issue 9's hook).
    event = paused.line()
    assert event["event"] == "session_expired", event
    assert event["detail"] == paused_detail() or event["detail"].startswith(
        "the agent expired this connection's session: session "
    ), event
    lock.release()
    assert paused.proc.stdin is not None
    paused.proc.stdin.close()
    line = paused.line()
    while line.get("event") == "session_expired":  # the other source's, if it came second
        line = paused.line()
    assert line == {"released": False}, "its release must say it lost the lock"
    assert paused.proc.wait(TIMEOUT_S) == 0


def paused_detail() -> str:
    from superstatic.toolkit import runtime

    return runtime.LAPSED_DETAIL
