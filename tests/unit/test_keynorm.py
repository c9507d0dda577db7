"""superstatic/protocol/keynorm.py: two storable hashable keys are the same dict key iff their
record key bytes (ekey) are equal (docs/data-model-v2.md section 2)."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from superstatic.protocol import codec
from superstatic.protocol.keynorm import KEY_DECIMAL_EXPONENT_MAX, KeyRefused, ekey, key_norm


class Color(enum.IntEnum):
    ONE = 1
    TWO = 2


class Name(enum.StrEnum):
    A = "a"


def _enum_int(value: int) -> codec.EnumInt:
    return codec.enum_form("Color", codec.ENUM_BY_INT, value)  # type: ignore[no-any-return]


# Whole-second offsets: CPython's own time equality and hash disagree on sub-second ones.
_offsets = st.integers(-(86_400 - 1), 86_400 - 1).map(
    lambda s: datetime.timezone(datetime.timedelta(seconds=s))
)
_small_ints = st.integers(-3, 3)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    _small_ints,
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from([0.5, -0.0, 1.0, 2.0, float("inf"), float("-inf"), 0.1, 1e300]),
    st.decimals(allow_nan=False, places=None).filter(
        lambda d: not d.is_finite() or abs(d.adjusted()) <= KEY_DECIMAL_EXPONENT_MAX
    ),
    st.sampled_from([decimal.Decimal("1"), decimal.Decimal("0.5"), decimal.Decimal("-0")]),
    st.fractions(max_denominator=8),
    st.sampled_from(
        [fractions.Fraction(1, 2), fractions.Fraction(1, 10), fractions.Fraction(4, 2)]
    ),
    _small_ints.map(_enum_int),
    st.sampled_from([Color.ONE, Color.TWO, Name.A]),
    st.text(max_size=4),
    st.sampled_from(["a", "1"]),
    st.binary(max_size=4),
    st.uuids(),
    st.dates(),
    st.timedeltas(),
    st.datetimes(timezones=st.one_of(st.none(), _offsets)),
    st.times(timezones=st.one_of(st.none(), _offsets)),
    st.sampled_from(
        [
            datetime.time(23, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-2))),
            datetime.time(
                23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-1, minutes=-30))
            ),
            datetime.time(1, 0, tzinfo=datetime.UTC),
        ]
    ),
    st.text(min_size=1, max_size=3).map(codec.Ref),
)
keys = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple), st.frozensets(inner, max_size=3)
    ),
    max_leaves=6,
)


def _same_key(a: Any, b: Any) -> bool:
    """Whether a dict holding `a` finds it by `b` (equality and hash, as Python matches)."""
    return b in {a: None}


@settings(max_examples=2000, deadline=None)
@given(keys, keys)
def test_equal_keys_iff_equal_ekeys(a: Any, b: Any) -> None:
    assert _same_key(a, b) == (ekey(a) == ekey(b))


@settings(max_examples=500, deadline=None)
@given(keys)
def test_normal_form_is_equal_and_stable(a: Any) -> None:
    norm = key_norm(a)
    assert _same_key(a, norm)
    assert key_norm(norm) == norm and ekey(norm) == ekey(a)
    # The normal form round-trips through the codec (an agent decodes it from a body).
    assert codec.dumps(codec.loads(ekey(a))) == ekey(a)


def test_the_documented_cases() -> None:
    one = {ekey(x) for x in (1, 1.0, True, decimal.Decimal(1), fractions.Fraction(1), Color.ONE)}
    assert one == {ekey(1)} and len({ekey(_enum_int(1)), ekey(1)}) == 1
    assert ekey(0.5) == ekey(decimal.Decimal("0.5")) == ekey(fractions.Fraction(1, 2))
    assert ekey(decimal.Decimal("0.1")) == ekey(fractions.Fraction(1, 10)) != ekey(0.1)
    assert ekey(Name.A) == ekey("a")
    assert ekey((1, True)) == ekey((1.0, 1)) and ekey(frozenset({1})) == ekey(frozenset({1.0}))
    utc = datetime.datetime(2020, 1, 1, 12, tzinfo=datetime.UTC)
    plus1 = datetime.datetime(2020, 1, 1, 13, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert ekey(utc) == ekey(plus1)
    assert ekey(uuid.UUID(int=1)) == codec.dumps(uuid.UUID(int=1))
    assert type(key_norm(Color.TWO)) is int and type(key_norm(True)) is int


@pytest.mark.parametrize(
    "key",
    [
        float("nan"),
        decimal.Decimal("NaN"),
        decimal.Decimal("sNaN"),
        (1, float("nan")),
        frozenset({float("nan")}),
        decimal.Decimal("1e5000"),
        decimal.Decimal("1e-5000"),
    ],
)
def test_refused_keys_name_the_rule(key: Any) -> None:
    with pytest.raises(KeyRefused) as info:
        ekey(key)
    assert "NaN" in str(info.value) or "KEY_DECIMAL_EXPONENT_MAX" in str(info.value)
