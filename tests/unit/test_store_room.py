"""The agent's room accounting (agent/server.py, SPACE_ESTIMATE_BYTES_MAX): the store is
measured (Storage.space) only when it matters, and the reserve still refuses writes in time.

One real single-voter Server runs in a thread of this process (the Agent helper of
test_agent_halts), bound to 127.0.0.1 on free ports and stopped in teardown.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from superstatic_agent import config as config_module
from superstatic_agent import server as server_module
from superstatic_agent.storage import Storage
from superstatic_bench.loadgen import AgentError, new_oid, txn_extend
from support.agent_thread import TIMEOUT_MS, Agent

from superstatic.protocol import ops, wire
from superstatic.protocol.codec import Ref

WRITES = 40


def _count_measurements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    measure = Storage.space

    def counted(self: Storage) -> object:
        calls[0] += 1
        return measure(self)

    monkeypatch.setattr(Storage, "space", counted)
    return calls


def test_the_store_is_not_measured_after_every_write_while_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Housekeeping measures on its own clock; pushed out of the test's window so only the
    # measurements the writes cause are counted.
    monkeypatch.setattr(server_module, "HOUSEKEEPING_MS", 3_600_000)
    calls = _count_measurements(monkeypatch)
    agent = Agent(tmp_path / "a")
    try:
        assert agent.client.propose(agent.client.roots_txn({"l": "list"}))["outcome"] == "ok"
        before = calls[0]
        for i in range(WRITES):  # sequential: each is its own Ready, append and apply
            reply = agent.client.propose(txn_extend("l", [i]), timeout_ms=TIMEOUT_MS)
            assert reply["outcome"] == "ok"
        assert calls[0] - before <= 2, calls[0] - before
    finally:
        agent.stop()


def test_near_the_reserve_the_store_is_measured_after_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HOUSEKEEPING_MS", 3_600_000)
    monkeypatch.setattr(server_module, "SPACE_EXACT_RESERVES", 1 << 40)  # always "near"
    calls = _count_measurements(monkeypatch)
    agent = Agent(tmp_path / "a")
    try:
        assert agent.client.propose(agent.client.roots_txn({"l": "list"}))["outcome"] == "ok"
        before = calls[0]
        for i in range(WRITES):
            reply = agent.client.propose(txn_extend("l", [i]), timeout_ms=TIMEOUT_MS)
            assert reply["outcome"] == "ok"
        assert calls[0] - before >= WRITES, calls[0] - before
    finally:
        agent.stop()


def test_the_reserve_refuses_writes_before_the_store_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filling a small map with large writes: the agent answers STORE_FULL naming the reserve
    and --map-bytes, without halting, and keeps serving reads; between its measurements the
    charged estimate keeps it from writing into the reserve."""
    monkeypatch.setattr(server_module, "HOUSEKEEPING_MS", 3_600_000)
    agent = Agent(tmp_path / "a", map_bytes=config_module.MAP_BYTES_MIN)
    try:
        raw = agent.client
        assert raw.propose(raw.roots_txn({"l": "list"}))["outcome"] == "ok"
        refused = None
        for i in range(400):
            oid = new_oid(raw.client_id)  # rules 3: the proposer's own oids
            body = ops.encode_txn(
                {},
                [["new", oid, "list", ["x" * 100_000]], ["set", "@roots", f"r{i}", Ref(oid)]],
            )
            try:
                assert raw.propose(body, timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
            except AgentError as exc:
                refused = exc
                break
        assert refused is not None, "the map never filled"
        assert refused.code == wire.ErrorCode.STORE_FULL
        assert "reserve" in str(refused) and "--map-bytes" in str(refused)
        status = agent.status()
        assert status["halted"] is None, status["halted"]
        reply = raw.request(wire.FrameType.INSPECT, {"root": "l"}, timeout_ms=TIMEOUT_MS)
        assert (reply["found"], reply["value"]) == (True, [])
    finally:
        agent.stop()
