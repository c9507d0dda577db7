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

A new cluster (a leader whose log holds nothing but NOOP and CONF entries from index 1: no
request was ever applied) moves to the lowest version its members apply BEFORE any request:
its leader holds every client proposal, its own and those its followers forward, until every
member said what it applies (decided at once then), or for RULES_NEW_WAIT_MS at most. Every
member tells a new leader at once, even one already at its --rules-max, so a member held at 1
holds a new cluster at 1 (review 28). A member still silent when the wait ends (down, cut off,
or older than versions: it never tells) keeps the cluster at the rules in force, exactly as on
an existing cluster: the held proposals go in under those rules, and the cluster moves up the
usual way once every member said it knows more. Silence is never read as consent: an agent
that does not know the version would halt at the entry (or, older than versions, apply it as
an invalid payload and diverge).
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
# A new cluster's leader holds client proposals at most this long for its members' word on
# the rules (each tells at once; one whose first word was lost repeats RULES_ADVERTISE_MS
# later). Past it, a member still silent keeps the cluster at the rules in force.
RULES_NEW_WAIT_MS = 2 * RULES_ADVERTISE_MS
# Words kept (members, and joiners asking to be added): a stranger's frames must not grow it.
HEARD_MAX = 256


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
        # (term, deadline) while a new cluster's leader waits for its members' word.
        self._deciding: tuple[int, float] | None = None
        self.silent: tuple[str, ...] = ()  # members not heard when a new cluster's wait ended

    def tell(self, leader: str | None, term: int, now: float) -> RulesKnown | None:
        """The RULES frame to send the leader now, or None."""
        if leader is None or leader == self.id:
            return None
        if self._told == (leader, term) and (
            now < self._next_tell or self.version >= self.rules_max
        ):
            # Told this leader already; repeated only while the cluster runs older rules than
            # ours. At our cap we still tell each new leader once: a new cluster's leader waits
            # for that word, and moves no further than it (review 28).
            return None
        self._told = (leader, term)
        self._next_tell = now + RULES_ADVERTISE_MS / 1000.0
        return RulesKnown(self.id, leader, self.rules_max)

    def heard(self, known: RulesKnown, now: float, members: Collection[str] = ()) -> None:
        """What `known.frm` said it applies. Past HEARD_MAX words, the oldest word of a node
        that is not in `members` (the configuration) goes: strangers may send RULES (a joiner
        says its rules before JOIN), and a flood of theirs must never push out a member's word,
        which a new cluster's hold and an upgrade wait for (review 35). Members are at most
        PEERS_MAX (64), so a full table always holds a stranger's word to drop."""
        if known.frm not in self._heard and len(self._heard) >= HEARD_MAX:
            strangers = [node for node in self._heard if node not in members]
            oldest = min(strangers or self._heard, key=lambda node: self._heard[node][1])
            del self._heard[oldest]
        self._heard[known.frm] = (known.rules_max, now)

    def said(self, node: str, now: float) -> int | None:
        """The newest version `node` said it applies within RULES_HEARD_MS, or None."""
        said = self._heard.get(node)
        if said is None or now - said[1] > RULES_HEARD_MS / 1000.0:
            return None
        return said[0]

    def to_propose(self, term: int, members: Collection[str], now: float) -> int | None:
        """Leader: the rules version to propose now (every member applies it, and the
        cluster runs older rules), or None."""
        # Only members count; others' words are kept while fresh only (a joiner's, said
        # with its JOIN, is read when the JOIN arrives; a removed member's goes with time).
        fresh_s = RULES_HEARD_MS / 1000.0
        self._heard = {
            m: said for m, said in self._heard.items() if m in members or now - said[1] <= fresh_s
        }
        if self.version >= self.rules_max or self.holding(term):
            # (A new cluster's wait decides its first move, ahead of the proposals it holds.)
            return None
        target = self.rules_max
        for member in members:
            if member == self.id:
                continue
            said = self.said(member, now)
            if said is None:
                return None
            target = min(target, said)
        if target <= self.version or self._proposed == (term, target):
            return None
        self._proposed = (term, target)
        return target

    def start_new(self, term: int, now: float) -> None:
        """Leader of a new cluster (its log never held a request): client proposals wait
        (holding) until to_propose_new decides, RULES_NEW_WAIT_MS at most."""
        self._deciding = (term, now + RULES_NEW_WAIT_MS / 1000.0)
        self.silent = ()

    def holding(self, term: int) -> bool:
        """True while a new cluster's leader (of `term`) holds client proposals."""
        if self._deciding is not None and self._deciding[0] != term:
            self._deciding = None  # that leadership ended
        return self._deciding is not None

    def to_propose_new(self, term: int, members: Collection[str], now: float) -> int | None:
        """A new cluster's leader: once every member said what it applies, the lowest of
        those versions and this agent's if above the version in force (None: it stays), and
        the wait ends; None while some member is silent, until RULES_NEW_WAIT_MS is over,
        then the wait ends with the version in force (`silent` names who kept it)."""
        deciding = self._deciding if self.holding(term) else None
        if deciding is None:
            return None
        target = self.rules_max
        silent = []
        for member in members:
            if member == self.id:
                continue
            said = self.said(member, now)
            if said is None:
                silent.append(member)
            else:
                target = min(target, said)
        if silent:
            if now < deciding[1]:
                return None
            self.silent = tuple(silent)
            self._deciding = None
            return None
        self._deciding = None
        if target <= self.version or self._proposed == (term, target):
            return None
        self._proposed = (term, target)
        return target

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "max": self.rules_max}
