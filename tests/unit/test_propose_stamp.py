"""The leader stamps log time as it first encodes a proposal (docs/data-model-v2.md 8.8): the
entry it hands the core carries its stamp without a second parse and encode (`stamp_payload`),
one stamp per batch as before. A real agent (a `Server` in a thread) watched from its loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from superstatic_agent import server as server_module
from superstatic_agent.payload import parse_payload
from superstatic_bench.loadgen import txn_extend
from support.agent_thread import TIMEOUT_MS, Agent

from superstatic.protocol import wire

WRITES = 6


def test_a_leaders_proposals_reach_the_core_stamped_without_a_second_encode(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    proposed: list[bytes] = []
    restamped: list[bytes] = []
    lock = threading.Lock()
    node = agent.server.node
    propose, stamp_payload = node.propose, server_module.stamp_payload

    def proposing(datas: Any) -> Any:
        with lock:
            proposed.extend(datas)
        return propose(datas)

    def restamping(data: bytes, time_ms: int) -> bytes:
        with lock:
            restamped.append(data)
        return stamp_payload(data, time_ms)

    monkeypatch.setattr(node, "propose", proposing)
    monkeypatch.setattr(server_module, "stamp_payload", restamping)
    client = agent.client
    client.open_session(TIMEOUT_MS)
    assert client.propose(client.roots_txn({"w": "list"}))["outcome"] == "ok"
    # Several in one turn: one PROPOSE_MANY frame, one batch, one stamp.
    items = [[i + 1, client.take_seq(), "txn", txn_extend("w", [i])] for i in range(WRITES)]
    body = {"client": client.client_id, "seq_low": 1, "session": client.session, "items": items}
    client.send(wire.FrameType.PROPOSE_MANY, body)
    for req_id in range(1, WRITES + 1):
        assert client.wait(req_id, TIMEOUT_MS)["outcome"] == "ok"
    with lock:
        payloads = [parse_payload(data) for data in proposed]
        assert not restamped
    assert len(payloads) == WRITES + 2  # the open, the roots, the writes
    # Stamped (0 is unstamped), never going back within the leadership (logtime.py).
    times = [p.time_ms for p in payloads]
    assert all(t > 0 for t in times) and times == sorted(times), times
    batch = {p.time_ms for p in payloads if p.body and p.seq >= items[0][1]}
    assert len(batch) == 1, batch
