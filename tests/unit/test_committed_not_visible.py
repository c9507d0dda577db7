"""A transaction whose fate the cluster decided but this process has not applied in time (the
nemesis's finding 5, docs/reliability.md). `Unavailable.outcome_known=True` promises the write
did not commit, so a caller may retry it: a committed write must never carry it. It used to:
"entry N is committed ... the write is durable" with outcome_known=True.

Through the public API against `AgentPeer` (tests/unit/test_connection.py), a real ZeroMQ
agent double told to commit and answer but stream nothing, as an agent whose stream to this
app stalled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_connection import AgentPeer

import superstatic
from superstatic.client import keys as client_keys
from superstatic.client.connection import Committed
from superstatic.objects import session
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session

# The apply wait, shortened: the stream never comes, so any wait ends the same way.
TIMEOUT_S_APPLY = 1.0


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentPeer]:
    monkeypatch.delenv(client_keys.ENV_KEYS, raising=False)  # the double speaks no CURVE
    monkeypatch.setattr(session, "TIMEOUT_S_APPLY", TIMEOUT_S_APPLY)
    peer = AgentPeer()
    try:
        yield peer
    finally:
        superstatic.close()
        peer.stop()


def test_a_committed_write_not_yet_applied_here_is_not_reported_as_not_committed(
    stalled: AgentPeer,
) -> None:
    # A full replica: the double speaks the full stream only (no LOAD), and the finding is
    # about a write's outcome, which the replica mode does not change.
    superstatic.connect([stalled.endpoint], replicate="all")
    stalled.withhold_events = True
    with pytest.raises(superstatic.Unavailable) as caught:
        superstatic.root("orders", list)  # creating the root is a transaction
    with stalled.log.lock:
        committed = len(stalled.log.entries)
    assert committed == 1  # the agent committed it
    assert caught.value.outcome_known is False, str(caught.value)
    message = str(caught.value)
    assert "COMMITTED (entry 1)" in message and "Do not retry it" in message
    assert "NOT" not in message


class ConflictingConnection:
    """A connection whose every write loses to an entry the replica never receives."""

    client_id = "c" * 32

    def submit(self, body: bytes, kind: str = "txn") -> Committed:
        return Committed(7, "conflict", "", False)

    def read_index(self) -> int:
        return 0

    def wait_applied(self, index: int, timeout_s: float) -> None:
        if index > 0:
            raise superstatic.Unavailable(
                f"entry {index} is not yet visible here", outcome_known=True
            )

    def close(self) -> None:
        pass


def test_a_conflicted_write_not_yet_resolved_here_says_nothing_was_written() -> None:
    own = Session(Replica(), ConflictingConnection())
    try:
        with pytest.raises(superstatic.Unavailable) as caught:
            own.root("orders", list)
    finally:
        own.close()
    assert caught.value.outcome_known is True
    assert "NOT applied" in str(caught.value) and "entry 7" in str(caught.value)
