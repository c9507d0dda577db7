"""Simulated I/O for the agent's real `Server` (agent/ports.py): the glue simulation's world.

- `SimNet`: one simulated time (milliseconds) and a network of links between named endpoints
  (agents by node id, clients by "@p<process>"). Each link is FIFO, like the TCP connection a
  ZeroMQ pair uses, with a random delay per frame, random loss, and blocking per direction
  (a one-way partition blocks A->B and not B->A). Frames to an endpoint that is down are lost.
- `SimClock`: a node's clocks. Monotonic time is the simulated time; the wall clock adds the
  node's skew, which the schedule sets and makes jump.
- `SimPeerPort` / `SimClientPort`: the two transports, with the real ones' contract (a send to a
  peer without a connection is dropped and counted; to a peer that is down fails like an
  `IMMEDIATE` DEALER; a reply to an app that is not connected here is "gone").
- `SimDisk` + `SimStorage`: real LMDB in a temporary directory (tmpfs when there is one). The
  disk keeps the data file as of the last point LMDB's mode makes durable (an explicit
  `Storage.sync`), and a power loss puts that image back: everything written since is lost,
  as the agent's durability argument allows (docs/data-model.md). A process crash keeps every
  committed transaction (the page cache survives it). `crash_at` makes the next sync or send
  of a node raise `SimCrash`, or the next write transaction after its apply and before its
  commit (where a write's events already went to its callers' streams), so crashes also land
  in the middle of a Ready.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import zmq
from superstatic_agent.auth import AgentAuth
from superstatic_agent.peer_codec import PeerKind, peek_kind
from superstatic_agent.ports import AgentIo
from superstatic_agent.raft.types import ConfState, Ready, SnapshotMeta
from superstatic_agent.storage import LOG_DIR, Scrubbed, Storage
from superstatic_agent.transport import (
    CLIENT_FRAMES_PER_TURN_MAX,
    PEER_FRAMES_PER_TURN_MAX,
    DropCounter,
)

# The simulated wall clock starts here (a fixed date: same seed, same run).
EPOCH_MS = 1_800_000_000_000
# LMDB map of one simulated agent: the data stays small; the map only bounds it.
SIM_MAP_BYTES = 64 << 20
# The Raft log's segments in the simulation: small, since every flush of the log images it.
SIM_LOG_SEGMENT_BYTES = 256 << 10
# Frames one link carries at once; a link this full loses frames (a bounded zmq queue).
LINK_FRAMES_MAX = 10_000


class SimCrash(Exception):
    """Raised inside a node's Server at the crash point the schedule chose."""


@dataclass
class Link:
    last_due_ms: int = 0
    queued: int = 0


class SimNet:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now_ms = 0
        self.loss = 0.0
        self.delay_ms = (1, 5)
        self.blocked: set[tuple[str, str]] = set()  # (from, to) groups: those frames are lost
        self.up: set[str] = set()  # endpoints that receive
        self.addresses: dict[str, str] = {}  # peer endpoint -> node id
        self.inbox: dict[str, deque[tuple[str, bytes]]] = {}
        self._links: dict[tuple[str, str], Link] = {}
        self._queue: list[tuple[int, int, str, str, bytes]] = []
        self._serials = itertools.count()
        self.frames_sent = 0
        self.frames_lost = 0
        # Agents that never send a RULES frame, as agents older than rules versions ("*":
        # all): they send nothing at all, so no random draw moves the schedule's course.
        self.rules_unsaid: set[str] = set()

    def cut(self, src: str, dst: str) -> bool:
        """Frames from `src` to `dst` are lost: a one-way partition between their groups (an
        agent with its client endpoint, a client with all its connections)."""
        return (group(src), group(dst)) in self.blocked

    def send(self, src: str, dst: str, data: bytes) -> None:
        self.frames_sent += 1
        link = self._links.setdefault((src, dst), Link())
        if self.cut(src, dst) or self.rng.random() < self.loss:
            self.frames_lost += 1
            return
        if link.queued >= LINK_FRAMES_MAX:
            self.frames_lost += 1
            return
        due = max(self.now_ms + self.rng.randint(*self.delay_ms), link.last_due_ms)
        link.last_due_ms = due
        link.queued += 1
        heapq.heappush(self._queue, (due, next(self._serials), src, dst, data))

    def deliver_due(self) -> None:
        while self._queue and self._queue[0][0] <= self.now_ms:
            _due, _serial, src, dst, data = heapq.heappop(self._queue)
            self._links[(src, dst)].queued -= 1
            if dst in self.up and not self.cut(src, dst):
                self.inbox.setdefault(dst, deque()).append((src, data))
            else:
                self.frames_lost += 1

    def take(self, dst: str, count_max: int) -> list[tuple[str, bytes]]:
        box = self.inbox.get(dst)
        out: list[tuple[str, bytes]] = []
        while box and len(out) < count_max:
            out.append(box.popleft())
        return out

    def go_down(self, name: str) -> None:
        """An endpoint stops: what was waiting for it is lost with it."""
        self.up.discard(name)
        self.inbox.pop(name, None)

    def frames_in_flight(self) -> list[tuple[str, str, bytes]]:
        """(from, to, data) of every frame sent and not delivered yet, in no special order."""
        return [(src, dst, data) for _due, _serial, src, dst, data in self._queue]

    def pending_for(self, dst: str) -> bool:
        return bool(self.inbox.get(dst))


