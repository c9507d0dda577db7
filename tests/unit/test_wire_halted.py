"""A halted agent's `unavailable` names its reason in a field of its own (wire.HALTED_FIELD;
review 35, Low): the library takes only a word of wire.HALT_REASONS from it, never free text
(tests/cluster/test_halted_agent_failover.py has the real agents)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from superstatic.client.connection import halt_seen
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


def test_the_clause_does_not_claim_the_halted_agent_refused_last() -> None:
    # review36 (Low): the library keeps the last halt reason it was given and does not forget
    # it when a later refusal comes from an agent that had not halted (a not_leader during an
    # election, a busy), so the error may not say that the LAST agent to refuse had stopped:
    # only that one that refused within timeout_ms_request had.
    now = 100.0
    conn = SimpleNamespace(last_halt=("damaged", now - 0.5), timeout_ms_request=1_000)
    clause, reason = halt_seen(conn, now)  # type: ignore[arg-type]
    assert reason == "damaged"
    assert "damaged" in clause
    assert "the last agent" not in clause
    assert halt_seen(
        SimpleNamespace(last_halt=("damaged", now - 2.0), timeout_ms_request=1_000), now
    ) == ("", None)  # type: ignore[arg-type]
