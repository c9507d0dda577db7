"""The agent's LMDB storage: one transaction per Ready, the log, compaction, the event stream,
snapshot install, and reopening after kill -9 in the middle of writes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Role,
    SnapshotMeta,
)
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import (
    Dbs,
    Storage,
    Trimmed,
    read_applied,
    record_get,
    record_put,
)
from support.sessions import SESSION_PLACED, place_session

from superstatic.protocol import codec, ops
from superstatic.protocol.codec import Ref

MAP_BYTES = 64 << 20
CONF = ConfState.make(["a", "b", "c"], [], {"a": "tcp://a", "b": "tcp://b", "c": "tcp://c"})


def ready(**fields: Any) -> Ready:
    base: dict[str, Any] = {
        "hard_state": None,
        "entries": (),
        "snapshot": None,
        "messages": (),
        "committed": (),
        "read_states": (),
        "role": Role.FOLLOWER,
        "leader": None,
        "term": 1,
    }
    base.update(fields)
    return Ready(**base)


# The clients of these tests; each has a session placed by Agent (support.sessions).
CLIENTS = ("c", "z")


def txn_entry(index: int, term: int, client: str, seq: int, wire_ops: list[Any]) -> Entry:
    assert client in CLIENTS, client
    body = ops.encode_txn({}, wire_ops)
    data = encode_payload(Payload("txn", client, seq, 0, 1_000 + index, body, SESSION_PLACED))
    return Entry(index, term, EntryKind.NORMAL, data)


class Agent:
    """Storage plus a state machine on its environment: what the server loop holds."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.storage = Storage(path, fsync=fsync, map_bytes=MAP_BYTES)
        for client in CLIENTS:
            place_session(self.storage.env, client, last_ms=1_000)
        self.sm = StateMachine(self.storage.env)
        # As the server does: an installed snapshot swaps the tables under the state machine.
        self.storage.on_dbs = self._tables_swapped
        self.applied: list[Any] = []

    def _tables_swapped(self, dbs: Dbs) -> None:
        self.sm.dbs = dbs

    def persist_and_apply(
        self, entries: list[Entry], commit: int, *, conf: ConfState | None = CONF
    ) -> None:
        """Appends `entries`, commits and applies everything up to `commit`."""
        loaded_applied = self.storage.load().applied
        to_apply = [e for e in self.storage.load().entries if loaded_applied < e.index <= commit]
        stored = {e.index for e in to_apply}
        to_apply += [e for e in entries if e.index <= commit and e.index not in stored]

        def apply_fn(txn: Any) -> None:
            for entry in to_apply:
                self.applied.append(self.sm.apply(txn, entry))

        hard = HardState(1, "a", commit)
        self.storage.write(ready(hard_state=hard, entries=tuple(entries)), apply_fn, conf=conf)

    def close(self) -> None:
        self.storage.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path / "agent")
    try:
        yield a
    finally:
        a.close()


def noops(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, EntryKind.NOOP, b"") for i in range(lo, hi + 1)]


# ------------------------------------------------------------------ write / load


def test_fresh_environment_loads_empty(agent: Agent) -> None:
    loaded = agent.storage.load()
    assert loaded.hard_state is None and loaded.conf is None and loaded.snapshot is None
    assert (loaded.entries, loaded.applied, loaded.log_time_ms) == ([], 0, 0)
    assert agent.storage.first_index() == 1


def test_write_then_reopen_round_trip(tmp_path: Path) -> None:
    a = Agent(tmp_path / "agent")
    entries = [*noops(1, 2), txn_entry(3, 1, "c", 1, [["new", "@roots", "dict", []]])]
    a.persist_and_apply(entries, commit=3)
    a.persist_and_apply(noops(4, 5), commit=3)
    a.close()
    b = Agent(tmp_path / "agent")
    try:
        loaded = b.storage.load()
        assert loaded.hard_state == HardState(1, "a", 3)
        assert loaded.conf == CONF
        assert loaded.entries == [*entries, *noops(4, 5)]
        assert loaded.applied == 3 and loaded.log_time_ms == 1_003
    finally:
        b.close()


