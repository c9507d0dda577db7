"""The library's side of REPLY_MANY (docs/data-model-v2.md 8.11) against agent doubles
(tests/unit/test_connection.py's AgentPeer): every write frame says the connection reads it,
one frame settles many writes on the connection's own socket and on the link to the leader,
a hostile one settles nothing, and an agent that predates it (REPLYs only) still answers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from test_connection import WAIT_S, AgentPeer, PeerLog, RecordingReplica

from superstatic.client.connection import Committed, Connection
from superstatic.protocol import wire

WRITERS = 8


class ReplyManyPeer(AgentPeer):
    """An agent double that holds the REPLYs of flagged writes until told to `flush` them in
    one REPLY_MANY (as an agent answers the writes one Ready applied). Its HELLO says agent
    `agent` following `leader`. It streams no events: writes settle by their answers only."""

    def __init__(self, log: PeerLog, *, agent: str = "t", leader: str = "t") -> None:
        self.agent, self.leader = agent, leader
        self.held: list[list[Any]] = []
        self.identity = b""
        self._holding = False
        super().__init__(log)
        self.withhold_events = True

    def _handle(self, identity: bytes, frame: wire.Frame) -> None:
        if frame.type is wire.FrameType.HELLO and not self.mute:
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
            return
        super()._handle(identity, frame)

    def _propose(self, identity: bytes, frame: wire.Frame) -> None:
        flagged = frame.body.get(wire.REPLY_MANY_FIELD) is True
        self._holding = flagged and frame.body["kind"] == "txn"
        try:
            super()._propose(identity, frame)
        finally:
            self._holding = False

    def _send(self, identity: bytes, frame_type: wire.FrameType, req_id: int, body: Any) -> None:
        if self._holding and frame_type is wire.FrameType.REPLY:
            with self._lock:
                self.held.append([req_id, body])
                self.identity = identity
            return
        super()._send(identity, frame_type, req_id, body)

    def held_count(self) -> int:
        with self._lock:
            return len(self.held)

    def flush(self, extra: Callable[[list[list[Any]]], list[list[Any]]] = list) -> None:
        """Sends the held REPLYs (as `extra` rewrites their list) in one REPLY_MANY."""

        def send(peer: AgentPeer) -> None:
            with self._lock:
                items, self.held = self.held, []
            self._sock.send_multipart(
                [self.identity, wire.encode(wire.FrameType.REPLY_MANY, 0, {"items": extra(items)})]
            )

        self.inject(send)


def start_writers(conn: Connection, count: int) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = []

    def write(i: int) -> None:
        try:
            results.append(conn.submit(b"w%d" % i))
        except BaseException as exc:  # the test reports what each writer got
            results.append(exc)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(count)]
    for worker in workers:
        worker.start()
    return workers, results


def join(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.join(WAIT_S)
    assert not any(worker.is_alive() for worker in workers), "a writer was never answered"


def flagged_writes(peer: AgentPeer) -> list[bool]:
    """The flag of every txn write the peer received (PROPOSE and PROPOSE_MANY frames)."""
    bodies = peer.received(wire.FrameType.PROPOSE) + peer.received(wire.FrameType.PROPOSE_MANY)
    return [
        body.get(wire.REPLY_MANY_FIELD) is True for body in bodies if body.get("kind") != "open"
    ]


@pytest.fixture(autouse=True)
def default_coalescing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)


def test_one_reply_many_settles_every_write_it_answers_and_ignores_strangers() -> None:
    peer = ReplyManyPeer(PeerLog())
    conn = Connection(
        [peer.endpoint], RecordingReplica(), timeout_ms_request=20_000, timeout_ms_close=300
    )
    try:
        workers, results = start_writers(conn, WRITERS)
        peer.wait_for("every write's REPLY held", lambda: peer.held_count() >= WRITERS)

        def with_strangers(items: list[list[Any]]) -> list[list[Any]]:
            # Req ids no write waits for: ignored, as a stray REPLY is.
            stranger = {"index": 99, "outcome": "ok", "error": "", "dup": False}
            return [[wire.REQ_ID_MAX, stranger], *items, [0, stranger]]

        peer.flush(with_strangers)
        join(workers)
        assert all(isinstance(r, Committed) and r.outcome == "ok" for r in results), results
        assert sorted(r.index for r in results) == list(range(1, WRITERS + 1))
        assert flagged_writes(peer) and all(flagged_writes(peer))
    finally:
        conn.close()
        peer.stop()


def test_a_hostile_reply_many_settles_nothing_of_it() -> None:
    """One bad item refuses the whole frame (checked before any item is used): the write it
    names is settled by the next, good frame, with that frame's answer."""
    peer = ReplyManyPeer(PeerLog())
    conn = Connection(
        [peer.endpoint], RecordingReplica(), timeout_ms_request=20_000, timeout_ms_close=300
    )
    try:
        workers, results = start_writers(conn, 1)
        peer.wait_for("the write's REPLY held", lambda: peer.held_count() >= 1)
        with peer._lock:
            req_id = peer.held[0][0]
        lie = {"index": 77, "outcome": "ok", "error": "", "dup": False}

        def send_bad(p: AgentPeer) -> None:
            bad = {"items": [[req_id, lie], ["not a req id", lie]]}
            p._sock.send_multipart([peer.identity, wire.encode(wire.FrameType.REPLY_MANY, 0, bad)])

        peer.inject(send_bad)
        peer.flush()
        join(workers)
        assert len(results) == 1 and isinstance(results[0], Committed), results
        assert results[0].index == 1
    finally:
        conn.close()
        peer.stop()


