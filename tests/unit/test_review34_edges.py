"""Review 34: no wake-up of the I/O thread is lost to the sockets' edge-triggered descriptors
(docs/data-model-v2.md 8.17, docs/library.md "when a turn reads its sockets").

A turn reads the connection's socket only when its descriptor (ZMQ_FD, edge-triggered) fired
or the last look at ZMQ_EVENTS after a use found frames waiting. Any use of the socket may
consume the edge of frames that arrived (a lone caller's direct send from its own thread, the
turn's own sends), so a missed look leaves a frame unread until something else wakes the
thread. The loop's periodic wake (`LOOP_WAKE_MS_MAX`, 100 ms) hides such a loss as latency;
here it is ten minutes, and the resend and request timeouts are longer than the test's wait,
so a lost wake-up is a caller that never returns (or an error), never a slow call.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_connection import WAIT_S, AgentPeer, Connection, connect, connections, make_peer, peers

from superstatic.client import connection as connection_module

__all__ = ["connections", "peers"]  # fixtures, imported for pytest to find

CALLERS = 8
WRITES_PER_CALLER = 150
LONE_WRITES = 300  # one caller alone: every write goes out directly from its thread
HANG_MS = 600_000  # longer than any wait of this test: a lost wake-up hangs, never just delays


def _writes(conn: Connection, callers: int, writes: int) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = []
    errors: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            for i in range(writes):
                results.append(conn.submit(b"c%d-%d" % (n, i)))
        except BaseException as exc:  # checked by the test
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 3)
    assert not any(t.is_alive() for t in threads), "a caller hung: a lost wake-up"
    return results, errors


def test_no_wake_up_is_lost_to_direct_sends_and_concurrent_callers(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "LOOP_WAKE_MS_MAX", HANG_MS)
    peer = make_peer(peers)
    conn, _replica = connect(
        connections, [peer.endpoint], timeout_ms_request=HANG_MS, timeout_ms_resend=HANG_MS
    )
    # A lone caller: its writes go out from its own thread, whose send (and look at
    # ZMQ_EVENTS) races the agent's answer to the previous one.
    results, errors = _writes(conn, 1, LONE_WRITES)
    assert not errors, errors
    assert conn.sent_direct > 0
    # Callers together: some of their writes go out directly, most through the I/O thread.
    more, errors = _writes(conn, CALLERS, WRITES_PER_CALLER)
    assert not errors, errors
    results += more
    assert len(results) == LONE_WRITES + CALLERS * WRITES_PER_CALLER
    assert all(c.outcome == "ok" for c in results)
    assert len({c.index for c in results}) == len(results)
    assert conn._pending == 0  # nothing left counted in flight
