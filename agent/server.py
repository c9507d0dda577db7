"""The agent's loop: one thread, one zmq.Poller, a thin shell around synchronous functions.

Each turn: take what the sockets hold (peer messages are stepped into the Raft core at once,
client requests are queued), tick the core for the time that passed, hand every queued proposal
to the core in one go (group commit: one Ready, one LMDB write and its syncs, one APPEND per
follower for everything that arrived together), then drain the core's Readies: persist and apply
in one write transaction, send, answer the clients whose entries applied, advance. Streams to
subscribers, timeouts and compaction follow. See docs/agent.md for the decisions.

The subscriber streams (streams.py), snapshots between agents (shipping.py) and operators'
MEMBERS requests (membership_requests.py) live in their own modules; the Server owns one of
each, hands it what it needs, and calls it from the loop.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import signal
import time  # only for --trace stamps (real elapsed time, as agent/trace.py records)
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb
import zmq
from superstatic_agent import inspector, peer_codec, status_map
from superstatic_agent.admission import SessionAdmission
from superstatic_agent.auth import AgentAuth
from superstatic_agent.config import PEERS_MAX, AgentConfig
from superstatic_agent.logsegments import LogFailed
from superstatic_agent.logtime import LeaderStamp
from superstatic_agent.membership_requests import MembershipRequests
from superstatic_agent.observe import Observer
from superstatic_agent.payload import (
    Payload,
    encode_payload,
    is_rules,
    parse_payload,
    stamp_payload,
)
from superstatic_agent.ports import AgentIo, SystemClock
from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Dropped,
    EntryKind,
    HardState,
    Message,
    MsgType,
    ProgressState,
    RaftConfig,
    Ready,
    Role,
    SnapshotMeta,
)
from superstatic_agent.rules import RULES_FIRST, RulesTooNew, rules_payload
from superstatic_agent.rules_gate import RULES_NEW_WAIT_MS, RulesGate
from superstatic_agent.shipping import Shipping
from superstatic_agent.statemachine import Applied, ApplyFailed, StateMachine, only_removes
from superstatic_agent.storage import (
    FORMAT_OWN_LOG,
    Corrupt,
    Dbs,
    StartRefused,
    Storage,
    check_poison_marker,
    describe_damage,
    describe_key,
    read_applied,
    write_poison_marker,
)
from superstatic_agent.streams import Streams
from superstatic_agent.trace import AgentTracer
from superstatic_agent.trace import asked as trace_asked
from superstatic_agent.transport import ClientTransport, DropCounter, ListenError, PeerTransport

from superstatic.protocol import codec, ops, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

log = logging.getLogger("superstatic.agent")

# Readies handled per turn; the core produces more only while there is work, and the sockets
# must be served between bursts.
READY_PER_TURN_MAX = 64
# Ticks caught up at once after the loop stalled (a long write, a SIGSTOP): more would fire a
# burst of elections; the rest of the lost time is simply skipped.
TICKS_CATCHUP_MAX = 10
# Housekeeping (timeouts, silent subscribers, join retries) runs this often, not every turn.
HOUSEKEEPING_MS = 50
# A learner outside the configuration asks the voters to add it this often.
JOIN_RETRY_MS = 1_000
# A leader tells each member still in probe state where it is (HELLO) this often: one cut off
# while the leader joined does not list it, and could not answer it otherwise.
LEADER_HELLO_MS = 1_000
# A HELLO from another sender (or naming another address) replaces the remembered unlisted
# leader at most this often: each replacement closes a connection and dials the new address,
# so senders taking turns must cost one dial per interval, not one per frame. The real leader
# says HELLO every LEADER_HELLO_MS, so it gets its turn within about two of them.
HELLO_REPLACE_MS = 1_000
# A remembered unlisted leader that sends no APPEND, HEARTBEAT or SNAPSHOT for this long is
# forgotten and its address undialled: a real leader heartbeats us many times a second once
# it reached us, while a stranger's HELLO of a far term (or a leader deposed before it reached
# us) would keep libzmq re-dialling its address until our own term passed it. Well above the
# election timeouts, so a leader that reached us is never forgotten while it leads.
UNLISTED_LEADER_QUIET_MS = 5_000
# Raft messages a member accepts from a leader its configuration does not list yet (one that
# says HELLO): those that teach it the leader and the log, from which it learns the rest.
_FROM_UNLISTED_LEADER = frozenset({MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT})
# INSPECT root names.
ROOT_NAME_CHARS_MAX = wire.ROOT_NAME_CHARS_MAX
# A message whose term is this far above ours is not from an agent of this cluster (terms grow
# by one per election): stepping it would exhaust the 63-bit term space in one frame, after
# which no election could ever succeed. Dropped as peer_impossible.
TERM_AHEAD_MAX = 1 << 32
# A voter starting with an empty data directory asks its peers (PROBE) this often whether they
# heard from it before, until all answered or --timeout-ms-probe passed.
PROBE_RETRY_MS = 100
# Messages that prove the sender had durable Raft state when it sent them: everything but
# pre-votes (a fresh node pre-votes before it has written anything).
_DURABLE_SENDER = frozenset(MsgType) - {MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP}

# Bytes of store an admitted proposal is assumed to take per byte of its entry until the
# store is measured again: the log's copy, the records it rewrites, its outcome.
SPACE_PER_ENTRY_BYTES_FACTOR = 4
# Measuring the store's room (Storage.space: a stat of every database and a statvfs) after
# every Ready took 7% of a busy leader's CPU (py-spy, 3 clients x 16 writers). Between two
# measurements a Ready's appended entries are charged instead, SPACE_PER_ENTRY_BYTES_FACTOR
# times their bytes, an estimate that only overstates what they took (and that doubles the
# charge the leader made when it admitted them): the agent may refuse a little early, never
# late. The store is measured again at housekeeping (every HOUSEKEEPING_MS), after a snapshot
# install, once the charges pass SPACE_ESTIMATE_BYTES_MAX, and after every Ready while the
# room left is within SPACE_EXACT_RESERVES times the reserve.
SPACE_ESTIMATE_BYTES_MAX = 1 << 20
SPACE_EXACT_RESERVES = 4
# A leader whose store refuses writes hands leadership to a caught-up voter at most this often
# (docs/agent.md, "A full store"): each try costs an election's pause, and when the target is
# full too it hands off in turn; with every store full the cluster refuses writes as before,
# without elections in a loop.
HANDOFF_FULL_INTERVAL_MS = 10_000

# Error codes for a proposal the core refused, by the reason it gave. Every reason propose()
# gives means "not appended, not forwarded": not_leader and busy tell the app exactly that.
_DROPPED_CODE = {"no leader": wire.ErrorCode.NOT_LEADER}

# Messages a leader may send before its own write of the same Ready (see _handle_ready).
_LEADER_EARLY = frozenset({MsgType.APPEND, MsgType.HEARTBEAT})


class DataLost(StartRefused):
    """This agent starts as a voter with an empty data directory, but a peer heard from it
    before: it lost its data and must not vote as a fresh member. The message says what to do;
    the command line prints it and exits EXIT_START_REFUSED."""


@dataclass(slots=True)
class Waiter:
    """An app waiting for its PROPOSE to apply here."""

    identity: bytes
    req_id: int
    deadline: float
    # Its entry, kept to propose again after a leader change; emptied once the waiter is
    # answered. Stamped with log time if this agent led when it arrived (`stamp_term`), else
    # unstamped; whoever appends it as leader stamps it for its own term (_flush_proposals,
    # _on_peer_message).
    data: bytes
    answered: bool = False
    # Handed to the core (appended here as leader, or forwarded): from then on the entry may be
    # in some log and commit, so this waiter is never told "not proposed" (issue 9, bug 2).
    proposed: bool = False
    # Asked for per-hop stamps: always answered with a REPLY (the stamps travel in it when this
    # agent traces; the app settles such a write on its REPLY, never on its event).
    traced: bool = False
    # The term whose leader (this agent) stamped `data` when it arrived (0: unstamped).
    stamp_term: int = 0
    # Its frame said the connection reads REPLY_MANY: its REPLY may share a frame with the
    # others one Ready answers on that connection (docs/data-model-v2.md 8.11).
    reply_many: bool = False


@dataclass(slots=True)
class ReadWait:
    deadline: float
    requests: list[tuple[bytes, int]] = field(default_factory=list)


def zmq_io(config: AgentConfig, drops: DropCounter) -> AgentIo:
    """The process's I/O: the system clock (shifted by --clock-offset-ms) and ZeroMQ sockets
    bound on the configured endpoints, polled together."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        # Keys are read and the ZAP authenticator runs before any socket binds.
        auth = AgentAuth(ctx, config.node_id, config.keys_dir, exposed=config.exposed_endpoints)
    except Exception:
        ctx.term()
        raise
    peers: PeerTransport | None = None
    try:
        peers = PeerTransport(
            ctx,
            config.node_id,
            config.peer_endpoint,
            drops,
            recv_queue_frames_max=config.peer_recv_queue_frames_max,
            send_queue_frames_max=config.peer_send_queue_frames_max,
            frame_bytes_max=config.peer_frame_bytes_max,
            recv_bytes_per_turn_max=config.recv_bytes_per_turn_max,
            auth=auth,
        )
        clients = ClientTransport(
            ctx,
            config.client_endpoint,
            drops,
            recv_queue_frames_max=config.client_recv_queue_frames_max,
            send_queue_frames_max=config.client_send_queue_frames_max,
            recv_bytes_per_turn_max=config.recv_bytes_per_turn_max,
            auth=auth,
        )
    except ListenError:
        # A taken port: what is open closes first (the context terminates only then).
        if peers is not None:
            peers.close()
        auth.close()
        ctx.term()
        raise
    poller = zmq.Poller()
    poller.register(peers.router, zmq.POLLIN)
    poller.register(clients.router, zmq.POLLIN)

    def poll(timeout_ms: int) -> tuple[bool, bool]:
        try:
            events = dict(poller.poll(timeout_ms))
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EINTR:
                return False, False  # a signal: the loop condition decides
            raise
        return peers.router in events, clients.router in events

    return AgentIo(
        clock=SystemClock(config.clock_offset_ms),
        rng=random.Random(),
        peers=peers,
        clients=clients,
        poll=poll,
        auth=auth,
        close=lambda: (auth.close(), ctx.term()),
    )


# What a forwarded PROPOSE held for a new cluster's rules (Server._held_forwarded) counts
# against proposals_waiting_bytes_max besides its entries' bytes: its Message, Entry objects
# and tuple, measured at ~200-300 B with sys.getsizeof for a one-entry PROPOSE.
HELD_MESSAGE_BYTES = 256


