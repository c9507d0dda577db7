"""Review 28: the rules entry anywhere in the log, inside a batch of the entries it governs.

test_rules_versions checks batch invariance with the rules entry first. Here the log runs
rules 1 for a while (late opens, refusals at SESSION_SEQS_MAX), then the rules entry moves it
to 2 somewhere in the middle, and the same entries are applied one per batch, cut into random
batches (the rules entry inside one, some batches aborted), and by a replica whose state
machine restarts (a new object on the same store) every few entries: every outcome and every
db must be equal, or two agents of one cluster would diverge on the same log.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from superstatic_agent.payload import parse_payload
from superstatic_agent.raft.types import Entry
from superstatic_agent.rules import KEY_RULES
from superstatic_agent.statemachine import Applied, StateMachine
from test_apply_batches import TTL_MS, _Replica, small_limits
from test_rules_versions import _late_log, _late_step, apply_in_cuts

__all__ = ["small_limits"]
_counter = itertools.count()


def _moved(entries: list[Entry], at: int) -> list[Entry]:
    """The log with its rules entry (the first) moved to position `at`, indexes renumbered."""
    rules, rest = entries[0], entries[1:]
    assert parse_payload(rules.data).kind == "rules"
    at = min(at, len(rest))
    order = [*rest[:at], rules, *rest[at:]]
    return [Entry(i + 1, e.term, e.kind, e.data) for i, e in enumerate(order)]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(_late_step(), min_size=4, max_size=45),
    at=st.integers(0, 45),
    cuts=st.lists(st.integers(0, 3), min_size=60, max_size=60),
    restart_every=st.integers(1, 7),
)
def test_a_rules_entry_mid_log_gives_the_same_outcomes_and_store_in_any_batches(
    tmp_path: Path,
    small_limits: None,
    steps: list[tuple[int, int, int, int, int]],
    at: int,
    cuts: list[int],
    restart_every: int,
) -> None:
    entries = _moved(_late_log(steps), at)
    n = next(_counter)
    one = _Replica(tmp_path / f"one{n}", per_body=True)
    cut = _Replica(tmp_path / f"cut{n}")
    again = _Replica(tmp_path / f"again{n}")
    try:
        singles = [one.apply([entry])[0] for entry in entries]
        batched = apply_in_cuts(cut, entries, cuts)
        restarted: list[Applied] = []
        for start in range(0, len(entries), restart_every):
            # A restart: a new state machine on the same store (nothing carried in memory).
            again.sm = StateMachine(again.env, session_ttl_ms=TTL_MS, gc_threshold=3)
            restarted.extend(again.apply(entries[start : start + restart_every]))
        for single, other, third in zip(singles, batched, restarted, strict=True):
            assert other == single, single.index
            assert third == single, single.index
        stores = one.dbs()
        assert cut.dbs() == stores and again.dbs() == stores
        assert stores[b"sm_meta"][KEY_RULES]  # the move happened
    finally:
        one.env.close()
        cut.env.close()
        again.env.close()


def _rules_2_answer(a: Applied) -> bool:
    late_dup = a.kind == "open" and a.outcome == "dup" and a.first_index != a.index
    return late_dup or "refused at the limit" in a.error


def test_a_long_log_moved_up_mid_batch_reaches_rules_2_answers_in_that_batch(
    tmp_path: Path, small_limits: None
) -> None:
    """Directed: a fixed long log (test_rules_versions' generator, seed 5) moved to rules 2
    just before entries that meet rules 2's late-open dup or its refusal mark, the rules entry
    and those entries in one batch: the batch must apply them at rules 2, as one entry per
    batch does (the version written mid-batch is the one the next entry reads)."""
    rng = random.Random(5)
    steps = [
        (rng.randint(0, 13), rng.randint(0, 2), rng.randint(0, 40), rng.randint(0, 5), 0)
        for _ in range(400)
    ]
    base = _late_log(steps)
    probe = _Replica(tmp_path / "probe")
    try:
        answers = [a.index for a in probe.apply(base) if _rules_2_answer(a)]
    finally:
        probe.env.close()
    reached = 0
    for n, index in enumerate(answers[2:40:6]):
        at = index - 1 - 4  # in the log without its rules entry: 4 entries before that one
        entries = _moved(base, at)
        one = _Replica(tmp_path / f"one{n}", per_body=True)
        cut = _Replica(tmp_path / f"cut{n}")
        try:
            singles = [one.apply([entry])[0] for entry in entries]
            lo, hi = max(0, at - 3), at + 12  # one batch around the rules entry (at `at`)
            batched = cut.apply(entries[:lo]) if lo else []
            batched += cut.apply(entries[lo:hi])
            batched += [
                a for s in range(hi, len(entries), 24) for a in cut.apply(entries[s : s + 24])
            ]
            assert batched == singles
            assert cut.dbs() == one.dbs()
            reached += any(_rules_2_answer(a) for a in singles[at + 1 : hi])
        finally:
            one.env.close()
            cut.env.close()
    assert reached >= 2, reached  # not vacuous
