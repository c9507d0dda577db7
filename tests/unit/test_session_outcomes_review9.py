"""Review9: an outcome the library reports as final must be final for its (client, seq).

The library (superstatic/client/connection.py, objects/session.py) settles a write on the first
reply for it: outcome "error" becomes Error("the cluster rejected the transaction ...; nothing
was applied"), and its other attempts are never looked at again. That is only true if no later
entry of the same (client, seq) can apply: an attempt already in flight (a resend after
timeout_ms_resend, or the agent proposing a waiting entry again after a leader change) still
reaches the log after the reply.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest
from superstatic_agent import statemachine as sm_module
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind
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
        self.index += 1
        with self.env.begin(write=True) as txn:
            return self.sm.apply(
                txn, Entry(self.index, 1, EntryKind.NORMAL, encode_payload(payload))
            )


@pytest.mark.xfail(
    strict=True,
    reason=(
        "review9: the SESSION_SEQS_MAX refusal is an 'error' outcome that is not recorded, and "
        "the count it checks drops when seq_low advances: a later copy of the same (client, "
        "seq) then applies, while the library already reported the first reply as 'rejected, "
        "nothing was applied' (a committed write reported as not committed). The library "
        "never meets this refusal since it keeps its writes within SEQ_WINDOW_MAX "
        "(test_connection.py::test_writes_behind_a_stuck_one_wait_inside_the_agents_seq_window"
        "); a raw client still can"
    ),
)
def test_a_write_refused_at_the_session_seqs_limit_never_applies_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4096 in production: one request stuck (keeping seq_low down) while the app makes 4096
    # more writes; 2 here. The client's requests: open (1), a root (2), T (3, answered but its
    # reply slow, so seq_low stays at 3), and the write R (4).
    monkeypatch.setattr(sm_module, "SESSION_SEQS_MAX", 2)
    log = Log(tmp_path / "sm")
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
    assert again.outcome in ("dup", "error"), (
        f"the write reported as not applied was applied by a later copy: {again.outcome}"
    )


@pytest.mark.xfail(
    strict=True,
    reason=(
        "review9: an 'open' refused at SESSIONS_MAX is not recorded; a later copy of it (a "
        "resend in flight, or the agent's proposal again after a leader change) applies as a "
        "creating open and replaces the session the client opened since, whose recorded "
        "outcomes are lost: the client's writes in it then meet session_expired"
    ),
)
def test_a_late_copy_of_a_refused_open_does_not_replace_the_live_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sm_module, "SESSIONS_MAX", 1)
    log = Log(tmp_path / "sm")
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
    log.apply(Payload("open", "c1", 2, 1, now, b"", 0))
    # Write 1's resend (its reply was lost) must still be answered from the session's record.
    retry = log.apply(Payload("open", "c1", 1, 1, now, b"", session))
    assert retry.outcome == "dup", retry
