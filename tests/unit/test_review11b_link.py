"""Review of the lean write path (issue 11 item 4): the link to the leader against agent
doubles (tests/unit/test_connection.py's AgentPeer). The app's own agent is a follower ("f")
naming the leader ("t"); the connection sends its writes over a link to "t"."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_connection import WAIT_S, AgentPeer, PeerLog, RecordingReplica

from superstatic.client import connection as connection_module
from superstatic.client.connection import Committed, Connection
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable


class FollowerPeer(AgentPeer):
    """An agent double whose HELLO says it is agent `agent` and follows `leader`."""

    def __init__(self, log: PeerLog, *, agent: str, leader: str | None) -> None:
        self.agent, self.leader = agent, leader
        super().__init__(log)

    def _handle(self, identity: bytes, frame: wire.Frame) -> None:
        if frame.type is not wire.FrameType.HELLO or self.mute:
            super()._handle(identity, frame)
            return
        with self._lock:
            self.frames.append(frame)
        body = {
            "agent": self.agent,
            "leader": self.leader,
            "session_ttl_ms": self.session_ttl_ms,
            "model": 2,
            "first_index": 1,
        }
        self._send(identity, wire.FrameType.REPLY, frame.req_id, body)


WRITERS = 8


def test_a_leader_that_refuses_propose_many_on_the_link_gets_proposes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leader behind the link predates PROPOSE_MANY (it answers the frame with
    bad_request, as AgentPeer does): nothing of the frame was proposed, so its writes go again
    as PROPOSEs and each applies once, as on the connection's own socket. Before the fix the
    link's frame-level ERROR was dropped (only the own socket looked up `many_frames`): the
    writes were sent again as PROPOSE_MANY at every resend until their deadline and failed as
    outcome-unknown although nothing had been written."""
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)
    log = PeerLog()
    leader = AgentPeer(log)  # HELLO: agent "t", leader "t"
    follower = FollowerPeer(log, agent="f", leader="t")
    conn = Connection(
        [follower.endpoint, leader.endpoint],
        RecordingReplica(),
        timeout_ms_request=6_000,
        timeout_ms_resend=300,
        timeout_ms_close=300,
    )
    try:
        leader.wait_for(
            "the link to the leader", lambda: conn._io.link is not None and conn._io.link.ready
        )
        leader.mute = True  # the session's open (on the link) waits until all writes queued
        results: list[Committed | BaseException] = []

        def write(i: int) -> None:
            try:
                results.append(conn.submit(b"w%d" % i))
            except BaseException as exc:  # the test reports what each writer got
                results.append(exc)

        workers = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for worker in workers:
            worker.start()
        leader.wait_for("writes queued", lambda: conn._pending == WRITERS)
        leader.mute = False
        for worker in workers:
            worker.join(WAIT_S)
        assert leader.received(wire.FrameType.PROPOSE_MANY), "no PROPOSE_MANY on the link"
        assert all(isinstance(r, Committed) and r.outcome == "ok" for r in results), results
        assert len(results) == WRITERS
        bodies: list[Any] = sorted(entry[3] for entry in log.entries)
        assert bodies == sorted(b"w%d" % i for i in range(WRITERS))
    finally:
        conn.close()
        follower.stop()
        leader.stop()


def test_an_own_agent_that_stops_applying_is_left_though_the_leader_takes_the_writes() -> None:
    """The app's own agent ("f") is cut off from the log (it answers PINGs, its stream sends
    nothing), while the leader behind the link takes and answers every write. A write's
    answer is held until the own replica applies it (read-your-writes), so the caller would
    wait for its deadline, and then for the apply that never comes, call after call: with
    writes forwarded, the cut-off agent's refusals made the connection fail over after
    timeout_ms_agent_silence; the link's answers take that away. An answer held that long
    means the own agent does not apply what the leader committed: the connection fails over
    and the write becomes visible through the next agent."""
    log = PeerLog()
    leader = AgentPeer(log)  # HELLO: agent "t", leader "t"
    follower = FollowerPeer(log, agent="f", leader="t")
    conn = Connection(
        [follower.endpoint, leader.endpoint],
        RecordingReplica(),
        timeout_ms_request=8_000,
        timeout_ms_agent_silence=1_000,
        ping_interval_ms=200,
        timeout_ms_close=300,
    )
    try:
        leader.wait_for(
            "the link to the leader", lambda: conn._io.link is not None and conn._io.link.ready
        )
        assert conn.submit(b"before").outcome == "ok"
        follower.withhold_events = True  # cut off from the log: applies nothing more
        committed = conn.submit(b"cut off")
        assert committed.outcome == "ok"
        try:
            conn.wait_applied(committed.index, 5.0)
        except Unavailable as exc:
            pytest.fail(f"the write never became visible: {exc}")
        assert conn.endpoint == leader.endpoint and conn.failovers >= 1
    finally:
        conn.close()
        follower.stop()
        leader.stop()


def hellos(peer: AgentPeer) -> int:
    return len(peer.received(wire.FrameType.HELLO))


# How long the test watches the link's attempts: a window, not a timing claim (with the fix,
# LINK_RETRY_MS is far longer than the whole test, so the count cannot depend on speed).
WATCH_S = 0.5


def test_an_agent_that_says_it_is_not_the_leader_is_not_asked_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our agent still names "t" as the leader, while "t" knows of none (an election, or it
    lost its quorum): its link's HELLO says so. Before the fix the link was closed without
    the retry pause and made again at once to the same endpoint (the only one known to be
    "t"), HELLO after HELLO, a socket and a CURVE handshake each, for as long as the election
    or the outage lasted. Now the endpoint waits LINK_RETRY_MS like any failed link."""
    monkeypatch.setattr(connection_module, "LINK_RETRY_MS", 60_000)
    log = PeerLog()
    stale = FollowerPeer(log, agent="t", leader=None)
    follower = FollowerPeer(log, agent="f", leader="t")
    conn = Connection(
        [follower.endpoint, stale.endpoint],
        RecordingReplica(),
        timeout_ms_request=6_000,
        timeout_ms_close=300,
    )
    try:
        stale.wait_for("a link's HELLO", lambda: hellos(stale) >= 1)
        time.sleep(WATCH_S)
        assert hellos(stale) <= 2, f"{hellos(stale)} links made to an agent that does not lead"
        assert conn.submit(b"forwarded").outcome == "ok"  # through our own agent meanwhile
    finally:
        conn.close()
        follower.stop()
        stale.stop()
