"""The glue simulation: real agent `Server`s in a simulated world (issue 9, item 3).

The Raft core has its own simulation (sim_schedule.py); this one runs the agent's real code
ABOVE the core: the state machine with sessions and log time, proposal waiters and their
re-proposal on a leader change, refusals, joiners and their configuration, the start of a
voter with an empty data directory, ReadIndex contexts, snapshots between agents, compaction,
LMDB (real, in a temporary directory). Only the clock, the network and the disk are simulated
(agent_sim_io.py), so one seed is one deterministic run.

One schedule: 3 or 5 voters and maybe a joiner (its --peers names one contact; an operator
promotes it once it joined), simulated clients (list-append on a few keys: appends of unique
values, and linearizable reads = READ_INDEX, then INSPECT at an agent that applied that index),
and a chaos phase of network loss and delays, symmetric and one-way partitions, clients cut off
from their agent, process crashes and power losses (at random points, inside a Ready too), clock
skew and jumps per node. Clients act like the library: sessions opened by an entry, the same seq
on every retry, failover between agents, deadlines with the outcome known only when every
attempt was refused, a new session after "session_expired".

Then everything heals, the cluster must converge (liveness), and the checks run:
- every node's state machine (objects, sessions, applied index) is the same;
- at most one leader per term, ever;
- no acknowledged append lost, none applied twice, none applied after it was called failed
  (support.checker.check_acks);
- the history is linearizable (support.checker.check_events, list-append);
- every event an agent fed its streams (before its apply's commit, or after it) is the event
  the cluster applied at that index: what an app is told is never taken back, by a crash or a
  power loss inside a Ready either (docs/agent.md, "Events before the apply's commit").
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent_sim_io import SimCrash, SimDisk, SimNet, SimStorage, sim_io, sim_root
from superstatic_agent.config import AgentConfig
from superstatic_agent.raft.types import Role
from superstatic_agent.rules import RULES_NEWEST
from superstatic_agent.server import DataLost, Server
from superstatic_agent.statemachine import SM_META_KEYS, Applied
from superstatic_agent.storage import Trimmed
from superstatic_agent.transport import DropCounter
from superstatic_bench.loadgen import root_oid, txn_create_roots
from support.checker import (
    LIST_APPEND,
    Recorder,
    Result,
    check_acks,
    check_events,
    describe_acks,
    describe_verdict,
)

from superstatic.protocol import ops, wire
from superstatic.protocol.errors import ProtocolError

VOTER_IDS = "abcde"
JOINER_ID = "j"
TICK_MS = 10
ELECTION_TICKS = 10  # 100-200 ms: simulated time is cheap, but steps are not
HEARTBEAT_TICKS = 2
SESSION_TTL_MS = 3_000
LOG_TIME_SKEW_MS_MAX = 300  # a tenth of the ttl (the most the agent allows)
TIMEOUT_MS_PROPOSAL = 3_000
TIMEOUT_MS_READ = 2_000
TIMEOUT_MS_PROBE = 1_000
# Clients (the library's defaults, scaled to the simulated cluster's timeouts).
CLIENT_RESEND_MS = 700  # no answer from a live agent: the same seq again, to it
CLIENT_PING_MS = 100  # liveness of the agent
CLIENT_SILENCE_MS = 400  # nothing at all from the agent this long: the next one
CLIENT_REFUSING_MS = 400  # only refusals this long: the next one
# An operation's deadline (chosen per schedule); the longer ones outlast a session's ttl.
CLIENT_OP_TIMEOUTS_MS = (800, 1_500, 4_000, 8_000)
CLIENT_BACKOFF_MS = (10, 200)
CLIENT_INSPECT_RETRY_MS = 20
CLIENT_THINK_MS = (0, 60)
CLIENT_KEEPALIVE_MS = SESSION_TTL_MS // 3
# After the chaos: how long the cluster gets to converge, and in-flight operations to finish.
SETTLE_MS_MAX = 30_000
# Steps one node may take in one simulated millisecond while it has work (a Ready after a
# Ready): the real loop spins without waiting then.
STEPS_PER_MS_MAX = 8
# Linearizability search budget per schedule (the checker gives up with UNKNOWN past it).
CHECK_TIMEOUT_S = 20.0
# A crash armed at a sync or a send fires within this many steps, else it happens between steps.
CRASH_ARMED_STEPS_MAX = 50


def sim_address(node_id: str) -> str:
    """A peer endpoint as the codec accepts one; the simulated network maps it to the node."""
    return f"tcp://sim-{node_id}:7400"


@contextlib.contextmanager
def quiet_agents() -> Iterator[None]:
    """The agents' log lines (drops, elections) are noise across thousands of schedules; set
    SUPERSTATIC_AGENT_SIM_LOG=info to see them. The level is restored afterwards: other tests
    in the same process read the agent's log lines."""
    logger = logging.getLogger("superstatic.agent")
    saved = logger.level
    level = os.environ.get("SUPERSTATIC_AGENT_SIM_LOG", "error").upper()
    logger.setLevel(getattr(logging, level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(saved)


class SimFailure(AssertionError):
    def __init__(self, seed: int, message: str) -> None:
        super().__init__(
            f"glue simulation seed {seed}: {message}\n"
            f"rerun: SUPERSTATIC_AGENT_SIM_SEED={seed} .venv/bin/pytest tests/sim/test_agent_sim.py"
        )
        self.seed = seed


@dataclass
class SimParams:
    seed: int
    voters: int = 3
    joiner: bool = False
    clients: int = 3
    keys: int = 2
    chaos_ms: int = 6_000
    loss: float = 0.0
    delay_ms: tuple[int, int] = (1, 5)
    fault_gap_ms: tuple[int, int] = (150, 700)
    crashes: bool = True
    power_loss: bool = True
    partitions: bool = True
    skew: bool = True
    log_retain_entries: int = 60
    # The catch-up lag rule (docs/data-model-v2.md section 10): low limits send a restarted
    # follower a peer snapshot (an install, a table flip) while the leader's log holds all.
    snapshot_lag_entries_max: int = 10_000
    snapshot_lag_bytes_max: int = 4 << 20
    op_timeout_ms: int = 4_000
    joiner_at_ms: int | None = None  # None: a random time in the chaos
    election_ticks: int = ELECTION_TICKS
    # Directed tests: a hook called every simulated millisecond of the chaos phase.
    script: Callable[[World, int], None] | None = None
    # Every agent's --rules-max (agent/rules.py): 1 replays a schedule under the rules before
    # versions (no "rules" entry, no RULES frame: the course the code before versions took).
    rules_max: int = RULES_NEWEST
    # False: no agent sends a RULES frame (with rules_max 1: exactly the frames, and so the
    # course, of agents older than rules versions; an agent at its cap still tells a new
    # leader once, which moves a seed's course).
    rules_frames: bool = True

    @staticmethod
    def random(seed: int, chaos_ms: int = 6_000) -> SimParams:
        rng = random.Random(seed * 7919 + 17)
        # Its own generator: the draws above stay what they were for every seed.
        lag_entries_max, lag_bytes_max = random.Random(seed ^ 0x1A6).choice(
            ((10_000, 4 << 20), (4, 4 << 20), (16, 256), (10_000, 128))
        )
        return SimParams(
            snapshot_lag_entries_max=lag_entries_max,
            snapshot_lag_bytes_max=lag_bytes_max,
            seed=seed,
            voters=rng.choice((3, 3, 5)),
            joiner=rng.random() < 0.5,
            clients=rng.randint(2, 4),
            keys=rng.randint(1, 3),
            chaos_ms=chaos_ms,
            loss=rng.choice((0.0, 0.0, 0.02, 0.1)),
            delay_ms=rng.choice(((1, 3), (1, 5), (1, 10), (2, 30))),
            fault_gap_ms=rng.choice(((100, 400), (200, 900), (400, 1500))),
            crashes=rng.random() < 0.8,
            power_loss=rng.random() < 0.7,
            partitions=rng.random() < 0.8,
            skew=rng.random() < 0.7,
            log_retain_entries=rng.choice((30, 60, 100_000)),
            op_timeout_ms=rng.choice(CLIENT_OP_TIMEOUTS_MS),
        )


@dataclass
class Outcome:
    seed: int
    ops: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0, "info": 0})
    crashes: int = 0
    power_losses: int = 0
    leaders: int = 0
    sessions_expired: int = 0
    snapshots_installed: int = 0  # peer snapshots installed, summed over every agent's life
    faults: dict[str, int] = field(default_factory=dict)
    simulated_ms: int = 0
    wall_s: float = 0.0
    linearizable: str = ""