def group(name: str) -> str:
    """ "a:clients" -> "a" (an agent's two endpoints), "@p3.2" -> "@p3" (a client's sockets)."""
    return name.split(":", 1)[0].split(".", 1)[0]


class SimClock:
    def __init__(self, net: SimNet, skew_ms: list[int]) -> None:
        self.net = net
        self._skew_ms = skew_ms  # shared with the schedule: [current skew]

    def monotonic(self) -> float:
        return self.net.now_ms / 1000.0

    def wall_ms(self) -> int:
        return EPOCH_MS + self.net.now_ms + self._skew_ms[0]


class SimPeerPort:
    def __init__(self, net: SimNet, node_id: str, drops: DropCounter, disk: SimDisk) -> None:
        self.net = net
        self.node_id = node_id
        self.drops = drops
        self.disk = disk
        self._peers: dict[str, str] = {}

    def set_peers(self, addresses: dict[str, str]) -> list[str]:
        wanted = {n: a for n, a in addresses.items() if n != self.node_id and a}
        added = sorted(n for n, a in wanted.items() if self._peers.get(n) != a)
        self._peers = wanted
        return added

    def peers(self) -> dict[str, str]:
        return dict(self._peers)

    def send(self, to: str, data: bytes) -> bool:
        unsaid = self.net.rules_unsaid
        if (
            unsaid
            and ("*" in unsaid or self.node_id in unsaid)
            and peek_kind(data) is PeerKind.RULES
        ):
            return True  # never sent (see SimNet.rules_unsaid)
        self.disk.maybe_crash("send")
        address = self._peers.get(to)
        if address is None:
            self.drops.drop("peer_send_unknown", f"no connection to {to}")
            return False
        dst = self.net.addresses.get(address)
        if dst is None or dst not in self.net.up:
            self.drops.counts["peer_send_full"] += 1  # not connected: IMMEDIATE refuses
            return False
        self.net.send(self.node_id, dst, data)
        return True

    def recv(self, bytes_max: int | None = None) -> list[tuple[str, bytes]]:
        if bytes_max is None:
            return self.net.take(self.node_id, PEER_FRAMES_PER_TURN_MAX)
        out: list[tuple[str, bytes]] = []
        taken_bytes = 0
        while len(out) < PEER_FRAMES_PER_TURN_MAX and taken_bytes < bytes_max:
            frames = self.net.take(self.node_id, 1)
            if not frames:
                break
            out.extend(frames)
            taken_bytes += len(frames[0][1])
        return out

    def retry_refused(self, now: float) -> None:
        pass  # no keys in the simulation: nobody refuses ours

    def close(self) -> None:
        self._peers = {}


class SimClientPort:
    """Client frames arrive as (identity, data); identity is b"@p<process>.<connection>"."""

    def __init__(self, net: SimNet, node_id: str) -> None:
        self.net = net
        self.node_id = node_id
        self.inbox_name = f"{node_id}:clients"
        self.connected: set[bytes] = set()  # identities that sent us something

    def send(self, identity: bytes, data: bytes) -> str:
        name = identity.decode()
        if identity not in self.connected or name not in self.net.up:
            return "gone"  # the app closed that socket (it failed over, or stopped)
        self.net.send(self.node_id, name, data)
        return "ok"

    def recv(self) -> list[tuple[bytes, bytes, str, str | None]]:
        out = []
        for src, data in self.net.take(self.inbox_name, CLIENT_FRAMES_PER_TURN_MAX):
            identity = src.encode()
            self.connected.add(identity)
            # The app's "address": its process; no keys, so every frame is allowed ("admin").
            out.append((identity, data, group(src), "admin"))
        return out

    def close(self) -> None:
        self.connected.clear()


