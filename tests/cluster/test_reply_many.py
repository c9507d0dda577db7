"""REPLY_MANY against real agents (docs/data-model-v2.md 8.11): the answers one Ready gives
one connection travel in one frame when the connection's write frames said it reads them.

Through the public API: an app attached to a follower writes over its link to the leader
(the lean path), and the leader answers those writes in REPLY_MANY frames; every write applies
once, in each caller's order. With raw frames: an app that predates REPLY_MANY (no flag) gets
one REPLY per write from the same agents.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from superstatic_bench.loadgen import RawClient
from test_lean_path import inspect_when_applied

import superstatic
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.protocol import ops, wire
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_JOIN = 120.0
TIMEOUT_MS_ANSWER = 30_000
CALLERS = 8
WRITES_PER_CALLER = 25
RAW_WRITES = 8


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "agents", size=3) as c:
        c.start()
        c.leader()
        yield c


def counters(cluster: LocalCluster, node: str) -> dict[str, int]:
    return dict(cluster.status(node)["counters"])


def test_writes_of_an_app_at_a_follower_are_answered_in_reply_many_frames(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)
    leader = cluster.leader()
    follower = next(node for node in cluster.agents if node != leader)
    before = counters(cluster, leader)
    superstatic.connect(cluster.client_endpoints([follower, leader]))
    try:
        conn = session_default.get().connection
        assert isinstance(conn, Connection)
        lists = superstatic.root("reply_many_lists", dict)
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
        assert conn.sent_to_leader >= CALLERS * WRITES_PER_CALLER, conn.sent_to_leader
        index = conn.read_index()
    finally:
        superstatic.close()
    after = counters(cluster, leader)
    frames = after["reply_many_frames"] - before["reply_many_frames"]
    items = after["reply_many_items"] - before["reply_many_items"]
    assert frames > 0, "the leader answered no write in a REPLY_MANY"
    assert items >= 2 * frames, (items, frames)  # a REPLY_MANY carries two answers or more
    for agent in cluster.agents:
        assert inspect_when_applied(cluster, agent, "reply_many_lists", index) == {
            f"c{n}": expected for n in range(CALLERS)
        }, agent


def raw_answers(sock: zmq.Socket[Any], req_ids: set[int]) -> tuple[dict[int, Any], list[int]]:
    """The answers to `req_ids` by req id, and the type of every frame that carried them."""
    out: dict[int, Any] = {}
    types: list[int] = []
    waited_ms = 0
    while set(out) != req_ids:
        assert waited_ms < TIMEOUT_MS_ANSWER, f"no answer to {sorted(req_ids - set(out))}"
        if not sock.poll(100, zmq.POLLIN):
            waited_ms += 100
            continue
        frame = wire.decode(sock.recv(), wire.AGENT_TO_CLIENT)
        if frame.type is wire.FrameType.REPLY_MANY:
            got = dict(wire.parse_reply_many(frame.body))
        else:
            got = {frame.req_id: frame.body}
        mine = {req: body for req, body in got.items() if req in req_ids}
        if mine:
            out.update(mine)
            types.append(frame.type)
    return out, types


@pytest.mark.parametrize("flag", [False, True], ids=["app-without-flag", "app-with-flag"])
def test_raw_writes_get_replies_or_reply_many_as_their_flag_says(
    cluster: LocalCluster, flag: bool
) -> None:
    """One PROPOSE_MANY of RAW_WRITES writes (they apply in one Ready at the leader): without
    the flag, RAW_WRITES REPLYs; with it, REPLY_MANY frames only."""
    node = cluster.leader()
    raw = RawClient(cluster.agents[node].client_endpoint, keys=cluster.keys("app"))
    try:
        session = raw.open_session()  # its own req ids are small: none collides with ours
        empty = ops.encode_txn({}, [])
        items = [[100 + i, 10 + i, "txn", empty] for i in range(RAW_WRITES)]
        body: dict[str, Any] = {
            "client": raw.client_id,
            "seq_low": 10,
            "session": session,
            "items": items,
        }
        if flag:
            body[wire.REPLY_MANY_FIELD] = True
        raw.sock.send(wire.encode(wire.FrameType.PROPOSE_MANY, 99, body))
        got, types = raw_answers(raw.sock, {100 + i for i in range(RAW_WRITES)})
        assert all(answer["outcome"] == "ok" for answer in got.values()), got
        assert len({answer["index"] for answer in got.values()}) == RAW_WRITES
        if flag:
            assert set(types) == {wire.FrameType.REPLY_MANY}, types
        else:
            assert types == [wire.FrameType.REPLY] * RAW_WRITES, types
    finally:
        raw.close()
