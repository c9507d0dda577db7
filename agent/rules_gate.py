"""When a cluster moves up to newer state-machine rules (docs/agent.md, "Rules versions").

The rules version is replicated state, moved up by a "rules" entry (agent/rules.py). The
leader proposes one only when every member of the configuration, voters and learners, said it
applies that version: each member tells the leader it follows the newest version it applies (a
RULES peer frame: its --rules-max) at once when it learns of a leader, then every
RULES_ADVERTISE_MS while the version in force is below its own. The leader counts what a member
said within the last RULES_HEARD_MS only: a member restarted with older code (which says less,
or, older than versions, nothing) stops counting within that time. It then proposes the lowest
version every member and itself apply, once per term and version (a copy that applies twice
changes nothing: the version only goes up).

A cluster created by this code starts at the newest rules: a leader whose log holds nothing
but NOOP and CONF entries from index 1 (no request was ever applied anywhere: the state is
empty, so no agent can hold a state that older rules made) proposes them as its term's first
entry, without waiting for the members' word (unless one already said it knows less). A member
whose code knows less then stops at that entry (RulesTooNew): it never diverges. Only an agent
older than rules versions could, since it knows nothing of them; it must not be a member of a
cluster created by this code (docs/agent.md). A cluster of data directories written before
versions stays at rules 1 until its last member runs code that knows more.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from superstatic_agent.peer_codec import RulesKnown

# A member repeats the newest rules it knows to its leader this often while the cluster runs
# older rules (and at once when it learns of a new leader).
RULES_ADVERTISE_MS = 1_000
# What a member said counts for this long: three of its repeats may be lost before the leader
# stops moving up on its word.
RULES_HEARD_MS = 3 * RULES_ADVERTISE_MS


class RulesGate:
    """One agent's side: what it tells its leader, and (leading) when to move the cluster up."""

    def __init__(self, node_id: str, rules_max: int, version: int) -> None:
        self.id = node_id
        self.rules_max = rules_max
        self.version = version  # in force at this agent's applied state
        self._heard: dict[str, tuple[int, float]] = {}  # member -> (its rules_max, when)
        self._told: tuple[str, int] | None = None  # (leader, term) told last
        self._next_tell = 0.0
        self._proposed: tuple[int, int] | None = None  # (term, version) proposed last
        self.checked_term = 0  # the leadership whose log was looked at for a new cluster

    def tell(self, leader: str | None, term: int, now: float) -> RulesKnown | None:
        """The RULES frame to send the leader now, or None."""
        if leader is None or leader == self.id or self.version >= self.rules_max:
            return None
        if self._told == (leader, term) and now < self._next_tell:
            return None
        self._told = (leader, term)
        self._next_tell = now + RULES_ADVERTISE_MS / 1000.0
        return RulesKnown(self.id, leader, self.rules_max)

    def heard(self, known: RulesKnown, now: float) -> None:
        self._heard[known.frm] = (known.rules_max, now)

    def to_propose(self, term: int, members: Collection[str], now: float) -> int | None:
        """Leader: the rules version to propose now (every member applies it, and the
        cluster runs older rules), or None."""
        # Only members count, and only they are kept (a removed one's word goes with it).
        self._heard = {m: said for m, said in self._heard.items() if m in members}
        if self.version >= self.rules_max:
            return None
        target = self.rules_max
        for member in members:
            if member == self.id:
                continue
            said = self._heard.get(member)
            if said is None or now - said[1] > RULES_HEARD_MS / 1000.0:
                return None
            target = min(target, said[0])
        if target <= self.version or self._proposed == (term, target):
            return None
        self._proposed = (term, target)
        return target

    def to_propose_new(self, term: int) -> int | None:
        """Leader of a cluster whose log never held a request (rules_first): the newest
        version this agent applies, unless a member said it knows less."""
        known = [said for said, _when in self._heard.values()]
        target = min([self.rules_max, *known])
        if target <= self.version or self._proposed == (term, target):
            return None
        self._proposed = (term, target)
        return target

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "max": self.rules_max}
