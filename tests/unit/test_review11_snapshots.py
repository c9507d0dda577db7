"""Review 11 findings on peer snapshots of format-3 stores (agent/snapshot_records.py): an
sm_meta record the state machine reads back with a fixed shape must have it when staged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from superstatic_agent import snapshot_records as snap
from superstatic_agent.statemachine import SM_META_KEYS
from superstatic_agent.storage import KEY_APPLIED

from superstatic.protocol.errors import ProtocolError


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    from test_snapshot_records import open_store

    env, dbs = open_store(tmp_path / "target")
    try:
        yield env, dbs
    finally:
        env.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"gc", "x"),  # _gc_step unpacks [candidates, fresh, alive]: ValueError, every entry
        (b"gc", [1, 2]),
        (b"gc", [1, 2, "3"]),
        (b"sweep", "x"),  # _maybe_sweep: int(...) of it, every entry
        (b"sweep", [1]),
        (KEY_APPLIED, "x"),  # read_applied unpacks [index, term, time_ms]
        (KEY_APPLIED, [1, 2]),
        (KEY_APPLIED, [1, 2, None]),
    ],
)
def test_an_sm_meta_record_of_the_wrong_shape_is_refused(
    target: tuple[Any, Any], key: bytes, value: Any
) -> None:
    env, dbs = target
    chunk = cbor2.dumps([0, True, [["m", key, cbor2.dumps(value)]]])
    with pytest.raises(ProtocolError, match="sm_meta"), env.begin(write=True) as txn:
        snap.stage_chunk(txn, dbs, chunk, frozenset(SM_META_KEYS))


def test_the_sm_meta_records_a_state_machine_writes_are_staged(target: tuple[Any, Any]) -> None:
    env, dbs = target
    items = [
        ["m", KEY_APPLIED, cbor2.dumps([40, 2, 1_700_000_000_000])],
        ["m", b"conf_last", cbor2.dumps([39, "add", "b", "tcp://127.0.0.1:1"])],
        ["m", b"gc", cbor2.dumps([0, 3, 7])],
        ["m", b"sweep", cbor2.dumps(1_700_000_000_000)],
    ]  # in key order, as a leader's cursor reads them
    with env.begin(write=True) as txn:
        snap.stage_chunk(txn, dbs, cbor2.dumps([0, True, items]), frozenset(SM_META_KEYS))
