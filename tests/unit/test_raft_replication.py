"""Raft core: replication, batching, flow control, backtracking, the commit rule, proposals."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from sim_harness import World, elect
from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.types import (
    ConfState,
    Dropped,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    RaftConfig,
    Role,
)

ELECTION_TICKS_MAX = 200


def sent(world: World, leader: str, datas: list[bytes]) -> list[Message]:
    """Propose at the leader and return the messages it emits (not delivered)."""
    captured: list[Message] = []

    def capture(m: Message) -> bool:
        captured.append(m)
        return True

    world.network.filter = capture
    world.propose(leader, datas)
    world.network.filter = None
    world.stabilize()
    return captured


def test_many_proposals_go_out_as_one_append_per_follower() -> None:
    world = World(1, ["a", "b", "c"])
    leader = elect(world)
    raft = world.raft(leader)
    for i in range(5):
        raft.propose([f"x{i}".encode()])  # five calls before the shell asks for a Ready
    captured: list[Message] = []

    def capture(m: Message) -> bool:
        captured.append(m)
        return True

    world.network.filter = capture
    world.nodes[leader].process()
    appends = [m for m in captured if m.type is MsgType.APPEND]
    assert len(appends) == 2
    assert all(len(m.entries) == 5 for m in appends)


def test_append_bounded_by_entries_max_and_bytes_max() -> None:
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, append_entries_max=3)
    world = World(2, ["a", "b"], config=config)
    leader = elect(world)
    appends = [m for m in sent(world, leader, [b"x"] * 7) if m.type is MsgType.APPEND]
    assert appends and all(len(m.entries) <= 3 for m in appends)

    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, append_bytes_max=10)
    world = World(2, ["a", "b"], config=config)
    leader = elect(world)
    appends = [m for m in sent(world, leader, [b"12345"] * 6) if m.type is MsgType.APPEND]
    assert appends and all(sum(len(e.data) for e in m.entries) <= 10 for m in appends)
    # An entry bigger than the byte bound still moves, alone.
    appends = [m for m in sent(world, leader, [b"x" * 50]) if m.type is MsgType.APPEND]
    assert [len(m.entries) for m in appends] == [1]


def test_inflight_window_bounds_unacknowledged_appends() -> None:
    # Heartbeats far apart, so only proposals and their acknowledgements move messages.
    config = RaftConfig(ticks_election=100, ticks_heartbeat=99, inflight_max=3)
    world = World(3, ["a", "b"], config=config)
    leader = elect(world)
    follower = "b" if leader == "a" else "a"
    raft = world.raft(leader)
    assert raft.progress()[follower][2] == "replicate"
    captured: list[Message] = []

    def capture_and_drop(m: Message) -> bool:
        captured.append(m)
        return False  # no acknowledgement ever comes back

    world.network.filter = capture_and_drop
    for i in range(10):
        world.propose(leader, [f"x{i}".encode()])
    appends = [m for m in captured if m.type is MsgType.APPEND and m.entries]
    assert len(appends) == 3  # the window is full; the rest waits for acknowledgements


def test_fast_backtracking_over_a_long_divergent_log() -> None:
    world = World(4, ["a", "b", "c"])
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    # The follower is cut off while the leader commits a lot; then it rejoins.
    world.network.groups = {follower: 1}
    for i in range(300):
        world.propose(leader, [f"x{i}".encode()])
    world.run(5)
    world.network.groups = {}
    rejections: list[Message] = []

    def watch(m: Message) -> bool:
        if m.type is MsgType.APPEND_RESP and m.reject:
            rejections.append(m)
        return True

    world.network.filter = watch
    world.run(20)
    assert world.applied_datas(follower) == world.applied_datas(leader)
    assert len(rejections) <= 2  # one hint jumps straight to the follower's last index


def test_follower_conflicting_uncommitted_tail_is_replaced() -> None:
    world = World(5, ["a", "b", "c"])
    leader = elect(world)
    # The leader appends entries nobody else receives, then is isolated and deposed.
    world.network.groups = {leader: 1}
    world.propose(leader, [b"lost1", b"lost2"])
    world.run(4 * world.config.ticks_election)
    new_leader = world.leader()
    assert new_leader not in (None, leader)
    world.propose(new_leader, [b"kept"])
    world.run(3)
    world.network.groups = {}
    world.run(4 * world.config.ticks_election)
    datas = [d for _, d in world.applied_datas(leader)]
    assert b"kept" in datas and b"lost1" not in datas
    assert world.applied_datas(leader) == world.applied_datas(new_leader)


def test_old_term_entry_not_committed_by_counting_replicas() -> None:
    """Thesis figure 3.7: a majority holding an old-term entry does not commit it."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, append_entries_max=1)
    world = World(6, ["s1", "s2", "s3", "s4", "s5"], config=config)
    for node in world.nodes.values():
        node.crash()
    old = Entry(1, 2, EntryKind.NORMAL, b"term2")
    logs = {
        "s1": [old],
        "s2": [old],
        "s3": [],
        "s4": [],
        "s5": [Entry(1, 3, EntryKind.NORMAL, b"term3")],
    }
    for name, entries in logs.items():
        storage = world.nodes[name].storage
        storage.entries = list(entries)
        storage.hard_state = HardState(3, None, 0)
        world.nodes[name].start()
    world.network.groups = {"s5": 1}

    probed: set[str] = set()

    def hold_back_index_2(m: Message) -> bool:
        # s3 and s4 get the old entry (index 1) but not the new term's NOOP (index 2); the
        # first APPEND (a probe they reject, lacking index 1) passes so s1 backtracks.
        if m.to not in ("s3", "s4") or m.type is not MsgType.APPEND:
            return True
        if m.to not in probed:
            probed.add(m.to)
            return True
        return not any(e.index == 2 for e in m.entries)

    world.network.filter = hold_back_index_2
    world.raft("s1").step(Message(MsgType.TIMEOUT_NOW, "s2", "s1", 3))  # s1 runs for term 4
    world.nodes["s1"].process()
    world.stabilize()
    s1 = world.raft("s1")
    assert s1.role is Role.LEADER and s1.term == 4
    assert all(world.raft(n).last_index >= 1 for n in ("s2", "s3", "s4"))
    assert all(match >= 1 for match, _, _ in s1.progress().values() if match)
    assert s1.commit == 0  # a majority holds index 1 (term 2), but its term is old
    world.network.filter = None
    world.network.groups = {}
    world.run(10)
    assert s1.commit >= 2  # committed together with this term's NOOP
    assert [d for _, d in world.applied_datas("s5")][:1] == [b"term2"]