# ------------------------------------------------------------------------------------ nodes


class SimNode:
    """One agent: its disk outlives its Server, which a crash discards."""

    def __init__(self, world: World, node_id: str, peers: dict[str, str], listen: str) -> None:
        self.world = world
        self.id = node_id
        self.address = listen or peers[node_id]
        self.config = AgentConfig(
            node_id=node_id,
            data_dir=world.root / node_id,
            peers=peers,
            client_endpoint=f"sim-client://{node_id}",
            listen_endpoint=listen,
            tick_ms=TICK_MS,
            election_ticks=world.params.election_ticks,
            heartbeat_ticks=HEARTBEAT_TICKS,
            session_ttl_ms=SESSION_TTL_MS,
            log_time_skew_ms_max=LOG_TIME_SKEW_MS_MAX,
            log_retain_entries=world.params.log_retain_entries,
            snapshot_lag_entries_max=world.params.snapshot_lag_entries_max,
            snapshot_lag_bytes_max=world.params.snapshot_lag_bytes_max,
            timeout_ms_proposal=TIMEOUT_MS_PROPOSAL,
            timeout_ms_read=TIMEOUT_MS_READ,
            timeout_ms_probe=TIMEOUT_MS_PROBE,
            map_bytes=64 << 20,
            rules_max=world.params.rules_max,
            # The simulated endpoints are not loopback; nothing is bound (no --keys needed).
            insecure=True,
        )
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.disk = SimDisk(self.config.data_dir)
        self.skew = [0]
        self.drops = DropCounter()
        self.server: Server | None = None
        self.refused: str | None = None  # DataLost: the agent would not start
        self.starts = 0
        self.paused_until = 0  # SIGSTOP: frames queue for it, it does nothing

    @property
    def up(self) -> bool:
        return self.server is not None

    def start(self) -> None:
        assert self.server is None
        net = self.world.net
        self.starts += 1
        io = sim_io(
            net,
            self.id,
            self.skew,
            self.world.params.seed * 1009 + self.starts * 31 + ord(self.id[0]),
            self.drops,
            self.disk,
        )
        net.up.update((self.id, f"{self.id}:clients"))
        net.addresses[self.address] = self.id
        self.server = Server(self.config, io=io, drops=self.drops, storage=SimStorage(self.disk))
        self._note_events(self.server)

    def _note_events(self, server: Server) -> None:
        """Every event the streams are fed, as `World.told` (the sim's clients do not
        subscribe: what a subscriber would be sent is what the streams record)."""
        streams = server.streams
        record = streams.record_events
        told = self.world.told

        def recording(results: list[Applied]) -> None:
            record(results)
            for applied in results:
                told.setdefault(applied.index, {}).setdefault(event_of(applied), self.id)

        streams.record_events = recording  # type: ignore[method-assign]

    def crash(self, power_loss: bool) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        self.disk.crash_armed = None
        net = self.world.net
        net.go_down(self.id)
        net.go_down(f"{self.id}:clients")
        # A process crash: what was committed stays. The env of a crashed Server may be half
        # used (a read transaction of a stream, say): closing it is all that matters.
        with contextlib.suppress(Exception):
            server.storage.close()
        self.world.outcome.crashes += 1
        self.world.outcome.snapshots_installed += server.counters["snapshots_installed"]
        if power_loss:
            self.disk.power_loss()
            self.world.outcome.power_losses += 1

    def step(self) -> None:
        server = self.server
        assert server is not None
        try:
            server.step()
        except SimCrash:
            self.crash(power_loss=self.world.rng.random() < 0.5 and self.world.params.power_loss)
        except DataLost as exc:
            self.refused = str(exc)
            self.crash(power_loss=False)

    def busy(self) -> bool:
        server = self.server
        return server is not None and server.wake_at() == 0.0


