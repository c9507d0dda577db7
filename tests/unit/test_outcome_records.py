"""An outcome record's bytes are exactly what `cbor2.dumps` of the record's array writes.

`OutcomeRecords.encode` puts the record together from cbor2's bytes of its parts and keeps
the bytes of the heads values it met (docs/data-model-v2.md 8.19). Each test compares it with
`outcome_record_bytes` (tests/support), the record as one cbor2 call wrote it, over many
records through one encoder, so kept heads bytes are reused for equal heads and never for
others.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import outcome_records
from superstatic_agent.outcome_records import OutcomeRecords
from superstatic_agent.statemachine import OUTCOMES
from support.record_bytes import outcome_record_bytes

_OIDS = st.one_of(st.sampled_from(["kv", "@roots", "a.1", "a.2"]), st.text(min_size=1, max_size=30))
_HEAD = st.tuples(
    _OIDS,
    st.sampled_from(["dict", "list", "set", "obj"]),
    st.one_of(st.none(), st.text(max_size=30)),
)
_TIMES = st.one_of(
    st.sampled_from([0, 23, 24, 255, 256, 65_536, 1 << 32, (1 << 63) - 1]),
    st.integers(0, 1 << 44),
)
_RECORD = st.tuples(
    st.sampled_from(OUTCOMES),
    st.lists(_OIDS, max_size=3).map(tuple),
    _TIMES,
    st.lists(_HEAD, max_size=4).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(records=st.lists(_RECORD, min_size=1, max_size=30), kept_max=st.sampled_from([1, 2, 1024]))
def test_every_outcome_record_is_cbor2s_bytes(
    records: list[tuple[str, tuple[str, ...], int, tuple[tuple[str, str, str | None], ...]]],
    kept_max: int,
) -> None:
    encoder = OutcomeRecords()
    saved = outcome_records.HEADS_KEPT_MAX
    outcome_records.HEADS_KEPT_MAX = kept_max  # the bound reached and the kept forgotten
    try:
        for _ in range(2):  # the second time through, the heads bytes are the kept ones
            for outcome, collected, log_time_ms, heads in records:
                data = encoder.encode(outcome, collected, log_time_ms, heads)
                assert data == outcome_record_bytes(outcome, collected, log_time_ms, heads)
    finally:
        outcome_records.HEADS_KEPT_MAX = saved
    assert len(encoder._heads) <= kept_max


def test_heads_that_differ_only_in_the_class_name_get_their_own_bytes() -> None:
    encoder = OutcomeRecords()
    for heads in ((("a.1", "obj", "A"),), (("a.1", "obj", None),), (("a.1", "obj", "B"),)):
        assert encoder.encode("ok", (), 7, heads) == outcome_record_bytes("ok", (), 7, heads)


def test_the_kept_heads_are_bounded_in_bytes_not_only_in_values() -> None:
    """Review 37 (Medium): HEADS_KEPT_MAX counts heads values, and one value can be as large
    as a body's references to existing nodes (TXN_ITEMS_MAX, 16 MiB bodies). Kept, each held
    its bytes and its tuples until 1,024 of them: 100 entries of 20,000 references each kept
    356 MiB in an agent's state machine (main: 23 MiB), and every replica applies the same
    entries, so a writer could run them all out of memory at once. Whatever the heads' sizes,
    what is kept stays small: here 1,024 values of 200 heads (~3 MiB of CBOR) must keep at
    most 1 MiB of CBOR and 65,536 heads."""
    encoder = OutcomeRecords()
    for value in range(outcome_records.HEADS_KEPT_MAX):
        heads = tuple((f"s{value}.{i}", "set", None) for i in range(200))
        assert encoder.encode("ok", (), 7, heads) == outcome_record_bytes("ok", (), 7, heads)
    assert sum(len(data) for data in encoder._heads.values()) <= 1 << 20
    assert sum(len(heads) for heads in encoder._heads) <= 1 << 16
