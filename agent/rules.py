"""State-machine rules versions (docs/raft.md, "Rules versions"; docs/agent.md).

What `apply` does with a given log is a function of the code: a fix that changes an outcome
makes two agents of one cluster that run different code DIVERGE on the same entries. So the
rules apply follows are versioned, and the version is part of the replicated state: sm_meta
key `rules` (absent: version 1, the rules of every store written before versions existed),
moved up only by a log entry (payload kind "rules", its `seq` the version it moves to), so
every agent switches at the same index. An agent whose code knows fewer versions than an entry
(or a snapshot) asks for stops applying (`RulesTooNew`): it never guesses, never diverges.

Versions (each keeps the older ones' outcomes behind `rules >= N` in the code):

1. The rules before versions.
2. Review 9's session fixes: a late copy of an older "open" is answered as the dup of the open
   that created the live session (it no longer replaces that session); a request refused at
   SESSION_SEQS_MAX raises the session's refusal mark, so every later copy of it is refused
   too (the first answer stays final).
3. Object ids bound to their creator (review 20; docs/virtual-heap.md section 7): a `new`
   op's oid other than the root table's must be `<client id[:16]>.<counter in hex>` of the
   entry's client; per prefix the state machine keeps the owner (the first creator's full
   client id) and the highest counter created with a window below it (db `oid_marks`,
   agent/oidmarks.py), and refuses another owner and a counter created before within the
   window (a counter below it is the owner's own: created if no node has it).
"""

from __future__ import annotations

from superstatic_agent.payload import Payload, encode_payload

RULES_FIRST = 1
# The newest rules this code applies: what a cluster created by this code runs, and what
# --rules-max defaults to (an operator may hold a cluster lower, e.g. to keep a rollback open).
RULES_NEWEST = 3
KEY_RULES = b"rules"  # sm_meta: the rules version in force (absent: RULES_FIRST)


class RulesTooNew(Exception):
    """The replicated state asks for rules this agent's code (or its --rules-max) does not
    know: this agent must stop applying. `index` is the entry that asks (0: the state already
    held the version, e.g. from an installed snapshot)."""

    def __init__(self, index: int, term: int, version: int, known: int) -> None:
        where = f"committed entry {index} (term {term})" if index else "the stored state"
        super().__init__(
            f"{where} moves the cluster to state-machine rules version {version}, but this "
            f"agent knows rules up to version {known} (--rules-max={known}, newest in this "
            f"code {RULES_NEWEST})"
        )
        self.index = index
        self.term = term
        self.version = version
        self.known = known


def rules_payload(proposer: str, version: int, time_ms: int = 0) -> bytes:
    """The payload of the entry that moves the cluster to rules `version`: kind "rules", the
    proposing agent's id in the client field (for the log; no session is touched), the
    version as its seq."""
    assert RULES_FIRST < version <= RULES_NEWEST, version
    return encode_payload(Payload("rules", proposer, version, 0, time_ms, b"", 0))
