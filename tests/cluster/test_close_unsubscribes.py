"""A clean close() ends the app's stream at its agent at once (UNSUBSCRIBE), in both replica
modes. Before, the agent kept the subscription, and for a partial replica its held set,
streaming to a closed socket until --subscriber-silence-ms (heapbench found it: a closed app's
held set counted for 15 s).

The agents run with a silence timeout far longer than the test's wait, so only the
UNSUBSCRIBE can end the subscription within it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

SILENCE_MS = 600_000  # 10 minutes: no agent drops a silent subscriber during this test
WAIT_S = 30.0  # a bound for what should happen at once, not a timing assertion


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base: Path = tmp_path_factory.mktemp("unsub") / "agents"
    args = ["--subscriber-silence-ms", str(SILENCE_MS)]
    with LocalCluster(base, size=3, keyed=False, agent_args=args) as c:
        c.start()
        c.leader()
        yield c


def _subscribers(cluster: LocalCluster) -> int:
    return sum(int(cluster.status(n)["clients"]["subscribers"]) for n in cluster.agents)


@pytest.mark.parametrize("replicate", ["partial", "all"])
def test_a_closed_app_is_no_longer_streamed_to(cluster: LocalCluster, replicate: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while _subscribers(cluster) != 0:  # the other case's app, if it ran first, is gone
        assert time.monotonic() < deadline, "a subscription outlived its app's close()"
        time.sleep(0.1)
    superstatic.connect(cluster.client_endpoints(), replicate=replicate)
    try:
        superstatic.root("c", dict)["n"] = 1  # subscribed, and a write went through
        assert _subscribers(cluster) == 1
    finally:
        superstatic.close()
    deadline = time.monotonic() + WAIT_S
    while _subscribers(cluster) != 0:
        assert time.monotonic() < deadline, "the agent still streams to a closed app"
        time.sleep(0.1)
