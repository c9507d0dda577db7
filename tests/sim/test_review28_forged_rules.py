"""Review 28: a "rules" entry a peer forwards is dropped however its CBOR spells it.

The leader told a forwarded "rules" payload from its first bytes (`payload.is_rules`), but
then stamped it (`stamp_payload` decodes and encodes again, canonically), and the state
machine decodes the payload: CBOR has several spellings of one value (a text's length in a
longer header, an array of indefinite length, a text in chunks), so a payload whose head is
not the canonical one passed the check and was appended as a canonical "rules" entry. A peer
could so move the cluster to any version: past every agent's --rules-max, every agent halts
at that committed entry (rules_unknown), for good.
"""

from __future__ import annotations

import cbor2
import pytest
from superstatic_agent.payload import parse_payload
from test_rules_seeds import forward_and_converge

_TAIL = b"".join(cbor2.dumps(v) for v in ["agent-x", 2, 0, 0, b"", 0])

# The same payload ["rules", "agent-x", 2, 0, 0, b"", 0] in spellings cbor2 reads alike.
SPELLINGS = {
    "text_length_in_a_longer_header": b"\x87\x78\x05rules" + _TAIL,
    "array_length_in_a_longer_header": b"\x98\x07\x65rules" + _TAIL,
    "array_of_indefinite_length": b"\x9f\x65rules" + _TAIL + b"\xff",
    "text_in_chunks": b"\x87\x7f\x63rul\x62es\xff" + _TAIL,
}


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_each_spelling_is_a_rules_payload(name: str) -> None:
    payload = parse_payload(SPELLINGS[name])
    assert (payload.kind, payload.seq) == ("rules", 2)


@pytest.mark.parametrize("name", ["text_length_in_a_longer_header", "array_of_indefinite_length"])
def test_a_forwarded_rules_entry_in_another_spelling_is_dropped(name: str) -> None:
    """Every agent applies only rules 1 and a follower forwards a move to rules 2 spelled
    otherwise: appended, it halts every agent (RulesTooNew) and the run never converges."""
    forward_and_converge(lambda _follower: SPELLINGS[name])
