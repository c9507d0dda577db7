"""The faults, their seeded schedule, and the nemesis that applies them.

A schedule is a pure function of (seed, kinds): kinds are dealt from a shuffled deck, so every
`len(kinds)` consecutive steps hold each kind once, and each step's parameters (who, how long,
how much) come from the same seeded generator. Who "the leader" is can only be known when the
step runs, so a step names either "leader" or a slot index; the log records what it resolved to.

One fault at a time, healed before the next, except that a membership change runs under random
packet loss (a change during a fault). Every start and heal is logged with wall-clock time.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .clock import Clocks
from .cluster import NemesisCluster
from .net import Network, Rules

KINDS = (
    "partition-halves",  # a random minority (one agent) cut off from the majority, both ways
    "partition-leader",  # the leader cut off, both ways
    "bridge",  # two agents cannot see each other; the third sees both
    "one-way",  # one agent's messages to the others are dropped (or theirs to it)
    "loss",  # a random share of all packets between agents dropped
    "pause",  # SIGSTOP, later SIGCONT
    "kill",  # SIGKILL, later restarted from its data directory
    "restart-all",  # every agent SIGKILLed, then all restarted
    "clock-skew",  # every agent's wall clock set to its own offset
    "clock-jump",  # one agent's wall clock jumps (forward or back), later jumps back
    "membership",  # under loss: leadership transfer, a voter removed and replaced by a new one
    "mixed",  # a network fault and a process or clock fault at once
)
NETWORK_KINDS = frozenset({"partition-halves", "partition-leader", "bridge", "one-way", "loss"})
CLOCK_KINDS = frozenset({"clock-skew", "clock-jump"})
HOLD_S = (2.0, 5.0)  # how long a fault lasts, mostly
# Sometimes longer than a client's operation timeout (10 s), so that operations end in
# Unavailable (fail or info): unknown outcomes are where lost and doubled writes hide.
HOLD_S_LONG = (10.0, 15.0)
HOLD_LONG_SHARE = 0.3
MIXED_NETWORK = ("partition-halves", "partition-leader", "bridge", "one-way", "loss")
MIXED_OTHER = ("pause", "kill", "clock-jump", "clock-skew")
REST_S = (2.0, 4.0)  # healthy time after a heal, before the next fault
LOSS_PCT = (10, 40)
MEMBERSHIP_LOSS_PCT = (5, 15)
SKEW_S = 300  # clock offsets within +-5 minutes: well past the 60 s session TTL
JUMP_S = (30, 600)
# Bounds on the waits inside a step.
TIMEOUT_S_PICK_LEADER = 10.0
TIMEOUT_S_LEARNER = 60.0
TIMEOUT_S_JOIN = 10.0
LEARNER_LAG_OK = 100
POLL_S = 0.2
# Lines of a crashed agent's log quoted in the run's notes.
CRASH_LOG_LINES = 3


def available(kinds: Sequence[str], *, filters: bool, clocks: bool) -> list[str]:
    return [
        k for k in kinds if (filters or k not in NETWORK_KINDS) and (clocks or k not in CLOCK_KINDS)
    ]


@dataclass(frozen=True)
class Step:
    kind: str
    hold_s: float
    rest_s: float
    params: dict[str, Any] = field(default_factory=dict)


def _who(rng: random.Random) -> str | int:
    return "leader" if rng.random() < 0.5 else rng.randrange(3)


def _params(kind: str, rng: random.Random, kinds: Sequence[str]) -> dict[str, Any]:
    if kind == "partition-halves":
        return {"minority": rng.randrange(3)}
    if kind == "bridge":
        return {"bridge": rng.randrange(3)}
    if kind == "one-way":
        return {"node": _who(rng), "direction": rng.choice(["out", "in"])}
    if kind == "loss":
        return {"pct": rng.randint(*LOSS_PCT)}
    if kind in ("pause", "kill"):
        return {"node": _who(rng)}
    if kind == "clock-skew":
        return {"offsets": [rng.randint(-SKEW_S, SKEW_S) for _ in range(3)]}
    if kind == "clock-jump":
        return {"node": _who(rng), "delta": rng.choice([-1, 1]) * rng.randint(*JUMP_S)}
    if kind == "membership":
        return {
            "transfer": rng.random() < 0.5,
            "to": rng.randrange(2),
            "victim": rng.randrange(2),
            "loss": rng.randint(*MEMBERSHIP_LOSS_PCT),
        }
    if kind == "mixed":
        # Only kinds this run may use; a process or clock fault on its own if no network.
        parts = [
            rng.choice(group)
            for group in (
                [k for k in MIXED_NETWORK if k in kinds],
                [k for k in MIXED_OTHER if k in kinds],
            )
            if group
        ]
        return {"parts": [{"kind": k, "params": _params(k, rng, kinds)} for k in parts]}
    return {}


def steps(seed: int, kinds: Sequence[str]) -> Iterator[Step]:
    """The endless schedule of a seed."""
    assert kinds, "no fault kinds to schedule"
    rng = random.Random(seed)
    deck: list[str] = []
    while True:
        if not deck:
            deck = sorted(kinds)
            rng.shuffle(deck)
        kind = deck.pop()
        hold = round(rng.uniform(*(HOLD_S_LONG if rng.random() < HOLD_LONG_SHARE else HOLD_S)), 2)
        rest = round(rng.uniform(*REST_S), 2)
        yield Step(kind, hold, rest, _params(kind, rng, kinds))


def schedule(seed: int, count: int, kinds: Sequence[str] = KINDS) -> list[Step]:
    it = steps(seed, kinds)
    return [next(it) for _ in range(count)]


class FaultLog:
    """faults.jsonl: one line per event, wall-clock ns (the clients' clock) and seconds since
    the run began; echoed to stdout when asked."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.echo = echo
        self.started_ns = time.time_ns()
        self.started = Counter[str]()
        self.notes: list[str] = []
        self.recovery_s: list[float | None] = []  # per healed step; None: not within its rest

    def write(self, event: str, kind: str, **detail: Any) -> None:
        now = time.time_ns()
        t = (now - self.started_ns) / 1e9
        line = {"time": now, "t": round(t, 3), "event": event, "kind": kind, **detail}
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        if event == "start":
            self.started[kind] += 1
        if self.echo:
            extra = " ".join(f"{k}={v}" for k, v in detail.items())
            print(f"[{t:8.2f}s] {event:5} {kind} {extra}", flush=True)

    def recovered(self, kind: str, seconds: float | None) -> None:
        self.recovery_s.append(seconds)
        self.write("recovered", kind, after_s=seconds)

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.write("note", "-", text=text)

    def close(self) -> None:
        self.file.close()


class Nemesis:
    def __init__(
        self, cluster: NemesisCluster, net: Network, clocks: Clocks, log: FaultLog
    ) -> None:
        self.cluster = cluster
        self.net = net
        self.clocks = clocks
        self.log = log
        # Agents found dead that the nemesis had not killed (an abort, a crash): findings.
        self.crashes: list[str] = []

    # -- helpers -----------------------------------------------------------------------------

    def _slot(self, who: str | int) -> str:
        """A slot index, "leader", or "follower" (the first slot after the leader's)."""
        slots = self.cluster.slots
        if who == "follower":
            leader = self._slot("leader")
            return slots[(slots.index(leader) + 1) % len(slots)]
        if who != "leader":
            return slots[int(who) % len(slots)]
        deadline = time.monotonic() + TIMEOUT_S_PICK_LEADER
        while time.monotonic() < deadline:
            slot = self.cluster.leader_now()
            if slot is not None:
                return slot
            time.sleep(POLL_S)
        self.log.note(f"no leader within {TIMEOUT_S_PICK_LEADER} s; using {slots[0]}")
        return slots[0]

    def _others(self, slot: str) -> list[str]:
        return [s for s in self.cluster.slots if s != slot]

    def _wait(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    # -- one step ----------------------------------------------------------------------------

    def perform(self, step: Step) -> None:
        """Starts the step's fault, holds it, heals it, then rests."""
        if step.kind == "membership":
            self._membership(step)
        else:
            detail, heal = self._start(step.kind, step.params)
            self.log.write("start", step.kind, **detail, step=asdict(step))
            try:
                self._wait(step.hold_s)
            finally:
                heal()
                self.log.write("heal", step.kind)
        self.check_crashes()
        self._rest(step.kind, step.rest_s)

    def check_crashes(self) -> None:
        """After a heal every agent runs (a killed one was restarted, a paused one resumed):
        one that does not died on its own. Noted with its exit status and log tail, counted
        as a violation, and restarted so that the run goes on."""
        c = self.cluster
        for slot in c.slots:
            if c.alive(slot):
                continue
            spec = c.spec(slot)
            code = spec.process.returncode if spec.process is not None else None
            tail = ""
            if spec.log_path is not None and spec.log_path.exists():
                lines = spec.log_path.read_text(errors="replace").splitlines()
                tail = " | ".join(lines[-CRASH_LOG_LINES:])
            what = f"agent {spec.id} in {slot} died on its own (exit {code}): {tail}"
            self.crashes.append(what)
            self.log.note(what)
            self.log.write("event", "crash", slot=slot, agent=spec.id, code=code)
            c.start_slot(slot)

    def _rest(self, kind: str, rest_s: float) -> None:
        """Rests `rest_s`, measuring meanwhile how long after the heal every member follows one
        leader again (the cluster's recovery time; None if not within the rest)."""
        started = time.monotonic()
        slot = self.cluster.wait_leader(timeout_s=rest_s)
        took = time.monotonic() - started
        self.log.recovered(kind, round(took, 2) if slot is not None else None)
        self._wait(rest_s - took)

    def _start(self, kind: str, p: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], None]]:
        """Applies one fault; returns what it did (for the log) and how to heal it."""
        c = self.cluster
        if kind in NETWORK_KINDS:
            rules = self._rules(kind, p)
            self.net.apply(rules)
            return {"rules": rules.describe()}, self.net.heal
        if kind == "pause":
            slot = self._slot(p["node"])
            c.pause(slot)
            return {"slot": slot, "agent": c.id_in(slot)}, lambda: c.resume(slot)
        if kind == "kill":
            slot = self._slot(p["node"])
            c.kill(slot)
            return {"slot": slot, "agent": c.id_in(slot)}, lambda: c.start_slot(slot)
        if kind == "restart-all":
            for slot in c.slots:
                c.kill(slot)

            def restart() -> None:
                for slot in c.slots:
                    c.start_slot(slot)

            return {}, restart
        if kind == "clock-skew":
            offsets = dict(zip(c.slots, p["offsets"], strict=True))
            for slot, offset in offsets.items():
                self.clocks.set(slot, offset)
            return {"offsets": offsets}, self.clocks.reset
        if kind == "clock-jump":
            slot = self._slot(p["node"])
            self.clocks.set(slot, p["delta"])
            return {"slot": slot, "delta_s": p["delta"]}, lambda: self.clocks.set(slot, 0)
        if kind == "mixed":
            heals: list[Callable[[], None]] = []
            parts: list[dict[str, Any]] = []
            try:
                for part in p["parts"]:
                    detail, heal = self._start(part["kind"], part["params"])
                    heals.append(heal)
                    parts.append({"kind": part["kind"], **detail})
            except BaseException:
                for heal in reversed(heals):
                    heal()
                raise

            def heal_all_parts() -> None:
                for heal in reversed(heals):
                    heal()

            return {"parts": parts}, heal_all_parts
        raise AssertionError(f"unknown fault kind {kind!r}")

    def _rules(self, kind: str, p: dict[str, Any]) -> Rules:
        slots = self.cluster.slots
        if kind == "loss":
            return Rules(loss_pct=int(p["pct"]))
        if kind in ("partition-halves", "partition-leader"):
            alone = self._slot(p["minority"] if kind == "partition-halves" else "leader")
            cut = {(alone, o) for o in self._others(alone)} | {
                (o, alone) for o in self._others(alone)
            }
            return Rules(cut=cut)
        if kind == "bridge":
            x, y = self._others(slots[p["bridge"] % 3])
            return Rules(cut={(x, y), (y, x)})
        assert kind == "one-way"
        node = self._slot(p["node"])
        if p["direction"] == "out":
            return Rules(one_way={(node, o) for o in self._others(node)})
        return Rules(one_way={(o, node) for o in self._others(node)})

    def _membership(self, step: Step) -> None:
        """Under loss: maybe move leadership, then remove a follower and put a new agent (new
        id, empty data directory) in its slot, which joins as a learner and is promoted."""
        c, p = self.cluster, step.params
        rules = Rules(loss_pct=int(p["loss"])) if self.net.filters else Rules()
        self.net.apply(rules)
        self.log.write("start", "membership", rules=rules.describe(), step=asdict(step))
        try:
            leader = c.wait_leader(TIMEOUT_S_PICK_LEADER)
            if leader is None:
                self.log.note("membership: no leader, nothing changed")
                return
            if p["transfer"]:
                to = self._others(leader)[p["to"] % 2]
                code, out = c.members("transfer", c.id_in(to))
                self.log.write("event", "membership", action="transfer", to=c.id_in(to), code=code)
                if code != 0:
                    self.log.note(f"membership: transfer to {c.id_in(to)} failed: {out}")
                leader = c.wait_leader(TIMEOUT_S_PICK_LEADER) or leader
            victim = self._others(leader)[p["victim"] % 2]
            old = c.id_in(victim)
            code, out = c.members("remove", old)
            self.log.write("event", "membership", action="remove", agent=old, code=code)
            conf = c.configuration()
            if conf is None:
                self.log.note(f"membership: no leader after removing {old} ({out})")
                return
            if old in conf[0] or old in conf[1]:
                self.log.note(f"membership: {old} still a member after remove ({out}); kept")
                return
            new = c.replace(victim)
            self.log.write("event", "membership", action="replace", slot=victim, agent=new)
            self._promote_when_caught_up(new)
        finally:
            self.net.heal()
            self.log.write("heal", "membership", slots=c.describe())
            self.check_crashes()

    def _promote_when_caught_up(self, node_id: str) -> bool:
        c = self.cluster
        deadline = time.monotonic() + TIMEOUT_S_LEARNER
        lag = None
        while time.monotonic() < deadline:
            lag = c.lag(node_id)
            if lag is not None and lag <= LEARNER_LAG_OK:
                break
            time.sleep(POLL_S)
        else:
            self.log.note(f"membership: learner {node_id} lag {lag} after {TIMEOUT_S_LEARNER} s")
        code, out = c.members("promote", node_id)
        self.log.write("event", "membership", action="promote", agent=node_id, code=code)
        conf = c.configuration()
        if conf is not None and node_id in conf[0]:
            c.mark_voter(node_id, True)
            return True
        self.log.note(f"membership: promote {node_id} not applied: {out}")
        return False

    # -- the end -----------------------------------------------------------------------------

    def heal_all(self) -> None:
        """No filter, every clock true, every agent running, and every slot's agent a voter."""
        c = self.cluster
        self.net.heal()
        if self.clocks.enabled:
            self.clocks.reset()
        for slot in c.slots:
            if c.alive(slot):
                c.resume(slot)
        self.check_crashes()  # a step's own heal restarted what it killed
        for slot in c.slots:
            if not c.alive(slot):
                c.start_slot(slot)
        c.wait_leader()
        conf = c.configuration()
        if conf is None:
            self.log.note("heal: no leader to check the configuration with")
            return
        voters, learners = conf
        for slot in c.slots:
            node_id = c.id_in(slot)
            if node_id in voters:
                continue
            if node_id not in learners and not c.spec(slot).voter:
                # A joiner asks to be added once a second: give it time before replacing it.
                deadline = time.monotonic() + TIMEOUT_S_JOIN
                while time.monotonic() < deadline and node_id not in learners:
                    time.sleep(POLL_S)
                    conf = c.configuration() or conf
                    voters, learners = conf
            if node_id not in learners:
                node_id = c.replace(slot)
                self.log.write("event", "heal", action="replace", slot=slot, agent=node_id)
            self._promote_when_caught_up(node_id)
        self.log.write("heal", "all", slots=c.describe())
