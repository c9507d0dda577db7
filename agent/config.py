"""The agent's configuration: every tuning knob and limit, with its safe default.

`agent/cli.py` fills an `AgentConfig` from the command line; the server, transport and tests
read it. Units are last in every name. Limits that never need tuning are module constants where
they are used; the ones here are flags because a deployment may reasonably change them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from superstatic_agent.logtime import SKEW_PER_TTL_MAX
from superstatic_agent.ports import CLOCK_OFFSET_MS_MAX
from superstatic_agent.rules import RULES_FIRST, RULES_NEWEST

from superstatic.protocol import wire
from superstatic.protocol.errors import LimitExceeded

# The biggest peer frame we accept. An APPEND carries at most batch_bytes_max of entry data
# except that a single larger entry goes alone (else it could never replicate), so the bound is
# the largest client body plus generous room for the message envelope.
PEER_FRAME_BYTES_MAX = 64 << 20
# Envelope room reserved in PEER_FRAME_BYTES_MAX above the entry data an APPEND may carry.
PEER_FRAME_ENVELOPE_BYTES = 1 << 20
# Room kept in a client frame (wire.FRAME_BYTES_MAX) around the one record, body or batch it
# carries: the frame envelope, an event's other fields, a record's oid.
CLIENT_FRAME_ENVELOPE_BYTES = 64 << 10
# The object ids one entry's garbage collection may delete, in bytes (about 80,000 typical
# ids): they travel in that entry's stream event, which must fit one client frame beside the
# entry's body. The rest of the garbage goes at the next collections.
GC_COLLECTED_BYTES_MAX = 2 << 20
# The LMDB map (--map-bytes): LMDB only reserves address space, the file grows as pages are
# used, so the default is generous; the disk's free space is the other ceiling (both count).
MAP_BYTES_DEFAULT = 8 << 30
# The smallest map an agent runs with: room for the databases' own pages and a few writes.
MAP_BYTES_MIN = 16 << 20
# The Raft log's segment size (--log-segment-bytes; agent/logsegments.py): each is written with
# zeros when made, so that an append's fdatasync flushes data alone (docs/data-model-v2.md
# 8.16). Stored with a new log; an existing one keeps its own. At most LOG_SEGMENT_BYTES_MAX
# (the record format's offsets are 4 bytes); at least room for the largest entry twice over.
LOG_SEGMENT_BYTES_DEFAULT = 64 << 20
LOG_SEGMENT_BYTES_MAX = 1 << 30
# Free space (of the map, or of the disk under it) kept in reserve: below map_bytes / this an
# agent refuses new writes (they would fill it), below half of it a follower refuses to append
# entries (it stops acknowledging); what is left is room to apply entries already logged.
STORE_RESERVE_DIVISOR = 8
# Node ids appear in logs, status and every peer message; keep them short and printable.
NODE_ID_CHARS_MAX = 64
# A cluster this size is already far beyond what Raft groups are used for.
PEERS_MAX = 64
# Entries one APPEND (or forwarded PROPOSE) may carry; --batch-entries-max is at most this.
PEER_ENTRIES_PER_MESSAGE_MAX = 65_536


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node_id: str
    data_dir: Path
    peers: dict[str, str]  # voter id -> peer endpoint, the --peers list
    client_endpoint: str
    listen_endpoint: str = ""  # --listen: where a learner (not in --peers) binds its peer socket
    tick_ms: int = 10
    election_ticks: int = 30  # 300 ms at the default tick: three agents share two cores here
    heartbeat_ticks: int = 5
    batch_entries_max: int = 512  # entries per APPEND (RaftConfig.append_entries_max)
    batch_bytes_max: int = 4 << 20  # entry data per APPEND (RaftConfig.append_bytes_max)
    inflight_max: int = 64  # unacknowledged APPENDs per follower
    proposals_pending_max: int = 65_536  # uncommitted entries at the leader
    # Committed entries applied per Ready (RaftConfig.committed_per_ready_max). Applying costs
    # ~0.1-0.4 ms of Python per entry: 512 keeps one Ready's apply well under a heartbeat
    # interval, so an overloaded leader keeps its followers (and its quorum) informed.
    apply_batch_max: int = 512
    # ... and entry bytes applied per Ready (RaftConfig.committed_bytes_per_ready_max): one
    # LMDB write transaction's dirty pages stay allocated until the store closes, and a Ready
    # of 512 large entries (a follower catching up on bulk loads) was a loop turn of a minute.
    apply_batch_bytes_max: int = 4 << 20
    session_ttl_ms: int = 60_000
    # How far a leader's wall clock may pull the log time it stamps away from the time it
    # inherited plus the time it has led (logtime.py); at most session_ttl_ms / 10 is used.
    log_time_skew_ms_max: int = 1_000
    log_retain_entries: int = 100_000  # applied entries kept in the log before compacting
    # A follower whose log ends more than this many entries, or this many bytes of entry data,
    # below the leader's applied index is sent a peer snapshot instead of the log
    # (RaftConfig.snapshot_lag_*; docs/data-model-v2.md section 10): a follower restarted
    # after a bulk load installs records instead of applying every op again.
    snapshot_lag_entries_max: int = 10_000
    snapshot_lag_bytes_max: int = 4 << 20
    fsync: bool = True
    trace: bool = False  # --trace: stamp traced PROPOSEs' hops (docs/performance.md)
    log_level: str = "info"
    body_bytes_max: int = 8 << 20  # a PROPOSE body (one transaction)
    proposals_waiting_max: int = 100_000  # PROPOSEs waiting for their entry to apply here
    timeout_ms_proposal: int = 30_000  # a waiting PROPOSE is answered "unavailable" after this
    timeout_ms_read: int = 10_000  # a READ_INDEX not confirmed by then is answered "unavailable"
    reads_waiting_max: int = 10_000
    subscribers_max: int = 1_024
    subscriber_silence_ms: int = 15_000  # no PING/anything from a subscriber for this long: drop
    events_frame_entries_max: int = 1_024  # events in one EVENTS frame
    events_frame_bytes_max: int = 4 << 20  # bytes of event bodies in one EVENTS frame
    stream_frames_per_turn_max: int = 8  # EVENTS/SNAPSHOT frames sent to one subscriber per turn
    snapshot_chunk_bytes_max: int = 1 << 20  # one SNAPSHOT frame (clients) / chunk (peers)
    # The largest node record (the root table included) a write may leave; a write past it is
    # refused at apply with an error naming it. Every agent of a cluster must run the same
    # value: it decides outcomes (like session_ttl_ms). Bounded so one record always fits a
    # client frame (wire.FRAME_BYTES_MAX less room for the frame around it).
    record_bytes_max: int = 8 << 20
    # The newest state-machine rules version this agent applies (agent/rules.py; docs/agent.md
    # "Rules versions"): the cluster moves up only when every member applies a version, and a
    # member meeting a later one stops applying. Lower than RULES_NEWEST: holds the cluster at
    # older rules (e.g. to keep a rollback to an older superstatic open during an upgrade).
    rules_max: int = RULES_NEWEST
    # -- Memory in bytes (docs/agent.md, "Memory": the worst case as a formula of these) --
    # Applied events kept in memory to feed subscribers (older ones are read from LMDB).
    events_cache_bytes_max: int = 32 << 20
    # Records' bytes the state machine keeps decoded between and within apply batches
    # (decoded they take up to DECODED_NODE_FACTOR times that).
    node_cache_bytes_max: int = 16 << 20
    # Applied log entries' bytes kept (beside log_retain_entries): the Raft core holds the
    # retained log in memory, so this bounds it (compaction keeps 1 to 1.5 times it).
    log_retain_bytes: int = 128 << 20
    # Stream bytes sent to one app and not yet acknowledged by it (its PINGs carry what it
    # received): nothing more goes to its queues past this.
    subscriber_backlog_bytes_max: int = 8 << 20
    # A subscriber whose backlog stayed full (no acknowledgement) this long is dropped.
    subscriber_stall_ms: int = 15_000
    # Held-set entries (nodes a partial subscriber holds, docs/virtual-heap.md section 4.1),
    # each counted HELD_ENTRY_BYTES: per subscriber, and over all of this agent's. A LOAD or
    # HOLD past either is refused too_large naming it.
    subscriber_held_max: int = 1_000_000
    held_entries_max: int = 4_000_000
    # Bytes of the entries PROPOSEs waiting here keep (to propose them again after a leader
    # change): beside proposals_waiting_max, a bound that holds for 8 MiB bodies too.
    proposals_waiting_bytes_max: int = 128 << 20
    # LMDB map size: the ceiling on the data file (--map-bytes). Below STORE_RESERVE_DIVISOR of
    # it free, writes are refused (StoreFull); see docs/agent.md, "A full store".
    map_bytes: int = MAP_BYTES_DEFAULT
    # The Raft log's segment size when this agent makes its log (LOG_SEGMENT_BYTES_DEFAULT).
    log_segment_bytes: int = LOG_SEGMENT_BYTES_DEFAULT
    # >0: exit (cleanly) once no app has sent anything for this long. The embedded agent the
    # library starts for one directory uses it, so it does not outlive its apps.
    exit_when_idle_ms: int = 0
    # -- Limits against hostile input (docs/agent.md "Limits and hostile input") --
    # ZeroMQ queues count frames, never bytes, and per connection: a queue holds at most
    # (frames + 1) * the socket's largest frame (MAXMSGSIZE) bytes. The receive queues are
    # the ones a stranger fills, so they are short; frames beyond wait in the sender's queue
    # and TCP (back-pressure, nothing is dropped).
    client_recv_queue_frames_max: int = 16  # RCVHWM per app connection (x FRAME_BYTES_MAX)
    client_send_queue_frames_max: int = 10_000  # SNDHWM per app connection (replies, streams)
    peer_recv_queue_frames_max: int = 8  # RCVHWM per peer connection (x peer_frame_bytes_max)
    peer_send_queue_frames_max: int = 10_000  # SNDHWM per peer (Raft's window bounds its bytes)
    # The largest peer frame accepted (MAXMSGSIZE of the peer socket; a bigger frame costs its
    # sender the connection). Must hold an APPEND of batch_bytes_max or one body_bytes_max
    # entry, and a snapshot chunk, plus envelope.
    peer_frame_bytes_max: int = PEER_FRAME_BYTES_MAX
    # Bytes taken from one socket per loop turn (besides the frame counts in transport.py): a
    # turn must also tick, write and answer, whatever size the waiting frames have.
    recv_bytes_per_turn_max: int = 64 << 20
    # Client sessions (client ids proposing) live through one connection (ZeroMQ identity)
    # and from one address at once: one connection opening sessions by the thousand must not
    # fill the cluster's SESSIONS_MAX and lock every other app out.
    sessions_per_connection_max: int = 64
    sessions_per_address_max: int = 4_096
    # -- Operability (docs/operations.md) --
    # HOST:PORT of the HTTP port serving /metrics (Prometheus) and the status page; "" = off.
    metrics_endpoint: str = ""
    # "text" (readable, the default) or "json" (one object per line: agent/logs.py).
    log_format: str = "text"
    # -- Security (docs/security.md) --
    # --keys DIR: CURVE on both ports with the keys and allow lists of DIR (agent/auth.py).
    keys_dir: Path | None = None
    # --insecure: allows binding an unauthenticated port to a non-loopback address: the peer
    # and client ports without --keys (logged and in STATUS), and --metrics.
    insecure: bool = False
    # Shifts this agent's wall clock (a test and operations knob: reproduces a host whose clock
    # is wrong, without libfaketime). Only the log time a leader stamps reads the wall clock,
    # and that is bounded (docs/agent.md, "Log time").
    clock_offset_ms: int = 0
    # A voter starting with an empty data directory waits at most this long for its peers to
    # say whether they heard from it before (docs/agent.md, "A voter that lost its data").
    timeout_ms_probe: int = 3_000

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        if not 1 <= len(self.peers) <= PEERS_MAX:
            raise ValueError(f"--peers must list 1..{PEERS_MAX} voters, got {len(self.peers)}")
        for peer in self.peers:
            check_node_id(peer)
        if self.node_id not in self.peers and not self.listen_endpoint:
            raise ValueError(
                f"--id {self.node_id} is not in --peers: give --listen ENDPOINT to join as a "
                "learner"
            )
        positive = {
            "tick_ms": self.tick_ms,
            "heartbeat_ticks": self.heartbeat_ticks,
            "batch_entries_max": self.batch_entries_max,
            "batch_bytes_max": self.batch_bytes_max,
            "inflight_max": self.inflight_max,
            "proposals_pending_max": self.proposals_pending_max,
            "apply_batch_max": self.apply_batch_max,
            "apply_batch_bytes_max": self.apply_batch_bytes_max,
            "session_ttl_ms": self.session_ttl_ms,
            "log_retain_entries": self.log_retain_entries,
            "snapshot_lag_entries_max": self.snapshot_lag_entries_max,
            "snapshot_lag_bytes_max": self.snapshot_lag_bytes_max,
            "body_bytes_max": self.body_bytes_max,
            "proposals_waiting_max": self.proposals_waiting_max,
            "timeout_ms_proposal": self.timeout_ms_proposal,
            "timeout_ms_read": self.timeout_ms_read,
            "reads_waiting_max": self.reads_waiting_max,
            "subscribers_max": self.subscribers_max,
            "subscriber_silence_ms": self.subscriber_silence_ms,
            "events_frame_entries_max": self.events_frame_entries_max,
            "events_frame_bytes_max": self.events_frame_bytes_max,
            "stream_frames_per_turn_max": self.stream_frames_per_turn_max,
            "snapshot_chunk_bytes_max": self.snapshot_chunk_bytes_max,
            "record_bytes_max": self.record_bytes_max,
            "events_cache_bytes_max": self.events_cache_bytes_max,
            "node_cache_bytes_max": self.node_cache_bytes_max,
            "log_retain_bytes": self.log_retain_bytes,
            "subscriber_backlog_bytes_max": self.subscriber_backlog_bytes_max,
            "subscriber_stall_ms": self.subscriber_stall_ms,
            "subscriber_held_max": self.subscriber_held_max,
            "held_entries_max": self.held_entries_max,
            "proposals_waiting_bytes_max": self.proposals_waiting_bytes_max,
            "client_recv_queue_frames_max": self.client_recv_queue_frames_max,
            "client_send_queue_frames_max": self.client_send_queue_frames_max,
            "peer_recv_queue_frames_max": self.peer_recv_queue_frames_max,
            "peer_send_queue_frames_max": self.peer_send_queue_frames_max,
            "recv_bytes_per_turn_max": self.recv_bytes_per_turn_max,
            "sessions_per_connection_max": self.sessions_per_connection_max,
            "sessions_per_address_max": self.sessions_per_address_max,
            "timeout_ms_probe": self.timeout_ms_probe,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks "
                f"({self.heartbeat_ticks})"
            )
        if not RULES_FIRST <= self.rules_max <= RULES_NEWEST:
            raise ValueError(
                f"rules_max must be a rules version this code knows, {RULES_FIRST}.."
                f"{RULES_NEWEST} (RULES_NEWEST), got {self.rules_max}"
            )
        if self.map_bytes < MAP_BYTES_MIN:
            raise ValueError(f"map_bytes must be >= {MAP_BYTES_MIN}, got {self.map_bytes}")
        # One entry alone is one log record, which must fit the segment (and its unsynced
        # window, a segment at most): the largest body with its collected ids, twice over.
        # An existing store keeps the size it was made at: Server checks it at start.
        entry_bytes_max = self.entry_bytes_max
        if self.log_segment_bytes > LOG_SEGMENT_BYTES_MAX:
            raise LimitExceeded(
                "LOG_SEGMENT_BYTES_MAX", LOG_SEGMENT_BYTES_MAX, self.log_segment_bytes,
                "log_segment_bytes",
            )  # fmt: skip
        if self.log_segment_bytes < 2 * entry_bytes_max:
            raise ValueError(
                f"log_segment_bytes must be at least twice body_bytes_max + "
                f"GC_COLLECTED_BYTES_MAX + CLIENT_FRAME_ENVELOPE_BYTES ({2 * entry_bytes_max}), "
                f"got {self.log_segment_bytes}"
            )
        if self.log_time_skew_ms_max < 0:
            raise ValueError(f"log_time_skew_ms_max must be >= 0, got {self.log_time_skew_ms_max}")
        if abs(self.clock_offset_ms) > CLOCK_OFFSET_MS_MAX:
            raise ValueError(
                f"clock_offset_ms must be within +-{CLOCK_OFFSET_MS_MAX}, "
                f"got {self.clock_offset_ms}"
            )
        if self.exit_when_idle_ms < 0:
            raise ValueError(f"exit_when_idle_ms must be >= 0, got {self.exit_when_idle_ms}")
        if not PEER_FRAME_ENVELOPE_BYTES < self.peer_frame_bytes_max <= PEER_FRAME_BYTES_MAX:
            raise LimitExceeded(
                "PEER_FRAME_BYTES_MAX", PEER_FRAME_BYTES_MAX, self.peer_frame_bytes_max,
                "peer_frame_bytes_max (and it must exceed PEER_FRAME_ENVELOPE_BYTES)",
            )  # fmt: skip
        if self.batch_entries_max > PEER_ENTRIES_PER_MESSAGE_MAX:
            raise LimitExceeded(
                "PEER_ENTRIES_PER_MESSAGE_MAX",
                PEER_ENTRIES_PER_MESSAGE_MAX,
                self.batch_entries_max,
                "batch_entries_max",
            )
        room = self.peer_frame_bytes_max - PEER_FRAME_ENVELOPE_BYTES
        for name, value in (
            ("batch_bytes_max", self.batch_bytes_max),
            ("body_bytes_max", self.body_bytes_max),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
        ):
            if value > room:
                raise LimitExceeded(
                    "peer_frame_bytes_max - PEER_FRAME_ENVELOPE_BYTES", room, value, name
                )
        # One record (in a SNAPSHOT frame) and one entry's body (in an EVENTS frame) must each
        # fit a client frame with room around them, or a subscriber could never be fed.
        frame_room = wire.FRAME_BYTES_MAX - CLIENT_FRAME_ENVELOPE_BYTES
        for name, value in (
            ("record_bytes_max", self.record_bytes_max),
            ("body_bytes_max", self.body_bytes_max + GC_COLLECTED_BYTES_MAX),
            ("events_frame_bytes_max", self.events_frame_bytes_max),
            ("snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max),
        ):
            if value > frame_room:
                raise LimitExceeded("FRAME_BYTES_MAX", frame_room, value, name)
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.metrics_endpoint:
            parse_metrics_address(self.metrics_endpoint, insecure=self.insecure)
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {LOG_FORMATS}, got {self.log_format!r}")
        self._check_exposure()

    def _check_exposure(self) -> None:
        """Safe default: without --keys an agent binds loopback (or ipc://) only. Anyone who
        reaches an unauthenticated port can read everything, write anything and change the
        membership, so a reachable one must be asked for by name (--insecure)."""
        exposed = self.exposed_endpoints
        if exposed and self.keys_dir is None and not self.insecure:
            raise ValueError(
                f"refusing to bind {', '.join(exposed)} without --keys: anyone who can reach "
                "it could read and change all data and the membership. Give --keys DIR (make "
                "one with `superstatic keys new DIR --agents ... --clients ...`), bind "
                "127.0.0.1 or ipc://, or pass --insecure for a trusted lab network"
            )

    @property
    def exposed_endpoints(self) -> list[str]:
        """The peer and client endpoints this agent binds that are not loopback."""
        return [
            e for e in (self.peer_endpoint, self.client_endpoint) if not is_loopback_endpoint(e)
        ]

    @property
    def peer_endpoint(self) -> str:
        """Where this agent binds its peer socket."""
        return self.listen_endpoint or self.peers[self.node_id]

    @property
    def log_time_skew_ms(self) -> int:
        """The skew bound in force: log_time_skew_ms_max, at most a tenth of the session ttl."""
        return min(self.log_time_skew_ms_max, int(self.session_ttl_ms * SKEW_PER_TTL_MAX))

    @property
    def is_initial_voter(self) -> bool:
        return self.node_id in self.peers

    @property
    def entry_bytes_max(self) -> int:
        """The largest Raft entry this agent's limits allow: a body with its collected ids."""
        return self.body_bytes_max + GC_COLLECTED_BYTES_MAX + CLIENT_FRAME_ENVELOPE_BYTES

    @property
    def store_reserve_bytes(self) -> int:
        """Free space below which this agent refuses new writes (StoreFull)."""
        return self.map_bytes // STORE_RESERVE_DIVISOR


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")  # agent/logs.py agrees (asserted there)

# -- The worst-case memory of an agent (docs/agent.md, "Memory"), term by term -------------
# The interpreter, cbor2, pyzmq, LMDB and the loop's own structures, idle (measured 45-60 MiB).
MEMORY_BASE_BYTES = 96 << 20
# Python memory of a decoded node per byte of its record: 1 for large strings and bytes, up
# to 14 for maps of small items (measured: a dict of int -> bool, 0.57 MB encoded, 8 MB decoded).
DECODED_NODE_FACTOR = 16
# The virtual heap (agent/heap.py): bytes of LOADED frames built ahead for one subscriber (a
# job builds its frames in the turn it is served up to this; the rest is read lazily from its
# still-open read transaction), and what one held-set entry is counted for (an oid str of
# 20-40 chars ~70 B, its dict slot, the int).
LOAD_BUILT_BYTES_MAX = 4 << 20
HELD_ENTRY_BYTES = 150
# Memory of one log entry besides its data (the Entry object, its bytes' header, the list slot).
LOG_ENTRY_OVERHEAD_BYTES = 250


def transport_memory_bytes(
    config: AgentConfig, *, client_connections: int, peer_connections: int
) -> int:
    """The most the transport's receive side holds (docs/agent.md, "Decoders, transport and
    fairness"): ZeroMQ queues frames per connection, RCVHWM of them plus the one being read,
    each at most the socket's MAXMSGSIZE; plus one turn's frames taken from each socket."""
    assert client_connections >= 0 and peer_connections >= 0
    c = config
    client = client_connections * (c.client_recv_queue_frames_max + 1) * wire.FRAME_BYTES_MAX
    peer = peer_connections * (c.peer_recv_queue_frames_max + 1) * c.peer_frame_bytes_max
    return client + peer + 2 * c.recv_bytes_per_turn_max


def memory_bound_bytes(
    config: AgentConfig,
    *,
    agents: int,
    subscribers: int | None = None,
    transport_bytes: int,
    txn_records_bytes: int | None = None,
) -> int:
    """The most memory (anonymous: heap and queues; LMDB's file pages are the OS's cache) an
    agent with `config` uses, as docs/agent.md's formula: every term is a bound the code keeps.

    `transport_bytes` is the transport's term (issue 8 part A: `transport_memory_bytes`),
    passed in since it depends on the connections.
    `txn_records_bytes`: the records one transaction's ops touch, decoded at once (at most
    TXN_OPS_MAX x record_bytes_max; default one record)."""
    c = config
    subscribers = c.subscribers_max if subscribers is None else subscribers
    touched = c.record_bytes_max if txn_records_bytes is None else txn_records_bytes
    log_held = (c.log_retain_bytes * 3) // 2 + (c.log_retain_entries * 3 // 2) * (
        LOG_ENTRY_OVERHEAD_BYTES
    )
    # Entries appended but not applied: a follower's window, or (leader) what every agent's
    # waiting proposals can send it.
    uncommitted = max(c.inflight_max * c.batch_bytes_max, agents * c.proposals_waiting_bytes_max)
    nodes = DECODED_NODE_FACTOR * (c.node_cache_bytes_max + touched) + c.node_cache_bytes_max
    frame = c.events_frame_bytes_max + c.body_bytes_max  # a built, not yet sent stream frame
    streams = subscribers * (c.subscriber_backlog_bytes_max + frame)
    # Built LOADED frames (one job's per subscriber) and the held sets.
    loads = subscribers * LOAD_BUILT_BYTES_MAX + c.held_entries_max * HELD_ENTRY_BYTES
    return (
        MEMORY_BASE_BYTES
        + log_held
        + uncommitted
        + c.proposals_waiting_bytes_max
        + c.events_cache_bytes_max
        + nodes
        + streams
        + loads
        + transport_bytes
    )


