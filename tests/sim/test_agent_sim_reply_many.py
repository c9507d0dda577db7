"""The agent's answer step with REPLY_MANY (docs/data-model-v2.md 8.11), on a real single-voter
Server in the glue simulation's world (agent_sim_io.py: simulated clock, network and disk).

Two apps write in the same turns: one whose write frames say it reads REPLY_MANY, one that
predates it. The writes of a turn apply in one Ready; the first app gets their answers in one
frame, the second one REPLY per write, as before."""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from agent_sim import ELECTION_TICKS, HEARTBEAT_TICKS, TICK_MS, sim_address
from agent_sim_io import SIM_MAP_BYTES, SimDisk, SimNet, SimStorage, sim_io
from superstatic_agent.config import AgentConfig
from superstatic_agent.raft.types import Role
from superstatic_agent.server import Server
from superstatic_agent.transport import DropCounter
from superstatic_bench.loadgen import txn_create_roots, txn_extend

from superstatic.protocol import wire

NEW_APP = "@p0.1"  # says reply_many
OLD_APP = "@p1.1"  # predates it
STEPS_MAX = 5_000


class OneAgent:
    def __init__(self, tmp_path: Path) -> None:
        self.net = net = SimNet(random.Random(11))
        net.delay_ms = (1, 1)
        self.drops = DropCounter()
        disk = SimDisk(tmp_path / "a")
        disk.path.mkdir()
        config = AgentConfig(
            node_id="a",
            data_dir=disk.path,
            peers={"a": sim_address("a")},
            client_endpoint="sim-client://a",
            tick_ms=TICK_MS,
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=HEARTBEAT_TICKS,
            map_bytes=SIM_MAP_BYTES,  # SimStorage's map: the reserve is a share of it
            insecure=True,  # simulated endpoints, nothing bound
        )
        net.up.update(("a", "a:clients", NEW_APP, OLD_APP))
        net.addresses[sim_address("a")] = "a"
        io = sim_io(net, "a", [0], 11, self.drops, disk)
        self.server = Server(config, io=io, drops=self.drops, storage=SimStorage(disk))
        self.frames: dict[str, list[wire.Frame]] = {NEW_APP: [], OLD_APP: []}
        self.req_ids = iter(range(1, 1 << 20))

    def step(self) -> None:
        self.net.now_ms += 1
        self.net.deliver_due()
        self.server.step()
        for app, frames in self.frames.items():
            for _src, data in self.net.take(app, 1_000):
                frames.append(wire.decode(data, wire.AGENT_TO_CLIENT))

    def run_until(self, what: str, done: Any) -> None:
        for _ in range(STEPS_MAX):
            if done():
                return
            self.step()
        raise AssertionError(f"never: {what}")

    def send(self, app: str, frame_type: wire.FrameType, body: dict[str, Any]) -> int:
        req_id = next(self.req_ids)
        self.net.inbox.setdefault("a:clients", deque()).append(
            (app, wire.encode(frame_type, req_id, body))
        )
        return req_id

    def answers(self, app: str) -> dict[int, dict[str, Any]]:
        """Every answer `app` got, by req id, whatever frame carried it."""
        out: dict[int, dict[str, Any]] = {}
        for frame in self.frames[app]:
            if frame.type is wire.FrameType.REPLY_MANY:
                out.update(wire.parse_reply_many(frame.body))
            elif frame.type is wire.FrameType.REPLY:
                out[frame.req_id] = frame.body
        return out

    def open_session(self, app: str, client: str) -> int:
        body = {"client": client, "seq": 1, "seq_low": 1, "kind": "open", "body": b""}
        req_id = self.send(app, wire.FrameType.PROPOSE, body)
        self.run_until("the session opened", lambda: req_id in self.answers(app))
        return int(self.answers(app)[req_id]["index"])


def many_body(client: str, session: int, items: list[list[Any]], flag: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"client": client, "seq_low": 1, "session": session, "items": items}
    if flag:
        body[wire.REPLY_MANY_FIELD] = True
    return body


