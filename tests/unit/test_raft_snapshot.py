"""Raft core: compaction, snapshot install, stale snapshots, the shell's newer meta, restart."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import Envelope, World, elect
from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    RaftConfig,
    SnapshotMeta,
)

ELECTION_TICKS_MAX = 200


def test_compact_trims_the_log_and_lagging_follower_gets_a_snapshot() -> None:
    world = World(1, ["a", "b", "c"])
    leader = elect(world)
    lagging = next(n for n in "abc" if n != leader)
    world.network.groups = {lagging: 1}
    for i in range(20):
        world.propose(leader, [f"x{i}".encode()])
    world.run(3)
    assert world.nodes[leader].compact()
    raft = world.raft(leader)
    assert raft.first_index == raft.applied + 1
    snapshots: list[Message] = []

    def watch(m: Message) -> bool:
        if m.type is MsgType.SNAPSHOT:
            snapshots.append(m)
        return True

    world.network.filter = watch
    world.network.groups = {}
    world.run(3 * world.config.ticks_heartbeat)
    assert len(snapshots) == 1
    assert world.nodes[lagging].snapshots_installed == 1
    assert world.applied_datas(lagging) == world.applied_datas(leader)
    follower = world.raft(lagging)
    assert follower.first_index == snapshots[0].snapshot.index + 1  # type: ignore[union-attr]
    assert raft.progress()[lagging][2] == "replicate"
    # And it keeps replicating normally afterwards.
    world.propose(leader, [b"after"])
    world.run(3)
    assert world.applied_datas(lagging)[-1][1] == b"after"


def make_follower(entries: int, commit: int) -> RaftNode:
    log = [Entry(i, 1, EntryKind.NORMAL, f"e{i}".encode()) for i in range(1, entries + 1)]
    return RaftNode(
        "b",
        RaftConfig(),
        random.Random(1),
        hard_state=HardState(1, None, commit),
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=log,
        applied=commit,
    )


def test_stale_snapshot_is_refused_and_answered_with_commit() -> None:
    node = make_follower(entries=10, commit=8)
    meta = SnapshotMeta(5, 1, ConfState.make(["a", "b", "c"]))
    node.step(Message(MsgType.SNAPSHOT, "a", "b", 1, snapshot=meta))
    ready = node.ready()
    assert ready.snapshot is None
    (resp,) = ready.messages
    assert resp.type is MsgType.APPEND_RESP and not resp.reject and resp.index == 8
    assert node.last_index == 10  # log untouched


def test_snapshot_matching_our_log_only_advances_commit() -> None:
    node = make_follower(entries=10, commit=3)
    meta = SnapshotMeta(7, 1, ConfState.make(["a", "b", "c"]))
    node.step(Message(MsgType.SNAPSHOT, "a", "b", 1, snapshot=meta))
    ready = node.ready()
    assert ready.snapshot is None
    assert [e.index for e in ready.committed] == [4, 5, 6, 7]
    assert node.last_index == 10


def test_snapshot_install_resets_the_log_and_conf() -> None:
    node = make_follower(entries=4, commit=2)
    new_conf = ConfState.make(["a", "b", "c", "d"], ["l"])
    meta = SnapshotMeta(50, 3, new_conf)
    node.step(Message(MsgType.SNAPSHOT, "a", "b", 3, snapshot=meta))
    ready = node.ready()
    assert ready.snapshot == meta
    assert ready.committed == ()  # the snapshot replaces applying entries up to 50
    assert ready.hard_state is not None and ready.hard_state.commit == 50
    (resp,) = ready.messages
    assert resp.type is MsgType.APPEND_RESP and resp.index == 50
    node.advance(ready)
    assert node.first_index == 51 and node.last_index == 50 and node.applied == 50
    assert node.conf == new_conf
    # Next APPEND continues after the snapshot.
    node.step(
        Message(
            MsgType.APPEND,
            "a",
            "b",
            3,
            index=50,
            log_term=3,
            entries=(Entry(51, 3, EntryKind.NORMAL, b"x"),),
            commit=51,
        )
    )
    ready = node.ready()
    assert [e.index for e in ready.entries] == [51]
    assert [e.index for e in ready.committed] == [51]


def test_shell_may_ship_a_newer_snapshot_than_the_leader_named() -> None:
    world = World(2, ["a", "b", "c"])
    leader = elect(world)
    lagging = next(n for n in "abc" if n != leader)
    world.network.groups = {lagging: 1}
    for i in range(10):
        world.propose(leader, [f"x{i}".encode()])
    world.run(2)
    world.nodes[leader].compact()
    compacted_at = world.raft(leader).first_index - 1
    for i in range(10):
        world.propose(leader, [f"y{i}".encode()])
    world.run(2)
    shipped: list[SnapshotMeta] = []
    original = world.nodes[leader].envelope

    def envelope(m: Message) -> Envelope:
        out = original(m)
        if out.message.snapshot is not None:
            shipped.append(out.message.snapshot)
        return out

    world.nodes[leader].envelope = envelope  # type: ignore[method-assign]
    world.network.groups = {}
    world.run(10)
    assert shipped and shipped[0].index > compacted_at  # the harness ships its applied state
    assert world.raft(lagging).first_index == shipped[0].index + 1
    assert world.applied_datas(lagging) == world.applied_datas(leader)


def test_restart_from_snapshot_and_log_tail() -> None:
    world = World(3, ["a", "b", "c"])
    leader = elect(world)
    for i in range(10):
        world.propose(leader, [f"x{i}".encode()])
    world.run(3)
    for name in "abc":
        world.nodes[name].compact()
    world.propose(leader, [b"tail"])
    world.run(3)
    for name in "abc":
        node = world.nodes[name]
        before = list(node.storage.sm.datas)
        node.crash()
        node.start()
        assert node.raft is not None
        assert node.raft.first_index == node.storage.snapshot.index + 1  # type: ignore[union-attr]
        assert node.storage.sm.datas == before
    world.run_until(lambda: world.leader() is not None, ELECTION_TICKS_MAX)
    world.propose(world.leader() or "a", [b"again"])
    world.run(5)
    assert {tuple(world.applied_datas(n)) for n in "abc"} == {tuple(world.applied_datas("a"))}


def _lagging_world(config: RaftConfig) -> tuple[World, str, str, list[Message]]:
    """A follower cut off while the leader commits 20 entries (never compacted), then healed;
    the SNAPSHOT messages sent to it are collected."""
    world = World(7, ["a", "b", "c"], config=config)
    leader = elect(world)
    lagging = next(n for n in "abc" if n != leader)
    world.network.groups = {lagging: 1}
    for i in range(20):
        world.propose(leader, [f"x{i}".encode()])
    world.run(3)
    assert world.raft(leader).first_index == 1  # the leader's log holds everything
    snapshots: list[Message] = []

    def watch(m: Message) -> bool:
        if m.type is MsgType.SNAPSHOT:
            snapshots.append(m)
        return True

    world.network.filter = watch
    world.network.groups = {}
    world.run(5 * world.config.ticks_heartbeat)
    return world, leader, lagging, snapshots


def test_follower_far_behind_gets_a_snapshot_though_the_log_holds_its_entries() -> None:
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, snapshot_lag_entries_max=8)
    world, leader, lagging, snapshots = _lagging_world(config)
    assert len(snapshots) == 1
    meta = snapshots[0].snapshot
    assert meta is not None and meta.index >= 20
    assert world.nodes[lagging].snapshots_installed == 1
    assert world.applied_datas(lagging) == world.applied_datas(leader)
    assert world.raft(lagging).first_index == meta.index + 1
    assert world.raft(leader).progress()[lagging][2] == "replicate"
    world.propose(leader, [b"after"])
    world.run(3)
    assert world.applied_datas(lagging)[-1][1] == b"after"


def test_follower_far_behind_in_bytes_gets_a_snapshot() -> None:
    # Each payload is 2-3 bytes: 20 of them are more than 30 bytes, fewer than 100 entries.
    config = RaftConfig(
        ticks_election=10,
        ticks_heartbeat=2,
        snapshot_lag_entries_max=100,
        snapshot_lag_bytes_max=30,
    )
    world, leader, lagging, snapshots = _lagging_world(config)
    assert len(snapshots) == 1
    assert world.nodes[lagging].snapshots_installed == 1
    assert world.applied_datas(lagging) == world.applied_datas(leader)


def test_follower_within_the_lag_limits_gets_the_log() -> None:
    config = RaftConfig(
        ticks_election=10,
        ticks_heartbeat=2,
        snapshot_lag_entries_max=100,
        snapshot_lag_bytes_max=1 << 20,
    )
    world, leader, lagging, snapshots = _lagging_world(config)
    assert snapshots == []
    assert world.nodes[lagging].snapshots_installed == 0
    assert world.applied_datas(lagging) == world.applied_datas(leader)