def test_the_initial_configuration_is_kept_through_compaction(tmp_path: Path) -> None:
    """conf0 (what a joiner's core starts from) survives compaction; stores written before it
    existed derive it from the base configuration while their log still starts at 1."""
    a = Agent(tmp_path / "agent")
    try:
        a.persist_and_apply(noops(1, 3), commit=3)
        assert a.storage.load().conf0 == CONF  # derived: the log starts at index 1
        joined = ConfState.make(["a", "b", "c"], ["f"], {**dict(CONF.addresses), "f": "tcp://f"})
        a.storage.write(ready(), None, conf0=CONF)
        assert a.storage.compact(2) is not None
        loaded = a.storage.load()
        assert loaded.conf0 == CONF and loaded.snapshot is not None
        with pytest.raises(AssertionError, match="initial configuration changed"):
            a.storage.write(ready(), None, conf0=joined)
    finally:
        a.close()
    b = Agent(tmp_path / "joiner")
    try:
        b.storage.store_initial(CONF)
        loaded = b.storage.load()
        assert loaded.conf0 == CONF and loaded.conf == CONF and loaded.hard_state is None
    finally:
        b.close()


def test_truncate_then_append(agent: Agent) -> None:
    agent.persist_and_apply(noops(1, 6), commit=2)
    replacement = noops(4, 5, term=2)
    agent.persist_and_apply(replacement, commit=2)
    assert agent.storage.load().entries == [*noops(1, 3), *replacement]
    # Appending right after the last entry, and a conflict at the first uncommitted one.
    agent.persist_and_apply(noops(6, 6, term=2), commit=2)
    agent.persist_and_apply(noops(3, 3, term=3), commit=2)
    assert agent.storage.load().entries == [*noops(1, 2), *noops(3, 3, term=3)]
    with pytest.raises(AssertionError, match="truncating committed"):
        agent.persist_and_apply(noops(2, 2, term=4), commit=2)
    with pytest.raises(AssertionError, match="gap"):
        agent.persist_and_apply(noops(9, 9, term=3), commit=2)


def test_syncs_per_write(tmp_path: Path) -> None:
    """Format 5 (docs/data-model-v2.md 8.18): a Ready's entries and a new term or vote cost the
    log ONE fdatasync; the apply's LMDB commit flushes its data pages (MDB_NOMETASYNC: 1) and
    is not synced; a Ready with only entries or a term/vote has no LMDB commit; a changed base
    configuration (rare) is an LMDB commit and its sync before the log moves."""
    a = Agent(tmp_path / "on")
    try:
        a.persist_and_apply(noops(1, 3), commit=0, conf=None)
        assert a.storage.syncs == 2  # the log's flush, then the (empty) apply's commit
        a.storage.write(ready(entries=tuple(noops(4, 5))), None)
        assert a.storage.syncs == 3  # entries alone: one fdatasync, no LMDB commit
        # Applying only: the commit's data flush; a power loss may undo it, the durable log
        # replays it.
        a.storage.write(ready(), lambda txn: a.sm.apply(txn, noops(1, 1)[0]))
        assert a.storage.syncs == 4
        a.storage.write(ready(hard_state=HardState(2, None, 1)), None)
        assert a.storage.syncs == 5  # a new term must be durable before anything is sent
        a.storage.write(ready(hard_state=HardState(2, None, 3)), None)
        assert a.storage.syncs == 5  # only the commit index moved: recomputed after a crash
        a.storage.write(ready(hard_state=HardState(2, "b", 3)), None)
        assert a.storage.syncs == 6  # a vote must be durable before it is sent
        a.storage.write(ready(), None, conf=CONF)
        assert a.storage.syncs == 8  # the base configuration: LMDB's commit and its sync
        sent: list[int] = []
        a.storage.write(
            ready(entries=tuple(noops(6, 6))),
            lambda txn: sent.append(a.storage.syncs),
            durable=lambda: sent.append(a.storage.syncs),
        )
        # The messages go after the log's flush and before the apply's commit.
        assert sent == [9, 9] and a.storage.syncs == 10
        # An entries-only Ready (no hard state: the core's term and vote did not change) leaves
        # the durable term and vote known: a later commit-only Ready needs no flush (it cost
        # one extra fdatasync per write on the branch's first version).
        a.storage.write(ready(entries=tuple(noops(7, 7))), None)
        assert a.storage.syncs == 11
        a.storage.write(ready(hard_state=HardState(2, "b", 5)), None)
        assert a.storage.syncs == 11 and a.storage.term_vote_durable == (2, "b")
    finally:
        a.close()
    off = Agent(tmp_path / "off", fsync=False)
    try:
        off.persist_and_apply(noops(1, 3), commit=1)
        assert off.storage.syncs == 0
    finally:
        off.close()


