"""A deterministic world for the pure Raft core: fake network, fake storage, fake shell, checker.

The fake shell does what the agent does with a Ready: persist (snapshot install, then entries,
then hard state, then apply committed entries, all atomically), then send messages, then
advance. Storage keeps only what was persisted, so a crash (dropping the RaftNode) and a
restart from storage exercise the same recovery path as the real agent.

The state machine is the list of applied NORMAL payloads with their indexes; a snapshot ships
that list (up to the sender's applied index) beside the SNAPSHOT message.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.membership import apply_change
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    RaftConfig,
    Ready,
    Role,
    SnapshotMeta,
)

# Bounds so that a bug cannot turn a schedule into an endless loop.
READY_ROUNDS_MAX = 10_000
NETWORK_MESSAGES_MAX = 200_000


class SafetyViolation(AssertionError):
    """A Raft safety property failed; the message says which and where."""


@dataclass(slots=True)
class StateMachine:
    """What the shell applied: NORMAL payloads by index, plus the conf and term at `applied`."""

    applied: int
    applied_term: int
    conf: ConfState
    datas: list[tuple[int, bytes]] = field(default_factory=list)

    def copy(self) -> StateMachine:
        return StateMachine(self.applied, self.applied_term, self.conf, list(self.datas))


@dataclass(slots=True)
class Storage:
    """Exactly what a node was told to persist (the LMDB of the real agent)."""

    initial_conf: ConfState
    hard_state: HardState = field(default_factory=lambda: HardState(0, None, 0))
    snapshot: SnapshotMeta | None = None
    entries: list[Entry] = field(default_factory=list)
    sm: StateMachine = field(init=False)

    def __post_init__(self) -> None:
        self.sm = StateMachine(0, 0, self.initial_conf)

    def base_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0


@dataclass(slots=True)
class Envelope:
    message: Message
    snapshot_data: StateMachine | None = None  # shipped beside a SNAPSHOT


class Network:
    """Messages in flight with per-message delay (so reordering), loss, duplication, partitions."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        self.delay_ticks_max = 0
        self.groups: dict[str, int] = {}  # node -> partition group (absent: group 0)
        # Directed tests: a message is delivered only if this returns True.
        self.filter: Callable[[Message], bool] | None = None
        self._queue: list[tuple[int, int, Envelope]] = []
        self._seq = 0

    def connected(self, a: str, b: str) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def send(self, envelope: Envelope) -> None:
        m = envelope.message
        if self.filter is not None and not self.filter(m):
            return
        if not self.connected(m.frm, m.to) or self.rng.random() < self.drop_rate:
            return
        copies = 2 if self.rng.random() < self.duplicate_rate else 1
        for _ in range(copies):
            if len(self._queue) >= NETWORK_MESSAGES_MAX:
                raise AssertionError(f"NETWORK_MESSAGES_MAX={NETWORK_MESSAGES_MAX} in flight")
            delay = self.rng.randint(0, self.delay_ticks_max) if self.delay_ticks_max else 0
            self._seq += 1
            heapq.heappush(self._queue, (self.now + delay, self._seq, envelope))

    def due(self) -> list[Envelope]:
        """Messages deliverable now, in a random order (delays already reorder across ticks)."""
        out: list[Envelope] = []
        while self._queue and self._queue[0][0] <= self.now:
            out.append(heapq.heappop(self._queue)[2])
        self.rng.shuffle(out)
        # A partition formed while a message was in flight also cuts it.
        return [e for e in out if self.connected(e.message.frm, e.message.to)]

    def in_flight(self) -> int:
        return len(self._queue)