class Server:
    def __init__(
        self,
        config: AgentConfig,
        *,
        io: AgentIo | None = None,
        drops: DropCounter | None = None,
        storage: Storage | None = None,
    ) -> None:
        """`io` defaults to the system clock and ZeroMQ (`zmq_io`), `storage` to the LMDB
        environment in config.data_dir. The glue simulation passes simulated I/O (with the
        `drops` its transports count into) and a Storage that records what is durable; the
        server owns (and closes) both."""
        self.config = config
        self.id = config.node_id
        # First: a taken --metrics port fails the start before anything else is opened.
        self.observer = Observer(config)
        self.drops = drops if drops is not None else DropCounter()
        if io is None:
            try:
                io = zmq_io(config, self.drops)
            except ListenError:
                self.observer.close()  # its --metrics port, bound first
                raise
        self.io = io
        self.clock = io.clock
        self.started = self.clock.monotonic()
        self.tracer: AgentTracer | None = AgentTracer() if config.trace else None
        # The log's segment size is checked against this agent's entry limit only on a store
        # opened here (a real start): a Storage handed in (the glue simulation's, on small
        # segments with the default limits and small bodies) is its maker's business.
        opened_here = storage is None
        if storage is None:
            storage = Storage(
                config.data_dir,
                fsync=config.fsync,
                map_bytes=config.map_bytes,
                log_segment_bytes=config.log_segment_bytes,
            )
        self.storage = storage
        # Every record's checksum is verified before anything is read from the store; a
        # damaged store is repaired (or the start refused) before the Raft core is built.
        self.repair: dict[str, Any] | None = None
        try:
            if opened_here:
                _check_log_segments(self.storage, config)
            self._scrub_and_repair()
        except StartRefused:
            self.storage.close()
            self._release_io()
            raise
        self.sm = StateMachine(
            self.storage.env,
            session_ttl_ms=config.session_ttl_ms,
            record_bytes_max=config.record_bytes_max,
            node_cache_bytes_max=config.node_cache_bytes_max,
            rules_max=config.rules_max,
        )
        # What was committed but maybe not synced before a crash (the page cache kept it) is
        # loaded as durable by the core, which may answer for it without writing again (a
        # re-sent APPEND, the same vote): make it durable before anything is sent.
        if config.fsync:
            self.storage.sync()
        loaded = self.storage.load()
        try:
            check_poison_marker(config.data_dir, loaded.applied)
            self.rules = RulesGate(self.id, config.rules_max, self._stored_rules())
        except StartRefused:
            self.storage.close()
            self._release_io()
            raise
        self._raft_config = RaftConfig(
            ticks_election=config.election_ticks,
            ticks_heartbeat=config.heartbeat_ticks,
            append_entries_max=config.batch_entries_max,
            append_bytes_max=config.batch_bytes_max,
            inflight_max=config.inflight_max,
            proposals_pending_max=config.proposals_pending_max,
            committed_per_ready_max=config.apply_batch_max,
            committed_bytes_per_ready_max=config.apply_batch_bytes_max,
            snapshot_lag_entries_max=config.snapshot_lag_entries_max,
            snapshot_lag_bytes_max=config.snapshot_lag_bytes_max,
        )
        fresh = loaded.hard_state is None and loaded.conf is None and loaded.snapshot is None
        # The cluster's initial configuration (at index 0). The initial voters have it from
        # --peers (the same list on each); anyone else gets it from a member (WELCOME) and
        # never builds it from its own flags (issue 9, bug 1: a joiner whose --peers named one
        # contact believed the voters were [contact, itself]).
        self._conf0: ConfState | None = loaded.conf0
        base_conf = loaded.conf
        if config.is_initial_voter and fresh:
            self._conf0 = ConfState.make(config.peers, (), config.peers)
            base_conf = self._conf0
        elif base_conf is None and config.is_initial_voter:
            base_conf = ConfState.make(config.peers, (), config.peers)
        elif base_conf is None and self._conf0 is not None and not loaded.entries:
            # A joiner whose store a repair emptied (term and vote kept): its log starts at
            # index 1 again, where the configuration is the initial one it was told before.
            assert loaded.snapshot is None
            base_conf = self._conf0
        # A joiner that has not been told the initial configuration yet: its core starts from
        # an empty one (so it never campaigns) and steps no Raft message until WELCOME.
        self._awaiting_conf0 = base_conf is None
        self.node = RaftNode(
            self.id,
            self._raft_config,
            io.rng,
            hard_state=loaded.hard_state or HardState(0, None, 0),
            conf=base_conf if base_conf is not None else ConfState.make(()),
            snapshot=loaded.snapshot,
            entries=loaded.entries,
            applied=loaded.applied,
        )
        self.applied = self.node.applied
        # Bytes of the applied entries the log (and so the core's memory) still holds, as a
        # running total per index from the log's first: compaction keeps it near
        # --log-retain-bytes (docs/agent.md, "Memory").
        self._log_bytes: deque[int] = deque()  # cumulative bytes of entries first.. applied
        self._log_bytes_base = 0  # cumulative bytes before the first of them
        first = self.node.first_index
        if self.applied >= first:
            for entry in self.node.entries_between(first, self.applied):
                self._note_applied_bytes(len(entry.data))
        # After a repair that emptied the store: no vote until this index applied again here.
        self._repair_until = self.storage.repair_until()
        if self.repair is not None:
            self.repair["until"] = self._repair_until
        self._log_time_ms = loaded.log_time_ms  # the log time of what we applied
        self._leader_stamp = LeaderStamp(config.log_time_skew_ms)
        self._stored_conf: ConfState | None = loaded.conf
        self.auth = io.auth
        self._conf0_stored = False  # written (idempotently) with the first write after start
        # The highest term of a Raft message received from each peer since we started: a voter
        # that lost its data directory asks (PROBE) whether we heard from it before.
        self._heard_term: dict[str, int] = {}
        self._probe_replies: dict[str, peer_codec.ProbeReply] = {}
        # A voter with an empty data directory first asks its peers whether it was a member
        # before (docs/agent.md, "A voter that lost its data"). Meanwhile its core neither
        # ticks nor steps a Raft message: it must not vote before it knows.
        self._probe_peers = sorted(p for p in config.peers if p != self.id)
        self._probing = bool(fresh and config.is_initial_voter and self._probe_peers)
        self._probe_deadline = self.started + config.timeout_ms_probe / 1000.0
        self._next_probe = self.started
        self.peers = io.peers
        self.clients = io.clients
        self._peer_limits = peer_codec.frame_limits(config.peer_frame_bytes_max)
        self._txn_limits = ops.txn_limits(config.body_bytes_max)
        self.admission = SessionAdmission(
            config.sessions_per_connection_max,
            config.sessions_per_address_max,
            config.session_ttl_ms,
        )
        self._conf_seen: ConfState | None = None
        self._peers_leader: str | None = None
        # Removed members the leader still replicates to until they hold their removal
        # (docs/raft.md, bug 6a): their connections stay meanwhile (see _sync_peers).
        self._peers_departing: frozenset[str] = frozenset()
        # (id, term, address) of the one leader that said HELLO while our configuration does
        # not list it (docs/agent.md, "A member that missed a promotion"); None: none.
        self._unlisted_leader: tuple[str, int, str] | None = None
        # When the unlisted leader was remembered or last led us (UNLISTED_LEADER_QUIET_MS).
        self._unlisted_heard_at = 0.0
        self._hello_replace_at = 0.0  # monotonic s: when another HELLO may replace it
        self._next_hello = 0.0
        self._hello_term = 0  # the term _next_hello was set in
        self._sync_peers()
        # Client work queued during a turn.
        # (entry, (client, seq), the waiter of a new PROPOSE or None for a proposal again).
        self._batch: list[tuple[bytes, tuple[str, int], Waiter | None]] = []
        # (term, log time) stamped on the proposals that arrive while this agent leads, taken
        # at the first of them after each flush: one stamp per batch, as at the flush itself,
        # without a second parse and encode of each payload (docs/data-model-v2.md 8.8).
        self._batch_stamp: tuple[int, int] | None = None
        self._batch_bytes = 0
        # PROPOSE messages followers forwarded while this agent, leading a new cluster, holds
        # proposals for its members' word on the rules (RulesGate.holding), and their bytes
        # (at most proposals_waiting_bytes_max: past it they are dropped, and their proposers
        # propose them again or time out). Stepped in, stamped, once the version is decided.
        self._held_forwarded: list[Message] = []
        self._held_forwarded_bytes = 0
        self._waiters: dict[tuple[str, int], list[Waiter]] = {}
        self._waiter_queue: deque[tuple[float, tuple[str, int], Waiter]] = deque()
        self._waiting = 0
        # Bytes of the entries the waiters keep (to propose again after a leader change):
        # bounded by proposals_waiting_bytes_max, like their number by proposals_waiting_max.
        self._waiting_bytes = 0
        self._reads_new: list[tuple[bytes, int]] = []
        self._reads: dict[bytes, ReadWait] = {}
        self._read_ids = itertools.count(1)
        # Read contexts carry a random boot nonce: unique across restarts (issue 9, bug 4).
        # Drawn from the injected randomness: the glue simulation seeds it per incarnation.
        self._read_nonce = f"{self.io.rng.getrandbits(64):016x}"
        self.members = MembershipRequests(config, self.node, self._reply, self._error)
        self.streams = Streams(
            config, self.storage, self.clients, self._error, self.applied, self._halt_damaged
        )
        # An installed snapshot swaps the state machine's tables (storage.install_staged): the
        # state machine applies the rest of that Ready through the new handles.
        self.storage.on_dbs = self._tables_swapped
        # Snapshots in flight, both directions.
        self.shipping = Shipping(
            config, self.node, self.storage, self.sm, self.peers, self.drops, self._halt_damaged
        )
        self._stop = False
        # Start counts as activity: the app that started us needs time to connect.
        self._last_client_frame = self.started
        self._next_housekeeping = 0.0
        self._next_tick = self.started + config.tick_ms / 1000.0
        self._next_join = 0.0
        self._soft: tuple[Role, str | None, int] = (
            self.node.role,
            self.node.leader,
            self.node.term,
        )
        self.counters: dict[str, int] = {
            "proposed": 0,
            "proposed_again": 0,
            "applied": 0,
            "readies": 0,
            # PROPOSE_MANY frames taken, and the proposals they carried.
            "propose_many_frames": 0,
            "propose_many_items": 0,
            # REPLY_MANY frames sent, and the REPLYs they carried (docs/data-model-v2.md 8.11).
            "reply_many_frames": 0,
            "reply_many_items": 0,
            # Peer snapshots installed here (a far-behind follower catches up by one:
            # data-model-v2.md section 10); status adds those shipped from here.
            "snapshots_installed": 0,
            # Leaders our configuration did not list that we answered after their HELLO (a
            # member that missed a promotion: docs/agent.md, Membership).
            "unlisted_leaders": 0,
            # Of those, forgotten after UNLISTED_LEADER_QUIET_MS without leading us.
            "unlisted_leaders_forgotten": 0,
            # What a turn carries (docs/data-model-v2.md 8.12): loop turns, APPENDs with
            # entries sent and their entries, APPENDs with entries taken, acks sent. Writes per
            # turn and entries per APPEND are what batching is measured by.
            "turns": 0,
            "appends_sent": 0,
            "append_entries_sent": 0,
            "appends_received": 0,
            "acks_sent": 0,
            # Leadership handed to another voter because this leader's store was full
            # (docs/agent.md, "A full store").
            "leadership_handed_off_full": 0,
        }
        # A turn longer than half the minimum election timeout risks needless elections.
        self._slow_turn_ms = config.tick_ms * config.election_ticks / 2
        self._turn_note = ""
        # Set when this agent cannot go on applying (a committed entry apply cannot handle, a
        # full store, damaged data): the Raft core is frozen (no ticks, steps or Readies), so
        # the agent is out of the group, but it still answers STATUS, INSPECT and its
        # subscribers' streams up to what it applied. docs/agent.md, "Limits and hostile input".
        self.halted: dict[str, Any] | None = None
        # Room left in the store (refreshed after every write and at housekeeping), less what
        # proposals admitted since then may take: writes are refused below the reserve (a full
        # store is a refusal, never a crash: docs/agent.md, "A full store").
        self._space = self.storage.space()
        self._space_taken = 0
        self._appends_refused = False
        # When a leader whose store is full may next hand leadership off (monotonic s).
        self._handoff_full_next = 0.0
        # The voter this agent last tried to hand leadership to while full (None: none yet).
        self._handoff_full_last: str | None = None
        # New writes refused for want of space (StoreFull) since start: a counter, because the
        # state `full` can end moments later (the log compacted when space ran low).
        self._store_refused = 0
        self._warn_moved_addresses()
        log.info(
            "agent %s starting: term %d, applied %d, log %d..%d, members %s",
            self.id,
            self.node.term,
            self.applied,
            self.node.first_index,
            self.node.last_index,
            ",".join(self.node.conf.members()),
        )
        self.observer.start(self)

    def _warn_moved_addresses(self) -> None:
        """Says which members --peers (or --listen) places elsewhere than the configuration
        this agent holds. The held configuration wins: it is what a quorum agreed on, and
        flags given to one agent must not change the membership behind the others' backs. So
        a cluster restarted on new ports with its old data directories never elects (each
        agent dials the old addresses): without this line nothing said why."""
        held = dict(self.node.conf.addresses)
        given = dict(self.config.peers)
        given[self.id] = self.config.peer_endpoint
        for member in sorted(held.keys() & given.keys()):
            if held[member] != given[member]:
                log.warning(
                    "member %s is at %s in the configuration this agent holds, not at %s as "
                    "its flags say: the held address is used (a member moves by a membership "
                    "change: remove it, then add it again at its new address)",
                    member,
                    held[member],
                    given[member],
                )

    def _scrub_and_repair(self) -> None:
        started = self.clock.monotonic()
        scrubbed = self.storage.scrub()
        took_s = self.clock.monotonic() - started
        if not scrubbed.damaged:
            log.info("checked %d stored records in %.1f s: no damage", scrubbed.records, took_s)
            return
        found = describe_damage(scrubbed)
        log.error("the store in %s is damaged: %s", self.config.data_dir, found)
        # Someone else holds the data if this agent is not the only voter (or is a learner).
        peers_exist = len(self.config.peers) > 1 or not self.config.is_initial_voter
        action = self.storage.repair(scrubbed, peers_exist=peers_exist)
        log.warning("repair: %s", action)
        self.repair = {"found": found, "action": action, "until": 0, "done": False}

    # -- lifecycle -----------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def _release_io(self) -> None:
        """A refused start: the injected I/O was bound first; its ports close before what they
        share (a ZeroMQ context terminates only once its sockets are closed)."""
        self.io.peers.close()
        self.io.clients.close()
        self.io.close()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        # SIGHUP: re-read the allow lists now (they are also re-read when a file changes).
        signal.signal(signal.SIGHUP, lambda *_: self.auth.request_reload())

    def run(self) -> None:
        try:
            while not self._stop:
                # Rounded up: zmq polls in whole milliseconds, and a remainder truncated to 0
                # would spin the loop for the last millisecond of every tick.
                wait_s = max(0.0, self.wake_at() - self.clock.monotonic())
                timeout_ms = math.ceil(wait_s * 1000)
                peer_frames, client_frames = self.io.poll(timeout_ms)
                self.step(peer_frames, client_frames)
        finally:
            self.close()

    def wake_at(self) -> float:
        """The monotonic time by which the loop must turn again unless a frame comes first:
        0 while there is work (a Ready, a snapshot to ship, a stream to pump), else the next
        tick (housekeeping and compaction ride on the ticks)."""
        if self.node.has_ready() or self.shipping.has_work() or self.streams.has_work(self.applied):
            return 0.0
        return self._next_tick

    @property
    def stopping(self) -> bool:
        return self._stop

    def step(self, peer_frames: bool = True, client_frames: bool = True) -> None:
        """One loop turn: take the frames waiting, tick the core for the time that passed, then
        the turn's work (proposals, reads, Readies, streams, housekeeping). `run` calls it after
        each poll; the glue simulation calls it directly."""
        turn_started = self.clock.monotonic()
        self.counters["turns"] += 1
        if peer_frames:
            self._on_peer_frames()
        if client_frames:
            self._on_client_frames()
        now = self.clock.monotonic()
        if self._probing:
            self._probe(now)
            if self._probing:
                self._next_tick = now + self.config.tick_ms / 1000.0  # the core waits
        tick_s = self.config.tick_ms / 1000.0
        ticks = 0
        while now >= self._next_tick and ticks < TICKS_CATCHUP_MAX and self.halted is None:
            self.node.tick()
            self._next_tick += tick_s
            ticks += 1
        if now >= self._next_tick:
            self._next_tick = now + tick_s
        self._turn(now)
        took_ms = (self.clock.monotonic() - turn_started) * 1000
        if took_ms > self._slow_turn_ms:
            self.drops.note(
                "slow_turn",
                f"slow loop turn: {took_ms:.0f} ms ({self._turn_note}); elections may "
                "follow if this persists (overload, or a stalled disk)",
            )

    def _turn(self, now: float) -> None:
        self._turn_note = "no Ready"
        self._flush_proposals()
        self._flush_reads(now)
        if self.halted is None:
            self._drain_ready()
        if self.halted is None:
            self.shipping.pump()
        self.streams.pump(self.applied, now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_MS / 1000.0
            if self._departing() != self._peers_departing:
                self._sync_peers()  # a removed member learned its removal, or the core gave up
            self._housekeeping(now)
        if self.halted is None:
            self._maybe_compact()

    def close(self) -> None:
        self.observer.close()  # the HTTP thread stops before what it reports on
        self.streams.close()
        self.shipping.close()
        self.peers.close()
        self.clients.close()
        self.io.close()  # the authenticator and the ZeroMQ context
        self.storage.close()
        log.info("agent %s stopped at applied %d", self.id, self.applied)

    # -- the Raft side -------------------------------------------------------------------------

    def _drain_ready(self) -> None:
        readies = written = applied = 0
        started = self.clock.monotonic()
        budget_s = self.config.tick_ms * self.config.heartbeat_ticks / 1000.0
        for _ in range(READY_PER_TURN_MAX):
            if not self.node.has_ready():
                break
            ready = self.node.ready()
            self._handle_ready(ready)
            if self.halted is not None:
                # The Ready's write stopped at a step (Storage.write): the steps before it are
                # durable (its log records, and the messages sent after them, when the apply
                # failed), the rest is not. The core must not learn it was all persisted: it
                # stays frozen from here on (restarting the agent rebuilds it from the store).
                break
            self.node.advance(ready)
            readies += 1
            written += len(ready.entries)
            applied += len(ready.committed)
            if self.clock.monotonic() - started > budget_s:
                # A heartbeat interval spent on Readies: tick and read the peers first, then
                # the next turn continues (the poll does not wait while a Ready is pending).
                break
        self.counters["readies"] += readies
        if readies:
            took_ms = (self.clock.monotonic() - started) * 1000
            self._turn_note = (
                f"{readies} readies, {written} entries written, {applied} applied, "
                f"{took_ms:.0f} ms in them"
            )

    def _handle_ready(self, ready: Ready) -> None:
        results: list[Applied] = []
        committed = ready.committed
        write_s: float | None = None
        if self.tracer is not None:
            self.tracer.on_ready(ready)

        published = False
        messages_sent = False

        def apply(txn: lmdb.Transaction) -> None:
            nonlocal published
            # One batch: each node the entries touch is decoded and encoded once per Ready.
            # `results[:] =`: a write retried after MapFullError applies the batch again.
            results[:] = self.sm.apply_batch(txn, committed)
            self._log_time_ms = read_applied(txn, self.sm.dbs)[2]
            if not published and ready.snapshot is None:
                # Last thing before the commit: the events go out now, not after the commit's
                # fsync (docs/agent.md, "Events before the apply's commit").
                self._publish_early(results)
                published = True

        base_conf = self.node.base_conf
        conf = base_conf if base_conf != self._stored_conf else None
        messages = ready.messages
        if self.node.conf is not self._conf_seen or self.node.leader != self._peers_leader:
            # Before anything is sent: a member a CONF entry of this very Ready added gets
            # this Ready's messages, the leader's early APPENDs included (issue 9, bug 6).
            self._sync_peers()
        if ready.role is Role.LEADER and messages and self._term_durable(ready):
            # The leader's appends go out BEFORE its own write (Raft thesis 10.2.1): the core
            # counts the leader's own copy only after advance(), so an entry still commits only
            # on a majority of durable copies, and the leader's fsync now overlaps the
            # followers' instead of preceding them. Only messages whose term is already durable
            # here, and only appends/heartbeats; answers and votes still wait for the write.
            early = [m for m in messages if m.type in _LEADER_EARLY]
            if early:
                self._send_messages(tuple(early))
                messages = tuple(m for m in messages if m.type not in _LEADER_EARLY)
        if (
            ready.entries
            or ready.hard_state is not None
            or ready.snapshot is not None
            or committed
            or conf is not None
        ):
            conf0 = self._conf0 if not self._conf0_stored else None

            def durable() -> None:
                # The log's fdatasync is done (entries, term and vote): the messages may go
                # (votes and acks included), before the apply's LMDB commit, which Raft does
                # not wait for (storage.py, "A Ready").
                nonlocal messages_sent
                messages_sent = True
                self._send_messages(messages)

            try:
                write_started = self.clock.monotonic()
                self._write_ready(ready, apply if committed else None, conf, conf0, durable)
                write_s = self.clock.monotonic() - write_started
                if self.tracer is not None:
                    self.tracer.on_written(ready)
            except ApplyFailed as exc:
                self._halt_poisoned(exc)
                return
            except RulesTooNew as exc:
                self._halt_rules(exc)
                return
            except Corrupt as exc:
                self._halt_damaged(exc)
                return
            except lmdb.Error as exc:
                # The map or the disk is full (or failing): the whole write aborted, so nothing
                # of this Ready is persisted. The reserves make this the exception; when it
                # happens the agent stops writing rather than crashing into a restart loop.
                self._halt_store_full(exc)
                return
            except (OSError, LogFailed) as exc:
                # The Raft log's disk is full (a new segment could not be made) or a flush
                # failed: never retried in this process (logsegments.LogFailed says why); the
                # reopen at the next start finds what reached the disk.
                self._halt_store_full(exc)
                return
            self._account_write(ready)
            self._stored_conf = base_conf
            self._conf0_stored = self._conf0 is not None
        # else: messages only (heartbeats and their answers): no write at all.
        if not messages_sent:
            self._send_messages(messages)
        if ready.snapshot is not None:
            self._after_snapshot_install(ready.snapshot)
        if results:
            assert results[0].index == self.applied + 1, (results[0].index, self.applied)
            for entry in committed:
                self._note_applied_bytes(len(entry.data))
            self.applied = results[-1].index
            self.counters["applied"] += len(results)
            if any(applied.kind == "rules" for applied in results):
                self._rules_applied()
            if not published:
                self.streams.record_events(results)
            self._answer_applied(results)
            self.streams.early_done()
            if self.members.waiting():
                self.members.settle_applied(ready)
        for state in ready.read_states:
            wait = self._reads.pop(state.context, None)
            if wait is not None:
                for identity, req_id in wait.requests:
                    self._reply(identity, req_id, {"index": state.index})
                    self.streams.note_read(identity, state.index)
        soft = (ready.role, ready.leader, ready.term)
        if soft != self._soft:
            self._log_soft_change(self._soft, soft)
            if soft[1] is not None and (soft[1], soft[2]) != (self._soft[1], self._soft[2]):
                self._propose_waiting_again()
            self._soft = soft
        self.observer.on_ready(ready, results, write_s)

    def _publish_early(self, results: list[Applied]) -> None:
        """Inside the apply's write transaction, just before its commit: records the events
        and sends them to the streams that answer a call of this batch, if they follow the log
        from memory. Safe because what applied is committed (durable on a majority): if this
        commit is lost (a crash, a full disk), the log holds every entry and applying it again
        gives the same outcomes, so nothing an app is told can be taken back. It saves those
        callers the commit's fsync (~0.1 ms); the other streams go after the commit, so the
        fsync and the Raft messages behind it never wait for a fan-out. Never raises into the
        transaction: whatever could not go now goes with the turn's `pump` after the commit."""
        if not results:
            return
        self.streams.record_events(results)
        try:
            callers = self._answered_by_stream(results)
            if callers:
                self.streams.pump_early(results[-1].index, self.clock.monotonic(), callers)
        except Exception:  # a bug here must not abort the write of committed entries
            log.exception("sending events before the commit failed; they go after it")

    def _answered_by_stream(self, results: list[Applied]) -> set[bytes]:
        """The connections whose stream answers an "ok" write of `results`: those waiting here
        for it (`_answer_applied` sends them no REPLY), and the stream of the write's client
        when it wrote through its link to the leader (no waiter here: the app settles that
        write on its event, `settle_by_events`). What an early event shortens."""
        callers: set[bytes] = set()
        for applied in results:
            if applied.outcome != "ok" or applied.client is None or applied.seq is None:
                continue
            for waiter in self._waiters.get((applied.client, applied.seq), ()):
                if waiter.answered or waiter.traced or waiter.identity in callers:
                    continue
                if self.streams.answers_by_event(waiter.identity, applied.index, applied.client):
                    callers.add(waiter.identity)
            stream = self.streams.answering_stream(applied.client)
            if (
                stream is not None
                and stream not in callers
                and self.streams.answers_by_event(stream, applied.index, applied.client)
            ):
                callers.add(stream)
        return callers

    def _stored_rules(self) -> int:
        """The rules version of the applied state; StartRefused past --rules-max (a store
        moved up by newer code, then started by older code or with a lower cap)."""
        with self.storage.env.begin() as txn:
            version = self.sm.rules_version(txn)
        if version > self.config.rules_max:
            raise StartRefused(f"{RulesTooNew(0, 0, version, self.config.rules_max)}. {_RULES_FIX}")
        return version

    def _rules_applied(self) -> None:
        with self.storage.env.begin() as txn:
            version = self.sm.rules_version(txn)
        if version != self.rules.version:
            log.warning("state-machine rules version %d in force from now on", version)
        self.rules.version = version

    def _halt_rules(self, exc: RulesTooNew) -> None:
        """The cluster moved to rules this agent does not know: applying on with older rules
        would diverge from the other agents, so it stops (a restart with code that knows
        them carries on from the same entry)."""
        message = f"{exc}. {_RULES_FIX}"
        log.critical("%s", message)
        facts = {"version": exc.version, "known": exc.known}
        self._halt("rules_unknown", message, index=exc.index, term=exc.term, **facts)

    def _rules_housekeeping(self, now: float) -> None:
        """Tell our leader the newest rules we apply; leading, move the cluster up once every
        member knows a newer version (rules_gate.py)."""
        known = self.rules.tell(self.node.leader, self.node.term, now)
        if known is not None:
            self.peers.send(known.to, peer_codec.encode_rules_known(known))
        if self.node.role is not Role.LEADER:
            return
        version = self.rules.to_propose(self.node.term, self.node.conf.members(), now)
        if version is not None:
            log.info("every member applies rules version %d: proposing the move", version)
            data = rules_payload(self.id, version)
            self._batch.append((data, ("", version), None))
            self._batch_bytes += len(data)

    def _rules_first(self) -> None:
        """A new leadership: if the log holds nothing but NOOP and CONF entries from index 1
        (nothing was ever applied but empty entries: a cluster just created), the newest rules
        this agent applies go in as its first entry of the term, before any client's entry, so
        the cluster runs them from its first request (rules_gate.py says why this needs no
        word from the members)."""
        node = self.node
        self.rules.checked_term = node.term
        if node.first_index != 1 or self.rules.version >= self.rules.rules_max:
            return
        lo = 1
        while lo <= node.last_index:
            hi = min(node.last_index, lo + 63)
            if any(e.kind is EntryKind.NORMAL for e in node.entries_between(lo, hi)):
                return
            lo = hi + 1
        self.rules.start_new(node.term, self.clock.monotonic())

    def _rules_decide_new(self) -> bool:
        """A new cluster's leader: True while client proposals must wait for the members'
        word on the rules (RulesGate.to_propose_new); once decided, the rules entry (if the
        cluster moves up) goes in ahead of every proposal held, then those held."""
        node = self.node
        if node.role is not Role.LEADER or not self.rules.holding(node.term):
            self._drop_held_forwarded()
            return False
        version = self.rules.to_propose_new(node.term, node.conf.members(), self.clock.monotonic())
        if version is not None:
            log.info("a new cluster whose members all apply rules %d: proposing it first", version)
            data = rules_payload(self.id, version)
            self._batch.insert(0, (data, ("", version), None))
            self._batch_bytes += len(data)
        elif self.rules.holding(node.term):
            return True
        elif self.rules.silent:
            log.warning(
                "a new cluster: members %s did not say which rules they apply within "
                "RULES_NEW_WAIT_MS=%d; it runs rules %d until every member says it knows more",
                ",".join(self.rules.silent),
                RULES_NEW_WAIT_MS,
                self.rules.version,
            )
        return False

    def _drop_held_forwarded(self, reason: str = "propose_held_deposed") -> None:
        if self._held_forwarded:
            # No longer leading (or halted): as with a deposed leader's unappended proposals,
            # their proposers propose them again through the new leader
            # (_propose_waiting_again).
            self.drops.counts[reason] += len(self._held_forwarded)
            self._held_forwarded = []
            self._held_forwarded_bytes = 0

    def _release_held_forwarded(self) -> None:
        held, self._held_forwarded = self._held_forwarded, []
        self._held_forwarded_bytes = 0
        for m in held:
            self._step_forwarded(m)

    def _on_rules_known(self, sender: str, known: peer_codec.RulesKnown) -> None:
        if known.frm != sender or known.to != self.id:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent rules for {known.to!r}")
            return
        self.rules.heard(known, self.clock.monotonic(), self.node.conf.members())

    def _halt_poisoned(self, exc: ApplyFailed) -> None:
        """A committed entry that apply cannot handle: every replica meets it, so the agent
        stops applying (never loops on it), says which entry and what to do, and leaves a
        marker so a restart is refused with the same message until the operator acts."""
        message = (
            f"{exc}. The entry is committed, so every agent of the cluster meets it: this is a "
            "bug in superstatic, not a fault of this agent. Upgrade superstatic to a version "
            "that applies it, then delete the file POISONED in the data directory "
            f"{self.config.data_dir} and start the agent again. Until then this agent answers "
            "STATUS and INSPECT (what it applied), and refuses writes and streams."
        )
        log.critical("%s", message, exc_info=exc.cause)
        write_poison_marker(self.config.data_dir, exc.index, exc.term, message)
        self._halt("poisoned", message, index=exc.index, term=exc.term)

    def _write_ready(
        self,
        ready: Ready,
        apply: Callable[[lmdb.Transaction], None] | None,
        conf: ConfState | None,
        conf0: ConfState | None,
        durable: Callable[[], None],
    ) -> None:
        """storage.write; each of its LMDB transactions is tried once more there when the map
        is full (the pages the previous write freed become reusable after one more commit,
        Storage.nudge; the failed attempt left nothing behind, and the state machine drops
        its cache on any exception)."""
        self.storage.write(ready, apply, conf=conf, conf0=conf0, durable=durable)

    def _halt_store_full(self, exc: Exception) -> None:
        space = self.storage.space()
        message = (
            f"a write to the store failed ({type(exc).__name__}: {exc}); used "
            f"{space.used_bytes} of --map-bytes {space.map_bytes}, disk free "
            f"{space.disk_free_bytes}. This agent stopped writing (the failed step kept nothing; "
            "a Ready's log records flushed before it are kept) and still answers STATUS and "
            "INSPECT (what it applied). Restart it with a "
            "larger --map-bytes, or after freeing disk space: it then catches up."
        )
        log.critical("%s", message)
        self._halt("store_full", message)

    def _refresh_space(self) -> None:
        self._space = self.storage.space()
        self._space_taken = 0
        appends_refused = self._space.free_bytes < self.config.store_reserve_bytes // 2
        if appends_refused != self._appends_refused:
            self._appends_refused = appends_refused
            if appends_refused:
                log.error(
                    "store nearly full (%d bytes free of --map-bytes %d): refusing to append "
                    "entries (not acknowledging them) until there is room",
                    self._space.free_bytes,
                    self._space.map_bytes,
                )
            else:
                log.info("store has room again: appending entries")

    def _account_write(self, ready: Ready) -> None:
        """After a Ready's write: measure the store, or charge the Ready's entries against the
        last measurement (SPACE_ESTIMATE_BYTES_MAX says why)."""
        self._space_taken += SPACE_PER_ENTRY_BYTES_FACTOR * sum(len(e.data) for e in ready.entries)
        room_bytes = self._space.free_bytes - self._space_taken
        if (
            ready.snapshot is not None
            or self._space_taken > SPACE_ESTIMATE_BYTES_MAX
            or room_bytes < SPACE_EXACT_RESERVES * self.config.store_reserve_bytes
        ):
            self._refresh_space()

    def _store_full(self) -> bool:
        """True while this agent refuses new writes: less than the reserve is free."""
        return self._space.free_bytes - self._space_taken < self.config.store_reserve_bytes

    def _hand_off_if_full(self, now: float) -> None:
        """A leader whose store refuses writes hands leadership to the voter furthest along
        among those it replicates to: another member may have room (another disk, a larger
        --map-bytes), and while a full agent leads, the whole cluster refuses writes. At most
        once per HANDOFF_FULL_INTERVAL_MS. The core's transfer brings the target up to date
        first and is dropped if it has not happened within an election timeout."""
        node = self.node
        if (
            self.halted is not None
            or node.role is not Role.LEADER
            or now < self._handoff_full_next
            or not self._store_full()
        ):
            return
        progress = node.progress()
        targets = [
            member
            for member in node.conf.voters
            if member != self.id
            and member in progress
            and progress[member][2] == ProgressState.REPLICATE.value
        ]
        if not targets:
            return  # nobody answering in step: an election would only pause the cluster
        # The first try goes to the voter furthest along. With the leader full nothing new is
        # appended, so every caught-up voter ties; a full one ignores the transfer (see
        # _on_peer_message), so each later try goes to the next voter by name after the last
        # one tried: every member is tried in turn, and the one with room is found.
        last = self._handoff_full_last
        if last is None:
            target = max(targets, key=lambda member: (progress[member][0], member))
        else:
            after = sorted(member for member in targets if member > last)
            target = after[0] if after else min(targets)
        self._handoff_full_last = target
        self._handoff_full_next = now + HANDOFF_FULL_INTERVAL_MS / 1000
        try:
            node.transfer_leadership(target)
        except Dropped as exc:
            log.info("store full: leadership not handed to %s (%s)", target, exc.reason)
            return
        self.counters["leadership_handed_off_full"] += 1
        log.warning(
            "store full (%d bytes free of --map-bytes %d, disk free %d): handing leadership "
            "to %s, which may have room",
            self._space.free_bytes,
            self._space.map_bytes,
            self._space.disk_free_bytes,
            target,
        )

    def _halt_damaged(self, exc: Corrupt) -> None:
        """A checksum mismatch while running: this copy must not be served or built upon.
        The agent stops applying and serving; at its next start the scrub finds the damage
        and repairs the store (from its log, or by being sent the data again)."""
        message = (
            f"{exc}. This agent stopped applying and serving data so the damage cannot spread "
            "or be read. Restart it: at start it checks every record and repairs its store "
            "(from its own log, or by emptying it and being sent the data by the leader); "
            "STATUS then shows what it found and did."
        )
        log.critical("%s", message)
        self._halt("damaged", message, db=exc.db, key=describe_key(exc.db, exc.key))

    def _halt(self, reason: str, message: str, **facts: Any) -> None:
        """Freezes the Raft side for good (see `halted`)."""
        assert reason in wire.HALT_REASONS, reason
        if self.halted is not None:
            return
        self.halted = {"reason": reason, "message": message, **facts}
        self.observer.on_halt(reason, message)
        # A halted agent never leads again in this process (its core is frozen): forwarded
        # proposals it held for a new cluster's rules would stay pinned (up to
        # proposals_waiting_bytes_max) until its restart; their proposers elect another
        # leader and propose them again through it (review 35).
        self._drop_held_forwarded("propose_held_halted")
        self.shipping.close()
        # Every subscriber is told now, and new ones are refused: a halted agent applies
        # nothing more, so its streams would go silent and their apps wait for their request
        # timeouts; told, the library fails over to another agent at once (docs/library.md).
        # A damaged store must not feed anyone anyway.
        self.streams.refuse(
            f"agent {self.id} stopped ({reason}) and applies nothing more: subscribe at "
            "another agent"
        )
        # Waiting proposals may or may not have committed elsewhere: say so now, not at
        # their timeout. A retry with the same seq through another agent learns the outcome.
        for key in list(self._waiters):
            self._fail_waiters(
                key,
                wire.ErrorCode.UNAVAILABLE,
                f"agent {self.id} stopped ({reason}) before this applied here; the outcome is "
                "unknown: retry with the same seq through another agent",
                None,
            )

    def _propose_waiting_again(self) -> None:
        """A new leader: every proposal still waiting here is proposed again, through it.

        A proposal forwarded to a leader that died (or was deposed) before appending it is
        lost with it, and its app would wait for its resend timer (seconds). Proposing again is
        safe: the state machine answers a (client, seq) it has recorded as a duplicate with the
        first outcome, so an entry that did survive is never applied twice; the waiter is
        answered by whichever copy applies first. Bounded by proposals_waiting_max."""
        again: list[tuple[bytes, tuple[str, int], Waiter | None]] = []
        for key, waiters in self._waiters.items():
            waiting = [w for w in waiters if not w.answered]  # answered ones dropped their data
            if waiting:
                again.append((waiting[0].data, key, None))
        if again:
            log.info("proposing %d waiting proposals again through the new leader", len(again))
            self._batch.extend(again)
            self._batch_bytes += sum(len(data) for data, _, _ in again)
            self.counters["proposed_again"] += len(again)

    def _stamp(self) -> int:
        """The log time to stamp on entries this leader appends now (logtime.py)."""
        node = self.node
        assert node.role is Role.LEADER
        if self._leader_stamp.term != node.term:
            self._leader_stamp.lead(node.term, self._log_time_ms, self.clock.monotonic())
        return self._leader_stamp.stamp(self.clock.wall_ms(), self.clock.monotonic())

    def _term_durable(self, ready: Ready) -> bool:
        """True if this Ready changes no term or vote, or the change is already durable."""
        hs = ready.hard_state
        return hs is None or (hs.term, hs.vote) == self.storage.term_vote_durable

    def _note_applied_bytes(self, size: int) -> None:
        last = self._log_bytes[-1] if self._log_bytes else self._log_bytes_base
        self._log_bytes.append(last + size)

    def _log_retained_bytes(self) -> int:
        return (self._log_bytes[-1] - self._log_bytes_base) if self._log_bytes else 0

    def _tables_swapped(self, dbs: Dbs) -> None:
        self.sm.dbs = dbs

    def _after_snapshot_install(self, meta: SnapshotMeta) -> None:
        log.info("installed snapshot at index %d (term %d)", meta.index, meta.term)
        self._log_bytes.clear()  # the log restarts after the snapshot
        self._log_bytes_base = 0
        self.applied = meta.index
        with self.storage.env.begin() as txn:
            self._log_time_ms = read_applied(txn, self.sm.dbs)[2]
            try:
                self.sm.check_rules(txn)
            except RulesTooNew as exc:
                self._halt_rules(exc)
        self._rules_applied()
        self.shipping.installed()
        self.counters["snapshots_installed"] += 1
        self.streams.snapshot_installed(meta.index)

    def _send_messages(self, messages: tuple[Message, ...]) -> None:
        blobs: dict[tuple[int, int], bytes] = {}
        counters = self.counters
        for m in messages:
            if m.type is MsgType.SNAPSHOT:
                self.shipping.start(m)
                continue
            blob = None
            if m.type is MsgType.APPEND_RESP:
                counters["acks_sent"] += 1
            if m.entries and m.type is MsgType.APPEND:
                counters["appends_sent"] += 1
                counters["append_entries_sent"] += len(m.entries)
                # One Ready holds one version of the log: an index range names its entries.
                key = (m.entries[0].index, m.entries[-1].index)
                blob = blobs.get(key)
                if blob is None:
                    blob = blobs[key] = peer_codec.encode_entries(m.entries)
            self.peers.send(m.to, peer_codec.encode_message(m, blob))

    def _log_soft_change(
        self, old: tuple[Role, str | None, int], new: tuple[Role, str | None, int]
    ) -> None:
        role, leader, term = new
        if role is Role.LEADER and old[0] is not Role.LEADER:
            log.info("became leader in term %d", term)
        elif leader is not None and leader != old[1]:
            log.info("following leader %s in term %d", leader, term)
        elif leader is None and old[1] is not None:
            log.info("lost the leader (term %d, now %s)", term, status_map.role_name(role))

    def _sync_peers(self) -> None:
        conf = self.node.conf
        addresses = dict(conf.addresses)
        # Also reach the initial voters while we are outside the configuration (a joining
        # learner has to talk to them to be added).
        if self.id not in conf.members():
            for node, address in self.config.peers.items():
                addresses.setdefault(node, address)
        # A leader that removed itself leads until its removal commits (docs/raft.md): our acks
        # must still reach it, so its connection stays while it is the leader we follow.
        leader = self.node.leader
        if leader is not None and leader not in addresses:
            kept = self.peers.peers().get(leader)
            if kept:
                addresses[leader] = kept
        self._peers_leader = leader
        unlisted = self._unlisted_leader
        if unlisted is not None:
            node, term, address = unlisted
            if node in conf.members() or (self.node.term > term and leader != node):
                # Listed now (the configuration's address rules), or a later term began
                # without it: it is no leader we need to answer any more.
                self._unlisted_leader = None
            else:
                addresses.setdefault(node, address)
        # A leader keeps replicating to a member it removed until that member holds its
        # removal (bounded by the core): keep its connection at the address we know.
        departing = self._departing()
        current = self.peers.peers()
        for node in departing:
            if node not in addresses and current.get(node):
                addresses[node] = current[node]
        self._peers_departing = departing
        for node in self.peers.set_peers(addresses):
            if self._conf_seen is not None:
                log.info("connected to member %s at %s", node, addresses[node])
        if self._conf_seen is not None and conf.members() != self._conf_seen.members():
            log.info(
                "members now: voters %s, learners %s",
                ",".join(conf.voters),
                ",".join(conf.learners) or "-",
            )
        self._conf_seen = conf

    # -- peer frames ---------------------------------------------------------------------------

    def _on_peer_frames(self) -> None:
        for sender, data in self.peers.recv(self.shipping.recv_bytes_max()):
            if self.halted is not None:
                self.drops.counts["peer_halted"] += 1  # the core is frozen: see _halt
                continue
            if not self._peer_known(sender) and peer_codec.peek_kind(data) not in (
                peer_codec.PeerKind.JOIN,
                peer_codec.PeerKind.RULES,
                peer_codec.PeerKind.HELLO,
            ):
                # Only members talk Raft and ship snapshots; a stranger may only ask to join
                # (saying first which rules it applies: _on_join), or say it leads (_on_hello
                # judges that). Refused before decoding: its bytes cost us nothing more.
                self.drops.drop(
                    "peer_unknown_sender", f"{len(data)} bytes from {sender!r}, not a member"
                )
                continue
            try:
                frame = peer_codec.decode(data, limits=self._peer_limits)
            except ProtocolError as exc:
                self.drops.drop(
                    "peer_bad_frame", f"from {sender!r}: {exc}", getattr(exc, "reason", "")
                )
                continue
            if isinstance(frame, Message):
                self._on_peer_message(sender, frame)
                if frame.type is MsgType.SNAPSHOT:
                    # Install (or drop) it now, before a later frame could restage the data
                    # the core just accepted.
                    self._drain_ready()
            elif isinstance(frame, peer_codec.JoinRequest):
                self._on_join(sender, frame)
            elif isinstance(frame, peer_codec.Welcome):
                self._on_welcome(sender, frame)
            elif isinstance(frame, peer_codec.Probe):
                self._on_probe(sender, frame)
            elif isinstance(frame, peer_codec.ProbeReply):
                self._on_probe_reply(sender, frame)
            elif isinstance(frame, peer_codec.ChunkAck):
                self.shipping.on_ack(sender, frame)
            elif isinstance(frame, peer_codec.Hello):
                self._on_hello(sender, frame)
            elif isinstance(frame, peer_codec.RulesKnown):
                self._on_rules_known(sender, frame)
            elif self._awaiting_conf0:
                self.drops.counts["peer_before_welcome"] += 1  # routine for a joiner: no log
            elif frame.term > self.node.term + TERM_AHEAD_MAX:
                # Not a leader of this cluster: it must not restart our staging either.
                self.drops.drop("peer_impossible", f"CHUNK from {sender}: term far ahead")
            else:
                self.shipping.on_chunk(sender, frame)

    def _departing(self) -> frozenset[str]:
        """Leader only: members removed whose removal we still replicate to them."""
        members = self.node.conf.members()
        return frozenset(n for n in self.node.progress() if n not in members)

    def _peer_known(self, sender: str) -> bool:
        """A member of the configuration, the leader we follow (it may have removed itself and
        lead until that commits), while we are outside the configuration (a joining learner)
        an initial voter, or, while we lead, a removed member still being told its removal
        (its acknowledgements end that), or the leader our configuration does not list yet that
        said HELLO (_on_hello)."""
        return self._listed_peer(sender) or self._is_unlisted_leader(sender)

    def _listed_peer(self, sender: str) -> bool:
        conf = self.node.conf
        return (
            sender in conf.voters
            or sender in conf.learners
            or sender == self.node.leader
            or (sender in self.config.peers and self.id not in conf.members())
            or sender in self._peers_departing
        )

    def _is_unlisted_leader(self, sender: str) -> bool:
        unlisted = self._unlisted_leader
        return unlisted is not None and unlisted[0] == sender

    def _on_hello(self, sender: str, hello: peer_codec.Hello) -> None:
        """A leader we may not list tells us where to answer it. Raft has a follower accept a
        leader of a term not below its own even when its (older) configuration does not name
        it: it learns the configuration from the log that leader sends. One such leader at a
        time, of a term not below ours and not one that has another leader (the latest HELLO
        replaces it, once per HELLO_REPLACE_MS: one that claimed a far term must not lock out
        the real leader, nor senders taking turns make us dial per frame): a stranger can
        make us dial one address and no more, as a JOIN to the leader can (without keys); with
        keys the sender is the agent its CURVE key is listed under, and we dial only an agent
        whose server key is listed (transport)."""
        if hello.frm != sender or hello.to != self.id:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent a hello for {hello.to!r}")
            return
        node = self.node
        if self._probing or self._awaiting_conf0:
            self.drops.counts["peer_hello_ignored"] += 1  # its heartbeats come again
            return
        if sender in node.conf.members() or hello.term < node.term:
            return  # listed: we answer it at the configuration's address; or a stale leader
        if hello.term > node.term + TERM_AHEAD_MAX:
            self.drops.drop("peer_impossible", f"HELLO from {sender}: term far ahead")
            return
        if hello.term == node.term and node.leader is not None and node.leader != sender:
            # One leader per term: ours (or we) lead this one, so the sender leads nothing.
            # Kept, it would have us dial its address all term and take a second leader's log.
            self.drops.drop(
                "peer_impossible", f"HELLO from {sender}: term {hello.term} has a leader"
            )
            return
        kept = self._unlisted_leader
        if kept == (sender, hello.term, hello.address):
            return  # its next HELLO: nothing changed
        if kept is not None and kept[0] == sender and kept[2] == hello.address:
            # The same leader, elected again: its connection stands (no dial, no wait).
            self._unlisted_leader = (sender, hello.term, hello.address)
            return
        now = self.clock.monotonic()
        if kept is not None and now < self._hello_replace_at:
            self.drops.counts["peer_hello_replace_wait"] += 1  # no log: a storm must not flood
            return
        self._hello_replace_at = now + HELLO_REPLACE_MS / 1000.0
        if kept is None:  # not per HELLO: two senders taking turns must not flood the log
            self.counters["unlisted_leaders"] += 1
            log.info(
                "leader %s of term %d is not in our configuration yet: answering it at %s",
                sender,
                hello.term,
                hello.address,
            )
        self._unlisted_leader = (sender, hello.term, hello.address)
        self._unlisted_heard_at = now
        self._sync_peers()

    def _forget_quiet_unlisted_leader(self, now: float) -> None:
        """Housekeeping: an unlisted leader that has not led us for UNLISTED_LEADER_QUIET_MS
        is no leader of ours: stop dialling it (its next HELLO may bring it back)."""
        unlisted = self._unlisted_leader
        if unlisted is None or (now - self._unlisted_heard_at) * 1000 < UNLISTED_LEADER_QUIET_MS:
            return
        self._unlisted_leader = None
        self.counters["unlisted_leaders_forgotten"] += 1
        log.info(
            "leader %s of term %d sent nothing for %d ms (UNLISTED_LEADER_QUIET_MS): no longer "
            "dialling it",
            unlisted[0],
            unlisted[1],
            UNLISTED_LEADER_QUIET_MS,
        )
        self._sync_peers()

    def _say_hello(self, now: float) -> None:
        """Leader: HELLO to each member in probe state (we have not heard where its log is):
        one that missed our promotion does not list us, and learns from it where to answer."""
        if self.node.role is not Role.LEADER:
            return
        if self._hello_term != self.node.term:
            # Not at once: the members that list us answer within a heartbeat and leave probe
            # state, so after an ordinary election no HELLO is sent at all.
            self._hello_term = self.node.term
            self._next_hello = now + LEADER_HELLO_MS / 1000.0
            return
        if now < self._next_hello:
            return
        self._next_hello = now + LEADER_HELLO_MS / 1000.0
        conf = self.node.conf
        address = dict(conf.addresses).get(self.id) or self.config.peer_endpoint
        if not address:
            return
        for node, (_match, _next, state) in self.node.progress().items():
            if node != self.id and node in conf.members() and state == ProgressState.PROBE.value:
                hello = peer_codec.Hello(self.id, node, self.node.term, address)
                self.peers.send(node, peer_codec.encode_hello(hello))

    def _on_peer_message(self, sender: str, m: Message) -> None:
        if m.frm != sender:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent a message from {m.frm!r}")
            return
        if m.to != self.id:
            self.drops.drop("peer_misaddressed", f"{sender!r} sent a message for {m.to!r}")
            return
        if (
            self._unlisted_leader is not None  # first: the common case costs one test
            and m.type not in _FROM_UNLISTED_LEADER
            and self._only_unlisted_leader(sender)
        ):
            self.drops.drop(
                "peer_unlisted_leader", f"{m.type.name} from {sender}, a leader we do not list"
            )
            return
        if self._unlisted_leader is not None and self._unlisted_leader[0] == sender:
            self._unlisted_heard_at = self.clock.monotonic()  # it leads us: keep it
        if self._probing:
            # We may have voted before we lost our data: no Raft message until we know.
            self.drops.counts["peer_while_probing"] += 1
            return
        if self._awaiting_conf0:
            # Our core's configuration is a placeholder until a member tells us the real one;
            # the leader retransmits. Routine for a joiner: counted, not logged.
            self.drops.counts["peer_before_welcome"] += 1
            return
        if m.type in _DURABLE_SENDER and m.term > self._heard_term.get(sender, 0):
            self._heard_term[sender] = m.term
        reason = self._impossible(m)
        if reason is not None:
            self.drops.drop("peer_impossible", f"{m.type.name} from {sender}: {reason}")
            return
        if (
            m.type in (MsgType.VOTE, MsgType.PRE_VOTE)
            and self._repair_until
            and self.applied < self._repair_until
        ):
            # Our store was emptied for repair: we may have acknowledged entries we no longer
            # hold, so a vote now could elect a leader that lacks a committed entry.
            self.drops.drop("vote_withheld_repairing", f"{m.type.name} from {sender}")
            return
        if self._appends_refused and (
            (m.type is MsgType.APPEND and m.entries) or m.type is MsgType.SNAPSHOT
        ):
            # Nearly full: we must not acknowledge entries we may fail to keep. The leader
            # retries; the rest of the cluster carries on without us meanwhile.
            self.drops.counts["store_full_append"] += 1
            return
        if m.type is MsgType.TIMEOUT_NOW and self._store_full():
            # A leadership transfer to us, while our store refuses writes: as leader we would
            # refuse every write in the cluster. Ignored, the transfer lapses after an election
            # timeout and the leader stays; a full leader then tries another member (review41:
            # two full members handed leadership to each other every 10 s, and the one with
            # room never led; docs/agent.md, "A full store").
            self.drops.counts["store_full_transfer"] += 1
            return
        if m.type is MsgType.PROPOSE and self._store_full():
            # Forwarded writes are refused too, but for those that only delete (they make
            # room). The proposer learns a refused one's fate by its timeout (unavailable).
            kept = tuple(e for e in m.entries if only_removes(e.data))
            if len(kept) < len(m.entries):
                self.drops.counts["store_full_propose"] += len(m.entries) - len(kept)
                if not kept:
                    return
                m = dataclasses.replace(m, entries=kept)
        if self.tracer is not None and m.type is MsgType.APPEND_RESP and not m.reject:
            self.tracer.on_ack(m.frm, m.index, len(self.node.conf.voters), self.node.role)
        if m.type is MsgType.PROPOSE and self.node.role is Role.LEADER:
            if self.rules.holding(self.node.term):
                # A new cluster whose rules are not decided yet: no request may apply before
                # the rules entry (docs/agent.md, "Rules versions"); stamped when stepped in.
                if not m.entries:
                    return  # proposes nothing: nothing to hold (review 35)
                # Each held message costs its entries and a fixed share for the objects
                # holding them, so many tiny ones are bounded in number too (review 35).
                size = HELD_MESSAGE_BYTES + sum(len(e.data) for e in m.entries)
                if self._held_forwarded_bytes + size > self.config.proposals_waiting_bytes_max:
                    self.drops.counts["propose_held_full"] += len(m.entries)
                    return
                self._held_forwarded.append(m)
                self._held_forwarded_bytes += size
                return
            self._step_forwarded(m)
            return
        self._step_checked(sender, m)

    def _step_forwarded(self, m: Message) -> None:
        """A PROPOSE a follower forwarded, at its leader: stamped, then stepped in."""
        # Forwarded proposals arrive unstamped: the leader stamps the log time it appends.
        # A "rules" entry is only ever a leader's own (docs/agent.md, "Rules versions"):
        # one forwarded (a former leader's, or a peer's) is dropped. Told from the stamped
        # bytes: stamping encodes a payload again canonically, while a peer's may spell the
        # same CBOR otherwise (a longer length header, indefinite lengths) and its head
        # would then pass is_rules (review 28).
        time_ms = self._stamp()
        stamped = (dataclasses.replace(e, data=stamp_payload(e.data, time_ms)) for e in m.entries)
        entries = tuple(e for e in stamped if not is_rules(e.data))
        if m.entries and not entries:
            return
        self.node.step(dataclasses.replace(m, entries=entries))

    def _step_checked(self, sender: str, m: Message) -> None:
        """Any other message that passed the checks: into the core."""
        if m.type is MsgType.SNAPSHOT:
            assert m.snapshot is not None
            self.shipping.stage_pending(None)  # the chunks sent before it
            if not self.shipping.staged_for(m):
                # The data did not (all) arrive: without it the core must not accept the
                # meta. The leader sends the snapshot again later.
                self.drops.drop("snapshot_without_data", f"from {sender} at {m.snapshot.index}")
                return
        if m.type is MsgType.APPEND and m.entries:
            self.counters["appends_received"] += 1
        self.node.step(m)

    def _impossible(self, m: Message) -> str | None:
        """Checks a well-formed message against facts the core asserts (non-Byzantine peers
        never break them); a message that would trip the core is dropped instead."""
        node = self.node
        if m.term > node.term + TERM_AHEAD_MAX:
            return f"a term more than TERM_AHEAD_MAX={TERM_AHEAD_MAX} above ours"
        if (
            m.term == node.term
            and node.role is Role.LEADER
            and m.type
            in (
                MsgType.APPEND,
                MsgType.HEARTBEAT,
                MsgType.SNAPSHOT,
            )
        ):
            return f"a second leader in term {m.term}"
        # A HEARTBEAT whose commit is past our log goes to the core: it must still teach its
        # term, and the core commits nothing past what it holds (issue 9, bug 6b).
        if m.type is MsgType.APPEND_RESP and not m.reject and m.index > node.last_index:
            return f"acknowledges index {m.index} beyond our last index {node.last_index}"
        return None

    def _only_unlisted_leader(self, sender: str) -> bool:
        """Known only as the unlisted leader that said HELLO: it may lead us, nothing more."""
        return self._is_unlisted_leader(sender) and not self._listed_peer(sender)

    def _on_join(self, sender: str, join: peer_codec.JoinRequest) -> None:
        if join.frm != sender:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent a join for {join.frm!r}")
            return
        if join.frm in self.node.conf.members():
            # Already added (the joiner repeats JOIN until it knows the initial configuration):
            # any member can tell it, the value is the same cluster-wide.
            if self._conf0 is not None:
                welcome = peer_codec.Welcome(self.id, join.frm, self._conf0)
                self.peers.send(join.frm, peer_codec.encode_welcome(welcome))
            return
        if self.node.role is not Role.LEADER:
            return  # the joiner asks every contact; only the leader adds it
        if self.rules.version > RULES_FIRST and (
            self.rules.said(join.frm, self.clock.monotonic()) is None
        ):
            # A joiner that did not say which rules it applies runs code older than rules
            # versions (this code tells them with every JOIN). It cannot refuse entries of
            # rules it does not know: it would apply the cluster's log as invalid payloads and
            # rules 1 and diverge, so it never joins a cluster past rules 1 (docs/agent.md,
            # "Rules versions"). A joiner whose code knows versions is added: past its
            # --rules-max it halts at the entry (rules_unknown), visibly, and diverges nowhere.
            self.drops.drop(
                "peer_join_refused",
                f"{join.frm} asked to join a cluster at rules {self.rules.version} without "
                "saying which rules it applies (code older than rules versions, or a build from "
                "before joiners said them with JOIN): upgrade it to this cluster's build",
            )
            return
        if len(self.node.conf.members()) >= PEERS_MAX:
            # JOIN is not authenticated: strangers must not grow the configuration past what
            # a snapshot meta may hold (peer_codec refuses more), or no snapshot could install.
            self.drops.drop(
                "peer_join_refused", f"{join.frm} asked to join: PEERS_MAX={PEERS_MAX} members"
            )
            return
        try:
            self.node.propose_conf_change(ConfChange("add_learner", join.frm, join.address))
        except Dropped as exc:
            log.debug("join of %s not proposed yet: %s", join.frm, exc.reason)
            return
        log.info("agent %s asked to join: proposing it as a learner at %s", join.frm, join.address)

    def _on_welcome(self, sender: str, welcome: peer_codec.Welcome) -> None:
        if welcome.frm != sender or welcome.to != self.id:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent a welcome for {welcome.to!r}")
            return
        if not self._awaiting_conf0:
            return  # a repeated answer
        node = self.node
        # The placeholder core never stepped a message: nothing is lost by replacing it.
        assert node.last_index == 0 and node.term == 0 and node.first_index == 1, node.term
        conf0 = welcome.conf0
        self.storage.store_initial(conf0)
        self._conf0 = conf0
        self._conf0_stored = True
        self._stored_conf = conf0
        self._awaiting_conf0 = False
        # Withholding votes until a leader gave it log state costs a new member nothing (it is
        # a learner until it caught up), and covers one that was promoted, lost its data
        # directory and joins again: its core could otherwise vote twice in a term.
        self._replace_core(conf0, storage_lost=True)
        log.info(
            "told the cluster's initial configuration by %s: voters %s; catching up",
            sender,
            ",".join(conf0.voters),
        )

    def _replace_core(self, conf: ConfState, *, storage_lost: bool) -> None:
        """Rebuilds the core of an empty store that never stepped a message or ticked (a
        joiner told its initial configuration, a voter done probing): nothing is lost."""
        node = self.node
        assert node.last_index == 0 and node.term == 0 and node.first_index == 1, node.term
        assert node.vote is None and self.applied == 0, (node.vote, self.applied)
        self.node = RaftNode(
            self.id,
            self._raft_config,
            self.io.rng,
            hard_state=HardState(0, None, 0),
            conf=conf,
            snapshot=None,
            entries=(),
            applied=0,
            storage_lost=storage_lost,
        )
        self.members.node = self.node
        self.shipping.node = self.node
        self._sync_peers()

    def _probe(self, now: float) -> None:
        """The start of a voter with an empty data directory: ask every peer whether it heard
        from us before. One did: we lost our data (DataLost, the agent does not start). All
        answered and none did: we are a new member (the cluster may exist: a late first start).
        No complete answer within timeout_ms_probe: start anyway (the residual case, see
        docs/agent.md). Whenever an answer shows the cluster exists (a term or a commit above
        0), the core starts with storage_lost: no vote until a leader gave it log state."""
        replies = self._probe_replies
        remembered = sorted((r.heard_term, r.frm) for r in replies.values() if r.heard_term > 0)
        if remembered:
            heard_term, peer = remembered[-1]
            raise DataLost(
                f"agent {self.id} starts as a voter with an empty data directory "
                f"({self.config.data_dir}), but peer {peer} heard from it at term {heard_term}: "
                "it lost its data, and as a fresh voter it could vote twice in one term and "
                "break the cluster's safety. Either restore its data directory, or add it back "
                f"as a new member: `superstatic members remove {self.id}`, then start it with an "
                "empty data directory, --listen ITS_PEER_ENDPOINT and --peers naming the other "
                "voters (it joins as a learner), and `superstatic members promote "
                f"{self.id}` once `superstatic members list` shows it caught up"
            )
        missing = [p for p in self._probe_peers if p not in replies]
        if not missing or now >= self._probe_deadline:
            self._probing = False
            exists = [r.frm for r in replies.values() if r.term > 0 or r.commit > 0]
            if missing:
                log.warning(
                    "no answer from %s within timeout_ms_probe=%d: starting as a fresh voter; if "
                    "this agent lost its data directory, stop it and add it back as a new "
                    "member (docs/agent.md)",
                    ",".join(missing),
                    self.config.timeout_ms_probe,
                )
            if exists:
                # We may still have voted before (to a candidate that is down, or one that
                # restarted since and forgot us): the core withholds votes until a leader
                # reaches it (docs/raft.md, "Empty storage").
                log.info(
                    "the cluster exists (%s answered) and never heard from us: a new member; no "
                    "vote until a leader gave us log state",
                    ",".join(exists),
                )
                assert self._conf0 is not None
                self._replace_core(self._conf0, storage_lost=True)
            return
        if now >= self._next_probe:
            self._next_probe = now + PROBE_RETRY_MS / 1000.0
            for peer in missing:
                self.peers.send(peer, peer_codec.encode_probe(peer_codec.Probe(self.id, peer)))

    def _on_probe(self, sender: str, probe: peer_codec.Probe) -> None:
        if probe.frm != sender or probe.to != self.id:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent a probe for {probe.to!r}")
            return
        reply = peer_codec.ProbeReply(
            self.id, sender, self.node.term, self.node.commit, self._heard_term.get(sender, 0)
        )
        self.peers.send(sender, peer_codec.encode_probe_reply(reply))

    def _on_probe_reply(self, sender: str, reply: peer_codec.ProbeReply) -> None:
        if reply.frm != sender or reply.to != self.id:
            self.drops.drop("peer_wrong_sender", f"{sender!r} sent a probe reply for {reply.to!r}")
            return
        self._probe_replies[sender] = reply

    # -- client frames -------------------------------------------------------------------------

    def _on_client_frames(self) -> None:
        now = self.clock.monotonic()
        frames = self.clients.recv()
        if frames:
            self._last_client_frame = now
        for identity, data, address, role in frames:
            self.streams.touch(identity, now)
            if role is None:
                # Its key was revoked after it connected: nothing of it is read, no stream.
                self.streams.unsubscribe(identity)
                refusal = self.auth.forbidden(None, None)
                self._refuse_key(identity, wire.salvage_req_id(data), refusal)
                continue
            try:
                frame = wire.decode(data, wire.CLIENT_TO_AGENT)
            except ProtocolError as exc:  # DecodeLimitExceeded (too_large) included
                self._refuse_client_frame(identity, data, exc)
                continue
            refusal = self.auth.forbidden(role, frame.type)
            if refusal is not None:
                self._refuse_key(identity, frame.req_id, refusal)
                continue
            try:
                # Every field of the frame's type, checked before any of it is used.
                proposal = wire.check_client_body(frame, body_bytes_max=self.config.body_bytes_max)
            except (ProtocolError, LimitExceeded) as exc:
                self._refuse_client_frame(identity, data, exc, frame.req_id, "client_bad_request")
                continue
            try:
                self._on_client_frame(identity, frame, now, address, proposal)
            except LimitExceeded as exc:
                self._refuse_client_frame(identity, data, exc, frame.req_id)
            except ProtocolError as exc:
                self._refuse_client_frame(identity, data, exc, frame.req_id, "client_bad_request")

    def _refuse_key(self, identity: bytes, req_id: int | None, reason: str | None) -> None:
        """ERROR forbidden (the app raises AuthError) for a frame its key may not send."""
        if req_id is not None and reason is not None:
            self._error(identity, req_id, wire.ErrorCode.FORBIDDEN, f"agent {self.id}: {reason}")

    def _refuse_client_frame(
        self,
        identity: bytes,
        data: bytes,
        exc: ProtocolError | LimitExceeded,
        req_id: int | None = None,
        category: str = "client_bad_frame",
    ) -> None:
        """Counts a refused frame (by reason) and answers ERROR when it has a readable req_id:
        too_large (naming the limit) for a size or count limit, else bad_request."""
        reason = getattr(exc, "reason", "")
        if isinstance(exc, LimitExceeded):
            category, code, reason = "client_too_large", wire.ErrorCode.TOO_LARGE, exc.limit_name
        else:
            code = wire.ErrorCode.BAD_REQUEST
        self.drops.drop(category, str(exc), reason)
        if req_id is None:
            req_id = wire.salvage_req_id(data)
        if req_id is not None:
            self._error(identity, req_id, code, str(exc))

    def _on_client_frame(
        self,
        identity: bytes,
        frame: wire.Frame,
        now: float,
        address: str = "",
        proposal: (
            wire.Proposal | list[wire.ManyItem] | wire.HeapRequest | wire.Subscription | None
        ) = None,
    ) -> None:
        t = frame.type
        if t is wire.FrameType.PROPOSE:
            if not isinstance(proposal, wire.Proposal):
                # parse_propose raises LimitExceeded (too_large) for a body above body_bytes_max.
                proposal = wire.parse_propose(frame, body_bytes_max=self.config.body_bytes_max)
            # Asked for stamps: answered by a REPLY even when this agent does not trace (the
            # app settles a traced write on its REPLY only, never on its event).
            traced = trace_asked(frame.body)
            self._on_propose(identity, frame.req_id, now, address, proposal, traced)
        elif t is wire.FrameType.PROPOSE_MANY:
            if not isinstance(proposal, list):
                proposal = wire.parse_propose_many(frame, body_bytes_max=self.config.body_bytes_max)
            self._on_propose_many(identity, now, address, proposal)
        elif t is wire.FrameType.PING:
            self.streams.ack(identity, frame.body, now)  # {"stream": [req_id, bytes]}
            # The leader this agent follows: an app sending its writes to the leader directly
            # learns of a change within a PING (docs/data-model-v2.md 8.4).
            self._reply(identity, frame.req_id, {"leader": self.node.leader})
        elif t is wire.FrameType.READ_INDEX:
            if len(self._reads_new) + self._reads_waiting() >= self.config.reads_waiting_max:
                self._error(
                    identity,
                    frame.req_id,
                    wire.ErrorCode.BUSY,
                    f"reads_waiting_max={self.config.reads_waiting_max} reached; retry",
                )
                return
            self._reads_new.append((identity, frame.req_id))
        elif t is wire.FrameType.SUBSCRIBE:
            self.streams.on_subscribe(identity, frame, now)
            if self.streams.refused_again:
                # Halted: an old library's resubscribe on a connection told already (review 35).
                self.drops.counts["subscribe_refused_again"] += self.streams.refused_again
                self.streams.refused_again = 0
        elif t in wire.HEAP_FRAMES:
            if not isinstance(proposal, wire.HeapRequest):
                proposal = wire.parse_heap_request(frame)
            self.streams.on_heap(identity, proposal, frame.req_id)
        elif t is wire.FrameType.UNSUBSCRIBE:
            self.streams.unsubscribe(identity)
            self._reply(identity, frame.req_id, {})
        elif t is wire.FrameType.HELLO:
            wire.field_str(frame, "client", chars_max=wire.CLIENT_ID_CHARS_MAX)
            if self.halted is not None:
                # An app must not settle here (its stream would be refused): the library
                # moves to its next endpoint, and pauses after a round of refusals.
                self._error(
                    identity,
                    frame.req_id,
                    wire.ErrorCode.UNAVAILABLE,
                    f"agent {self.id} stopped ({self.halted['reason']}): connect to another agent",
                )
                return
            self._reply(
                identity,
                frame.req_id,
                {
                    "agent": self.id,
                    "leader": self.node.leader,
                    "session_ttl_ms": self.config.session_ttl_ms,
                    "first_index": self.node.first_index,
                    "model": wire.DATA_MODEL,
                    "heap": wire.HEAP_VERSION,
                },
            )
        elif t is wire.FrameType.STATUS:
            self._reply(identity, frame.req_id, self.status())
        elif t is wire.FrameType.MEMBERS:
            request = wire.parse_members(frame)
            if request.op == "add_learner" and self.auth.peer_server_key(request.node) is None:
                # Keyed: the agents could not authenticate it, so it could never catch up.
                raise ProtocolError(
                    f"{request.node} has no public key in the allow list ({self.config.keys_dir}"
                    f"/agents/{request.node}.key): add it first (superstatic keys add)"
                )
            self.members.on_request(identity, frame, now)
        elif t is wire.FrameType.INSPECT:
            request = wire.parse_inspect(frame)
            if self.halted is not None and self.halted["reason"] == "damaged":
                raise ProtocolError("this agent's store is damaged: ask another agent")
            try:
                with self.storage.env.begin() as txn:
                    answer = self._inspect(txn, request)
            except Corrupt as exc:
                self._halt_damaged(exc)
                raise ProtocolError("this agent's store is damaged: ask another agent") from None
            self._reply(identity, frame.req_id, answer)
        else:  # pragma: no cover - wire.decode admits only CLIENT_TO_AGENT types
            raise ProtocolError(f"unexpected frame {t.name}")

    def _inspect(self, txn: lmdb.Transaction, request: wire.InspectRequest) -> dict[str, Any]:
        """INSPECT: a root's whole value (the original form), or the object-graph browser's
        answers (agent/inspector.py), each bounded; `applied` says as of which index."""
        if request.legacy:
            assert request.root is not None and len(request.root) <= ROOT_NAME_CHARS_MAX
            value = self.sm.node_json(txn, request.root)
            # A root always names a node, so None means "no such root". `applied` too: a reader
            # after a ReadIndex answer checks the value is as of at least that index.
            return {"found": value is not None, "value": value, "applied": self.applied}
        if request.list:
            answer = inspector.list_roots(
                txn, self.storage.dbs, request.limit or inspector.ROOTS_MAX
            )
        else:
            answer = inspector.show(
                txn,
                self.storage.dbs,
                root=request.root,
                path=request.path,
                oid=request.oid,
                depth=inspector.DEPTH_DEFAULT if request.depth is None else request.depth,
            )
        answer["applied"] = self.applied
        return answer

    def _on_propose_many(
        self, identity: bytes, now: float, address: str, items: list[wire.ManyItem]
    ) -> None:
        """A PROPOSE_MANY: each item is one PROPOSE, answered under its own req_id; they all
        arrived in this turn, so they go to the core together (one Ready: one write, one fsync,
        one APPEND per follower). An item refused alone (a bad field, a limit) leaves the
        others going."""
        self.counters["propose_many_frames"] += 1
        self.counters["propose_many_items"] += len(items)
        for item in items:
            if item.error is not None:
                self._refuse_client_frame(
                    identity, b"", item.error, item.req_id, "client_bad_request"
                )
                continue
            assert item.proposal is not None
            try:
                self._on_propose(identity, item.req_id, now, address, item.proposal, item.trace)
            except LimitExceeded as exc:
                self._refuse_client_frame(identity, b"", exc, item.req_id)
            except ProtocolError as exc:
                self._refuse_client_frame(identity, b"", exc, item.req_id, "client_bad_request")

    def _on_propose(
        self,
        identity: bytes,
        req_id: int,
        now: float,
        address: str,
        proposal: wire.Proposal,
        traced: bool = False,
    ) -> None:
        recv_ns = time.monotonic_ns() if self.tracer is not None else 0
        if proposal.kind == "txn":
            # The body goes into the log and every replica decodes it: scanned here (items,
            # depth, registered tags only) so no entry can cost a replica more than its limits.
            codec.scan(proposal.body, self._txn_limits)
        if proposal.kind == "close":
            self.admission.forget(identity, address, proposal.client)
        else:
            refusal = self.admission.admit(identity, address, proposal.client, now)
            if refusal is not None:
                self.drops.drop("client_sessions_refused", refusal)
                self._error(identity, req_id, wire.ErrorCode.TOO_LARGE, refusal)
                return
        if self._waiting >= self.config.proposals_waiting_max:
            self._error(
                identity,
                req_id,
                wire.ErrorCode.BUSY,
                f"proposals_waiting_max={self.config.proposals_waiting_max} reached; retry later "
                "with the same seq",
            )
            return
        key = (proposal.client, proposal.seq)
        # The leader stamps log time as it encodes (the stamp `_flush_proposals` would give
        # it); a follower's stays unstamped, and its leader stamps it on arrival
        # (_on_peer_message), so one host's clock never reaches the log unbounded (logtime.py).
        stamp_term = time_ms = 0
        if self.node.role is Role.LEADER:
            stamp = self._batch_stamp
            if stamp is None or stamp[0] != self.node.term:
                stamp = self._batch_stamp = (self.node.term, self._stamp())
            stamp_term, time_ms = stamp
        data = encode_payload(
            Payload(
                proposal.kind,
                proposal.client,
                proposal.seq,
                proposal.seq_low,
                time_ms,
                proposal.body,
                proposal.session,
            )
        )
        if self._waiting_bytes + len(data) > self.config.proposals_waiting_bytes_max:
            self._error(
                identity,
                req_id,
                wire.ErrorCode.BUSY,
                f"proposals_waiting_bytes_max={self.config.proposals_waiting_bytes_max} "
                "reached; retry later with the same seq",
            )
            return
        deadline = now + self.config.timeout_ms_proposal / 1000.0
        waiter = Waiter(
            identity,
            req_id,
            deadline,
            data,
            traced=traced,
            stamp_term=stamp_term,
            reply_many=proposal.reply_many,
        )
        self._waiters.setdefault(key, []).append(waiter)
        self._waiter_queue.append((waiter.deadline, key, waiter))
        self._waiting += 1
        self._waiting_bytes += len(data)
        self._batch.append((data, key, waiter))
        self._batch_bytes += len(data)
        if traced and self.tracer is not None:
            self.tracer.on_propose(key, recv_ns)

    def _flush_proposals(self) -> None:
        self._batch_stamp = None  # the next batch takes a new stamp
        if self.node.role is Role.LEADER and self.rules.checked_term != self.node.term:
            self._rules_first()
        if self.halted is None and self._rules_decide_new():
            return  # held until the new cluster's rules are decided (RULES_NEW_WAIT_MS)
        self._flush_batch()
        if self._held_forwarded and self.halted is None:
            self._release_held_forwarded()  # behind the rules entry and our own proposals

    def _flush_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._batch_bytes = 0
        if self.halted is not None:
            message = f"not proposed: this agent stopped ({self.halted['reason']}): " + str(
                self.halted["message"]
            )
            code = wire.ErrorCode.UNAVAILABLE
            if self.halted["reason"] == "store_full":
                code = wire.ErrorCode.STORE_FULL
            for _, key, waiter in batch:
                self._refuse_new(key, waiter, code, message, None)
            return
        batch = self._admit_for_space(batch)
        if self.node.role is Role.LEADER:
            # Log time: stamped only by the leader that appends; a follower forwards the
            # entries unstamped and their leader stamps them on arrival (_on_peer_message), so
            # one host's clock never reaches the log unbounded (logtime.py). Those stamped on
            # arrival by this leadership (_on_propose) are as they are; the others (proposed
            # again after a leader change, arrived while not leading) are stamped now.
            term = self.node.term
            if any(waiter is None or waiter.stamp_term != term for _, _, waiter in batch):
                time_ms = self._stamp()
                batch = [
                    (data, key, waiter)
                    if waiter is not None and waiter.stamp_term == term
                    else (stamp_payload(data, time_ms), key, waiter)
                    for data, key, waiter in batch
                ]
        # Group commit: everything that arrived this turn goes to the core now, so it lands in
        # one Ready. Split only to keep each call (and so each forwarded PROPOSE message) under
        # the byte bound of an APPEND.
        start = 0
        while start < len(batch):
            end = start
            size = 0
            while end < len(batch) and (
                end == start or size + len(batch[end][0]) <= self.config.batch_bytes_max
            ):
                size += len(batch[end][0])
                end += 1
            try:
                self.node.propose([data for data, _, _ in batch[start:end]])
            except Dropped as exc:
                code = _DROPPED_CODE.get(exc.reason, wire.ErrorCode.BUSY)
                message = f"not proposed ({exc.reason}); retry with the same seq"
                for _, key, waiter in batch[start:]:
                    self._refuse_new(key, waiter, code, message, exc.leader)
                return
            for _, _, waiter in batch[start:end]:
                if waiter is not None:
                    waiter.proposed = True
            self.counters["proposed"] += end - start
            if self.tracer is not None:
                self.tracer.on_proposed([key for _, key, _ in batch[start:end]])
            start = end

    def _admit_for_space(
        self, batch: list[tuple[bytes, tuple[str, int], Waiter | None]]
    ) -> list[tuple[bytes, tuple[str, int], Waiter | None]]:
        """Refuses (store_full) the proposals a nearly full store cannot take; writes that only
        delete still go, so an app can make room. Every admitted proposal counts against the
        free space until the next measurement, so one turn cannot overshoot the reserve. A
        proposal made again after a leader change is dropped but never refused: it may be in
        some log already; its waiter waits."""
        admitted = []
        for data, key, waiter in batch:
            if self._store_full() and not only_removes(data):
                self._store_refused += 1
                space = self._space
                self._refuse_new(
                    key,
                    waiter,
                    wire.ErrorCode.STORE_FULL,
                    f"agent {self.id}'s store is full: {space.free_bytes} bytes free of "
                    f"--map-bytes {space.map_bytes} (disk free {space.disk_free_bytes}), below "
                    f"the reserve {self.config.store_reserve_bytes}; nothing was written. Delete "
                    "data (writes that only delete are accepted), or restart the agents with a "
                    "larger --map-bytes or more disk",
                    None,
                )
                continue
            # An entry costs its log copy, its body's change to records (copy on write) and
            # its outcome: a few times its size until the store is measured again.
            self._space_taken += SPACE_PER_ENTRY_BYTES_FACTOR * len(data)
            admitted.append((data, key, waiter))
        return admitted

    def _settle(self, waiter: Waiter) -> None:
        """A waiter is answered: it no longer counts, nor keeps its entry's bytes (an answered
        waiter may linger in _waiter_queue until its deadline)."""
        assert not waiter.answered
        waiter.answered = True
        self._waiting -= 1
        self._waiting_bytes -= len(waiter.data)
        waiter.data = b""

    def _refuse_new(
        self,
        key: tuple[str, int],
        waiter: Waiter | None,
        code: wire.ErrorCode,
        message: str,
        leader: str | None,
    ) -> None:
        """Answers a refusal that says "not proposed" (not_leader, busy, store_full) to the
        attempt it is true of: a new PROPOSE whose entry never reached the core. An earlier
        attempt at the same (client, seq) may be in some log (forwarded to a leader, or
        appended) and keeps waiting for its entry to apply, or for timeout_ms_proposal and
        "outcome unknown" (issue 9, bug 2). `waiter` None: a proposal made again, not refused."""
        if waiter is None or waiter.answered:
            return
        assert not waiter.proposed, ("refusing a proposal that may commit", key)
        self._settle(waiter)
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[key]
        self._error(waiter.identity, waiter.req_id, code, message, leader)

    def _fail_waiters(
        self, key: tuple[str, int], code: wire.ErrorCode, message: str, leader: str | None
    ) -> None:
        for waiter in self._waiters.pop(key, []):
            if not waiter.answered:
                self._settle(waiter)
                self._error(waiter.identity, waiter.req_id, code, message, leader)

    def _answer_applied(self, results: list[Applied]) -> None:
        # Every REPLY of the loop, per connection in the order its entries applied, sent after
        # the loop: those of waiters that read REPLY_MANY share frames (docs/data-model-v2.md
        # 8.11); [req_id, body, shared].
        answers: dict[bytes, list[tuple[int, dict[str, Any], bool]]] = {}
        for applied in results:
            if applied.client is None or applied.seq is None:
                continue
            waiters = self._waiters.pop((applied.client, applied.seq), None)
            if not waiters:
                continue
            if applied.outcome == "session_expired":
                # True of the attempts that named this session only. A late copy of an attempt
                # naming a session that expired (a re-proposal, a forward delivered late) must
                # not answer a resend in the client's new session: the client would take that
                # session for expired too and send the write a third time, while the resend's
                # own entry applies in the new session (applied twice).
                waiters = self._keep_other_sessions(applied, waiters)
            reply = reply_of(applied)
            if self.tracer is not None:
                reply = self.tracer.reply_body(applied.index, reply)
            now = self.clock.monotonic()
            for waiter in waiters:
                if not waiter.answered:
                    self._settle(waiter)
                    # One frame back per call (docs/data-model-v2.md 8.2): an app that asked to
                    # be answered by its stream, and whose stream will carry this entry's event,
                    # settles on the event; the REPLY would carry the same news. Only "ok": the
                    # other outcomes carry what the event does not (an error text, a dup's
                    # first index, session_expired's rules), and keep their REPLY.
                    if not (
                        applied.outcome == "ok"
                        and not waiter.traced
                        and self.streams.answers_by_event(
                            waiter.identity, applied.index, applied.client
                        )
                    ):
                        shared = waiter.reply_many and not waiter.traced
                        answers.setdefault(waiter.identity, []).append(
                            (waiter.req_id, reply, shared)
                        )
                    self.observer.on_answered(waiter.deadline, applied.outcome, now)
        for identity, replies in answers.items():
            self._answer_connection(identity, replies)

    def _answer_connection(
        self, identity: bytes, replies: list[tuple[int, dict[str, Any], bool]]
    ) -> None:
        """One connection's REPLYs of a Ready, in the order their entries applied: a run of
        shared ones in REPLY_MANY frames, the others (a traced write's, an app's that predates
        REPLY_MANY) as REPLYs where they fall. The app relies on that order: a session_expired
        answer settles the session's other waiting writes as outcome unknown, so an earlier
        entry's "ok" must not come after it (review 24, data-model-v2.md 8.11)."""
        run: list[list[Any]] = []
        for req_id, body, shared in replies:
            if shared:
                run.append([req_id, body])
                continue
            if run:
                self._reply_many(identity, run)
                run = []
            self._reply(identity, req_id, body)
        if run:
            self._reply_many(identity, run)

    def _keep_other_sessions(self, applied: Applied, waiters: list[Waiter]) -> list[Waiter]:
        """The waiters `applied` answers; those of the same (client, seq) whose attempt named
        another session go back to waiting for their own entry."""
        answered, others = [], []
        for waiter in waiters:
            if waiter.answered or parse_payload(waiter.data).session == applied.session:
                answered.append(waiter)
            else:
                others.append(waiter)
        if others:
            assert applied.client is not None and applied.seq is not None
            self._waiters[(applied.client, applied.seq)] = others
        return answered

    def _flush_reads(self, now: float) -> None:
        if not self._reads_new:
            return
        requests, self._reads_new = self._reads_new, []
        if self.halted is not None:
            for identity, req_id in requests:
                message = f"this agent stopped ({self.halted['reason']}); ask another agent"
                self._error(identity, req_id, wire.ErrorCode.UNAVAILABLE, message)
            return
        # One ReadIndex round answers every read that arrived this turn.
        context = f"{self.id}.{self._read_nonce}.{next(self._read_ids)}".encode()
        try:
            self.node.read_index(context)
        except Dropped as exc:
            code = _DROPPED_CODE.get(exc.reason, wire.ErrorCode.UNAVAILABLE)
            for identity, req_id in requests:
                self._error(identity, req_id, code, f"read not started: {exc.reason}", exc.leader)
            return
        self._reads[context] = ReadWait(now + self.config.timeout_ms_read / 1000.0, requests)

    def _reads_waiting(self) -> int:
        return sum(len(wait.requests) for wait in self._reads.values())

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, identity: bytes, req_id: int, body: dict[str, Any]) -> None:
        self._send(identity, wire.FrameType.REPLY, req_id, body)

    def _reply_many(self, identity: bytes, items: list[list[Any]]) -> None:
        """The REPLYs `items` ([req_id, body]) to one connection: a lone one as a REPLY, more
        in REPLY_MANY frames of at most REPLY_ITEMS_MAX. A chunk above FRAME_BYTES_MAX (long
        error texts) goes as REPLYs, each then bounded on its own as any REPLY is."""
        if len(items) == 1:
            self._reply(identity, items[0][0], items[0][1])
            return
        step = wire.REPLY_ITEMS_MAX
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            try:
                data = wire.encode(wire.FrameType.REPLY_MANY, 0, wire.reply_many_body(chunk))
            except LimitExceeded:
                for req_id, body in chunk:
                    self._reply(identity, req_id, body)
                continue
            result = self.clients.send(identity, data)
            if result != "ok":
                # Counted as one frame lost, as a REPLY is; not as sent (the counters below
                # give the share of answers that went in REPLY_MANY frames).
                self.drops.counts[f"client_reply_{result}"] += 1
                continue
            self.counters["reply_many_frames"] += 1
            self.counters["reply_many_items"] += len(chunk)

    def _error(
        self,
        identity: bytes,
        req_id: int,
        code: wire.ErrorCode,
        message: str,
        leader: str | None = None,
    ) -> None:
        # A halted agent's `unavailable` names its reason in a field of its own (a word of
        # wire.HALT_REASONS), so the app can name it when it gives up (docs/library.md).
        halted = (
            self.halted["reason"]
            if self.halted is not None and code is wire.ErrorCode.UNAVAILABLE
            else None
        )
        body = wire.error_body(
            code, message, leader if leader is not None else self.node.leader, halted
        )
        self.observer.on_error(code.value)
        self._send(identity, wire.FrameType.ERROR, req_id, body)

    def _send(self, identity: bytes, frame_type: wire.FrameType, req_id: int, body: Any) -> None:
        try:
            data = wire.encode(frame_type, req_id, body)
        except LimitExceeded as exc:
            data = wire.encode(
                wire.FrameType.ERROR,
                req_id,
                wire.error_body(wire.ErrorCode.TOO_LARGE, str(exc), self.node.leader),
            )
        result = self.clients.send(identity, data)
        if result != "ok":
            self.drops.counts[f"client_reply_{result}"] += 1

    # -- housekeeping --------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        self._refresh_space()
        self._hand_off_if_full(now)
        self.observer.housekeeping(now)
        idle_ms = self.config.exit_when_idle_ms
        if idle_ms and (now - self._last_client_frame) * 1000 > idle_ms:
            log.info("no app sent anything for %d ms (--exit-when-idle-ms): exiting", idle_ms)
            self._stop = True
        while self._waiter_queue and self._waiter_queue[0][0] <= now:
            _, key, waiter = self._waiter_queue.popleft()
            if waiter.answered:
                continue
            self._settle(waiter)
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]
            self._error(
                waiter.identity,
                waiter.req_id,
                wire.ErrorCode.UNAVAILABLE,
                f"not applied within timeout_ms_proposal={self.config.timeout_ms_proposal}; the "
                "outcome is unknown: retry with the same seq to learn it",
            )
        # Answered waiters linger in the queue until their deadline; bound that too.
        while self._waiter_queue and self._waiter_queue[0][2].answered:
            self._waiter_queue.popleft()
        if self.members.waiting():
            self.members.settle(now, self.applied)
        for context, wait in list(self._reads.items()):
            if wait.deadline <= now:
                del self._reads[context]
                for identity, req_id in wait.requests:
                    self._error(
                        identity,
                        req_id,
                        wire.ErrorCode.UNAVAILABLE,
                        f"read not confirmed within timeout_ms_read={self.config.timeout_ms_read}",
                    )
        self.streams.drop_silent(now)
        if self.auth.housekeeping(now):
            self._sync_peers()  # connect to members whose keys are now listed, drop revoked
        self.peers.retry_refused(now)
        self._forget_quiet_unlisted_leader(now)
        self._say_hello(now)
        if self.halted is None:
            self._rules_housekeeping(now)
        if self._repair_until and self.applied >= self._repair_until and self.halted is None:
            self.storage.repair_done()
            self._repair_until = 0
            if self.repair is not None:
                self.repair["done"] = True
            log.info("repair complete: applied %d, votes again", self.applied)
        self.admission.sweep(now)
        if (
            self.config.listen_endpoint
            and (self._awaiting_conf0 or self.id not in self.node.conf.members())
            and now >= self._next_join
        ):
            self._next_join = now + JOIN_RETRY_MS / 1000.0
            join = peer_codec.encode_join(self.id, self.config.listen_endpoint)
            for node in self.config.peers:
                if node != self.id:
                    # What we apply first: a leader past rules 1 adds only a joiner that said
                    # (_on_join). A leader older than versions counts the frame as bad: no harm.
                    known = peer_codec.RulesKnown(self.id, node, self.config.rules_max)
                    self.peers.send(node, peer_codec.encode_rules_known(known))
                    self.peers.send(node, join)

    def _maybe_compact(self) -> None:
        retain = self.config.log_retain_entries
        retain_bytes = self.config.log_retain_bytes
        base = self.node.first_index - 1
        low = self._space.free_bytes < 2 * self.config.store_reserve_bytes
        if low and self.applied > base:
            # The retained log is the first thing to give up when space runs short (before
            # writes are refused at the reserve): followers that lag behind it are sent a
            # snapshot instead.
            upto = self.applied
        elif self.applied - base >= retain + max(1, retain // 2):
            upto = self.applied - retain
        elif self._log_retained_bytes() >= retain_bytes + retain_bytes // 2:
            # Bytes, not only entries: the core holds the log in memory. Keep the newest
            # entries that fit log_retain_bytes (at least one compaction's worth goes).
            upto = self.applied - self._entries_within(retain_bytes)
        else:
            return
        try:
            meta = self.storage.compact(upto)
        except Corrupt as exc:
            self._halt_damaged(exc)
            return
        except (lmdb.Error, OSError, LogFailed) as exc:
            self._halt_store_full(exc)
            return
        if meta is not None:
            self.node.compact(meta)
            dropped = min(len(self._log_bytes), meta.index - base)
            for _ in range(dropped):
                self._log_bytes_base = self._log_bytes.popleft()
            log.info("compacted the log up to index %d", meta.index)

    def _entries_within(self, size_bytes: int) -> int:
        """How many of the newest applied entries fit in size_bytes."""
        total = self._log_bytes[-1] if self._log_bytes else self._log_bytes_base
        count = 0
        for cumulative in reversed(self._log_bytes):
            if total - cumulative > size_bytes:
                break
            count += 1
        return max(0, count - 1)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        status = status_map.build(
            self.node,
            applied=self.applied,
            dropped=self.drops.snapshot(),
            disk_bytes=self.storage.disk_bytes(),
            syncs=self.storage.syncs,
            clients={
                "proposals_waiting": self._waiting,
                "reads_waiting": self._reads_waiting(),
                "subscribers": self.streams.count(),
            },
            uptime_s=self.clock.monotonic() - self.started,
            tick_ms=self.config.tick_ms,
            fsync=self.config.fsync,
            counters={**self.counters, "snapshots_shipped": self.shipping.shipped},
            halted=self.halted,
            auth=self.auth.status(),
            store={
                "format": FORMAT_OWN_LOG,
                "record_bytes_max": self.config.record_bytes_max,
                "repair": self.repair,
                "map_bytes": self._space.map_bytes,
                "used_bytes": self._space.used_bytes,
                "free_bytes": self._space.free_bytes,
                "disk_free_bytes": self._space.disk_free_bytes,
                "reserve_bytes": self.config.store_reserve_bytes,
                "full": self._store_full(),
                "writes_refused": self._store_refused,
                "appends_refused": self._appends_refused,
                # Rolls to a new Raft log segment with no spare ready (its making waited for
                # or done on the loop), and spares whose making failed: agent/logsegments.py.
                "log_spare_misses": self.storage.log.spare_misses,
                "log_spare_failures": self.storage.log.spare_failures,
            },
        )
        status["rules"] = self.rules.status()
        return self.observer.extend_status(status)


_RULES_FIX = (
    "Applying on with older rules would diverge from the rest of the cluster, so this agent "
    "does not: run a superstatic that knows that rules version on this host (or raise its "
    "--rules-max), then start the agent again; it carries on from where it stopped. Until "
    "then it answers STATUS and INSPECT (what it applied), and refuses writes and streams."
)


def _check_log_segments(storage: Storage, config: AgentConfig) -> None:
    """StartRefused if the store's log segments (their size stored with the store, made by
    an earlier start's --log-segment-bytes) are smaller than twice this agent's largest entry
    (AgentConfig's rule for a new log): otherwise the first such entry raises LimitExceeded
    out of Storage.write, which the loop does not catch, and the agent crash-loops."""
    segment_bytes = storage.log.segment_bytes
    if segment_bytes >= 2 * config.entry_bytes_max:
        return
    raise StartRefused(
        f"{storage.path}: this agent's body_bytes_max {config.body_bytes_max} allows Raft "
        f"entries of up to {config.entry_bytes_max} bytes (with GC_COLLECTED_BYTES_MAX and "
        f"the frame envelope), which need log segments of at least "
        f"{2 * config.entry_bytes_max} bytes; this store's log was made with "
        f"log_segment_bytes {segment_bytes} (kept with the store: --log-segment-bytes does "
        "not change it). Start with the body limit the store was made for, or move the "
        "member to a new --data-dir (remove it from the cluster, add it back as a learner)."
    )


def reply_of(applied: Applied) -> dict[str, Any]:
    """The PROPOSE reply for an applied entry: a duplicate is answered with the outcome of the
    entry that first applied its (client, seq)."""
    if applied.outcome == "dup":
        return {
            "index": applied.first_index,
            "outcome": applied.first_outcome,
            "error": applied.error,
            "dup": True,
        }
    return {
        "index": applied.index,
        "outcome": applied.outcome,
        "error": applied.error,
        "dup": False,
    }


def salvage_req_id(data: bytes) -> int | None:
    """The req_id of a frame that failed validation, if one can be read, to answer ERROR
    (read from the frame's first CBOR headers only: nothing is decoded)."""
    return wire.salvage_req_id(data)
