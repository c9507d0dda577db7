"""A full replica (`replicate="all"`) cut off from the cluster while its agent falls far behind
catches up by a SNAPSHOT loaded as its frames arrive (objects/snapshot_load.py; docs/library.md,
"The replica"): the objects user code held stay the same Python objects with the cluster's
current contents, a key deleted meanwhile is gone, an object created meanwhile appears.

Its only agent is stopped while another app commits; restarted, the agent installs a peer
snapshot (--snapshot-lag-entries-max lowered as in test_catchup_snapshot.py), so the entries
the app missed are not in its log and the app's new subscription starts with a snapshot of
everything, into a replica that already holds objects."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

LAG_ENTRIES_MAX = 5
WRITES = 30  # one log entry each: far more than LAG_ENTRIES_MAX behind
TIMEOUT_S = 60.0
FRAME_BYTES_MAX = 512  # the app's snapshot comes in many frames


def _counting_builds(replica: Replica) -> list[int]:
    """Counts the snapshots the stream starts loading into `replica` (the feeder asks the sink
    for a builder at each snapshot's first frame)."""
    made: list[int] = []
    make: Callable[[], Any] = replica.snapshot_builder

    def counted() -> Any:
        made.append(1)
        return make()

    replica.snapshot_builder = counted  # type: ignore[method-assign]
    return made


def test_a_full_replica_cut_off_past_its_agents_log_catches_up_by_snapshot(
    tmp_path: Path,
) -> None:
    flags = [
        "--snapshot-lag-entries-max", str(LAG_ENTRIES_MAX),
        "--snapshot-chunk-bytes-max", str(FRAME_BYTES_MAX),
    ]  # fmt: skip
    with LocalCluster(tmp_path / "agents", size=3, keyed=False, agent_args=flags) as cluster:
        cluster.start()
        leader = cluster.leader()
        own = next(i for i in cluster.voter_ids if i != leader)
        others = [i for i in cluster.voter_ids if i != own]
        writer_replica = Replica()
        writer = Session(
            writer_replica, Connection(cluster.client_endpoints(others), writer_replica)
        )
        superstatic.connect(cluster.client_endpoints([own]), replicate="all")
        try:
            table = superstatic.root("table", dict)
            table.update({"a": {"n": 0}, "gone": [1, 2], "same": {"k": "v"}})
            a, gone, same = table["a"], table["gone"], table["same"]
            superstatic.sync()
            builds = _counting_builds(session_default.get().replica)

            cluster.stop(own)
            theirs = writer.root("table", dict)
            for n in range(1, WRITES + 1):
                theirs["a"]["n"] = n
            del theirs["gone"]
            theirs["new"] = {"made": "meanwhile"}
            cluster.start_agent(own)

            deadline = time.monotonic() + TIMEOUT_S
            while True:
                try:
                    superstatic.sync()
                    break
                except superstatic.Unavailable:
                    assert time.monotonic() < deadline, "the app never caught up"
            assert builds, "the app caught up without a snapshot"
            assert superstatic.root("table", dict) is table
            assert table["a"] is a and a["n"] == WRITES
            assert table["same"] is same and superstatic.plain(same) == {"k": "v"}
            # (The deleted list itself goes when the agents' collector sweeps it: then a later
            # snapshot no longer has it and its node dies, tests/unit/test_snapshot_stream_load.py.)
            assert "gone" not in table and list(gone) == [1, 2]
            assert superstatic.plain(table["new"]) == {"made": "meanwhile"}
            # It goes on from the snapshot: a write here shows there.
            a["n"] = -1
            writer.sync()
            assert theirs["a"]["n"] == -1
        finally:
            superstatic.close()
            writer.close()
