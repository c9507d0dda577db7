"""Review of the lean write path (issue 11 items 3-4): answers by event against real agents.

A write is answered by its stream event (no REPLY) only when the app did not ask for a REPLY;
an app tracing its calls (SUPERSTATIC_TRACE) asks for one, whether or not the agents trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import txn_create_roots, txn_extend

from superstatic.client.connection import Connection
from superstatic.objects import trace as app_trace
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

# The resend timer is far above the request's deadline: a write whose answer never comes
# fails (Unavailable) instead of being rescued by a resend's dup REPLY. Bounds, not timings.
TIMEOUT_MS_RESEND = 120_000
TIMEOUT_MS_REQUEST = 15_000


class NullReplica:
    """A ReplicaSink that only follows the index."""

    def __init__(self) -> None:
        self.applied_index = 0

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, bytes]]) -> None:
        for _ in nodes:
            pass
        self.applied_index = index

    def apply_events(self, events: Sequence[tuple[Any, ...]]) -> None:
        for event in events:
            self.applied_index = event[0]


def test_a_traced_write_to_agents_that_do_not_trace_is_still_answered(tmp_path: Path) -> None:
    """The app traces its calls, the agent does not (no --trace): the traced write asks for a
    REPLY (it would carry the stamps) and does not settle on its event; before the fix the
    agent, not tracing, took it for an untraced write of an "answers" stream and sent no
    REPLY, so every traced call waited for its resend (timeout_ms_resend) and its dup."""
    with LocalCluster(tmp_path / "agents", size=1) as cluster:
        cluster.start()
        leader = cluster.leader()
        conn = Connection(
            [cluster.agents[leader].client_endpoint],
            NullReplica(),
            timeout_ms_request=TIMEOUT_MS_REQUEST,
            timeout_ms_resend=TIMEOUT_MS_RESEND,
            timeout_ms_close=500,
            keys=cluster.keys("app"),
        )
        try:
            assert conn.submit(txn_create_roots({"w": "list"})).outcome == "ok"
            app_trace.enable(True)
            try:
                committed = conn.submit(txn_extend("w", ["traced"]))
            finally:
                app_trace.enable(False)
                app_trace.take()
            assert committed.outcome == "ok", committed.error
            assert committed.trace is not None and "reply_rx" in committed.trace
        finally:
            conn.close()