# ---------------------------------------------------------------------------------- clients


@dataclass
class Op:
    f: str  # "append" | "read" | "setup"
    key: str
    value: Any
    deadline_ms: int
    seq: int = 0
    unresolved: set[int] = field(default_factory=set)
    send_at_ms: int = 0
    sent_at_ms: int = -1
    refusals: int = 0
    read_index: int = -1  # reads: the ReadIndex answer, then INSPECTs until applied >= it


class SimClient:
    """A process using the cluster the way the library does (superstatic/client/connection.py),
    one operation at a time, recorded for the checker."""

    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.process = index
        self.rng = random.Random(world.params.seed * 131 + index)
        self.client_id = f"{self.rng.getrandbits(128):032x}"
        self.node_index = self.rng.randrange(len(world.voter_ids))
        self.connections = itertools.count(1)
        self.identity = ""
        self.req_ids = itertools.count(1)
        self.seq_next = 1
        self.session = 0
        self.opening: Op | None = None
        self.sent: dict[int, tuple[str, Op, int]] = {}  # req id -> (what, op, session)
        self.op: Op | None = None
        self.next_op_ms = self.rng.randint(*CLIENT_THINK_MS)
        self.last_propose_ms = 0
        self.values = itertools.count(1)
        self.last_rx_ms = 0
        self.last_ping_ms = 0
        # The index of the last entry of our session the cluster answered (its open, a
        # write): SESSION_TTL_MS of log time past it, the session may expire for want of use.
        self.session_alive_index = 0
        self.expired_unused = False  # the expiry being handled came of that (unused_too_long)
        self.refusing_since: int | None = None
        self.paused_until = 0  # a paused process (a long GC, SIGSTOP): it does nothing
        self.reconnect_after_pause = False  # its connection broke meanwhile
        self.pause_after_send_ms = 0  # pause this long right after the next write goes out
        self.stopped = False
        self.pinned: str | None = None  # talks to this agent only (a single endpoint)
        # Directed tests: called after each write attempt goes out.
        self.on_write_sent: Callable[[SimClient, Op, int], None] | None = None
        self.setup_done = index != 0  # process 0 creates the roots first
        self.connect()

    @property
    def name(self) -> str:
        return f"@p{self.process}"

    def connect(self) -> None:
        net = self.world.net
        if self.identity:
            net.go_down(self.identity)  # the old socket is closed: late answers are lost
        self.identity = f"{self.name}.{next(self.connections)}"
        net.up.add(self.identity)
        self.sent.clear()
        self.last_rx_ms = net.now_ms
        self.refusing_since = None
        # Like the library after a failover: everything unanswered goes out again, same seq.
        for op in (self.opening, self.op):
            if op is not None:
                op.sent_at_ms = -1
                op.send_at_ms = net.now_ms

    def failover(self) -> None:
        members = self.world.member_ids()
        if self.pinned is None:
            self.node_index = (self.node_index + 1) % len(members)
        self.connect()

    def agent(self) -> str:
        members = self.world.member_ids()
        return members[self.node_index % len(members)]

    def send(self, frame_type: wire.FrameType, body: dict[str, Any], what: str, op: Op) -> int:
        req_id = next(self.req_ids)
        data = wire.encode(frame_type, req_id, body)
        self.world.net.send(self.identity, f"{self.agent()}:clients", data)
        self.sent[req_id] = (what, op, self.session)
        return req_id

    # -- operations ----------------------------------------------------------------------

    def start_op(self, now: int) -> None:
        world = self.world
        deadline = now + world.params.op_timeout_ms
        if not self.setup_done:
            # Its own oids (rules 3 binds an oid to its creator); the others append to them.
            body = txn_create_roots({key: "list" for key in world.keys}, self.client_id)
            world.root_oids = {key: root_oid(key) for key in world.keys}
            self.op = Op("setup", "", body, deadline_ms=10**12, seq=self.take_seq())
            return
        key = self.rng.choice(world.keys)
        if self.rng.random() < 0.65:
            value = self.process * 1_000_000 + next(self.values)
            self.op = Op("append", key, value, deadline, seq=self.take_seq())
            world.recorder.invoke(self.process, "append", key, value)
        else:
            self.op = Op("read", key, None, deadline)
            world.recorder.invoke(self.process, "read", key)

    def take_seq(self) -> int:
        seq = self.seq_next
        self.seq_next += 1
        return seq

    def finish(self, status: str, value: Any = None, error: str = "") -> None:
        op = self.op
        assert op is not None
        self.op = None
        for req_id in [r for r, (_, o, _) in self.sent.items() if o is op]:
            del self.sent[req_id]
        now = self.world.net.now_ms
        self.next_op_ms = now + self.rng.randint(*CLIENT_THINK_MS)
        if op.f == "setup":
            assert status == "ok", f"roots not created: {error}"
            self.setup_done = True
            return
        self.world.outcome.ops[status] += 1
        recorder = self.world.recorder
        if status == "ok":
            if op.f == "read":
                recorder.ok(self.process, tuple(value))
            else:
                recorder.ok(self.process)
        elif status == "fail":
            recorder.fail(self.process, error or None)
        else:
            recorder.info(self.process, error or None)

    def seq_low(self) -> int:
        low = self.seq_next
        for op in (self.op, self.opening):
            if op is not None and op.seq:
                low = min(low, op.seq)
        return low

    # -- the loop ------------------------------------------------------------------------

    def step(self, now: int) -> None:
        if now < self.paused_until:
            return
        if self.paused_until:
            self.paused_until = 0
            if self.reconnect_after_pause:
                # The connection broke during the pause: answers on their way are lost, and
                # everything unanswered goes out again (same seq) through the next agent.
                self.reconnect_after_pause = False
                self.failover()
        for _src, data in self.world.net.take(self.identity, 10_000):
            self.last_rx_ms = now
            try:
                frame = wire.decode(data, wire.AGENT_TO_CLIENT)
            except ProtocolError as exc:
                raise AssertionError(f"an agent sent a bad frame: {exc}") from None
            self.on_frame(frame, now)
        # Leave the agent when it is silent (down, paused, cut off) or only refuses (a
        # minority side), like the library; otherwise stay and resend to it.
        if now - self.last_rx_ms > CLIENT_SILENCE_MS or (
            self.refusing_since is not None and now - self.refusing_since > CLIENT_REFUSING_MS
        ):
            self.failover()
        if now - self.last_ping_ms >= CLIENT_PING_MS:
            self.last_ping_ms = now
            data = wire.encode(wire.FrameType.PING, next(self.req_ids), {})
            self.world.net.send(self.identity, f"{self.agent()}:clients", data)
        ready = self.setup_done and self.world.clients[0].setup_done
        if (
            self.op is None
            and not self.stopped
            and now >= self.next_op_ms
            and (ready or not self.setup_done)
        ):
            self.start_op(now)
        self.tend_opening(now)
        op = self.op
        if op is not None and op.f != "setup" and now >= op.deadline_ms:
            self.expire(op)
            op = None
        if op is None:
            idle_ms = now - self.last_propose_ms
            if (
                self.session
                and self.opening is None
                and not self.stopped
                and idle_ms >= CLIENT_KEEPALIVE_MS
            ):
                deadline = now + CLIENT_RESEND_MS * 4
                self.opening = Op("keepalive", "", None, deadline, self.take_seq())
                self.opening.send_at_ms = now
            return
        if op.sent_at_ms >= 0 and now - op.sent_at_ms >= CLIENT_RESEND_MS:
            op.sent_at_ms = -1  # no answer from a live agent: the same seq again
            op.send_at_ms = now
        if now >= op.send_at_ms and op.sent_at_ms < 0:
            self.send_op(op, now)

    def tend_opening(self, now: int) -> None:
        """The session's own entry in flight (an open, or a keep-alive): sent when due, sent
        again through the next agent when unanswered, dropped past its deadline (an open is
        made again by the next write that needs it)."""
        opening = self.opening
        if opening is None:
            return
        if now >= opening.deadline_ms:
            self.opening = None
            return
        if opening.sent_at_ms >= 0 and now - opening.sent_at_ms >= CLIENT_RESEND_MS:
            opening.sent_at_ms = -1
            opening.send_at_ms = now
        if opening.sent_at_ms < 0 and now >= opening.send_at_ms:
            self.send_op(opening, now)

    def send_op(self, op: Op, now: int) -> None:
        if op.f in ("append", "setup") and self.session == 0:
            if self.opening is None or self.opening.f == "keepalive":
                deadline = now + CLIENT_RESEND_MS * 4
                self.opening = Op("open", "", None, deadline, self.take_seq())
                self.opening.send_at_ms = now
                self.tend_opening(now)
            op.send_at_ms = now + CLIENT_BACKOFF_MS[0]
            return
        op.sent_at_ms = now
        if op.f in ("append", "setup", "open", "keepalive"):
            if op.f == "append":
                body = ops.encode_txn({}, [["extend", self.world.root_oids[op.key], [op.value]]])
            else:
                body = op.value
            kind = {"open": "open", "keepalive": "open"}.get(op.f, "txn")
            propose = {
                "client": self.client_id,
                "seq": op.seq,
                "seq_low": self.seq_low(),
                "kind": kind,
                "body": body if kind == "txn" else b"",
                "session": 0 if op.f == "open" else self.session,
            }
            req_id = self.send(wire.FrameType.PROPOSE, propose, op.f, op)
            op.unresolved.add(req_id)
            self.last_propose_ms = now
            if self.on_write_sent is not None and op.f == "append":
                self.on_write_sent(self, op, now)
            if self.pause_after_send_ms and op.f == "append":
                # The write is out and the process stops: its answer may be lost with the
                # connection, and its resend comes after the session may have expired.
                self.paused_until = now + self.pause_after_send_ms
                self.pause_after_send_ms = 0
        elif op.read_index < 0:
            self.send(wire.FrameType.READ_INDEX, {}, "read_index", op)
        else:
            self.send(wire.FrameType.INSPECT, {"root": op.key}, "inspect", op)

    def on_frame(self, frame: wire.Frame, now: int) -> None:
        sent = self.sent.pop(frame.req_id, None)
        if sent is None:
            return  # a PING answer, or an answer to an attempt already settled
        what, op, session = sent
        refused = frame.type is wire.FrameType.ERROR
        if not refused:
            self.refusing_since = None
        elif self.refusing_since is None:
            self.refusing_since = now
        if op is not self.op and op is not self.opening:
            return
        op.sent_at_ms = -1
        body = frame.body
        if frame.type is wire.FrameType.ERROR:
            self.on_error(what, op, frame.req_id, body, now)
        elif what in ("open", "keepalive"):
            self.on_session_reply(op, frame.req_id, body, now)
        elif what in ("append", "setup"):
            self.on_write_reply(op, frame.req_id, session, body, now)
        elif what == "read_index":
            op.read_index = int(body["index"])
            op.send_at_ms = now
        else:
            if body["applied"] < op.read_index:
                op.send_at_ms = now + CLIENT_INSPECT_RETRY_MS  # not caught up yet
            elif not body["found"]:
                raise AssertionError(f"root {op.key} missing at {self.agent()}: {body}")
            else:
                self.finish("ok", body["value"])

    def on_error(self, what: str, op: Op, req_id: int, body: dict[str, Any], now: int) -> None:
        code = body.get("code")
        if code in (wire.ErrorCode.NOT_LEADER, wire.ErrorCode.BUSY):
            op.unresolved.discard(req_id)  # refused before it reached the core
        if code in (wire.ErrorCode.NOT_LEADER, wire.ErrorCode.BUSY, wire.ErrorCode.UNAVAILABLE):
            op.refusals += 1
            if what == "inspect" or what == "read_index":
                op.read_index = -1
            op.send_at_ms = now + self.rng.randint(*CLIENT_BACKOFF_MS)
            return
        raise AssertionError(f"{what} refused by {self.agent()}: {body}")

    def on_session_reply(self, op: Op, req_id: int, body: dict[str, Any], now: int) -> None:
        op.unresolved.discard(req_id)
        self.opening = None
        outcome = body["outcome"]
        if op.f == "open":
            assert outcome in ("ok", "dup"), body
            self.session = self.session_alive_index = body["index"]
        elif outcome != "session_expired":
            self.session_alive_index = max(self.session_alive_index, body["index"])
        elif outcome == "session_expired":
            self.session_expired(now)

    def on_write_reply(
        self, op: Op, req_id: int, session: int, body: dict[str, Any], now: int
    ) -> None:
        outcome = body["outcome"]
        if outcome != "session_expired" and session == self.session:
            self.session_alive_index = max(self.session_alive_index, body["index"])
        if outcome == "session_expired":
            op.unresolved.discard(req_id)  # the state machine refused this attempt
            if session != self.session:
                op.send_at_ms = now
                return
            self.expired_unused = self.unused_too_long(body["index"])
            self.session_expired(now)
            return
        if outcome == "ok":
            self.finish("ok")
        else:
            # Applied as an error (nothing changed), the same on every replica.
            assert op.f != "setup" or "already exists" in body["error"], body
            self.finish("ok" if op.f == "setup" else "fail", error=str(body["error"]))

    def unused_too_long(self, expired_index: int) -> bool:
        """True when the entry answered session_expired applied more than SESSION_TTL_MS of
        log time after the last entry of our session the cluster answered: the session
        expired for want of use, as it must (the log times every agent applied them at)."""
        told = self.world.told

        def log_time(index: int) -> int | None:
            events = told.get(index)
            return next(iter(events))[6] if events else None

        expired, alive = log_time(expired_index), log_time(self.session_alive_index)
        return expired is not None and alive is not None and expired - alive > SESSION_TTL_MS

    def session_expired(self, now: int) -> None:
        """Like the library: a write with an attempt that may have applied is outcome-unknown;
        one that never reached a log goes out in the new session."""
        self.world.outcome.sessions_expired += 1
        self.session = 0
        self.opening = None
        op = self.op
        if op is not None and op.f in ("append", "setup"):
            unused, self.expired_unused = self.expired_unused, False
            if op.f == "setup" and op.unresolved and unused:
                # Cut off (or its attempts lost) longer than a session lives: the session
                # expired for want of use, as it must. The setup goes out again in a new
                # session ("already exists" if an earlier attempt applied). An expiry sooner
                # than that is a bug (glue seeds 152, 3740: a late copy of an older open
                # replaced the session 0.4 s after it opened).
                op.unresolved.clear()
                op.send_at_ms = now
            elif op.unresolved:
                assert op.f != "setup", "roots: the setup's session expired"
                self.finish("info", error="session expired")
            else:
                op.send_at_ms = now

    def expire(self, op: Op) -> None:
        if op.f == "read":
            self.finish("fail", error="read timed out")
        elif op.unresolved:
            self.finish("info", error="timed out, outcome unknown")
        else:
            self.finish("fail", error="timed out, never proposed")


