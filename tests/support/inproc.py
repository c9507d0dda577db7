"""An in-process log for unit tests of the library: the real agent state machine, no network.

Each submitted transaction becomes a log entry applied by the REAL
`superstatic_agent.statemachine.StateMachine` on a temporary LMDB environment, in log order, and
the resulting events (index, client, seq, outcome, body, collected) are delivered to every
connected replica in order, after a snapshot of the state machine's object table, the way
`superstatic.client.connection.Connection` feeds a replica. What the double leaves out is exactly
what unit tests should not depend on: Raft, sockets, the I/O thread. Delivery happens in the thread
that submits (or waits), and a connection opened with `held=True` only receives events when it
waits for them (after its own commit, or in sync()), which makes its replica stale
deterministically: the way to provoke conflicts.

For unit tests only; tests/cluster runs the library against real agents.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import lmdb

from superstatic.objects.replica import Replica
from superstatic.objects.session import Session

# LMDB map size of the temporary environment: tests store little; this only bounds growth.
MAP_BYTES = 256 << 20
# Small frames, so the in-process snapshots split containers into runs as a real stream does.
SNAPSHOT_FRAME_BYTES = 4096

# [index, client, seq, outcome, body, collected, log_time_ms, heads] as an agent streams them.
Event = tuple[
    int, "str | None", "int | None", str, "bytes | None", tuple[str, ...], int, tuple[Any, ...]
]


@dataclass
class Committed:
    index: int
    outcome: str
    error: str
    dup: bool


class InprocLog:
    """A log of NORMAL entries applied, in order, by the agent's state machine on LMDB."""

    def __init__(self, path: Path, *, gc_threshold: int | None = None) -> None:
        from superstatic_agent.raft.types import Entry, EntryKind
        from superstatic_agent.statemachine import StateMachine
        from superstatic_agent.storage import DBS_MAX

        self._entry = Entry
        self._normal = EntryKind.NORMAL
        self.env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=DBS_MAX, sync=False)
        self.sm = (
            StateMachine(self.env)
            if gc_threshold is None
            else StateMachine(self.env, gc_threshold=gc_threshold)
        )
        self.last_index = 0
        self._lock = threading.Lock()
        # A new cluster's first entry moves it to the newest rules its members apply, before
        # any request (docs/agent.md "Rules versions"): so does this log's.
        from superstatic_agent.rules import RULES_NEWEST, rules_payload

        with self.env.begin(write=True) as txn:
            moved = self.sm.apply(txn, Entry(1, 1, self._normal, rules_payload("a", RULES_NEWEST)))
        self.last_index = 1
        # Its event, as an agent streams a rules entry's (no client, outcome noop).
        self.first_events: list[Event] = [(1, None, None, moved.outcome, None, (), 0, ())]

    def append(
        self,
        client: str,
        seq: int,
        kind: str,
        body: bytes,
        session: int,
        seq_low: int | None = None,
    ) -> tuple[Committed, Event]:
        with self._lock:
            index = self.last_index + 1
            time_ms = int(time.time() * 1000)
            low = max(1, seq - 1) if seq_low is None else seq_low
            data = cbor2.dumps([kind, client, seq, low, time_ms, body, session])
            entry = self._entry(index, 1, self._normal, data)
            with self.env.begin(write=True) as txn:
                applied = self.sm.apply(txn, entry)
            self.last_index = index
        committed = Committed(index, applied.outcome, applied.error, applied.outcome == "dup")
        event: Event = (
            index,
            applied.client,
            applied.seq,
            applied.outcome,
            applied.body,
            tuple(applied.collected),
            applied.log_time_ms,
            tuple(applied.heads),
        )
        return committed, event

    def snapshot(self) -> tuple[int, list[tuple[str, bytes]]]:
        """The object table and the index it reflects (what a SNAPSHOT stream carries)."""
        from superstatic_agent.noderead import materialize
        from superstatic_agent.storage import records

        from superstatic.protocol import codec

        with self._lock, self.env.begin() as txn:
            dbs = self.sm.dbs
            nodes = []
            for key, _nid in records(txn, dbs.oids, "oids"):
                node = materialize(txn, dbs, key.decode())
                assert node is not None
                nodes.append((key.decode(), codec.encode_record(*node)))
            return self.last_index, nodes

    def snapshot_frames(self) -> tuple[int, list[list[list[Any]]]]:
        """The agent's SNAPSHOT frames (format 2, per-key runs) of the store and their index."""
        from superstatic_agent import app_snapshot

        with self._lock:
            index, _log_time_ms, frames = app_snapshot.store_snapshot(
                self.env, self.sm.dbs, SNAPSHOT_FRAME_BYTES
            )
            assert index == self.last_index, (index, self.last_index)
            return index, list(frames)

    def close(self) -> None:
        self.env.close()


