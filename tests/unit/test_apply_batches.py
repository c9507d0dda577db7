"""How a run of committed entries is cut into apply batches must not reach the state.

Readies (and so `StateMachine.apply_batch` calls) are cut differently on every replica: the
leader, a follower, a restarted agent and one catching up each see other batches. The state
machine keeps per-batch caches (session records, sm_meta scalars) and a record cache across
batches; every one of them must leave the store and the per-entry outcomes exactly as one
entry per batch does. Random sequences of entries from several clients (dups, stale seqs,
expired and closed sessions, the session limits, conflicts of both data models, creates,
deletes, clears, garbage) are applied twice, one entry per batch and in random batches (some
aborted and applied again), and compared byte for byte, every db.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import gc
from superstatic_agent import sealed as sealed_module
from superstatic_agent import sessions as sessions_module
from superstatic_agent import statemachine as sm_module
from superstatic_agent.noderead import materialize
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.sessions import decode_session
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import DB_NAMES, DBS_MAX, index_key
from support.record_bytes import outcome_record_bytes, session_record_bytes

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

MAP_BYTES = 64 << 20
CLIENTS = ("a", "b", "c")
TTL_MS = 1_000
# Log time steps: none, a little, a quarter of a sweep period (ttl / 4), past the ttl (expiry;
# taken by one in four of the steps that draw it, so sessions mostly live a while).
TIME_STEPS_MS = (0, 7, 60, 1_500)

_counter = itertools.count()


def _step() -> st.SearchStrategy[tuple[int, int, int, int, int]]:
    # (action, client, x, y, time step): the builder below turns each into one entry.
    return st.tuples(
        st.integers(0, 11),
        st.integers(0, len(CLIENTS) - 1),
        st.integers(0, 40),
        st.integers(0, 5),
        st.integers(0, len(TIME_STEPS_MS) - 1),
    )


class _Log:
    """Builds entries from steps; what each client's requests name (session, seq) follows the
    entries as written, not their outcomes (those are what the test compares)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.time_ms = 1_000
        self.sessions = dict.fromkeys(CLIENTS, 0)
        self.seqs = dict.fromkeys(CLIENTS, 0)
        self.lows = dict.fromkeys(CLIENTS, 0)
        self.heard = dict.fromkeys(CLIENTS, 0)  # log time of the client's last request

    @property
    def next_index(self) -> int:
        return len(self.entries) + 1

    def raw(self, kind: EntryKind, data: bytes) -> None:
        self.entries.append(Entry(self.next_index, 1, kind, data))

    def request(
        self, client: str, kind: str, body: bytes = b"", *, seq: int | None = None, low: int = -1
    ) -> None:
        if seq is None:
            self.seqs[client] += 1
            seq = self.seqs[client]
        low = self.lows[client] if low < 0 else low
        if self.sessions[client] == 0 or (
            self.time_ms - self.heard[client] > TTL_MS and kind == "txn"
        ):
            # Mostly a client opens a session before it writes, and again after it expired
            # (the builder does not know outcomes: a session it thinks live may be gone).
            kind, body = "open", b""
            self.sessions[client] = 0
        self.heard[client] = self.time_ms
        session = self.sessions[client]
        if kind == "open" and session == 0:
            self.sessions[client] = self.next_index
            self.seqs[client] = seq = max(seq, self.seqs[client])
        payload = Payload(kind, client, seq, min(low, seq), self.time_ms, body, session)
        self.raw(EntryKind.NORMAL, encode_payload(payload))

    def txn(self, client: str, wire_ops: list[Any], **kwargs: Any) -> None:
        self.request(client, "txn", ops.encode_txn_v2(self.next_index - 1, {}, wire_ops), **kwargs)

    def step(self, action: int, c: int, x: int, y: int, dt: int) -> None:
        client = CLIENTS[c]
        self.time_ms += TIME_STEPS_MS[dt] if dt < 3 or x % 4 == 0 else 0
        if y == 5:  # the client's seq_low moves up to a seq it has (or has not yet) used
            self.lows[client] = max(self.lows[client], self.seqs[client] + 1 - x % 4)
        seq: int | None = None
        if y == 0 and self.seqs[client]:  # a retry of an earlier seq: dup, or stale
            seq = max(1, self.seqs[client] - x % 5)
        key = f"k{x % 6}"
        n = self.next_index
        if action == 0:
            if y == 1:  # starts a new session, replacing the client's own
                self.sessions[client] = 0
            self.request(client, "open", seq=seq)
        elif action == 1:
            self.request(client, "close", seq=seq)
        elif action == 2:
            self.txn(client, [["set", "d", key, x]], seq=seq)
        elif action == 3:
            self.txn(client, [["del", "d", key]], seq=seq)
        elif action == 4:  # a model-2 read of one key (or the whole node) at an older base
            flags = (0, ops.READ_SHAPE, ops.READ_CONTENT)[y % 3]
            reads = {"d": (flags, [key] if flags == 0 else [])}
            base = max(0, n - 1 - x % 5)
            body = ops.encode_txn_v2(base, reads, [["set", "d", "seen", x]])
            self.request(client, "txn", body, seq=seq)
        elif action == 5:  # a new node bound into d: the value it replaces becomes garbage
            kind = ("dict", "list", "set")[x % 3]
            contents: Any = [["i", x]] if kind == "dict" else [x, "y"]
            oid = f"n{n}"
            self.txn(client, [["new", oid, kind, contents], ["set", "d", f"r{x % 3}", Ref(oid)]])
        elif action == 6:  # model 1: whole-node versions, stale ones conflict
            body = ops.encode_txn({"d": max(0, n - 1 - x % 4)}, [["set", "d", key, -x]])
            self.request(client, "txn", body, seq=seq)
        elif action == 7:  # rejected bodies: an unknown node, garbage, a duplicate new
            bad = (
                ops.encode_txn_v2(0, {}, [["set", f"none{x}", "k", 1]]),
                b"\xff" * (1 + x % 3),
                ops.encode_txn_v2(0, {}, [["new", "d", "dict", []]]),
                ops.encode_txn_v2(0, {}, [["set", "d", "ok", 1], ["splice", "d", 0, 1, []]]),
            )[y % 4]
            self.request(client, "txn", bad, seq=seq)
        elif action == 8:
            if y % 2:
                self.raw(EntryKind.NOOP, b"")
            else:
                self.raw(EntryKind.NORMAL, b"\x83\x01\x02" if x % 2 else b"garbage")
        elif action == 9:  # writes into the nodes action 5 made (if they are still there)
            target = f"n{max(1, n - 1 - x % 8)}"
            op = (["add", target, [x]], ["extend", target, [x]], ["set", target, "i", x])[y % 3]
            self.txn(client, [op], seq=seq)
        elif action == 10:
            if x % 4 == 0:
                self.txn(client, [["clear", "d"]])
            elif x % 4 == 1:  # a reference to an existing node: the outcome records its head
                self.txn(client, [["set", "d", key, Ref("d")]])
            else:
                self.txn(client, [["set", "d", key, None]])
        else:  # several writes from one client and one entry of another, close together
            for i in range(1 + x % 4):
                self.txn(client, [["set", "d", f"k{i}", i]])
            self.txn(CLIENTS[(c + 1) % len(CLIENTS)], [["set", "d", key, x]])


