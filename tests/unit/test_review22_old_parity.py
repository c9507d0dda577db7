"""Review 22: the apply batch's held node writes (branch thrcpu, docs/data-model-v2.md 8.10)
against the state machine they replaced, run as it was.

The apply batch holds every body's node records in a batch view and puts them into LMDB once,
reads LMDB's object count once per batch and encodes a header only when it is put. The
reference is not the per-body subclass of test_apply_batches (it shares those three changes):
it is the agent package of commit fad6a99, the last one before them, extracted from git into a
package of its own (`superstatic_agent_r22old`) and imported beside the current one. Random
logs (dicts, lists spliced across chunk boundaries at small leaves, sets, objects, deletes and
the tombstone sweep, collections at a low threshold, objects at a low OBJECTS_MAX, records past
a low record_bytes_max, among them records a setup under a higher limit left larger, bodies
that write and then fail, conflicting read sets) are applied by the current state machine cut
into random batches (some aborted once first, some failing inside apply, some at a put of the
batch's held records, each applied again) and one entry per batch, and by the old one entry
per batch: outcomes equal, every db equal byte for byte. And a real MapFullError mid-batch,
the batch applied again in a larger map. No divergence was found (data-model-v2.md 8.10).

A later change meant to alter what apply stores or answers (a message, a record's format)
fails here by design: it moves OLD_COMMIT to the commit just before it, whose machine is then
the one a rolling upgrade runs beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import gc, listtree, nodestore
from superstatic_agent import sessions as sessions_module
from superstatic_agent import statemachine as sm_module
from superstatic_agent.raft.types import Entry
from superstatic_agent.storage import DB_NAMES, DBS_MAX
from support import old_agent
from test_apply_batches import CLIENTS, _Log

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

OLD_COMMIT = "fad6a99"
OLD_PACKAGE = "superstatic_agent_r22old"
MAP_BYTES = 64 << 20
TTL_MS = 1_000
RECORD_BYTES_MAX = 400  # low: big values and grown buckets and chunks meet it
SETUP_RECORD_BYTES_MAX = 4096  # the limit the setup entries of a log apply under
# Small list leaves and fanout: a few dozen elements make a tree of several levels.
LEAF_ITEMS_MAX = 3
FANOUT_MAX = 4

# A key whose entry record is a hashed bucket (records.ENTRY_KEY_INLINE_BYTES_MAX), and so
# past RECORD_BYTES_MAX with any value.
LONG_KEY = "h" * 500

_counter = itertools.count()


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    yield from old_agent.loaded(
        tmp_path_factory,
        OLD_COMMIT,
        OLD_PACKAGE,
        ("statemachine", "nodestore", "gc", "sessions", "listtree"),
    )


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch, old: dict[str, ModuleType]) -> None:
    """The same small limits in both packages."""
    for sm, sessions, gc_mod, tree in (
        (sm_module, sessions_module, gc, listtree),
        (old["statemachine"], old["sessions"], old["gc"], old["listtree"]),
    ):
        # SESSIONS_MAX and SESSION_SEQS_MAX stay at their defaults (test_apply_batches drives
        # them): the entries here are for the node records, not refused by a full session.
        monkeypatch.setattr(sessions, "SESSIONS_HELD_BYTES_MAX", 400)
        monkeypatch.setattr(sm, "TOMB_SWEEP_ENTRIES", 5)
        monkeypatch.setattr(sm, "TOMB_RETAIN_ENTRIES", 4)
        monkeypatch.setattr(sm, "TOMB_SWEEP_MAX", 2)
        monkeypatch.setattr(gc_mod, "OBJECTS_MAX", gc_mod.OBJECTS_MAX)  # tests lower it
        for function in (tree.ListTree.__init__, tree.ListTree.create):
            kwdefaults = function.__kwdefaults__
            monkeypatch.setitem(kwdefaults, "leaf_items_max", LEAF_ITEMS_MAX)
            monkeypatch.setitem(kwdefaults, "fanout_max", FANOUT_MAX)


def _objects_max(old: dict[str, ModuleType], value: int) -> None:
    gc.OBJECTS_MAX = value  # restored by `limits`
    old["gc"].OBJECTS_MAX = value


class _RichLog(_Log):
    """test_apply_batches's log, with lists, sets, objects, big values and bodies that write
    and then fail."""

    def step(self, action: int, c: int, x: int, y: int, dt: int) -> None:
        if action == 1 and x % 4:  # mostly a close is followed by a new session at once
            super().step(1, c, x, y, dt)
            self.sessions[CLIENTS[c]] = 0
            super().step(0, c, x, 2, 0)
            return
        if action < 12:
            super().step(action, c, x, y, dt)
            return
        client = CLIENTS[c]
        n = self.next_index
        big = "v" * (50 + 11 * x)  # 50..490 bytes: some records past RECORD_BYTES_MAX
        if action == 12:  # a splice of the long list, across leaves (some out of range)
            start = (x * 7) % 40
            self.txn(client, [["splice", "L", start, start + y, [x] * (x % 5)]])
        elif action == 13:
            self.txn(client, [["extend", "L", [big if y == 4 else x] * (1 + y)]])
        elif action == 14:
            tag = "add" if y % 2 else "discard"
            self.txn(client, [[tag, "S", [f"m{x % 7}", x % 3]]])
        elif action == 15:
            self.txn(client, [["set", "O", f"a{x % 4}", big if y > 2 else x]])
        elif action == 16:  # values near and past the limit, under short and long keys
            key: Any = (x % 9, f"b{x % 5}", LONG_KEY + str(x % 3))[y % 3]
            if y == 5:  # a long key's tombstone, in its bucket
                self.txn(client, [["del", "d", key]])
            else:
                self.txn(client, [["set", "d", key, big]])
        elif action == 17:  # writes, then an op that fails: nothing of the body may stay
            failing = (
                ["splice", "L", 0, 1000, []],
                ["set", "nope", "k", 1],
                ["set", "d", "late", "w" * 2000],
                ["extend", "L", ["w" * 2000]],
            )[y % 4]
            self.txn(
                client,
                [
                    ["set", "d", f"k{x % 6}", x],
                    ["splice", "L", 0, 1, [x, x]],
                    ["add", "S", [f"m{x % 7}"]],
                    ["set", "O", "a0", x],
                    ["new", f"f{n}", "list", list(range(x % 9))],
                    ["set", "d", "fresh", Ref(f"f{n}")],
                    failing,
                ],
            )
        elif action == 18:  # model-2 reads of the list, set and object at an older base
            oid = ("L", "S", "O")[y % 3]
            flags = (ops.READ_SHAPE, ops.READ_CONTENT)[x % 2]
            base = max(0, n - 1 - x % 6)
            body = ops.encode_txn_v2(base, {oid: (flags, [])}, [["set", "d", "seen", x]])
            self.request(client, "txn", body)
        elif action == 19:  # a long new list, bound into d (the one it replaces is garbage)
            oid = f"n{n}"
            values = [big if i == 0 and y == 5 else i for i in range(5 + x)]
            self.txn(client, [["new", oid, "list", values], ["set", "d", f"r{x % 3}", Ref(oid)]])
        elif action == 20:  # a node created, written in the same body and the next ones
            oid = f"n{n}"
            self.txn(
                client,
                [
                    ["new", oid, "dict", [["i", 0]]],
                    ["set", oid, "j", x],
                    ["set", "d", f"r{x % 3}", Ref(oid)],
                ],
            )
            self.txn(client, [["set", oid, "i", big]])
            self.txn(client, [["del", oid, "j"], ["set", oid, "k", y]])
        elif action == 21:  # creations in a row: the object count met inside a batch
            for i in range(1 + y):
                oid = f"c{n}_{i}"
                self.txn(client, [["new", oid, "set", [i]], ["set", "d", f"c{i}", Ref(oid)]])
        elif action == 22:  # a record the setup left large, rewritten smaller, then larger
            key = (f"k{x % 6}", f"b{x % 5}", LONG_KEY + str(x % 3))[y % 3]
            self.txn(client, [["set", "d", key, "v" * (410 + x)]])
            self.txn(client, [["set", "d", key, "v" * (420 + x)]])  # refused: larger than 410
        else:  # list ops on the lists action 19 made (if they are still there)
            target = f"n{max(1, n - 1 - x % 8)}"
            op = (
                ["splice", target, x % 5, x % 5 + y, [big] if y == 3 else [y]],
                ["extend", target, list(range(y + 1))],
                ["clear", target],
            )[y % 3]
            self.txn(client, [op])


def _rich_log(steps: list[tuple[int, int, int, int, int]]) -> tuple[list[Entry], int]:
    """The entries, and how many of them are the setup: applied under the limit
    SETUP_RECORD_BYTES_MAX, they leave records past RECORD_BYTES_MAX (the limit was lowered
    since), which a later write may rewrite no larger than they are."""
    log = _RichLog()
    log.request("a", "open")
    log.txn(
        "a",
        [
            [
                "new",
                "@roots",
                "dict",
                [["d", Ref("d")], ["L", Ref("L")], ["S", Ref("S")], ["O", Ref("O")]],
            ],
            ["new", "d", "dict", [["k0", 0]]],
            ["new", "L", "list", list(range(30))],
            ["new", "S", "set", ["m0", "m1"]],
            ["new", "O", "obj", ["C", [["a0", 0]]]],
        ],
    )
    keys: list[Any] = [f"k{i}" for i in range(6)] + [f"b{i}" for i in range(5)] + list(range(9))
    log.txn("a", [["set", "d", key, "p" * (600 + 20 * i)] for i, key in enumerate(keys)])
    log.txn("a", [["set", "d", LONG_KEY + str(i), "p" * (600 + 100 * i)] for i in range(3)])
    log.txn("a", [["set", "O", f"a{i}", "p" * (500 + 50 * i)] for i in range(4)])
    log.txn("a", [["splice", "L", 10, 10, ["p" * 700] * 3], ["add", "S", ["p" * 900]]])
    setup = len(log.entries)
    for step in steps:
        log.step(*step)
    return log.entries, setup


class _Replica:
    def __init__(
        self, path: Path, machine: type, gc_threshold: int, cache_bytes_max: int | None = None
    ) -> None:
        path.mkdir(parents=True)
        self.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        self.machine = machine
        self.gc_threshold = gc_threshold
        self.options = {} if cache_bytes_max is None else {"node_cache_bytes_max": cache_bytes_max}
        self.limit(SETUP_RECORD_BYTES_MAX)

    def limit(self, record_bytes_max: int) -> None:
        """A state machine with this record limit (an agent restarted with it)."""
        self.sm = self.machine(
            self.env,
            session_ttl_ms=TTL_MS,
            gc_threshold=self.gc_threshold,
            record_bytes_max=record_bytes_max,
            **self.options,
        )

    def apply(self, entries: list[Entry]) -> list[tuple[Any, ...]]:
        with self.env.begin(write=True) as txn:
            return [dataclasses.astuple(a) for a in self.sm.apply_batch(txn, entries)]

    def apply_failing(self, entries: list[Entry], how: int, at: int) -> None:
        """A first attempt that does not commit: the write transaction aborted after the
        whole batch (how 0), a storage error inside apply after entry `at` (how 1), or one
        raised by the `at`-th put of a node record (how 2: a full map while the batch's held
        writes go into LMDB, mid-batch or at its end)."""
        if how == 0:
            with pytest.raises(_Aborted), self.env.begin(write=True) as txn:
                self.sm.apply_batch(txn, entries)
                raise _Aborted
            return
        calls = 0

        def failing(real: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            if how == 2 and calls >= at:
                raise _Failed("injected")
            result = real(*args, **kwargs)
            calls += 1
            if how == 1 and calls > at:
                raise _Failed("injected")
            return result

        target, name = (self.sm, "_apply_one") if how == 1 else (nodestore, "record_put")
        real = getattr(target, name)
        setattr(target, name, functools.partial(failing, real))
        try:
            with pytest.raises(_Aborted), self.env.begin(write=True) as txn:
                # Fewer puts than `at`: the attempt commits nothing all the same.
                with contextlib.suppress(_Failed):
                    self.sm.apply_batch(txn, entries)
                raise _Aborted  # the storage's write transaction aborts with the error
        finally:
            setattr(target, name, real)

    def dbs(self) -> dict[bytes, dict[bytes, bytes]]:
        with self.env.begin() as txn:
            return {
                name: {
                    bytes(k): bytes(v) for k, v in txn.cursor(db=self.env.open_db(name, txn=txn))
                }
                # Not rules 3's oid_marks, which the old machine has not (rules 1 never
                # writes it: tests/unit/test_oid_marks.py).
                for name in DB_NAMES
                if not name.endswith(b"oid_marks")
            }

    def close(self) -> None:
        self.env.close()


class _Aborted(Exception):
    pass


class _Failed(lmdb.Error):
    """A storage error inside apply_batch (as a MapFullError is)."""


def _compare(
    tmp_path: Path,
    old: dict[str, ModuleType],
    log: tuple[list[Entry], int],
    cuts: list[int],
    gc_threshold: int,
    cache_bytes_max: int | None = None,
) -> list[tuple[Any, ...]]:
    """After the log's setup, the old machine one entry per batch, the new one too and in the
    batches `cuts` draws: outcomes and stores equal. Returns the outcomes."""
    entries, setup = log
    n = next(_counter)
    reference = _Replica(tmp_path / f"old{n}", old["statemachine"].StateMachine, gc_threshold)
    single = _Replica(tmp_path / f"one{n}", sm_module.StateMachine, gc_threshold)
    # The batched one with the record cache drawn: a small one drops records it held.
    cut = _Replica(tmp_path / f"cut{n}", sm_module.StateMachine, gc_threshold, cache_bytes_max)
    try:
        for replica in (reference, single, cut):
            assert {a[4] for a in replica.apply(entries[:setup])} == {"ok"}
            replica.limit(RECORD_BYTES_MAX)
        entries = entries[setup:]
        expected = [reference.apply([entry])[0] for entry in entries]
        assert [single.apply([entry])[0] for entry in entries] == expected
        batched: list[tuple[Any, ...]] = []
        at = 0
        for i, draw in enumerate(itertools.cycle(cuts)):
            if at >= len(entries):
                break
            # Batches of 1 to 14 entries, and now and then the rest of the log in one.
            size = len(entries) if draw == 30 else 1 + (draw + i) % 14
            batch = entries[at : at + size]
            if draw % 4 == 0:
                how = (draw // 4) % 3
                cut.apply_failing(batch, how, (draw * 7 + i) % (len(batch) * (1 + how)))
            batched.extend(cut.apply(batch))
            at += len(batch)
        for got, want in zip(batched, expected, strict=True):
            assert got == want, want[0]
        stored = reference.dbs()
        assert single.dbs() == stored
        assert cut.dbs() == stored
        return expected
    finally:
        reference.close()
        single.close()
        cut.close()


def _step() -> st.SearchStrategy[tuple[int, int, int, int, int]]:
    return st.tuples(
        st.integers(0, 23),
        st.integers(0, len(CLIENTS) - 1),
        st.integers(0, 40),
        st.integers(0, 5),
        st.integers(0, 3),
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(_step(), min_size=1, max_size=50),
    cuts=st.lists(st.integers(0, 30), min_size=30, max_size=30),
    gc_threshold=st.sampled_from([3, 10_000]),
    objects_max=st.sampled_from([gc.OBJECTS_MAX, 8, 12]),
    cache_bytes_max=st.sampled_from([None, 1_500]),
)
def test_random_logs_reach_the_old_machines_store_in_any_batches(
    tmp_path: Path,
    old: dict[str, ModuleType],
    limits: None,
    steps: list[tuple[int, int, int, int, int]],
    cuts: list[int],
    gc_threshold: int,
    objects_max: int,
    cache_bytes_max: int | None,
) -> None:
    _objects_max(old, objects_max)
    _compare(tmp_path, old, _rich_log(steps), cuts, gc_threshold, cache_bytes_max)


@pytest.mark.parametrize("seed", range(6))
def test_long_logs_reach_the_old_machines_store_in_any_batches(
    tmp_path: Path, old: dict[str, ModuleType], limits: None, seed: int
) -> None:
    """Long logs (what hypothesis's short ones rarely reach: deep lists, many collections and
    sweeps, the object limit met and freed again), and that they reach what they are for."""
    rng = random.Random(seed)
    steps = [
        (rng.randint(0, 23), rng.randint(0, 1), rng.randint(0, 40), rng.randint(0, 5), 0)
        for _ in range(300)
    ]
    cuts = [rng.randint(0, 30) for _ in range(50)]
    _objects_max(old, 9 if seed % 2 else gc.OBJECTS_MAX)
    gc_threshold = 3 if seed % 3 else 10_000
    cache = 1_500 if seed % 4 == 1 else None
    results = _compare(tmp_path, old, _rich_log(steps), cuts, gc_threshold, cache)
    errors = " ".join(str(r[5]) for r in results)
    outcomes = {r[4] for r in results}
    assert {"ok", "error", "conflict"} <= outcomes
    assert f"record_bytes_max={RECORD_BYTES_MAX}" in errors
    if seed % 2:
        assert "OBJECTS_MAX=9" in errors
    if seed % 3:
        assert any(r[6] for r in results)  # collected


def test_the_reference_is_the_machine_before_the_batch_view(old: dict[str, ModuleType]) -> None:
    """What the comparisons above stand on: the old package is the per-body machine (its
    views take no batch view, its headers are encoded when a body puts them)."""
    assert "batch" not in inspect.signature(old["nodestore"].NodeView).parameters
    assert "batch" in inspect.signature(nodestore.NodeView).parameters
    assert not hasattr(old["statemachine"].StateMachine, "_flush_writes")


def test_a_batch_that_fills_the_map_applies_again_as_the_old_machine_did(
    tmp_path: Path, old: dict[str, ModuleType], limits: None
) -> None:
    """A real MapFullError inside apply_batch (while the batch's held records go into LMDB),
    then the same batch applied again by the same state machine in a larger map (what the
    server's retry after a full map does, server.py _write_ready): the outcomes and the store
    of the old machine, one entry per batch."""
    log = _RichLog()
    log.request("a", "open")
    log.txn(
        "a",
        [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", [["k0", 0]]]],
    )
    setup = len(log.entries)
    for i in range(200):
        if i % 10 == 3:  # a node created: the count flushes the held writes mid-batch
            log.txn(
                "a", [["new", f"n{i}", "list", [i] * 9], ["set", "d", f"r{i % 3}", Ref(f"n{i}")]]
            )
        elif i % 10 == 7:
            log.txn("a", [["del", "d", f"k{i - 4}"]])
        else:
            log.txn("a", [["set", "d", f"k{i}", "w" * 8_000], ["set", "d", "hot", i]])
    entries = log.entries
    reference = _Replica(tmp_path / "old", old["statemachine"].StateMachine, 3)
    path = tmp_path / "cut"
    path.mkdir()
    env = lmdb.open(str(path), map_size=1 << 20, max_dbs=DBS_MAX, sync=False)
    machine = sm_module.StateMachine(
        env, session_ttl_ms=TTL_MS, gc_threshold=3, record_bytes_max=SETUP_RECORD_BYTES_MAX * 4
    )
    cut = _Replica.__new__(_Replica)
    cut.env, cut.sm = env, machine
    try:
        reference.limit(SETUP_RECORD_BYTES_MAX * 4)
        expected = [reference.apply([entry])[0] for entry in entries]
        assert {a[4] for a in expected} == {"ok"}
        assert cut.apply(entries[:setup]) == expected[:setup]
        with pytest.raises(lmdb.MapFullError) as full:
            cut.apply(entries[setup:])
        # Raised while held records went in (mid-batch here: the tombstone sweep's flush).
        assert "_flush_writes" in [frame.name for frame in full.traceback]
        env.set_mapsize(MAP_BYTES)
        assert cut.apply(entries[setup:]) == expected[setup:]
        assert cut.dbs() == reference.dbs()
    finally:
        reference.close()
        env.close()
