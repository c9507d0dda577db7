"""Valid traffic with long texts keeps working through the text bounds (review33 of textcap,
docs/data-model-v2.md 8.13 "Bounded"): a client frame's texts are refused past
CLIENT_TEXT_BYTES_MAX (4 KiB), a peer frame's past PEER_TEXT_BYTES_MAX (1 KiB), an entries
blob's past 0, but user data travels in byte strings (PROPOSE bodies, a LOAD's keys, entries,
snapshot chunks), so keys, values and root names of any length the data model allows must
still be written, replicated to every agent, read by a partial replica and inspected.

Three real agents (LocalCluster), the public API; no timing is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import superstatic
from superstatic.client import oneshot
from superstatic.client.connection import Connection
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session
from superstatic.protocol import wire
from superstatic.tools.localcluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

WIDE = "\U0001f600"  # 4 UTF-8 bytes
# Far over every text bound of the frames that carry them.
LONG_KEY = WIDE * (64 << 10)  # 256 KiB
LONG_VALUE = WIDE * (256 << 10)  # 1 MiB
LONG_ROOT = WIDE * wire.ROOT_NAME_CHARS_MAX  # the longest root name: 1 KiB
INSPECT_KEY = WIDE * wire.INSPECT_KEY_CHARS_MAX  # the longest key INSPECT names: 4 KiB
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    base: Path = tmp_path_factory.mktemp("longtexts") / "agents"
    with LocalCluster(base, size=3, keyed=False) as c:
        c.start()
        c.leader()
        yield c


def session(cluster: LocalCluster, ids: list[str] | None = None) -> Session:
    replica = Replica()
    return Session(replica, Connection(cluster.client_endpoints(ids), replica))


def test_long_keys_values_and_root_names_are_written_replicated_and_read(
    cluster: LocalCluster,
) -> None:
    writer = session(cluster)
    try:
        writer.sync()
        top = writer.root(LONG_ROOT, dict)
        top[LONG_KEY] = LONG_VALUE
        top[INSPECT_KEY] = {"inner": LONG_KEY}
        top["members"] = {LONG_KEY, INSPECT_KEY}
        writer.sync()
    finally:
        writer.close()
    # Every agent applied them (replication between agents carries them in entries).
    for node_id in cluster.agents:
        reader = session(cluster, [node_id])
        try:
            reader.sync()
            top = reader.root(LONG_ROOT, dict)
            assert top[LONG_KEY] == LONG_VALUE
            assert top[INSPECT_KEY]["inner"] == LONG_KEY
            assert set(top["members"]) == {LONG_KEY, INSPECT_KEY}
        finally:
            reader.close()
    # A partial replica faults them in (a LOAD naming the long key: its keys are a byte string).
    superstatic.connect(cluster.client_endpoints(), replicate="partial")
    try:
        top = superstatic.root(LONG_ROOT, dict)
        assert top[LONG_KEY] == LONG_VALUE
        assert top[INSPECT_KEY]["inner"] == LONG_KEY
    finally:
        superstatic.close()
    # And INSPECT names the root and the longest key it takes.
    endpoint = cluster.client_endpoints()[0]
    answer = oneshot.request(
        endpoint,
        wire.FrameType.INSPECT,
        {"root": LONG_ROOT, "path": [INSPECT_KEY, "inner"], "depth": 1},
        timeout_ms=TIMEOUT_MS,
    )
    assert answer.get("kind") == "value", answer.keys()