def test_a_failing_apply_keeps_the_durable_log_and_applies_nothing(agent: Agent) -> None:
    """The apply is a step of its own, after the log's flush (8.18): an apply that raises
    aborts its transaction only; the entries and the term/vote were durable (their acks may
    have left) and stay."""
    agent.persist_and_apply(noops(1, 2), commit=1)

    def broken(txn: Any) -> None:
        agent.sm.apply(txn, noops(2, 2)[0])
        raise RuntimeError("apply failed")

    with pytest.raises(RuntimeError):
        agent.storage.write(
            ready(hard_state=HardState(5, "b", 2), entries=tuple(noops(3, 4))), broken
        )
    loaded = agent.storage.load()
    assert loaded.hard_state == HardState(5, "b", 1)
    assert loaded.entries == noops(1, 4) and loaded.applied == 1


def test_entries_range_and_byte_bound(agent: Agent) -> None:
    entries = [Entry(i, 1, EntryKind.NORMAL, b"x" * 100) for i in range(1, 11)]
    agent.storage.write(ready(entries=tuple(entries)), None)
    assert agent.storage.entries(3, 6, 10_000) == entries[2:5]
    assert agent.storage.entries(3, 100, 250) == entries[2:4]
    assert agent.storage.entries(3, 100, 1) == entries[2:3], "at least one entry"
    assert agent.storage.entries(11, 20, 10_000) == []


# ------------------------------------------------------------------ compaction and events


def _history(agent: Agent) -> list[Entry]:
    """1 noop, 2 creates a list root, 3 conf change, 4..9 extend it, 10 a conflict."""
    change = ConfChange("add_learner", "d", "tcp://d")
    entries = [
        *noops(1, 1),
        txn_entry(
            2,
            1,
            "c",
            1,
            [["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", []]],
        ),
        Entry(3, 1, EntryKind.CONF, change.encode()),
        *[txn_entry(i, 1, "c", i, [["extend", "c.1", [i]]]) for i in range(4, 10)],
        Entry(
            10,
            1,
            EntryKind.NORMAL,
            encode_payload(
                Payload(
                    "txn",
                    "c",
                    10,
                    0,
                    1_010,
                    ops.encode_txn({"c.1": 1}, [["clear", "c.1"]]),
                    SESSION_PLACED,
                )
            ),
        ),
    ]
    agent.persist_and_apply(entries, commit=10)
    return entries


def test_events_stream(agent: Agent) -> None:
    entries = _history(agent)
    # A retry of seq 4 after the fact: a dup.
    agent.persist_and_apply([Entry(11, 1, EntryKind.NORMAL, entries[3].data)], commit=11)
    events = agent.storage.events(1, 100, 1 << 20)
    assert [e[0] for e in events] == list(range(1, 12))
    assert events[0] == (1, None, None, "noop", None, (), 0, ())
    assert events[2] == (3, None, None, "noop", None, (), events[1][6], ())
    assert events[1][1:4] == ("c", 1, "ok") and events[1][4] is not None
    assert ops.decode_txn(events[4][4])[1] == [["extend", "c.1", [5]]]
    assert events[9][3] == "conflict" and events[9][4] is None
    assert events[10][3] == "dup" and events[10][4] is None
    # They are exactly what apply returned.
    for event, applied in zip(events, agent.applied, strict=True):
        assert event == (
            applied.index,
            applied.client,
            applied.seq,
            applied.outcome,
            applied.body,
            applied.collected,
            applied.log_time_ms,
            applied.heads,
        )
    # Each event carries the log time after its entry: never going back.
    times = [event[6] for event in events]
    assert times == sorted(times) and times[-1] >= 1_010
    assert agent.storage.events(12, 100, 1 << 20) == []
    assert [e[0] for e in agent.storage.events(4, 3, 1 << 20)] == [4, 5, 6]
    assert [e[0] for e in agent.storage.events(4, 100, 1)] == [4], "at least one event"
    with pytest.raises(Trimmed):
        agent.storage.events(0, 10, 1 << 20)