class Checker:
    """Raft's safety properties, checked after every Ready of every node."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}  # term -> leader
        self.committed: dict[int, Entry] = {}  # index -> entry, as first applied anywhere
        self.commit_term_max_index: dict[int, int] = {}  # term first seen committed -> max index
        self.entry_prev_term: dict[tuple[int, int], tuple[EntryKind, bytes, int | None]] = {}
        self.commit_seen: dict[str, int] = {}

    def fail(self, what: str) -> None:
        raise SafetyViolation(what)

    def on_ready(self, node: RaftNode, ready: Ready) -> None:
        if node.role is Role.LEADER:
            known = self.leaders.setdefault(node.term, node.id)
            if known != node.id:
                self.fail(f"election safety: {known} and {node.id} both lead term {node.term}")
            self._check_leader_completeness(node)
        for entry in ready.entries:
            previous_term = node.term_at(entry.index - 1)
            key = (entry.index, entry.term)
            value = (entry.kind, entry.data, previous_term)
            known_value = self.entry_prev_term.setdefault(key, value)
            if known_value != value:
                self.fail(f"log matching: {node.id} holds {value} at {key}, others {known_value}")
        commit_before = self.commit_seen.get(node.id, 0)
        if node.commit < commit_before:
            self.fail(f"commit went back on {node.id}: {commit_before} -> {node.commit}")
        self.commit_seen[node.id] = node.commit
        for entry in ready.committed:
            known_entry = self.committed.setdefault(entry.index, entry)
            if known_entry != entry:
                self.fail(
                    f"state machine safety: {node.id} applied {entry} at {entry.index}, "
                    f"another node applied {known_entry}"
                )
            if known_entry is entry:
                best = self.commit_term_max_index.get(ready.term, 0)
                self.commit_term_max_index[ready.term] = max(best, entry.index)

    def on_restart(self, node_id: str, commit: int) -> None:
        # Commit is volatile beyond what was persisted; monotonic again from here.
        self.commit_seen[node_id] = commit

    def _check_leader_completeness(self, node: RaftNode) -> None:
        """Entries committed in earlier terms are in every later leader's log."""
        index = max(
            (i for term, i in self.commit_term_max_index.items() if term < node.term), default=0
        )
        if index == 0 or index <= node.first_index - 1:
            return  # nothing to check, or compacted into the leader's own snapshot
        if node.last_index < index or node.term_at(index) != self.committed[index].term:
            self.fail(
                f"leader completeness: leader {node.id} of term {node.term} lacks committed "
                f"entry {self.committed[index]}"
            )

    def max_committed(self) -> int:
        return max(self.committed, default=0)