def test_proposal_without_leader_is_dropped() -> None:
    world = World(7, ["a", "b", "c"])
    with pytest.raises(Dropped) as info:
        world.raft("a").propose([b"x"])
    assert info.value.reason == "no leader" and info.value.leader is None


def test_follower_forwards_proposals_to_the_leader() -> None:
    world = World(8, ["a", "b", "c"])
    leader = elect(world)
    follower = next(n for n in "abc" if n != leader)
    world.propose(follower, [b"via-follower"])
    world.run(5)
    for node in "abc":
        assert (b"via-follower") in [d for _, d in world.applied_datas(node)]


def test_proposals_pending_max_names_the_limit() -> None:
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, proposals_pending_max=4)
    world = World(9, ["a", "b", "c"], config=config)
    leader = elect(world)
    world.network.groups = {leader: 1}  # nothing commits
    world.propose(leader, [b"1", b"2", b"3"])
    with pytest.raises(Dropped) as info:
        world.propose(leader, [b"4", b"5"])
    assert "proposals_pending_max=4" in info.value.reason


def test_heartbeat_commit_never_passes_the_followers_match() -> None:
    world = World(10, ["a", "b", "c"])
    leader = elect(world)
    lagging = next(n for n in "abc" if n != leader)
    world.network.groups = {lagging: 1}
    world.propose(leader, [b"x", b"y"])
    world.run(3)
    match = world.raft(leader).progress()[lagging][0]
    heartbeats: list[Message] = []

    def watch(m: Message) -> bool:
        if m.type is MsgType.HEARTBEAT and m.to == lagging:
            heartbeats.append(m)
        return True

    world.network.filter = watch
    world.run(world.config.ticks_heartbeat + 1)
    assert heartbeats and all(m.commit <= match for m in heartbeats)
    assert world.raft(leader).commit > match


def test_restart_resumes_from_storage_without_reapplying() -> None:
    world = World(11, ["a", "b", "c"])
    leader = elect(world)
    world.propose(leader, [b"1", b"2", b"3"])
    world.run(5)
    for name in "abc":
        node = world.nodes[name]
        applied_before = list(node.storage.sm.datas)
        term_before = node.raft.term if node.raft else 0
        node.crash()
        node.start()
        assert node.raft is not None and node.raft.term == term_before
        assert node.storage.sm.datas == applied_before
    world.run_until(lambda: world.leader() is not None, ELECTION_TICKS_MAX)
    world.propose(world.leader() or "a", [b"4"])
    world.run(10)
    for name in "abc":
        assert [d for _, d in world.applied_datas(name)] == [b"1", b"2", b"3", b"4"]


