"""A replica running the agent's fast paths and one running the generic paths they replace
reach the same store, byte for byte, and the same outcomes from the same log.

Every agent applies every committed entry, and during a rolling upgrade agents of this version
and of the last one apply the same log: if a fast path accepted, refused or encoded anything
differently, the two would diverge for good. The fast paths (docs/data-model-v2.md 8.6): lone-set
bodies read without the scan (agent/set_bodies.py), header and entry records encoded by cbor2
directly (agent/records.py), the set's ekey message built only when refused (agent/nodeops.py),
sessions handed back to the table without a copy (SessionTable.adopt). The reference replica
applies with each patched back to the path it replaced (what the last version ran).

The logs aim at the edges where a fast path could part from the full one: keys and values at
the int64 / uint64 bounds and past them, texts at the header boundaries, with NUL or invalid
UTF-8, non-shortest CBOR headers, values that equal an int as Python keys (True, 1.0,
Decimal(1)) and tagged values inside otherwise lone-set bodies, oids that are not valid oids,
read bases at 2**63-1 and past it, op counts at FAST_OPS_MAX and past it, damaged bodies, dups,
stale and expired sessions, batches cut at random and some failing and applied again.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import records as rec
from superstatic_agent import set_bodies
from superstatic_agent.nodeops import BodyApply, key_bytes
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.sessions import Session, SessionTable
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import DB_NAMES, DBS_MAX
from support import cbor_forms

from superstatic.protocol import codec, ops
from superstatic.protocol.codec import Ref

MAP_BYTES = 64 << 20
CLIENTS = ("a", "b")
# Oids of the nodes every log creates first, and some that name nothing or are refused.
NODES = ("d", "o", "s", "l")
# Session ttls of the replicas: one that expires sessions within a log, one that never does.
TTL_MS_SHORT = 1_000
TTL_MS_LONG = 10**9
ODD_OIDS = ("nope", "", "q" * 128, "q" * 129, "\U0001f600" * 128, "d\x00", "@roots")


# ---------------------------------------------------------------------- the last version


def _header_by_codec(header: rec.Header) -> bytes:
    fields = [header.oid, header.kind, header.version, header.shape_version]
    return codec.dumps([*fields, header.next_pos, header.extra, header.count])


def _entry_by_codec(entry: rec.EntryRec) -> bytes:
    if entry.tomb:
        return codec.dumps([rec.TOMB, entry.version])
    if entry.pos is None:
        fields = [entry.version] if entry.original is None else [entry.version, entry.original]
        return codec.dumps(fields)
    if entry.original is None:
        return codec.dumps([entry.version, entry.pos, entry.value])
    return codec.dumps([entry.version, entry.pos, entry.value, entry.original])


def _ekey_as_before(self: BodyApply, oid: str, key: Any) -> bytes:
    return key_bytes(key, self._what(oid))


def _put_a_copy(self: SessionTable, client: str, session: Session) -> None:
    self._set(client.encode(), session.copy())


@contextmanager
def _generic_paths() -> Iterator[None]:
    """The agent as it applied before its fast paths."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(set_bodies, "decode_body", ops.decode_body))
        stack.enter_context(mock.patch.object(rec.Header, "encode", _header_by_codec))
        stack.enter_context(mock.patch.object(rec, "encode_entry", _entry_by_codec))
        stack.enter_context(mock.patch.object(BodyApply, "_ekey", _ekey_as_before))
        stack.enter_context(mock.patch.object(SessionTable, "adopt", _put_a_copy))
        yield


# ---------------------------------------------------------------------- the logs


def _scalar(rng: random.Random) -> Any:
    draw = rng.random()
    if draw < 0.4:
        return rng.choice(cbor_forms.EDGE_INTS + tuple(range(-3, 8)))
    if draw < 0.8:
        return rng.choice((*cbor_forms.EDGE_TEXTS, "k0", "k1"))
    if draw < 0.95:
        return rng.choice(cbor_forms.OTHER_VALUES)
    return cbor_forms.text_item(rng.choice(cbor_forms.INVALID_UTF8), rng.choice(cbor_forms.WIDTHS))


