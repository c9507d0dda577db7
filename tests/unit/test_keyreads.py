"""Per-key storage and key-level validation at the agent (docs/data-model-v2.md sections 3-4):
the state machine on real LMDB, fed model-1 and model-2 bodies, no Raft."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import records as rec
from superstatic_agent import statemachine as sm_module
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import DBS_MAX
from support import store
from support.sessions import SESSION_PLACED, place_session

from superstatic.protocol import codec, ops
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import ProtocolError

SHAPE, CONTENT = ops.READ_SHAPE, ops.READ_CONTENT


class Replica:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=1 << 30, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env)
        place_session(self.env, "c")
        self.index = 0

    def body(self, body: bytes) -> Applied:
        self.index += 1
        data = encode_payload(Payload("txn", "c", self.index, 0, 1_000, body, SESSION_PLACED))
        with self.env.begin(write=True) as txn:
            return self.sm.apply(txn, Entry(self.index, 1, EntryKind.NORMAL, data))

    def v1(self, wire_ops: list[Any], reads: dict[str, int] | None = None) -> Applied:
        return self.body(ops.encode_txn(reads or {}, wire_ops))

    def v2(
        self, base: int, reads: dict[str, tuple[int, list[Any]]], wire_ops: list[Any]
    ) -> Applied:
        return self.body(ops.encode_txn_v2(base, reads, wire_ops))

    def node(self, oid: str) -> tuple[int, str, Any]:
        return store.objects(self.env)[oid]

    def header(self, oid: str) -> rec.Header:
        with self.env.begin() as txn:
            nid = rec.decode_nid(oid.encode(), _get(txn, self.sm.dbs.oids, oid.encode()))
            key = rec.nid_key(nid)
            return rec.decode_header(key, _get(txn, self.sm.dbs.nodes, key))

    def close(self) -> None:
        self.env.close()


def _get(txn: lmdb.Transaction, db: Any, key: bytes) -> bytes:
    raw = txn.get(key, db=db)
    assert raw is not None
    return bytes(raw)[:-4]  # less the seal


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Replica]:
    replica = Replica(tmp_path / "r")
    try:
        yield replica
    finally:
        replica.close()


def with_dict(r: Replica, items: list[list[Any]] | None = None) -> int:
    """Creates root "d" -> dict c.d; returns the index it applied at."""
    applied = r.v1(
        [["new", "@roots", "dict", [["d", Ref("c.d")]]], ["new", "c.d", "dict", items or []]]
    )
    assert applied.outcome == "ok", applied.error
    return applied.index


def test_writers_of_disjoint_keys_never_conflict(r: Replica) -> None:
    base = with_dict(r, [[f"k{i}", 0] for i in range(16)])
    # 16 read-modify-writes, each of its own key, all read at the same base.
    for i in range(16):
        applied = r.v2(base, {"c.d": (0, [f"k{i}"])}, [["set", "c.d", f"k{i}", 1]])
        assert applied.outcome == "ok", applied.error
    # Two on the same key: the second conflicts, naming the node and the key by type only.
    assert r.v2(base, {"c.d": (0, ["k0"])}, [["set", "c.d", "k0", 2]]).outcome == "conflict"
    conflict = r.v2(base, {"c.d": (0, ["k1"])}, [["set", "c.d", "k1", 2]])
    assert "c.d key #0 (a str of 2 chars) changed at" in conflict.error


def test_a_membership_read_conflicts_with_an_insert_of_that_key(r: Replica) -> None:
    base = with_dict(r)
    assert r.v1([["set", "c.d", "k", 1]]).outcome == "ok"  # inserted after `base`
    # `"k" in d` read at base (absent then): conflicts.
    assert r.v2(base, {"c.d": (0, ["k"])}, [["set", "c.d", "x", 1]]).outcome == "conflict"
    # A delete writes a tombstone: reading the key before it conflicts too.
    now = r.index
    assert r.v1([["del", "c.d", "k"]]).outcome == "ok"
    assert r.v2(now, {"c.d": (0, ["k"])}, [["set", "c.d", "y", 1]]).outcome == "conflict"
    # Read after the delete: absent still, fine.
    assert r.v2(r.index, {"c.d": (0, ["k"])}, [["set", "c.d", "y", 1]]).outcome == "ok"


def test_len_survives_updates_but_not_inserts(r: Replica) -> None:
    base = with_dict(r, [["a", 1], ["b", 2]])
    assert r.v1([["set", "c.d", "a", 10]]).outcome == "ok"  # an update
    assert r.v2(base, {"c.d": (SHAPE, [])}, [["set", "c.d", "n", 2]]).outcome == "ok"
    # ...but a whole-content read (values, ==) conflicts with the same update.
    assert r.v2(base, {"c.d": (CONTENT, [])}, [["set", "c.d", "n", 2]]).outcome == "conflict"
    base = r.index
    assert r.v1([["set", "c.d", "new", 1]]).outcome == "ok"  # an insert
    assert r.v2(base, {"c.d": (SHAPE, [])}, [["set", "c.d", "n", 3]]).outcome == "conflict"
    # Deleting a missing key changes nothing a model-2 reader can see.
    base = r.index
    assert r.v1([["del", "c.d", "missing"]]).outcome == "ok"
    assert r.v2(base, {"c.d": (SHAPE, ["missing"])}, [["set", "c.d", "n", 4]]).outcome == "ok"


def test_model_1_bodies_validate_the_node_version_bumped_by_every_op(r: Replica) -> None:
    created = with_dict(r, [["a", 1]])
    assert r.header("c.d").version == created
    noop = r.v1([["del", "c.d", "missing"]])  # changes nothing, names the node
    assert noop.outcome == "ok" and r.header("c.d").version == noop.index
    assert r.header("c.d").shape_version == created
    assert r.v1([["set", "c.d", "a", 2]], {"c.d": created}).outcome == "conflict"
    assert r.v1([["set", "c.d", "a", 2]], {"c.d": noop.index}).outcome == "ok"
    assert r.v1([], {"c.nope": 0}).outcome == "ok"  # absent read as absent
    conflict = r.v1([], {"c.nope": 3})
    assert conflict.outcome == "conflict" and "is at version 0" in conflict.error


def test_equal_keys_are_one_entry_and_keep_the_first_key(r: Replica) -> None:
    with_dict(r)
    assert (
        r.v1([["set", "c.d", 1.0, "x"], ["set", "c.d", 1, "y"], ["set", "c.d", True, "z"]]).outcome
        == "ok"
    )
    assert r.node("c.d")[2] == [[1.0, "z"]]
    kept = r.node("c.d")[2][0][0]
    assert type(kept) is float
    # A reader of key True (== 1) conflicts with a writer of 1.
    base = r.index
    assert r.v1([["set", "c.d", 1, "w"]]).outcome == "ok"
    assert r.v2(base, {"c.d": (0, [True])}, [["set", "c.d", "o", 1]]).outcome == "conflict"
    # Sets alike: 1 and 1.0 are one member.
    assert (
        r.v1([["new", "c.s", "set", [1.0, 1, 2]], ["set", "c.d", "s", Ref("c.s")]]).outcome == "ok"
    )
    assert sorted(r.node("c.s")[2]) == [1.0, 2]
    assert r.v1([["discard", "c.s", [True]]]).outcome == "ok"
    assert r.node("c.s")[2] == [2]
    # A NaN key is refused naming the rule (it could never be found again).
    refused = r.v1([["set", "c.d", float("nan"), 1]])
    assert refused.outcome == "error" and "NaN" in refused.error


def test_insertion_order_follows_python(r: Replica) -> None:
    with_dict(r, [["a", 1], ["b", 2], ["c", 3]])
    assert (
        r.v1([["del", "c.d", "a"], ["set", "c.d", "b", 20], ["set", "c.d", "a", 10]]).outcome
        == "ok"
    )
    expected = {"b": 20, "c": 3}
    expected["a"] = 10
    assert r.node("c.d")[2] == [[k, v] for k, v in expected.items()]
    assert r.header("c.d").count == 3


def test_absent_nodes_read_conflict_unless_created_or_the_root_table(r: Replica) -> None:
    # The root table read as absent (empty store) stays valid until it exists.
    assert r.v2(0, {"@roots": (SHAPE, ["d"])}, []).outcome == "ok"
    assert r.v2(0, {"c.x": (CONTENT, [])}, []).outcome == "conflict"
    created = r.v2(
        r.index,
        {"@roots": (0, ["d"]), "c.d": (CONTENT, ["k"])},
        [["new", "@roots", "dict", [["d", Ref("c.d")]]], ["new", "c.d", "dict", []]],
    )
    assert created.outcome == "ok", created.error
    # A base at or past the entry's own index is not a read anyone made.
    assert r.v2(r.index + 1, {}, []).outcome == "error"


def test_lists_validate_on_their_header(r: Replica) -> None:
    assert (
        r.v1(
            [["new", "@roots", "dict", [["l", Ref("c.l")]]], ["new", "c.l", "list", [1, 2, 3]]]
        ).outcome
        == "ok"
    )
    base = r.index
    assert r.v1([["splice", "c.l", 0, 1, ["x"]]]).outcome == "ok"  # same length
    assert r.v2(base, {"c.l": (SHAPE, [])}, [["extend", "c.l", [4]]]).outcome == "ok"
    assert r.v2(base, {"c.l": (CONTENT, [])}, [["extend", "c.l", [5]]]).outcome == "conflict"
    assert r.v2(r.index, {"c.l": (0, [0])}, []).outcome == "error"  # a list has no keys
    assert r.node("c.l")[2] == ["x", 2, 3, 4]
    outside = r.v1([["splice", "c.l", 0, 9, []]])
    assert outside.outcome == "error" and "outside list" in outside.error


def test_a_read_older_than_the_tombstone_horizon_conflicts_then_succeeds(
    r: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sm_module, "TOMB_SWEEP_ENTRIES", 4)
    monkeypatch.setattr(sm_module, "TOMB_RETAIN_ENTRIES", 3)
    with_dict(r, [["gone", 1], ["kept", 2]])
    deleted = r.v1([["del", "c.d", "gone"]])
    old_base = deleted.index - 1
    with r.env.begin() as txn:
        assert txn.stat(r.sm.dbs.tombs)["entries"] == 1
    for i in range(10):  # entries pass: a sweep purges the tombstone
        assert r.v1([["set", "c.d", "kept", i]]).outcome == "ok"
    with r.env.begin() as txn:
        assert txn.stat(r.sm.dbs.tombs)["entries"] == 0
        horizon = codec.loads(_get(txn, r.sm.dbs.sm_meta, rec.KEY_TOMB_HORIZON))
    assert horizon == deleted.index
    stale = r.v2(old_base, {"c.d": (0, ["gone"])}, [["set", "c.d", "x", 1]])
    assert stale.outcome == "conflict" and "tombstone horizon" in stale.error
    fresh = r.v2(r.index, {"c.d": (0, ["gone"])}, [["set", "c.d", "x", 1]])
    assert fresh.outcome == "ok"
    # The key re-inserted after a purge is a fresh insert.
    assert r.v1([["set", "c.d", "gone", 3]]).outcome == "ok"
    assert dict(r.node("c.d")[2])["gone"] == 3


def test_a_write_into_a_big_dict_writes_as_many_records_as_into_a_small_one(
    r: Replica,
) -> None:
    """A 100,000-key dict: one set of an existing key, and one insert, write the same few
    records as they do in a 100-key dict (counted, not timed)."""
    assert (
        r.v1(
            [
                ["new", "@roots", "dict", [["small", Ref("c.s")], ["big", Ref("c.b")]]],
                ["new", "c.s", "dict", [[i, i] for i in range(100)]],
                ["new", "c.b", "dict", [[i, i] for i in range(100_000)]],
            ]
        ).outcome
        == "ok"
    )
    written = {}
    for oid in ("c.s", "c.b"):
        assert r.v1([["set", oid, 50, "updated"]]).outcome == "ok"
        update = r.sm.records_written
        assert r.v1([["set", oid, -1, "inserted"]]).outcome == "ok"
        written[oid] = (update, r.sm.records_written)
    # An update: the entry and the header. An insert: entry, order record and header.
    assert written["c.s"] == written["c.b"] == (2, 3)
    # The root table is one dict like any other: a new root writes its entry too, not a copy.
    assert r.v1([["new", "c.n", "list", []], ["set", "@roots", "n", Ref("c.n")]]).outcome == "ok"
    assert r.sm.records_written <= 6


def test_clear_then_reuse_and_gc_remove_every_record(r: Replica, tmp_path: Path) -> None:
    r.sm = StateMachine(r.env, gc_threshold=1)
    with_dict(r, [["a", 1], ["b", 2]])
    assert (
        r.v1([["new", "c.x", "list", list(range(1000))], ["set", "c.d", "x", Ref("c.x")]]).outcome
        == "ok"
    )
    cleared = r.v1([["clear", "c.d"]])
    assert cleared.outcome == "ok"
    assert r.node("c.d")[2] == [] and r.header("c.d").count == 0
    collected = list(cleared.collected)
    for i in range(5):  # churn until the collection is due (gc.py's trigger)
        collected += r.v1([["new", f"c.t{i}", "set", []]]).collected
    assert "c.x" in collected  # the clear dropped the last reference to it
    assert r.v1([["set", "c.d", "again", 1]]).outcome == "ok"
    assert r.node("c.d")[2] == [["again", 1]]
    tables = store.node_tables(r.env)
    assert not any(k.startswith(b"c.x") for k in tables[b"oids"])
    nids = {rec.key_nid(k) for k in tables[b"nodes"]}
    for name in (b"entries", b"order", b"chunks"):
        assert {rec.key_nid(k) for k in tables[name]} <= nids, name


KEYS = st.sampled_from(
    [1, 1.0, True, 2, 2.0, "a", "b", 0.5, Fraction(1, 2), Decimal("0.5"), (1,), (True,), None]
)
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=3))
DICT_OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("del"), KEYS),
    st.tuples(st.just("clear")),
)
SET_OPS = st.one_of(
    st.tuples(st.just("add"), st.lists(KEYS, max_size=4)),
    st.tuples(st.just("discard"), st.lists(KEYS, max_size=4)),
    st.tuples(st.just("clear")),
)
LIST_OPS = st.one_of(
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.lists(VALUES, max_size=4)).map(
        lambda t: ("splice", min(t[0], t[1]), max(t[0], t[1]), t[2])
    ),
    st.tuples(st.just("extend"), st.lists(VALUES, max_size=4)),
    st.tuples(st.just("clear")),
)


def _typed(pairs: Any) -> list[Any]:
    """Items with their types: 1 and 1.0 are equal, but which one a dict kept matters."""
    return [(type(k).__name__, k, v) for k, v in pairs]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bodies=st.lists(
        st.tuples(
            st.lists(DICT_OPS, max_size=3),
            st.lists(SET_OPS, max_size=2),
            st.lists(LIST_OPS, max_size=2),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_per_key_apply_means_what_apply_op_means(
    tmp_path_factory: pytest.TempPathFactory, bodies: list[Any]
) -> None:
    """The agent's per-key apply against ops.apply_op over plain containers (what every app
    replica runs): the same contents, the same keys kept (1 vs 1.0 vs True), the same order."""
    r = Replica(tmp_path_factory.mktemp("differential"))
    try:
        assert (
            r.v1(
                [
                    [
                        "new",
                        "@roots",
                        "dict",
                        [["d", Ref("c.d")], ["s", Ref("c.s")], ["l", Ref("c.l")]],
                    ],
                    ["new", "c.d", "dict", []],
                    ["new", "c.s", "set", []],
                    ["new", "c.l", "list", []],
                ]
            ).outcome
            == "ok"
        )
        plain: dict[str, Any] = {"c.d": {}, "c.s": set(), "c.l": []}
        for dict_ops, set_ops, list_ops in bodies:
            wire_ops = [[op[0], "c.d", *op[1:]] for op in dict_ops]
            wire_ops += [[op[0], "c.s", *op[1:]] for op in set_ops]
            wire_ops += [[op[0], "c.l", *op[1:]] for op in list_ops]
            expected = {oid: type(c)(c) for oid, c in plain.items()}
            try:
                for op in wire_ops:
                    kind = {"c.d": "dict", "c.s": "set", "c.l": "list"}[op[1]]
                    ops.apply_op(kind, expected[op[1]], op)
                want = "ok"
            except ops.OpError:
                want = "error"
            applied = r.v1(wire_ops)
            assert applied.outcome == want, applied.error
            if want == "ok":
                plain = expected
            assert _typed(r.node("c.d")[2]) == _typed(plain["c.d"].items())
            members = r.node("c.s")[2]
            assert len(members) == len(plain["c.s"]) and set(members) == plain["c.s"]
            assert {type(m).__name__ for m in members} == {type(m).__name__ for m in plain["c.s"]}
            assert r.node("c.l")[2] == plain["c.l"]
            assert r.header("c.d").count == len(plain["c.d"])
    finally:
        r.close()


def test_a_staged_peer_snapshot_is_checked_record_by_record(r: Replica) -> None:
    """Peer snapshot chunks carry the node dbs' raw records (tags i n e q c t): each is
    validated by its db's layout before it is staged; a bad one is refused naming the db and
    key, never its bytes."""
    with_dict(r, [["k", "v"]])
    with r.env.begin() as txn:
        chunks = list(r.sm.snapshot_chunks(txn, 1 << 20))
    tags = {item[0] for chunk in chunks for item in cbor2.loads(chunk)[2]}
    assert {"m", "s", "i", "n", "e", "q"} <= tags
    secret = "s3cr3t" * 10
    bad = [
        ["n", rec.nid_key(5), codec.dumps(["c.z", "tree", 1, 1, 0, None, 0])],
        ["e", rec.entry_key(5, codec.dumps("k")), codec.dumps([1, 0, {secret: 1}])],
        ["e", rec.nid_key(5) + b"\x07", codec.dumps([1])],
        ["i", b"c.z", b"\x00" * 8],
        ["t", rec.tomb_key(1, rec.entry_key(5, codec.dumps("k"))), b"x"],
    ]
    for item in bad:
        with r.env.begin(write=True) as txn, pytest.raises(ProtocolError) as refused:
            r.sm.stage_chunk(txn, cbor2.dumps([0, True, [item]]))
        assert secret not in str(refused.value)
        db = {"n": "nodes", "e": "entries", "i": "oids", "t": "tombs"}[item[0]]
        assert db in str(refused.value), refused.value
