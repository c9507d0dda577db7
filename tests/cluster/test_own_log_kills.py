"""kill -9 of agents in the middle of a stream of writes, with the Raft log in segment files of
its own (format 5, docs/data-model-v2.md 8.18): nothing acknowledged is lost.

Three real agents with small log segments and a short retained log, so that the stream crosses
segments and compaction deletes some while agents die. A writer thread (the app, through the
public API) writes one transaction after another, each a ~40 KB value and a unique token
appended to a list; meanwhile the leader, a follower, then all three agents at once, then the
leader again are killed with SIGKILL mid-stream and started again on their data directories.
Every call returns (acknowledged) or raises Unavailable saying whether the outcome is known;
afterwards every acknowledged token is in the list exactly once, no token whose failure said
"not committed" is there, and every agent, read on its own, holds the same list.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

# The smallest segment the agent accepts with its default body_bytes_max (config.py): ~600 of
# this test's writes fill one.
LOG_SEGMENT_BYTES = 24 << 20
LOG_RETAIN_ENTRIES = 150
PAD = "x" * 40_000
WRITES_PER_ROUND = 200  # acknowledged or failed calls between two kills
ROUNDS = ("leader", "follower", "all", "leader")
WRITES_MAX = 20_000
TIMEOUT_S_TEST = 180.0
UNAVAILABLE_PAUSE_S = 0.05  # while every agent is down: not a busy loop of failing calls


def test_kill_9_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    args = ["--log-segment-bytes", str(LOG_SEGMENT_BYTES)]
    args += ["--log-retain-entries", str(LOG_RETAIN_ENTRIES)]
    with LocalCluster(tmp_path / "agents", size=3, agent_args=args) as cluster:
        cluster.start()
        cluster.leader()
        superstatic.connect(cluster.client_endpoints())
        acked: list[str] = []
        unknown: list[str] = []
        refused: list[str] = []
        try:
            tokens = superstatic.root("tokens", list)
            blob = superstatic.root("blob", dict)
            progress = threading.Semaphore(0)
            stop = threading.Event()

            def writer() -> None:
                for i in range(WRITES_MAX):
                    if stop.is_set():
                        return
                    token = f"t{i}"
                    try:
                        with superstatic.transaction():
                            blob["v"] = PAD + token
                            tokens.append(token)
                        acked.append(token)
                    except superstatic.Unavailable as exc:
                        (refused if exc.outcome_known else unknown).append(token)
                        time.sleep(UNAVAILABLE_PAUSE_S)
                    progress.release()

            thread = threading.Thread(target=writer)
            thread.start()
            try:
                for victims in ROUNDS:
                    for _ in range(WRITES_PER_ROUND):
                        assert progress.acquire(timeout=TIMEOUT_S_TEST), "writes stalled"
                    leader = cluster.leader(TIMEOUT_S_TEST)
                    if victims == "leader":
                        killed = [leader]
                    elif victims == "follower":
                        killed = [next(i for i in cluster.agents if i != leader)]
                    else:
                        killed = list(cluster.agents)
                    for node_id in killed:
                        cluster.kill(node_id)  # mid-stream: the writer is still writing
                    for node_id in killed:
                        cluster.start_agent(node_id)
                for _ in range(WRITES_PER_ROUND):
                    assert progress.acquire(timeout=TIMEOUT_S_TEST), "writes stalled"
            finally:
                stop.set()
                thread.join(TIMEOUT_S_TEST)
            assert not thread.is_alive(), "writes did not finish"
            superstatic.sync()
            stored = list(tokens)
        finally:
            superstatic.close()
        assert len(acked) >= len(ROUNDS) * WRITES_PER_ROUND // 2, "too few writes succeeded"
        assert len(stored) == len(set(stored)), "a write applied twice"
        lost = set(acked) - set(stored)
        assert not lost, f"acknowledged writes lost: {sorted(lost)[:10]}"
        assert not set(refused) & set(stored), "a write said not committed was applied"
        assert set(stored) <= set(acked) | set(unknown)
        # Each agent on its own (started again, caught up) holds the same list.
        for node_id in cluster.agents:
            superstatic.connect(cluster.client_endpoints([node_id]))
            try:
                superstatic.sync()
                assert list(superstatic.root("tokens", list)) == stored, node_id
            finally:
                superstatic.close()
        # What the run was meant to cover: the stream crossed segments and compaction deleted
        # some (the first segment is gone) on every agent.
        for spec in cluster.agents.values():
            names = sorted(p.name for p in (spec.data_dir / "raftlog").glob("*.seg"))
            assert names and names[0] != f"{1:016x}.seg", (spec.id, names)
