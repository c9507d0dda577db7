"""A session record's bytes are exactly what `cbor2.dumps` of the record's array writes.

`encode_session` puts the record together from cbor2's bytes of its parts and reuses the bytes
of outcomes it encoded for the client's previous record (docs/data-model-v2.md 8.19). Stored
bytes must not change: every replica's store is compared byte for byte (snapshots, the
parity tests), and a record written by an older agent must read and rewrite the same. Each
test compares against `session_record_bytes` (tests/support), the encoder as it was (one cbor2
call of the whole array),
over a client's successive records with the item bytes carried from one to the next, as the
session table carries them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent.sessions import (
    SESSION_SEQS_MAX,
    ItemBytes,
    Session,
    decode_session,
    encode_session,
)
from support.record_bytes import session_record_bytes

# Ints as the records hold them: small, at every head size's edges, and past 64 bits (cbor2
# writes those as bignums: the parts are cbor2's, so they must come out the same too).
_EDGES = [0, 1, 23, 24, 255, 256, 65_535, 65_536, (1 << 32) - 1, 1 << 32, (1 << 63) - 1]
_INTS = st.one_of(st.sampled_from(_EDGES), st.integers(0, 1 << 40), st.integers(0, 1 << 70))
_OUTCOMES = st.sampled_from(("ok", "conflict", "error"))
_ERRORS = st.one_of(st.just(""), st.text(max_size=40), st.text(min_size=20, max_size=600))


# One step of a client's life between two records: record an outcome (a new tuple), forget
# below a seq, replace a recorded tuple by an equal or a different new one, copy the session
# (the table hands out copies: the tuples stay the same objects), or refuse a seq.
_STEP = st.tuples(
    st.sampled_from(("record", "forget", "replace", "copy", "refuse", "time")),
    _INTS,
    _INTS,
    _OUTCOMES,
    _ERRORS,
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.tuples(_INTS, _INTS, _INTS),
    steps=st.lists(st.lists(_STEP, max_size=6), min_size=1, max_size=12),
)
def test_every_record_of_a_client_is_cbor2s_bytes(
    start: tuple[int, int, int], steps: list[list[tuple[Any, ...]]]
) -> None:
    last_ms, low, opened = start
    session = Session(last_ms, low, opened=opened)
    known: ItemBytes = {}
    for batch in steps:
        for action, a, b, outcome, error in batch:
            if action == "record" and len(session.seqs) < SESSION_SEQS_MAX:
                session.seqs[a] = (b, outcome, error)
            elif action == "forget":
                session.forget_below(a)
            elif action == "replace" and session.seqs:
                seq = sorted(session.seqs)[a % len(session.seqs)]
                index, old_outcome, old_error = session.seqs[seq]
                same = b % 2 == 0
                # A new tuple object: equal to the old one, or with other contents.
                session.seqs[seq] = (
                    (index + 0, old_outcome, old_error[:]) if same else (b, outcome, error)
                )
            elif action == "copy":
                session = session.copy()
            elif action == "refuse":
                session.refused = max(session.refused, a)
            elif action == "time":
                session.last_ms = a
        data = encode_session(session, known)
        assert data == session_record_bytes(session)
        assert encode_session(session) == data  # without the carried bytes
        assert set(known) == set(session.seqs)  # forgotten seqs' bytes are gone
        ints = [session.last_ms, session.low, session.opened, session.refused]
        ints += [n for seq, (index, _o, _e) in session.seqs.items() for n in (seq, index)]
        if max(ints) < 1 << 64:  # a bignum (a CBOR tag) is no record an agent reads back
            assert decode_session(data) == session


def test_a_record_of_more_than_23_255_and_65535_outcomes_has_cbor2s_array_head() -> None:
    for count in (0, 1, 23, 24, 255, 256, SESSION_SEQS_MAX, 65_535, 65_536):
        session = Session(5, 1, {seq: (seq * 7, "ok", "") for seq in range(count)}, opened=2)
        assert encode_session(session, {}) == session_record_bytes(session), count


def test_carried_bytes_are_used_only_for_the_same_outcome_object() -> None:
    """A seq recorded again with another outcome (a new session of the client reuses seqs)
    must not get the bytes of the old one."""
    session = Session(10, 0, {1: (100, "ok", "")}, opened=99)
    known: ItemBytes = {}
    encode_session(session, known)
    session.seqs[1] = (200, "error", "refused")
    assert encode_session(session, known) == session_record_bytes(session)
    assert decode_session(encode_session(session, known)).seqs[1] == (200, "error", "refused")