def _log(steps: list[tuple[int, int, int, int, int]]) -> list[Entry]:
    log = _Log()
    log.request("a", "open")
    log.txn(
        "a",
        [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", [["k0", 0]]]],
    )
    for step in steps:
        log.step(*step)
    return log.entries


class _PerBody(StateMachine):
    """The reference: each body's node records put into LMDB as the body ends, as before the
    batch's writes were held to its end (data-model-v2.md 8.10). A body's view hands its
    writes to the batch's right before `_gc_step`; flushing there puts them at once."""

    def _gc_step(self, txn: lmdb.Transaction, dropped: int, created: int) -> list[str]:
        self._flush_writes()
        return super()._gc_step(txn, dropped, created)


class _Replica:
    def __init__(self, path: Path, *, per_body: bool = False, **options: Any) -> None:
        path.mkdir(parents=True)
        self.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        machine = _PerBody if per_body else StateMachine
        options = {"session_ttl_ms": TTL_MS, "gc_threshold": 3, **options}
        self.sm = machine(self.env, **options)

    def apply(self, entries: list[Entry], *, abort_first: bool = False) -> list[Applied]:
        if abort_first:  # the write transaction of this batch fails after the apply
            with pytest.raises(_Aborted), self.env.begin(write=True) as txn:
                self.sm.apply_batch(txn, entries)
                raise _Aborted
        with self.env.begin(write=True) as txn:
            return self.sm.apply_batch(txn, entries)

    def dbs(self) -> dict[bytes, dict[bytes, bytes]]:
        with self.env.begin() as txn:
            return {
                name: {
                    bytes(k): bytes(v) for k, v in txn.cursor(db=self.env.open_db(name, txn=txn))
                }
                for name in DB_NAMES
            }


class _Aborted(Exception):
    pass


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Limits small enough for a few dozen entries to reach them: the session table and a
    session's outcomes full, tombstones swept (and the horizon raised) every few entries, the
    session records carried from batch to batch forgotten every few batches."""
    monkeypatch.setattr(sessions_module, "SESSIONS_HELD_BYTES_MAX", 400)
    monkeypatch.setattr(sm_module, "SESSIONS_MAX", 2)
    monkeypatch.setattr(sm_module, "SESSION_SEQS_MAX", 3)
    monkeypatch.setattr(sm_module, "TOMB_SWEEP_ENTRIES", 5)
    monkeypatch.setattr(sm_module, "TOMB_RETAIN_ENTRIES", 4)
    monkeypatch.setattr(sm_module, "TOMB_SWEEP_MAX", 2)
    monkeypatch.setattr(gc, "OBJECTS_MAX", gc.OBJECTS_MAX)  # tests may lower it
    yield


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(_step(), min_size=1, max_size=45),
    cuts=st.lists(st.integers(0, 3), min_size=60, max_size=60),
    # A collection puts the batch's writes first (_flush_writes): without one in a batch, the
    # tombstone sweep, a clear and the object count must see them all the same.
    gc_threshold=st.sampled_from([3, 10_000]),
    objects_max=st.sampled_from([gc.OBJECTS_MAX, 7]),
)
def test_any_cut_into_batches_gives_the_same_outcomes_and_store(
    tmp_path: Path,
    small_limits: None,
    steps: list[tuple[int, int, int, int, int]],
    cuts: list[int],
    gc_threshold: int,
    objects_max: int,
) -> None:
    """Against the reference (one entry per batch, each body's records put at its end)."""
    entries = _log(steps)
    n = next(_counter)
    one = _Replica(tmp_path / f"one{n}", per_body=True, gc_threshold=gc_threshold)
    cut = _Replica(tmp_path / f"cut{n}", gc_threshold=gc_threshold)
    sm_module.gc.OBJECTS_MAX = objects_max  # restored by small_limits's monkeypatch
    try:
        singles = [one.apply([entry])[0] for entry in entries]
        batched: list[Applied] = []
        at = 0
        for i, choice in enumerate(itertools.cycle(cuts)):
            if at >= len(entries):
                break
            # Batches of 1 to 12 entries; every fourth batch (by the draw) aborts once first.
            size = 1 + (choice * 4 + i) % 12
            batch = entries[at : at + size]
            batched.extend(cut.apply(batch, abort_first=choice == 3 and i % 2 == 0))
            at += len(batch)
        assert [a.index for a in batched] == [e.index for e in entries]
        for single, other in zip(singles, batched, strict=True):
            assert other == single, single.index
        stored = cut.dbs()
        assert stored == one.dbs()
        # And each session record is the bytes the agent wrote before its writer reused the
        # bytes of outcomes it had encoded (data-model-v2 8.19): one cbor2 call of the array.
        for sealed in stored[b"sessions"].values():
            record = sealed[: -sealed_module.CHECKSUM_BYTES]
            assert record == session_record_bytes(decode_session(record))
        # Each outcome record is the one cbor2 call of its entry's result that the agent
        # wrote before outcome_records.py.
        for single in singles:
            sealed = stored[b"outcomes"][index_key(single.index)]
            assert sealed[: -sealed_module.CHECKSUM_BYTES] == outcome_record_bytes(
                single.outcome, single.collected, single.log_time_ms, single.heads
            )
    finally:
        one.env.close()
        cut.env.close()


def test_the_random_logs_reach_what_they_are_for(tmp_path: Path, small_limits: None) -> None:
    """The generator above is not vacuous: one fixed long log reaches every outcome, both
    session limits, garbage collection and the tombstone sweep."""
    rng = random.Random(11)
    steps = [
        (
            rng.randint(0, 11),
            rng.randint(0, 2),
            rng.randint(0, 40),
            rng.randint(0, 5),
            rng.randint(0, 3),
        )
        for _ in range(400)
    ]
    replica = _Replica(tmp_path / "r")
    try:
        results = [replica.apply([entry])[0] for entry in _log(steps)]
        outcomes = {a.outcome for a in results}
        assert outcomes == set(sm_module.OUTCOMES)
        errors = " ".join(a.error for a in results)
        for fragment in ("SESSIONS_MAX=2", "SESSION_SEQS_MAX=3", "stale request"):
            assert fragment in errors, fragment
        assert any(a.collected for a in results)
        with replica.env.begin() as txn:
            meta = replica.env.open_db(b"sm_meta", txn=txn)
            assert txn.get(b"tomb_horizon", db=meta) is not None
    finally:
        replica.env.close()


def test_a_session_change_an_entry_refuses_is_not_seen_by_the_next_in_its_batch(
    tmp_path: Path, small_limits: None
) -> None:
    """At SESSION_SEQS_MAX the entry has already raised its session's seq_low (in the copy it
    got) when it is refused; the refusal stores nothing, so the next entry of the same batch
    must still see the old seq_low: a write below the new one is refused at the limit again,
    not as "stale"."""
    log = _Log()
    log.request("a", "open", seq=5)  # records seq 5
    for seq in (6, 7):  # seqs 5, 6, 7: full at 3
        log.txn("a", [["new", f"o{seq}", "dict", []]], seq=seq)
    log.txn("a", [["new", "o8", "dict", []]], seq=8, low=5)  # refused; seq_low 5 not kept
    log.txn("a", [["new", "o3", "dict", []]], seq=3, low=0)
    one, cut = _Replica(tmp_path / "one"), _Replica(tmp_path / "cut")
    try:
        singles = [one.apply([entry])[0] for entry in log.entries]
        assert [a.outcome for a in singles] == ["ok", "ok", "ok", "error", "error"]
        assert all("SESSION_SEQS_MAX=3" in a.error for a in singles[3:])
        assert cut.apply(log.entries) == singles
        assert cut.dbs() == one.dbs()
    finally:
        one.env.close()
        cut.env.close()


class _Failed(lmdb.Error):
    """A storage error raised inside apply_batch (as MapFullError is, mid-batch)."""


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(_step(), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 12), min_size=40, max_size=40),
    fails=st.lists(st.integers(0, 11), min_size=40, max_size=40),
)
def test_a_batch_that_fails_inside_apply_and_is_applied_again_leaves_no_trace(
    tmp_path: Path,
    small_limits: None,
    steps: list[tuple[int, int, int, int, int]],
    cuts: list[int],
    fails: list[int],
) -> None:
    """The server applies a batch again when its write failed (MapFullError; server.py
    _write_ready), and that write may fail inside apply_batch, after some of the batch's
    entries changed their clients' sessions: the table holds those sessions as handed over
    (SessionTable.adopt, no copy), and the record cache the records. The attempt that raised
    must leave nothing that the second attempt (or a later batch) reads: outcomes and store as
    one entry per batch."""
    entries = _log(steps)
    n = next(_counter)
    one, cut = _Replica(tmp_path / f"one{n}", per_body=True), _Replica(tmp_path / f"cut{n}")
    try:
        singles = [one.apply([entry])[0] for entry in entries]
        batched: list[Applied] = []
        at = 0
        for size, fail in zip(itertools.cycle(cuts), itertools.cycle(fails), strict=False):
            if at >= len(entries):
                break
            batch = entries[at : at + size]
            if fail < len(batch):
                # The entry at `fail` applies, its session adopted, then the write fails.
                real = cut.sm._apply_one
                calls = 0

                def failing(*args: Any, real: Any = real, fail: int = fail) -> Any:
                    nonlocal calls
                    result = real(*args)
                    calls += 1
                    if calls > fail:
                        raise _Failed("injected")
                    return result

                cut.sm._apply_one = failing  # type: ignore[method-assign]
                try:
                    with pytest.raises(_Failed), cut.env.begin(write=True) as txn:
                        cut.sm.apply_batch(txn, batch)
                finally:
                    del cut.sm._apply_one
            batched.extend(cut.apply(batch))
            at += len(batch)
        for single, other in zip(singles, batched, strict=True):
            assert other == single, single.index
        assert cut.dbs() == one.dbs()
    finally:
        one.env.close()
        cut.env.close()


