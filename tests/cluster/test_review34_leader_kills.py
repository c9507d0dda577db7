"""Review 34: many callers of one connection through leader changes (docs/data-model-v2.md 8.17).

The app talks to a follower first, so its writes go over the link to the leader; the leader
agent is killed (SIGKILL) and restarted, twice, while eight threads write. The link is dropped
and made again to each new leader, and the connection fails over when its own agent is the one
killed. Every call must return or raise Unavailable saying whether the outcome is known; none
may find the I/O thread not responding (a lost wake-up it never recovered from); afterwards
nothing is left counted in flight (a count that leaked would refuse writes early at
requests_pending_max), and the acknowledged tokens are there exactly once.
"""

from __future__ import annotations

import threading

import pytest

import superstatic
from superstatic.client import connection as connection_module
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

CALLERS = 8
KILLS = 3
WRITES_BETWEEN = 150  # calls that finish between two steps: each step spans live writes
WRITES_MAX = 100_000
TIMEOUT_S_TEST = 180.0


def test_many_callers_through_leader_kills_never_hang_and_leave_nothing_counted(
    cluster: LocalCluster,
) -> None:
    leader = cluster.leader()
    first = next(i for i in cluster.agents if i != leader)
    others = [i for i in cluster.agents if i != first]
    superstatic.connect(cluster.client_endpoints([first, *others]))
    try:
        tokens = superstatic.root("tokens34", list)
        conn = session_default.get().connection
        assert isinstance(conn, Connection)
        acked: list[str] = []
        unknown: list[str] = []
        refused: list[str] = []
        wedged: list[str] = []
        other_errors: list[BaseException] = []
        progress = threading.Semaphore(0)
        stop = threading.Event()

        def writer(n: int) -> None:
            for i in range(WRITES_MAX):
                if stop.is_set():
                    return
                token = f"w{n}-{i}"
                try:
                    tokens.append(token)
                    acked.append(token)
                except superstatic.Unavailable as exc:
                    if "not responding" in str(exc):
                        wedged.append(token)
                    (refused if exc.outcome_known else unknown).append(token)
                except BaseException as exc:  # checked below
                    other_errors.append(exc)
                    return
                progress.release()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(CALLERS)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(WRITES_BETWEEN):
                assert progress.acquire(timeout=TIMEOUT_S_TEST)
            for _ in range(KILLS):
                killed = cluster.leader()
                cluster.kill(killed)
                for _ in range(WRITES_BETWEEN):
                    assert progress.acquire(timeout=TIMEOUT_S_TEST)
                cluster.start_agent(killed)
                cluster.leader()
                for _ in range(WRITES_BETWEEN):
                    assert progress.acquire(timeout=TIMEOUT_S_TEST)
        finally:
            stop.set()
            for thread in threads:
                thread.join(TIMEOUT_S_TEST)
        assert not any(t.is_alive() for t in threads), "a caller hung"
        assert not other_errors, other_errors
        assert not wedged, f"the I/O thread stopped answering: {wedged[:5]}"
        assert conn._pending == 0, "requests left counted in flight"
        assert conn.sent_to_leader > 0  # the link to the leader was used (and dropped)
        print(
            f"acked={len(acked)} unknown={len(unknown)} refused={len(refused)} "
            f"to_leader={conn.sent_to_leader} direct={conn.sent_direct} "
            f"failovers={conn.failovers} turns={conn.io_turns}"
        )
        superstatic.sync()
        stored = list(tokens)
        assert len(stored) == len(set(stored)), "a write applied twice"
        assert set(acked) <= set(stored)
        assert not set(refused) & set(stored)
        assert set(stored) <= set(acked) | set(unknown)
        # Room for a full set of callers again: nothing counted that is not in flight.
        assert conn._pending == 0
        tokens.append("after")
        assert list(tokens)[-1] == "after"
    finally:
        superstatic.close()


LINK_CALLERS = 8
LINK_WRITES_PER_CALLER = 150
HANG_MS = 600_000  # longer than any wait of this test: a lost wake-up hangs, never just delays


def test_no_wake_up_is_lost_on_the_link_to_the_leader(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link's descriptor is edge-triggered as the connection's own (8.17 change 2). With
    the loop's periodic wake (100 ms) and the resend at ten minutes, a frame left unread on
    the link is a call that runs into its deadline (Unavailable), not a slow one."""
    monkeypatch.setattr(connection_module, "LOOP_WAKE_MS_MAX", HANG_MS)
    leader = cluster.leader()
    first = next(i for i in cluster.agents if i != leader)
    others = [i for i in cluster.agents if i != first]
    superstatic.connect(cluster.client_endpoints([first, *others]))
    try:
        conn = session_default.get().connection
        assert isinstance(conn, Connection)
        conn.timeout_ms_resend = HANG_MS  # read at each send: no resend hides a lost frame
        tokens = superstatic.root("tokens34link", list)
        tokens.append("first")  # the session is open, the link to the leader made
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(LINK_WRITES_PER_CALLER):
                    tokens.append(f"l{n}-{i}")
            except BaseException as exc:  # checked below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(LINK_CALLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S_TEST)
        assert not any(t.is_alive() for t in threads), "a caller hung"
        assert not errors, errors[:3]
        assert conn.sent_to_leader > 0  # the writes went over the link
        assert conn._pending == 0
        superstatic.sync()
        assert len(tokens) == 1 + LINK_CALLERS * LINK_WRITES_PER_CALLER
    finally:
        superstatic.close()
