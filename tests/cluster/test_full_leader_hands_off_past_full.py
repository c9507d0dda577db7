"""Review41: a full leader's hand-off must reach the member that has room, past full ones.

Agents b and c have a small map, a the default. c leads and is written full; b, fed the same
entries, is full too by then, or after it takes over. Every member being caught up (a full
leader appends nothing new), "the voter furthest along" was a tie broken by name, so c handed
to b and b back to c every HANDOFF_FULL_INTERVAL_MS, each time an election, and a, the one
member with room, never led: the cluster refused every write for good. Leadership must reach
a and a write must go through there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.leading import make_leader

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

MAP_BYTES = 32 << 20
VALUE_BYTES = 200_000
TIMEOUT_S = 150.0
POLL_S = 0.2


def test_a_full_leader_hands_off_past_a_full_member_to_the_one_with_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalCluster(tmp_path, size=3) as cluster:
        for name in ("b", "c"):
            cluster.agents[name].extra_args = ["--map-bytes", str(MAP_BYTES)]
        cluster.start()
        make_leader(cluster, "c", TIMEOUT_S)
        for name, value in cluster.client_env().items():
            monkeypatch.setenv(name, value)
        superstatic.connect(cluster.client_endpoints())
        written = refused = 0
        leaders: list[str] = []
        deadline = time.monotonic() + TIMEOUT_S
        try:
            blob = superstatic.root("blob", dict)
            # Written until refused, then on until a write goes through with a leading.
            while True:
                assert time.monotonic() < deadline, (
                    f"{written} writes, {refused} refused; leaders seen {leaders}",
                    {name: cluster.status(name)["store"] for name in ("b", "c")},
                    {
                        name: cluster.status(name)["counters"]["leadership_handed_off_full"]
                        for name in ("b", "c")
                    },
                )
                try:
                    blob[f"k{written}"] = "y" * VALUE_BYTES
                except (superstatic.StoreFull, superstatic.Unavailable):
                    refused += 1
                    now_leading = cluster.leader()
                    if not leaders or leaders[-1] != now_leading:
                        leaders.append(now_leading)
                    time.sleep(POLL_S)
                    continue
                written += 1
                if refused and cluster.leader() == "a":
                    break
        finally:
            superstatic.close()
        for name in ("a", "b", "c"):
            assert cluster.status(name)["halted"] is None, name
