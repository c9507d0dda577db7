"""A leader whose store is full hands leadership to a member that may have room.

While a full agent leads, every write in the cluster is refused (StoreFull), though the other
members may have room (another disk, a larger --map-bytes): the review40 test had to keep its
small agent from leading for that reason. Here agent c has a 16 MiB map, the others the
default; c is made leader and written full. Writes must go on through another leader, with c
neither halted nor leading, and c's STATUS says it handed off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.leading import make_leader

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

MAP_BYTES = 16 << 20
VALUE_BYTES = 1_000_000
WRITES_MAX = 60  # c refuses after ~13 (an eighth of 16 MiB free); the rest need another leader
TIMEOUT_S = 120.0
POLL_S = 0.2


def test_a_full_leader_hands_leadership_to_a_member_with_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalCluster(tmp_path, size=3) as cluster:
        cluster.agents["c"].extra_args = ["--map-bytes", str(MAP_BYTES)]
        cluster.start()
        make_leader(cluster, "c", TIMEOUT_S)
        for name, value in cluster.client_env().items():
            monkeypatch.setenv(name, value)
        superstatic.connect(cluster.client_endpoints())
        refused = written = 0
        deadline = time.monotonic() + TIMEOUT_S
        try:
            blob = superstatic.root("blob", dict)
            while written < WRITES_MAX:
                assert time.monotonic() < deadline, (
                    f"{written} writes, {refused} refused: the cluster stayed full",
                    cluster.status("c")["store"],
                    cluster.leader(),
                )
                try:
                    blob[f"k{written}"] = "y" * VALUE_BYTES
                except superstatic.StoreFull:
                    refused += 1
                    time.sleep(POLL_S)
                    continue
                written += 1
        finally:
            superstatic.close()
        status = cluster.status("c")
        assert status["halted"] is None, status["halted"]
        assert status["store"]["full"], status["store"]  # c is full: the writes went elsewhere
        assert status["counters"]["leadership_handed_off_full"] >= 1, status["counters"]
        assert cluster.leader() != "c"
