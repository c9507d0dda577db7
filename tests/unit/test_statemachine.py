"""The agent's state machine: exactly-once sessions, validation, all-or-nothing ops, GC,
snapshots, hostile payloads, determinism. Real LMDB in a temporary directory, no Raft."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import sessions as sessions_module
from superstatic_agent import statemachine as sm_module
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import ConfChange, ConfState, Entry, EntryKind, SnapshotMeta
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import DBS_MAX, SNAPSHOT_DB_NAMES
from support import store
from support.sessions import SESSION_PLACED, place_session

from superstatic.protocol import codec, ops
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import ProtocolError

MAP_BYTES = 64 << 20
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Machine:
    """A state machine on its own environment, fed entries in order."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env, **kwargs)
        self.index = 0
        self.time_ms = 1_000
        self.sessions: dict[str, int] = {}  # client -> the session its requests name

    def entry(self, kind: EntryKind, data: bytes) -> Applied:
        self.index += 1
        with self.env.begin(write=True) as txn:
            return self.sm.apply(txn, Entry(self.index, 1, kind, data))

    def request(
        self,
        client: str,
        seq: int,
        body: bytes = b"",
        *,
        kind: str = "txn",
        seq_low: int = 0,
        time_ms: int | None = None,
        session: int | None = None,
    ) -> Applied:
        """One client request. `session` defaults to the client's session here: the one its
        last creating "open" (session 0) started, else one put in place for it (below)."""
        if time_ms is None:
            time_ms = self.time_ms
        if session is None:
            session = self.session_of(client, kind)
        payload = Payload(kind, client, seq, seq_low, time_ms, body, session)
        applied = self.entry(EntryKind.NORMAL, encode_payload(payload))
        if kind == "open" and session == 0 and applied.outcome in ("ok", "dup"):
            dup = applied.outcome == "dup"
            self.sessions[client] = applied.first_index if dup else applied.index
        return applied

    def session_of(self, client: str, kind: str) -> int:
        if client in self.sessions:
            return self.sessions[client]
        if kind == "open":
            return 0  # starts one
        # A write of a test that is not about sessions: its session record is put in place as
        # an "open" entry would have made it, without taking a log index, so the indexes (and
        # versions) those tests check stay the entries they apply.
        place_session(self.env, client, last_ms=self.time_ms)
        self.sessions[client] = SESSION_PLACED
        return SESSION_PLACED

    def txn(self, client: str, seq: int, reads: dict[str, int], wire_ops: list[Any]) -> Applied:
        return self.request(client, seq, ops.encode_txn(reads, wire_ops))

    def table(self, name: bytes) -> dict[bytes, bytes]:
        with self.env.begin() as txn:
            db = getattr(self.sm.dbs, name.decode())  # by what it holds (an install swaps)
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}

    def objects(self) -> dict[str, tuple[int, str, Any]]:
        return store.objects(self.env)

    def nodes(self) -> dict[bytes, dict[bytes, bytes]]:
        return store.node_tables(self.env)

    def version(self, oid: str) -> int:
        return self.objects()[oid][0]

    def close(self) -> None:
        self.env.close()


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(tmp_path / "sm")
    try:
        yield m
    finally:
        m.close()


def roots_with(name: str, oid: str, kind: str = "list", contents: Any = None) -> list[Any]:
    """Ops creating the root table with one root bound to a new node."""
    return [
        ["new", "@roots", "dict", [[name, Ref(oid)]]],
        ["new", oid, kind, [] if contents is None else contents],
    ]


# ------------------------------------------------------------------ basic outcomes


def test_noop_and_conf_entries(machine: Machine) -> None:
    noop = machine.entry(EntryKind.NOOP, b"")
    assert (noop.outcome, noop.kind, noop.client, noop.body) == ("noop", "noop", None, None)
    conf = machine.entry(EntryKind.CONF, ConfChange("add_learner", "n4", "tcp://h:1").encode())
    assert (conf.outcome, conf.kind) == ("noop", "conf")
    assert cbor2.loads(machine.table(b"sm_meta")[b"conf_last"]) == [
        2,
        "add_learner",
        "n4",
        "tcp://h:1",
    ]
    bad = machine.entry(EntryKind.CONF, b"\xff\x00")
    assert bad.outcome == "error" and "CONF" in bad.error
    outcomes = machine.table(b"outcomes")
    assert [cbor2.loads(outcomes[i.to_bytes(8, "big")])[0] for i in (1, 2, 3)] == [
        "noop",
        "noop",
        "error",
    ]


def test_ok_txn_sets_versions_to_the_entry_index(machine: Machine) -> None:
    machine.entry(EntryKind.NOOP, b"")
    first = machine.txn("c1", 1, {"@roots": 0}, roots_with("todo", "c1.1"))
    assert first.outcome == "ok", first.error
    assert first.body is not None and ops.decode_txn(first.body)[1][0][0] == "new"
    second = machine.txn("c1", 2, {}, [["extend", "c1.1", ["a", 2]]])
    assert second.outcome == "ok", second.error
    objects = machine.objects()
    assert objects["@roots"] == (2, "dict", [["todo", Ref("c1.1")]])
    assert objects["c1.1"] == (3, "list", ["a", 2])


