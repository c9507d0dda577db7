"""A deterministic world for the pure Raft core: fake network, fake disk, fake shell, checker.

The fake shell does with a Ready what the agent does (agent/server.py, agent/storage.py):

1. A leader whose term and vote are already durable sends its APPENDs and HEARTBEATs first
   (thesis 10.2.1: its own write overlaps the followers').
2. One write of the Ready's records: term/vote, snapshot install, log truncation and entries,
   commit, the applied entries.
3. A sync, but only if the write held entries, a snapshot, or a term/vote not yet synced. A
   commit-only (or apply-only) write is NOT synced, as in the agent.
4. The other messages, then `advance()`.

The disk (`Storage`) keeps what a process reads back (`current`) apart from what survives a
power loss (`durable`: everything up to the last sync). Faults, all drawn from the seeded rng
and counted in `World.fault_counts`:

- crashes inside a Ready (before the write, after it but before the sync, before the send);
- a crash is a process crash (kill -9: unsynced writes survive in the OS cache) or a power
  loss (everything since the last sync is lost, or, for a torn write, a prefix of those
  records survives, cut inside a write);
- disk full (the write fails: nothing of it is written) and I/O errors on sync (the node
  stops; what was not synced is in an unknown state, modelled as a power loss);
- slow disks: a sync completes some ticks later, and the node's loop is blocked meanwhile
  (as the agent's is): its messages wait, arriving messages queue, ticks are missed and
  caught up (at most TICKS_CATCHUP_MAX);
- network: per-message delay (so reordering), loss, duplication, stragglers (a few messages
  delayed by up to several election timeouts), symmetric partitions and one-way links; a cut
  link, or a node that is down, either loses what is sent to it or (hold_while_cut) keeps it
  queued and delivers it once the link is back or the node restarted, as a ZeroMQ socket
  that reconnects does.

The state machine is the list of applied NORMAL payloads with their indexes; a snapshot ships
that list (up to the sender's applied index) beside the SNAPSHOT message.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from superstatic_agent.raft.core import UNACKED_CONTEXT, RaftNode
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
# Messages that reach a node while its loop is blocked on a slow sync wait in its socket; like
# a ZeroMQ high-water mark, more than this are dropped.
INBOX_MESSAGES_MAX = 1_000
# Messages held for cut links or down nodes (Network.hold_while_cut), like a ZeroMQ send queue
# up to its high-water mark; beyond it, dropped.
HELD_MESSAGES_MAX = 20_000
# Ticks caught up at once after a blocked loop (agent/server.py TICKS_CATCHUP_MAX).
TICKS_CATCHUP_MAX = 10


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

    def apply(self, entry: Entry) -> None:
        assert entry.index == self.applied + 1, (entry.index, self.applied)
        if entry.kind is EntryKind.NORMAL:
            self.datas.append((entry.index, entry.data))
        elif entry.kind is EntryKind.CONF:
            self.conf = apply_change(self.conf, ConfChange.decode(entry.data))
        self.applied = entry.index
        self.applied_term = entry.term


# One record of a write, applied in order. A write is a list of records; a torn write keeps a
# prefix of them. The order inside a write (term/vote, snapshot, truncation, entries, commit,
# applies) is the one in which every prefix is a state the core can restart from: entries never
# outrun the term, the commit never outruns the entries, applying never outruns the commit.
Record = tuple


@dataclass(slots=True)
class StoreState:
    """One view of a data directory: what a restarted node would load from it."""

    hard_state: HardState
    snapshot: SnapshotMeta | None
    entries: list[Entry]
    sm: StateMachine

    def copy(self) -> StoreState:
        return StoreState(self.hard_state, self.snapshot, list(self.entries), self.sm.copy())

    def base_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def term_at(self, index: int) -> int | None:
        base = self.base_index()
        if index <= base:
            return None  # inside the snapshot: held, but no entry to compare
        if index > base + len(self.entries):
            return -1  # not held at all
        return self.entries[index - base - 1].term

    def apply(self, record: Record) -> None:
        kind = record[0]
        hs = self.hard_state
        if kind == "term_vote":
            self.hard_state = HardState(record[1], record[2], hs.commit)
        elif kind == "commit":
            self.hard_state = HardState(hs.term, hs.vote, record[1])
        elif kind == "snapshot":
            meta, data = record[1], record[2]
            self.snapshot = meta
            self.entries = []
            self.sm = data.copy()
        elif kind == "truncate":
            del self.entries[record[1] - self.base_index() - 1 :]
        elif kind == "entry":
            entry = record[1]
            assert entry.index == self.base_index() + len(self.entries) + 1, entry
            self.entries.append(entry)
        elif kind == "apply":
            self.sm.apply(record[1])
        elif kind == "compact":
            meta = record[1]
            del self.entries[: meta.index - self.base_index()]
            self.snapshot = meta
        else:
            raise AssertionError(f"unknown record {record!r}")


class Storage:
    """A node's data directory. `current` is what the process (and a process crash) sees;
    `durable` is what survives a power loss: the state at the last sync. The unsynced writes
    in between are kept so that a power loss can keep a prefix of them (a torn write).

    The attributes of `current` are exposed directly (hard_state, snapshot, entries, sm), as
    the agent's storage would show them. A directed test that edits them while the node is down
    needs no sync: a node starts by taking its current state as durable if nothing is pending.
    """

    def __init__(self, initial_conf: ConfState) -> None:
        self.initial_conf = initial_conf
        empty = StoreState(HardState(0, None, 0), None, [], StateMachine(0, 0, initial_conf))
        self.current = empty
        self.durable = empty.copy()
        self.unsynced: list[list[Record]] = []
        self.syncs = 0

    # The current view, as attributes (the directed tests read and seed storage through them).
    @property
    def hard_state(self) -> HardState:
        return self.current.hard_state

    @hard_state.setter
    def hard_state(self, value: HardState) -> None:
        self.current.hard_state = value

    @property
    def snapshot(self) -> SnapshotMeta | None:
        return self.current.snapshot

    @property
    def entries(self) -> list[Entry]:
        return self.current.entries

    @entries.setter
    def entries(self, value: list[Entry]) -> None:
        self.current.entries = value

    @property
    def sm(self) -> StateMachine:
        return self.current.sm

    def base_index(self) -> int:
        return self.current.base_index()

    def is_empty(self) -> bool:
        c = self.current
        return c.hard_state == HardState(0, None, 0) and c.snapshot is None and not c.entries

    def write(self, records: list[Record]) -> None:
        for record in records:
            self.current.apply(record)
        if records:
            self.unsynced.append(records)

    def sync(self) -> None:
        for records in self.unsynced:
            for record in records:
                self.durable.apply(record)
        self.unsynced.clear()
        self.syncs += 1

    def synced_term_vote(self) -> tuple[int, str | None]:
        hs = self.durable.hard_state
        return hs.term, hs.vote

    def power_loss(self, rng: random.Random, torn: bool) -> int:
        """Everything since the last sync is lost, except, for a torn write, a prefix of those
        records (cut at a random record, possibly inside a write). Returns records kept."""
        records = [record for write in self.unsynced for record in write]
        kept = rng.randrange(len(records)) if torn and records else 0
        state = self.durable
        for record in records[:kept]:
            state.apply(record)
        self.unsynced.clear()
        self.current = state.copy()
        return kept

    def on_start(self, sync: bool) -> None:
        """A node starts on this storage. With `sync`, it first makes everything it loaded
        durable: a kill -9 can leave committed-but-unsynced writes in the OS cache, and the
        core counts every loaded entry and vote as durable (an agent must sync at startup)."""
        if sync and self.unsynced:
            self.sync()
        if not self.unsynced:
            # Nothing pending: whatever a directed test put in place is on disk.
            self.durable = self.current.copy()

    def wiped(self) -> Storage:
        return Storage(self.initial_conf)


@dataclass(slots=True)
class Envelope:
    message: Message
    snapshot_data: StateMachine | None = None  # shipped beside a SNAPSHOT


class Network:
    """Messages in flight with per-message delay (so reordering), loss, duplication,
    stragglers, partitions (symmetric groups) and one-way links."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0
        self.drop_rate = 0.0
        self.duplicate_rate = 0.0
        self.delay_ticks_max = 0
        # A straggler is delayed beyond delay_ticks_max, up to straggler_ticks_max: a message
        # stuck in a send queue across a reconnect, delivered long after its neighbours.
        self.straggler_rate = 0.0
        self.straggler_ticks_max = 0
        self.groups: dict[str, int] = {}  # node -> partition group (absent: group 0)
        self.blocked: set[tuple[str, str]] = set()  # (from, to): one-way cuts
        # Directed tests: a message is delivered only if this returns True.
        self.filter: Callable[[Message], bool] | None = None
        self.stragglers = 0
        # Cut links and down nodes: drop what is sent over them, or hold it for later.
        self.hold_while_cut = False
        self.held = 0  # messages ever held (counted for the run summary)
        self._held: list[Envelope] = []
        self._queue: list[tuple[int, int, Envelope]] = []
        self._seq = 0

    def connected(self, frm: str, to: str) -> bool:
        """Can a message from `frm` reach `to` (not necessarily the other way round)?"""
        return self.groups.get(frm, 0) == self.groups.get(to, 0) and (frm, to) not in self.blocked

    def send(self, envelope: Envelope) -> None:
        m = envelope.message
        if self.filter is not None and not self.filter(m):
            return
        if not self.connected(m.frm, m.to):
            self.hold(envelope)
            return
        if self.rng.random() < self.drop_rate:
            return
        copies = 2 if self.rng.random() < self.duplicate_rate else 1
        for _ in range(copies):
            self._enqueue(envelope)

    def _enqueue(self, envelope: Envelope) -> None:
        if len(self._queue) >= NETWORK_MESSAGES_MAX:
            raise AssertionError(f"NETWORK_MESSAGES_MAX={NETWORK_MESSAGES_MAX} in flight")
        delay = self.rng.randint(0, self.delay_ticks_max) if self.delay_ticks_max else 0
        if self.straggler_rate and self.rng.random() < self.straggler_rate:
            delay = self.rng.randint(self.delay_ticks_max + 1, self.straggler_ticks_max)
            self.stragglers += 1
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, envelope))

    def hold(self, envelope: Envelope) -> None:
        """A message for a cut link or a down node: lost, or kept for when it is back."""
        if self.hold_while_cut and len(self._held) < HELD_MESSAGES_MAX:
            self._held.append(envelope)
            self.held += 1

    def forget_from(self, node_id: str) -> None:
        """A node died: what it had queued for cut links dies with its sockets."""
        self._held = [e for e in self._held if e.message.frm != node_id]

    def release(self, alive: Callable[[str], bool]) -> None:
        """Held messages whose link is whole again and whose target is up go out now, in the
        order they were sent (one send queue per link), each with a fresh delay."""
        if not self._held:
            return
        kept: list[Envelope] = []
        for envelope in self._held:
            m = envelope.message
            if self.connected(m.frm, m.to) and alive(m.to):
                self._enqueue(envelope)
            else:
                kept.append(envelope)
        self._held = kept

    def due(self) -> list[Envelope]:
        """Messages deliverable now, in a random order (delays already reorder across ticks)."""
        out: list[Envelope] = []
        while self._queue and self._queue[0][0] <= self.now:
            out.append(heapq.heappop(self._queue)[2])
        self.rng.shuffle(out)
        # A partition formed while a message was in flight also cuts it.
        due = []
        for envelope in out:
            if self.connected(envelope.message.frm, envelope.message.to):
                due.append(envelope)
            else:
                self.hold(envelope)
        return due

    def in_flight(self) -> int:
        return len(self._queue)


