"""State-machine rules versions (agent/rules.py, docs/raft.md "Rules versions").

The version is replicated state: absent it is 1 (every store written before versions), a
"rules" entry moves it up (never down) at the same index on every replica, and a state machine
whose --rules-max is below what an entry or its stored state asks for raises RulesTooNew
instead of applying (the agent halts: tests/cluster/test_rules_cluster.py). Rules 2's session
fixes are pinned here at the unit level (the late open of glue seed 152, replayed), batch
invariance at rules 2 against one entry per batch, and a snapshot carries the version.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent import statemachine as sm_module
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import ConfState, Entry, EntryKind, SnapshotMeta
from superstatic_agent.rules import KEY_RULES, RULES_NEWEST, RulesTooNew, rules_payload
from superstatic_agent.sealed import record_get
from superstatic_agent.sessions import decode_session
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import DBS_MAX
from test_apply_batches import CLIENTS, TIME_STEPS_MS, _Log, _Replica, small_limits

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref

_counter = itertools.count()
__all__ = ["small_limits"]  # the fixture, shared with test_apply_batches


class Log:
    def __init__(self, path: Path, **options: Any) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=64 << 20, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env, **options)
        self.index = 0

    def apply_data(self, data: bytes) -> Applied:
        self.index += 1
        with self.env.begin(write=True) as txn:
            return self.sm.apply(txn, Entry(self.index, 1, EntryKind.NORMAL, data))

    def apply(self, payload: Payload) -> Applied:
        return self.apply_data(encode_payload(payload))

    def rules(self) -> int:
        with self.env.begin() as txn:
            return self.sm.rules_version(txn)

    def meta(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            return record_get(txn, self.sm.dbs.sm_meta, "sm_meta", key)

    def session_record(self, client: str) -> bytes:
        with self.env.begin() as txn:
            raw = record_get(txn, self.sm.dbs.sessions, "sessions", client.encode())
        assert raw is not None
        return raw


def test_a_store_without_a_version_is_at_rules_1_and_a_rules_entry_moves_it_up_once(
    tmp_path: Path,
) -> None:
    log = Log(tmp_path / "a")
    assert log.rules() == 1
    assert log.apply(Payload("open", "c", 1, 1, 1_000, b"", 0)).outcome == "ok"
    assert log.meta(KEY_RULES) is None  # rules 1 writes nothing of its own
    moved = log.apply_data(rules_payload("a", 2))
    assert (moved.kind, moved.client, moved.seq, moved.outcome) == ("rules", None, None, "noop")
    assert log.rules() == 2
    # A copy (another leader proposed it again) and an older version change nothing.
    assert log.apply_data(rules_payload("b", 2)).outcome == "noop"
    assert log.apply(Payload("rules", "b", 1, 0, 0, b"", 0)).outcome == "noop"
    assert log.rules() == 2
    # The rules entry took no session and no log time: the client's session is as it was.
    assert log.apply(Payload("open", "c", 2, 2, 1_000, b"", 1)).outcome == "ok"


def test_an_entry_asking_for_unknown_rules_raises_and_changes_nothing(tmp_path: Path) -> None:
    log = Log(tmp_path / "a", rules_max=1)
    assert log.apply(Payload("open", "c", 1, 1, 1_000, b"", 0)).outcome == "ok"
    with pytest.raises(RulesTooNew) as caught:
        log.apply_data(rules_payload("a", 2))
    assert (caught.value.index, caught.value.version, caught.value.known) == (2, 2, 1)
    message = str(caught.value)
    assert "committed entry 2" in message and "rules version 2" in message
    assert "up to version 1" in message
    log.index -= 1  # the write transaction aborted: entry 2 is still to apply
    assert log.rules() == 1
    # A version no code knows (garbage, or a far future): the same refusal, never a guess.
    with pytest.raises(RulesTooNew, match="rules version 99"):
        log.apply(Payload("rules", "a", 99, 0, 0, b"", 0))


def test_a_stored_state_at_unknown_rules_refuses_every_apply(tmp_path: Path) -> None:
    """A store moved to rules 2 (or a snapshot of one installed), then opened by code that
    knows only rules 1 (a downgrade, or --rules-max 1): nothing applies, the first batch
    raises naming the stored version."""
    log = Log(tmp_path / "a")
    log.apply_data(rules_payload("a", 2))
    old = StateMachine(log.env, rules_max=1)
    with log.env.begin() as txn, pytest.raises(RulesTooNew, match="the stored state"):
        old.check_rules(txn)
    with pytest.raises(RulesTooNew, match="rules version 2"), log.env.begin(write=True) as txn:
        old.apply(txn, Entry(2, 1, EntryKind.NOOP, b""))
    with log.env.begin() as txn:
        assert old.rules_version(txn) == 2


def test_a_peer_snapshot_carries_the_rules_version(tmp_path: Path) -> None:
    source = Log(tmp_path / "src")
    source.apply_data(rules_payload("a", 2))
    source.apply(Payload("open", "c", 1, 1, 1_000, b"", 0))
    target = Log(tmp_path / "dst")
    with source.env.begin() as txn:
        chunks = list(source.sm.snapshot_chunks(txn, 1 << 20))
    with target.env.begin(write=True) as txn:
        for chunk in chunks:
            target.sm.stage_chunk(txn, chunk)
        target.sm.install_staged(txn, SnapshotMeta(2, 1, ConfState.make(["a"])))
    assert target.rules() == 2
    capped = StateMachine(target.env, rules_max=1)
    with target.env.begin() as txn, pytest.raises(RulesTooNew):
        capped.check_rules(txn)


@pytest.mark.parametrize("rules", [1, 2])
def test_the_late_open_of_glue_seed_152(tmp_path: Path, rules: int) -> None:
    """Seed 152's log, entry by entry: client 0's open seq 2 applies (its answer lost), its
    open seq 3 applies (answered: the client's session), then copies of both that agents
    proposed again under new leaders. Rules 1: the copy of seq 2 replaced the session the
    client uses, and its setup write met session_expired. Rules 2: dup of the live session's
    open, and the write applies."""
    log = Log(tmp_path / "a")
    if rules == 2:
        log.apply_data(rules_payload("a", 2))
    now = 1_000
    first = log.apply(Payload("open", "c0", 2, 1, now, b"", 0))
    opened = log.apply(Payload("open", "c0", 3, 1, now, b"", 0))
    assert (first.outcome, opened.outcome) == ("ok", "ok")
    session = opened.index
    late = log.apply(Payload("open", "c0", 2, 1, now, b"", 0))
    again = log.apply(Payload("open", "c0", 3, 1, now, b"", 0))
    roots = ops.encode_txn(
        {}, [["new", "@roots", "dict", [["k0", Ref("c0.1")]]], ["new", "c0.1", "list", []]]
    )
    setup = log.apply(Payload("txn", "c0", 1, 1, now, roots, session))
    if rules == 1:
        assert (late.outcome, again.outcome, setup.outcome) == ("ok", "ok", "session_expired")
        return
    assert (late.outcome, late.first_index, late.first_outcome) == ("dup", session, "ok")
    assert (again.outcome, again.first_index) == ("dup", session)
    assert setup.outcome == "ok", setup


def test_an_open_above_the_live_sessions_own_still_starts_a_new_session(tmp_path: Path) -> None:
    """The library opens again (a higher seq) when it lost the answer to its open: that one
    replaces the session, as in rules 1; and once seq_low passed the live session's open,
    any open the client sends is above it."""
    log = Log(tmp_path / "a")
    log.apply_data(rules_payload("a", 2))
    now = 1_000
    a = log.apply(Payload("open", "c", 1, 1, now, b"", 0))
    b = log.apply(Payload("open", "c", 2, 1, now, b"", 0))
    assert (a.outcome, b.outcome) == ("ok", "ok") and b.index != a.index
    assert log.apply(Payload("open", "c", 3, 3, now, b"", b.index)).outcome == "ok"  # keepalive
    c = log.apply(Payload("open", "c", 4, 4, now, b"", 0))  # seq 2's record forgotten (low 4)
    assert c.outcome == "ok"
    assert log.apply(Payload("open", "c", 5, 5, now, b"", c.index)).outcome == "ok"


def test_rules_1_records_stay_byte_for_byte_and_rules_2_adds_a_field_only_when_refusing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sm_module, "SESSION_SEQS_MAX", 1)
    for rules in (1, 2):
        log = Log(tmp_path / f"r{rules}")
        if rules == 2:
            log.apply_data(rules_payload("a", 2))
        base = log.index
        opened = log.apply(Payload("open", "c", 1, 1, 1_000, b"", 0))
        assert len(cbor2.loads(log.session_record("c"))) == 4
        assert log.apply(Payload("open", "c", 2, 1, 1_000, b"", base + 1)).outcome == "error"
        raw = log.session_record("c")
        if rules == 1:  # the refusal stored nothing
            assert len(cbor2.loads(raw)) == 4 and decode_session(raw).refused == 0
        else:
            assert len(cbor2.loads(raw)) == 5 and decode_session(raw).refused == 2
        assert opened.outcome == "ok"


class _LateLog(_Log):
    """test_apply_batches's log at rules 2, with late copies of creating opens (a seq the
    client used before, session 0): what rules 2 answers as dups."""

    def step(self, action: int, c: int, x: int, y: int, dt: int) -> None:
        if action < 12:
            super().step(action, c, x, y, dt)
            return
        client = CLIENTS[c]
        self.time_ms += TIME_STEPS_MS[dt] if dt < 3 else 0
        seq = max(1, self.seqs[client] - x % 5)
        low = min(self.lows[client], seq)
        payload = Payload("open", client, seq, low, self.time_ms, b"", 0)
        self.raw(EntryKind.NORMAL, encode_payload(payload))


def _late_log(steps: list[tuple[int, int, int, int, int]]) -> list[Entry]:
    log = _LateLog()
    log.raw(EntryKind.NORMAL, rules_payload("a", 2))
    log.request("a", "open")
    log.txn(
        "a",
        [["new", "@roots", "dict", [["d", Ref("d")]]], ["new", "d", "dict", [["k0", 0]]]],
    )
    for step in steps:
        log.step(*step)
    return log.entries


def _late_step() -> st.SearchStrategy[tuple[int, int, int, int, int]]:
    return st.tuples(
        st.integers(0, 13),
        st.integers(0, len(CLIENTS) - 1),
        st.integers(0, 40),
        st.integers(0, 5),
        st.integers(0, len(TIME_STEPS_MS) - 1),
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(_late_step(), min_size=1, max_size=45),
    cuts=st.lists(st.integers(0, 3), min_size=60, max_size=60),
)
def test_rules_2_gives_the_same_outcomes_and_store_in_any_batches(
    tmp_path: Path,
    small_limits: None,
    steps: list[tuple[int, int, int, int, int]],
    cuts: list[int],
) -> None:
    """Rules 2's new paths (the refusal mark written into the batch's session table, the
    late open's dup) must not depend on how entries are cut into batches either."""
    entries = _late_log(steps)
    n = next(_counter)
    one = _Replica(tmp_path / f"one{n}", per_body=True)
    cut = _Replica(tmp_path / f"cut{n}")
    try:
        singles = [one.apply([entry])[0] for entry in entries]
        batched = apply_in_cuts(cut, entries, cuts)
        for single, other in zip(singles, batched, strict=True):
            assert other == single, single.index
        assert cut.dbs() == one.dbs()
    finally:
        one.env.close()
        cut.env.close()


