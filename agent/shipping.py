"""Snapshots between agents, both directions: a leader streams its object table to a follower
as chunks before the SNAPSHOT message that carries the meta; a follower stages the chunks and
lets the core accept that message only once all of them arrived.

The Server owns one `Shipping`: it hands over the core's SNAPSHOT messages (`start`), the
chunks that arrive (`on_chunk`), and pumps the shipments once per turn. See docs/agent.md.
"""

from __future__ import annotations

import contextlib
import gc as python_gc
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lmdb
from superstatic_agent import peer_codec
from superstatic_agent.config import AgentConfig
from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.membership import apply_change
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    EntryKind,
    Message,
    MsgType,
    ProgressState,
    Role,
    SnapshotMeta,
)
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import Corrupt, Storage, drop_staged, read_applied
from superstatic_agent.transport import DropCounter, PeerTransport

from superstatic.protocol.errors import ProtocolError

log = logging.getLogger("superstatic.agent")

# Snapshot chunks sent to one follower per loop turn; the rest follow in later turns. Building
# a chunk of 1 MiB costs ~30 ms of Python (reading and verifying ~30,000 records): 8 per turn
# made turns of a quarter second, and heartbeats late enough for elections.
SHIPMENT_CHUNKS_PER_TURN_MAX = 2
# ... and staged by a follower per loop turn (in bytes: this many chunks of the configured
# size): staging validates every record (~40 ms a chunk of 1 MiB, ~100 ms before the
# cheaper checks of docs/data-model-v2.md section 10.1), and a turn that took all a
# leader had queued (recv_bytes_per_turn_max, 64 MiB) lasted seconds: the follower missed
# heartbeats and campaigned while it received the snapshot.
STAGING_CHUNKS_PER_TURN_MAX = 2
# Chunks sent to a follower and not yet acknowledged as staged (CHUNK_ACK). Without a window the
# leader queued the whole snapshot towards a follower that stages far slower than it builds:
# the follower's socket stopped reading, the TCP window stayed shut past PEER_TCP_MAXRT_MS
# (which Linux applies to zero-window probes too), the connection was dropped and the
# shipment restarted from part 0, again and again (the first 1,000,000-object runs).
SHIPMENT_UNACKED_CHUNKS_MAX = 8
# Chunks a follower keeps received and not staged: what a paced leader can have in flight (its
# window, and one to spare). One turn's peer intake can hold many more (from a leader
# older than CHUNK_ACK, which does not pace, or a hostile peer sending tiny chunks): past this
# the oldest is staged at once, so the queue stays bounded whatever arrives.
STAGING_QUEUE_CHUNKS_MAX = SHIPMENT_UNACKED_CHUNKS_MAX + 1


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while one chunk is built or staged. Either
    allocates ~100,000 small containers (a chunk's records as lists and tuples) that live
    until the chunk is sent or stored: the collector ran its young generation every 700 of
    them, traversing them all as they aged, and full collections over the agent's whole heap
    came with it (about a fifth of the staging's CPU, docs/data-model-v2.md section 10.1),
    to free nothing (they hold no cycles). It runs again between chunks."""
    if not python_gc.isenabled():
        yield
        return
    python_gc.disable()
    try:
        yield
    finally:
        python_gc.enable()


@dataclass(slots=True)
class Shipment:
    """Leader side: the object table streamed to one follower before its SNAPSHOT message."""

    to: str
    term: int
    meta: SnapshotMeta
    txn: lmdb.Transaction
    chunks: Iterator[bytes]
    part: int = 0
    peek: bytes | None = None
    acked: int = -1  # the last part the follower acknowledged staging
    acked_at_retry: int = -1  # `acked` when the core last asked again (see start)
    asked_idle: int = 0  # the core's requests since then without an acknowledgement between
    paced: bool = True  # False: sent without waiting for acks (a follower that never acks)

    def window_open(self) -> bool:
        return not self.paced or self.part - self.acked <= SHIPMENT_UNACKED_CHUNKS_MAX


@dataclass(slots=True)
class Staging:
    """Follower side: chunks of one snapshot staged so far."""

    frm: str
    term: int
    snapshot_index: int
    next_part: int = 0
    complete: bool = False


class Shipping:
    """Snapshots in flight, both directions: at most one shipment per follower (each pins an
    LMDB read transaction) and at most one staging."""

    def __init__(
        self,
        config: AgentConfig,
        node: RaftNode,
        storage: Storage,
        sm: StateMachine,
        peers: PeerTransport,
        drops: DropCounter,
        on_damage: Callable[[Corrupt], None],
    ) -> None:
        self.config = config
        self._on_damage = on_damage  # the Server halts: a damaged store is never shipped
        self.id = config.node_id
        self.node = node
        self.storage = storage
        self.sm = sm
        self.peers = peers
        self.drops = drops
        self._shipments: dict[str, Shipment] = {}
        self._staging: Staging | None = None
        # Chunks received and not staged yet (staging one costs ~40 ms: a few per turn):
        # recv_bytes_max holds the intake to the staging rate once a snapshot arrives, and
        # on_chunk holds the queue to STAGING_QUEUE_CHUNKS_MAX whatever one turn brought.
        self._pending: deque[tuple[str, peer_codec.SnapshotChunk]] = deque()
        self._pending_bytes = 0
        # Followers that let a whole window go unacknowledged for a retry period, never having
        # acknowledged a chunk of it: presumed older than CHUNK_ACK (a rolling upgrade), so
        # they are shipped to unpaced, as before it, until an ack of theirs arrives.
        self._unpaced: set[str] = set()
        self.shipped = 0  # snapshots streamed whole to a follower (SNAPSHOT message sent)

    def has_work(self) -> bool:
        """Chunks to stage, or a shipment whose window has room. A shipment waiting for acks
        is no work: the loop then sleeps until a frame arrives (it spun at 100% of a core
        before, beside the follower it waited for, on a machine of two)."""
        return bool(self._pending) or any(s.window_open() for s in self._shipments.values())

    def recv_bytes_max(self) -> int | None:
        """Peer bytes to take this turn while a snapshot is being received (None: no tighter
        bound than the transport's). The chunks not taken wait in the socket's queue."""
        staged = self._staging
        if staged is not None and (
            staged.term < self.node.term or staged.snapshot_index <= self.node.commit
        ):
            # Its leader was deposed mid-shipment (or we lead now), or the log brought us past
            # it (the leader ended the shipment): it will never be installed, and keeping it
            # held every later peer frame, APPENDs included, to the staging rate until
            # another snapshot arrived (review15).
            staged = self._staging = None
        if not self._pending and (staged is None or staged.complete):
            return None
        return STAGING_CHUNKS_PER_TURN_MAX * self.config.snapshot_chunk_bytes_max

    def queued(self) -> tuple[int, int]:
        """Chunks received and not staged yet, and their data bytes."""
        return len(self._pending), self._pending_bytes

    def close(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        for shipment in list(self._shipments.values()):
            self._end(shipment)

    # -- follower side -------------------------------------------------------------------------

    def on_chunk(self, sender: str, chunk: peer_codec.SnapshotChunk) -> None:
        """Queues a received chunk; `stage_pending` stages it (a few per loop turn). A full
        queue stages its oldest first (STAGING_QUEUE_CHUNKS_MAX): memory stays bounded."""
        if not self._addressed(sender, chunk):
            return
        bytes_max = STAGING_QUEUE_CHUNKS_MAX * self.config.snapshot_chunk_bytes_max
        while self._pending and (
            len(self._pending) >= STAGING_QUEUE_CHUNKS_MAX
            or self._pending_bytes + len(chunk.data) > bytes_max
        ):
            self.stage_pending(1)
        self._pending.append((sender, chunk))
        self._pending_bytes += len(chunk.data)

    def _addressed(self, sender: str, chunk: peer_codec.SnapshotChunk) -> bool:
        """False (and counted) for a chunk not from its sender or not for us, or from a
        deposed leader: never queued, so it takes no room."""
        if chunk.frm != sender or chunk.to != self.id:
            self.drops.drop("peer_wrong_sender", f"chunk from {sender!r} for {chunk.to!r}")
            return False
        return chunk.term >= self.node.term

    def stage_pending(self, chunks_max: int | None) -> None:
        """Stages up to `chunks_max` queued chunks (None: all of them, as before a SNAPSHOT
        message is stepped, which needs every chunk sent before it staged)."""
        count = 0
        while self._pending and (chunks_max is None or count < chunks_max):
            sender, chunk = self._pending.popleft()
            self._pending_bytes -= len(chunk.data)
            self._stage(sender, chunk)
            count += 1

    def _stage(self, sender: str, chunk: peer_codec.SnapshotChunk) -> None:
        if not self._addressed(sender, chunk):
            return  # the term moved on while it waited: from a deposed leader
        staged = self._staging
        if chunk.part == 0:
            # A new snapshot starts; the state machine drops whatever was staged before.
            staged = self._staging = Staging(chunk.frm, chunk.term, chunk.snap_index)
        elif (
            staged is None
            or staged.complete
            or (staged.frm, staged.term, staged.snapshot_index)
            != (chunk.frm, chunk.term, chunk.snap_index)
            or chunk.part != staged.next_part
        ):
            self.drops.drop("snapshot_chunk_out_of_order", f"part {chunk.part} from {sender}")
            self._staging = None
            return
        try:
            with _collector_paused(), self.storage.env.begin(write=True) as txn:
                self.sm.stage_chunk(txn, chunk.data)
        except ProtocolError as exc:
            self.drops.drop("snapshot_chunk_bad", f"from {sender}: {exc}")
            self._staging = None
            return
        except lmdb.Error as exc:
            # No room to stage it (the map or disk is full): the leader retries later.
            self.drops.drop("snapshot_chunk_no_room", f"from {sender}: {type(exc).__name__}")
            self._staging = None
            return
        except Corrupt as exc:
            # Our own staging record is damaged: start over (the leader sends it again).
            self.drops.drop("snapshot_chunk_bad", f"staging here is damaged: {exc}")
            self._staging = None
            with self.storage.env.begin(write=True) as txn:
                drop_staged(txn, self.storage.dbs)
            return
        staged.next_part += 1
        staged.complete = chunk.last
        ack = peer_codec.ChunkAck(self.id, chunk.frm, chunk.term, chunk.snap_index, chunk.part)
        self.peers.send(chunk.frm, peer_codec.encode_chunk_ack(ack))  # lost: the retry resends

    def staged_for(self, m: Message) -> bool:
        """True if every chunk of the snapshot this SNAPSHOT message names is staged here."""
        assert m.type is MsgType.SNAPSHOT and m.snapshot is not None
        staged = self._staging
        return (
            staged is not None
            and staged.complete
            and (staged.frm, staged.term) == (m.frm, m.term)
            and staged.snapshot_index == m.snapshot.index
        )

    def installed(self) -> None:
        """The core installed a snapshot: what was staged is in the object table now."""
        self._staging = None

    # -- leader side ---------------------------------------------------------------------------

    def on_ack(self, sender: str, ack: peer_codec.ChunkAck) -> None:
        """A follower staged a part of what we ship it: the window moves on."""
        shipment = self._shipments.get(ack.frm)
        if shipment is None:
            return  # routine: the last window's acks come after the shipment ended
        if (
            ack.frm != sender
            or ack.to != self.id
            or (ack.term, ack.snap_index) != (shipment.term, shipment.meta.index)
            or ack.part >= shipment.part
        ):
            self.drops.counts["chunk_ack_stale"] += 1  # an earlier shipment's, or not ours
            return
        shipment.acked = max(shipment.acked, ack.part)
        # It knows CHUNK_ACK after all (its first window was lost): paced from now on.
        shipment.paced = True
        self._unpaced.discard(ack.frm)

    def start(self, m: Message) -> None:
        shipping = self._shipments.get(m.to)
        if shipping is not None:
            if shipping.acked != shipping.acked_at_retry:
                # Still streaming, and the follower acknowledged chunks since the core last
                # asked (its retry timer, SNAPSHOT_RETRY_ELECTIONS): the request is a duplicate.
                shipping.acked_at_retry, shipping.asked_idle = shipping.acked, 0
                return
            shipping.asked_idle += 1
            if shipping.asked_idle < 2:
                return  # a duplicate within one retry period
            # No acknowledgement for a whole retry period (acks lost, or the follower
            # restarted and dropped its staging): start over.
            log.info("snapshot to %s stalled at part %d: starting over", m.to, shipping.acked)
            if shipping.acked < 0 and shipping.part >= SHIPMENT_UNACKED_CHUNKS_MAX:
                # A whole window sent and not one chunk acknowledged in a retry period: an
                # agent older than CHUNK_ACK (a rolling upgrade) stages as chunks arrive and
                # never acks. Paced, it would never get past the first window; unpaced it
                # catches up as it did before the window existed.
                log.info("%s acknowledges no chunks: shipping to it unpaced", m.to)
                self._unpaced.add(m.to)
            self._end(shipping)
        txn = self.storage.env.begin()
        try:
            index, term, _time_ms = read_applied(txn, self.storage.dbs)
        except Corrupt as exc:
            txn.abort()
            self._on_damage(exc)
            return
        assert index >= (m.snapshot.index if m.snapshot else 0), (index, m.snapshot)
        meta = SnapshotMeta(index, term, self._conf_at(index))
        chunks = self.sm.snapshot_chunks(txn, self.config.snapshot_chunk_bytes_max)
        paced = m.to not in self._unpaced
        self._shipments[m.to] = Shipment(m.to, m.term, meta, txn, chunks, paced=paced)
        log.info("sending a snapshot at index %d to %s", index, m.to)

    def _conf_at(self, index: int) -> ConfState:
        """The configuration in force at `index` (applied, so at or above the log's base)."""
        conf = self.node.base_conf
        first = self.node.first_index
        if index >= first:
            for entry in self.node.entries_between(first, index):
                if entry.kind is EntryKind.CONF:
                    conf = apply_change(conf, ConfChange.decode(entry.data))
        return conf

    def pump(self) -> None:
        self.stage_pending(STAGING_CHUNKS_PER_TURN_MAX)
        progress = self.node.progress() if self._shipments else {}
        for shipment in list(self._shipments.values()):
            if shipment.term != self.node.term or self.node.role is not Role.LEADER:
                self._end(shipment)
                continue
            state = progress.get(shipment.to)
            if state is None:
                self._unpaced.discard(shipment.to)  # it left the configuration
            if state is None or state[2] == ProgressState.REPLICATE.value:
                # The follower left, or replicates from the log (an earlier copy installed, or
                # it needs none now): the rest would only be staged and dropped. Not in probe
                # state: the core's snapshot retry (SNAPSHOT_RETRY_ELECTIONS, 2.4 s at the
                # default ticks) probes the follower while a large snapshot is still on its
                # way, and ending the shipment there restarted it from part 0 every retry.
                self._end(shipment)
                continue
            for _ in range(SHIPMENT_CHUNKS_PER_TURN_MAX):
                if not shipment.window_open():
                    break  # the follower stages slower than we build: wait for its acks
                try:
                    data = shipment.peek
                    with _collector_paused():
                        if data is None:
                            data = next(shipment.chunks, None)
                        following = next(shipment.chunks, None)
                    shipment.peek = None
                    if data is None:
                        data = b""  # an empty table still sends one (empty) chunk
                except Corrupt as exc:
                    self._end(shipment)
                    self._on_damage(exc)  # closes every shipment
                    return
                chunk = peer_codec.SnapshotChunk(
                    self.id,
                    shipment.to,
                    shipment.term,
                    shipment.meta.index,
                    shipment.part,
                    following is None,
                    data,
                )
                if not self.peers.send(shipment.to, peer_codec.encode_chunk(chunk)):
                    log.info("snapshot to %s interrupted (peer queue full or down)", shipment.to)
                    self._end(shipment)
                    break
                shipment.part += 1
                if following is None:
                    message = Message(
                        MsgType.SNAPSHOT,
                        self.id,
                        shipment.to,
                        shipment.term,
                        snapshot=shipment.meta,
                    )
                    self.peers.send(shipment.to, peer_codec.encode_message(message))
                    self.shipped += 1
                    self._end(shipment)
                    break
                shipment.peek = following

    def _end(self, shipment: Shipment) -> None:
        self._shipments.pop(shipment.to, None)
        closer = getattr(shipment.chunks, "close", None)
        if closer is not None:
            closer()
        with contextlib.suppress(lmdb.Error):
            shipment.txn.abort()