# ------------------------------------------------------------------------------------ world


class Operator:
    """Promotes the joiner once it has joined (MEMBERS promote to the leader)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.identity = "@operator.1"
        self.req_ids = itertools.count(1)
        self.next_ms = 0
        self.done = False
        world.net.up.add(self.identity)

    def step(self, now: int) -> None:
        world = self.world
        for _src, data in world.net.take(self.identity, 1_000):
            frame = wire.decode(data, wire.AGENT_TO_CLIENT)
            if frame.type is wire.FrameType.REPLY or "already a voter" in str(
                frame.body.get("message", "")
            ):
                self.done = True
        if self.done or now < self.next_ms:
            return
        self.next_ms = now + 300
        leader = world.leader()
        if leader is None or JOINER_ID not in world.nodes:
            return
        body = {"op": "promote", "node": JOINER_ID}
        data = wire.encode(wire.FrameType.MEMBERS, next(self.req_ids), body)
        world.net.send(self.identity, f"{leader}:clients", data)


class World:
    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.rng = random.Random(params.seed)
        self.net = SimNet(random.Random(params.seed * 3 + 1))
        if not params.rules_frames:
            self.net.rules_unsaid.add("*")
        self.net.loss = 0.0
        self.net.delay_ms = params.delay_ms
        self.root = sim_root()
        self.voter_ids = list(VOTER_IDS[: params.voters])
        peers = {v: sim_address(v) for v in self.voter_ids}
        self.nodes: dict[str, SimNode] = {v: SimNode(self, v, peers, "") for v in self.voter_ids}
        self.keys = [f"k{i}" for i in range(params.keys)]
        self.root_oids: dict[str, str] = {}  # each key's list node, once process 0 made it
        self.outcome = Outcome(params.seed)
        self.recorder = Recorder(clock=lambda: self.net.now_ms)
        self.clients = [SimClient(self, i) for i in range(params.clients)]
        self.operator = Operator(self) if params.joiner else None
        self.leaders: dict[int, str] = {}  # term -> the one leader it ever had
        # index -> every distinct event the agents' streams were fed there -> an agent that was.
        self.told: dict[int, dict[tuple[Any, ...], str]] = {}
        self.commit_rng = random.Random(params.seed * 7 + 3)
        self.restart_at: dict[str, int] = {}
        self.heal_at: list[tuple[int, Callable[[], None]]] = []
        self.joiner_at = params.joiner_at_ms
        if self.joiner_at is None:
            self.joiner_at = self.rng.randint(500, max(600, params.chaos_ms // 2))
        self.next_fault_ms = self.rng.randint(*params.fault_gap_ms)

    def member_ids(self) -> list[str]:
        return list(self.nodes)

    def leader(self) -> str | None:
        best: tuple[int, str] | None = None
        for node in self.nodes.values():
            server = node.server
            if (
                server is not None
                and server.node.role is Role.LEADER
                and (best is None or server.node.term > best[0])
            ):
                best = (server.node.term, node.id)
        return None if best is None else best[1]

    def close(self) -> None:
        for node in self.nodes.values():
            if node.server is not None:
                server = node.server
                node.server = None
                with contextlib.suppress(Exception):
                    server.storage.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """One simulated millisecond."""
        net = self.net
        net.now_ms = now
        net.deliver_due()
        for node in list(self.nodes.values()):
            if node.server is None:
                due = self.restart_at.get(node.id)
                if due is not None and now >= due and node.refused is None:
                    del self.restart_at[node.id]
                    node.start()
                continue
            if now >= node.paused_until:
                self.step_node(node, now)
        for client in self.clients:
            client.step(now)
        if self.operator is not None:
            self.operator.step(now)
        self.check_leaders()

    def step_node(self, node: SimNode, now: int) -> None:
        server = node.server
        assert server is not None
        wake_ms = server.wake_at() * 1000
        if (
            wake_ms > now
            and not self.net.pending_for(node.id)
            and not self.net.pending_for(f"{node.id}:clients")
        ):
            return
        for _ in range(STEPS_PER_MS_MAX):
            node.step()
            if node.server is None or not node.busy():
                break
            if node.server.stopping:
                break

    def check_leaders(self) -> None:
        for node in self.nodes.values():
            server = node.server
            if server is None or server.node.role is not Role.LEADER:
                continue
            term = server.node.term
            other = self.leaders.setdefault(term, node.id)
            if other != node.id:
                message = f"two leaders in term {term}: {other}, {node.id}"
                raise SimFailure(self.params.seed, message)

    # -- faults --------------------------------------------------------------------------

    def chaos(self, now: int) -> None:
        params = self.params
        for due, undo in list(self.heal_at):
            if now >= due:
                self.heal_at.remove((due, undo))
                undo()
        if params.joiner and JOINER_ID not in self.nodes and now >= self.joiner_at:
            self.add_joiner()
        if now < self.next_fault_ms:
            return
        self.next_fault_ms = now + self.rng.randint(*params.fault_gap_ms)
        rng = self.rng
        choices: list[Callable[[int], None]] = [self.fault_loss]
        if params.crashes:
            choices += [self.fault_crash, self.fault_crash, self.fault_pause]
        if params.partitions:
            choices += [self.fault_partition, self.fault_one_way, self.fault_client_cut]
            choices += [self.fault_client_pause]
        if params.skew:
            choices += [self.fault_skew]
        fault = rng.choice(choices)
        name = fault.__name__.removeprefix("fault_")
        self.outcome.faults[name] = self.outcome.faults.get(name, 0) + 1
        fault(now)

    def add_joiner(self, contact: str | None = None) -> None:
        """Starts the joiner, its --peers naming one contact (a natural thing to type)."""
        if contact is None:
            contact = self.rng.choice(self.voter_ids)
        peers = {contact: sim_address(contact)}
        node = SimNode(self, JOINER_ID, peers, sim_address(JOINER_ID))
        self.nodes[JOINER_ID] = node
        node.start()

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.server is not None]

    def fault_loss(self, now: int) -> None:
        self.net.loss = self.rng.choice((0.0, 0.01, 0.05, self.params.loss))

    def fault_crash(self, now: int) -> None:
        live = self.live()
        # At most a minority down at once, so the cluster keeps making progress.
        down = len(self.nodes) - len(live)
        if not live or down + 1 > (len(self.voter_ids) - 1) // 2:
            return
        node = self.rng.choice(live)
        power = self.params.power_loss and self.rng.random() < 0.5
        where = self.rng.choice(("now", "sync", "send"))
        if where == "sync" and self.commit_rng.random() < 0.5:
            # Before the commit instead of after it (a generator of its own: the schedules
            # the seeds named before this crash point stay as they were up to here).
            where = "commit"
        if where == "now":
            node.crash(power)
        else:
            # Inside the node's next Ready that syncs or sends; if none comes soon, now.
            node.disk.crash_armed = where

            def fallback() -> None:
                if node.disk.crash_armed is not None:
                    node.crash(power)

            self.heal_at.append((now + CRASH_ARMED_STEPS_MAX, fallback))
        self.restart_at[node.id] = now + self.rng.randint(50, 1_500)

    def fault_pause(self, now: int) -> None:
        """SIGSTOP: the node's frames queue up and it does nothing, then it resumes."""
        node = self.rng.choice(list(self.nodes.values()))
        node.paused_until = now + self.rng.randint(100, 2_000)

    def fault_partition(self, now: int) -> None:
        ids = list(self.nodes)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, max(1, len(ids) // 2))
        side, rest = ids[:cut], ids[cut:]
        pairs = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
        self.block(pairs, now + self.rng.randint(100, 2_000))

    def fault_one_way(self, now: int) -> None:
        ids = list(self.nodes)
        a, b = self.rng.sample(ids, 2)
        self.block({(a, b)}, now + self.rng.randint(100, 2_000))

    def fault_client_cut(self, now: int) -> None:
        """A client cut off from its agent (it fails over), or from all of them for long
        enough, sometimes, that its session expires on the cluster."""
        client = self.rng.choice(self.clients)
        nodes = [client.agent()] if self.rng.random() < 0.5 else list(self.nodes)
        span = self.rng.choice((300, 1_500, SESSION_TTL_MS * 2))
        pairs = {(client.name, n) for n in nodes} | {(n, client.name) for n in nodes}
        self.block(pairs, now + span)

    def fault_client_pause(self, now: int) -> None:
        """A client process stops (a long GC pause): sometimes past its session's ttl, which
        expires it on the cluster; its resends then meet "session_expired"."""
        client = self.rng.choice(self.clients)
        span = self.rng.choice((200, 800, SESSION_TTL_MS + 500, 2 * SESSION_TTL_MS))
        if self.rng.random() < 0.5:
            client.paused_until = now + span
        else:
            client.pause_after_send_ms = span
        client.reconnect_after_pause = self.rng.random() < 0.5
        client.last_rx_ms = client.paused_until  # its own pause is not the agent's silence

    def block(self, pairs: set[tuple[str, str]], until: int) -> None:
        fresh = pairs - self.net.blocked
        self.net.blocked |= fresh
        self.heal_at.append((until, lambda: self.net.blocked.difference_update(fresh)))

    def fault_skew(self, now: int) -> None:
        node = self.rng.choice(list(self.nodes.values()))
        if self.rng.random() < 0.5:
            node.skew[0] = self.rng.randint(-10 * SESSION_TTL_MS, 10 * SESSION_TTL_MS)
        else:
            node.skew[0] += self.rng.choice((-1, 1)) * self.rng.randint(1, 20 * SESSION_TTL_MS)

    def heal(self, now: int) -> None:
        for _due, undo in list(self.heal_at):
            undo()
        self.heal_at.clear()
        self.net.blocked.clear()
        self.net.loss = 0.0
        for node in self.nodes.values():
            node.disk.crash_armed = None
            node.paused_until = 0
            if node.server is None and node.refused is None:
                self.restart_at[node.id] = now

    # -- the end -------------------------------------------------------------------------

    def converged(self) -> bool:
        if any(c.op is not None or c.opening is not None for c in self.clients):
            return False
        leader = self.leader()
        if leader is None:
            return False
        lead = self.nodes[leader].server
        assert lead is not None
        commit = lead.node.commit
        if lead.node.last_index != commit or lead.applied != commit:
            return False
        members = lead.node.conf.members()
        for member in members:
            node = self.nodes.get(member)
            if node is None or node.server is None or node.server.applied != commit:
                return False
        return True


def node_state(server: Server) -> dict[str, dict[bytes, bytes]]:
    """The state machine's tables, raw: equal on every replica at the same applied index."""
    env = server.storage.env
    dbs = server.storage.dbs
    out: dict[str, dict[bytes, bytes]] = {}
    with env.begin() as txn:
        tables = ("oids", "nodes", "entries", "order", "chunks", "tombs", "sessions", "oid_marks")
        for name in tables:
            out[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=getattr(dbs, name))}
        # The state machine's sm_meta scalars too (the applied index, the rules version, the
        # sweep and tombstone marks, the last CONF): replicated state like the tables
        # (review 28: a rules version apart went unseen here).
        out["sm_meta"] = {}
        for key in SM_META_KEYS:
            value = txn.get(key, db=dbs.sm_meta)
            out["sm_meta"][key] = bytes(value) if value is not None else b""
    return out


