"""Records stay within record_bytes_max (issue 8, reproduction 3; issue 11): the limit bounds
one record (an entry, a list chunk, a header), not a container. A write that would leave a
record past it is an "error" outcome naming the limit, with nothing written, decided
identically whatever a replica's cache held; containers grow past it freely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import gc
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import DBS_MAX
from support import store
from support.sessions import SESSION_PLACED, place_session

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

MAP_BYTES = 256 << 20
LIMIT = 64 << 10  # small, so tests cross it cheaply


class Replica:
    def __init__(self, path: Path, record_bytes_max: int = LIMIT) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env, record_bytes_max=record_bytes_max)
        place_session(self.env, "c")
        self.index = 0
        self.seq = 0

    def entry_of(self, wire_ops: list[Any]) -> Entry:
        self.index += 1
        self.seq += 1
        body = ops.encode_txn({}, wire_ops)
        data = encode_payload(Payload("txn", "c", self.seq, 0, 1_000, body, SESSION_PLACED))
        return Entry(self.index, 1, EntryKind.NORMAL, data)

    def apply(self, entries: list[Entry]) -> list[Applied]:
        with self.env.begin(write=True) as txn:
            return self.sm.apply_batch(txn, entries)

    def txn(self, wire_ops: list[Any]) -> Applied:
        return self.apply([self.entry_of(wire_ops)])[0]

    def objects(self) -> dict[str, tuple[int, str, Any]]:
        return store.objects(self.env)

    def records(self) -> dict[bytes, dict[bytes, bytes]]:
        return store.node_tables(self.env)

    def largest(self) -> int:
        """Bytes of the largest record (less its 4-byte seal)."""
        return max(len(v) - 4 for table in self.records().values() for v in table.values())

    def close(self) -> None:
        self.env.close()


@pytest.fixture
def replica(tmp_path: Path) -> Any:
    r = Replica(tmp_path / "r")
    yield r
    r.close()


def setup(r: Replica) -> None:
    applied = r.txn([["new", "@roots", "dict", [["l", Ref("c.1")]]], ["new", "c.1", "list", []]])
    assert applied.outcome == "ok", applied.error


def test_a_value_past_the_limit_is_refused_naming_it(replica: Replica) -> None:
    """Reproduction 3 in small: one value whose record would pass record_bytes_max."""
    setup(replica)
    assert (
        replica.txn([["new", "c.2", "dict", []], ["set", "@roots", "d", Ref("c.2")]]).outcome
        == "ok"
    )
    before = replica.records()
    for wire_ops in (
        [["extend", "c.1", ["x" * LIMIT]]],
        [["splice", "c.1", 0, 0, ["x" * LIMIT]]],
        [["set", "c.2", "k", "x" * LIMIT]],
        [["set", "c.2", "ok", 1], ["set", "c.2", "k", "x" * LIMIT]],  # all or nothing
    ):
        refused = replica.txn(wire_ops)
        assert refused.outcome == "error" and refused.body is None
        assert f"record_bytes_max={LIMIT}" in refused.error, refused.error
        assert "c.1" in refused.error or "c.2" in refused.error
        assert replica.records() == before  # nothing written
    assert replica.largest() <= LIMIT


def test_containers_grow_past_the_limit_record_by_record(replica: Replica) -> None:
    """A list, a dict and the root table each hold far more than record_bytes_max: every
    record stays under it."""
    setup(replica)
    chunk = "x" * (LIMIT * 4 // 10)
    assert (
        replica.txn([["new", "c.2", "dict", []], ["set", "@roots", "d", Ref("c.2")]]).outcome
        == "ok"
    )
    for i in range(8):
        assert replica.txn([["extend", "c.1", [chunk]]]).outcome == "ok"
        assert replica.txn([["set", "c.2", i, chunk]]).outcome == "ok"
    names = [f"root-{i}" for i in range(2_000)]
    wire_ops: list[Any] = [["new", f"c.r{i}", "dict", []] for i in range(len(names))]
    wire_ops += [["set", "@roots", n, Ref(f"c.r{i}")] for i, n in enumerate(names)]
    assert replica.txn(wire_ops).outcome == "ok"
    objects = replica.objects()
    assert objects["c.1"][2] == [chunk] * 8 and len(objects["c.2"][2]) == 8
    assert len(objects["@roots"][2]) == 2 + len(names)
    assert replica.largest() <= LIMIT


def test_a_new_node_with_a_value_over_the_limit_is_refused(replica: Replica) -> None:
    setup(replica)
    big = ["y" * 1000 for _ in range(LIMIT // 1000 + 1)]  # many values: fine
    assert (
        replica.txn([["new", "c.2", "list", big], ["extend", "c.1", [Ref("c.2")]]]).outcome == "ok"
    )
    refused = replica.txn([["new", "c.3", "set", ["y" * LIMIT]], ["extend", "c.1", [Ref("c.3")]]])
    assert refused.outcome == "error" and "record_bytes_max" in refused.error, refused.error
    assert "c.3" not in replica.objects()


def test_a_record_already_over_the_limit_may_shrink_not_grow(tmp_path: Path) -> None:
    big = Replica(tmp_path / "r", record_bytes_max=4 * LIMIT)
    setup(big)
    assert big.txn([["extend", "c.1", ["z" * 2 * LIMIT]]]).outcome == "ok"
    assert big.txn([["new", "c.2", "dict", [["k", "z" * 2 * LIMIT]]]]).outcome == "ok"
    assert big.txn([["set", "@roots", "d", Ref("c.2")]]).outcome == "ok"
    big.close()
    r = Replica(tmp_path / "r")  # reopened with the smaller limit
    r.index = big.index
    r.seq = big.seq
    try:
        assert r.txn([["set", "c.2", "k", "z" * (2 * LIMIT + 10)]]).outcome == "error"
        assert r.txn([["set", "c.2", "k", "z" * (2 * LIMIT - 10)]]).outcome == "ok"
        assert r.txn([["splice", "c.1", 0, 1, ["z" * (2 * LIMIT + 10)]]]).outcome == "error"
        assert r.txn([["clear", "c.1"]]).outcome == "ok"
        assert r.txn([["extend", "c.1", ["fits again"]]]).outcome == "ok"
    finally:
        r.close()


SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OPS = st.one_of(
    st.tuples(st.just("extend"), st.integers(1, LIMIT // 3)),
    st.tuples(st.just("splice"), st.integers(0, 3)),
    st.tuples(st.just("set"), st.integers(1, LIMIT // 3)),
    st.tuples(st.just("del"), st.integers(0, 3)),
    st.tuples(st.just("clear"), st.just(0)),
)


@SETTINGS
@given(st.lists(st.lists(OPS, min_size=1, max_size=3), min_size=1, max_size=25), st.randoms())
def test_the_refusal_does_not_depend_on_batching(
    tmp_path_factory: pytest.TempPathFactory, bodies: list[list[Any]], rnd: Any
) -> None:
    """Replicas apply the same entries in different batches (so their node caches differ):
    the same outcomes, the same records."""
    base = tmp_path_factory.mktemp("batching")
    one, many = Replica(base / "one"), Replica(base / "many")
    try:
        setup_ops = [
            ["new", "@roots", "dict", [["l", Ref("c.1")], ["d", Ref("c.2")]]],
            ["new", "c.1", "list", []],
            ["new", "c.2", "dict", []],
        ]
        entries = [one.entry_of(setup_ops)]
        for body in bodies:
            wire_ops: list[Any] = []
            for tag, n in body:
                if tag == "extend":
                    wire_ops.append(["extend", "c.1", ["e" * n]])
                elif tag == "splice":
                    wire_ops.append(["splice", "c.1", 0, 0, ["s" * n]])
                elif tag == "set":
                    wire_ops.append(["set", "c.2", n % 4, "v" * n])
                elif tag == "del":
                    wire_ops.append(["del", "c.2", n])
                else:
                    wire_ops.append(["clear", "c.1"])
            entries.append(one.entry_of(wire_ops))
        results_one = [one.apply([entry])[0] for entry in entries]
        results_many: list[Applied] = []
        at = 0
        while at < len(entries):
            size = rnd.randint(1, 6)
            results_many += many.apply(entries[at : at + size])
            at += size
        assert results_many == results_one
        assert many.records() == one.records()
        assert one.largest() <= LIMIT
    finally:
        one.close()
        many.close()


def test_one_collection_carries_a_bounded_number_of_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids an entry collects travel in its stream event, which must fit one frame: one
    collection deletes at most GC_COLLECTED_BYTES_MAX of ids, later ones take the rest."""
    monkeypatch.setattr(gc, "GC_COLLECTED_BYTES_MAX", 200)
    path = tmp_path / "r"
    path.mkdir()
    r = Replica(path)
    r.sm = StateMachine(r.env, gc_threshold=1)
    try:
        setup(r)
        garbage = [f"c.g{i:03}" for i in range(60)]
        created = r.txn([["new", oid, "list", []] for oid in garbage])
        assert created.outcome == "ok"
        collected = list(created.collected)  # a first collection runs at once (threshold 1)
        assert 0 < len(collected) < len(garbage)
        for _ in range(60):
            applied = r.txn([["extend", "c.1", [1]]])
            assert sum(len(oid) + 3 for oid in applied.collected) <= 200
            collected += applied.collected
            if len(collected) == len(garbage):
                break
        assert sorted(collected) == garbage
        assert set(r.objects()) == {"@roots", "c.1"}
    finally:
        r.close()
