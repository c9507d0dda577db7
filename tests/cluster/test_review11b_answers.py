"""Review of the lean write path (issue 11 items 3-4): answers by event against real agents.

A write is answered by its stream event (no REPLY) only when the app did not ask for a REPLY;
an app tracing its calls (SUPERSTATIC_TRACE) asks for one, whether or not the agents trace.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import txn_create_roots, txn_extend
from support.null_replica import NullReplica
from test_lean_path import inspect_when_applied

import superstatic
from superstatic.client import default as session_default
from superstatic.client import oneshot
from superstatic.client.connection import Connection
from superstatic.objects import trace as app_trace
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

# The resend timer is far above the request's deadline: a write whose answer never comes
# fails (Unavailable) instead of being rescued by a resend's dup REPLY. Bounds, not timings.
TIMEOUT_MS_RESEND = 120_000
TIMEOUT_MS_REQUEST = 15_000


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
            assert conn.submit(txn_create_roots({"w": "list"}, conn.client_id)).outcome == "ok"
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


WRITERS = 4
WRITES_BETWEEN = 5  # calls each writer returns before and after what the test does
TIMEOUT_S_JOIN = 180.0


class Writers:
    """WRITERS threads appending unique values to one list root, each in its order, until
    told to stop, recording each call's outcome: "ok", "known" (not committed), "unknown"."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.done = [0] * WRITERS  # calls returned, per writer
        self.stop = threading.Event()
        self.log = superstatic.root("restarts", list)
        self.threads = [threading.Thread(target=self.write, args=(w,)) for w in range(WRITERS)]
        for thread in self.threads:
            thread.start()
        self.wait_for_more()  # writes in flight from every writer before anything happens

    def write(self, w: int) -> None:
        i = 0
        while not self.stop.is_set():
            value = f"{w}-{i}"
            try:
                self.log.append(value)
                self.outcomes[value] = "ok"
            except Unavailable as exc:
                self.outcomes[value] = "known" if exc.outcome_known else "unknown"
            i += 1
            self.done[w] = i

    def wait_for_more(self) -> None:
        """Until every writer returned WRITES_BETWEEN more calls (a bounded wait)."""
        wanted = [n + WRITES_BETWEEN for n in self.done]
        deadline = time.monotonic() + TIMEOUT_S_JOIN
        while any(n < want for n, want in zip(self.done, wanted, strict=True)):
            assert time.monotonic() < deadline, f"writers stuck at {self.done}"
            time.sleep(0.01)

    def join(self) -> int:
        """More writes after what happened, then stops the writers; the read index after."""
        self.wait_for_more()
        self.stop.set()
        for thread in self.threads:
            thread.join(TIMEOUT_S_JOIN)
            assert not thread.is_alive(), "a writer never returned"
        return connection().read_index()

    def check(self, final: list[Any]) -> None:
        """A call that returned applied exactly once, one that failed as not committed never,
        one whose outcome is unknown at most once; each writer's values in its order."""
        assert len(self.outcomes) == sum(self.done)
        for value, outcome in self.outcomes.items():
            count = final.count(value)
            if outcome == "ok":
                assert count == 1, (value, count)
            elif outcome == "known":
                assert count == 0, (value, count)
            else:
                assert count <= 1, (value, count)
        for w in range(WRITERS):
            mine = [int(v.split("-")[1]) for v in final if v.split("-")[0] == str(w)]
            assert mine == sorted(mine), (w, mine)


def connection() -> Connection:
    conn = session_default.get().connection
    assert isinstance(conn, Connection)
    return conn


def test_writes_answered_by_events_of_an_agent_that_restarts_apply_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's only endpoint is a follower, so its writes are forwarded and answered by its
    stream's events (coalesced when concurrent). The agent is killed (SIGKILL) with writes in
    flight and started again: the connection comes back to it, resends every unanswered
    write with its seq, and each write's outcome is truthful (Writers.check)."""
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        leader = cluster.leader()
        follower = next(i for i in cluster.agents if i != leader)
        superstatic.connect(cluster.client_endpoints([follower]))
        try:
            writers = Writers()
            cluster.kill(follower)
            cluster.start_agent(follower)
            index = writers.join()
            assert connection().failovers >= 1  # the kill reached the connection
        finally:
            superstatic.close()
        final = inspect_when_applied(cluster, leader, "restarts", index)
    writers.check(final)


def test_coalesced_writes_on_the_link_through_leader_changes_apply_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app is at a follower and knows every endpoint: its concurrent writes go coalesced
    over the link to the leader. Leadership moves to the app's own agent and back to another
    one, then that leader is killed, all with writes in flight: each outcome is truthful."""
    monkeypatch.delenv("SUPERSTATIC_COALESCE", raising=False)
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        first = cluster.leader()
        own, third = (i for i in cluster.agents if i != first)
        superstatic.connect(cluster.client_endpoints([own, first, third]))
        try:
            writers = Writers()
            assert connection().sent_to_leader > 0
            for target in (own, third):
                transfer = {"op": "transfer", "node": target}
                endpoint = cluster.agents[cluster.leader()].client_endpoint
                oneshot.request(endpoint, wire.FrameType.MEMBERS, transfer)
                cluster.wait_until(
                    lambda t=target: cluster.leader() == t, "the transfer", TIMEOUT_S_JOIN
                )
                writers.wait_for_more()
            cluster.kill(third)
            index = writers.join()
        finally:
            superstatic.close()
        final = inspect_when_applied(cluster, own, "restarts", index)
    writers.check(final)