def run_schedule(params: SimParams) -> Outcome:
    with quiet_agents():
        return _run_schedule(params)


def _run_schedule(params: SimParams) -> Outcome:
    started = time.perf_counter()
    world = World(params)
    try:
        for node in world.nodes.values():
            node.start()
        now = 0
        end_chaos = params.chaos_ms
        while now < end_chaos:
            now += 1
            world.chaos(now)
            if params.script is not None:
                params.script(world, now)
            world.tick(now)
        world.heal(now)
        for client in world.clients:
            client.stopped = True
        settle_end = now + SETTLE_MS_MAX
        while not world.converged():
            now += 1
            if now > settle_end:
                raise SimFailure(params.seed, describe_stuck(world))
            world.tick(now)
        return finish(world, now, started)
    finally:
        world.close()


def describe_stuck(world: World) -> str:
    lines = [f"no convergence within {SETTLE_MS_MAX} ms after healing"]
    for node in world.nodes.values():
        server = node.server
        if server is None:
            lines.append(f"  {node.id}: down (refused: {node.refused})")
            continue
        n = server.node
        lines.append(
            f"  {node.id}: {n.role.name} term {n.term} leader {n.leader} commit {n.commit} "
            f"last {n.last_index} applied {server.applied} voters {n.conf.voters} "
            f"learners {n.conf.learners} drops {server.drops.snapshot()}"
        )
    for client in world.clients:
        lines.append(f"  {client.name}: op {client.op} opening {client.opening}")
    return "\n".join(lines)