def load_as_streamed(replica: Replica, index: int, frames: list[list[list[Any]]]) -> None:
    """Loads the replica the way an app's connection does: the agent's SNAPSHOT frames
    through the library's StreamFeeder."""
    from superstatic_agent import app_snapshot

    from superstatic.client.stream import StreamFeeder

    feeder = StreamFeeder(replica)
    for part, items in enumerate(frames):
        last = part == len(frames) - 1
        feeder.feed_snapshot(app_snapshot.frame_body(index, part, last, 0, items))
    assert replica.applied_index == index, (replica.applied_index, index)


class InprocConnection:
    """The Connection interface (submit, read_index, wait_applied, close) over an InprocLog."""

    def __init__(self, cluster: InprocCluster, replica: Replica, *, held: bool) -> None:
        self.client_id = secrets.token_hex(16)
        self.cluster = cluster
        self.replica = replica
        self.held = held
        self._seq = itertools.count(1)
        # Seqs submitted and not yet answered: seq_low is the lowest (threads of one session
        # submit concurrently, as they do through a real Connection).
        self._unanswered: set[int] = set()
        self._seq_lock = threading.Lock()
        self._session = 0  # the index of this connection's "open" entry, once opened
        self._deliver_lock = threading.Lock()
        self._start(replica)
        self.closed = False

    def _start(self, replica: Replica) -> None:
        """Loads the replica from a snapshot of the log (a full replica)."""
        with self.cluster.events_lock:
            index, frames = self.cluster.log.snapshot_frames()
            self._next = len(self.cluster.events)
            assert self._next == index, "events and the log index move together"
        load_as_streamed(replica, index, frames)

    def submit(self, body: bytes, kind: str = "txn") -> Committed:
        assert not self.closed
        with self._seq_lock:
            if self._session == 0 and kind != "open":
                # Opened under the lock: concurrent first submits share one session.
                opened = self.cluster.append(self.client_id, next(self._seq), "open", b"", 0)
                assert opened.outcome == "ok", opened
                self._session = opened.index
            seq = next(self._seq)
            self._unanswered.add(seq)
            seq_low = min(self._unanswered)
        try:
            return self.cluster.append(self.client_id, seq, kind, body, self._session, seq_low)
        finally:
            with self._seq_lock:
                self._unanswered.discard(seq)

    def read_index(self) -> int:
        return self.cluster.log.last_index

    def wait_applied(self, index: int, timeout_s: float) -> None:
        # The events exist already: "waiting" is delivering them, in this thread.
        self.deliver(index)
        assert self.replica.applied_index >= index

    def deliver(self, upto: int | None = None) -> None:
        with self._deliver_lock:
            with self.cluster.events_lock:
                end = len(self.cluster.events) if upto is None else max(self._next, upto)
                batch = self.cluster.events[self._next : end]
            if batch:
                self.replica.apply_events(batch)
                self._next += len(batch)

    def close(self) -> None:
        self.closed = True
        self.cluster.connections.remove(self)


class InprocCluster:
    """One in-process log and the sessions attached to it."""

    def __init__(self, path: Path, *, gc_threshold: int | None = None) -> None:
        self.path = Path(path)
        self.log = InprocLog(self.path / "lmdb", gc_threshold=gc_threshold)
        self.events: list[Event] = list(self.log.first_events)
        self.events_lock = threading.Lock()
        self.connections: list[InprocConnection] = []
        self._names = itertools.count(1)

    def __enter__(self) -> InprocCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def next_name(self) -> int:
        return next(self._names)

    def session(self, *, held: bool = False) -> Session:
        replica = Replica()
        connection = InprocConnection(self, replica, held=held)
        self.connections.append(connection)
        return Session(replica, connection)

    def append(
        self,
        client: str,
        seq: int,
        kind: str,
        body: bytes,
        session: int,
        seq_low: int | None = None,
    ) -> Committed:
        with self.events_lock:
            committed, event = self.log.append(client, seq, kind, body, session, seq_low)
            self.events.append(event)
        for connection in list(self.connections):
            if not connection.held:
                connection.deliver()
        return committed

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()
        self.log.close()


def replica_nodes(session: Session) -> dict[str, Any]:
    """The replica's nodes, for tests that look inside."""
    return dict(session.replica.nodes)