def test_events_carry_the_heads_of_the_existing_nodes_their_ops_reference(agent: Agent) -> None:
    """docs/virtual-heap.md section 3.2: an entry's event names (oid, kind, class) of every
    existing node its ops reference, none it creates, and an outcome record written before
    heads (three fields) still reads, with no heads."""
    entries = [
        txn_entry(
            1,
            1,
            "c",
            1,
            [
                ["new", "@roots", "dict", [["p", Ref("c.p")], ["d", Ref("c.d")]]],
                ["new", "c.p", "obj", ["Point", [["x", 1]]]],
                ["new", "c.d", "dict", []],
            ],
        ),
        # References two existing nodes and one it creates.
        txn_entry(
            2,
            1,
            "c",
            2,
            [
                ["new", "c.l", "list", [Ref("c.p")]],
                ["set", "c.d", "k", Ref("c.p")],
                ["set", "c.d", "l", Ref("c.l")],
                ["set", "c.d", "me", Ref("c.d")],
            ],
        ),
        # References nothing.
        txn_entry(3, 1, "c", 3, [["set", "c.d", "n", 1]]),
        # Removes a reference: the removed value's target is named too (the app resolves it).
        txn_entry(4, 1, "c", 4, [["del", "c.d", "k"]]),
    ]
    agent.persist_and_apply(entries, commit=4)
    created, referencing, plain, removing = agent.applied
    assert created.outcome == "ok" and created.heads == ()
    assert referencing.outcome == "ok"
    assert sorted(referencing.heads) == [("c.d", "dict", None), ("c.p", "obj", "Point")]
    assert plain.heads == ()
    assert removing.heads == ()  # the key holds a ref, the op names only the key
    events = agent.storage.events(1, 10, 1 << 20)
    assert [event[7] for event in events] == [a.heads for a in agent.applied]
    # An outcome record of three fields (written before heads) reads with none.
    key = (2).to_bytes(8, "big")
    with agent.storage.env.begin(write=True) as txn:
        raw = cbor2.loads(record_get(txn, agent.storage.dbs.outcomes, "outcomes", key))
        assert len(raw) == 4
        record_put(txn, agent.storage.dbs.outcomes, key, cbor2.dumps(raw[:3]))
    old = agent.storage.events(2, 1, 1 << 20)[0]
    assert old[:7] == events[1][:7] and old[7] == ()


def test_compact_trims_log_and_outcomes_and_records_the_conf(tmp_path: Path) -> None:
    a = Agent(tmp_path / "agent")
    entries = _history(a)
    with pytest.raises(AssertionError, match="beyond applied"):
        a.storage.compact(11)
    meta = a.storage.compact(5)
    expected_conf = ConfState.make(["a", "b", "c"], ["d"], {**dict(CONF.addresses), "d": "tcp://d"})
    assert meta == SnapshotMeta(5, 1, expected_conf)
    assert a.storage.compact(5) is None and a.storage.compact(3) is None
    assert a.storage.first_index() == 6
    with pytest.raises(Trimmed) as trimmed:
        a.storage.events(5, 10, 1 << 20)
    assert trimmed.value.first_index == 6
    with pytest.raises(Trimmed):
        a.storage.entries(5, 10, 1 << 20)
    assert [e[0] for e in a.storage.events(6, 10, 1 << 20)] == [6, 7, 8, 9, 10]
    a.close()
    b = Agent(tmp_path / "agent")
    try:
        loaded = b.storage.load()
        assert loaded.snapshot == meta and loaded.conf == expected_conf
        assert loaded.entries == entries[5:] and loaded.applied == 10
        # Compacting everything applied leaves an empty log that still appends after it.
        meta_all = b.storage.compact(10)
        assert meta_all is not None and meta_all.index == 10
        b.persist_and_apply(noops(11, 12), commit=12)
        assert [e.index for e in b.storage.load().entries] == [11, 12]
    finally:
        b.close()


# ------------------------------------------------------------------ snapshots