@dataclass(slots=True)
class Faults:
    """Disk and process faults of one world (the network's are on Network); rates are chances
    per event. All default to off, so directed tests see a perfect disk."""

    crash_in_ready_rate: float = 0.0  # per Ready: the node dies somewhere inside it
    power_loss_share: float = 0.0  # of crashes: a power loss (else a process crash)
    torn_share: float = 0.5  # of power losses: a prefix of the unsynced records survives
    disk_full_rate: float = 0.0  # per write: it fails, nothing of it is written
    io_error_rate: float = 0.0  # per sync: it fails, what it covered is in an unknown state
    slow_nodes: frozenset[str] = frozenset()  # nodes whose syncs may be slow
    slow_sync_rate: float = 0.0  # per sync on a slow node
    slow_sync_ticks_max: int = 0
    # The agent as it was before issue 9: no sync at startup (see Storage.on_start). Only for
    # the test that shows the durability check catches it.
    no_sync_on_start: bool = False


@dataclass(slots=True)
class _Pending:
    """A Ready written but not yet synced/sent (the node's loop may be blocked on the sync)."""

    ready: Ready
    messages: tuple[Message, ...]
    needs_sync: bool
    crash_before_send: bool


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
        for m in ready.messages:
            if m.type is MsgType.APPEND and m.context == UNACKED_CONTEXT:
                self._check_unacked(node, m)
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

    def check_sent(self, node: RaftNode, storage: Storage, m: Message) -> None:
        """Durability before send: nothing leaves a node that its synced storage does not
        back (Ready.messages' contract; the agent's write + sync). PRE_VOTE and its answers
        change nothing that needs persisting (thesis 9.6)."""
        if m.type in (MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP):
            return
        durable = storage.durable
        hs = durable.hard_state
        where = f"{node.id} sent {m.type.name} to {m.to} in term {m.term}"
        if m.term > hs.term:
            self.fail(f"durability: {where} with only term {hs.term} synced")
        # A vote is durable if the synced hard state holds it, or holds a later term: one Ready
        # may grant votes in two terms, and only the last is stored; the node can never vote
        # in the earlier term again either way.
        if m.type is MsgType.VOTE and hs.term == m.term and hs.vote != node.id:
            self.fail(f"durability: {where} with its own vote not synced ({hs})")
        if m.type is MsgType.VOTE_RESP and not m.reject and hs.term == m.term and hs.vote != m.to:
            self.fail(f"durability: {where} granting a vote not synced ({hs})")
        if m.type is MsgType.APPEND_RESP and not m.reject and m.index > 0:
            held = durable.term_at(m.index)
            if held is not None and held != node.term_at(m.index):
                self.fail(
                    f"durability: {where} acknowledging index {m.index}, synced term {held}, "
                    f"log term {node.term_at(m.index)}"
                )

    def _check_unacked(self, node: RaftNode, m: Message) -> None:
        """A commit-only APPEND goes unanswered only if its answer would repeat the answer to
        an APPEND with entries the leader has or awaits: no entries, prev = the leader's last
        index, the follower in replicate state with everything up to it sent."""
        progress = node.progress().get(m.to)
        expected = (node.last_index + 1, "replicate")
        if (
            node.role is not Role.LEADER
            or m.entries
            or m.index != node.last_index
            or progress is None
            or progress[1:] != expected
        ):
            self.fail(
                f"unanswered APPEND: {node.id} ({node.role.name}, last {node.last_index}) marked "
                f"an APPEND to {m.to} with {len(m.entries)} entries after {m.index}, its "
                f"progress {progress}"
            )

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
        self.read_counter = 0  # the agent's context counter before issue 9: from 1 per boot
        self.snapshots_installed = 0
        self.raft: RaftNode | None = None
        self.storage_lost = False
        # A sync in progress on a slow disk blocks the node's loop until `blocked_until`.
        self.blocked: _Pending | None = None
        self.blocked_until = 0
        self.inbox: list[Envelope] = []
        self.ticks_missed = 0
        # Directed tests: crash at this point of the next Ready ("before_write", "before_sync",
        # "before_send"), with a power loss if crash_next_power.
        self.crash_next: str | None = None
        self.crash_next_power = False
        self.start()

    @property
    def alive(self) -> bool:
        return self.raft is not None

    @property
    def busy(self) -> bool:
        """Alive but blocked on a slow sync: its core must not be called."""
        return self.blocked is not None

    def start(self) -> None:
        assert self.raft is None
        s = self.storage
        s.on_start(sync=not self.world.faults.no_sync_on_start)
        self.incarnation += 1
        self.read_counter = 0
        self.raft = RaftNode(
            self.id,
            self.config,
            random.Random(self.seed * 7919 + self.incarnation),
            hard_state=s.hard_state,
            conf=s.initial_conf,
            snapshot=s.snapshot,
            entries=tuple(s.entries),
            applied=s.sm.applied,
            storage_lost=self.storage_lost and s.is_empty(),
        )
        self.storage_lost = False  # the core remembers until a leader gives it log state
        self.world.checker.on_restart(self.id, self.raft.commit)
        self.staged.clear()
        self.process()

    def crash(self, power_loss: bool = False) -> None:
        """kill -9 (unsynced writes survive in the OS cache) or, with power_loss, the machine
        loses power (they are lost, or partly kept: a torn write)."""
        self.raft = None  # all in-memory state gone
        self.staged.clear()
        self.blocked = None
        self.inbox.clear()
        self.ticks_missed = 0
        self.world.forget_reads(self.id)
        self.world.network.forget_from(self.id)
        if power_loss:
            faults = self.world.faults
            torn = self.world.rng.random() < faults.torn_share
            pending = sum(len(write) for write in self.storage.unsynced)
            kept = self.storage.power_loss(self.world.rng, torn)
            self.world.count("crash_power")
            if kept:
                self.world.count("torn_write")
            if pending - kept:
                self.world.count("unsynced_records_lost", pending - kept)
        else:
            self.world.count("crash_process")

    def crash_random(self) -> None:
        """A crash of the kind the world's faults favour (or a directed test asked for)."""
        if self.crash_next_power:
            self.crash_next_power = False
            self.crash(power_loss=True)
            return
        self.crash(power_loss=self.world.rng.random() < self.world.faults.power_loss_share)

    def wipe(self) -> None:
        """The data directory is lost (emptied or replaced) while the node is down. Like an
        agent that notices (docs/raft.md, "Empty storage"), the next start passes
        storage_lost=True to the core."""
        assert self.raft is None, f"{self.id} must be down to lose its storage"
        self.storage = self.storage.wiped()
        self.storage_lost = True

    def next_read_context(self) -> bytes:
        """What the agent named its reads until issue 9: `{id}.{n}`, n from 1 at every start.
        Reused across restarts on purpose: the core must not depend on the shell's nonce."""
        self.read_counter += 1
        return f"{self.id}.{self.read_counter}".encode()

    # -- the shell loop --------------------------------------------------------------------------

    def process(self) -> None:
        """Run the shell loop: while the core has a Ready (and the loop is not blocked on a
        slow sync), write, sync, send, advance."""
        for _ in range(READY_ROUNDS_MAX):
            raft = self.raft
            if raft is None or self.blocked is not None or not raft.has_ready():
                return
            if not self._handle_ready(raft, raft.ready()):
                return
        raise AssertionError(f"READY_ROUNDS_MAX={READY_ROUNDS_MAX} Readies in one go")

    def _handle_ready(self, raft: RaftNode, ready: Ready) -> bool:
        """The write half of one Ready. False if the node died or is now blocked."""
        world = self.world
        faults = world.faults
        messages = ready.messages
        hs = ready.hard_state
        if ready.role is Role.LEADER and (
            hs is None or (hs.term, hs.vote) == self.storage.synced_term_vote()
        ):
            # Like the agent (agent/server.py, Raft thesis 10.2.1): a leader sends its appends
            # and heartbeats before its own write when their term is already durable, so a
            # crash before the write leaves followers holding entries the leader lost.
            for m in messages:
                if m.type in _LEADER_EARLY:
                    self.send(raft, m)
            messages = tuple(m for m in messages if m.type not in _LEADER_EARLY)
        crash_at = None
        if faults.crash_in_ready_rate and world.rng.random() < faults.crash_in_ready_rate:
            crash_at = world.rng.choice(("before_write", "before_sync", "before_send"))
        if self.crash_next is not None:
            crash_at, self.crash_next = self.crash_next, None
        if crash_at == "before_write":
            world.checker.on_ready(raft, ready)
            self.crash_random()  # kill -9 before the write transaction committed
            return False
        if faults.disk_full_rate and world.rng.random() < faults.disk_full_rate:
            # The write transaction fails (LMDB map full): nothing of it is written, and the
            # agent stops rather than send anything this Ready promised.
            world.checker.on_ready(raft, ready)
            world.count("disk_full")
            self.crash()
            return False
        self.storage.write(self.records(ready))
        world.checker.on_ready(raft, ready)
        if crash_at == "before_sync":
            self.crash_random()  # written, not synced
            return False
        hs_synced = self.storage.synced_term_vote()
        needs_sync = bool(
            ready.entries
            or ready.snapshot is not None
            or (hs is not None and (hs.term, hs.vote) != hs_synced)
        )
        pending = _Pending(ready, messages, needs_sync, crash_at == "before_send")
        if (
            needs_sync
            and self.id in faults.slow_nodes
            and world.rng.random() < (faults.slow_sync_rate)
        ):
            self.blocked = pending
            self.blocked_until = world.network.now + world.rng.randint(
                1, faults.slow_sync_ticks_max
            )
            world.count("slow_sync")
            return False
        return self._finish(raft, pending)

    def _finish(self, raft: RaftNode, pending: _Pending) -> bool:
        """The sync and send half of one Ready. False if the node died."""
        world = self.world
        ready = pending.ready
        if pending.needs_sync:
            if world.faults.io_error_rate and world.rng.random() < world.faults.io_error_rate:
                # fsync failed: the agent stops; what the sync should have made durable may or
                # may not be on disk (the kernel may have dropped the dirty pages).
                world.count("io_error")
                self.crash(power_loss=True)
                return False
            self.storage.sync()
        if pending.crash_before_send:
            self.crash_random()  # durable, but the process died before sending
            return False
        for m in pending.messages:
            self.send(raft, m)
        for read in ready.read_states:
            self.read_answers.append((read.context, read.index))
            world.on_read(self.id, read.context, read.index)
        raft.advance(ready)
        world.checker.on_ready(raft, _EMPTY_READY)
        return True

    def unblock(self) -> None:
        """The slow sync completed: finish that Ready, then what waited meanwhile."""
        raft = self.raft
        pending = self.blocked
        assert raft is not None and pending is not None
        self.blocked = None
        if not self._finish(raft, pending):
            return
        # Like the agent's next turn: every frame that waited is stepped, then one Ready
        # (group commit: one write and one sync for all of them).
        inbox, self.inbox = self.inbox, []
        for envelope in inbox:
            self._step(raft, envelope)
        self.process()
        missed, self.ticks_missed = min(self.ticks_missed, TICKS_CATCHUP_MAX), 0
        for _ in range(missed):
            if self.raft is None or self.blocked is not None:
                return
            self.raft.tick()
            self.process()
        self.process()

    def records(self, ready: Ready) -> list[Record]:
        """The Ready as the ordered records of one write (see Record)."""
        records: list[Record] = []
        hs = ready.hard_state
        stored = self.storage.hard_state
        if hs is not None and (hs.term, hs.vote) != (stored.term, stored.vote):
            records.append(("term_vote", hs.term, hs.vote))
        if ready.snapshot is not None:
            data = self.staged.pop(ready.snapshot, None)
            assert data is not None, f"{self.id}: snapshot {ready.snapshot} was never staged"
            assert data.applied == ready.snapshot.index
            records.append(("snapshot", ready.snapshot, data))
            self.snapshots_installed += 1
        self.staged.clear()  # anything else staged was rejected
        if ready.entries:
            at = ready.entries[0].index
            base = self.storage.base_index() if ready.snapshot is None else ready.snapshot.index
            held = base + len(self.storage.entries) if ready.snapshot is None else base
            assert base < at <= held + 1, (self.id, at, base, held)
            if at <= held:
                records.append(("truncate", at))
            records.extend(("entry", entry) for entry in ready.entries)
        if hs is not None and hs.commit != stored.commit:
            records.append(("commit", hs.commit))
        records.extend(("apply", entry) for entry in ready.committed)
        return records

    def send(self, raft: RaftNode, m: Message) -> None:
        self.world.checker.check_sent(raft, self.storage, m)
        self.world.network.send(self.envelope(m))

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
        if self.blocked is not None:
            if len(self.inbox) < INBOX_MESSAGES_MAX:
                self.inbox.append(envelope)
            else:
                self.world.count("inbox_dropped")
            return
        self._step(raft, envelope)
        self.process()

    def _step(self, raft: RaftNode, envelope: Envelope) -> None:
        m = envelope.message
        if envelope.snapshot_data is not None:
            assert m.snapshot is not None
            self.staged[m.snapshot] = envelope.snapshot_data
        raft.step(m)

    def tick(self) -> None:
        raft = self.raft
        assert raft is not None
        if self.blocked is not None:
            if self.world.network.now >= self.blocked_until:
                self.unblock()
            else:
                self.ticks_missed += 1
            return
        raft.tick()
        self.process()

    def compact(self) -> bool:
        """Snapshot at the applied index, as the agent does: trim the log below it (one
        write, synced, like agent/storage.py compact)."""
        raft = self.raft
        assert raft is not None and self.blocked is None
        sm = self.storage.sm
        if sm.applied <= raft.first_index - 1:
            return False
        meta = SnapshotMeta(sm.applied, sm.applied_term, sm.conf)
        raft.compact(meta)
        self.storage.write([("compact", meta)])
        self.storage.sync()
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
        self.faults = Faults()
        self.fault_counts: Counter[str] = Counter()
        voters = tuple(voters)
        learners = tuple(learners)
        members = voters + learners
        self.initial_conf = ConfState.make(voters, learners, {n: f"sim://{n}" for n in members})
        self.nodes: dict[str, SimNode] = {}
        # context -> (node that asked, highest index known committed anywhere when asked)
        self.read_requests: dict[bytes, tuple[str, int]] = {}
        self.read_hook: Callable[[str, bytes, int], None] | None = None
        for node_id in members:
            self.add_node(node_id)

    @property
    def crash_in_ready_rate(self) -> float:
        return self.faults.crash_in_ready_rate

    @crash_in_ready_rate.setter
    def crash_in_ready_rate(self, value: float) -> None:
        self.faults.crash_in_ready_rate = value

    def count(self, fault: str, n: int = 1) -> None:
        self.fault_counts[fault] += n

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

    def idle(self) -> list[SimNode]:
        """Live nodes whose loop is free (not blocked on a slow sync): the ones a client, an
        operator or the schedule can call into."""
        return [node for node in self.nodes.values() if node.alive and not node.busy]

    def known_committed(self) -> int:
        """The highest index anything shows committed: applied anywhere, or any live node's
        commit index. A linearizable read asked now must return at least this."""
        commits = (node.raft.commit for node in self.live() if node.raft is not None)
        return max(self.checker.max_committed(), *commits, 0)

    def on_read(self, node_id: str, context: bytes, index: int) -> None:
        asked = self.read_requests.get(context)
        if asked is None or asked[0] != node_id:
            return  # not a read this node has pending (answered already, or forgotten)
        del self.read_requests[context]
        if index < asked[1]:
            raise SafetyViolation(
                f"ReadIndex: {node_id} got index {index} for read {context!r} asked when "
                f"{asked[1]} was already committed (a stale read)"
            )
        if self.read_hook is not None:
            self.read_hook(node_id, context, index)

    def forget_reads(self, node_id: str) -> None:
        """A node went down: its pending reads die with it (its clients time out)."""
        for context in [c for c, (n, _) in self.read_requests.items() if n == node_id]:
            del self.read_requests[context]

    def request_read(self, node_id: str, context: bytes) -> None:
        self.read_requests[context] = (node_id, self.known_committed())
        raft = self.raft(node_id)
        raft.read_index(context)
        self.nodes[node_id].process()

    def tick(self) -> None:
        """One tick: every live node ticks, then every message due is delivered."""
        order = self.live()
        self.rng.shuffle(order)
        for node in order:
            if node.alive:  # an earlier node's tick cannot kill it, but stay defensive
                node.tick()
        self.network.now += 1
        self.deliver_due()

    def deliver_due(self) -> None:
        network = self.network
        network.release(lambda node_id: node_id in self.nodes and self.nodes[node_id].alive)
        for envelope in network.due():
            target = self.nodes.get(envelope.message.to)
            if target is not None and target.alive:
                target.deliver(envelope)
            elif target is not None:
                network.hold(envelope)  # reaches its next incarnation, if the queue keeps it

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


# Ticks a healthy world takes at most to elect a leader (the core's unit tests wait this long).
ELECTION_TICKS_MAX = 200


def elect(world: World, ticks_max: int = ELECTION_TICKS_MAX) -> str:
    """Runs the world until it has a leader, then 5 ticks more (its NOOP spreads); its id."""
    world.run_until(lambda: world.leader() is not None, ticks_max)
    world.run(5)
    leader = world.leader()
    assert leader is not None
    return leader
