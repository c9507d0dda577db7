"""Review 21: a write answered by its stream event, when the stream jumps past the event.

The connection subscribes with "answers": the agent sends no REPLY for a write of ours that
applies `ok` while our stream is to carry its event. A stream behind the log may jump instead
(a SNAPSHOT after `lagging`, a held snapshot): the write's event never comes. The connection
sends such writes again at the jump (same seq), and the exactly-once record answers a copy of
one that applied as a dup, by REPLY (docs/library.md, "One frame back per call").

Against `AgentPeer` (tests/unit/test_connection.py), a real ZeroMQ agent double: its lost
REPLY and withheld events stand for the agent's "answers" rule, its SNAPSHOT for the jump. The
resend timer is far beyond the request's deadline: only the jump can make the write go again.
The same failure against real agents (a held snapshot, `lagging`):
tests/cluster/test_review21_answers.py.
"""

from __future__ import annotations

import threading
from typing import Any

from test_connection import (  # the agent double and its fixtures
    WAIT_S,
    AgentPeer,
    connect,
    connections,
    make_peer,
    peers,
    proposes_of,
)

from superstatic.client.connection import Committed, Connection
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable

__all__ = ["connections", "peers"]  # fixtures, imported for pytest to find

TIMEOUT_MS_RESEND = 600_000
TIMEOUT_MS_REQUEST = 10_000


def _write_unanswered(conn: Connection, peer: AgentPeer) -> tuple[threading.Thread, list[Any]]:
    """Writes "b" on another thread; the peer applies it at index 2 and sends neither its REPLY
    nor its event (as an agent does for an "answers" stream that is behind). Returns once it
    applied. The write before it is done at the peer too (its REPLY may follow the event that
    answered it: the lost REPLY must be b's)."""
    peer.inject(lambda p: None)  # the peer's thread finished what came before
    peer.drop_replies = 1
    peer.withhold_events = True
    out: list[Any] = []

    def write() -> None:
        try:
            out.append(conn.submit(b"b"))
        except Unavailable as exc:
            out.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    peer.wait_for("b applied", lambda: len(peer.log.entries) == 2)
    return thread, out


def _snapshot_at(index: int) -> Any:
    """A call for the peer's thread: the subscription gets a SNAPSHOT at `index` (nothing
    before it is sent as events) and the stream goes on after it."""

    def jump(p: AgentPeer) -> None:
        identity, sub_req = p.subscription()
        body = {"index": index, "part": 0, "last": True, "fmt": 2, "items": []}
        p._send(identity, wire.FrameType.SNAPSHOT, sub_req, body)
        p._subs[identity] = (sub_req, index)
        p.withhold_events = False

    return jump


def test_a_write_whose_event_a_snapshot_skips_is_sent_again_and_answered(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, replica = connect(
        connections,
        [peer.endpoint],
        timeout_ms_resend=TIMEOUT_MS_RESEND,
        timeout_ms_request=TIMEOUT_MS_REQUEST,
    )
    assert conn.submit(b"a").index == 1
    conn.wait_applied(1, WAIT_S)
    thread, out = _write_unanswered(conn, peer)
    peer.inject(_snapshot_at(2))  # the replica jumps from 1 to 2: b's event is not sent
    thread.join(WAIT_S + TIMEOUT_MS_REQUEST / 1000)
    (answer,) = out
    # Before the fix: Unavailable, outcome unknown, at the deadline (or the resend's dup).
    assert isinstance(answer, Committed), answer
    assert (answer.index, answer.outcome, answer.dup) == (2, "ok", True)
    assert replica.snapshots == [0, 2] and conn.resent_after_jumps == 1
    b_attempts = [p["seq"] for p in proposes_of(peer) if p["body"] == b"b"]
    assert len(b_attempts) == 2 and len(set(b_attempts)) == 1  # sent again, same seq
    assert len(peer.log.entries) == 2  # applied once


def test_a_snapshot_that_does_not_move_the_replica_sends_nothing_again(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """Nothing was skipped (a new subscription's snapshot at our own index): the write waits
    for its event, which answers it; it is not sent again."""
    peer = make_peer(peers)
    conn, replica = connect(
        connections,
        [peer.endpoint],
        timeout_ms_resend=TIMEOUT_MS_RESEND,
        timeout_ms_request=TIMEOUT_MS_REQUEST,
    )
    conn.submit(b"a")
    conn.wait_applied(1, WAIT_S)
    thread, out = _write_unanswered(conn, peer)
    peer.inject(_snapshot_at(1))  # then b's event follows it, as the stream goes on
    thread.join(WAIT_S + TIMEOUT_MS_REQUEST / 1000)
    (answer,) = out
    assert isinstance(answer, Committed), answer
    assert (answer.index, answer.outcome, answer.dup) == (2, "ok", False)  # from its event
    assert replica.snapshots == [0, 1] and conn.resent_after_jumps == 0
    assert [p["body"] for p in proposes_of(peer)] == [b"a", b"b"]
