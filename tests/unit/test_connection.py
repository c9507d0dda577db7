"""superstatic.client.connection against real ZeroMQ peers speaking superstatic/wire.py.

`AgentPeer` is a small agent double for the client protocol only: a ROUTER on 127.0.0.1 that
keeps a log of proposals with exactly-once per (client, seq), streams them to subscribers, and
can be told to misbehave (swallow proposals, drop replies, refuse, go mute, die). The Connection
under test is the real one, with its real I/O thread and socket.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq

from superstatic.client import connection as connection_module
from superstatic.client.connection import AgentRefusedTooLarge, Committed, Connection
from superstatic.client.stream import StreamFeeder, StreamGap
from superstatic.objects.replica import Replica
from superstatic.protocol import codec, ops, wire
from superstatic.protocol.errors import (
    AuthError,
    Error,
    LimitExceeded,
    ProtocolError,
    Unavailable,
)
from superstatic.tools.localcluster import free_port

WAIT_S = 20.0  # generous: a bound for things that should happen, never a timing assertion


class RecordingReplica:
    """A ReplicaSink that records what it was fed (the real Replica is tested elsewhere)."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.snapshots: list[int] = []
        self.events: list[tuple[Any, ...]] = []

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, int, str, Any]]) -> None:
        list(nodes)
        self.snapshots.append(index)
        self.applied_index = index

    def apply_events(self, events: Sequence[tuple[Any, ...]]) -> None:
        for event in events:
            assert event[0] == self.applied_index + 1, (event, self.applied_index)
            self.events.append(event)
            self.applied_index = event[0]


@dataclass
class PeerLog:
    """The log the peers share (as agents of one cluster would)."""

    entries: list[tuple[str, int, str, bytes]] = field(default_factory=list)
    index_of: dict[tuple[str, int], int] = field(default_factory=dict)  # the answer's index
    # Live sessions: client -> id. An "open" takes no log index here (a real agent's would):
    # ids come from their own counter, so the txn indexes of the tests stay 1, 2, ...
    sessions: dict[str, int] = field(default_factory=dict)
    session_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1_000))
    lock: threading.Lock = field(default_factory=threading.Lock)