def test_conflict_changes_nothing(machine: Machine) -> None:
    assert machine.txn("c1", 1, {"@roots": 0}, roots_with("todo", "c1.1")).outcome == "ok"
    before = machine.nodes()
    stale = machine.txn("c2", 1, {"c1.1": 0}, [["extend", "c1.1", ["x"]]])
    assert stale.outcome == "conflict" and "c1.1" in stale.error and stale.body is None
    racing_root = machine.txn("c2", 2, {"@roots": 0}, roots_with("other", "c2.1"))
    assert racing_root.outcome == "conflict"
    assert machine.nodes() == before
    fresh = machine.txn("c2", 3, {"c1.1": 1}, [["extend", "c1.1", ["x"]]])
    assert fresh.outcome == "ok", fresh.error


@pytest.mark.parametrize(
    ("bad_op", "fragment"),
    [
        (["splice", "c1.1", 0, 5, []], "splice"),
        (["add", "c1.1", [1]], "'add'"),
        (["set", "nope.1", "k", 1], "unknown object nope.1"),
        (["extend", "c1.1", [Ref("ghost.9")]], "unknown object ghost.9"),
        (["new", "c1.1", "list", []], "already exists"),
        (["set", "c1.3", 1, 2], "attribute name"),
    ],
)
def test_error_is_all_or_nothing(machine: Machine, bad_op: list[Any], fragment: str) -> None:
    ops_ = [*roots_with("todo", "c1.1"), ["new", "c1.3", "obj", ["Point", [["x", 1]]]]]
    ops_.append(["set", "@roots", "p", Ref("c1.3")])
    assert machine.txn("c1", 1, {}, ops_).outcome == "ok"
    before = machine.nodes()
    applied = machine.txn("c1", 2, {}, [["extend", "c1.1", ["first"]], bad_op])
    assert applied.outcome == "error", applied
    assert fragment in applied.error and "op #1" in applied.error
    assert applied.body is None and applied.collected == ()
    assert machine.nodes() == before


def test_ops_must_follow_the_new_op_of_their_node(machine: Machine) -> None:
    applied = machine.txn("c1", 1, {}, [["extend", "c1.1", [1]], ["new", "c1.1", "list", []]])
    assert applied.outcome == "error" and "before its 'new' op" in applied.error
    # Refs to nodes created later in the same body are fine (cycles are built that way).
    cycle = [
        ["new", "@roots", "dict", [["a", Ref("c1.2")]]],
        ["new", "c1.2", "list", [Ref("c1.3")]],
        ["new", "c1.3", "list", [Ref("c1.2")]],
    ]
    assert machine.txn("c1", 2, {}, cycle).outcome == "ok"


# ------------------------------------------------------------------ exactly-once sessions


def test_retry_of_an_applied_seq_is_a_dup_with_the_first_outcome(machine: Machine) -> None:
    assert machine.txn("c1", 1, {}, roots_with("todo", "c1.1")).outcome == "ok"
    body = ops.encode_txn({}, [["extend", "c1.1", ["once"]]])
    first = machine.request("c1", 2, body)
    retry = machine.request("c1", 2, body)
    assert first.outcome == "ok"
    assert (retry.outcome, retry.first_index, retry.first_outcome) == ("dup", first.index, "ok")
    assert retry.body is None, "replicas must not apply a dup again"
    assert machine.objects()["c1.1"][2] == ["once"]
    # A retry of a conflicted request answers the recorded conflict, it does not re-run.
    conflicted = machine.txn("c1", 3, {"c1.1": 1}, [["extend", "c1.1", ["x"]]])
    again = machine.txn("c1", 3, {"c1.1": first.index}, [["extend", "c1.1", ["x"]]])
    assert conflicted.outcome == "conflict"
    assert (again.outcome, again.first_outcome, again.error) == (
        "dup",
        "conflict",
        conflicted.error,
    )


def test_seq_below_seq_low_is_stale(machine: Machine) -> None:
    assert machine.request("c1", 5, kind="open", seq_low=5).outcome == "ok"
    stale = machine.request("c1", 3, kind="open", seq_low=0)
    assert stale.outcome == "error" and "stale request" in stale.error
    # Recorded outcomes below the new seq_low are forgotten.
    assert machine.request("c1", 6, kind="open", seq_low=6).outcome == "ok"
    assert machine.request("c1", 5, kind="open").outcome == "error"
    bad = machine.request("c1", 7, kind="open", seq_low=8)
    assert bad.outcome == "error" and bad.client is None, "seq_low above seq is malformed"


def test_session_seqs_limit(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sm_module, "SESSION_SEQS_MAX", 3)
    for seq in (1, 2, 3):
        assert machine.request("c1", seq, kind="open").outcome == "ok"
    full = machine.request("c1", 4, kind="open")
    assert full.outcome == "error" and "SESSION_SEQS_MAX=3" in full.error
    assert machine.request("c1", 4, kind="open", seq_low=2).outcome == "ok"