@dataclass
class SimDisk:
    """One node's data directory and what of it is durable."""

    path: Path
    durable_image: bytes | None = None  # data.mdb at the last durable point (None: empty)
    # raftlog/'s segments (name -> bytes) at the log's last durable point.
    durable_log: dict[str, bytes] = field(default_factory=dict)
    # "sync" | "send" | "commit": raise SimCrash at the next one
    crash_armed: str | None = None
    images_taken: int = 0
    syncs: int = 0
    log: list[str] = field(default_factory=list)

    def maybe_crash(self, where: str) -> None:
        if self.crash_armed == where:
            self.crash_armed = None
            raise SimCrash(where)

    def record_durable(self) -> None:
        data_file = self.path / "data.mdb"
        self.durable_image = data_file.read_bytes() if data_file.exists() else None
        self.images_taken += 1

    def record_log_durable(self) -> None:
        """The log's segments as they are now: called after each of its flushes, and after a
        reset or compaction (whose deletions are durable at once: the folder is synced)."""
        folder = self.path / LOG_DIR
        self.durable_log = (
            {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".seg"}
            if folder.exists()
            else {}
        )

    def power_loss(self) -> None:
        """Everything since the last durable point is gone (the Server is already closed):
        LMDB's and the log's, each at its own last flush."""
        data_file = self.path / "data.mdb"
        for name in ("data.mdb", "lock.mdb"):
            (self.path / name).unlink(missing_ok=True)
        if self.durable_image is not None:
            data_file.write_bytes(self.durable_image)
        folder = self.path / LOG_DIR
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name, data in self.durable_log.items():
            (folder / name).write_bytes(data)

    def wipe(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        self.durable_image = None
        self.durable_log = {}


class SimStorage(Storage):
    """The real Storage; its syncs record the durable image and may be a crash point."""

    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk
        super().__init__(
            disk.path, fsync=True, map_bytes=SIM_MAP_BYTES, log_segment_bytes=SIM_LOG_SEGMENT_BYTES
        )
        # Opening created the named databases (and flushed what the log's scan found): that
        # much is on disk either way.
        disk.record_durable()
        disk.record_log_durable()

    def write(
        self,
        ready: Ready,
        apply_fn: Callable[[lmdb.Transaction], None] | None,
        *,
        conf: ConfState | None = None,
        conf0: ConfState | None = None,
        durable: Callable[[], None] | None = None,
    ) -> None:
        # A crash at "commit": inside the apply's write transaction, after the apply (and the
        # events it sent before the commit), before the commit: the Ready's log records were
        # kept, its apply was not.
        def apply_then_maybe_crash(txn: lmdb.Transaction) -> None:
            assert apply_fn is not None
            apply_fn(txn)
            self.disk.maybe_crash("commit")

        apply = None if apply_fn is None else apply_then_maybe_crash
        super().write(ready, apply, conf=conf, conf0=conf0, durable=durable)

    def _sync_log(self) -> None:
        # A crash here: the Ready's records are written (a process crash keeps them, a power
        # loss may not), their flush never happened, and nothing after it was done.
        self.disk.maybe_crash("sync")
        super()._sync_log()
        self.disk.record_log_durable()

    def _write_base(
        self, snapshot: SnapshotMeta | None, conf: ConfState | None, conf0: ConfState | None
    ) -> None:
        super()._write_base(snapshot, conf, conf0)
        self.disk.record_log_durable()  # a reset is durable at once

    def compact(self, upto_index: int) -> SnapshotMeta | None:
        meta = super().compact(upto_index)
        self.disk.record_log_durable()  # deleted segments are gone for good
        return meta

    def repair(self, scrubbed: Scrubbed, *, peers_exist: bool) -> str:
        done = super().repair(scrubbed, peers_exist=peers_exist)
        self.disk.record_log_durable()
        return done

    def sync(self) -> None:
        # A crash here: the transaction committed (a process crash keeps it, a power loss may
        # not), its sync never happened, and nothing after it in the Ready was done.
        self.disk.maybe_crash("sync")
        super().sync()
        self.disk.syncs += 1
        self.disk.record_durable()


def sim_root() -> Path:
    """A fresh temporary directory, on tmpfs when the machine has one (LMDB is fast there)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="superstatic-agent-sim-", dir=base))


def sim_io(
    net: SimNet, node_id: str, skew_ms: list[int], seed: int, drops: DropCounter, disk: SimDisk
) -> AgentIo:
    peers = SimPeerPort(net, node_id, drops, disk)
    clients = SimClientPort(net, node_id)

    def poll(timeout_ms: int) -> tuple[bool, bool]:  # pragma: no cover - the sim steps itself
        raise AssertionError("the simulation calls Server.step, never Server.run")

    return AgentIo(
        clock=SimClock(net, skew_ms),
        rng=random.Random(seed),
        peers=peers,
        clients=clients,
        poll=poll,
        # Unkeyed: it lets everything through and never touches the ZeroMQ context.
        auth=AgentAuth(zmq.Context.instance(), node_id, None),
        close=lambda: None,
    )
