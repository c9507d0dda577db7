"""How the connection wakes its callers and times its requests (docs/data-model-v2.md 8.5, "The
app's cost per write", and 8.15, "The app's wakes"): each caller waits on a lock of its own and
is woken once, by its own answer; callers answered in one I/O turn are woken together at its
end and held for each other, so that their next writes go out in one frame after one wake-up
of the I/O thread; `wait_applied` callers are woken by their own index only; the I/O thread's
deadlines and due attempts live in heaps that forget a request once it is settled.

The Connection under test is the real one (its I/O thread, its socket) against the agent
double of test_connection.py.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_connection import (  # the agent double and its fixtures
    WAIT_S,
    AgentPeer,
    Connection,
    connect,
    connections,
    make_peer,
    peers,
    proposes_of,
)

from superstatic.client import connection as connection_module
from superstatic.client.connection import Committed
from superstatic.client.timers import STALE_ENTRIES_SLACK, TimerHeap
from superstatic.client.waiters import Answer, AnswerTimeout, AppliedWaiters
from superstatic.protocol.errors import Unavailable

__all__ = ["connections", "peers"]  # fixtures, imported for pytest to find

CALLERS = 8


# -- the primitives ------------------------------------------------------------------------


def test_an_answer_wakes_its_own_waiter_and_no_other() -> None:
    first, second = Answer(), Answer()
    got: dict[str, Any] = {}

    def wait(name: str, answer: Answer) -> None:
        try:
            got[name] = answer.wait(WAIT_S)
        except BaseException as exc:  # checked below
            got[name] = exc

    threads = [
        threading.Thread(target=wait, args=("first", first)),
        threading.Thread(target=wait, args=("second", second)),
    ]
    for thread in threads:
        thread.start()
    assert first.set("one") is True
    threads[0].join(WAIT_S)
    assert got == {"first": "one"}
    assert threads[1].is_alive(), "the other caller was woken by an answer not its own"
    second.set(error=Unavailable("no agent", outcome_known=True))
    threads[1].join(WAIT_S)
    assert isinstance(got["second"], Unavailable)
    assert first.set("again") is False, "an answer is set once"
    assert first.wait(0) == "one" and first.done()


def test_an_unanswered_wait_times_out() -> None:
    with pytest.raises(AnswerTimeout):
        Answer().wait(0.01)


def test_applied_waiters_are_released_by_their_own_index_only() -> None:
    waiters = AppliedWaiters()
    five, ten, ten_too = waiters.add(5), waiters.add(10), waiters.add(10)
    assert waiters.wake_upto(4) == 0 and five.locked()
    assert waiters.wake_upto(7) == 1
    assert not five.locked() and ten.locked() and ten_too.locked()
    assert len(waiters) == 2 and waiters.wanted == 10
    waiters.wake_all()
    assert not ten.locked() and not ten_too.locked() and len(waiters) == 0


def test_timer_heap_follows_changes_and_cancels() -> None:
    heap: TimerHeap[str] = TimerHeap()
    heap.set("a", 5.0)
    heap.set("b", 3.0)
    assert heap.earliest() == 3.0
    heap.cancel("b")
    assert heap.earliest() == 5.0  # the cancelled one's entry is dropped, not returned
    heap.set("a", 1.0)
    assert heap.earliest() == 1.0
    heap.set("a", 7.0)  # later than its stale entries: those must not count
    heap.set("c", 6.0)
    assert heap.earliest() == 6.0 and heap.get("a") == 7.0
    assert heap.pop_due(6.5) == ["c"]
    assert heap.pop_due(6.9) == [] and heap.pop_due(7.0) == ["a"]
    assert heap.earliest() is None and len(heap) == 0


def test_timer_heap_stays_bounded_under_churn() -> None:
    heap: TimerHeap[int] = TimerHeap()
    for round_ in range(1_000):
        for key in range(8):
            heap.set(key, float(round_ * 8 + key))  # re-timed: the old entry goes stale
        heap.cancel(round_ % 8)
    assert heap.entries() <= 2 * len(heap) + STALE_ENTRIES_SLACK + 1
    assert heap.earliest() == min(heap.get(k) or 1e18 for k in range(8))


# -- through the connection ----------------------------------------------------------------


def test_concurrent_callers_each_get_the_answer_to_their_own_write(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    writes_per_thread, threads_n = 25, 8
    got: dict[bytes, int] = {}
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(writes_per_thread):
                body = f"{t}:{i}".encode()
                got[body] = conn.submit(body).index
        except BaseException as exc:  # checked below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors, errors
    assert len(got) == writes_per_thread * threads_n
    # Each caller's answer names the log entry that holds its own body.
    for body, index in got.items():
        assert peer.log.entries[index - 1][3] == body, (body, index)


def test_wait_applied_wakes_only_the_callers_whose_index_was_reached(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, replica = connect(connections, [peer.endpoint])
    done: list[int] = []

    def wait(index: int) -> None:
        conn.wait_applied(index, WAIT_S)
        done.append(index)

    threads = [threading.Thread(target=wait, args=(index,)) for index in (2, 4, 4)]
    for thread in threads:
        thread.start()
    peer.wait_for("three waiters", lambda: len(conn._applied_waiters) == 3)
    conn.submit(b"one")
    conn.submit(b"two")
    threads[0].join(WAIT_S)
    assert done == [2]
    assert replica.applied_index == 2 and len(conn._applied_waiters) == 2  # the 4s still wait
    conn.submit(b"three")
    conn.submit(b"four")
    for thread in threads[1:]:
        thread.join(WAIT_S)
    assert sorted(done) == [2, 4, 4] and len(conn._applied_waiters) == 0


def test_a_request_is_timed_while_in_flight_and_forgotten_once_settled(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_resend=300)
    assert conn.submit(b"a").index == 1  # the session is open: the next write goes alone
    peer.swallow_proposes = True
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(conn.submit(b"b")))
    thread.start()
    peer.wait_for("b sent", lambda: len(proposes_of(peer)) >= 2)
    io = conn._io
    with conn._socket_lock:  # the I/O thread's state, read between its turns
        (request,) = io.requests.values()
        resend_at = request.sent_at + conn.timeout_ms_resend / 1000
        assert io.sends.get(request) == resend_at, "sent: due again at the resend timeout"
        assert io.deadlines.get(request) == request.deadline
        assert io.sends.earliest() == resend_at
    peer.swallow_proposes = False  # the resend (same seq) is answered
    thread.join(WAIT_S)
    assert [c.index for c in outcome] == [2]
    with conn._socket_lock:
        assert len(io.sends) == 0 and len(io.deadlines) == 0, "a settled request is not timed"
        assert io.sends.earliest() is None and io.deadlines.earliest() is None
    for i in range(200):  # many settled requests leave a bounded heap behind
        conn.submit(b"x%d" % i)
    with conn._socket_lock:
        assert io.sends.entries() <= STALE_ENTRIES_SLACK + 1
        assert io.deadlines.entries() <= STALE_ENTRIES_SLACK + 1


def test_a_write_due_before_the_session_opens_goes_out_once_an_open_is_answered(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.refuse_opens = "busy"  # the open is refused, retried with backoff
    conn, _replica = connect(connections, [peer.endpoint])
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(conn.submit(b"w")))
    thread.start()
    peer.wait_for("two refused opens", lambda: len(proposes_of(peer, "open")) >= 2)
    assert not proposes_of(peer), "a write went out without a session"
    peer.refuse_opens = None
    thread.join(WAIT_S)
    assert [c.index for c in outcome] == [1]
    session = peer.log.sessions[conn.client_id]
    assert [p["session"] for p in proposes_of(peer)] == [session]


# -- callers answered together -----------------------------------------------------------------


def test_callers_answered_together_send_their_next_writes_in_one_frame_after_one_wake(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hold is never cut short here: the claim is a count (one frame, one wake-up), and a
    # caller the machine's load delays past the real GROUP_HOLD_MS_MAX would split the frame.
    monkeypatch.setattr(connection_module, "GROUP_HOLD_MS_MAX", 600_000)
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    assert conn.submit(b"first").index == 1  # the session is open
    peer.hold_writes = True  # taken, not answered: the test answers them, all in one frame
    start = threading.Barrier(CALLERS)
    got: dict[int, list[Committed]] = {}
    errors: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            start.wait(WAIT_S)
            got[n] = [conn.submit(b"one-%d" % n), conn.submit(b"two-%d" % n)]
        except BaseException as exc:  # checked below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    peer.wait_for("every first write", lambda: len(peer.held_writes) == CALLERS)
    frames_before, wakes_before = len(peer.write_frames), conn.wakes_sent
    peer.release_writes()  # one EVENTS frame answers all of them: one I/O turn settles them
    peer.wait_for("every second write", lambda: len(peer.held_writes) == CALLERS)
    seconds = sorted(seq for _client, seq, _body in peer.held_writes)
    assert peer.write_frames[frames_before:] == [seconds], "the second writes were split"
    assert conn.wakes_sent - wakes_before <= 1, "callers woke the I/O thread one by one"
    peer.release_writes()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors, errors
    assert sorted(got) == list(range(CALLERS))
    indexes = [c.index for pair in got.values() for c in pair]
    assert all(c.outcome == "ok" for pair in got.values() for c in pair)
    assert sorted(indexes) == list(range(2, 2 + 2 * CALLERS)), "an answer went to another caller"
    for n, (one, two) in got.items():
        assert one.index < two.index, n  # each caller's order
        assert peer.log.entries[one.index - 1][3] == b"one-%d" % n
        assert peer.log.entries[two.index - 1][3] == b"two-%d" % n
    assert conn._pending == 0


def test_a_caller_that_does_not_write_again_holds_the_others_only_briefly(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    assert conn.submit(b"first").index == 1
    peer.hold_writes = True
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    second: list[Committed] = []

    def writer(again: bool) -> None:
        try:
            start.wait(WAIT_S)
            conn.submit(b"together")
            if again:
                second.append(conn.submit(b"again"))
        except BaseException as exc:  # checked below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(again,)) for again in (True, False)]
    for thread in threads:
        thread.start()
    peer.wait_for("both writes", lambda: len(peer.held_writes) == 2)
    peer.release_writes()  # both answered in one turn: each expects the other back
    # The lone writer's next write goes out once the hold is over, not when the other returns.
    peer.wait_for("the write after the hold", lambda: len(peer.held_writes) == 1)
    peer.release_writes()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors, errors
    assert [c.outcome for c in second] == ["ok"]
    assert conn._expected == 0 and conn._pending == 0