def node_id_valid(node_id: str) -> bool:
    """The rule check_node_id enforces, as a test (for ids read from the network)."""
    return 0 < len(node_id) <= NODE_ID_CHARS_MAX and all(
        ch.isalnum() or ch in "-_." for ch in node_id
    )


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: ipc://, inproc://, and tcp:// on a
    loopback address (127.0.0.0/8, ::1, localhost, the `lo` interface). `*`, 0.0.0.0, other
    addresses, host and interface names are not."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1", "lo") or host.startswith("127.")


def check_node_id(node_id: str) -> None:
    if not node_id or len(node_id) > NODE_ID_CHARS_MAX:
        raise ValueError(f"node id must have 1..{NODE_ID_CHARS_MAX} characters: {node_id!r}")
    if not all(ch.isalnum() or ch in "-_." for ch in node_id):
        raise ValueError(f"node id may hold letters, digits, '-', '_', '.': {node_id!r}")


def parse_peers(text: str) -> dict[str, str]:
    """`a=tcp://h:1,b=tcp://h:2` -> {"a": "tcp://h:1", "b": "tcp://h:2"}; ValueError if bad."""
    peers: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        node_id, sep, endpoint = part.partition("=")
        node_id, endpoint = node_id.strip(), endpoint.strip()
        if not sep or not endpoint:
            raise ValueError(f"--peers entry {part!r} is not ID=ENDPOINT")
        check_node_id(node_id)
        if node_id in peers:
            raise ValueError(f"--peers lists {node_id!r} twice")
        if endpoint in peers.values():
            raise ValueError(f"--peers gives endpoint {endpoint!r} to two agents")
        peers[node_id] = endpoint
    if not peers:
        raise ValueError("--peers is empty")
    return peers


class BadMetricsAddress(ValueError):
    """--metrics is not HOST:PORT, or names a non-loopback host without --insecure."""


def parse_metrics_address(text: str, *, insecure: bool) -> tuple[str, int]:
    """`127.0.0.1:9100`, `localhost:9100`, `[::1]:9100` -> (host, port). Non-loopback hosts
    need `insecure`: the port has no authentication."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise BadMetricsAddress(f"--metrics must be HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise BadMetricsAddress(f"--metrics port must be in 0..65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not insecure and not _loopback(host):
        raise BadMetricsAddress(
            f"--metrics {text}: the metrics and status port has no authentication, so it binds "
            "only loopback addresses (127.0.0.1, ::1, localhost) unless --insecure is given; "
            "see docs/operations.md for putting a proxy in front"
        )
    return host, port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
