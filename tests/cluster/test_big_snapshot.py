"""An app loads a 100,000-key dict and a 200,000-element list from a real cluster's SNAPSHOT
(format 2: node headers and runs of entries, docs/data-model-v2.md section 5): the containers
arrive split over several frames and are rebuilt exactly, order and key types included."""

from __future__ import annotations

import pytest

import superstatic
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

DICT_KEYS = 100_000
LIST_VALUES = 200_000
BATCH = 20_000  # writes per transaction (a body well under TXN_BODY_BYTES_MAX)


def connection() -> Connection:
    conn = session_default.get().connection
    assert isinstance(conn, Connection)
    return conn


def expected_dict() -> dict[object, object]:
    # Mixed key types, 1.0 among them (a key whose original form differs from its normal form).
    keys: list[object] = [f"k{i}" for i in range(DICT_KEYS - 2)] + [1.0, (2, "t")]
    return {key: (i, "v" * (i % 5)) for i, key in enumerate(keys)}


def test_an_app_loads_big_containers_from_a_snapshot(cluster: LocalCluster) -> None:
    want_dict = expected_dict()
    want_list = [i * 3 for i in range(LIST_VALUES)]
    superstatic.connect(cluster.client_endpoints())
    try:
        big = superstatic.root("big", dict)
        items = list(want_dict.items())
        for lo in range(0, len(items), BATCH):
            with superstatic.transaction():
                for key, value in items[lo : lo + BATCH]:
                    big[key] = value
        long = superstatic.root("long", list)
        for lo in range(0, LIST_VALUES, BATCH):
            long.extend(want_list[lo : lo + BATCH])
        assert len(big) == DICT_KEYS and len(long) == LIST_VALUES
    finally:
        superstatic.close()

    # A new app's replica starts empty: the agent sends it a snapshot of everything.
    superstatic.connect(cluster.client_endpoints())
    try:
        big = superstatic.root("big", dict)
        long = superstatic.root("long", list)
        feeder = connection()._io.feeder
        assert feeder.frames >= 3, "the snapshot came in several frames"
        got = dict(big.items())
        assert got == want_dict
        assert list(got) == list(want_dict), "insertion order kept"
        assert [type(k) for k in got][-2:] == [float, tuple]
        assert list(long) == want_list
    finally:
        superstatic.close()
