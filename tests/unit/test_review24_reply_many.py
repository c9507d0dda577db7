"""Review 24 of REPLY_MANY (docs/data-model-v2.md 8.11), the library's side, against the agent
doubles of tests/unit/test_client_reply_many.py: an item settles a write exactly as a REPLY
with the same body would (every outcome kind, malformed bodies, the session_expired path),
and an item naming the req id of a request of another kind (a READ_INDEX in flight) does not
answer it."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_client_reply_many import ReplyManyPeer, join, start_writers
from test_connection import WAIT_S, AgentPeer, PeerLog, RecordingReplica

from superstatic.client.connection import Committed, Connection
from superstatic.protocol import wire

STRANGER = {"index": 99, "outcome": "ok", "error": "", "dup": False}

# REPLY bodies: the outcomes the state machine gives, any other text, and malformed fields.
_BODIES = st.fixed_dictionaries(
    {
        "index": st.one_of(
            st.integers(min_value=0, max_value=2**40), st.none(), st.text(max_size=3), st.just(True)
        ),
        "outcome": st.one_of(
            st.sampled_from(["ok", "dup", "error", "conflict", "session_expired"]),
            st.text(max_size=8),
            st.none(),
        ),
    },
    optional={
        "error": st.one_of(st.text(max_size=20), st.none(), st.integers()),
        "dup": st.one_of(st.booleans(), st.integers(min_value=0, max_value=2), st.text(max_size=2)),
    },
)


def _expires(body: dict[str, Any]) -> bool:
    """Whether the library takes `body` as a well-formed session_expired answer."""
    index = body["index"]
    return (
        isinstance(index, int)
        and not isinstance(index, bool)
        and body["outcome"] == "session_expired"
    )


def _answer_one_write(
    conn: Connection, peer: ReplyManyPeer, body: dict[str, Any], many: bool
) -> Any:
    """One write, its REPLY held by the peer and then answered with `body`: as a REPLY, or as
    an item of a REPLY_MANY that also carries strangers. A session_expired answer makes the
    library open a new session and send the write again: that resend is answered as the peer
    answers it (a dup of the applied entry, outcome ok)."""
    workers, results = start_writers(conn, 1)
    peer.wait_for("the write's REPLY held", lambda: peer.held_count() >= 1)
    with peer._lock:
        ((req_id, _ok),) = peer.held
        peer.held = []

    def send(p: AgentPeer) -> None:
        if many:
            items = [[wire.REQ_ID_MAX, STRANGER], [req_id, body], [0, STRANGER]]
            data = wire.encode(wire.FrameType.REPLY_MANY, 0, {"items": items})
        else:
            data = wire.encode(wire.FrameType.REPLY, req_id, body)
        p._sock.send_multipart([peer.identity, data])

    peer.inject(send)
    if _expires(body):
        peer.wait_for("the write sent again", lambda: peer.held_count() >= 1)
        peer.flush()
    join(workers)
    (result,) = results
    return result


def _shape(result: Any) -> tuple[Any, ...]:
    if isinstance(result, Committed):
        return ("committed", result.index, result.outcome, result.error, result.dup)
    return (type(result).__name__, str(result), getattr(result, "outcome_known", None))


def test_an_item_settles_a_write_as_its_reply_would() -> None:
    peer = ReplyManyPeer(PeerLog())
    conn = Connection(
        [peer.endpoint], RecordingReplica(), timeout_ms_request=20_000, timeout_ms_close=300
    )
    try:
        # Connected with a session open, so that only an expiry opens one in the examples.
        _answer_one_write(
            conn, peer, {"index": 1, "outcome": "ok", "error": "", "dup": False}, False
        )

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(body=_BODIES)
        def check(body: dict[str, Any]) -> None:
            opened = conn._io.sessions_opened
            as_reply = _shape(_answer_one_write(conn, peer, body, many=False))
            opened_by_reply = conn._io.sessions_opened - opened
            opened = conn._io.sessions_opened
            as_item = _shape(_answer_one_write(conn, peer, body, many=True))
            opened_by_item = conn._io.sessions_opened - opened
            if _expires(body):
                # Each resend is a dup of its own (different) entry: its index differs.
                assert as_reply[0] == as_item[0] == "committed", (as_reply, as_item)
                assert as_reply[2:] == as_item[2:], (as_reply, as_item)
            else:
                assert as_reply == as_item
            assert opened_by_reply == opened_by_item == int(_expires(body))

        check()
    finally:
        conn.close()
        peer.stop()


def test_an_item_for_a_read_index_in_flight_does_not_answer_it() -> None:
    """Req ids are per connection: a READ_INDEX waits under one too. An item naming it (a
    REPLY_MANY carries write answers only) leaves it waiting for its own REPLY."""
    peer = ReplyManyPeer(PeerLog())
    conn = Connection(
        [peer.endpoint], RecordingReplica(), timeout_ms_request=20_000, timeout_ms_close=300
    )
    try:
        workers, _results = start_writers(conn, 1)  # connected, a session open
        peer.wait_for("the write's REPLY held", lambda: peer.held_count() >= 1)
        peer.flush()
        join(workers)
        peer.mute = True
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(conn.read_index()))
        reader.start()
        peer.wait_for("the READ_INDEX", lambda: bool(peer.received(wire.FrameType.READ_INDEX)))
        with peer._lock:
            (read_req,) = [f.req_id for f in peer.frames if f.type is wire.FrameType.READ_INDEX]

        def send(p: AgentPeer) -> None:
            items = [[read_req, {"index": 77, "outcome": "ok", "error": "", "dup": False}]]
            frame = wire.encode(wire.FrameType.REPLY_MANY, 0, {"items": items * 2})
            p._sock.send_multipart([peer.identity, frame])
            reply = wire.encode(wire.FrameType.REPLY, read_req, {"index": 1})
            p._sock.send_multipart([peer.identity, reply])

        peer.inject(send)
        reader.join(WAIT_S)
        assert not reader.is_alive()
        assert got == [1]
    finally:
        conn.close()
        peer.stop()
