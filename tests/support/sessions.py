"""Client sessions for tests that apply raw entries to the agent's state machine.

Since issue 9 a write names its session, the index of the "open" entry that started it, and a
write naming no live session is refused (outcome "session_expired"). Tests about other things
check the indexes and versions of the entries they apply, so an "open" entry would shift them:
`place_session` puts the record an "open" would have made straight into the store, and their
payloads name SESSION_PLACED.
"""

from __future__ import annotations

import lmdb
from superstatic_agent.sessions import Session, encode_session
from superstatic_agent.storage import record_put

# The id of every placed session (an index no test's log reaches).
SESSION_PLACED = 1_000_000


def place_session(env: lmdb.Environment, client: str, *, last_ms: int = 0) -> None:
    """A live session for `client` named SESSION_PLACED, last heard of at log time `last_ms`."""
    with env.begin(write=True) as txn:
        db = env.open_db(b"sessions", txn=txn, create=True)
        record = encode_session(Session(last_ms, 0, opened=SESSION_PLACED))
        record_put(txn, db, client.encode(), record)