def test_the_writes_one_ready_answers_go_to_a_connection_in_one_frame(tmp_path: Path) -> None:
    agent = OneAgent(tmp_path)
    try:
        agent.run_until("a single voter leads", lambda: agent.server.node.role is Role.LEADER)
        new_session = agent.open_session(NEW_APP, "new")
        old_session = agent.open_session(OLD_APP, "old")
        create = {
            "client": "old",
            "seq": 2,
            "seq_low": 1,
            "kind": "txn",
            "body": txn_create_roots({"k": "list"}, "old"),
            "session": old_session,
        }
        created = agent.send(OLD_APP, wire.FrameType.PROPOSE, create)
        agent.run_until("the root created", lambda: created in agent.answers(OLD_APP))
        for app in agent.frames.values():
            app.clear()

        # One turn: both apps' writes reach the agent together and apply in one Ready.
        new_many = [[100 + i, 2 + i, "txn", txn_extend("k", [i])] for i in range(3)]
        agent.send(
            NEW_APP, wire.FrameType.PROPOSE_MANY, many_body("new", new_session, new_many, True)
        )
        lone = {
            "client": "new",
            "seq": 5,
            "seq_low": 1,
            "kind": "txn",
            "body": txn_extend("k", [3]),
            "session": new_session,
            wire.REPLY_MANY_FIELD: True,
        }
        lone_req = agent.send(NEW_APP, wire.FrameType.PROPOSE, lone)
        old_many = [[200 + i, 3 + i, "txn", txn_extend("k", [10 + i])] for i in range(3)]
        agent.send(
            OLD_APP, wire.FrameType.PROPOSE_MANY, many_body("old", old_session, old_many, False)
        )
        new_reqs = {100, 101, 102, lone_req}
        agent.run_until(
            "every write answered",
            lambda: (
                set(agent.answers(NEW_APP)) >= new_reqs
                and set(agent.answers(OLD_APP)) >= {200, 201, 202}
            ),
        )
        # The apps see no error, and each write applied once, "ok".
        assert all(a["outcome"] == "ok" for a in agent.answers(NEW_APP).values())
        assert all(a["outcome"] == "ok" for a in agent.answers(OLD_APP).values())
        indexes = [a["index"] for a in (agent.answers(NEW_APP) | agent.answers(OLD_APP)).values()]
        assert len(set(indexes)) == 7

        (many,) = agent.frames[NEW_APP]  # one frame for the four
        assert many.type is wire.FrameType.REPLY_MANY and many.req_id == 0
        assert {req for req, _ in wire.parse_reply_many(many.body)} == new_reqs
        old_types = [frame.type for frame in agent.frames[OLD_APP]]
        assert old_types == [wire.FrameType.REPLY] * 3
        counters = agent.server.counters
        assert counters["reply_many_frames"] == 1 and counters["reply_many_items"] == 4

        # A lone answer for a connection that reads REPLY_MANY stays a REPLY.
        agent.frames[NEW_APP].clear()
        lone["seq"], lone["body"] = 6, txn_extend("k", [4])
        lone_req = agent.send(NEW_APP, wire.FrameType.PROPOSE, lone)
        agent.run_until("the lone write answered", lambda: lone_req in agent.answers(NEW_APP))
        assert [frame.type for frame in agent.frames[NEW_APP]] == [wire.FrameType.REPLY]
    finally:
        agent.server.storage.close()


def new_app_with_root(tmp_path: Path) -> tuple[OneAgent, int]:
    """A leading agent, the new app's session, and a list root "k" to extend."""
    agent = OneAgent(tmp_path)
    agent.run_until("a single voter leads", lambda: agent.server.node.role is Role.LEADER)
    session = agent.open_session(NEW_APP, "new")
    create = [[50, 2, "txn", txn_create_roots({"k": "list"}, "new")]]
    agent.send(NEW_APP, wire.FrameType.PROPOSE_MANY, many_body("new", session, create, True))
    agent.run_until("the root created", lambda: 50 in agent.answers(NEW_APP))
    agent.frames[NEW_APP].clear()
    return agent, session


def test_more_answers_than_one_frame_carries_go_in_frames_of_the_limit(tmp_path: Path) -> None:
    agent, session = new_app_with_root(tmp_path)
    try:
        count = wire.REPLY_ITEMS_MAX + 44
        items = [[1_000 + i, 3 + i, "txn", txn_extend("k", [i])] for i in range(count)]
        for start in range(0, count, wire.PROPOSE_ITEMS_MAX):
            chunk = items[start : start + wire.PROPOSE_ITEMS_MAX]
            agent.send(NEW_APP, wire.FrameType.PROPOSE_MANY, many_body("new", session, chunk, True))
        agent.run_until("every write answered", lambda: len(agent.answers(NEW_APP)) == count)
        sizes = [len(wire.parse_reply_many(f.body)) for f in agent.frames[NEW_APP]]
        assert sizes == [wire.REPLY_ITEMS_MAX, 44], sizes
        assert all(a["outcome"] == "ok" for a in agent.answers(NEW_APP).values())
    finally:
        agent.server.storage.close()


def test_answers_that_do_not_fit_one_frame_go_as_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REPLY_MANY above FRAME_BYTES_MAX (long error texts would make one) is not sent: its
    answers go as REPLYs, each bounded on its own. The bound is lowered to what one REPLY fits."""
    agent, session = new_app_with_root(tmp_path)
    try:
        items = [[2_000 + i, 3 + i, "txn", txn_extend("k", [i])] for i in range(4)]
        agent.send(NEW_APP, wire.FrameType.PROPOSE_MANY, many_body("new", session, items, True))
        monkeypatch.setattr(wire, "FRAME_BYTES_MAX", 120)
        agent.run_until("every write answered", lambda: len(agent.answers(NEW_APP)) == 4)
        assert [f.type for f in agent.frames[NEW_APP]] == [wire.FrameType.REPLY] * 4
        assert all(a["outcome"] == "ok" for a in agent.answers(NEW_APP).values())
        assert agent.server.counters["reply_many_frames"] == 0
    finally:
        agent.server.storage.close()