def _batch_against_reference(
    tmp_path: Path, entries: list[Entry], **options: Any
) -> tuple[list[Applied], _Replica]:
    """`entries` applied in one batch, and one by one with each body's records put at its end:
    the outcomes and every db equal. Returns the batch's outcomes and its replica (open)."""
    one = _Replica(tmp_path / "one", per_body=True, **options)
    cut = _Replica(tmp_path / "cut", **options)
    try:
        singles = [one.apply([entry])[0] for entry in entries]
        batched = cut.apply(entries)
        assert batched == singles
        assert cut.dbs() == one.dbs()
    except BaseException:
        cut.env.close()
        raise
    finally:
        one.env.close()
    return batched, cut


def test_a_batch_puts_a_node_written_by_each_body_once(tmp_path: Path) -> None:
    """Ten sets of ten new keys of one dict in one batch: an entry and an order record per key
    and the dict's header once, 21 node records, where a put per body wrote 30 (the header
    each time)."""
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", []]])
    setup = list(log.entries)
    for i in range(10):
        log.txn("a", [["set", "d", f"k{i}", i]])
    writes = log.entries[len(setup) :]
    one = _Replica(tmp_path / "one", per_body=True)
    cut = _Replica(tmp_path / "cut")
    try:
        for replica in (one, cut):
            replica.apply(setup)
        assert [a.outcome for a in one.apply(writes)] == ["ok"] * 10
        assert one.sm.records_written == 30
        assert [a.outcome for a in cut.apply(writes)] == ["ok"] * 10
        assert cut.sm.records_written == 21
        assert cut.dbs() == one.dbs()
    finally:
        one.env.close()
        cut.env.close()