def test_writes_on_the_link_to_the_leader_settle_from_one_reply_many() -> None:
    """The lean path: the app's own agent follows "t"; its writes go over the link to "t",
    which answers them in one REPLY_MANY."""
    log = PeerLog()
    leader = ReplyManyPeer(log)
    follower = ReplyManyPeer(log, agent="f", leader="t")
    conn = Connection(
        [follower.endpoint, leader.endpoint],
        RecordingReplica(),
        timeout_ms_request=20_000,
        timeout_ms_close=300,
    )
    try:
        leader.wait_for(
            "the link to the leader", lambda: conn._io.link is not None and conn._io.link.ready
        )
        workers, results = start_writers(conn, WRITERS)
        leader.wait_for("every write's REPLY held", lambda: leader.held_count() >= WRITERS)
        leader.flush()
        # Answered by the leader before the own replica applied them: held until it does.
        log_entries = len(log.entries)
        assert log_entries == WRITERS
        follower.withhold_events = False
        follower.inject(lambda peer: peer._stream())
        join(workers)
        assert all(isinstance(r, Committed) and r.outcome == "ok" for r in results), results
        assert sorted(r.index for r in results) == list(range(1, WRITERS + 1))
        assert all(flagged_writes(leader)) and not follower.received(wire.FrameType.PROPOSE)
    finally:
        conn.close()
        follower.stop()
        leader.stop()


def test_an_agent_that_predates_reply_many_answers_with_replies() -> None:
    """The double answers every write with a REPLY whatever the flag says (as an agent that
    ignores the unknown field does): the flagged writes settle as before."""
    peer = AgentPeer(PeerLog())
    conn = Connection(
        [peer.endpoint], RecordingReplica(), timeout_ms_request=20_000, timeout_ms_close=300
    )
    try:
        workers, results = start_writers(conn, WRITERS)
        join(workers)
        assert sorted(r.index for r in results) == list(range(1, WRITERS + 1)), results
        assert flagged_writes(peer) and all(flagged_writes(peer))
    finally:
        conn.close()
        peer.stop()


def test_a_hostile_reply_many_on_the_link_drops_the_link_and_the_writes_go_again() -> None:
    """The leader's REPLY_MANY has a bad item: nothing of it settles, the link is closed, and
    its unanswered writes go again (same seq) through the app's own agent, which answers."""
    log = PeerLog()
    leader = ReplyManyPeer(log)
    follower = ReplyManyPeer(log, agent="f", leader="t")
    conn = Connection(
        [follower.endpoint, leader.endpoint],
        RecordingReplica(),
        timeout_ms_request=20_000,
        timeout_ms_resend=60_000,  # only the link's drop sends them again
        timeout_ms_close=300,
    )
    try:
        leader.wait_for(
            "the link to the leader", lambda: conn._io.link is not None and conn._io.link.ready
        )
        workers, results = start_writers(conn, 2)
        leader.wait_for("both REPLYs held", lambda: leader.held_count() >= 2)
        leader.flush(lambda items: [*items, [1, "not a map"]])
        follower.wait_for("the writes sent again", lambda: follower.held_count() >= 2)
        follower.flush()
        join(workers)
        assert all(isinstance(r, Committed) and r.outcome == "ok" for r in results), results
        assert sorted(r.index for r in results) == [1, 2]  # applied once: the copies are dups
        assert len(log.entries) == 2
    finally:
        conn.close()
        follower.stop()
        leader.stop()