def test_the_rules_2_logs_reach_both_new_answers(tmp_path: Path, small_limits: None) -> None:
    """The generator above is not vacuous: a fixed long log meets rules 2's late-open dup and
    its refusal of a seq marked at SESSION_SEQS_MAX."""
    rng = random.Random(5)
    steps = [
        (rng.randint(0, 13), rng.randint(0, 2), rng.randint(0, 40), rng.randint(0, 5), 0)
        for _ in range(400)
    ]
    replica = _Replica(tmp_path / "r")
    reference = _Replica(tmp_path / "ref", per_body=True)
    try:
        entries = _late_log(steps)
        results = [replica.apply([entry])[0] for entry in entries]
        assert [reference.apply([entry])[0] for entry in entries] == results
        late_dups = [a for a in results if a.kind == "open" and a.outcome == "dup"]
        assert any(a.first_index != a.index for a in late_dups)
        assert any("refused at the limit SESSION_SEQS_MAX=3" in a.error for a in results)
    finally:
        replica.env.close()
        reference.env.close()


def test_rules_newest_is_what_a_state_machine_knows_by_default(tmp_path: Path) -> None:
    log = Log(tmp_path / "a")
    assert log.sm.rules_max == RULES_NEWEST == 3


def apply_in_cuts(replica: _Replica, entries: list[Entry], cuts: list[int]) -> list[Applied]:
    """Applies `entries` in batches of 1-12 chosen by `cuts`, some batches aborted once first
    (choice 3 on even turns): what hypothesis varies to show batching changes nothing."""
    batched: list[Applied] = []
    at = 0
    for i, choice in enumerate(itertools.cycle(cuts)):
        if at >= len(entries):
            break
        batch = entries[at : at + 1 + (choice * 4 + i) % 12]
        batched.extend(replica.apply(batch, abort_first=choice == 3 and i % 2 == 0))
        at += len(batch)
    return batched