def test_a_batch_counts_the_objects_its_earlier_bodies_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OBJECTS_MAX is checked against LMDB's count of oids: the nodes earlier bodies of the
    batch created must be in it (their records are put before the count is read)."""
    monkeypatch.setattr(gc, "OBJECTS_MAX", 4)  # @roots and d, then two more
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", []]])
    for i in range(3):
        log.txn("a", [["new", f"o{i}", "dict", []], ["set", "d", f"r{i}", Ref(f"o{i}")]])
    # No collection in the batch (it would put the batch's writes before the count anyway).
    batched, cut = _batch_against_reference(tmp_path, log.entries, gc_threshold=10_000)
    cut.env.close()
    assert [a.outcome for a in batched] == ["ok", "ok", "ok", "ok", "error"]
    assert "OBJECTS_MAX=4" in batched[-1].error


def test_a_batch_checks_an_oversize_record_against_what_its_earlier_bodies_wrote(
    tmp_path: Path,
) -> None:
    """A record already past record_bytes_max (the limit was lowered since) may be rewritten no
    larger than it is: "it is" includes an earlier body's write of it in the same batch."""
    big = _Replica(tmp_path / "big")
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", []]])
    log.txn("a", [["set", "d", "k", "x" * 3000]])
    try:
        assert [a.outcome for a in big.apply(log.entries)] == ["ok"] * 3
        stored = big.dbs()
    finally:
        big.env.close()
    log.txn("a", [["set", "d", "k", "x" * 2000]])  # smaller than stored: allowed
    log.txn("a", [["set", "d", "k", "x" * 2500]])  # larger than the 2000 now stored: refused
    for name in ("one", "cut"):
        # Both replicas start from the store the larger limit left.
        path = tmp_path / name
        path.mkdir()
        env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        with env.begin(write=True) as txn:
            for db_name, records in stored.items():
                db = env.open_db(db_name, txn=txn)
                for key, value in records.items():
                    txn.put(key, value, db=db)
        env.close()
    one = _Replica.__new__(_Replica)
    cut = _Replica.__new__(_Replica)
    for replica, machine in ((one, _PerBody), (cut, StateMachine)):
        path = tmp_path / ("one" if replica is one else "cut")
        replica.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        replica.sm = machine(replica.env, session_ttl_ms=TTL_MS, record_bytes_max=1024)
    try:
        tail = log.entries[3:]
        singles = [one.apply([entry])[0] for entry in tail]
        assert [a.outcome for a in singles] == ["ok", "error"]
        assert "record_bytes_max=1024" in singles[1].error
        assert cut.apply(tail) == singles
        assert cut.dbs() == one.dbs()
    finally:
        one.env.close()
        cut.env.close()


