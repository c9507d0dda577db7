"""Snapshot shipping's flow control (agent/shipping.py) between a leader's and a follower's
`Shipping` on real stores: a follower that never sends CHUNK_ACK (an agent older than it, in a
rolling upgrade) still gets the whole snapshot, and a follower's queue of received chunks stays
bounded whatever one turn's intake holds (an unpaced leader, a flood of tiny chunks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from superstatic_agent import peer_codec
from superstatic_agent.raft.types import (
    Message,
    MsgType,
    SnapshotMeta,
)
from superstatic_agent.shipping import (
    SHIPMENT_UNACKED_CHUNKS_MAX,
    STAGING_CHUNKS_PER_TURN_MAX,
    STAGING_QUEUE_CHUNKS_MAX,
)
from support.shipping_sides import CHUNK_BYTES_MAX, CONF, TERM, Side, leader_and_follower

TURNS_MAX = 500


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    with leader_and_follower(tmp_path, damage_raises=True) as both:
        yield both


def request() -> Message:
    """The core's SNAPSHOT message (the shell ships its applied state instead)."""
    return Message(MsgType.SNAPSHOT, "a", "b", TERM, snapshot=SnapshotMeta(40, 2, CONF))


def pump_until_idle(leader: Side) -> None:
    for _ in range(TURNS_MAX):
        if not leader.shipping.has_work():
            return
        leader.shipping.pump()
    raise AssertionError("shipping never went idle")


def chunks_sent(leader: Side) -> list[peer_codec.SnapshotChunk]:
    return [f for _to, f in leader.peers.sent if isinstance(f, peer_codec.SnapshotChunk)]


def snapshot_sent(leader: Side) -> Message | None:
    messages = [f for _to, f in leader.peers.sent if isinstance(f, Message)]
    return messages[-1] if messages else None


def test_a_follower_that_never_acks_still_gets_the_whole_snapshot(
    sides: tuple[Side, Side],
) -> None:
    leader, follower = sides
    leader.shipping.start(request())
    pump_until_idle(leader)
    # Paced: one window, then it waits for acks that an older agent never sends.
    assert len(chunks_sent(leader)) == SHIPMENT_UNACKED_CHUNKS_MAX
    assert snapshot_sent(leader) is None
    # The core asks again at each retry period (SNAPSHOT_RETRY_ELECTIONS): the first request
    # is taken as a duplicate, the second (a whole period with no ack) starts over, unpaced.
    leader.shipping.start(request())
    leader.shipping.start(request())
    leader.peers.sent.clear()
    pump_until_idle(leader)
    message = snapshot_sent(leader)
    assert message is not None and message.snapshot is not None
    chunks = chunks_sent(leader)
    assert [c.part for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].last and len(chunks) > 2 * STAGING_QUEUE_CHUNKS_MAX
    # The follower stages it all (as an older agent does, without acking) and may install it.
    for chunk in chunks:
        follower.shipping.on_chunk("a", chunk)
    follower.shipping.stage_pending(None)
    assert follower.shipping.staged_for(message)


def test_an_ack_paces_a_follower_again(sides: tuple[Side, Side]) -> None:
    leader, _follower = sides
    leader.shipping.start(request())
    pump_until_idle(leader)
    leader.shipping.start(request())
    leader.shipping.start(request())  # unpaced from here
    leader.shipping.pump()
    first = chunks_sent(leader)[-1]
    # The follower does know CHUNK_ACK (its first window was lost): its ack paces it again.
    ack = peer_codec.ChunkAck("b", "a", TERM, first.snap_index, first.part)
    leader.shipping.on_ack("b", ack)
    pump_until_idle(leader)
    assert snapshot_sent(leader) is None
    assert chunks_sent(leader)[-1].part == first.part + SHIPMENT_UNACKED_CHUNKS_MAX


def all_chunks(leader: Side) -> list[peer_codec.SnapshotChunk]:
    """The leader's whole snapshot as chunk frames, as a leader that does not pace sends it."""
    shipping = leader.shipping
    with shipping.storage.env.begin() as txn:
        datas = list(shipping.sm.snapshot_chunks(txn, CHUNK_BYTES_MAX))
    return [
        peer_codec.SnapshotChunk("a", "b", TERM, 40, part, part == len(datas) - 1, data)
        for part, data in enumerate(datas)
    ]


def test_the_follower_queue_is_bounded_whatever_one_turn_brings(
    sides: tuple[Side, Side],
) -> None:
    leader, follower = sides
    chunks = all_chunks(leader)
    assert len(chunks) > 2 * STAGING_QUEUE_CHUNKS_MAX
    # Every chunk in one turn's intake, none staged by the loop in between.
    for chunk in chunks:
        follower.shipping.on_chunk("a", chunk)
        count, bytes_ = follower.shipping.queued()
        assert count <= STAGING_QUEUE_CHUNKS_MAX
        assert bytes_ <= STAGING_QUEUE_CHUNKS_MAX * CHUNK_BYTES_MAX
    follower.shipping.stage_pending(None)
    assert follower.shipping.staged_for(request())
    # Chunks from someone else, or for someone else, take no room at all.
    for sender, frm, to in (("a", "c", "b"), ("a", "a", "c")):
        follower.shipping.on_chunk(
            sender, peer_codec.SnapshotChunk(frm, to, TERM, 40, 0, False, b"")
        )
    assert follower.shipping.queued() == (0, 0)
    assert follower.drops.counts["peer_wrong_sender"] == 2


def test_a_flood_of_tiny_chunks_stays_bounded(sides: tuple[Side, Side]) -> None:
    _leader, follower = sides
    # Empty chunks of one snapshot, out of order after the first: each is cheap to refuse,
    # and a turn's intake may hold thousands (PEER_FRAMES_PER_TURN_MAX).
    for part in range(5 * STAGING_QUEUE_CHUNKS_MAX):
        chunk = peer_codec.SnapshotChunk("a", "b", TERM, 40, part * 7, False, b"")
        follower.shipping.on_chunk("a", chunk)
        assert follower.shipping.queued()[0] <= STAGING_QUEUE_CHUNKS_MAX


def test_a_deposed_leaders_staging_stops_holding_the_intake(sides: tuple[Side, Side]) -> None:
    leader, follower = sides
    chunks = all_chunks(leader)
    for chunk in chunks[:3]:
        follower.shipping.on_chunk("a", chunk)
    follower.shipping.stage_pending(None)
    # Mid-shipment: the peer intake is held to the staging rate.
    assert follower.shipping.recv_bytes_max() == STAGING_CHUNKS_PER_TURN_MAX * CHUNK_BYTES_MAX
    follower.shipping.node.term += 1  # a new leader (or we won an election)
    assert follower.shipping.recv_bytes_max() is None
    # What the deposed leader still had on its way is refused, not staged.
    follower.shipping.on_chunk("a", chunks[3])
    assert follower.shipping.queued() == (0, 0)


def test_a_staging_the_log_overtook_stops_holding_the_intake(sides: tuple[Side, Side]) -> None:
    leader, follower = sides
    for chunk in all_chunks(leader)[:3]:
        follower.shipping.on_chunk("a", chunk)
    follower.shipping.stage_pending(None)
    assert follower.shipping.recv_bytes_max() is not None
    follower.shipping.node.commit = 40  # the leader replicated the log to us instead
    assert follower.shipping.recv_bytes_max() is None
