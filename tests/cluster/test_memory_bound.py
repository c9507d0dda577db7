"""Issue 8, reproduction 5: an agent's memory stays under the bound docs/agent.md states as a
formula of its flags (config.memory_bound_bytes), under a flood of large writes and with
subscribers that never read. On the old code 320 MB written gave 1.33 GiB per follower and
four subscribers that never read added 640 MiB.

Memory is the agents' anonymous RSS (RssAnon in /proc/PID/status, sampled while the flood
runs): LMDB's mapped file pages are the OS's page cache, not the agent's memory. The bound is
generous (every term at its maximum) but far below what the old code took.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
import zmq
from superstatic_agent.cli import config_from, parser
from superstatic_agent.config import memory_bound_bytes
from superstatic_bench.loadgen import RawClient, root_oid

from superstatic.client import keys as client_keys
from superstatic.protocol import codec, ops, wire
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MiB = 1 << 20
FLAGS = [
    "--log-retain-bytes", str(16 * MiB),
    "--log-retain-entries", "10000",
    "--events-cache-bytes-max", str(4 * MiB),
    "--node-cache-bytes-max", str(4 * MiB),
    "--subscriber-backlog-bytes-max", str(2 * MiB),
    "--subscriber-stall-ms", "2000",
    "--proposals-waiting-bytes-max", str(16 * MiB),
    "--inflight-max", "8",
]  # fmt: skip
WRITES = 300  # of 1 MB each: 300 MB through every agent
WINDOW = 8  # writes in flight
NON_READERS_PER_AGENT = 4
TIMEOUT_S = 300.0


def rss_anon_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon for {pid}")


class Sampler(threading.Thread):
    """The largest RssAnon of each pid, sampled every 50 ms until stopped."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for node, pid in self.pids.items():
                with contextlib.suppress(OSError, AssertionError):
                    self.peak[node] = max(self.peak[node], rss_anon_bytes(pid))
            time.sleep(0.05)


def non_reader(ctx: zmq.Context[bytes], endpoint: str) -> zmq.Socket[bytes]:
    """A subscriber that never reads: it asks for everything from index 0 and stops there.
    Its own receive queue is one frame, so what it is sent piles up at the agent."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    keys = client_keys.resolve(None)  # the suite's key (SUPERSTATIC_KEYS): clusters are keyed
    if keys is not None:
        keys.apply(sock)
    sock.connect(endpoint)
    sock.send(wire.encode(wire.FrameType.SUBSCRIBE, 1, {"from": 0, "model": wire.DATA_MODEL}))
    return sock


def test_memory_stays_under_the_stated_bound_under_floods(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=3, agent_args=FLAGS) as cluster:
        cluster.start()
        leader = cluster.leader()
        ctx: zmq.Context[bytes] = zmq.Context()
        sockets = [
            non_reader(ctx, spec.client_endpoint)
            for spec in cluster.agents.values()
            for _ in range(NON_READERS_PER_AGENT)
        ]
        # Every non-reader subscribed (the agents admitted their key): the flood reaches them.
        cluster.wait_until(
            lambda: all(
                cluster.status(n)["clients"]["subscribers"] >= NON_READERS_PER_AGENT
                for n in cluster.agents
            ),
            "the non-readers subscribed",
            60,
        )
        pids = {node: spec.pid for node, spec in cluster.agents.items() if spec.pid}
        idle = {node: rss_anon_bytes(pid) for node, pid in pids.items()}
        sampler = Sampler(pids)
        sampler.start()
        writer = RawClient(cluster.agents[leader].client_endpoint)
        try:
            assert writer.propose(writer.roots_txn({"d": "dict"}))["outcome"] == "ok"
            pending: dict[int, int] = {}
            acked = 0
            deadline = time.monotonic() + TIMEOUT_S
            for i in range(WRITES):
                value = codec.dumps(i)[:1] * 1_000_000  # 1 MB, different per write
                body = ops.encode_txn({}, [["set", root_oid("d"), i % 4, value]])
                seq = writer.take_seq()
                req = writer.send(wire.FrameType.PROPOSE, writer.propose_body(body, seq))
                pending[req] = seq
                while len(pending) >= WINDOW or (i == WRITES - 1 and pending):
                    assert time.monotonic() < deadline, "the flood did not finish"
                    frame = writer.recv(1_000)
                    if frame is not None and frame.req_id in pending:
                        assert frame.type is wire.FrameType.REPLY, frame.body
                        assert frame.body["outcome"] == "ok", frame.body
                        del pending[frame.req_id]
                        acked += 1
            assert acked == WRITES
            # The non-readers are dropped once their backlog stayed full subscriber_stall_ms.
            cluster.wait_until(
                lambda: all(
                    cluster.status(n)["clients"]["subscribers"] == 0 for n in cluster.agents
                ),
                "the subscribers that never read to be dropped",
                60,
            )
        finally:
            sampler.halt.set()
            sampler.join()
            writer.close()
            for sock in sockets:
                sock.close(linger=0)
            ctx.term()
        for spec in cluster.agents.values():
            assert spec.alive(), cluster.logs()
        config = config_from(
            parser().parse_args(
                [
                    "--id",
                    "a",
                    "--data-dir",
                    "x",
                    "--peers",
                    cluster.peers_arg,
                    "--client",
                    "tcp://127.0.0.1:1",  # only parsed (an unkeyed agent binds loopback only)
                    *FLAGS,
                ]
            )
        )
        # This test's transport term: the writer's window of 1 MB frames, and the entries of
        # one APPEND window queued at a follower (the peer frames in flight).
        transport = WINDOW * 1_100_000 + config.inflight_max * config.batch_bytes_max
        bound = memory_bound_bytes(
            config,
            agents=3,
            subscribers=NON_READERS_PER_AGENT + 1,
            transport_bytes=transport,
        )
        report = {n: (idle[n] // MiB, sampler.peak[n] // MiB, bound // MiB) for n in cluster.agents}
        print(f"\nRssAnon MiB per agent (idle, peak under the flood, bound): {report}")
        for node in cluster.agents:
            assert sampler.peak[node] <= bound, (node, report)