def test_snapshot_install_through_write(tmp_path: Path) -> None:
    source = Agent(tmp_path / "source")
    target = Agent(tmp_path / "target")
    try:
        _history(source)
        # The target has its own divergent, uncommitted log and some old state.
        target.persist_and_apply(
            [
                *noops(1, 1),
                txn_entry(2, 1, "z", 1, [["new", "@roots", "dict", []]]),
                *noops(3, 7, term=1),
            ],
            commit=2,
        )
        applied, nodes = source.storage.object_snapshot()
        source_nodes = dict(nodes)
        assert applied == 10 and set(source_nodes) == {"@roots", "c.1"}
        with source.storage.env.begin() as txn:
            chunks = list(source.sm.snapshot_chunks(txn, 64))
        with target.storage.env.begin(write=True) as txn:
            for chunk in chunks:
                target.sm.stage_chunk(txn, chunk)
        meta = SnapshotMeta(10, 1, CONF)
        target.storage.write(ready(hard_state=HardState(1, "a", 10), snapshot=meta), None)
        loaded = target.storage.load()
        assert loaded.snapshot == meta and loaded.entries == [] and loaded.applied == 10
        assert dict(target.storage.object_snapshot()[1]) == source_nodes
        assert target.storage.first_index() == 11
        # The log continues after the snapshot on both.
        nxt = txn_entry(11, 2, "c", 11, [["extend", "c.1", ["after"]]])
        for a in (source, target):
            a.persist_and_apply([nxt], commit=11)
        assert dict(target.storage.object_snapshot()[1]) == dict(
            source.storage.object_snapshot()[1]
        )
        assert target.storage.events(11, 5, 1 << 20) == source.storage.events(11, 5, 1 << 20)
    finally:
        source.close()
        target.close()


