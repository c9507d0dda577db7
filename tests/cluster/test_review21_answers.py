"""Review 21: a write answered by its stream event, whose event the stream then skips.

An app subscribed with "answers" gets no REPLY for a write that applied `ok` while its stream
was to carry the event (docs/agent.md, "Proposals and replies"). The agent decides that when
the entry applies; if the app's stream is behind then, and the log is compacted past its
cursor before the stream gets there, the stream jumps instead: a partial subscriber gets a held
snapshot (a LOADED `load` 0, docs/virtual-heap.md 4.1), a full one ERROR `lagging`, then a
SNAPSHOT when it resubscribes. Neither carries the write's event, and the write was answered
only by its resend after `timeout_ms_resend`, or, with a shorter `timeout_ms_request`, failed
as outcome UNKNOWN although it had committed.

One real agent, flags that make an app's stream slow on purpose, never a timing: every stream
frame waits for the app's acknowledgement (`--subscriber-backlog-bytes-max 1`), the app under
test acknowledges in its PINGs only, every PING_INTERVAL_MS_SLOW; the agent keeps a few entries
of log (`--log-retain-entries`) and none in memory (`--events-cache-bytes-max 1`, so a cursor
behind reads the store and finds the entries gone). Each round: the app writes A (its event
goes out, and the stream now waits for the app's next PING), then B (applied while the stream
waits: no REPLY), then another app writes past the log retention. At the app's next PING its
stream finds B's entry compacted and jumps past it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from superstatic_bench.loadgen import txn_create_roots, txn_extend
from support.null_replica import NullReplica
from test_lean_path import inspect_when_applied

from superstatic.client import oneshot
from superstatic.client.connection import Committed, Connection
from superstatic.objects.replica import Replica
from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

RETAIN_ENTRIES = 3
# The other app writes this many entries while the slow one waits for its PING: the log is
# compacted past the slow app's cursor (compaction keeps RETAIN_ENTRIES, at most 1.5 times).
WRITES_PAST = 4 * RETAIN_ENTRIES
PING_INTERVAL_MS_SLOW = 3_000
PING_INTERVAL_MS_FAST = 20  # the other app acknowledges its stream at once
# The resend timer is far beyond the deadline, so only the fix can answer a skipped write in
# time (bounds, not timings: a write answered at all is answered within a PING or two).
TIMEOUT_MS_RESEND = 600_000
TIMEOUT_MS_REQUEST = 20_000
ROUNDS_MAX = 8
WAIT_S = 60.0


def _flags() -> list[str]:
    return [
        "--log-retain-entries", str(RETAIN_ENTRIES),
        "--events-cache-bytes-max", "1",
        "--subscriber-backlog-bytes-max", "1",
    ]  # fmt: skip


def _connection(cluster: LocalCluster, ping_ms: int, heap: str) -> Connection:
    replica = Replica() if heap == "partial" else NullReplica()
    return Connection(
        cluster.client_endpoints(),
        replica,
        timeout_ms_request=TIMEOUT_MS_REQUEST,
        timeout_ms_resend=TIMEOUT_MS_RESEND,
        timeout_ms_agent_silence=4 * PING_INTERVAL_MS_SLOW,
        ping_interval_ms=ping_ms,
        timeout_ms_close=500,
        keys=cluster.keys("app"),
        heap=heap,
        cache_bytes=1 << 20 if heap == "partial" else 0,
    )


@pytest.mark.parametrize("heap", ["partial", "all"])
def test_a_write_whose_event_the_stream_skips_is_still_answered(tmp_path: Path, heap: str) -> None:
    with LocalCluster(tmp_path / "agents", size=1, agent_args=_flags()) as cluster:
        cluster.start()
        (agent,) = cluster.agents
        cluster.leader()
        other = _connection(cluster, PING_INTERVAL_MS_FAST, "all")
        slow = _connection(cluster, PING_INTERVAL_MS_SLOW, heap)
        rounds = 0
        try:
            assert other.submit(txn_create_roots({"w": "list"}, other.client_id)).outcome == "ok"
            # A round proves nothing when the slow app's PING comes between A's event and B, or
            # before the log is compacted past B: rounds go on until one made the stream jump
            # past a waiting write (before the fix, that round fails).
            while slow.resent_after_jumps == 0:
                assert rounds < ROUNDS_MAX, "no round made the stream skip a waiting write"
                n, rounds = rounds, rounds + 1
                assert slow.submit(txn_extend("w", [f"a{n}"])).outcome == "ok"
                # B goes out while the stream waits for the PING that acknowledges A's event.
                answers: list[Committed | BaseException] = []
                writer = threading.Thread(target=_submit, args=(slow, f"b{n}", answers))
                writer.start()
                _wait_for_value(cluster, agent, f"b{n}")
                for i in range(WRITES_PAST):
                    assert other.submit(txn_extend("w", [f"o{n}.{i}"])).outcome == "ok"
                writer.join(WAIT_S)
                assert not writer.is_alive(), "the write never returned"
                (answer,) = answers
                assert isinstance(answer, Committed), f"round {n}: {answer!r}"
                assert answer.outcome == "ok", answer
            # Each write applied once, resends and all.
            final = inspect_when_applied(cluster, agent, "w", other.read_index())
            for n in range(rounds):
                assert final.count(f"a{n}") == 1 and final.count(f"b{n}") == 1, final
        finally:
            slow.close()
            other.close()


def _submit(conn: Connection, value: str, out: list[Committed | BaseException]) -> None:
    try:
        out.append(conn.submit(txn_extend("w", [value])))
    except Unavailable as exc:
        out.append(exc)


def _wait_for_value(cluster: LocalCluster, agent: str, value: str) -> None:
    """Until the agent applied the write of `value` to the list root (a bounded wait)."""
    deadline = time.monotonic() + WAIT_S
    endpoint = cluster.agents[agent].client_endpoint
    while value not in oneshot.request(endpoint, wire.FrameType.INSPECT, {"root": "w"})["value"]:
        assert time.monotonic() < deadline, f"{value} was never applied"
        time.sleep(0.01)
