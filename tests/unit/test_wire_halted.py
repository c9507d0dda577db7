"""A halted agent's `unavailable` names its reason in a field of its own (wire.HALTED_FIELD;
review 35, Low): the library takes only a word of wire.HALT_REASONS from it, never free text
(tests/cluster/test_halted_agent_failover.py has the real agents)."""

from __future__ import annotations

from typing import Any

import pytest

from superstatic.protocol import wire
from superstatic.protocol.errors import Unavailable


def test_an_error_body_names_a_halt_only_when_given_one() -> None:
    plain = wire.error_body(wire.ErrorCode.UNAVAILABLE, "no quorum", "a")
    assert wire.HALTED_FIELD not in plain  # as agents before it sent
    assert wire.halt_reason(plain) is None
    for reason in sorted(wire.HALT_REASONS):
        body = wire.error_body(wire.ErrorCode.UNAVAILABLE, "stopped", None, reason)
        assert wire.halt_reason(body) == reason
    with pytest.raises(AssertionError):
        wire.error_body(wire.ErrorCode.UNAVAILABLE, "stopped", None, "made up")


@pytest.mark.parametrize(
    "value",
    ["damaged (and more)", "DAMAGED", "", "\x1b[2Jdamaged", 3, True, None, ["damaged"], b"damaged"],
)
def test_anything_but_a_known_word_is_not_a_halt_reason(value: Any) -> None:
    body = {"code": "unavailable", "message": "x", "leader": None, wire.HALTED_FIELD: value}
    assert wire.halt_reason(body) is None
    assert wire.halt_reason("not a map") is None


def test_unavailable_says_no_halt_unless_told() -> None:
    assert Unavailable("x", outcome_known=True).halted is None
    assert Unavailable("x", outcome_known=False, halted="poisoned").halted == "poisoned"