def test_a_clear_in_a_batch_sees_the_keys_its_earlier_bodies_set(tmp_path: Path) -> None:
    """`clear` walks the node's entries (NodeView.node_entries): those of LMDB, those the
    batch's earlier bodies wrote, and its own."""
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", [["k0", 0]]]])
    log.txn("a", [["set", "d", "k1", 1]])
    log.txn("a", [["del", "d", "k0"]])
    log.txn("a", [["clear", "d"]])
    log.txn("a", [["set", "d", "k2", 2]])
    batched, cut = _batch_against_reference(tmp_path, log.entries, gc_threshold=10_000)
    try:
        assert [a.outcome for a in batched] == ["ok"] * 6
        with cut.env.begin() as txn:
            d = materialize(txn, cut.sm.dbs, "d")
        assert d[2] == [["k2", 2]]  # (nid, kind, items)
    finally:
        cut.env.close()


def test_the_tombstone_sweep_in_a_batch_sees_its_earlier_bodies_tombstones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep (every TOMB_SWEEP_ENTRIES = 5 entries here, purging tombstones older than
    TOMB_RETAIN_ENTRIES = 4) reads LMDB's tombs with a cursor: a tombstone an earlier body of
    the same batch left must be there to purge."""
    monkeypatch.setattr(sm_module, "TOMB_SWEEP_ENTRIES", 5)
    monkeypatch.setattr(sm_module, "TOMB_RETAIN_ENTRIES", 4)
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", [["k0", 0]]]])
    log.txn("a", [["del", "d", "k0"]])  # index 3: its tombstone is due from index 7 on
    for i in range(8):
        log.txn("a", [["set", "d", f"s{i}", i]])
    batched, cut = _batch_against_reference(tmp_path, log.entries, gc_threshold=10_000)
    try:
        assert [a.outcome for a in batched] == ["ok"] * 11
        with cut.env.begin() as txn:
            meta = cut.env.open_db(b"sm_meta", txn=txn)
            assert txn.get(b"tomb_horizon", db=meta) is not None
            tombs = cut.env.open_db(b"tombs", txn=txn)
            assert txn.stat(tombs)["entries"] == 0
    finally:
        cut.env.close()


def test_the_object_count_a_batch_keeps_follows_a_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch reads LMDB's count of objects once and keeps it: a collection inside the batch
    deletes objects, and the next body's count must be the lower one."""
    monkeypatch.setattr(gc, "OBJECTS_MAX", 4)
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", []]])
    log.txn(
        "a",
        [
            ["new", "o0", "dict", []],
            ["new", "o1", "dict", []],
            ["set", "d", "a", Ref("o0")],
            ["set", "d", "b", Ref("o1")],
        ],
    )
    log.txn("a", [["set", "d", "a", None]])  # o0 is garbage, and collected here (threshold 1)
    log.txn("a", [["new", "o2", "dict", []], ["set", "d", "c", Ref("o2")]])  # 3 + 1 objects
    batched, cut = _batch_against_reference(tmp_path, log.entries, gc_threshold=1)
    cut.env.close()
    assert [a.outcome for a in batched] == ["ok"] * 5
    assert batched[3].collected == ("o0",)


def test_a_batch_applied_again_after_its_write_aborted_counts_the_objects_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count a batch read (after putting a node it created) is gone with its aborted write
    transaction: applied again, the batch counts what the store holds."""
    monkeypatch.setattr(gc, "OBJECTS_MAX", 3)
    log = _Log()
    log.request("a", "open")
    log.txn("a", [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", []]])
    setup = list(log.entries)
    log.txn("a", [["new", "o0", "dict", []], ["set", "d", "a", Ref("o0")]])  # 3 objects
    log.txn("a", [["set", "d", "x", 1]])  # counts after putting o0: 3
    batch = log.entries[len(setup) :]
    one = _Replica(tmp_path / "one", per_body=True, gc_threshold=10_000)
    cut = _Replica(tmp_path / "cut", gc_threshold=10_000)
    try:
        for replica in (one, cut):
            replica.apply(setup)
        singles = [one.apply([entry])[0] for entry in batch]
        assert [a.outcome for a in singles] == ["ok", "ok"]
        assert cut.apply(batch, abort_first=True) == singles
        assert cut.dbs() == one.dbs()
    finally:
        one.env.close()
        cut.env.close()