def test_sessions_limit(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sm_module, "SESSIONS_MAX", 2)
    assert machine.request("a", 1, kind="open").outcome == "ok"
    assert machine.request("b", 1, kind="open").outcome == "ok"
    full = machine.request("c", 1, kind="open")
    assert full.outcome == "error" and "SESSIONS_MAX=2" in full.error
    assert machine.request("a", 1, kind="close").outcome == "ok"
    assert machine.request("c", 1, kind="open").outcome == "ok"


def test_sessions_expire_by_log_time(tmp_path: Path) -> None:
    m = Machine(tmp_path / "sm", session_ttl_ms=1_000)
    try:
        assert m.request("c1", 1, kind="open", time_ms=10_000).outcome == "ok"
        # Log time never goes back: a late-stamped entry does not rewind it.
        assert m.request("c2", 1, kind="open", time_ms=10_900).outcome == "ok"
        assert m.request("c2", 2, kind="open", time_ms=5_000).outcome == "ok"
        assert m.request("c1", 1, kind="open", time_ms=5_000).outcome == "dup"  # at 10 900
        assert m.request("c2", 3, kind="open", time_ms=11_500).outcome == "ok"
        # c1 was last heard of at 10 900 (the dup refreshed it): alive until 11 900.
        assert m.request("c1", 1, kind="open", time_ms=11_900).outcome == "dup"
        # Idle past the ttl in log time: gone, and its retry is refused, not applied anew.
        assert m.request("c3", 1, kind="open", time_ms=13_000).outcome == "ok"
        sessions = m.table(b"sessions")
        assert b"c1" not in sessions, "the sweep at log time 13 000 freed the idle session"
        expired = m.request("c1", 1, kind="open", time_ms=13_000)
        assert expired.outcome == "session_expired" and "expired" in expired.error
        assert b"c1" not in m.table(b"sessions"), "an expired session is never reopened"
        assert cbor2.loads(m.table(b"sm_meta")[b"applied"])[2] == 13_000
    finally:
        m.close()


def test_a_retry_after_the_session_expired_is_refused_not_applied_again(tmp_path: Path) -> None:
    """Issue 9, bug 3: a retry of a write that applied before its session expired used to
    reopen the session and apply again (['x', 'y', 'x'])."""
    m = Machine(tmp_path / "sm", session_ttl_ms=1_000)
    try:
        assert m.request("c1", 1, kind="open", time_ms=10_000).outcome == "ok"
        new_list = [["new", "@roots", "dict", []], ["new", "c1.1", "list", []]]
        new_list.append(["set", "@roots", "l", Ref("c1.1")])
        assert m.txn("c1", 2, {}, new_list).outcome == "ok"
        x = ops.encode_txn({}, [["extend", "c1.1", ["x"]]])
        assert m.request("c1", 3, x, time_ms=10_100).outcome == "ok"  # its reply is lost
        assert m.request("c2", 1, kind="open", time_ms=11_500).outcome == "ok"
        y = ops.encode_txn({}, [["extend", "c1.1", ["y"]]])
        assert m.request("c2", 2, y, time_ms=11_500).outcome == "ok"
        retry = m.request("c1", 3, x, time_ms=11_600)
        assert retry.outcome == "session_expired" and retry.body is None
        assert m.objects()["c1.1"][2] == ["x", "y"]
    finally:
        m.close()


def test_a_session_is_named_by_its_open_entry_and_a_stale_open_cannot_revive_it(
    tmp_path: Path,
) -> None:
    m = Machine(tmp_path / "sm", session_ttl_ms=1_000)
    try:
        opened = m.request("c1", 1, kind="open", session=0, time_ms=10_000)
        assert opened.outcome == "ok" and m.sessions["c1"] == opened.index
        assert m.request("c1", 2, kind="open", session=opened.index + 7).outcome == (
            "session_expired"
        ), "a request naming another session of the client is refused"
        assert m.request("c1", 2, kind="open", session=opened.index).outcome == "ok"
        # The session expires; a stale copy of its "open" (seq 1) starts a new record...
        assert m.request("c2", 1, kind="open", time_ms=12_000).outcome == "ok"
        junk = m.request("c1", 1, kind="open", session=0, time_ms=12_000)
        assert junk.outcome == "ok" and junk.index != opened.index
        # ...which is not the session the client's requests name: still refused.
        late = m.request("c1", 2, kind="open", session=opened.index, time_ms=12_000)
        assert late.outcome == "session_expired"
        # The client opens a new session (a higher seq; every lower one answered): it replaces
        # the stale record, and a stale copy of an earlier seq cannot touch it.
        fresh = m.request("c1", 3, kind="open", session=0, seq_low=3, time_ms=12_000)
        assert fresh.outcome == "ok"
        stale = m.request("c1", 1, kind="open", session=0, time_ms=12_000)
        assert stale.outcome == "error" and "stale request" in stale.error
        assert m.request("c1", 4, kind="open", session=fresh.index).outcome == "ok"
    finally:
        m.close()


def test_close_ends_the_session(machine: Machine) -> None:
    opened = machine.request("c1", 1, kind="open")
    assert opened.outcome == "ok"
    assert machine.request("c1", 2, kind="close").outcome == "ok"
    assert b"c1" not in machine.table(b"sessions")
    assert machine.request("c1", 3, kind="open").outcome == "session_expired"
    assert machine.request("c1", 3, kind="open", session=0).outcome == "ok"


