"""Review 29 (branch appwake, docs/data-model-v2.md 8.15 "The app's wakes"): lost wake-ups and
hangs around the deferred wakes of callers answered in one I/O turn and the group hold.

Counts and outcomes only, never timings (a shared, noisy machine): the waits below are bounds
for what must happen, and the switch interval is tiny so that threads interleave at every
bytecode where they can.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_connection import (  # the agent double and its fixtures
    WAIT_S,
    AgentPeer,
    Connection,
    PeerLog,
    connect,
    connections,
    make_peer,
    peers,
)

from superstatic.client.waiters import Answer, AnswerTimeout

__all__ = ["connections", "peers"]  # fixtures, imported for pytest to find


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_an_answer_stored_before_the_waiters_timeout_is_returned_though_woken_later() -> None:
    # The I/O thread stores a caller's answer during its turn and wakes the caller only at the
    # turn's end (a long turn: a large snapshot applied after the store). A caller whose own
    # wait runs out in between must get its answer, not "the I/O thread is not responding".
    answer = Answer()
    got: list[Any] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        try:
            got.append(answer.wait(0.3))
        except AnswerTimeout as exc:
            got.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert waiting.wait(WAIT_S)
        answer.store("result")  # most likely while the waiter is blocked on the lock
        thread.join(WAIT_S)  # its wait ran out: the wake comes later still
        assert not thread.is_alive()
    finally:
        answer.wake()
        thread.join(WAIT_S)
    assert got == ["result"]


def test_many_callers_some_stopping_some_failing_between_writes_never_hang(
    peers: list[AgentPeer], connections: list[Connection], tiny_switch_interval: None
) -> None:
    # Callers answered together are held for each other; here some never write again, some
    # raise in their own code between wake and write, some go on: every call is answered, with
    # its own entry, and nothing stays counted in flight or held.
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    assert conn.submit(b"first").index == 1
    threads_n, writes_max = 12, 30
    got: dict[bytes, int] = {}
    errors: list[BaseException] = []

    def caller(t: int) -> None:
        writes = writes_max if t % 3 else 1 + t % 5  # every third stops early
        for i in range(writes):
            body = b"%d:%d" % (t, i)
            try:
                got[body] = conn.submit(body).index
                if t % 4 == 1 and i % 7 == 3:
                    raise ValueError("the caller's own code failed")
            except ValueError:
                continue  # caught by the app: it writes again later
            except BaseException as exc:  # checked below
                errors.append(exc)
                return

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    assert not errors, errors
    expected = sum(writes_max if t % 3 else 1 + t % 5 for t in range(threads_n))
    assert len(got) == expected
    for body, index in got.items():
        assert peer.log.entries[index - 1][3] == body, (body, index)
    assert conn._pending == 0
    # A lone write afterwards still completes (a hold left behind would only delay it).
    assert peer.log.entries[conn.submit(b"last").index - 1][3] == b"last"
    assert conn._pending == 0


def test_close_while_callers_answered_together_are_held_returns_and_fails_their_next_writes(
    peers: list[AgentPeer], connections: list[Connection], tiny_switch_interval: None
) -> None:
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    assert conn.submit(b"first").index == 1
    threads_n = 6
    start = threading.Barrier(threads_n + 1)
    outcomes: list[str] = []

    def caller(t: int) -> None:
        start.wait(WAIT_S)
        for i in range(1000):
            try:
                conn.submit(b"%d:%d" % (t, i))
            except Exception:  # the connection closed under it: said, not hung
                outcomes.append("closed")
                return
        outcomes.append("done")

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    start.wait(WAIT_S)
    peer.wait_for("some writes", lambda: len(peer.log.entries) > 3 * threads_n)
    closer = threading.Thread(target=conn.close)
    closer.start()
    closer.join(WAIT_S)
    assert not closer.is_alive(), "close() hung"
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a caller hung after close()"
    assert len(outcomes) == threads_n


def test_callers_writing_reading_and_waiting_through_a_failover_each_get_their_own_answers(
    peers: list[AgentPeer], connections: list[Connection], tiny_switch_interval: None
) -> None:
    # Groups woken together and held while the connection fails over and sends again: every
    # write still answered once, with its own entry (the log shows each body once), reads and
    # `wait_applied` in between, and nothing left counted in flight or held.
    log = PeerLog()
    first, second = make_peer(peers, log), make_peer(peers, log)
    conn, _replica = connect(connections, [first.endpoint, second.endpoint])
    assert conn.submit(b"first").index == 1
    threads_n, writes_n = 8, 40
    got: dict[bytes, int] = {}
    errors: list[BaseException] = []

    def caller(t: int) -> None:
        try:
            for i in range(writes_n):
                body = b"%d:%d" % (t, i)
                index = conn.submit(body).index
                got[body] = index
                if i % 5 == t % 5:
                    conn.wait_applied(index, WAIT_S)  # read-your-writes
                    assert conn.read_index() >= index
        except BaseException as exc:  # checked below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    first.wait_for("some writes", lambda: len(log.entries) > 2 * threads_n)
    first.stop()  # the agent dies under the writers: they go on through the second
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    assert not errors, errors
    assert len(got) == threads_n * writes_n
    bodies = [entry[3] for entry in log.entries]
    for body, index in got.items():
        assert log.entries[index - 1][3] == body, (body, index)
        assert bodies.count(body) == 1, body  # sent again, applied once
    assert conn._pending == 0 and conn.endpoint == second.endpoint