def finish(world: World, now: int, started: float) -> Outcome:
    params, outcome = world.params, world.outcome
    seed = params.seed
    leader = world.leader()
    assert leader is not None
    lead = world.nodes[leader].server
    assert lead is not None
    reference = node_state(lead)
    for member in lead.node.conf.members():
        server = world.nodes[member].server
        assert server is not None
        if node_state(server) != reference:
            raise SimFailure(seed, f"{member}'s state machine differs from the leader {leader}'s")
    finals: dict[str, Any] = {}
    with lead.storage.env.begin() as txn:
        for key in world.keys:
            value = lead.sm.node_json(txn, key)
            if value is None:
                raise SimFailure(seed, f"root {key} is missing")
            finals[key] = tuple(value)
    events = world.recorder.events()
    problems = check_acks(events, LIST_APPEND, finals)
    if problems:
        raise SimFailure(seed, describe_acks(problems))
    verdict = check_events(events, LIST_APPEND, timeout_s=CHECK_TIMEOUT_S)
    if verdict.result is Result.ILLEGAL:
        raise SimFailure(seed, describe_verdict(verdict))
    outcome.linearizable = verdict.result.value
    check_told(world, lead)
    outcome.leaders = len(world.leaders)
    for node in world.nodes.values():
        if node.server is not None:
            outcome.snapshots_installed += node.server.counters["snapshots_installed"]
    outcome.simulated_ms = now
    outcome.wall_s = time.perf_counter() - started
    return outcome


