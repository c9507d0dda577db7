"""A caller that finds its answer before the I/O turn that stored it ends (review 29, Low;
docs/data-model-v2.md 8.15 "Review 29" and 8.17 "The apps' events").

Callers answered in one I/O turn are woken at its end, together (`Connection._wake_settled`),
and counted out of the pending count there. A caller that had not reached its wait yet when its
answer was stored finds it at once and may queue its next request while the turn still runs.
It must then be counted once, not twice: its next request is not refused one early at
`requests_pending_max`, and it is not counted among the callers the others are held for
(`GROUP_HOLD_MS_MAX`) though it has queued already.

The order of events is forced, never timed: the caller is stopped before its wait (a patched
`Answer.wait` for that thread only, as a preempted thread would be), and the I/O turn that
stored its answer is stopped in its timers until the caller has queued again (or failed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
)

from superstatic.client import connection as connection_module
from superstatic.client.waiters import Answer

__all__ = ["connections", "peers"]  # fixtures, imported for pytest to find


def _until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


def _answer_early_then_write_again(
    peer: AgentPeer, conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers' writes answered in one frame; caller "early" reaches its wait only once
    that turn stored its answer, and writes again while the turn still runs. Both callers'
    two writes must be answered "ok", and nothing left counted in flight."""
    assert conn.submit(b"first").index == 1  # the session is open
    peer.hold_writes = True  # taken, not answered: released below, both in one EVENTS frame
    early_at_wait = threading.Event()  # the early caller is stopped before its first wait
    let_early_wait = threading.Event()
    early_queued_or_failed = threading.Event()
    early: list[threading.Thread] = []
    results: dict[str, list[Any]] = {"early": [], "other": []}
    errors: list[BaseException] = []

    real_wait = Answer.wait

    def wait(self: Answer, timeout_s: float) -> Any:
        if early and threading.current_thread() is early[0] and not let_early_wait.is_set():
            early_at_wait.set()
            assert let_early_wait.wait(WAIT_S)
        return real_wait(self, timeout_s)

    monkeypatch.setattr(Answer, "wait", wait)

    io = conn._io
    real_timers = io.on_timers
    stopped_once: list[bool] = []

    def on_timers(now: float) -> None:
        # The turn that stored both answers (they wait in `_settled` for the turn's end):
        # let the early caller find its answer and write again before the turn ends.
        if conn._settled and not stopped_once:
            stopped_once.append(True)
            let_early_wait.set()
            deadline = time.monotonic() + WAIT_S
            while not early_queued_or_failed.is_set() and time.monotonic() < deadline:
                time.sleep(0.001)
        real_timers(now)

    io.on_timers = on_timers  # type: ignore[method-assign]

    def caller(name: str) -> None:
        try:
            results[name].append(conn.submit(b"%s-1" % name.encode()))
            if name == "early":
                # Queued (the I/O thread takes it after the turn) or refused: either way the
                # stopped turn may go on (a `_queue` look without the lock is only a hint).
                threading.Thread(
                    target=lambda: (
                        _until("the second write queued", lambda: bool(conn._queue)),
                        early_queued_or_failed.set(),
                    ),
                    daemon=True,
                ).start()
            results[name].append(conn.submit(b"%s-2" % name.encode()))
        except BaseException as exc:  # checked by the tests
            errors.append(exc)
            early_queued_or_failed.set()

    early.append(threading.Thread(target=caller, args=("early",)))
    other = threading.Thread(target=caller, args=("other",))
    early[0].start()
    assert early_at_wait.wait(WAIT_S)  # its first write is out; it is not waiting yet
    other.start()
    peer.wait_for("both first writes", lambda: len(peer.held_writes) == 2)
    peer.hold_writes = False  # the second writes are answered as they come
    peer.release_writes()  # one EVENTS frame answers both: one I/O turn stores both
    early[0].join(WAIT_S)
    other.join(WAIT_S)
    assert not early[0].is_alive() and not other.is_alive(), "a caller hung"
    assert stopped_once, "the two answers were not stored in one turn"
    assert not errors, errors
    assert [c.outcome for c in results["early"]] == ["ok", "ok"]
    assert [c.outcome for c in results["other"]] == ["ok", "ok"]
    # Nothing left counted in flight. (`_expected` may be above 0 here: the second writes may
    # have been answered in one turn, and their callers are held for until the hold ends.)
    assert conn._pending == 0


def test_a_caller_that_took_its_answer_early_is_not_counted_twice_at_the_pending_limit(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two callers, room for two requests: the early caller's second write, queued while the
    # turn that answered its first still runs, finds one other request in flight (the other
    # caller's first, not woken yet) and its own answered one, which must not count.
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint], requests_pending_max=2)
    _answer_early_then_write_again(peer, conn, monkeypatch)


def test_a_caller_that_took_its_answer_early_does_not_hold_the_others(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hold would last ten minutes: the others' next writes must go out because no one they
    # are held for is still due (the early caller queued already), not because the hold ended.
    monkeypatch.setattr(connection_module, "GROUP_HOLD_MS_MAX", 600_000)
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    _answer_early_then_write_again(peer, conn, monkeypatch)
