"""agent/shipping.py pauses Python's cyclic collector while a snapshot chunk is built (leader)
or staged (follower): every way out of either, a hostile or damaged chunk, a damaged store, a
full map, an unexpected exception, leaves the collector as it found it (review18). A path that
left it off would let the agent's heap grow without a collection for the rest of its life."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import cbor2
import lmdb
import pytest
from superstatic_agent import peer_codec
from superstatic_agent.raft.types import (
    Message,
    MsgType,
    SnapshotMeta,
)
from superstatic_agent.sealed import Corrupt
from superstatic_agent.storage import STAGING_NEXT
from support.shipping_sides import CHUNK_BYTES_MAX, CONF, TERM, Side, leader_and_follower

TURNS_MAX = 500


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    assert gc.isenabled()
    try:
        with leader_and_follower(tmp_path, damage_raises=False) as both:
            yield both
    finally:
        gc.enable()  # whatever a failed test left: the other tests need it on


def chunk_datas(leader: Side) -> list[bytes]:
    shipping = leader.shipping
    with shipping.storage.env.begin() as txn:
        return list(shipping.sm.snapshot_chunks(txn, CHUNK_BYTES_MAX))


def frame(part: int, last: bool, data: bytes) -> peer_codec.SnapshotChunk:
    return peer_codec.SnapshotChunk("a", "b", TERM, 40, part, last, data)


def stage(follower: Side, part: int, data: bytes, last: bool = False) -> None:
    follower.shipping.on_chunk("a", frame(part, last, data))
    follower.shipping.stage_pending(None)


def staged_records(follower: Side, name: str) -> int:
    with follower.storage.env.begin() as txn:
        return int(txn.stat(getattr(follower.shipping.sm.dbs, name))["entries"])


def with_a_bad_record(data: bytes) -> bytes:
    """The chunk with one nodes record (inside its db's run) holding a simple value: refused
    by the full check (check_record), so by the run's check too."""
    part, last, items = cbor2.loads(data)
    at = next(i for i, item in enumerate(items) if item[0] == "n")
    items[at][2] = b"\x81\xf7"
    return cbor2.dumps([part, last, items])


def test_every_follower_error_path_leaves_the_collector_on(sides: tuple[Side, Side]) -> None:
    leader, follower = sides
    datas = chunk_datas(leader)
    assert len(datas) > 2 and any(item[0] == "n" for item in cbor2.loads(datas[0])[2])

    stage(follower, 0, b"\xff")  # not CBOR
    assert follower.drops.counts["snapshot_chunk_bad"] == 1 and gc.isenabled()

    stage(follower, 0, with_a_bad_record(datas[0]))  # one record refused mid-run
    assert follower.drops.counts["snapshot_chunk_bad"] == 2 and gc.isenabled()
    assert staged_records(follower, "staging_nodes") == 0

    # A damaged staging record (its seal broken) under the next part: Corrupt, started over.
    stage(follower, 0, datas[0])
    assert gc.isenabled() and staged_records(follower, "staging_nodes") > 0
    with follower.storage.env.begin(write=True) as txn:
        txn.put(STAGING_NEXT, b"\x00" * 12, db=follower.shipping.sm.dbs.staging_state)
    stage(follower, 1, datas[1])
    assert follower.drops.counts["snapshot_chunk_bad"] == 3 and gc.isenabled()


@pytest.mark.parametrize("error", [lmdb.MapFullError, RuntimeError])
def test_a_failing_stage_leaves_the_collector_on(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    leader, follower = sides
    data = chunk_datas(leader)[0]

    def failing(_txn: lmdb.Transaction, _chunk: bytes) -> None:
        assert not gc.isenabled()  # paused while it stages
        raise error("staging failed")

    monkeypatch.setattr(follower.shipping.sm, "stage_chunk", failing)
    if error is RuntimeError:  # not one the shell expects: it propagates
        with pytest.raises(RuntimeError):
            stage(follower, 0, data)
    else:
        stage(follower, 0, data)
        assert follower.drops.counts["snapshot_chunk_no_room"] == 1
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(sides: tuple[Side, Side]) -> None:
    leader, follower = sides
    gc.disable()
    try:
        stage(follower, 0, chunk_datas(leader)[0])
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert staged_records(follower, "staging_nodes") > 0


def test_a_damaged_leader_store_stops_its_shipment_with_the_collector_on(
    sides: tuple[Side, Side],
) -> None:
    leader, _follower = sides
    dbs = leader.shipping.sm.dbs
    with leader.storage.env.begin(write=True) as txn:
        key, raw = next(iter(txn.cursor(db=dbs.nodes)))
        txn.put(key, bytes(raw[:-1]) + bytes([raw[-1] ^ 1]), db=dbs.nodes)  # a broken seal
    leader.shipping.start(
        Message(MsgType.SNAPSHOT, "a", "b", TERM, snapshot=SnapshotMeta(40, 2, CONF))
    )
    for _ in range(TURNS_MAX):
        if leader.damage or not leader.shipping.has_work():
            break
        leader.shipping.pump()
    assert len(leader.damage) == 1 and isinstance(leader.damage[0], Corrupt)
    assert gc.isenabled()