# ------------------------------------------------------------------ hostile payloads


def _hostile_payloads() -> st.SearchStrategy[bytes]:
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.text(max_size=70),
        st.binary(max_size=20),
        st.floats(allow_nan=True),
    )
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=7), max_leaves=20)
    shaped = st.tuples(
        st.sampled_from(["txn", "open", "close", "other", 1]),
        st.one_of(st.text(min_size=0, max_size=70), st.integers()),
        st.integers(-3, 2**64),
        st.integers(-3, 2**64),
        st.integers(-3, 2**64),
        st.one_of(st.binary(max_size=40), value),
    ).map(lambda t: cbor2.dumps(list(t)))
    return st.one_of(st.binary(max_size=200), value.map(cbor2.dumps), shaped)


@SETTINGS
@given(data=_hostile_payloads())
def test_hostile_payloads_give_error_outcomes(tmp_path: Path, data: bytes) -> None:
    m = Machine(tmp_path / f"h{next(_counter)}")
    try:
        applied = m.entry(EntryKind.NORMAL, data)
        assert applied.outcome in ("error", "ok", "session_expired"), applied
        if applied.outcome == "error":
            assert applied.error
        assert not any(m.nodes().values())
    finally:
        m.close()


_counter = itertools.count()

# Mostly plausible ids and values (so ops reach the apply path), sometimes garbage.
_valid_oids = ["@roots", "c.1", "c.2", "c.3", "c.9"]
_oids = st.sampled_from([*_valid_oids, *_valid_oids, *_valid_oids, "x" * 200, "", 7])
_wire_values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.builds(Ref, st.sampled_from([*_valid_oids, "ghost.1"])),
    st.tuples(st.integers(0, 2), st.builds(Ref, st.sampled_from(_valid_oids))),
    st.frozensets(st.integers(0, 3), max_size=2),
    st.lists(st.integers(), max_size=2),  # not a wire value
)
_hostile_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("new"),
            _oids,
            st.sampled_from(["dict", "list", "set", "obj", "tree"]),
            st.one_of(
                st.lists(_wire_values, max_size=3),
                st.just(["C", [["a", 1]]]),
                st.lists(st.tuples(_wire_values, _wire_values).map(list), max_size=2),
            ),
        ).map(list),
        st.tuples(st.sampled_from(["set", "del"]), _oids, _wire_values, _wire_values).map(
            lambda t: list(t)[: 4 if t[0] == "set" else 3]
        ),
        st.tuples(
            st.just("splice"),
            _oids,
            st.integers(-2, 4),
            st.integers(-2, 4),
            st.lists(_wire_values, max_size=2),
        ).map(list),
        st.tuples(
            st.sampled_from(["extend", "add", "discard", "bogus"]),
            _oids,
            st.lists(_wire_values, max_size=3),
        ).map(list),
        st.tuples(st.just("clear"), _oids).map(list),
    ),
    max_size=6,
)
# Well-formed ops only (each passes ops.check_op): they reach apply, where they may still not
# fit their node (wrong kind, out of range, unknown or existing ids).
_good_oid = st.sampled_from(_valid_oids)
_good_value = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.builds(Ref, _good_oid),
    st.tuples(st.integers(0, 2), st.builds(Ref, _good_oid)),
)
_plausible_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("new"),
            _good_oid,
            st.sampled_from(["list", "set"]),
            st.lists(_good_value, max_size=3),
        ).map(list),
        st.tuples(
            st.just("new"),
            _good_oid,
            st.just("dict"),
            st.lists(st.tuples(_good_value, _good_value).map(list), max_size=2),
        ).map(list),
        st.tuples(st.just("set"), _good_oid, _good_value, _good_value).map(list),
        st.tuples(st.just("del"), _good_oid, _good_value).map(list),
        st.tuples(
            st.integers(0, 3), st.integers(0, 3), _good_oid, st.lists(_good_value, max_size=2)
        )
        .filter(lambda t: t[0] <= t[1])
        .map(lambda t: ["splice", t[2], t[0], t[1], t[3]]),
        st.tuples(
            st.sampled_from(["extend", "add", "discard"]),
            _good_oid,
            st.lists(_good_value, max_size=3),
        ).map(list),
        st.tuples(st.just("clear"), _good_oid).map(list),
    ),
    max_size=6,
)


@SETTINGS
@given(
    wire_ops=st.one_of(_hostile_ops, _plausible_ops, _plausible_ops),
    reads=st.one_of(st.just({}), st.dictionaries(_oids, st.integers(-1, 3), max_size=2)),
)
def test_hostile_transactions_never_raise_and_are_all_or_nothing(
    tmp_path: Path, wire_ops: list[Any], reads: dict[Any, int]
) -> None:
    m = Machine(tmp_path / f"t{next(_counter)}", gc_threshold=1)
    try:
        setup = [
            ["new", "@roots", "dict", [["l", Ref("c.1")], ["d", Ref("c.2")], ["s", Ref("c.3")]]],
            ["new", "c.1", "list", [1, 2]],
            ["new", "c.2", "dict", [["k", Ref("c.1")]]],
            ["new", "c.3", "set", [1]],
        ]
        assert m.txn("c", 1, {}, setup).outcome == "ok"
        before = m.nodes()
        body = codec.dumps({"r": reads, "o": wire_ops})
        applied = m.request("c", 2, body)
        assert applied.outcome in ("ok", "error", "conflict"), applied
        if applied.outcome != "ok":
            assert applied.error and m.nodes() == before
        for oid, (_version, kind, contents) in m.objects().items():
            codec.check_contents(kind, contents, oid)  # everything stored stays decodable
    finally:
        m.close()