def event_of(applied: Applied) -> tuple[Any, ...]:
    """An applied entry's stream event, as storage.events reads it back."""
    heads = tuple(tuple(head) for head in applied.heads)
    return (
        applied.index,
        applied.client,
        applied.seq,
        applied.outcome,
        applied.body,
        tuple(applied.collected),
        applied.log_time_ms,
        heads,
    )


def check_told(world: World, lead: Server) -> None:
    """Each index was fed to streams as one event only, the one the leader applied (read back
    from its store, unless compacted there)."""
    seed = world.params.seed
    for index, events in sorted(world.told.items()):
        if len(events) > 1:
            told = "; ".join(f"{node}: {event}" for event, node in events.items())
            raise SimFailure(seed, f"entry {index} was told as different events: {told}")
        try:
            applied = lead.storage.events(index, 1, 1 << 30)
        except Trimmed:
            continue
        ((event, node),) = events.items()
        if not applied or applied[0] != event:
            raise SimFailure(
                seed, f"{node} told entry {index} as {event}; the cluster applied {applied[:1]}"
            )


# CI runs this many seeds (about 1 s each on this machine: well under a minute in all);
# SUPERSTATIC_AGENT_SIM_SEEDS=N runs more, SUPERSTATIC_AGENT_SIM_SEED=K one.
SEEDS_DEFAULT = 30


def seeds_from_env() -> list[int]:
    one = os.environ.get("SUPERSTATIC_AGENT_SIM_SEED")
    if one:
        return [int(one)]
    return list(range(int(os.environ.get("SUPERSTATIC_AGENT_SIM_SEEDS", SEEDS_DEFAULT))))
