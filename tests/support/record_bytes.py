"""Session and outcome records' bytes as the agent wrote them before docs/data-model-v2.md
8.19: one `cbor2.dumps` of the whole array. The tests hold the agent's record writers to them
byte for byte (stored bytes are compared across replicas, and an older agent's records must
stay as they are)."""

from __future__ import annotations

from typing import Any

import cbor2
from superstatic_agent.sessions import Session


def session_record_bytes(session: Session) -> bytes:
    seqs = [
        [seq, index, outcome, error]
        for seq, (index, outcome, error) in sorted(session.seqs.items())
    ]
    if session.refused:
        return cbor2.dumps([session.last_ms, session.low, seqs, session.opened, session.refused])
    return cbor2.dumps([session.last_ms, session.low, seqs, session.opened])


def outcome_record_bytes(
    outcome: str, collected: tuple[str, ...], log_time_ms: int, heads: tuple[Any, ...]
) -> bytes:
    return cbor2.dumps([outcome, list(collected), log_time_ms, [list(head) for head in heads]])