# ------------------------------------------------------------------ garbage collection


def test_gc_collects_exactly_the_unreachable(tmp_path: Path) -> None:
    m = Machine(tmp_path / "sm", gc_threshold=10_000)
    try:
        graph = [
            ["new", "@roots", "dict", [["a", Ref("c.a")]]],
            ["new", "c.a", "obj", ["Node", [["next", Ref("c.b")], ["shared", Ref("c.s")]]]],
            ["new", "c.b", "list", [(1, Ref("c.s"))]],  # a ref inside a tuple
            ["new", "c.s", "set", [frozenset({Ref("c.leaf")})]],  # and inside a frozenset
            ["new", "c.leaf", "dict", []],
            ["new", "c.cyc1", "list", [Ref("c.cyc2")]],  # a detached cycle
            ["new", "c.cyc2", "list", [Ref("c.cyc1")]],
            ["new", "c.orphan", "dict", [["x", Ref("c.a")]]],  # points in, not reachable
        ]
        assert m.txn("c", 1, {}, graph).outcome == "ok"
        assert set(m.objects()) == {
            "@roots",
            "c.a",
            "c.b",
            "c.s",
            "c.leaf",
            "c.cyc1",
            "c.cyc2",
            "c.orphan",
        }, "below the threshold nothing is collected"
        m.sm.gc_threshold = 1
        applied = m.txn("c", 2, {}, [["set", "c.a", "next", None]])  # drops c.b
        assert applied.outcome == "ok"
        assert applied.collected == ("c.b", "c.cyc1", "c.cyc2", "c.orphan")
        assert set(m.objects()) == {"@roots", "c.a", "c.s", "c.leaf"}
        outcome = m.table(b"outcomes")[applied.index.to_bytes(8, "big")]
        assert cbor2.loads(outcome)[:2] == ["ok", list(applied.collected)]
        # A collected node is gone for good: naming it is an error.
        gone = m.txn("c", 3, {}, [["set", "c.a", "next", Ref("c.b")]])
        assert gone.outcome == "error" and "unknown object c.b" in gone.error
    finally:
        m.close()


@SETTINGS
@given(
    edges=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20),
    rooted=st.sets(st.integers(0, 7), max_size=3),
    cut=st.lists(st.integers(0, 19), max_size=5),
)
def test_gc_matches_reachability(
    tmp_path: Path, edges: list[tuple[int, int]], rooted: set[int], cut: list[int]
) -> None:
    m = Machine(tmp_path / f"g{next(_counter)}", gc_threshold=1_000_000)
    try:
        out: dict[int, list[int]] = {n: [] for n in range(8)}
        for a, b in edges:
            out[a].append(b)
        creating = [["new", "@roots", "dict", [[f"r{n}", Ref(f"c.{n}")] for n in sorted(rooted)]]]
        creating += [["new", f"c.{n}", "list", [Ref(f"c.{t}") for t in out[n]]] for n in range(8)]
        assert m.txn("c", 1, {}, creating).outcome == "ok"
        cuts: list[list[Any]] = []
        for position in sorted(set(cut), reverse=True):
            if position < len(edges):
                a, b = edges[position]
                index = out[a].index(b)
                out[a].pop(index)
                cuts.append(["splice", f"c.{a}", index, index + 1, []])
        m.sm.gc_threshold = 1
        applied = m.txn("c", 2, {}, [*cuts, ["set", "@roots", "tmp", None]])
        assert applied.outcome == "ok", applied.error
        seen: set[int] = set()
        stack = sorted(rooted)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(out[n])
        expected = {"@roots"} | {f"c.{n}" for n in seen}
        assert set(m.objects()) == expected
        assert set(applied.collected) == {f"c.{n}" for n in range(8)} - expected
    finally:
        m.close()


