"""Apply is total and deterministic on hostile entries (issue 8, reproduction 1 and item 1).

A committed entry whose body holds an int too long to print, a malformed payload, CONF entry
or snapshot chunk gives an "error" outcome (or a ProtocolError for chunks) whose message never
quotes the value, identically on every replica. What apply cannot turn into an outcome raises
ApplyFailed naming the entry; the poison marker then refuses a restart with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from superstatic_agent import statemachine as sm_module
from superstatic_agent.payload import Payload, encode_payload, parse_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.sessions import decode_session
from superstatic_agent.statemachine import ApplyFailed, StateMachine, only_removes, stage_chunk
from superstatic_agent.storage import (
    DBS_MAX,
    POISON_FILE,
    SNAPSHOT_DB_NAMES,
    StartRefused,
    check_poison_marker,
    open_dbs,
    write_poison_marker,
)
from support.sessions import SESSION_PLACED, place_session

from superstatic.protocol import codec, ops
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import ProtocolError

MAP_BYTES = 64 << 20
HUGE = 10**5000  # str() of it raises ValueError (more than 4,300 digits)


class Replica:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env)
        self.index = 0
        self.placed: set[str] = set()  # clients with a session (support.sessions)

    def entry(self, kind: EntryKind, data: bytes) -> sm_module.Applied:
        self.index += 1
        with self.env.begin(write=True) as txn:
            return self.sm.apply(txn, Entry(self.index, 7, kind, data))

    def body(self, client: str, seq: int, body: bytes) -> sm_module.Applied:
        if client not in self.placed:
            place_session(self.env, client)
            self.placed.add(client)
        payload = Payload("txn", client, seq, 0, 1_000, body, SESSION_PLACED)
        return self.entry(EntryKind.NORMAL, encode_payload(payload))

    def dump(self) -> dict[bytes, dict[bytes, bytes]]:
        out = {}
        with self.env.begin() as txn:
            for name in (*SNAPSHOT_DB_NAMES, b"outcomes"):
                db = self.env.open_db(name, txn=txn, create=False)
                out[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
        return out

    def close(self) -> None:
        self.env.close()


def setup_ops() -> list[Any]:
    return [
        ["new", "@roots", "dict", [["l", Ref("c.1")]]],
        ["new", "c.1", "list", ["a", "b"]],
    ]


HOSTILE_BODIES = {
    # Reproduction 1: the conflict message formatted the read version.
    "read version far below zero": codec.dumps({"r": {"c.1": -HUGE}, "o": []}),
    "read version far above 2**63": codec.dumps({"r": {"c.1": HUGE}, "o": []}),
    "read version just above 64 bits": codec.dumps({"r": {"c.1": 1 << 64}, "o": []}),
    "splice stop too long to print": codec.dumps({"r": {}, "o": [["splice", "c.1", 0, HUGE, []]]}),
    "op tag a huge int": codec.dumps({"r": {}, "o": [[HUGE, "c.1"]]}),
    "op a huge int": codec.dumps({"r": {}, "o": [HUGE]}),
    "node kind a huge int": codec.dumps({"r": {}, "o": [["new", "c.9", HUGE, []]]}),
    "set key a huge negative int": codec.dumps({"r": {}, "o": [["set", "c.1", -HUGE, 1]]}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_are_error_outcomes_naming_no_value(tmp_path: Path, name: str) -> None:
    replicas = [Replica(tmp_path / "a"), Replica(tmp_path / "b")]
    try:
        results = []
        for r in replicas:
            assert r.body("c", 1, ops.encode_txn({}, setup_ops())).outcome == "ok"
            results.append(r.body("c", 2, HOSTILE_BODIES[name]))
            # The replica carries on: a later write applies.
            later = r.body("c", 3, ops.encode_txn({}, [["extend", "c.1", ["z"]]]))
            assert later.outcome == "ok", later.error
        first = results[0]
        assert first.outcome == "error", first
        assert len(first.error) < 300 and "0000000000" not in first.error, first.error
        assert first.body is None
        # Deterministic: the same outcome, the same recorded error, the same bytes.
        assert results[1] == first
        assert replicas[0].dump() == replicas[1].dump()
    finally:
        for r in replicas:
            r.close()


def test_a_conflict_message_names_the_node_and_both_versions(tmp_path: Path) -> None:
    r = Replica(tmp_path / "a")
    try:
        r.body("c", 1, ops.encode_txn({}, setup_ops()))
        applied = r.body("c", 2, ops.encode_txn({"c.1": (1 << 63) - 1}, []))
        assert applied.outcome == "conflict"
        assert applied.error == f"c.1 is at version 1, the transaction read {(1 << 63) - 1}"
    finally:
        r.close()


def hostile_payloads() -> dict[str, bytes]:
    return {
        "kind a huge int": cbor2.dumps([HUGE, "c", 1, 0, 1, b""]),
        "kind a map": cbor2.dumps([{"txn": 1}, "c", 1, 0, 1, b""]),
        "seq a bignum": cbor2.dumps(["txn", "c", HUGE, 0, 1, b""]),
        "time a tagged date": cbor2.dumps(["txn", "c", 1, 0, cbor2.CBORTag(1, 5), b""]),
        "shared reference": cbor2.dumps(cbor2.CBORTag(28, ["txn", "c", 1, 0, 1, b""])),
    }


@pytest.mark.parametrize("name", sorted(hostile_payloads()))
def test_hostile_payloads_are_error_outcomes(tmp_path: Path, name: str) -> None:
    data = hostile_payloads()[name]
    with pytest.raises(ProtocolError) as caught:
        parse_payload(data)
    assert len(str(caught.value)) < 200
    r = Replica(tmp_path / "a")
    try:
        applied = r.entry(EntryKind.NORMAL, data)
        assert (applied.outcome, applied.client, applied.seq) == ("error", None, None)
    finally:
        r.close()


def test_a_conf_entry_holding_a_huge_int_is_an_error_outcome(tmp_path: Path) -> None:
    r = Replica(tmp_path / "a")
    try:
        applied = r.entry(EntryKind.CONF, cbor2.dumps(["add_learner", "d", HUGE]))
        assert applied.outcome == "error" and "CONF" in applied.error, applied
        assert len(applied.error) < 200
    finally:
        r.close()


def test_hostile_snapshot_chunks_and_session_records_raise_protocol_error(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "s"), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
    try:
        dbs = open_dbs(env)
        for chunk in (
            cbor2.dumps([HUGE, True, []]),
            cbor2.dumps([0, True, [[HUGE, b"k", b"v"]]]),
            cbor2.dumps([0, True, [HUGE]]),
            cbor2.dumps(cbor2.CBORTag(28, [0, True, []])),
        ):
            with pytest.raises(ProtocolError) as caught, env.begin(write=True) as txn:
                stage_chunk(txn, dbs, chunk)
            assert len(str(caught.value)) < 200
        for record in (
            cbor2.dumps([1, 0, [[HUGE, 1, "ok", ""]]]),
            cbor2.dumps([1, 0, [HUGE]]),
            cbor2.dumps([1, 0, [cbor2.CBORTag(1, 5)]]),
        ):
            with pytest.raises(ProtocolError) as caught:
                decode_session(record)
            assert len(str(caught.value)) < 200
    finally:
        env.close()


# ------------------------------------------------------------------ what apply cannot handle


def test_an_unexpected_exception_raises_apply_failed_naming_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = Replica(tmp_path / "a")
    try:
        r.body("c", 1, ops.encode_txn({}, setup_ops()))
        before = r.dump()

        def broken(*_args: Any) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(sm_module.ops, "check_fits", broken)
        with pytest.raises(ApplyFailed) as caught:
            r.body("c", 2, ops.encode_txn({}, [["extend", "c.1", ["x"]]]))
        assert (caught.value.index, caught.value.term) == (2, 7)
        assert "entry 2 (term 7)" in str(caught.value) and "RuntimeError" in str(caught.value)
        assert r.dump() == before  # the write transaction aborted: nothing of it stayed
    finally:
        r.close()


def test_storage_errors_propagate_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full map is this replica's condition, never an outcome and never 'poison'."""
    r = Replica(tmp_path / "a")
    try:
        r.body("c", 1, ops.encode_txn({}, setup_ops()))

        def full(*_args: Any) -> None:
            raise lmdb.MapFullError("mdb_put: MDB_MAP_FULL")

        monkeypatch.setattr(sm_module.ops, "check_fits", full)
        with pytest.raises(lmdb.MapFullError):
            r.body("c", 2, ops.encode_txn({}, [["extend", "c.1", ["x"]]]))
    finally:
        r.close()