def _op(rng: random.Random) -> list[Any]:
    oid: Any = rng.choice(ODD_OIDS) if rng.random() < 0.05 else rng.choice("dddddddoosl")
    draw = rng.random()
    if draw < 0.8:
        return ["set", oid, _scalar(rng), _scalar(rng)]
    if draw < 0.88:
        return ["del", oid, _scalar(rng)]
    if draw < 0.93:
        return ["add" if draw < 0.91 else "discard", oid, [_scalar(rng)]]
    if draw < 0.96:
        return ["extend", oid, [_scalar(rng)]]
    if draw < 0.98:
        return ["clear", oid]
    return ["set", oid, _scalar(rng)]  # one field short


def _body(rng: random.Random, index: int) -> bytes:
    if rng.random() < 0.05:  # around FAST_OPS_MAX: all lone sets, or one other op among them
        count = set_bodies.FAST_OPS_MAX + rng.choice((-1, 0, 1))
        wire = [["set", "d", f"k{i % 7}", i] for i in range(count)]
        if rng.random() < 0.5:
            wire[rng.randrange(count)] = _op(rng)
    else:
        wire = [_op(rng) for _ in range(rng.choice((1, 1, 1, 1, 2, 3)))]
    bases = [index - 1] * 12 + [0, index, ops.INT64_MAX, ops.INT64_MAX + 1, (1 << 64) - 1]
    doc: dict[str, Any] = {"v": 2, "a": rng.choice(bases), "r": {}, "o": wire}
    if rng.random() < 0.05:  # a read of d's members some entries back: may conflict
        doc["r"] = {"d": [ops.READ_SHAPE, []]}
        doc["a"] = max(0, index - rng.randint(2, 10))
    wide = rng.random() < 0.15
    data = cbor_forms.encode(doc, lambda: rng.choice(cbor_forms.WIDTHS) if wide else 0)
    damage = rng.random()
    if damage < 0.03:
        data += b"\x00"
    elif damage < 0.06:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    elif damage < 0.08:
        data = data[:-1]
    return data


def _log(rng: random.Random, length: int) -> list[Entry]:
    entries: list[Entry] = []
    seqs = dict.fromkeys(CLIENTS, 0)
    lows = dict.fromkeys(CLIENTS, 0)
    sessions = dict.fromkeys(CLIENTS, 0)
    clock = 1_000
    heard = dict.fromkeys(CLIENTS, clock)

    def add(kind: EntryKind, data: bytes) -> None:
        entries.append(Entry(len(entries) + 1, 1, kind, data))

    def request(client: str, kind: str, body: bytes = b"", seq: int = 0) -> None:
        if not seq:
            seqs[client] += 1
            seq = seqs[client]
        if clock - heard[client] > TTL_MS_SHORT and rng.random() < 0.8:
            sessions[client] = 0  # the session may have expired: mostly, a new one
        heard[client] = clock
        if kind == "txn" and sessions[client] == 0:  # after a close: a client opens first
            kind, body = "open", b""
        if kind == "open" and sessions[client] == 0:
            session, sessions[client] = 0, len(entries) + 1
        else:
            session = sessions[client]
        payload = Payload(kind, client, seq, min(lows[client], seq), clock, body, session)
        add(EntryKind.NORMAL, encode_payload(payload))

    for client in CLIENTS:
        request(client, "open")
    roots = [["d", Ref("d")], ["o", Ref("o")], ["s", Ref("s")], ["l", Ref("l")]]
    first = [
        ["new", "@roots", "dict", roots],
        ["new", "d", "dict", [[1, "one"], ["k0", 0]]],
        ["new", "o", "obj", ["C", [["a", 1]]]],
        ["new", "s", "set", [1, "x"]],
        ["new", "l", "list", [1, 2]],
    ]
    request("a", "txn", ops.encode_txn_v2(0, {}, first))
    for _ in range(length):
        client = rng.choice(CLIENTS)
        clock += rng.choice((0, 0, 1, 7, 300, 300, 2_000))
        draw = rng.random()
        if draw < 0.82:
            request(client, "txn", _body(rng, len(entries) + 1))
        elif draw < 0.88:  # a dup, a stale seq or a gap
            request(client, "txn", _body(rng, len(entries) + 1), rng.randint(1, seqs[client] + 1))
        elif draw < 0.9:
            lows[client] = rng.randint(lows[client], seqs[client] + 1)
        elif draw < 0.93:
            sessions[client] = 0
            request(client, "open")
        elif draw < 0.95:
            request(client, "close")
            sessions[client] = 0
        elif draw < 0.98:
            add(EntryKind.NOOP, b"")
        else:
            add(EntryKind.NORMAL, rng.choice((b"garbage", b"\x83\x01\x02")))
    return entries


