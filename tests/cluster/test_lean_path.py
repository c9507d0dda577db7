"""The lean write path against real agents (issue 11 items 3 and 4, docs/data-model-v2.md
sections 6 and 8): the library coalesces the writes of concurrent callers into PROPOSE_MANY
frames, the agent proposes what one frame carries in one go, and every write still applies
exactly once, in each caller's order.

The library's fallback to PROPOSE for an agent that refuses PROPOSE_MANY is tested against an
agent double that predates the type (tests/unit/test_connection.py); the agent's handling of
hostile PROPOSE_MANY frames is here (raw frames) and in tests/cluster/test_hostile_wire.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from superstatic_bench.loadgen import RawClient

import superstatic
from superstatic.client import default as session_default
from superstatic.client import oneshot
from superstatic.client.connection import Connection
from superstatic.objects import trace as app_trace
from superstatic.protocol import ops, wire
from superstatic.tools.localcluster import LocalCluster, free_port

pytestmark = pytest.mark.cluster

TIMEOUT_S_JOIN = 120.0
TIMEOUT_MS_ANSWER = 30_000
CALLERS = 8
WRITES_PER_CALLER = 25


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "agents", size=3) as c:
        c.start()
        c.leader()
        yield c


def connection() -> Connection:
    conn = session_default.get().connection
    assert isinstance(conn, Connection)
    return conn


def many_items(cluster: LocalCluster, node: str) -> int:
    return int(cluster.status(node)["counters"]["propose_many_items"])


@pytest.fixture
def coalescing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections made in the test coalesce writes into PROPOSE_MANY (the default: whatever
    the environment running the tests says is ignored)."""
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)


@pytest.mark.usefixtures("coalescing")
def test_coalesced_writes_apply_once_each_in_every_callers_order(cluster: LocalCluster) -> None:
    """CALLERS threads of one process each append 0, 1, 2, ... to their own list, one write
    per call: each list ends as exactly its caller's sequence (no write lost, doubled or
    reordered), at the app and at every agent, and the agent took PROPOSE_MANY frames."""
    node = cluster.leader()
    superstatic.connect(cluster.client_endpoints([node]))
    try:
        lists = superstatic.root("lists", dict)
        for caller in range(CALLERS):
            lists[f"c{caller}"] = []
        errors: list[BaseException] = []
        start = threading.Barrier(CALLERS)

        def caller(n: int) -> None:
            own = lists[f"c{n}"]
            try:
                start.wait()
                for i in range(WRITES_PER_CALLER):
                    own.append(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S_JOIN)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
        expected = list(range(WRITES_PER_CALLER))
        for n in range(CALLERS):
            assert list(lists[f"c{n}"]) == expected, n
        assert many_items(cluster, node) > 0, "no PROPOSE_MANY reached the agent"
        index = connection().read_index()
    finally:
        superstatic.close()
    for agent in cluster.agents:
        assert inspect_when_applied(cluster, agent, "lists", index) == {
            f"c{n}": expected for n in range(CALLERS)
        }, agent


def inspect_when_applied(cluster: LocalCluster, node: str, root: str, index: int) -> Any:
    """A root's value at an agent once it applied `index` (bounded wait)."""
    deadline = time.monotonic() + TIMEOUT_MS_ANSWER / 1000
    while True:
        reply = oneshot.request(
            cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": root}
        )
        if reply["applied"] >= index:
            assert reply["found"], (node, root)
            return reply["value"]
        assert time.monotonic() < deadline, f"agent {node} did not apply {index}"
        time.sleep(0.05)


def answers(sock: zmq.Socket[Any], req_ids: set[int]) -> dict[int, wire.Frame]:
    out: dict[int, wire.Frame] = {}
    poller_ms = 100
    waited = 0
    while set(out) != req_ids:
        assert waited < TIMEOUT_MS_ANSWER, f"no answer to {sorted(req_ids - set(out))}"
        if sock.poll(poller_ms, zmq.POLLIN):
            frame = wire.decode(sock.recv(), wire.AGENT_TO_CLIENT)
            if frame.req_id in req_ids:
                out[frame.req_id] = frame
        else:
            waited += poller_ms
    return out