def test_gc_follows_refs_in_every_place_an_entry_holds_them(tmp_path: Path) -> None:
    """The mark decodes only entries whose bytes hold the Ref tag: a ref in a value, in a dict
    key (the ekey), in a set member, under a long (hashed) key, and scalars that merely contain
    the tag's bytes, all reach the same verdict as a full decode."""
    m = Machine(tmp_path / "sm", gc_threshold=1_000_000)
    try:
        long_key = "k" * 600  # above ENTRY_KEY_INLINE_BYTES_MAX: a hashed bucket record
        graph = [
            ["new", "@roots", "dict", [["d", Ref("c.d")]]],
            [
                "new",
                "c.d",
                "dict",
                [
                    ["v", Ref("c.value")],
                    [(Ref("c.key"), 1), "a ref in the key"],
                    [long_key, Ref("c.long")],
                    [(long_key, Ref("c.longkey")), 2],
                    ["s", Ref("c.set")],
                    ["bytes", b"\xd9\xd9\xfa" * 3],  # the tag's bytes, no ref
                    [b"\xd9\xd9\xfa", "a key with the tag's bytes"],
                ],
            ],
            ["new", "c.value", "dict", []],
            ["new", "c.key", "dict", []],
            ["new", "c.long", "dict", []],
            ["new", "c.longkey", "dict", []],
            ["new", "c.set", "set", [Ref("c.member"), "plain"]],
            ["new", "c.member", "dict", []],
            ["new", "c.loose", "dict", [["back", Ref("c.d")]]],
        ]
        assert m.txn("c", 1, {}, graph).outcome == "ok"
        m.sm.gc_threshold = 1
        applied = m.txn("c", 2, {}, [["set", "c.d", "extra", 0]])
        assert applied.outcome == "ok", applied.error
        assert applied.collected == ("c.loose",)
        assert set(m.objects()) == {
            "@roots",
            "c.d",
            "c.value",
            "c.key",
            "c.long",
            "c.longkey",
            "c.set",
            "c.member",
        }
        # Churn above the 8 nodes alive, so the next entry collects again.
        loose = [["new", f"c.n{i}", "dict", []] for i in range(8)]
        cut = [["del", "c.d", long_key], ["del", "c.d", (Ref("c.key"), 1)]]
        applied = m.txn("c", 3, {}, loose + cut)
        assert applied.outcome == "ok", applied.error
        assert applied.collected == ("c.key", "c.long", *(f"c.n{i}" for i in range(8)))
    finally:
        m.close()


def test_gc_runs_after_enough_new_nodes_even_without_drops(tmp_path: Path) -> None:
    m = Machine(tmp_path / "sm", gc_threshold=3)
    try:
        assert m.txn("c", 1, {}, roots_with("l", "c.1")).outcome == "ok"  # 2 new: no GC
        lonely = m.txn("c", 2, {}, [["new", "c.2", "dict", []], ["new", "c.3", "dict", []]])
        assert lonely.collected == ("c.2", "c.3")
        assert set(m.objects()) == {"@roots", "c.1"}
    finally:
        m.close()


def test_records_of_created_nodes_are_not_cached_until_read(machine: Machine) -> None:
    """A body's new nodes are written, not cached: a bulk load (or a follower replaying one)
    would fill the cache with records nobody reads again. A later body that reads them caches
    what it reads."""
    wire_ops: list[Any] = [["new", "@roots", "dict", [["top", Ref("c.top")]]]]
    wire_ops.append(["new", "c.top", "dict", [[f"o{i}", Ref(f"c.o{i}")] for i in range(500)]])
    wire_ops += [["new", f"c.o{i}", "dict", [["i", i]]] for i in range(500)]
    assert machine.txn("c", 1, {}, wire_ops).outcome == "ok"
    assert machine.sm.cached_bytes() == 0
    assert machine.txn("c", 2, {}, [["set", "c.o7", "i", -7]]).outcome == "ok"
    cached = machine.sm.cached_bytes()
    assert cached > 0  # c.o7's oid, header and entry, read by this body
    assert machine.objects()["c.o7"][2] == [["i", -7]]
    assert machine.txn("c", 3, {}, [["set", "c.o7", "i", 7]]).outcome == "ok"
    assert machine.objects()["c.o7"][2] == [["i", 7]]


def test_new_nodes_records_fill_their_pages(machine: Machine) -> None:
    """Records of nodes a body creates go past each nid-keyed db's last key and are put in key
    order, appended (NodeView.commit): LMDB fills each leaf page. Put in the body's order they
    left pages about 0.71 full here. A page count, not a timing: the same ops, the same pages."""
    # The catch-up workload's shape: each body a new bucket of new small dicts.
    assert machine.txn("c", 1, {}, roots_with("top", "c.top", "dict")).outcome == "ok"
    count, per_body = 6_000, 1_000
    for seq, first in enumerate(range(0, count, per_body), start=2):
        bucket = f"c.b{first}"
        wire_ops: list[Any] = [
            ["new", bucket, "dict", []],
            ["set", "c.top", f"b{first}", Ref(bucket)],
        ]
        for i in range(first, first + per_body):
            wire_ops.append(["new", f"c.o{i:05}", "dict", [["i", i], ["name", f"object {i}"]]])
            wire_ops.append(["set", bucket, f"o{i:05}", Ref(f"c.o{i:05}")])
        assert machine.txn("c", seq, {}, wire_ops).outcome == "ok"
    env = machine.env
    psize = int(env.stat()["psize"])
    with env.begin() as txn:
        for name in (b"nodes", b"entries", b"order"):
            db = env.open_db(name, txn=txn, create=False)
            leaf_pages = int(txn.stat(db)["leaf_pages"])
            # A leaf node: 8 bytes of header and a 2-byte slot besides its key and value.
            used = sum(len(k) + len(v) + 10 for k, v in txn.cursor(db=db))
            fill = used / (leaf_pages * psize)
            assert fill > 0.9, (name, leaf_pages, used, fill)


# ------------------------------------------------------------------ snapshots


