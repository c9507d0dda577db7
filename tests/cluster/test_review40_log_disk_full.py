"""review40: a follower's disk with less free space than one Raft log segment (format 5,
docs/data-model-v2.md 8.18).

The log makes each segment whole (written with zeros) on the disk under --data-dir, which the
store's space accounting (Storage.space, the reserve of --map-bytes) did not count: a follower
whose LMDB map had room but whose disk could not hold its next segment hit ENOSPC and halted
for good (store_full, a restart needed), where the reserve is meant to make it refuse appends
and go on once there is room. Here agent c's --data-dir is a 100 MiB tmpfs (one 64 MiB
segment fits, a second does not) with a 16 MiB map; the app writes ~1 MB values through a and
b. c must not halt; once the tmpfs is grown, c catches up without a restart.

Needs root (mount); CI runs as root (.ci/run), elsewhere the test skips saying so.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TMPFS_MIB = 100  # one 64 MiB segment and the store fit, a second segment does not
TMPFS_MIB_GROWN = 400
MAP_BYTES = 16 << 20
VALUE_BYTES = 1_000_000
WRITES = 120  # ~120 MB through the log: past what c's disk holds
TIMEOUT_S = 180.0
POLL_S = 0.5
TIMEOUT_S_MOUNT = 30


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    folder = tmp_path / "agents" / "c"
    folder.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", str(folder)],
        capture_output=True,
        timeout=TIMEOUT_S_MOUNT,
    )
    if done.returncode != 0:
        pytest.skip("mount -t tmpfs is not allowed here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], timeout=TIMEOUT_S_MOUNT)


def _read_at(cluster: LocalCluster, node_id: str) -> str | None:
    superstatic.connect(cluster.client_endpoints([node_id]))
    try:
        superstatic.sync()
        return superstatic.root("blob", dict).get("v")
    finally:
        superstatic.close()


def test_a_disk_without_room_for_a_segment_refuses_appends_not_halts(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalCluster(small_disk.parent, size=3) as cluster:
        cluster.agents["c"].extra_args = ["--map-bytes", str(MAP_BYTES)]
        # a and b first, so that one of them leads: a leader whose own store is full
        # refuses every write (store_full), which is not what this test is about.
        cluster.start_agent("a")
        cluster.start_agent("b")
        cluster.leader()
        cluster.start_agent("c")
        for name, value in cluster.client_env().items():
            # Undone after the test: the app's key left in os.environ made later tests'
            # admin requests go out as the app (test_sessions, refused MEMBERS).
            monkeypatch.setenv(name, value)
        superstatic.connect(cluster.client_endpoints(["a", "b"]))
        try:
            blob = superstatic.root("blob", dict)
            for i in range(WRITES):
                blob["v"] = "y" * VALUE_BYTES + str(i)
            superstatic.sync()
            want = blob["v"]
        finally:
            superstatic.close()
        status = cluster.status("c")
        assert status["halted"] is None, status["halted"]
        assert status["store"]["appends_refused"], status["store"]
        subprocess.run(
            ["mount", "-o", f"remount,size={TMPFS_MIB_GROWN}m", str(small_disk)],
            check=True,
            timeout=TIMEOUT_S_MOUNT,
        )
        deadline = time.monotonic() + TIMEOUT_S
        while cluster.status("c")["store"]["appends_refused"]:
            assert time.monotonic() < deadline, "c never saw the room"
            time.sleep(POLL_S)
        got = None
        while got != want:
            assert time.monotonic() < deadline, "c did not catch up"
            got = _read_at(cluster, "c")
        assert cluster.status("c")["halted"] is None