def test_one_bad_item_is_refused_alone_and_the_frame_bounds_are_named(
    cluster: LocalCluster,
) -> None:
    """A PROPOSE_MANY item with a bad field is answered bad_request under its own req_id while
    the others apply; a frame over PROPOSE_ITEMS_MAX is refused whole, naming the limit."""
    node = cluster.leader()
    raw = RawClient(cluster.agents[node].client_endpoint, keys=cluster.keys("app"))
    try:
        session = raw.open_session()  # its own req ids are small: none collides with ours
        client, sock = raw.client_id, raw.sock
        empty = ops.encode_txn({}, [])
        items: list[list[Any]] = [
            [101, 10, "txn", empty],
            [102, 11, "txn", "not bytes"],  # refused alone
            [103, 12, "txn", empty, True],
        ]
        body = {"client": client, "seq_low": 10, "session": session, "items": items}
        sock.send(wire.encode(wire.FrameType.PROPOSE_MANY, 100, body))
        got = answers(sock, {101, 102, 103})
        assert got[101].type is wire.FrameType.REPLY and got[101].body["outcome"] == "ok"
        assert got[103].type is wire.FrameType.REPLY and got[103].body["outcome"] == "ok"
        assert got[102].type is wire.FrameType.ERROR
        assert got[102].body["code"] == "bad_request"
        assert "body" in got[102].body["message"] and "not bytes" not in got[102].body["message"]
        assert got[101].body["index"] < got[103].body["index"]  # in the frame's order

        too_many = [[1_000 + i, 20 + i, "txn", empty] for i in range(wire.PROPOSE_ITEMS_MAX + 1)]
        body = {"client": client, "seq_low": 20, "session": session, "items": too_many}
        sock.send(wire.encode(wire.FrameType.PROPOSE_MANY, 200, body))
        refused = answers(sock, {200})[200]
        assert refused.type is wire.FrameType.ERROR and refused.body["code"] == "too_large"
        assert "PROPOSE_ITEMS_MAX" in refused.body["message"]
    finally:
        raw.close()


# Lone-caller stress: threads that each write with seeded random pauses, so a write is sometimes
# alone (sent by its caller) and sometimes concurrent with others (queued, coalesced).
STRESS_THREADS = 6
STRESS_WRITES = 30
STRESS_PAUSE_S_MAX = 0.004
SEQUENTIAL_WRITES = 20


