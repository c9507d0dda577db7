"""The connection's pause between rounds of endpoints when no agent answers (the nemesis's
finding 3, docs/reliability.md): with every agent down it used to open a socket per refusal,
thousands a second, until the process ran out of file descriptors.

These count connection attempts and file descriptors, never time: the bounds follow from
`reconnect_delay_ms_min` and the time that actually passed, and a slow machine only makes
fewer attempts.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_connection import AgentPeer, RecordingReplica

from superstatic.client.connection import Committed, Connection, reconnect_delay_ms
from superstatic.protocol.errors import Error
from superstatic.tools.localcluster import free_ports

WAIT_S = 20.0  # a bound for things that should happen, never a timing assertion
POLL_S = 0.02
DELAY_MS_MIN = 50
DELAY_MS_MAX = 200
ENDPOINTS = 3
ROUNDS_WANTED = 4
# A connection's own descriptors (its context, wake-up pair, DEALER, monitor, TCP socket) with
# room to spare; a connection failing over without pause held hundreds within a second.
FDS_CONNECTION_MAX = 40


class Lowest(random.Random):
    """Jitter that always picks the shortest pause allowed: the most attempts possible."""

    def uniform(self, a: float, b: float) -> float:
        return a


class Highest(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_pause_doubles_from_the_minimum_to_the_maximum_with_jitter() -> None:
    assert [reconnect_delay_ms(r, 100, 1_000, Highest()) for r in range(1, 7)] == [
        200,
        400,
        800,
        1_000,
        1_000,
        1_000,
    ]
    assert [reconnect_delay_ms(r, 100, 1_000, Lowest()) for r in range(1, 6)] == [
        100,
        200,
        400,
        500,
        500,
    ]
    rng = random.Random(7)
    pauses = [reconnect_delay_ms(r, 100, 1_000, rng) for r in range(1, 200)]
    assert all(100 <= p <= 1_000 for p in pauses)
    assert len(set(pauses)) > 100  # jittered: apps of a restarted cluster do not move in step
    assert reconnect_delay_ms(10**6, 100, 100, rng) == 100  # no overflow, never below the min


def test_bad_reconnect_limits_are_refused_by_name() -> None:
    for low, high in ((0, 100), (200, 100), (-5, 10)):
        with pytest.raises(Error, match="reconnect_delay_ms_min <= reconnect_delay_ms_max"):
            Connection(
                ["tcp://127.0.0.1:1"],
                RecordingReplica(),
                reconnect_delay_ms_min=low,
                reconnect_delay_ms_max=high,
            )


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_with_every_agent_down_attempts_are_paced_and_descriptors_bounded() -> None:
    endpoints = [f"tcp://127.0.0.1:{port}" for port in free_ports(ENDPOINTS)]
    fds_before = open_fds()
    fds_seen = fds_before
    started = time.monotonic()
    conn = Connection(
        endpoints,
        RecordingReplica(),
        timeout_ms_request=int(WAIT_S * 1000),
        timeout_ms_close=300,
        reconnect_delay_ms_min=DELAY_MS_MIN,
        reconnect_delay_ms_max=DELAY_MS_MAX,
        rng=Lowest(),
    )
    peer: AgentPeer | None = None
    try:
        with ThreadPoolExecutor(1) as pool:
            # A write made while nothing listens: it waits, and goes out once an agent is up.
            write = pool.submit(conn.submit, b"during the outage")
            deadline = time.monotonic() + WAIT_S
            while conn.failovers < ROUNDS_WANTED * ENDPOINTS:
                assert time.monotonic() < deadline, f"only {conn.failovers} failovers"
                fds_seen = max(fds_seen, open_fds())
                time.sleep(POLL_S)
            failovers = conn.failovers
            elapsed_s = time.monotonic() - started
            # Every round after a failed one starts at least DELAY_MS_MIN after the previous.
            rounds_max = 1 + int(elapsed_s * 1000 / DELAY_MS_MIN)
            assert failovers <= ENDPOINTS * rounds_max, (failovers, elapsed_s)
            assert fds_seen - fds_before <= FDS_CONNECTION_MAX, (fds_before, fds_seen)
            # An agent comes up at one of the endpoints: the paused rounds reach it.
            peer = AgentPeer(endpoint=endpoints[1])
            committed = write.result(WAIT_S)
        assert isinstance(committed, Committed) and committed.outcome == "ok"
        assert conn.endpoint == endpoints[1]
        settled = conn.failovers
        assert conn.submit(b"after").outcome == "ok"
        assert conn.failovers == settled  # connected: no more moving around
    finally:
        conn.close()
        if peer is not None:
            peer.stop()
