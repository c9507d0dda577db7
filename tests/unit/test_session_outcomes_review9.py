"""Review9: an outcome the library reports as final must be final for its (client, seq).

The library (superstatic/client/connection.py, objects/session.py) settles a write on the first
reply for it: outcome "error" becomes Error("the cluster rejected the transaction ...; nothing
was applied"), and its other attempts are never looked at again. That is only true if no later
entry of the same (client, seq) can apply: an attempt already in flight (a resend after
timeout_ms_resend, or the agent proposing a waiting entry again after a leader change) still
reaches the log after the reply.

Both fixes are state-machine rules version 2 (agent/rules.py): a log moved to it by a "rules"
entry gets them; a log that never was (every store written before versions) keeps rules 1's
outcome, which each test pins too (two agents at different rules would diverge).
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest
from superstatic_agent import statemachine as sm_module
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
from superstatic_agent.rules import rules_payload
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import DBS_MAX

from superstatic.protocol import ops
from superstatic.protocol.codec import Ref


class Log:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=64 << 20, max_dbs=DBS_MAX, sync=False)
        self.sm = StateMachine(self.env)
        self.index = 0

    def apply(self, payload: Payload) -> Applied:
        return self.apply_data(encode_payload(payload))

    def apply_data(self, data: bytes) -> Applied:
        self.index += 1
        with self.env.begin(write=True) as txn:
            return self.sm.apply(txn, Entry(self.index, 1, EntryKind.NORMAL, data))

    def rules(self, version: int) -> None:
        """Moves the log to rules `version` (1: stays at the rules of an unversioned store)."""
        if version > 1:
            assert self.apply_data(rules_payload("a", version)).outcome == "noop"
        with self.env.begin() as txn:
            assert self.sm.rules_version(txn) == version


@pytest.mark.parametrize("rules", [1, 2])
def test_a_write_refused_at_the_session_seqs_limit_never_applies_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules: int
) -> None:
    """Review9: the SESSION_SEQS_MAX refusal was an 'error' outcome that is not recorded, and
    the count it checks drops when seq_low advances: a later copy of the same (client, seq)
    then applied, while the library had already reported the first reply as 'rejected,
    nothing was applied' (a committed write reported as not committed). The library never
    meets this refusal since it keeps its writes within SEQ_WINDOW_MAX
    (test_connection.py::test_writes_behind_a_stuck_one_wait_inside_the_agents_seq_window);
    a raw client still can. Rules 2 marks the refused seq in the session record."""
    # 4096 in production: one request stuck (keeping seq_low down) while the app makes 4096
    # more writes; 2 here. The client's requests: open (1), a root (2), T (3, answered but its
    # reply slow, so seq_low stays at 3), and the write R (4).
    monkeypatch.setattr(sm_module, "SESSION_SEQS_MAX", 2)
    log = Log(tmp_path / "sm")
    log.rules(rules)
    client, now = "c1", 1_000
    opened = log.apply(Payload("open", client, 1, 1, now, b"", 0))
    assert opened.outcome == "ok"
    session = opened.index
    roots = ops.encode_txn(
        {}, [["new", "@roots", "dict", [["l", Ref("c1.1")]]], ["new", "c1.1", "list", []]]
    )
    assert log.apply(Payload("txn", client, 2, 2, now, roots, session)).outcome == "ok"
    assert log.apply(Payload("open", client, 3, 2, now, b"", session)).outcome == "ok"  # T
    append = ops.encode_txn({}, [["extend", "c1.1", ["R"]]])
    # R's first attempt, sent while 2 and 3 were unanswered (seq_low 2): refused at the limit.
    first = log.apply(Payload("txn", client, 4, 2, now, append, session))
    assert first.outcome == "error" and "SESSION_SEQS_MAX" in first.error
    # The library answers its caller now: "rejected; nothing was applied". R's resend, sent
    # before that reply came (2 and 3 answered by then: seq_low 4), reaches the log after it.
    again = log.apply(Payload("txn", client, 4, 4, now, append, session))
    if rules == 1:  # the old outcome, kept for logs that never moved up
        assert again.outcome == "ok"
        return
    assert again.outcome in ("dup", "error"), (
        f"the write reported as not applied was applied by a later copy: {again.outcome}"
    )
    assert "SESSION_SEQS_MAX=2" in again.error
    # And a later one still: the mark stays in the session record.
    third = log.apply(Payload("txn", client, 4, 4, now, append, session))
    assert third.outcome == "error"
    # A new seq with room applies: the refused write can be sent again as a new request.
    assert log.apply(Payload("txn", client, 5, 5, now, append, session)).outcome == "ok"


@pytest.mark.parametrize("rules", [1, 2])
def test_a_late_copy_of_a_refused_open_does_not_replace_the_live_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules: int
) -> None:
    """Review9: an 'open' refused at SESSIONS_MAX is not recorded; a later copy of it (a
    resend in flight, or the agent's proposal again after a leader change) applied as a
    creating open and replaced the session the client opened since, whose recorded outcomes
    were lost: the client's writes in it then met session_expired. Rules 2 answers an open
    whose seq is below the live session's own open as that open's dup."""
    monkeypatch.setattr(sm_module, "SESSIONS_MAX", 1)
    log = Log(tmp_path / "sm")
    log.rules(rules)
    now = 1_000
    other = log.apply(Payload("open", "other", 1, 1, now, b"", 0))
    assert other.outcome == "ok"
    # The client's write 1 waits for a session; its open (seq 2) is refused at the limit.
    refused = log.apply(Payload("open", "c1", 2, 1, now, b"", 0))
    assert refused.outcome == "error" and "SESSIONS_MAX" in refused.error
    assert log.apply(Payload("close", "other", 2, 2, now, b"", other.index)).outcome == "ok"
    # The library tries again later with a new seq (open_retry_at) and gets a session.
    opened = log.apply(Payload("open", "c1", 3, 1, now, b"", 0))
    assert opened.outcome == "ok"
    session = opened.index
    assert log.apply(Payload("open", "c1", 1, 1, now, b"", session)).outcome == "ok"  # write 1
    # The refused open's late copy.
    late = log.apply(Payload("open", "c1", 2, 1, now, b"", 0))
    # Write 1's resend (its reply was lost) must still be answered from the session's record.
    retry = log.apply(Payload("open", "c1", 1, 1, now, b"", session))
    if rules == 1:  # the old outcome: the copy opened a session that replaced the live one
        assert (late.outcome, retry.outcome) == ("ok", "session_expired")
        return
    # Answered as the live session's open: a library still waiting for it learns that id.
    assert (late.outcome, late.first_index, late.first_outcome) == ("dup", session, "ok")
    assert retry.outcome == "dup", retry
