"""An agent that meets an entry it cannot apply halts (frozen core, STATUS says why), and a
restart is refused while its store is below that entry: never a silent crash loop.

One real single-voter Server runs in a thread of this process (so the test can plant a bug in
apply), bound to 127.0.0.1 on free ports and stopped in teardown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import config as config_module
from superstatic_agent import statemachine as sm_module
from superstatic_agent.server import Server
from superstatic_agent.storage import POISON_FILE, StartRefused
from superstatic_bench.loadgen import AgentError, RawClient, new_oid, txn_extend
from support.agent_thread import TIMEOUT_MS, Agent
from support.halts import poison_with_a_subscriber

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import ops, wire
from superstatic.protocol.codec import Ref


def test_an_entry_apply_cannot_handle_halts_the_agent_and_refuses_a_restart(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = agent.client
    assert raw.propose(raw.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    # ops.check_fits runs for every op the agent applies (agent/nodeops.py): a bug there
    # stands for any bug of apply.
    real_check_fits = sm_module.ops.check_fits

    def buggy(kind: str, op: list[Any]) -> None:
        if op[0] == "extend" and op[2] == ["poison"]:
            raise RuntimeError("a bug in apply")
        real_check_fits(kind, op)

    monkeypatch.setattr(sm_module.ops, "check_fits", buggy)
    with pytest.raises(AgentError) as caught:
        raw.propose(txn_extend("l", ["poison"]), timeout_ms=TIMEOUT_MS)
    assert caught.value.code == wire.ErrorCode.UNAVAILABLE
    status = agent.status()
    halted = status["halted"]
    assert halted["reason"] == "poisoned", status
    index = halted["index"]
    assert f"entry {index} (term" in halted["message"] and "RuntimeError" in halted["message"]
    assert status["applied"] == index - 1
    # Still serving: STATUS, INSPECT; writes are refused with the reason.
    reply = raw.request(wire.FrameType.INSPECT, {"root": "l"}, timeout_ms=TIMEOUT_MS)
    assert (reply["found"], reply["value"]) == (True, [])
    with pytest.raises(AgentError, match="poisoned"):
        raw.propose(txn_extend("l", ["other"]), timeout_ms=TIMEOUT_MS)
    assert (agent.config.data_dir / POISON_FILE).exists()
    agent.stop()
    # A restart would meet the same entry: refused, naming it, until the marker goes.
    with pytest.raises(StartRefused, match=f"entry {index}"):
        Server(agent.config)
    monkeypatch.setattr(sm_module.ops, "check_fits", real_check_fits)  # "upgraded" superstatic
    (agent.config.data_dir / POISON_FILE).unlink()
    again = Agent(agent.config.data_dir)
    try:
        again.client.propose(txn_extend("l", ["later"]), timeout_ms=TIMEOUT_MS)
        reply = again.client.request(wire.FrameType.INSPECT, {"root": "l"}, timeout_ms=TIMEOUT_MS)
        assert reply["value"] == ["poison", "later"]
        assert again.status()["halted"] is None
    finally:
        again.stop()


def test_a_write_that_does_not_fit_halts_writes_not_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last resort behind the reserves: with no reserve at all, the write that meets a
    full map aborts whole; the agent stops writing (STORE_FULL to apps), keeps answering
    STATUS and reads, and a restart with a larger --map-bytes carries on."""
    monkeypatch.setattr(config_module, "STORE_RESERVE_DIVISOR", 1 << 40)  # no reserve
    agent = Agent(tmp_path / "a", map_bytes=config_module.MAP_BYTES_MIN)
    try:
        raw = agent.client
        created = raw.propose(raw.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)
        assert created["outcome"] == "ok"
        for i in range(200):
            oid = new_oid(raw.client_id)  # rules 3: the proposer's own oids
            body = ops.encode_txn(
                {},
                [["new", oid, "list", ["x" * 300_000]], ["set", "@roots", f"r{i}", Ref(oid)]],
            )
            try:
                assert raw.propose(body, timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
            except AgentError:
                break
        status = agent.status()
        assert status["halted"]["reason"] == "store_full", status["halted"]
        assert "--map-bytes" in status["halted"]["message"]
        with pytest.raises(AgentError) as caught:
            raw.propose(txn_extend("l", ["more"]), timeout_ms=TIMEOUT_MS)
        assert caught.value.code == wire.ErrorCode.STORE_FULL
        reply = raw.request(wire.FrameType.INSPECT, {"root": "l"}, timeout_ms=TIMEOUT_MS)
        assert (reply["found"], reply["value"]) == (True, [])
    finally:
        agent.stop()
    bigger = Agent(tmp_path / "a", map_bytes=4 * config_module.MAP_BYTES_MIN)
    try:
        reply = bigger.client.propose(txn_extend("l", ["more"]), timeout_ms=TIMEOUT_MS)
        assert reply["outcome"] == "ok"
        assert bigger.status()["halted"] is None
    finally:
        bigger.stop()


def test_a_halted_agent_tells_its_subscribers_at_once_and_refuses_new_apps(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 28: a halted agent's subscribers heard nothing more (poisoned, rules_unknown:
    only a damaged store ended its streams), so their apps waited for their request timeouts.
    Every halt now ends every stream with `unavailable` naming the reason, refuses new
    subscriptions and HELLO: the library moves to another agent at once."""
    app, sub = poison_with_a_subscriber(agent, monkeypatch)
    try:
        # The subscriber is told (the frames before it are its stream's, up to the halt).
        with pytest.raises(AgentError, match=r"stopped \(poisoned\)") as told:
            app.wait(sub, timeout_ms=TIMEOUT_MS)
        assert told.value.code == wire.ErrorCode.UNAVAILABLE
        # A new subscription is refused (on a new connection: one refused already is told
        # no more, review 35, tests/unit/test_review35_refusal_loop.py).
        other = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
        try:
            again = other.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
            with pytest.raises(AgentError, match=r"stopped \(poisoned\)"):
                other.wait(again, timeout_ms=TIMEOUT_MS)
        finally:
            other.close()
        hello = app.send(wire.FrameType.HELLO, {"client": "app"})
        with pytest.raises(AgentError, match=r"stopped \(poisoned\)") as refused:
            app.wait(hello, timeout_ms=TIMEOUT_MS)
        assert refused.value.code == wire.ErrorCode.UNAVAILABLE
        # STATUS and INSPECT still answer (what it applied).
        reply = agent.client.request(wire.FrameType.INSPECT, {"root": "l"}, timeout_ms=TIMEOUT_MS)
        assert reply["found"]
    finally:
        app.close()