def test_lone_callers_send_themselves_and_mixed_callers_still_apply_once_in_order(
    cluster: LocalCluster,
) -> None:
    node = cluster.leader()
    superstatic.connect(cluster.client_endpoints([node]))
    try:
        conn = connection()
        seq = superstatic.root("seq", dict)
        seq["n"] = 0  # opens the session (a write with no session waits for the I/O thread)
        before = conn.sent_direct
        for i in range(SEQUENTIAL_WRITES):
            seq["n"] = i + 1
        # One thread, nothing else in flight: they go out from the caller (but for a turn
        # of the I/O thread holding the socket lock longer than the caller waits for it).
        assert 0 < conn.sent_direct - before <= SEQUENTIAL_WRITES
        assert seq["n"] == SEQUENTIAL_WRITES

        lists = superstatic.root("stress", dict)
        for t in range(STRESS_THREADS):
            lists[f"t{t}"] = []
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            rng = random.Random(t)
            own = lists[f"t{t}"]
            try:
                for i in range(STRESS_WRITES):
                    time.sleep(rng.uniform(0, STRESS_PAUSE_S_MAX))
                    own.append(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(STRESS_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S_JOIN)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
        for t in range(STRESS_THREADS):
            assert list(lists[f"t{t}"]) == list(range(STRESS_WRITES)), t
        index = conn.read_index()
    finally:
        superstatic.close()
    expected = {f"t{t}": list(range(STRESS_WRITES)) for t in range(STRESS_THREADS)}
    for agent in cluster.agents:
        assert inspect_when_applied(cluster, agent, "stress", index) == expected, agent


def frames_until_event(raw: RawClient, sub_req: int, seq: int) -> list[wire.Frame]:
    """Every frame up to and including the EVENTS frame holding our write `seq`."""
    out: list[wire.Frame] = []
    waited = 0
    while True:
        assert waited < TIMEOUT_MS_ANSWER, f"no event for seq {seq}"
        if not raw.sock.poll(100, zmq.POLLIN):
            waited += 100
            continue
        frame = wire.decode(raw.sock.recv(), wire.AGENT_TO_CLIENT)
        out.append(frame)
        ours = frame.type is wire.FrameType.EVENTS and frame.req_id == sub_req
        if ours and any(e[1] == raw.client_id and e[2] == seq for e in frame.body["ev"]):
            return out


def test_a_write_of_a_connection_answered_by_its_stream_gets_no_reply(
    cluster: LocalCluster,
) -> None:
    """SUBSCRIBE {"answers": true}: an "ok" write is answered by its event alone (the agent
    sends its REPLY before the event's frame if at all, and frames of one connection arrive in
    order, so none came). A dup still gets its REPLY (it carries the first index and outcome),
    and a connection that did not ask gets every REPLY as before."""
    node = cluster.leader()
    raw = RawClient(cluster.agents[node].client_endpoint, keys=cluster.keys("app"))
    plain = RawClient(cluster.agents[node].client_endpoint, keys=cluster.keys("app"))
    try:
        raw.open_session()  # answered by REPLY: not subscribed yet
        subscribe = {"from": 0, "model": wire.DATA_MODEL, "answers": True}
        sub_req = raw.send(wire.FrameType.SUBSCRIBE, subscribe)
        seq = raw.take_seq()
        req_id = raw.send(wire.FrameType.PROPOSE, raw.propose_body(ops.encode_txn({}, []), seq))
        seen = frames_until_event(raw, sub_req, seq)
        assert not [f for f in seen if f.req_id == req_id], seen
        (event,) = [
            e for f in seen if f.type is wire.FrameType.EVENTS for e in f.body["ev"] if e[2] == seq
        ]
        assert event[3] == "ok"
        again = raw.send(wire.FrameType.PROPOSE, raw.propose_body(ops.encode_txn({}, []), seq))
        reply = raw.wait(again, TIMEOUT_MS_ANSWER)
        assert reply["dup"] is True and reply["index"] == event[0] and reply["outcome"] == "ok"

        plain.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
        assert plain.propose(ops.encode_txn({}, []))["outcome"] == "ok"  # REPLY as before
    finally:
        raw.close()
        plain.close()


# Writes after a leader change until the app's writes go to the new leader's link (its agent's
# PING answer names the new leader within ping_interval_ms); a bound, not a timing claim.
WRITES_AFTER_CHANGE_MAX = 400
LEADER_WRITES = 15


def link_to(conn: Connection) -> str | None:
    """The agent the connection's writes go to directly (None: through its own agent)."""
    link = conn._io.link
    return link.agent if link is not None and link.ready else None


def test_writes_from_an_app_at_a_follower_go_to_the_leader_and_survive_leader_changes(
    cluster: LocalCluster,
) -> None:
    """The app's own agent is a follower: its writes go over the link to the leader (the
    stream stays on its agent, and every write is visible here when the call returns).
    Leadership moves to the third agent: the writes follow it once the app's agent names it.
    Then that leader is killed: the writes in flight on its link are sent again (same seq),
    and every write applies once, in order."""
    old_leader = cluster.leader()
    follower, third = (i for i in cluster.agents if i != old_leader)
    superstatic.connect(cluster.client_endpoints([follower, old_leader, third]))
    try:
        conn = connection()
        log = superstatic.root("leader_writes", list)
        for i in range(LEADER_WRITES):
            log.append(i)
            assert log[-1] == i  # read-your-writes at the follower's replica
        assert conn.sent_to_leader >= LEADER_WRITES, conn.sent_to_leader
        assert conn.endpoint == cluster.agents[follower].client_endpoint  # stream unchanged
        written = LEADER_WRITES

        transfer = {"op": "transfer", "node": third}
        oneshot.request(
            cluster.agents[old_leader].client_endpoint, wire.FrameType.MEMBERS, transfer
        )
        cluster.wait_until(lambda: cluster.leader() == third, "third leads", TIMEOUT_S_JOIN)
        while link_to(conn) != third:  # until our agent named it and its link answered
            assert written < LEADER_WRITES + WRITES_AFTER_CHANGE_MAX, "no link to the leader"
            log.append(written)
            written += 1
        sent_before = conn.sent_to_leader
        log.append(written)
        written += 1
        assert conn.sent_to_leader > sent_before

        cluster.kill(third)  # with writes going to it
        for _ in range(LEADER_WRITES):
            log.append(written)
            written += 1
        assert cluster.leader() in (follower, old_leader)
        assert list(log) == list(range(written))  # each once, in order
        index = conn.read_index()
    finally:
        superstatic.close()
    for agent in (follower, old_leader):
        assert inspect_when_applied(cluster, agent, "leader_writes", index) == list(range(written))


@superstatic.clustered(name="tests.lean.traced")
class TracedCounter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n


TRACED_CALLERS = 6
TRACED_CALLS = 10


@pytest.mark.usefixtures("coalescing")
def test_what_one_propose_many_carries_lands_in_one_ready(tmp_path: Path) -> None:
    """Traced concurrent callers (agents --trace): the writes that left in one PROPOSE_MANY
    (one `sent` stamp, set once per frame) were appended by the agent in one Ready (one
    `appended` stamp, set once per Ready): one write, one fsync, one APPEND per follower."""
    with LocalCluster(tmp_path / "agents", size=3, agent_args=["--trace"]) as traced:
        traced.start()
        leader = traced.leader()
        superstatic.connect(traced.client_endpoints([leader]))
        app_trace.enable(True)
        try:
            counters = [TracedCounter() for _ in range(TRACED_CALLERS)]
            app_trace.take()
            start = threading.Barrier(TRACED_CALLERS)

            def caller(counter: Any) -> None:
                start.wait()
                for _ in range(TRACED_CALLS):
                    counter.bump()

            threads = [threading.Thread(target=caller, args=(c,)) for c in counters]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT_S_JOIN)
            records = app_trace.take()
            sent_many = many_items(traced, leader)
            # One shared object (a named class has one instance): its bumps conflict and are
            # re-run, and each counts once.
            assert counters[0].n == TRACED_CALLS * TRACED_CALLERS
        finally:
            app_trace.enable(False)
            superstatic.close()
    assert sent_many > 0, "no PROPOSE_MANY reached the agent"
    by_frame: dict[int, list[int]] = {}  # sent stamp -> the appended stamps of its writes
    for record in records:
        stamps = record["stamps"]
        if "sent" in stamps and "appended" in stamps:
            by_frame.setdefault(stamps["sent"], []).append(stamps["appended"])
    assert any(len(appended) >= 2 for appended in by_frame.values()), "no traced frame of many"
    assert all(len(set(appended)) == 1 for appended in by_frame.values()), by_frame


# A bound on waiting for the link past an endpoint where nothing listens (LINK_PROBE_MS each).
TIMEOUT_S_LINK = 60.0


def test_an_endpoint_where_nothing_listens_does_not_keep_writes_from_the_leader(
    cluster: LocalCluster,
) -> None:
    """The app was given an endpoint where nothing answers before the leader's: the link tried
    there gets no HELLO answer, is given up after LINK_PROBE_MS, and the next endpoint (the
    leader) takes the writes. Meanwhile they go through the app's own agent."""
    leader = cluster.leader()
    follower = next(i for i in cluster.agents if i != leader)
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    own, *others = cluster.client_endpoints([follower, leader])
    superstatic.connect([own, nowhere, *others])
    try:
        conn = connection()
        d = superstatic.root("probe", dict)
        deadline = time.monotonic() + TIMEOUT_S_LINK
        i = 0
        while conn.sent_to_leader == 0:
            assert time.monotonic() < deadline, "the link never got past the silent endpoint"
            d["k"] = i
            i += 1
            time.sleep(0.01)
        assert link_to(conn) == leader
        d["k"] = -1
        assert d["k"] == -1
    finally:
        superstatic.close()