class AgentPeer:
    def __init__(
        self,
        log: PeerLog | None = None,
        *,
        session_ttl_ms: int = 60_000,
        model: int | None = 2,
        endpoint: str = "tcp://127.0.0.1:0",
    ) -> None:
        self.log = log or PeerLog()
        self.session_ttl_ms = session_ttl_ms
        self.model = model  # what its HELLO reply says (None: nothing, as a model-1 agent)
        # Misbehaviours for txn PROPOSEs (a session's open/keep-alive/close entries are served):
        self.swallow_proposes = False  # record them, never answer them
        self.mute = False  # answer nothing at all (a paused agent)
        self.drop_replies = 0  # apply the next N but lose their REPLY
        self.refusals: list[str] = []  # answer the next ones with these error codes
        self.refuse_always: str | None = None
        self.refuse_opens: str | None = None  # answer session opens with this error code
        self.withhold_events = False  # commit and answer, but stream nothing (a stalled stream)
        # Take writes (PROPOSE and PROPOSE_MANY) without applying or answering them until the
        # test calls `release_writes`; `write_frames` holds the items of each frame taken.
        self.hold_writes = False
        self.held_writes: list[tuple[str, int, bytes]] = []
        self.write_frames: list[list[int]] = []
        self.frames: list[wire.Frame] = []
        self._calls: list[Callable[[], None]] = []  # run by the peer's thread (owns the socket)
        self._subs: dict[bytes, tuple[int, int]] = {}  # identity -> (sub req id, sent upto)
        self._lock = threading.Lock()
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- test side --------------------------------------------------------------------------

    def received(self, frame_type: wire.FrameType) -> list[dict[str, Any]]:
        with self._lock:
            return [f.body for f in self.frames if f.type is frame_type]

    def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not check():
            assert time.monotonic() < deadline, f"peer never saw: {what}"
            time.sleep(0.01)

    def inject(self, call: Callable[[AgentPeer], None]) -> None:
        """Runs `call(self)` in the peer's thread, the only one that may touch its socket."""
        done = threading.Event()

        def run() -> None:
            call(self)
            done.set()

        with self._lock:
            self._calls.append(run)
        assert done.wait(WAIT_S), "the peer thread did not run the injected call"

    def subscription(self) -> tuple[bytes, int]:
        """(identity, SUBSCRIBE req id) of the one current subscriber."""
        ((identity, (sub_req, _upto)),) = list(self._subs.items())
        return identity, sub_req

    def expire_session(self, client: str) -> None:
        """The client's session expires (log time passed its ttl): its records are gone."""
        with self.log.lock:
            del self.log.sessions[client]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self._ctx.term()

    # -- agent side -------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock.poll(20):
                    identity, data = self._sock.recv_multipart()
                    self._handle(identity, wire.decode(data, wire.CLIENT_TO_AGENT))
                with self._lock:
                    calls, self._calls = self._calls, []
                for call in calls:
                    call()
                self._stream()
        finally:
            self._sock.close(linger=0)

    def _send(self, identity: bytes, frame_type: wire.FrameType, req_id: int, body: Any) -> None:
        self._sock.send_multipart([identity, wire.encode(frame_type, req_id, body)])

    def _handle(self, identity: bytes, frame: wire.Frame) -> None:
        with self._lock:
            self.frames.append(frame)
        if self.mute:
            return
        ftype, req_id = frame.type, frame.req_id
        if ftype is wire.FrameType.HELLO:
            body = {"agent": "t", "leader": "t", "session_ttl_ms": self.session_ttl_ms}
            if self.model is not None:
                body["model"] = self.model
            self._send(identity, wire.FrameType.REPLY, req_id, {**body, "first_index": 1})
        elif ftype is wire.FrameType.SUBSCRIBE:
            start = frame.body["from"]
            if start == 0:
                with self.log.lock:
                    start = len(self.log.entries)
                snapshot = {"index": start, "part": 0, "last": True, "fmt": 2, "items": []}
                self._send(identity, wire.FrameType.SNAPSHOT, req_id, snapshot)
            self._subs[identity] = (req_id, start)
        elif ftype is wire.FrameType.UNSUBSCRIBE:
            self._subs.pop(identity, None)
        elif ftype in (wire.FrameType.PING, wire.FrameType.READ_INDEX):
            with self.log.lock:
                index = len(self.log.entries)
            self._send(identity, wire.FrameType.REPLY, req_id, {"index": index})
        elif ftype is wire.FrameType.PROPOSE:
            self._propose(identity, frame)
        elif ftype is wire.FrameType.PROPOSE_MANY and self.hold_writes:
            client = frame.body["client"]
            with self._lock:
                self.write_frames.append([item[1] for item in frame.body["items"]])
                self.held_writes += [(client, item[1], item[3]) for item in frame.body["items"]]
        else:
            # As an agent that predates a frame type answers it (PROPOSE_MANY included): the
            # library falls back to what this double speaks.
            error = wire.error_body(wire.ErrorCode.BAD_REQUEST, "unknown frame type")
            self._send(identity, wire.FrameType.ERROR, req_id, error)

    def _propose(self, identity: bytes, frame: wire.Frame) -> None:
        # The misbehaviours are for writes; the session's own entries are served.
        write = frame.body["kind"] == "txn"
        if self.swallow_proposes and write:
            return
        if self.hold_writes and write:
            with self._lock:
                self.write_frames.append([frame.body["seq"]])
                self.held_writes.append(
                    (frame.body["client"], frame.body["seq"], frame.body["body"])
                )
            return
        code = (self.refusals.pop(0) if self.refusals else self.refuse_always) if write else None
        if frame.body["kind"] == "open" and self.refuse_opens is not None:
            code = self.refuse_opens
        if code is not None:
            error = wire.error_body(wire.ErrorCode(code), f"test refusal LIMIT_X=7 ({code})")
            self._send(identity, wire.FrameType.ERROR, frame.req_id, error)
            return
        body = frame.body
        key = (body["client"], body["seq"])
        kind, session = body["kind"], body.get("session", 0)
        outcome = "ok"
        with self.log.lock:
            live = self.log.sessions.get(key[0])
            creating = kind == "open" and session == 0
            # An expired session's records are gone: its retries are not dups any more.
            dup = key in self.log.index_of and (creating or session == live)
            if dup:
                pass
            elif creating:
                self.log.index_of[key] = self.log.sessions[key[0]] = next(self.log.session_ids)
            elif session != live:
                outcome = "session_expired"  # not applied, not recorded
            elif kind == "open":
                self.log.index_of[key] = live  # a keep-alive
            else:
                self.log.entries.append((key[0], key[1], kind, body["body"]))
                self.log.index_of[key] = len(self.log.entries)
            index = self.log.index_of.get(key, len(self.log.entries))
        self._stream()
        if self.drop_replies > 0 and write:
            self.drop_replies -= 1
            return
        reply = {"index": index, "outcome": outcome, "error": "", "dup": dup}
        self._send(identity, wire.FrameType.REPLY, frame.req_id, reply)

    def release_writes(self) -> None:
        """Applies every held write, in the order taken, and streams them in one EVENTS frame
        (their only answer: "ok" events settle a subscriber's writes)."""

        def apply(peer: AgentPeer) -> None:
            with peer._lock:
                held, peer.held_writes = peer.held_writes, []
            with peer.log.lock:
                for client, seq, body in held:
                    peer.log.entries.append((client, seq, "txn", body))
                    peer.log.index_of[(client, seq)] = len(peer.log.entries)
            peer._stream()

        self.inject(apply)

    def _stream(self) -> None:
        if self.mute or self.withhold_events:
            return
        with self.log.lock:
            entries = list(self.log.entries)
        for identity, (sub, upto) in list(self._subs.items()):
            if upto >= len(entries):
                continue
            events = [
                [i + 1, client, seq, "ok", body, []]
                for i, (client, seq, _kind, body) in enumerate(entries)
                if i + 1 > upto
            ]
            self._send(identity, wire.FrameType.EVENTS, sub, {"ev": events})
            self._subs[identity] = (sub, len(entries))


