"""Hostile review of the virtual heap's library half (issue 13) against three real agents: a
`wait_for` on one key of a dict held per key wakes for its change after the eviction clock has
passed (the clock lets a per-key dict's keys go whatever holds it, and the agent sends no event
of a dropped key: docs/virtual-heap.md 4.3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import superstatic
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.objects import eviction
from superstatic.objects.node import PARTIAL, node_of
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

WAIT_S = 60.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "agents", size=3, keyed=False) as c:
        c.start()
        c.leader()
        yield c


def test_a_wait_on_one_key_of_a_per_key_dict_wakes_after_the_clock_passed(
    cluster: LocalCluster,
) -> None:
    replica = Replica()
    other = Session(replica, Connection(cluster.client_endpoints(), replica))
    superstatic.connect(cluster.client_endpoints(), replicate="partial")
    try:
        big = other.root("bigwait", dict)
        other.run(lambda: [big.__setitem__(f"k{i}", i) for i in range(300)])
        app = session_default.get()
        mine = superstatic.root("bigwait", dict)
        assert mine["k1"] == 1 and node_of(mine).state == PARTIAL
        got: list[Any] = []
        waiting = threading.Thread(
            target=lambda: got.append(
                # No timeout: wait_for evaluates once more when one passes, which would find
                # the change by loading the key again; a missed change is a hang.
                superstatic.wait_for(lambda: mine.get("k3") == "done")
            ),
            daemon=True,
        )
        waiting.start()
        live = node_of(mine).live
        for _ in range(3000):  # until the predicate has read k3 (and waits)
            if dict.__contains__(live, "k3"):
                break
            threading.Event().wait(0.01)
        with app.replica.lock:
            saved = app.replica.cache_bytes
            app.replica.cache_bytes = 1
            eviction.sweep(app.replica)  # the clock passes while the app waits
            app.replica.cache_bytes = saved
        superstatic.sync()  # (the DROP, if any, has gone out before the write)
        big["k3"] = "done"
        waiting.join(WAIT_S)
        assert got == [True], "the wait missed the change of the key it read"
    finally:
        superstatic.close()
        other.close()
