"""Review 35: a halted agent must not answer an app's resubscribe loop without pause.

rulesnew made every halt (poisoned, rules_unknown, store_full, damaged) refuse every stream
with `unavailable`. The library of this branch fails over on that refusal (a new connection).
The library released before it (main's superstatic/client/connection.py) resubscribes at
once, on the same connection, on any refused stream; the agent refused again at once, and so
on: measured with main's library against this branch's damaged agent
(tests/cluster/test_halted_agent_failover.py with connection.py from main), 112,962
"resubscribing" log lines in ~60 s at load average ~4, a core busy on each side. Each
refusal refreshes the app's last_rx, so its silence failover never fires: the loop does not
end while the agent runs. Before rulesnew only a damaged store did this; now a full disk
(store_full) does, the most common halt, for every app still on the previous release.

A connection already refused is refused no more: its next SUBSCRIBEs go unanswered (counted,
`subscribe_refused_again`). That app then waits as it did before rulesnew for these halts;
this branch's library never resubscribes on a refused connection, so it loses nothing.
"""

from __future__ import annotations

import pytest
from superstatic_bench.loadgen import AgentError, RawClient
from support.agent_thread import TIMEOUT_MS, Agent
from support.halts import poison_with_a_subscriber

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import wire

# Resubscribes an old library sends in a burst (it sends one per refusal; the test sends them
# all at once and needs no answer to come).
RESUBSCRIBES = 50


def test_a_halted_agent_refuses_a_connection_once_not_a_resubscribe_loop(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, sub = poison_with_a_subscriber(agent, monkeypatch)
    try:
        with pytest.raises(AgentError, match=r"stopped \(poisoned\)"):
            app.wait(sub, timeout_ms=TIMEOUT_MS)  # told once: the end of its stream

        # An old library's loop: resubscribe on the same connection after each refusal.
        again = [
            app.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
            for _ in range(RESUBSCRIBES)
        ]
        # A barrier: the agent takes a connection's frames in order, so once PING is answered
        # every SUBSCRIBE before it was handled.
        ping = app.send(wire.FrameType.PING, {})
        answered: list[int] = []
        while True:
            frame = app.recv(TIMEOUT_MS)
            assert frame is not None, "PING unanswered"
            if frame.req_id == ping:
                break
            if frame.req_id in again:
                answered.append(frame.req_id)
        assert answered == [], f"{len(answered)} of {RESUBSCRIBES} resubscribes answered again"
        assert agent.status()["dropped"]["subscribe_refused_again"] == RESUBSCRIBES
        # A new connection (the library of this branch fails over with one) is still told.
        other = RawClient(agent.config.client_endpoint, keys=NO_KEYS)
        try:
            fresh = other.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
            with pytest.raises(AgentError, match=r"stopped \(poisoned\)") as told:
                other.wait(fresh, timeout_ms=TIMEOUT_MS)
            assert told.value.code == wire.ErrorCode.UNAVAILABLE
        finally:
            other.close()
    finally:
        app.close()