def test_an_install_whose_write_aborts_leaves_tables_and_handles_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table flip and the state machine's handles go with the install's one transaction
    (with the base configuration): a failure in it (as a full map's) leaves the old tables
    live, the handles put back (the state machine's too), the log as it was, and a reopened
    store reads the state before."""
    source = Agent(tmp_path / "source")
    target = Agent(tmp_path / "target")
    try:
        _history(source)
        target.persist_and_apply(
            [*noops(1, 1), txn_entry(2, 1, "z", 1, [["new", "@roots", "dict", []]])], commit=2
        )
        before = dict(target.storage.object_snapshot()[1])
        with source.storage.env.begin() as txn:
            chunks = list(source.sm.snapshot_chunks(txn, 64))
        with target.storage.env.begin(write=True) as txn:
            for chunk in chunks:
                target.sm.stage_chunk(txn, chunk)
        dbs = target.storage.dbs

        def sm_applied(txn: Any) -> int:
            return read_applied(txn, target.sm.dbs)[0]

        def failing(txn: Any, conf: ConfState) -> None:
            assert sm_applied(txn) == 10  # the state machine reads the swapped tables
            raise RuntimeError("apply failed")

        meta = SnapshotMeta(10, 1, CONF)
        with monkeypatch.context() as patch:
            patch.setattr(target.storage, "store_conf", failing)
            with pytest.raises(RuntimeError, match="apply failed"):
                target.storage.write(
                    ready(hard_state=HardState(1, "a", 10), snapshot=meta), None, conf=CONF
                )
        assert target.storage.dbs is dbs
        assert target.storage.load().entries == target.storage.entries(1, 3, 1 << 20)
        assert len(target.storage.load().entries) == 2
        with target.storage.env.begin() as txn:
            assert sm_applied(txn) == 2
        assert dict(target.storage.object_snapshot()[1]) == before
        target.close()
        target = Agent(tmp_path / "target")
        assert target.storage.load().applied == 2
        assert dict(target.storage.object_snapshot()[1]) == before
        # The staged snapshot is still whole: the install succeeds on the next write.
        target.storage.write(ready(hard_state=HardState(1, "a", 10), snapshot=meta), None)
        with target.storage.env.begin() as txn:
            assert sm_applied(txn) == 10
        assert dict(target.storage.object_snapshot()[1]) == dict(
            source.storage.object_snapshot()[1]
        )
    finally:
        source.close()
        target.close()


def test_object_snapshot_reads_one_point_in_time(agent: Agent) -> None:
    _history(agent)
    applied, nodes = agent.storage.object_snapshot()
    first = next(nodes)
    agent.persist_and_apply([txn_entry(11, 1, "c", 11, [["new", "c.2", "dict", []]])], commit=11)
    rest = dict([first, *nodes])
    assert applied == 10 and set(rest) == {"@roots", "c.1"}
    assert codec.decode_record(rest["c.1"])[2] == [4, 5, 6, 7, 8, 9]
    assert agent.storage.disk_bytes() > 0


# ------------------------------------------------------------------ kill -9 mid-writes

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from superstatic_agent.raft.types import Entry, EntryKind, HardState, Ready, Role, ConfState
    from superstatic_agent.payload import Payload, encode_payload
    from superstatic_agent.sessions import Session, encode_session
    from superstatic_agent.statemachine import StateMachine
    from superstatic_agent.storage import Storage, record_put
    from superstatic.protocol import ops
    from superstatic.protocol.codec import Ref

    # kill -9 leaves the page cache: the sync mode matters only for power loss.
    storage = Storage(Path(sys.argv[1]), fsync=False, map_bytes=64 << 20)
    with storage.env.begin(write=True) as txn:  # client c's session (support.sessions)
        if txn.get(b"c", db=storage.dbs.sessions) is None:
            record = encode_session(Session(0, 0, opened=1_000_000))
            record_put(txn, storage.dbs.sessions, b"c", record)
    sm = StateMachine(storage.env)
    conf = ConfState.make(["a"], [], {"a": "tcp://a"})
    loaded = storage.load()
    commit = loaded.applied
    term = 1 if loaded.hard_state is None else loaded.hard_state.term + 1

    def entry(index, term):
        if index == 1:
            o = [["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", []]]
        else:
            o = [["extend", "c.1", [index]]]
        body = ops.encode_txn({}, o)
        data = encode_payload(Payload("txn", "c", index, 0, index, body, 1_000_000))
        return Entry(index, term, EntryKind.NORMAL, data)

    for _ in range(100_000):
        # Commit the next entry and append one uncommitted entry after it, which the next
        # write truncates away: every write truncates, appends, stores hard state, applies.
        commit += 1
        committed = entry(commit, term)
        tail = entry(commit + 1, term)
        ready = Ready(HardState(term, "a", commit), (committed, tail), None, (), (committed,),
                      (), Role.LEADER, "a", term)
        storage.write(ready, lambda txn: sm.apply(txn, committed), conf=conf)
        if commit % 97 == 0:
            storage.compact(commit - 10)
        print(commit, flush=True)
    """
)


def _check_reopened(path: Path) -> int:
    storage = Storage(path, map_bytes=MAP_BYTES)
    try:
        loaded = storage.load()
        assert loaded.hard_state is not None
        assert loaded.applied == loaded.hard_state.commit
        base = 0 if loaded.snapshot is None else loaded.snapshot.index
        assert [e.index for e in loaded.entries] == list(
            range(base + 1, base + 1 + len(loaded.entries))
        )
        # The log's flush comes before the apply's commit: a kill between them leaves the log
        # a Ready ahead of what was applied (the committed entry and the tail after it).
        assert loaded.entries[-1].index in range(loaded.applied, loaded.applied + 3)
        _applied, nodes = storage.object_snapshot()
        objects = {oid: codec.decode_record(data) for oid, data in nodes}
        version, _kind, contents = objects["c.1"]
        assert contents == list(range(2, loaded.applied + 1)), "state matches the applied index"
        assert version == loaded.applied
        return loaded.applied
    finally:
        storage.close()


def test_reopens_valid_after_kill_9_mid_writes(tmp_path: Path) -> None:
    path = tmp_path / "victim"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(7)
    applied = 0
    for _round in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            target = rng.randint(50, 400)
            lines = 0
            for _ in range(target):
                if not child.stdout.readline():
                    break
                lines += 1
            assert lines == target, child.stderr.read().decode() if child.stderr else ""
        finally:
            # Mid-write: the child is still looping when it is killed.
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        reopened = _check_reopened(path)
        assert reopened >= applied + target
        applied = reopened
