"""The registry entries of issue 10 (tags 55806-55811): exact round trips, what the agent holds
(stand-ins that compare like the real values), and refusals of malformed payloads."""

from __future__ import annotations

import datetime
import decimal
import zoneinfo
from fractions import Fraction
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from superstatic.protocol import codec
from superstatic.protocol.errors import ProtocolError

ZONE = zoneinfo.ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    "value",
    [
        decimal.Decimal("NaN"),
        decimal.Decimal("-sNaN"),
        decimal.Decimal("Infinity"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("-0"),
        decimal.Decimal("-0E+3"),
        decimal.Decimal("12.500"),
        datetime.timedelta(days=-2, seconds=3, microseconds=4),
        datetime.timedelta(0),
        Fraction(-7, 3),
        Fraction(5),
        datetime.datetime(2022, 10, 30, 2, 30, fold=1),
        datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-3), "X")),
        datetime.time(4, 5, 6, 7, fold=1),
        datetime.time(4, 5, tzinfo=datetime.timezone(datetime.timedelta(minutes=90), "Y")),
    ],
)
def test_exact_round_trip(value: Any) -> None:
    back = codec.loads(codec.dumps(value))
    assert type(back) is type(value) and repr(back) == repr(value) and str(back) == str(value)
    assert codec.dumps(back) == codec.dumps(value)
    codec.check_value(back, "test")


@given(
    st.datetimes(timezones=st.just(ZONE), allow_imaginary=False),
    st.sampled_from([0, 1]),
)
def test_zoned_datetimes_keep_wall_time_fold_key_and_offset(
    dt: datetime.datetime, fold: int
) -> None:
    value = dt.replace(fold=fold)
    back = codec.loads(codec.dumps(value))
    assert type(back.tzinfo) is codec.ZoneStub and back.tzinfo.key == "Europe/Paris"
    assert back.replace(tzinfo=None) == value.replace(tzinfo=None) and back.fold == fold
    assert back.utcoffset() == value.utcoffset()  # what the agent compares by
    assert codec.dumps(back) == codec.dumps(value)  # the agent re-encodes it identically


def test_enum_forms_compare_like_the_members() -> None:
    as_int = codec.loads(codec.dumps(codec.enum_form("app.Level", codec.ENUM_BY_INT, 2)))
    assert as_int == 2 and hash(as_int) == hash(2) and {2: "x"}[as_int] == "x"
    as_str = codec.loads(codec.dumps(codec.enum_form("app.Mode", codec.ENUM_BY_STR, "fast")))
    assert as_str == "fast" and {"fast": 1}[as_str] == 1
    by_name = codec.loads(codec.dumps(codec.enum_form("app.Color", codec.ENUM_BY_NAME, "RED")))
    assert by_name != "RED" and by_name == codec.enum_form("app.Color", 0, "RED")
    assert by_name != codec.enum_form("app.Other", 0, "RED")


@pytest.mark.parametrize(
    ("tag", "payload"),
    [
        (codec.TAG_DECIMAL_TEXT, "not a number"),
        (codec.TAG_DECIMAL_TEXT, "1" * (codec.DECIMAL_TEXT_CHARS_MAX + 1)),
        (codec.TAG_DECIMAL_TEXT, 5),
        (codec.TAG_TIMEDELTA, [1, 2]),
        (codec.TAG_TIMEDELTA, [1, 86400, 0]),
        (codec.TAG_TIMEDELTA, [10**12, 0, 0]),
        (codec.TAG_FRACTION, [1, 0]),
        (codec.TAG_FRACTION, [1, -2]),
        (codec.TAG_FRACTION, ["1", 2]),
        (codec.TAG_FRACTION, [1 << codec.FRACTION_BITS_MAX, 3]),
        (codec.TAG_ENUM, ["app.E", 9, 1]),
        (codec.TAG_ENUM, ["app.E", codec.ENUM_BY_INT, "1"]),
        (codec.TAG_ENUM, ["", codec.ENUM_BY_NAME, "A"]),
        (codec.TAG_DATETIME_X, ["2020-01-01T00:00:00+01:00", 0, None]),
        (codec.TAG_DATETIME_X, ["2020-01-01T00:00:00", 2, None]),
        (codec.TAG_DATETIME_X, ["2020-01-01T00:00:00", 0, [1, "", 0]]),
        (codec.TAG_DATETIME_X, ["2020-01-01T00:00:00", 0, [1, "Z", 86400 * 10**6]]),
        (codec.TAG_DATETIME_X, ["2020-01-01T00:00:00", 0, [7, "Z", 0]]),
        (codec.TAG_TIME_X, ["25:00:00", 0, None]),
    ],
)
def test_malformed_payloads_are_protocol_errors(tag: int, payload: Any) -> None:
    with pytest.raises(ProtocolError):
        codec.loads(cbor2.dumps(cbor2.CBORTag(tag, payload)))


def test_unsupported_zones_are_not_encoded() -> None:
    class Odd(datetime.tzinfo):
        def utcoffset(self, dt: Any) -> datetime.timedelta:
            return datetime.timedelta(0)

    with pytest.raises(ProtocolError, match=r"only datetime\.timezone and zoneinfo\.ZoneInfo"):
        codec.dumps(datetime.datetime(2020, 1, 1, tzinfo=Odd()))
