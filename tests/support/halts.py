"""Halting an in-process agent (support.agent_thread) by a bug in its apply, with an app
subscribed: what the tests of a halted agent's streams start from."""

from __future__ import annotations

from typing import Any

import pytest
from superstatic_agent import statemachine as sm_module
from superstatic_bench.loadgen import AgentError, RawClient, txn_extend

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import wire
from support.agent_thread import TIMEOUT_MS, Agent


def poison_with_a_subscriber(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> tuple[RawClient, int]:
    """Subscribes an app, then halts the agent (`poisoned`) by an entry its apply raises on.
    Returns the app and its SUBSCRIBE's request id; the caller closes the app."""
    raw = agent.client
    assert raw.propose(raw.roots_txn({"l": "list"}), timeout_ms=TIMEOUT_MS)["outcome"] == "ok"
    app = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
    try:
        sub = app.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
        assert app.recv(TIMEOUT_MS) is not None  # its first frame: the stream runs
        real_check_fits = sm_module.ops.check_fits

        def buggy(kind: str, op: list[Any]) -> None:
            if op[0] == "extend" and op[2] == ["poison"]:
                raise RuntimeError("a bug in apply")
            real_check_fits(kind, op)

        monkeypatch.setattr(sm_module.ops, "check_fits", buggy)
        with pytest.raises(AgentError):
            raw.propose(txn_extend("l", ["poison"]), timeout_ms=TIMEOUT_MS)
        assert agent.status()["halted"]["reason"] == "poisoned"
    except BaseException:
        app.close()
        raise
    return app, sub