def test_poison_marker_refuses_a_restart_below_its_entry(tmp_path: Path) -> None:
    check_poison_marker(tmp_path, 0)  # no marker: starts
    write_poison_marker(tmp_path, 12, 3, "applying committed entry 12 (term 3) raised X")
    record = json.loads((tmp_path / POISON_FILE).read_text())
    assert (record["index"], record["term"]) == (12, 3)
    with pytest.raises(StartRefused) as caught:
        check_poison_marker(tmp_path, 11)
    assert "entry 12" in str(caught.value) and POISON_FILE in str(caught.value)
    check_poison_marker(tmp_path, 12)  # restored past it (from a peer): starts, marker gone
    assert not (tmp_path / POISON_FILE).exists()
    (tmp_path / POISON_FILE).write_text("garbage")
    with pytest.raises(StartRefused, match="cannot be read"):
        check_poison_marker(tmp_path, 100)


def test_only_removes_tells_the_writes_a_full_store_still_takes() -> None:
    def payload(kind: str, wire_ops: list[Any]) -> bytes:
        body = ops.encode_txn({}, wire_ops) if kind == "txn" else b""
        return encode_payload(Payload(kind, "c", 1, 0, 1, body))

    assert only_removes(payload("open", []))
    assert only_removes(payload("close", []))
    assert only_removes(payload("txn", [["del", "c.1", "k"], ["clear", "c.2"]]))
    assert only_removes(payload("txn", [["discard", "c.3", [1]], ["splice", "c.4", 0, 9, []]]))
    assert not only_removes(payload("txn", [["del", "c.1", "k"], ["set", "c.1", "k", 1]]))
    assert not only_removes(payload("txn", [["splice", "c.4", 0, 1, ["x"]]]))
    assert not only_removes(payload("txn", [["new", "c.5", "list", []]]))
    assert not only_removes(b"\xff garbage")
    assert not only_removes(
        encode_payload(Payload("txn", "c", 1, 0, 1, HOSTILE_BODIES["read version far below zero"]))
    )


@pytest.mark.parametrize("tag", sorted(codec.SEMANTIC_TAGS_NATIVE))
def test_the_agents_plain_records_build_no_object_of_any_tag_cbor2_knows(tag: int) -> None:
    """Payloads, session records and snapshot chunks are tag-free CBOR: every tag cbor2 would
    build natively (IPv4/IPv6 addresses and networks included, tags 52 and 54) is refused
    before anything is built, not only the ones a list in the agent happened to name."""
    from superstatic_agent.payload import loads_plain

    for inner in (
        b"\x44\x7f\x00\x00\x01",
        b"\x50" + bytes(16),
        b"\x82\x44\x7f\x00\x00\x01\x18\x18",
    ):
        data = cbor2.dumps(cbor2.CBORTag(tag, None))[:-1] + inner  # the tag's header, then `inner`
        with pytest.raises(ProtocolError, match="not plain CBOR"):
            loads_plain(data, 8)