class SimNode:
    """One agent: a RaftNode plus its storage and the fake shell around it."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        seed: int,
        storage: Storage,
        world: World,
    ) -> None:
        self.id = node_id
        self.config = config
        self.storage = storage
        self.world = world
        self.seed = seed
        self.incarnation = 0
        self.staged: dict[SnapshotMeta, StateMachine] = {}
        self.read_answers: list[tuple[bytes, int]] = []
        self.snapshots_installed = 0
        self.raft: RaftNode | None = None
        self.storage_lost = False
        self.start()

    @property
    def alive(self) -> bool:
        return self.raft is not None

    def start(self) -> None:
        assert self.raft is None
        s = self.storage
        self.incarnation += 1
        self.raft = RaftNode(
            self.id,
            self.config,
            random.Random(self.seed * 7919 + self.incarnation),
            hard_state=s.hard_state,
            conf=s.initial_conf,
            snapshot=s.snapshot,
            entries=tuple(s.entries),
            applied=s.sm.applied,
            storage_lost=self.storage_lost,
        )
        self.storage_lost = False  # the core remembers until a leader gives it log state
        self.world.checker.on_restart(self.id, self.raft.commit)
        self.staged.clear()
        self.process()

    def crash(self) -> None:
        self.raft = None  # all in-memory state gone; storage stays
        self.staged.clear()

    def wipe(self) -> None:
        """The data directory is lost (emptied or replaced) while the node is down. Like an
        agent that notices (docs/raft.md, "Empty storage"), the next start passes
        storage_lost=True to the core."""
        assert self.raft is None, f"{self.id} must be down to lose its storage"
        self.storage = Storage(self.storage.initial_conf)
        self.storage_lost = True

    def process(self) -> None:
        """Run the shell loop: while the core has a Ready, persist, check, send, advance."""
        raft = self.raft
        assert raft is not None
        for _ in range(READY_ROUNDS_MAX):
            if not raft.has_ready():
                return
            ready = raft.ready()
            # Like the agent (agent/server.py, Raft thesis 10.2.1): a leader sends its appends
            # and heartbeats before its own write when their term is already durable, so a
            # crash before the write leaves followers holding entries the leader lost.
            messages = ready.messages
            hs, stored = ready.hard_state, self.storage.hard_state
            if ready.role is Role.LEADER and (
                hs is None or (hs.term, hs.vote) == (stored.term, stored.vote)
            ):
                for m in messages:
                    if m.type in _LEADER_EARLY:
                        self.world.network.send(self.envelope(m))
                messages = tuple(m for m in messages if m.type not in _LEADER_EARLY)
            crash_at = self.world.crash_point()
            if crash_at == "before_persist":
                self.world.checker.on_ready(raft, ready)
                self.crash()  # kill -9 before the write transaction committed
                return
            self.persist(ready)
            self.world.checker.on_ready(raft, ready)
            if crash_at == "before_send":
                self.crash()  # durable, but the process died before sending
                return
            for m in messages:
                self.world.network.send(self.envelope(m))
            for read in ready.read_states:
                self.read_answers.append((read.context, read.index))
                self.world.on_read(self.id, read.context, read.index)
            raft.advance(ready)
            self.world.checker.on_ready(raft, _EMPTY_READY)
        raise AssertionError(f"READY_ROUNDS_MAX={READY_ROUNDS_MAX} Readies in one go")

    def persist(self, ready: Ready) -> None:
        s = self.storage
        if ready.snapshot is not None:
            data = self.staged.pop(ready.snapshot, None)
            assert data is not None, f"{self.id}: snapshot {ready.snapshot} was never staged"
            assert data.applied == ready.snapshot.index
            s.snapshot = ready.snapshot
            s.entries = []
            s.sm = data.copy()
            self.snapshots_installed += 1
        self.staged.clear()  # anything else staged was rejected
        if ready.entries:
            at = ready.entries[0].index
            base = s.base_index()
            assert base < at <= base + len(s.entries) + 1, (self.id, at, base, len(s.entries))
            del s.entries[at - base - 1 :]
            s.entries.extend(ready.entries)
        if ready.hard_state is not None:
            s.hard_state = ready.hard_state
        sm = s.sm
        for entry in ready.committed:
            assert entry.index == sm.applied + 1, (self.id, entry.index, sm.applied)
            if entry.kind is EntryKind.NORMAL:
                sm.datas.append((entry.index, entry.data))
            elif entry.kind is EntryKind.CONF:
                sm.conf = apply_change(sm.conf, ConfChange.decode(entry.data))
            sm.applied = entry.index
            sm.applied_term = entry.term
        assert sm.applied <= s.hard_state.commit, (self.id, sm.applied, s.hard_state)

    def envelope(self, m: Message) -> Envelope:
        if m.type is not MsgType.SNAPSHOT:
            return Envelope(m)
        # Like the agent: ship the state machine as applied now, with its own (newer) meta.
        sm = self.storage.sm
        assert m.snapshot is not None and sm.applied >= m.snapshot.index
        meta = SnapshotMeta(sm.applied, sm.applied_term, sm.conf)
        return Envelope(_replace_snapshot(m, meta), sm.copy())

    def deliver(self, envelope: Envelope) -> None:
        raft = self.raft
        assert raft is not None
        m = envelope.message
        if envelope.snapshot_data is not None:
            assert m.snapshot is not None
            self.staged[m.snapshot] = envelope.snapshot_data
        raft.step(m)
        self.process()

    def compact(self) -> bool:
        """Snapshot at the applied index, as the agent does: trim the log below it."""
        raft = self.raft
        assert raft is not None
        sm = self.storage.sm
        if sm.applied <= raft.first_index - 1:
            return False
        meta = SnapshotMeta(sm.applied, sm.applied_term, sm.conf)
        raft.compact(meta)
        s = self.storage
        base = s.base_index()
        del s.entries[: meta.index - base]
        s.snapshot = meta
        return True


def _replace_snapshot(m: Message, meta: SnapshotMeta) -> Message:
    return Message(m.type, m.frm, m.to, m.term, snapshot=meta)


_EMPTY_READY = Ready(None, (), None, (), (), (), Role.FOLLOWER, None, 0)
_LEADER_EARLY = frozenset({MsgType.APPEND, MsgType.HEARTBEAT})


class World:
    """Nodes, network and checker, stepped one tick at a time."""

    def __init__(
        self,
        seed: int,
        voters: Iterable[str],
        learners: Iterable[str] = (),
        config: RaftConfig | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or RaftConfig(ticks_election=10, ticks_heartbeat=2)
        self.network = Network(random.Random(seed * 31 + 1))
        self.checker = Checker()
        voters = tuple(voters)
        learners = tuple(learners)
        members = voters + learners
        self.initial_conf = ConfState.make(voters, learners, {n: f"sim://{n}" for n in members})
        self.nodes: dict[str, SimNode] = {}
        self.read_requests: dict[bytes, int] = {}  # context -> max committed index when asked
        self.read_hook: Callable[[str, bytes, int], None] | None = None
        self.crash_in_ready_rate = 0.0  # chance that a node dies while handling one Ready
        for node_id in members:
            self.add_node(node_id)

    def add_node(self, node_id: str) -> SimNode:
        assert node_id not in self.nodes
        node = SimNode(
            node_id,
            self.config,
            self.seed * 101 + len(self.nodes),
            Storage(self.initial_conf),
            self,
        )
        self.nodes[node_id] = node
        return node

    def raft(self, node_id: str) -> RaftNode:
        raft = self.nodes[node_id].raft
        assert raft is not None, f"{node_id} is down"
        return raft

    def live(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.alive]

    def crash_point(self) -> str | None:
        if self.crash_in_ready_rate and self.rng.random() < self.crash_in_ready_rate:
            return self.rng.choice(("before_persist", "before_send"))
        return None

    def on_read(self, node_id: str, context: bytes, index: int) -> None:
        asked = self.read_requests.pop(context, None)
        if asked is not None and index < asked:
            raise SafetyViolation(
                f"ReadIndex: {node_id} got index {index} for a read asked when {asked} "
                "was already committed (a stale read)"
            )
        if self.read_hook is not None:
            self.read_hook(node_id, context, index)

    def request_read(self, node_id: str, context: bytes) -> None:
        self.read_requests[context] = self.checker.max_committed()
        raft = self.raft(node_id)
        raft.read_index(context)
        self.nodes[node_id].process()

    def tick(self) -> None:
        """One tick: every live node ticks, then every message due is delivered."""
        order = self.live()
        self.rng.shuffle(order)
        for node in order:
            assert node.raft is not None
            node.raft.tick()
            node.process()
        self.network.now += 1
        self.deliver_due()

    def deliver_due(self) -> None:
        for envelope in self.network.due():
            target = self.nodes.get(envelope.message.to)
            if target is not None and target.alive:
                target.deliver(envelope)

    def stabilize(self, rounds_max: int = 1000) -> None:
        """Deliver messages (without ticking) until none is due: for zero-delay directed tests."""
        for _ in range(rounds_max):
            due = self.network.due()
            if not due:
                return
            for envelope in due:
                target = self.nodes.get(envelope.message.to)
                if target is not None and target.alive:
                    target.deliver(envelope)
        raise AssertionError(f"still chatting after {rounds_max} rounds")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    def run_until(self, predicate: Callable[[], bool], ticks_max: int) -> int:
        """Tick until predicate holds; returns the ticks taken; raises past ticks_max."""
        for taken in range(ticks_max + 1):
            if predicate():
                return taken
            self.tick()
        raise AssertionError(f"condition not reached within {ticks_max} ticks")

    def leader(self) -> str | None:
        """The live leader with the highest term, if any."""
        best: RaftNode | None = None
        for node in self.live():
            raft = node.raft
            assert raft is not None
            if raft.role is Role.LEADER and (best is None or raft.term > best.term):
                best = raft
        return best.id if best else None

    def propose(self, node_id: str, datas: list[bytes]) -> None:
        self.raft(node_id).propose(datas)
        self.nodes[node_id].process()

    def applied_datas(self, node_id: str) -> list[tuple[int, bytes]]:
        return list(self.nodes[node_id].storage.sm.datas)

    def committed_datas(self) -> dict[int, bytes]:
        return {
            index: entry.data
            for index, entry in self.checker.committed.items()
            if entry.kind is EntryKind.NORMAL
        }
