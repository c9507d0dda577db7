"""Review 11 finding on the tombstone sweep (agent/statemachine.py): its purge rate must keep
up with deletes, or `tombs` and `entries` grow without bound under a steady delete workload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from superstatic_agent import statemachine as sm_module
from test_keyreads import Replica, with_dict

SWEEP_ENTRIES, RETAIN_ENTRIES, SWEEP_MAX = 4, 8, 2
KEYS_PER_ENTRY = 3  # each second entry clears this many keys: more than SWEEP_MAX per sweep


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Replica]:
    replica = Replica(tmp_path / "r")
    try:
        yield replica
    finally:
        replica.close()


def test_tombstones_past_the_retention_do_not_pile_up(
    r: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sm_module, "TOMB_SWEEP_ENTRIES", SWEEP_ENTRIES)
    monkeypatch.setattr(sm_module, "TOMB_RETAIN_ENTRIES", RETAIN_ENTRIES)
    monkeypatch.setattr(sm_module, "TOMB_SWEEP_MAX", SWEEP_MAX)
    with_dict(r)
    for n in range(30):  # a cache refilled with new keys: fill, then clear
        fill = [["set", "c.d", f"r{n}k{i}", i] for i in range(KEYS_PER_ENTRY)]
        assert r.v1(fill).outcome == "ok"
        assert r.v1([["clear", "c.d"]]).outcome == "ok"
    # The deletes stop; plenty of entries pass (a few sweeps' worth beyond the retention).
    for _ in range(RETAIN_ENTRIES + 4 * SWEEP_ENTRIES):
        assert r.v1([["del", "c.d", "missing"]]).outcome == "ok"
    overdue = r.index - RETAIN_ENTRIES - SWEEP_ENTRIES
    with r.env.begin() as txn:
        versions = [
            int.from_bytes(bytes(key)[:8], "big")
            for key in txn.cursor(db=r.sm.dbs.tombs).iternext(keys=True, values=False)
        ]
    assert [v for v in versions if v <= overdue] == []