def _populate(m: Machine) -> None:
    m.entry(EntryKind.NOOP, b"")
    assert m.txn("c1", 1, {}, roots_with("todo", "c1.1")).outcome == "ok"
    for seq in range(2, 40):
        values = [f"item {seq} " + "x" * 50, (seq, Ref("c1.1"))]
        assert m.txn("c1", seq, {}, [["extend", "c1.1", values]]).outcome == "ok"
    assert m.request("c2", 1, kind="open").outcome == "ok"


@pytest.mark.parametrize("chunk_bytes_max", [1, 300, 1 << 20])
def test_snapshot_chunks_stage_install_gives_an_identical_state(
    tmp_path: Path, chunk_bytes_max: int
) -> None:
    source, target = Machine(tmp_path / "source"), Machine(tmp_path / "target")
    try:
        _populate(source)
        assert target.txn("other", 1, {}, roots_with("junk", "o.1")).outcome == "ok"
        with source.env.begin() as txn:
            chunks = list(source.sm.snapshot_chunks(txn, chunk_bytes_max))
        if chunk_bytes_max == 1:  # one record per chunk
            records = sum(len(source.table(n)) for n in SNAPSHOT_DB_NAMES)
            assert len(chunks) == records
        assert [cbor2.loads(c)[1] for c in chunks] == [False] * (len(chunks) - 1) + [True]
        with target.env.begin(write=True) as txn:
            for chunk in chunks:
                target.sm.stage_chunk(txn, chunk)
            meta = SnapshotMeta(source.index, 1, ConfState.make(["a"]))
            target.sm.install_staged(txn, meta)
        for name in SNAPSHOT_DB_NAMES:
            assert target.table(name) == source.table(name), name
            assert target.table(b"staging_" + name) == {}
        # Both continue identically from there.
        target.index = source.index
        for m in (source, target):
            assert m.txn("c1", 40, {}, [["extend", "c1.1", ["after"]]]).outcome == "ok"
            assert m.request("c2", 1, kind="open").outcome == "dup"
        assert target.nodes() == source.nodes()
    finally:
        source.close()
        target.close()


def test_stage_chunk_rejects_garbage_and_disorder(tmp_path: Path) -> None:
    source, target = Machine(tmp_path / "source"), Machine(tmp_path / "target")
    try:
        _populate(source)
        with source.env.begin() as txn:
            chunks = list(source.sm.snapshot_chunks(txn, 1))
        assert len(chunks) >= 3
        bad_chunks = [
            b"\xff",
            cbor2.dumps([0, True]),
            cbor2.dumps([0, True, [["z", b"k", b"v"]]]),
            cbor2.dumps([0, True, [["o", b"c.1", b"not a record"]]]),
            cbor2.dumps([0, True, [["s", b"c", cbor2.dumps([1, 2])]]]),
            cbor2.dumps([0, True, [["m", b"unknown", cbor2.dumps(1)]]]),
        ]
        for chunk in bad_chunks:
            with target.env.begin(write=True) as txn, pytest.raises(ProtocolError):
                target.sm.stage_chunk(txn, chunk)
        with target.env.begin(write=True) as txn:
            target.sm.stage_chunk(txn, chunks[0])
            with pytest.raises(ProtocolError, match="out of order"):
                target.sm.stage_chunk(txn, chunks[2])
            with pytest.raises(AssertionError, match="not completely staged"):
                target.sm.install_staged(txn, SnapshotMeta(source.index, 1, ConfState.make(["a"])))
    finally:
        source.close()
        target.close()


# ------------------------------------------------------------------ determinism and inspect


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2"]),
            st.integers(1, 6),
            st.integers(0, 3),
            st.integers(0, 3_000),
        ),
        max_size=25,
    )
)
def test_replicas_applying_the_same_entries_are_byte_identical(
    tmp_path: Path, steps: list[tuple[str, int, int, int]]
) -> None:
    n = next(_counter)
    a = Machine(tmp_path / f"a{n}", session_ttl_ms=1_000, gc_threshold=2)
    b = Machine(tmp_path / f"b{n}", session_ttl_ms=1_000, gc_threshold=2)
    try:
        for m in (a, b):
            assert m.txn("c0", 1, {}, roots_with("l", "c0.1")).outcome == "ok"
        for i, (client, seq, action, time_ms) in enumerate(steps):
            if action == 0:
                wire_ops = [["extend", "c0.1", [i]]]
            elif action == 1:
                wire_ops = [
                    ["new", f"{client}.{i}", "set", [i]],
                    ["splice", "c0.1", 0, 1, [Ref(f"{client}.{i}")]],
                ]
            elif action == 2:
                wire_ops = [["splice", "c0.1", 0, 1, []]]
            else:
                wire_ops = [["new", f"{client}.{i}", "dict", []]]
            body = ops.encode_txn({}, wire_ops)
            results = [
                m.request(client, seq, body, seq_low=max(0, seq - 2), time_ms=time_ms)
                for m in (a, b)
            ]
            assert results[0] == results[1]
        for name in (*SNAPSHOT_DB_NAMES, b"outcomes"):
            assert a.table(name) == b.table(name)
    finally:
        a.close()
        b.close()