@pytest.fixture
def peers() -> Iterator[list[AgentPeer]]:
    made: list[AgentPeer] = []
    yield made
    for peer in made:
        peer.stop()


def make_peer(peers: list[AgentPeer], log: PeerLog | None = None, **kw: Any) -> AgentPeer:
    peer = AgentPeer(log, **kw)
    peers.append(peer)
    return peer


@pytest.fixture
def connections() -> Iterator[list[Connection]]:
    made: list[Connection] = []
    yield made
    for conn in made:
        conn.close()


def connect(
    connections: list[Connection], endpoints: list[str], **kw: Any
) -> tuple[Connection, RecordingReplica]:
    replica = RecordingReplica()
    kw.setdefault("timeout_ms_request", 20_000)
    kw.setdefault("timeout_ms_close", 300)  # peers that swallow proposals would hold close()
    conn = Connection(endpoints, replica, **kw)
    connections.append(conn)
    return conn, replica


def proposes_of(peer: AgentPeer, kind: str = "txn") -> list[dict[str, Any]]:
    return [body for body in peer.received(wire.FrameType.PROPOSE) if body["kind"] == kind]


# ------------------------------------------------------------------------------------ tests


def test_submit_hello_subscribe_and_stream_into_the_replica(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, replica = connect(connections, [peer.endpoint])
    first = conn.submit(b"one")
    second = conn.submit(b"two")
    assert first == Committed(1, "ok", "", False) and second.index == 2
    conn.wait_applied(2, WAIT_S)
    assert replica.snapshots == [0]
    assert [(e[0], e[1], e[2], e[4]) for e in replica.events] == [
        (1, conn.client_id, 1, b"one"),
        (2, conn.client_id, 3, b"two"),
    ]
    hello = peer.received(wire.FrameType.HELLO)
    assert hello == [{"client": conn.client_id, "model": 2}]
    assert peer.received(wire.FrameType.SUBSCRIBE) == [{"from": 0, "model": 2, "answers": True}]
    # The first write waited for the session's "open" (seq 2, after the write took seq 1);
    # the writes name the session.
    (opened,) = proposes_of(peer, "open")
    assert (opened["seq"], opened["seq_low"], opened["session"]) == (2, 1, 0)
    assert [(p["seq"], p["seq_low"]) for p in proposes_of(peer)] == [(1, 1), (3, 3)]
    assert {p["session"] for p in proposes_of(peer)} == {peer.log.sessions[conn.client_id]}
    assert conn.read_index() == 2
    assert len(conn.client_id) == 32 and int(conn.client_id, 16) >= 0


def test_lost_reply_is_retried_with_the_same_seq_and_applied_once(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.drop_replies = 1
    # Nor does its event come (it would answer the write: the library settles an "ok" write
    # on its event too) until the resend was answered.
    peer.withhold_events = True
    conn, replica = connect(connections, [peer.endpoint], timeout_ms_resend=300)
    committed = conn.submit(b"once")
    assert committed.index == 1 and committed.dup
    peer.withhold_events = False
    sent = proposes_of(peer)
    assert len(sent) >= 2 and {(p["client"], p["seq"]) for p in sent} == {(conn.client_id, 1)}
    assert len(peer.log.entries) == 1
    conn.wait_applied(1, WAIT_S)
    assert [e[0] for e in replica.events] == [1]


def test_failover_to_the_next_endpoint_keeps_the_session_and_seq(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    log = PeerLog()
    first, second = make_peer(peers, log), make_peer(peers, log)
    conn, replica = connect(connections, [first.endpoint, second.endpoint])
    assert conn.submit(b"before").index == 1
    conn.wait_applied(1, WAIT_S)
    first.swallow_proposes = True
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(conn.submit(b"during")))
    worker.start()
    first.wait_for("the second PROPOSE", lambda: len(proposes_of(first)) == 2)
    first.stop()  # the agent dies with the proposal in flight
    worker.join(WAIT_S)
    assert result and result[0].index == 2
    assert second.received(wire.FrameType.HELLO) == [{"client": conn.client_id, "model": 2}]
    assert second.received(wire.FrameType.SUBSCRIBE) == [{"from": 1, "model": 2, "answers": True}]
    assert [(p["client"], p["seq"]) for p in proposes_of(second)] == [(conn.client_id, 3)]
    conn.wait_applied(2, WAIT_S)
    assert [e[0] for e in replica.events] == [1, 2] and replica.snapshots == [0]
    assert conn.failovers >= 1 and conn.endpoint == second.endpoint


def test_a_silent_agent_is_left_for_the_next_one(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    log = PeerLog()
    first, second = make_peer(peers, log), make_peer(peers, log)
    conn, _replica = connect(
        connections,
        [first.endpoint, second.endpoint],
        timeout_ms_agent_silence=1_000,
        ping_interval_ms=100,
    )
    first.wait_for("a PING", lambda: bool(first.received(wire.FrameType.PING)))
    first.mute = True  # alive (TCP up) but answering nothing, like a SIGSTOPped agent
    assert conn.submit(b"x").index == 1
    assert proposes_of(second) and conn.endpoint == second.endpoint


def test_unanswered_proposal_past_the_timeout_has_unknown_outcome(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.swallow_proposes = True
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_request=1_500)
    with pytest.raises(Unavailable) as caught:
        conn.submit(b"maybe")
    assert caught.value.outcome_known is False
    assert "UNKNOWN" in str(caught.value) and "timeout_ms_request=1500" in str(caught.value)
    assert proposes_of(peer)


def test_nothing_listening_gives_a_known_outcome(connections: list[Connection]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    conn, _replica = connect(connections, [endpoint], timeout_ms_request=1_500)
    with pytest.raises(Unavailable) as caught:
        conn.submit(b"never sent")
    assert caught.value.outcome_known is True and "NOT committed" in str(caught.value)
    with pytest.raises(Unavailable) as caught_read:
        conn.read_index()
    assert caught_read.value.outcome_known is True


def test_not_leader_refusals_are_retried_and_the_outcome_stays_known(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.refuse_always = "not_leader"
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_request=1_500)
    with pytest.raises(Unavailable) as caught:
        conn.submit(b"refused")
    assert caught.value.outcome_known is True
    sent = proposes_of(peer)
    assert len(sent) >= 2 and {p["seq"] for p in sent} == {1}


def test_a_refused_write_is_not_tried_again_too_close_to_its_deadline(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry sent just before the deadline could not be answered in time, and an attempt
    unanswered at the deadline makes the outcome unknown: so none is sent within
    LAST_ATTEMPT_MARGIN_MS of it, and a write refused throughout is reported as not written
    (here the margin is most of the timeout, so the retries stop early and the test does not
    depend on how fast the refusals come back)."""
    monkeypatch.setattr(connection_module, "LAST_ATTEMPT_MARGIN_MS", 1_200)
    peer = make_peer(peers)
    peer.refuse_always = "not_leader"
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_request=1_500)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        conn.submit(b"refused")
    assert caught.value.outcome_known is True
    assert time.monotonic() - started >= 1.4  # it waited for its deadline, refused
    sent = proposes_of(peer)
    assert len(sent) >= 2 and {p["seq"] for p in sent} == {1}
    # Retries back off from 10 ms, doubling: within the first 300 ms there are at most 5 of
    # them, and none after (a retry after 0.3 s would be due within the margin).
    assert len(sent) <= 6


def test_busy_and_unavailable_refusals_then_success(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.refusals = ["busy", "unavailable", "not_leader"]
    conn, _replica = connect(connections, [peer.endpoint])
    committed = conn.submit(b"eventually")
    assert committed.index == 1 and not committed.dup
    assert [p["seq"] for p in proposes_of(peer)] == [1, 1, 1, 1]


def test_an_unavailable_refusal_leaves_the_outcome_unknown(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.refuse_always = "unavailable"
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_request=1_000)
    with pytest.raises(Unavailable) as caught:
        conn.submit(b"x")
    assert caught.value.outcome_known is False


def test_a_refused_resend_after_an_unanswered_attempt_leaves_the_outcome_unknown(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """Issue 9, bug 2, library side: a refusal answers one attempt, never an earlier one that
    may be in some log; refusals of the resends (even final ones) must not make it "known"."""
    peer = make_peer(peers)
    peer.swallow_proposes = True  # the first attempt reaches an agent and is never answered
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_resend=300)
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            conn.submit(b"maybe")
        except Exception as exc:  # checked below
            outcome.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    peer.wait_for("the first attempt", lambda: len(proposes_of(peer)) == 1)
    peer.refusals = ["too_large"]
    peer.swallow_proposes = False  # the resend (same seq) is refused as too large
    thread.join(WAIT_S)
    (error,) = outcome
    assert isinstance(error, Unavailable) and error.outcome_known is False, error
    assert "UNKNOWN" in str(error) and "too_large" in str(error)
    assert {p["seq"] for p in proposes_of(peer)} == {1}


def test_too_large_and_bad_request_are_not_retried(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    peer.refusals = ["too_large"]
    with pytest.raises(LimitExceeded) as caught:
        conn.submit(b"big")
    assert isinstance(caught.value, AgentRefusedTooLarge)
    assert caught.value.limit_name == "LIMIT_X" and caught.value.limit == 7
    peer.refusals = ["bad_request"]
    with pytest.raises(ProtocolError):
        conn.submit(b"bad")
    assert len(proposes_of(peer)) == 2
    with pytest.raises(LimitExceeded) as local:
        conn.submit(b"\0" * (wire.FRAME_BYTES_MAX + 1))
    assert local.value.limit_name == "FRAME_BYTES_MAX"
    assert conn.submit(b"fine").index == 1


def test_a_key_that_may_not_write_fails_the_write_at_once(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """A read key's write: the session's open entry is refused "forbidden", and the write
    waiting for that session fails with the same AuthError (nothing was done), not with an
    Unavailable once its timeout passed."""
    peer = make_peer(peers)
    peer.refuse_opens = "forbidden"
    conn, _replica = connect(connections, [peer.endpoint])
    with pytest.raises(AuthError, match="forbidden"):
        conn.submit(b"x")
    assert proposes_of(peer) == [], "the write itself was never sent"


def test_agents_of_another_data_model_are_refused(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """An agent whose HELLO reply does not say model 2 is left for the next endpoint; once
    every endpoint said so, every caller gets the reason (docs/data-model-v2.md section 7)."""
    old = make_peer(peers, model=None)
    other = make_peer(peers, model=1)
    conn, replica = connect(connections, [old.endpoint, other.endpoint])
    with pytest.raises(Error, match="speaks data model 1; upgrade the agents"):
        conn.submit(b"x")
    assert proposes_of(old) == [] == proposes_of(other) and replica.snapshots == []
    new = make_peer(peers)
    conn, replica = connect(connections, [old.endpoint, new.endpoint])
    assert conn.submit(b"y").outcome == "ok"


def test_pending_requests_are_bounded(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    peer.swallow_proposes = True
    conn, _replica = connect(connections, [peer.endpoint], requests_pending_max=3)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            conn.submit(b"stuck")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=blocked) for _ in range(3)]
    for worker in workers:
        worker.start()
    peer.wait_for("3 PROPOSEs", lambda: len(proposes_of(peer)) >= 3)
    with pytest.raises(LimitExceeded) as caught:
        conn.submit(b"one too many")
    assert caught.value.limit_name == "REQUESTS_PENDING_MAX" and caught.value.limit == 3
    assert [p["seq_low"] for p in proposes_of(peer)][-1] == 1
    conn.close()
    for worker in workers:
        worker.join(WAIT_S)
    assert len(errors) == 3 and all(isinstance(e, Error) for e in errors)
    with pytest.raises(Error, match="closed"):
        conn.submit(b"after close")


def test_lagging_subscription_is_renewed_from_the_applied_index(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, replica = connect(connections, [peer.endpoint])
    conn.submit(b"a")
    conn.wait_applied(1, WAIT_S)
    sub = peer.received(wire.FrameType.SUBSCRIBE)
    assert sub == [{"from": 0, "model": 2, "answers": True}]

    def lagging(p: AgentPeer) -> None:
        # The agent's buffer for us overflowed: it drops the subscription and says so.
        identity, sub_req = p.subscription()
        del p._subs[identity]
        error = wire.error_body(wire.ErrorCode.LAGGING, "buffer full")
        p._send(identity, wire.FrameType.ERROR, sub_req, error)

    peer.inject(lagging)
    peer.wait_for("a new SUBSCRIBE", lambda: len(peer.received(wire.FrameType.SUBSCRIBE)) == 2)
    assert peer.received(wire.FrameType.SUBSCRIBE)[1] == {"from": 1, "model": 2, "answers": True}
    conn.submit(b"b")
    conn.wait_applied(2, WAIT_S)
    assert [e[0] for e in replica.events] == [1, 2] and conn.resubscribes == 1


def test_a_gap_in_the_stream_resubscribes_instead_of_applying(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, replica = connect(connections, [peer.endpoint])
    conn.submit(b"a")
    conn.wait_applied(1, WAIT_S)

    def gap(p: AgentPeer) -> None:
        identity, sub_req = p.subscription()
        p._send(
            identity, wire.FrameType.EVENTS, sub_req, {"ev": [[5, None, None, "noop", None, []]]}
        )

    peer.inject(gap)
    peer.wait_for("a new SUBSCRIBE", lambda: len(peer.received(wire.FrameType.SUBSCRIBE)) == 2)
    assert replica.applied_index == 1 and peer.received(wire.FrameType.SUBSCRIBE)[1] == {
        "from": 1,
        "model": 2,
        "answers": True,
    }


def test_idle_session_is_kept_alive_with_open_entries(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers, session_ttl_ms=600)
    conn, _replica = connect(connections, [peer.endpoint])
    conn.read_index()
    assert not proposes_of(peer, "open")  # no session yet: nothing to open or keep alive
    conn.submit(b"state")
    peer.wait_for("two keep-alives", lambda: len(proposes_of(peer, "open")) >= 3)
    opens = proposes_of(peer, "open")
    session = peer.log.sessions[conn.client_id]
    assert [(o["seq"], o["session"]) for o in opens[:3]] == [(2, 0), (3, session), (4, session)]
    assert opens[0]["client"] == conn.client_id
    assert conn.submit(b"more").index > 1


def test_an_expired_session_fails_a_write_that_may_have_applied_and_opens_a_new_one(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """Issue 9, bug 3, library side: the retry of a write that applied before its session
    expired is answered "session_expired"; the write is outcome-unknown, never re-sent in a
    new session (that would apply it twice), and later writes go out in a new session."""
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_resend=300)
    assert conn.submit(b"a").index == 1
    first_session = peer.log.sessions[conn.client_id]
    heard: list[str] = []  # the toolkit's hook (cluster events)
    conn.session_expired_listeners.append(heard.append)
    # a's REPLY may follow the event that answered it: the peer's thread finishes with a
    # first, so that the lost REPLY is b's (review21 saw the race).
    peer.inject(lambda p: None)
    peer.drop_replies = 1  # "b" applies, its reply is lost
    peer.withhold_events = True  # and its event is not seen either (it would answer the write)
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            conn.submit(b"b")
        except Exception as exc:  # checked below
            outcome.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    peer.wait_for("b applied", lambda: len(peer.log.entries) == 2)
    peer.expire_session(conn.client_id)  # the resend finds the session gone
    thread.join(WAIT_S)
    peer.withhold_events = False
    (error,) = outcome
    assert isinstance(error, Unavailable) and error.outcome_known is False, error
    assert "expired" in str(error) and "UNKNOWN" in str(error)
    assert [e[3] for e in peer.log.entries] == [b"a", b"b"], "b was applied once, not again"
    assert heard == [heard[0]] and heard[0].startswith(f"session {first_session}: "), heard
    assert conn.submit(b"c").index == 3
    second_session = peer.log.sessions[conn.client_id]
    assert second_session != first_session
    opens = [(o["session"], o["seq"]) for o in proposes_of(peer, "open") if o["session"] == 0]
    assert len(opens) == 2, opens
    assert proposes_of(peer)[-1]["session"] == second_session


def test_a_write_refused_for_an_expired_session_goes_out_in_a_new_one(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """A write whose only attempt was refused as "session_expired" was not applied: it is
    sent again in the new session (and applied once)."""
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    assert conn.submit(b"a").index == 1
    peer.expire_session(conn.client_id)
    committed = conn.submit(b"b")
    assert committed.index == 2 and not committed.dup
    writes = [(p["seq"], p["session"]) for p in proposes_of(peer)]
    seq_b = writes[-1][0]
    assert next(w for w in writes if w[0] == seq_b)[1] != writes[-1][1], writes
    assert [e[3] for e in peer.log.entries] == [b"a", b"b"]


def test_close_sends_a_close_entry_and_stops(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint])
    conn.submit(b"x")
    conn.close()
    closes = proposes_of(peer, "close")
    assert [(c["client"], c["seq"]) for c in closes] == [(conn.client_id, 3)]
    assert conn.closed
    with pytest.raises(Error):
        conn.wait_applied(10, 1.0)


def test_bad_endpoints_are_refused_up_front() -> None:
    with pytest.raises(Error, match="not a ZeroMQ address"):
        Connection(["localhost:7501"], RecordingReplica())
    with pytest.raises(Error, match="no agent endpoint"):
        Connection([], RecordingReplica())


# ---------------------------------------------------------------- the stream feeder, pure


def test_feeder_ignores_a_snapshot_older_than_the_replica() -> None:
    replica = RecordingReplica()
    feeder = StreamFeeder(replica)
    feeder.feed_snapshot(
        {"index": 3, "part": 0, "last": False, "fmt": 2, "items": [[0, "@roots", "dict", None, 1]]}
    )
    assert replica.snapshots == []  # nothing visible until the last part
    assert feeder.feed_snapshot({"index": 3, "part": 1, "last": True, "fmt": 2, "items": []})
    assert replica.applied_index == 3
    feeder.feed_events({"ev": [[4, "c", 1, "ok", b"b", []], [5, None, None, "noop", None, []]]})
    feeder.begin()
    assert not feeder.feed_snapshot({"index": 2, "part": 0, "last": True, "fmt": 2, "items": []})
    assert replica.snapshots == [3] and replica.applied_index == 5
    # An agent behind us: its events are skipped until they pass our index.
    feeder.feed_events({"ev": [[3, None, None, "noop", None, []], [6, "c", 2, "ok", b"x", []]]})
    assert replica.applied_index == 6


def test_feeder_rejects_out_of_order_parts_and_garbage() -> None:
    feeder = StreamFeeder(RecordingReplica())
    with pytest.raises(StreamGap):
        feeder.feed_snapshot({"index": 3, "part": 1, "last": True, "fmt": 2, "items": []})
    with pytest.raises(ProtocolError):
        feeder.feed_events({"ev": [[1, "c", 1, "maybe", None, []]]})
    with pytest.raises(ProtocolError):
        feeder.feed_events({"ev": [[1, "c"]]})
    with pytest.raises(ProtocolError):
        feeder.feed_snapshot({"index": 1, "part": 0, "last": True, "fmt": 2, "items": [["x"]]})


@pytest.mark.parametrize(
    "event",
    [
        [10**5000, "c", 1, "ok", None, []],  # an index too long to print
        [-(10**5000), "c", 1, "ok", None, []],
        [1, "c", 1, ["unhashable"], None, []],  # an outcome that cannot be looked up
        [1, "c", 1, "x" * 10**6, None, []],  # an outcome too long to quote
    ],
)
def test_a_hostile_event_is_refused_without_quoting_it(event: list[Any]) -> None:
    """A hostile agent's values never reach a message: they are described, not formatted (an
    int of 5,000 digits cannot even be printed: repr raises ValueError)."""
    feeder = StreamFeeder(RecordingReplica())
    with pytest.raises(ProtocolError) as caught:
        feeder.feed_events({"ev": [event]})
    assert len(str(caught.value)) < 300


def test_wait_applied_waits_while_the_stream_progresses(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    peer = make_peer(peers)
    conn, replica = connect(connections, [peer.endpoint])
    conn.submit(b"a")
    conn.wait_applied(1, WAIT_S)
    identity_sub: list[tuple[bytes, int]] = []

    def detach(p: AgentPeer) -> None:
        # From now on the test feeds the stream itself, one slow event at a time.
        identity, sub_req = p.subscription()
        del p._subs[identity]
        identity_sub.append((identity, sub_req))

    peer.inject(detach)
    identity, sub_req = identity_sub[0]
    events_total = 10
    gap_s = 0.3  # 3 s of stream in all, twice the timeout below: only progress keeps it going

    def trickle() -> None:
        for i in range(2, 2 + events_total):
            time.sleep(gap_s)

            def send(p: AgentPeer, i: int = i) -> None:
                event = [i, "other", i, "ok", b"x", []]
                p._send(identity, wire.FrameType.EVENTS, sub_req, {"ev": [event]})

            peer.inject(send)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    conn.wait_applied(1 + events_total, timeout_s=gap_s * events_total / 2)
    feeder.join(WAIT_S)
    assert replica.applied_index == 1 + events_total
    with pytest.raises(Unavailable, match="not yet visible"):
        conn.wait_applied(2 + events_total, timeout_s=0.3)  # nothing more comes: no progress


def test_a_socket_that_cannot_be_completed_leaves_nothing_open_for_close(
    peers: list[AgentPeer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors halfway through making a socket (seen when a failover loop ran
    out of them): the I/O thread stops with the error, and close() still returns, because the
    half-made socket was closed (an open one makes the context's term() wait forever)."""
    peer = make_peer(peers)
    real = zmq.Socket.get_monitor_socket
    calls = itertools.count()

    def get_monitor_socket(self: zmq.Socket[Any], *args: Any, **kwargs: Any) -> Any:
        if next(calls) >= 1:  # the first socket works; the one after the failover cannot
            raise zmq.ZMQError(24, "Too many open files")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zmq.Socket, "get_monitor_socket", get_monitor_socket)
    conn, _replica = connect([], [peer.endpoint, peer.endpoint], timeout_ms_request=5_000)
    assert conn.submit(b"one").outcome == "ok"
    peer.stop()  # disconnected: the connection fails over and cannot make its next socket
    closer = threading.Thread(target=conn.close, daemon=True)
    closer.start()
    closer.join(WAIT_S)
    assert not closer.is_alive(), "close() hung on a socket the failed failover left open"


def test_writes_behind_a_stuck_one_wait_inside_the_agents_seq_window(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review9 finding 3: the agent refuses a seq more than SESSION_SEQS_MAX above seq_low with
    an error it does not record, and a later copy of that seq can still apply. The library
    never sends one: behind a stuck write, later writes wait (unsent) within SEQ_WINDOW_MAX."""
    from concurrent.futures import ThreadPoolExecutor

    from superstatic.client import connection as connection_module

    monkeypatch.setattr(connection_module, "SEQ_WINDOW_MAX", 4)
    peer = make_peer(peers)
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_request=4_000)
    assert conn.submit(b"first").outcome == "ok"  # the session is open
    peer.swallow_proposes = True
    with ThreadPoolExecutor(8) as pool:
        stuck = pool.submit(conn.submit, b"stuck")
        peer.wait_for("the stuck write", lambda: len(proposes_of(peer)) >= 2)
        peer.swallow_proposes = False
        # The later writes wait unsent until the stuck one expires: their own deadline must
        # outlast it by far (with the same 4 s, they had only the milliseconds between the two
        # submits left, and failed under load). A call reads timeout_ms_request when it starts.
        conn.timeout_ms_request = int(WAIT_S * 1000)
        later = [pool.submit(conn.submit, b"w%d" % i) for i in range(6)]
        with pytest.raises(Unavailable) as caught:
            stuck.result(WAIT_S)
        assert caught.value.outcome_known is False  # it was sent: it may still commit
        assert all(f.result(WAIT_S).outcome == "ok" for f in later)
    sent = proposes_of(peer)
    assert len(sent) >= 8
    for body in sent:
        assert body["seq"] - body["seq_low"] < 4, (body["seq"], body["seq_low"])


def test_writes_of_concurrent_callers_fall_back_to_propose_when_the_agent_refuses_many(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes queued together go out in one PROPOSE_MANY; an agent that predates it answers
    bad_request: every write goes again as a PROPOSE (nothing of the refused frame was
    proposed), each applies once, and the connection sends PROPOSEs from then on. Coalescing
    is on by default: no environment says so."""
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)
    peer = make_peer(peers)
    peer.mute = True  # the session's open goes unanswered until the writes are all queued
    conn, replica = connect(connections, [peer.endpoint], timeout_ms_resend=300)
    results: list[Committed] = []
    workers = [
        threading.Thread(target=lambda i=i: results.append(conn.submit(b"w%d" % i)))
        for i in range(8)
    ]
    for worker in workers:
        worker.start()
    peer.wait_for("the session's open", lambda: len(proposes_of(peer, "open")) >= 1)
    peer.wait_for("8 writes queued", lambda: conn._pending == 8)
    peer.mute = False  # the open is sent again, answered, and the 8 writes go out together
    for worker in workers:
        worker.join(WAIT_S)
    assert len(results) == 8 and all(r.outcome == "ok" for r in results)
    assert sorted(r.index for r in results) == list(range(1, 9))
    (many,) = peer.received(wire.FrameType.PROPOSE_MANY)
    assert len(many["items"]) == 8 and many["session"] == peer.log.sessions[conn.client_id]
    assert sorted(p["body"] for p in proposes_of(peer)) == sorted(b"w%d" % i for i in range(8))
    assert len(peer.log.entries) == 8
    conn.submit(b"after")
    assert len(peer.received(wire.FrameType.PROPOSE_MANY)) == 1
    conn.wait_applied(9, WAIT_S)  # (the SUBSCRIBE the muted peer ignored was renewed)
    assert replica.applied_index == 9


def test_coalescing_off_sends_concurrent_writes_as_proposes(
    peers: list[AgentPeer], connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUPERSTATIC_COALESCE=0: writes queued together still go, one PROPOSE each."""
    monkeypatch.setenv("SUPERSTATIC_COALESCE", "0")
    peer = make_peer(peers)
    peer.mute = True  # the session's open goes unanswered until the writes are all queued
    conn, _replica = connect(connections, [peer.endpoint], timeout_ms_resend=300)
    results: list[Committed] = []
    workers = [
        threading.Thread(target=lambda i=i: results.append(conn.submit(b"w%d" % i)))
        for i in range(8)
    ]
    for worker in workers:
        worker.start()
    peer.wait_for("the session's open", lambda: len(proposes_of(peer, "open")) >= 1)
    peer.wait_for("8 writes queued", lambda: conn._pending == 8)
    peer.mute = False
    for worker in workers:
        worker.join(WAIT_S)
    assert len(results) == 8 and all(r.outcome == "ok" for r in results)
    assert peer.received(wire.FrameType.PROPOSE_MANY) == []
    assert sorted(p["body"] for p in proposes_of(peer)) == sorted(b"w%d" % i for i in range(8))


@pytest.mark.parametrize("value", ["yes", "2", "true"])
def test_a_bad_coalesce_setting_fails_the_connect_naming_the_variable(
    connections: list[Connection], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SUPERSTATIC_COALESCE", value)
    with pytest.raises(Error, match="SUPERSTATIC_COALESCE must be 0") as caught:
        connect(connections, ["tcp://127.0.0.1:1"])
    assert value not in str(caught.value)


def test_a_partial_replica_needs_agents_with_the_virtual_heap(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """An agent whose HELLO does not say "heap" would stream the whole object table to a
    partial replica: it is left for the next endpoint, and once every one said so, callers get
    what to do (docs/virtual-heap.md 2.2)."""
    from superstatic.objects.replica import Replica

    old = make_peer(peers)  # its HELLO says no "heap"
    conn = Connection(
        [old.endpoint],
        Replica(),
        heap="partial",
        cache_bytes=1 << 20,
        timeout_ms_request=20_000,
        timeout_ms_close=300,
    )
    connections.append(conn)
    with pytest.raises(Error, match="does not speak the virtual heap"):
        conn.submit(b"x")
    assert proposes_of(old) == []


def test_a_replica_that_could_not_apply_an_event_is_detached_and_never_serves_reads(
    peers: list[AgentPeer], connections: list[Connection]
) -> None:
    """ReplicaFailed stops the connection ("a diverged replica must never serve reads"): its
    objects raise from then on instead of serving a half-changed state that never updates."""
    peer = make_peer(peers)
    replica = Replica()
    conn = Connection([peer.endpoint], replica, timeout_ms_request=20_000, timeout_ms_close=300)
    connections.append(conn)
    roots = ops.encode_txn_v2(
        0,
        {},
        [["new", "@roots", "dict", [["kv", codec.Ref("kv")]]], ["new", "kv", "dict", [["a", 1]]]],
    )
    conn.submit(roots)
    conn.wait_applied(1, WAIT_S)
    kv = replica.root_ref("kv")
    assert kv["a"] == 1
    # An event the replica cannot apply (an agent would never commit it: a list op on a dict,
    # after a set the replica has already made: its state is half-changed).
    with pytest.raises(Unavailable, match="connection stopped"):  # in flight when it stopped
        conn.submit(ops.encode_txn_v2(1, {}, [["set", "kv", "a", 2], ["extend", "kv", [1]]]))
    deadline = time.monotonic() + WAIT_S
    while replica.detached is None:
        assert time.monotonic() < deadline, "the replica was never detached"
        time.sleep(0.01)
    assert "could not apply" in replica.detached or "failed" in replica.detached
    with pytest.raises(Error):
        kv["a"]