def raw_node(node_id: str, hard_state: HardState, entries: tuple[Entry, ...] = ()) -> RaftNode:
    return RaftNode(
        node_id,
        RaftConfig(ticks_election=10, ticks_heartbeat=2, append_entries_max=1),
        random.Random(1),
        hard_state=hard_state,
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=entries,
        applied=0,
    )


def test_leader_counts_its_own_log_only_after_advance() -> None:
    """Thesis 10.2.1: the leader may send its APPENDs before its own write completes (the agent
    does), so its own copy counts towards a majority only once the shell confirmed the write
    (advance). A shell may step messages while a write is in flight; a follower's
    acknowledgement then must not commit an entry whose only other copy is the leader's
    unsynced one."""
    a = raw_node("a", HardState(1, None, 0))
    a.step(Message(MsgType.TIMEOUT_NOW, "b", "a", 1))
    a.advance(a.ready())
    a.step(Message(MsgType.VOTE_RESP, "b", "a", 2))
    assert a.role is Role.LEADER
    noop = a.ready()  # the NOOP: written, synced, then advance()
    a.advance(noop)
    a.step(Message(MsgType.APPEND_RESP, "b", "a", 2, index=1))
    a.advance(a.ready())
    assert a.commit == 1
    a.propose([b"x"])
    in_flight = a.ready()  # entry 2: APPENDs out, the leader's own write in flight
    assert [e.index for e in in_flight.entries] == [2]
    a.step(Message(MsgType.APPEND_RESP, "b", "a", 2, index=2))
    assert a.commit == 1, "counted its own unsynced copy"
    a.advance(in_flight)
    assert a.commit == 2


def test_follower_commit_stops_at_the_last_new_entry() -> None:
    """Figure 3.1, AppendEntries rule 5: commitIndex = min(leaderCommit, index of the last NEW
    entry), not of our last entry: past what this APPEND verified, our log may hold entries of
    an old term that the leader replaced with its own (here index 3, term 1, where the leader
    committed index 3 of term 2)."""
    entries = tuple(Entry(i, 1, EntryKind.NORMAL, b"old%d" % i) for i in (1, 2, 3))
    b = raw_node("b", HardState(1, None, 1), entries)
    b.step(
        Message(
            MsgType.APPEND,
            "a",
            "b",
            3,
            log_term=1,
            index=1,
            entries=(entries[1],),  # one entry per APPEND: (2, term 1) matches ours
            commit=3,
        )
    )
    assert b.commit == 2
    (answer,) = b.ready().messages
    assert answer.type is MsgType.APPEND_RESP and answer.index == 2 and not answer.reject


def test_committed_entries_per_ready_bounded_by_bytes_max() -> None:
    """A follower learning that a long run of entries is committed hands them to the shell in
    Readies of at most committed_bytes_per_ready_max bytes of entry data (and at most
    committed_per_ready_max entries), in order, none lost; an entry larger than the byte bound
    still goes, alone."""
    config = RaftConfig(ticks_election=10, ticks_heartbeat=2, committed_bytes_per_ready_max=10)
    b = RaftNode(
        "b",
        config,
        random.Random(1),
        hard_state=HardState(1, None, 0),
        conf=ConfState.make(["a", "b", "c"]),
        snapshot=None,
        entries=(),
        applied=0,
    )
    datas = [b"12345"] * 6 + [b"x" * 50] + [b"123"] * 3
    entries = tuple(Entry(i, 1, EntryKind.NORMAL, data) for i, data in enumerate(datas, start=1))
    b.step(Message(MsgType.APPEND, "a", "b", 1, entries=entries, commit=len(entries)))
    batches: list[list[bytes]] = []
    for _ in range(2 * len(entries)):  # bounded: at least one entry per Ready
        if not b.has_ready():
            break
        ready = b.ready()
        if ready.committed:
            batches.append([e.data for e in ready.committed])
        b.advance(ready)
    assert [d for batch in batches for d in batch] == datas
    for batch in batches:
        assert len(batch) == 1 or sum(len(d) for d in batch) <= 10, batch
    assert [b"x" * 50] in batches
    assert max(len(batch) for batch in batches) == 3  # 3 x 3 bytes: the bound, not 1 by 1