def test_node_json(machine: Machine) -> None:
    graph = [
        ["new", "@roots", "dict", [["top", Ref("c.top")], ["loop", Ref("c.loop")]]],
        [
            "new",
            "c.top",
            "obj",
            [
                "Account",
                [
                    ["owner", "ann"],
                    ["tags", Ref("c.tags")],
                    ["again", Ref("c.tags")],
                    ["raw", b"\x01"],
                ],
            ],
        ],
        ["new", "c.tags", "set", ["b", "a", (1, 2)]],
        ["new", "c.loop", "dict", [[1, Ref("c.loop")], ["f", float("nan")]]],
    ]
    assert machine.txn("c", 1, {}, graph).outcome == "ok"
    with machine.env.begin() as txn:
        top = machine.sm.node_json(txn, "top")
        loop = machine.sm.node_json(txn, "loop")
        assert machine.sm.node_json(txn, "absent") is None
    assert top["__class__"] == "Account" and top["owner"] == "ann"
    assert sorted(map(str, top["tags"])) == sorted(map(str, ["a", "b", [1, 2]]))
    assert top["again"] == {"__ref__": "c.tags"}
    assert top["raw"] == {"__bytes__": "01"}
    assert loop == {"__items__": [[1, {"__ref__": "c.loop"}], ["f", "nan"]]}


def test_session_record_round_trip() -> None:
    session = sessions_module.Session(
        last_ms=5, low=2, seqs={3: (10, "ok", ""), 2: (9, "error", "x")}
    )
    decoded = sessions_module.decode_session(sessions_module.encode_session(session))
    assert decoded == session
    with pytest.raises(ProtocolError):
        sessions_module.decode_session(cbor2.dumps([1, 2, [[1, 2, "maybe", ""]]]))


# ---------------------------------------------------------------------------------- batches


def _batch_entries(start: int) -> list[Entry]:
    """Entries that create a dict, write it many times (single- and multi-op), fail halfway
    through a multi-op body (must change nothing), conflict, and create garbage."""
    time_ms = 5_000
    bodies = [
        ops.encode_txn(
            {"@roots": 0},
            [
                ["new", "@roots", "dict", []],
                ["new", "c.1", "dict", []],
                ["set", "@roots", "d", Ref("c.1")],
            ],
        )
    ]
    for i in range(40):
        bodies.append(ops.encode_txn({}, [["set", "c.1", f"k{i % 7}", i]]))
    bodies.append(ops.encode_txn({}, [["set", "c.1", "a", 1], ["splice", "c.1", 0, 5, []]]))
    bodies.append(ops.encode_txn({}, [["set", "c.1", "b", 2], ["del", "c.1", "k0"]]))
    bodies.append(ops.encode_txn({"c.1": 1}, [["set", "c.1", "stale", True]]))
    for i in range(12):
        bodies.append(
            ops.encode_txn(
                {},
                [
                    ["new", f"g.{i}", "list", [i]],
                    ["set", "c.1", "tmp", Ref(f"g.{i}")],
                ],
            )
        )
    # The first entry opens the session (its id: that entry's index) the writes name.
    opened = Payload("open", "c" * 8, 1, 1, time_ms, b"", 0)
    return [
        Entry(start, 1, EntryKind.NORMAL, encode_payload(opened)),
        *(
            Entry(
                start + 1 + n,
                1,
                EntryKind.NORMAL,
                encode_payload(Payload("txn", "c" * 8, n + 2, n + 2, time_ms + n, body, start)),
            )
            for n, body in enumerate(bodies)
        ),
    ]


def test_a_batch_reaches_the_same_state_as_one_entry_at_a_time(tmp_path: Path) -> None:
    one, batch = (Machine(tmp_path / n, gc_threshold=4) for n in ("one", "batch"))
    try:
        entries = _batch_entries(1)
        singles = []
        for entry in entries:
            with one.env.begin(write=True) as txn:
                singles.append(one.sm.apply(txn, entry))
        with batch.env.begin(write=True) as txn:
            batched = batch.sm.apply_batch(txn, entries)
        assert batched == singles
        outcomes = [a.outcome for a in batched]
        assert outcomes.count("error") == 1 and outcomes.count("conflict") == 1
        assert any(a.collected for a in batched)  # GC ran inside the batch
        for name in (*SNAPSHOT_DB_NAMES, b"outcomes"):
            assert one.table(name) == batch.table(name), name
        # The failed multi-op body changed nothing: "a" was never set.
        assert "a" not in dict(batch.objects()["c.1"][2])
        assert dict(batch.objects()["c.1"][2])["b"] == 2
    finally:
        one.close()
        batch.close()


def test_an_aborted_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    m = Machine(tmp_path)
    try:
        entries = _batch_entries(1)
        with m.env.begin(write=True) as txn:
            m.sm.apply_batch(txn, entries[:10])
        before = m.nodes()
        with pytest.raises(RuntimeError), m.env.begin(write=True) as txn:
            m.sm.apply_batch(txn, entries[10:20])
            raise RuntimeError("the write transaction aborts after the apply")
        assert m.nodes() == before
        with m.env.begin(write=True) as txn:  # no stale decoded node survives the abort
            again = m.sm.apply_batch(txn, entries[10:20])
        assert all(a.outcome == "ok" for a in again)
    finally:
        m.close()