# ---------------------------------------------------------------------- the replicas


class _Failed(lmdb.Error):
    """The batch's write failed (the server applies the batch again)."""


def _apply(
    entries: list[Entry], cuts: list[int], ttl_ms: int, generic: bool
) -> tuple[list[str], dict[bytes, list[tuple[bytes, bytes]]]]:
    with tempfile.TemporaryDirectory() as path, ExitStack() as stack:
        if generic:
            stack.enter_context(_generic_paths())
        env = lmdb.open(path, map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        try:
            sm = StateMachine(env, session_ttl_ms=ttl_ms, gc_threshold=3, record_bytes_max=4096)
            results: list[str] = []
            at = 0
            for cut in itertools.cycle(cuts):
                if at >= len(entries):
                    break
                batch = entries[at : at + abs(cut)]
                if cut < 0:  # applied once in a write that then fails
                    try:
                        with env.begin(write=True) as txn:
                            sm.apply_batch(txn, batch)
                            raise _Failed
                    except _Failed:
                        pass
                with env.begin(write=True) as txn:
                    results += [repr(applied) for applied in sm.apply_batch(txn, batch)]
                at += len(batch)
            with env.begin() as txn:
                store = {
                    name: [(bytes(k), bytes(v)) for k, v in txn.cursor(env.open_db(name, txn=txn))]
                    for name in DB_NAMES
                }
        finally:
            env.close()
    return results, store


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.integers(0, 1 << 32),
    st.integers(5, 60),
    st.lists(st.integers(1, 12) | st.integers(-12, -1), min_size=1, max_size=8),
    st.sampled_from((TTL_MS_SHORT, TTL_MS_LONG)),
)
def test_the_fast_paths_and_the_generic_ones_reach_the_same_store(
    seed: int, length: int, cuts: list[int], ttl_ms: int
) -> None:
    entries = _log(random.Random(seed), length)
    fast = _apply(entries, cuts, ttl_ms, generic=False)
    generic = _apply(entries, cuts, ttl_ms, generic=True)
    assert fast[0] == generic[0]
    assert fast[1] == generic[1]


def test_the_logs_reach_the_fast_paths_and_every_outcome() -> None:
    """The generator is not vacuous: its bodies take the lone-set reader and the full path
    both, and the entries applied reach every outcome."""
    rng = random.Random(16)
    bodies = [_body(rng, 100) for _ in range(400)]
    read_here = sum(set_bodies.read_set_body(body) is not None for body in bodies)
    assert 80 < read_here < 320, read_here
    results, store = _apply(_log(rng, 300), [5, -3, 12], TTL_MS_SHORT, generic=False)
    for outcome in ("'ok'", "'error'", "'conflict'", "'dup'", "'session_expired'"):
        assert any(f"outcome={outcome}" in applied for applied in results), outcome
    assert store[b"nodes"]
