"""The library's connection to the agents: one client session, the log stream, failover.

One I/O thread owns one DEALER socket to the current agent. Callers in any thread hand it
requests through a queue and an inproc PAIR wake-up, then wait on a lock of their own
(`waiters.Answer`: the I/O thread wakes exactly the caller whose answer arrived); a lone
caller (no other request of a caller queued or in flight) sends its PROPOSE on the socket
itself instead, saving the two thread switches (docs/data-model-v2.md 8.3). ZeroMQ sockets are
not thread-safe: every use of the DEALER, and every change to the I/O state, happens under one
lock (`_socket_lock`), and the I/O thread waits on the socket's file descriptor (never on the
socket) while it does not hold it. The I/O thread:

* says HELLO, then SUBSCRIBEs from the replica's applied index (0: the agent sends a snapshot
  first) and feeds the stream into the replica in log order (`superstatic.client.stream`), waking
  `wait_applied` waiters;
* sends PROPOSEs with the session's (client id, seq, seq_low) and READ_INDEX requests, retrying
  refusals (`not_leader`, `unavailable`, `busy`) with jittered backoff and re-sending a PROPOSE
  that got no answer with its SAME seq: the state machine's exactly-once table answers a
  duplicate instead of applying it twice;
* sends the PROPOSEs over a second DEALER to the leader when its own agent is a follower
  (`client/leader_link.py`; the stream stays on its own agent), learning the leader's id from
  its agent's HELLO, PING and not_leader answers (docs/data-model-v2.md 8.4);
* PINGs the agent every `ping_interval_ms` and fails over to the next endpoint when the agent is
  silent for `timeout_ms_agent_silence`, disconnects, or keeps refusing for that long; after a
  failover it re-HELLOs with the same client id, resubscribes from the replica's applied index
  and re-sends every unanswered request (same seq). Once a whole round of endpoints failed
  without one answering HELLO, it waits before the next round (jittered, doubling from
  `reconnect_delay_ms_min` to `reconnect_delay_ms_max`): with every agent down it would
  otherwise open sockets as fast as they are refused, thousands a second, until the process
  ran out of file descriptors;
* opens a session (an "open" entry; its index is the session's id, carried by every later
  PROPOSE) before the first write, keeps it alive with an "open" entry every session_ttl_ms / 3
  while idle, and when the agent answers "session_expired" (the session expired: its recorded
  outcomes are gone) fails that session's writes in flight as outcome-unknown and opens a new
  one: a write is never silently applied a second time (Raft thesis 6.3).

Past `timeout_ms_request` a request fails with `Unavailable`: `outcome_known=False` if a PROPOSE
may have reached an agent that could still commit it, `outcome_known=True` if every attempt
certainly did not propose it (never sent, or refused with `not_leader` / `busy`).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import os
import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from superstatic.client import keys as client_keys
from superstatic.client.heap_io import HeapIo
from superstatic.client.leader_link import LeaderLink
from superstatic.client.stream import ReplicaFailed, ReplicaSink, StreamFeeder, StreamGap
from superstatic.client.timers import TimerHeap
from superstatic.client.waiters import Answer, AnswerTimeout, AppliedWaiters
from superstatic.objects import stats as _stats
from superstatic.objects import trace as _trace
from superstatic.protocol import trace as _trace_proto
from superstatic.protocol import wire
from superstatic.protocol.errors import (
    AuthError,
    Error,
    LimitExceeded,
    ProtocolError,
    StoreFull,
    Unavailable,
)

log = logging.getLogger("superstatic.client.connection")

ENV_TIMEOUT_MS = "SUPERSTATIC_TIMEOUT_MS"
# The I/O thread coalesces the writes its callers queued into PROPOSE_MANY frames unless this
# is "0" ("1" or unset: on). On by default: in alternated full-length runs it took ~12% less
# CPU per write than main and gave more 3-client throughput (docs/data-model-v2.md section 6).
ENV_COALESCE = "SUPERSTATIC_COALESCE"
TIMEOUT_MS_REQUEST_DEFAULT = 30_000
# An agent that sends nothing (not even a PING reply) for this long is presumed dead or cut off.
# Generous: three agents and their apps share two cores on the machines we test on, and an
# agent busy with an fsync-heavy burst still answers PINGs within a few hundred ms.
TIMEOUT_MS_AGENT_SILENCE_DEFAULT = 4_000
# A PROPOSE or READ_INDEX with no answer from a live agent for this long is sent again (same
# seq): the agent may have lost it (forwarded to a leader that died before appending it).
TIMEOUT_MS_RESEND_DEFAULT = 5_000
# Stream bytes received after which a PING acknowledges them at once (besides the timer):
# well under the agent's subscriber_backlog_bytes_max (16 MiB), so a fast stream never waits.
STREAM_ACK_BYTES = 2 << 20
_STREAM_FRAMES = frozenset({wire.FrameType.EVENTS, wire.FrameType.SNAPSHOT, wire.FrameType.LOADED})
# PING cadence: liveness of the agent (and, for the embedded agent, proof that an app is alive).
PING_INTERVAL_MS_DEFAULT = 500
# Requests queued or in flight. The agent's session record keeps at most SESSION_SEQS_MAX
# (4096) answered-or-pending seqs per client; staying well below it means a burst of threads
# can never make the state machine forget a seq that is still being retried.
REQUESTS_PENDING_MAX = 1_024
# The agent's session record holds at most SESSION_SEQS_MAX (4096) seqs at or above seq_low,
# answered or not; at that limit it refuses a new seq with an error it does not record, so a
# later copy of that seq (a resend in flight, a re-proposal after a leader change) could still
# apply: a committed write reported as rejected. So a write takes a seq only while
# seq_next - seq_low < SEQ_WINDOW_MAX: behind one stuck request the later ones wait here,
# unsent (their outcome stays known), until it is answered or expires. Half the agent's limit
# leaves room for the session's own entries (open, keep-alive, close).
SEQ_WINDOW_MAX = 2_048
# Retry pacing after a refusal: uniform in [d/2, d] with d = min(MAX, BASE * 2**attempt).
BACKOFF_MS_BASE = 10
BACKOFF_MS_MAX = 1_000
# A write refused (not_leader, busy, unavailable) is not tried again when the retry would go
# out this close to its deadline: its answer could not come back in time, and an attempt still
# unanswered at the deadline makes the outcome UNKNOWN, where every attempt refused keeps it
# known ("nothing was written"). So the caller of a write that kept being refused is told so.
LAST_ATTEMPT_MARGIN_MS = 200
# Pause before another round of endpoints once a whole round failed (refused, silent,
# disconnected before HELLO): see reconnect_delay_ms. The ceiling keeps recovery after a
# full-cluster restart within about a second; ZeroMQ's own RECONNECT_IVL pacing is the same.
RECONNECT_DELAY_MS_MIN = 100
RECONNECT_DELAY_MS_MAX = 1_000
# close() waits this long for the "close" session entry; best effort, it only frees the
# session's record earlier than expiry would.
TIMEOUT_MS_CLOSE = 2_000
TIMEOUT_S_THREAD_JOIN = 5.0
# A caller waits for its answer this much longer than the request's own deadline, so the I/O
# thread (which owns deadlines and knows whether a request was sent) normally answers first.
CALLER_GRACE_S = 5.0
# Frames handled per loop turn before timers run again: a flood of events cannot starve
# deadlines, PINGs or the failover check.
FRAMES_PER_TURN_MAX = 512
# Longest the loop sleeps in one poll; timers are checked at least this often.
LOOP_WAKE_MS_MAX = 100
# How long a clean close lets its UNSUBSCRIBE frame leave the socket (ZMQ_LINGER): bounded, so
# close() never hangs on an agent that went away.
UNSUBSCRIBE_LINGER_MS = 200
# If waiters want an index above the replica's while no stream frame came for this long, the
# subscription is presumed lost (e.g. an agent dropped us) and is renewed.
TIMEOUT_MS_STREAM_STALL = 5_000
# PROPOSE_MANY frames (docs/data-model-v2.md 6) whose frame-level answer would still be acted
# on: an ERROR to one (an agent that does not know the type answers bad_request) sends its
# unanswered items again as PROPOSEs. Older ones are forgotten (their items are resent by the
# resend timer if they are never answered).
MANY_FRAMES_TRACKED_MAX = 256
# PINGs of the current socket whose answer is still recognised as a PING's (an ERROR forbidden
# to one says the agent no longer trusts our key). An agent silent for timeout_ms_agent_silence
# is left, so at most silence / ping_interval_ms (8 by default) are ever unanswered; the rest
# is margin for a configuration with a shorter interval.
PINGS_TRACKED_MAX = 64
# Bytes of bodies one PROPOSE_MANY frame carries at most: the frame stays under
# wire.FRAME_BYTES_MAX with room for the items' other fields.
MANY_BODY_BYTES_MAX = wire.FRAME_BYTES_MAX - (1 << 20)
# Bytes counted per item beside its body (req_id, seq, kind, trace and CBOR heads).
MANY_ITEM_OVERHEAD_BYTES = 64
# How long a lone caller waits for the socket lock before it hands its write to the I/O thread
# instead: the I/O thread holds it for the rest of the turn in which it woke the caller (tens
# of microseconds), rarely longer (a large snapshot being applied).
LONE_CALLER_LOCK_WAIT_S = 0.002
# How long the I/O thread waits for the callers it woke together (their answers came in one
# turn) to queue their next requests, so that those go out in one frame; what queued by then
# goes at once (docs/data-model-v2.md 8.15). A lone caller is never held.
GROUP_HOLD_MS_MAX = 1
# After a link to the leader failed (disconnected, refused, could not be made, silent), its
# endpoint is not tried again for this long (docs/data-model-v2.md 8.4).
LINK_RETRY_MS = 1_000
# A link whose HELLO is not answered within this (nothing listens there, or the agent is
# stopped) is closed and counts as failed: another endpoint may be tried meanwhile.
LINK_PROBE_MS = 2_000
# Bounded buffers of the DEALER socket (frames), so a stuck agent cannot grow our memory.
SOCKET_HWM_FRAMES = 10_000
ENDPOINT_PATTERN = re.compile(r"^(tcp|ipc|inproc)://\S+$")

# Plain ints: `int & zmq.POLLIN` and `get(zmq.EVENTS)` go through Python's enum machinery, a
# few microseconds per turn on this path (docs/data-model-v2.md 8.17).
_ZMQ_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)

_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | client_keys.HANDSHAKE_EVENTS
)


# wait_applied waits while the replica makes progress, but never longer than this many times
# the caller's timeout in all (a stream that trickles forever is still an outage).
WAIT_APPLIED_PROGRESS_FACTOR_MAX = 20


def reconnect_delay_ms(rounds_failed: int, low_ms: int, high_ms: int, rng: random.Random) -> float:
    """The pause before the next round of endpoints after `rounds_failed` (>= 1) consecutive
    rounds in which no agent answered: uniform in [d/2, d] with d = low * 2**rounds, capped at
    high, never below low. Jittered, so that the apps of a restarted cluster do not all
    reconnect in step."""
    assert rounds_failed >= 1 and 0 < low_ms <= high_ms
    ceiling = min(high_ms, low_ms * 2 ** min(rounds_failed, 30))
    return max(float(low_ms), rng.uniform(ceiling / 2, ceiling))


@dataclass
class Committed:
    """The fate of one submitted entry, as applied at the agent."""

    index: int
    outcome: str
    error: str
    dup: bool
    trace: dict[str, int] | None = None  # tracing only: this call's stamps (objects/trace.py)
    trace_acks: dict[str, int] | None = None


class AgentRefusedTooLarge(LimitExceeded):
    """The agent refused a request as too large (`too_large`): its message names the limit."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, f"the agent refused the request as too large: {message}")
        match = re.search(r"([A-Za-z_][A-Za-z0-9_]*)=(\d+)", message)
        self.limit_name = match.group(1) if match else "FRAME_BYTES_MAX"
        self.limit = int(match.group(2)) if match else wire.FRAME_BYTES_MAX
        self.actual = -1


class IncompatibleAgent(Error):
    """Every agent of the connection speaks another data model (docs/operations.md, "Upgrading
    across a data-model change"): the connection stops, every caller gets this message."""


def timeout_ms_from_env(default: int = TIMEOUT_MS_REQUEST_DEFAULT) -> int:
    raw = os.environ.get(ENV_TIMEOUT_MS, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Error(f"{ENV_TIMEOUT_MS}={raw!r} is not an integer number of milliseconds") from None
    if value <= 0:
        raise Error(f"{ENV_TIMEOUT_MS}={raw!r} must be a positive number of milliseconds")
    return value


def coalesce_from_env() -> bool:
    """Whether a new connection coalesces its callers' writes (SUPERSTATIC_COALESCE)."""
    raw = os.environ.get(ENV_COALESCE, "").strip()
    if raw in ("", "1"):
        return True
    if raw == "0":
        return False
    # The value is not repeated: it is whatever the environment held.
    raise Error(f"{ENV_COALESCE} must be 0 (off) or 1 (on, the default)")


@dataclass(eq=False)
class _Request:
    """One caller request (or an internal keep-alive / close entry), owned by the I/O thread
    once queued."""

    op: str  # "propose" | "read_index"
    deadline: float  # monotonic seconds
    kind: str = "txn"  # PROPOSE kind
    body: bytes = b""
    seq: int = 0
    # Attempts (req ids) that may have been proposed: sent, and not refused with an answer
    # that proves they were not (not_leader, busy). Empty -> the outcome is known (nothing).
    unresolved: set[int] = field(default_factory=set)
    attempts: int = 0
    refusals: int = 0
    send_at: float = 0.0  # monotonic; when the next attempt is due (inf: waiting for a reply)
    sent_at: float = 0.0
    internal: bool = False
    trace: dict[str, int] | None = None  # tracing only (objects/trace.py)
    session: int = 0  # the session its last attempt named (0: none, or the open starting one)
    via_link: bool = False  # its last attempt went to the leader's link, not our own agent
    # The leader's answer to a write sent on the link, held until our replica applied it (the
    # caller waits for that anyway: read-your-writes), so the caller is woken once.
    answer: Committed | None = None
    # When `answer` began waiting for our own agent (reset when we connect to another one).
    held_at: float = 0.0
    # Where the caller waits: released once, with the result (waiters.Answer).
    slot: Answer = field(default_factory=Answer)
    # Its key in `_IoState.requests` once admitted (0: queued or held back by the seq window):
    # admission order, which is seq order for writes.
    serial: int = 0
    req_ids: list[int] = field(default_factory=list)  # every attempt's req id (by_req_id keys)
    # Counted in `Connection._pending` (changed under its `_lock`): set when a caller's request
    # is counted in, cleared by whoever counts it out, exactly once: the I/O thread settling
    # it, the turn's end for callers answered in a turn, or the caller itself when it found
    # its answer before that turn ended (`Connection._count_out_early`).
    counted: bool = False


class Connection:
    """A client session with the cluster, feeding `replica` from the log (architecture 6)."""

    def __init__(
        self,
        endpoints: list[str],
        replica: ReplicaSink,
        *,
        timeout_ms_request: int | None = None,
        timeout_ms_agent_silence: int = TIMEOUT_MS_AGENT_SILENCE_DEFAULT,
        timeout_ms_resend: int = TIMEOUT_MS_RESEND_DEFAULT,
        ping_interval_ms: int = PING_INTERVAL_MS_DEFAULT,
        requests_pending_max: int = REQUESTS_PENDING_MAX,
        timeout_ms_close: int = TIMEOUT_MS_CLOSE,
        keys: client_keys.ClientKeys | None = None,
        reconnect_delay_ms_min: int = RECONNECT_DELAY_MS_MIN,
        reconnect_delay_ms_max: int = RECONNECT_DELAY_MS_MAX,
        rng: random.Random | None = None,
        heap: str = "all",
        cache_bytes: int = 0,
    ) -> None:
        """`heap`: "all" (the replica holds every node: the snapshot, then every event) or
        "partial" (it faults in what it touches and holds about `cache_bytes` of it:
        docs/virtual-heap.md; the replica must be a fresh `objects.replica.Replica`)."""
        if not endpoints:
            raise Error("no agent endpoint given; pass e.g. ['tcp://127.0.0.1:7501']")
        for endpoint in endpoints:
            if not isinstance(endpoint, str) or not ENDPOINT_PATTERN.match(endpoint):
                raise Error(
                    f"agent endpoint {endpoint!r} is not a ZeroMQ address like "
                    "'tcp://127.0.0.1:7501' or 'ipc:///path/agent.sock'"
                )
        self.endpoints = list(endpoints)
        # CURVE identity (None: no CURVE, for an unkeyed agent). An agent refusing it is an
        # AuthError for every caller once every endpoint refused it (docs/security.md).
        self.keys = keys
        self.replica = replica
        self.client_id = secrets.token_hex(16)  # 128 random bits: sessions never collide
        # The process that owns the socket and the I/O thread: a forked child has neither
        # (client/default.py gives it a connection of its own; this one must stay untouched).
        self._pid = os.getpid()
        # Called (on the I/O thread, so quickly) with the agent's message when the cluster
        # expired this connection's session: the toolkit's cluster events (docs/toolkit.md).
        self.session_expired_listeners: list[Callable[[str], None]] = []
        self.timeout_ms_request = (
            timeout_ms_from_env() if timeout_ms_request is None else timeout_ms_request
        )
        assert self.timeout_ms_request > 0
        assert timeout_ms_agent_silence > ping_interval_ms > 0
        self.timeout_ms_agent_silence = timeout_ms_agent_silence
        self.timeout_ms_resend = timeout_ms_resend
        self.ping_interval_ms = ping_interval_ms
        self.requests_pending_max = requests_pending_max
        self.timeout_ms_close = timeout_ms_close
        if not 0 < reconnect_delay_ms_min <= reconnect_delay_ms_max:
            raise Error(
                "reconnect delays must satisfy 0 < reconnect_delay_ms_min <= "
                f"reconnect_delay_ms_max; got {reconnect_delay_ms_min} and "
                f"{reconnect_delay_ms_max}"
            )
        self.reconnect_delay_ms_min = reconnect_delay_ms_min
        self.reconnect_delay_ms_max = reconnect_delay_ms_max
        # The jitter of retries and reconnects (injectable: tests fix it).
        self.rng = rng if rng is not None else random.Random()
        self.coalesce = coalesce_from_env()  # read once, here: a bad value fails the connect

        # Shared between callers and the I/O thread.
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        # Callers' requests queued + in flight, bounded by requests_pending_max. The session's
        # own entries (open, keep-alive, close: at most one of each at a time) do not count:
        # they must never take a caller's place.
        self._pending = 0
        self._closing = False  # set once the "close" entry is settled: no new requests
        self._close_started = False
        self._failure: BaseException | None = None  # why the I/O thread stopped, if it did
        # wait_applied's callers, each woken when the replica reaches its own index.
        self._applied_waiters = AppliedWaiters()
        # The I/O thread is asleep in its poll (set under _lock with the queue found empty,
        # cleared without it when the poll returns: a stale True costs one spare wake-up, never
        # a lost one). A caller queues onto an empty queue of a thread that is awake without
        # waking it: the thread looks at the queue again before it sleeps.
        self._io_asleep = False
        self._wake_sent = False  # a caller sent the sleeping thread a wake-up (under _lock)
        # Callers woken together in the I/O thread's last turns that have not queued their next
        # request yet, and since when (monotonic seconds): while some are due, the others'
        # requests wait in the queue for them, up to GROUP_HOLD_MS_MAX (under _lock).
        self._expected = 0
        self._expected_since = 0.0
        # While the I/O thread handles one turn, the callers it settles are woken only at the
        # turn's end, together (`_wake_settled`): none is woken to contend for the GIL with the
        # thread still decoding, applying and sending (woken once the frames were read, before
        # the turn's sends, they cost more: 8.15), and the pending count drops once per turn,
        # not once per write (docs/data-model-v2.md 8.15 "The app's wakes").
        self._in_turn = False
        self._settled: list[_Request] = []

        # Observable counters (tests, status, debugging).
        self.failovers = 0
        # The last halt reason an agent's refusal named (wire.halt_reason) and when (monotonic
        # s): an error given up for want of an agent names it (`halt_seen`). Set by the I/O
        # thread; a tuple, replaced whole.
        self.last_halt: tuple[str, float] | None = None
        self.resubscribes = 0
        self.sent_direct = 0  # writes a lone caller sent itself (no hand-off to the I/O thread)
        self.sent_to_leader = 0  # write attempts sent on the link to the leader
        # The I/O thread's turns, and the wake-ups callers sent it through the inproc pipe.
        self.io_turns = 0
        self.wakes_sent = 0
        # Writes sent again because our replica jumped (a snapshot or a held snapshot) past
        # events that may have been their only answer (`_IoState.ask_again_after_jump`).
        self.resent_after_jumps = 0
        self.endpoint = self.endpoints[0]

        self._ctx: zmq.Context[Any] = zmq.Context()
        wake_address = f"inproc://superstatic-wake-{self.client_id}"
        self._wake_rx: zmq.Socket[Any] = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(wake_address)
        self._wake_tx: zmq.Socket[Any] = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(wake_address)
        self._wake_lock = threading.Lock()
        # Held by the I/O thread while it handles what its poll returned, and by a lone caller
        # sending its PROPOSE itself: the DEALER and the I/O state are only touched under it.
        self._socket_lock = threading.Lock()

        self._thread = threading.Thread(
            target=self._run, name=f"superstatic-io-{self.client_id[:8]}", daemon=True
        )
        # The virtual heap: a partial replica's loads and drops (client/heap_io.py).
        self.heap_io: HeapIo | None = None
        if heap == "partial":
            from superstatic.objects.replica import Replica

            assert isinstance(replica, Replica)
            self.heap_io = HeapIo(self, replica, AgentRefusedTooLarge)
            if replica.partial:
                # A forked child's new connection feeding the replica it inherited: what it
                # holds is declared on the new subscription (HOLD), the rest faults in here.
                replica.loader = self.heap_io.request
            else:
                replica.start_partial(0, self.heap_io.request, cache_bytes)
        else:
            assert heap == "all", heap
        self._io = _IoState(self)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def submit(self, body: bytes, kind: str = "txn") -> Committed:
        """Proposes one entry and returns its fate once applied at the agent. Blocking; any
        thread. Retries (same seq) across refusals and agents until timeout_ms_request."""
        if kind not in wire.PROPOSE_KINDS:
            raise Error(f"entry kind must be one of {sorted(wire.PROPOSE_KINDS)}, got {kind!r}")
        request = _Request(op="propose", deadline=0.0, kind=kind, body=body)
        if _trace.ENABLED:
            request.trace = _trace.begin()
        started = time.monotonic()
        try:
            result = self._call(request)
        except Unavailable:
            _stats.STATS.committed("unavailable", time.monotonic() - started)
            raise
        assert isinstance(result, Committed)
        _stats.STATS.committed(result.outcome, time.monotonic() - started)
        return result

    def read_index(self) -> int:
        """A linearizable barrier index: every write committed before this call is <= it."""
        result = self._call(_Request(op="read_index", deadline=0.0))
        assert isinstance(result, int)
        return result

    def wait_applied(self, index: int, timeout_s: float) -> None:
        """Blocks until the replica has applied `index`, or raises Unavailable once `timeout_s`
        passed with no progress at all (no entry applied, no stream frame received). A replica
        that keeps advancing (a large snapshot arriving part by part, a long backlog) is waited
        for, up to WAIT_APPLIED_PROGRESS_FACTOR_MAX times `timeout_s` in all."""
        started = time.monotonic()
        deadline = started + timeout_s
        deadline_max = started + timeout_s * WAIT_APPLIED_PROGRESS_FACTOR_MAX
        progress = (self.replica.applied_index, self._io.feeder.frames)
        wake: threading.Lock | None = None  # ours in _applied_waiters, released at `index`
        while self.replica.applied_index < index:
            self._check_alive()
            now = time.monotonic()
            seen = (self.replica.applied_index, self._io.feeder.frames)
            if seen != progress:
                progress = seen
                deadline = min(deadline_max, now + timeout_s)
            remaining = deadline - now
            if remaining <= 0:
                # Waiting writes nothing (outcome_known=True is about this call); what it
                # means for a write is the caller's to say (Session.commit does).
                halted_clause, halted = halt_seen(self, now)
                raise Unavailable(
                    f"entry {index} is not yet visible here: this process has applied the "
                    f"log only up to {self.replica.applied_index} after "
                    f"{now - started:.1f} s (agent {self.endpoint}){halted_clause}",
                    outcome_known=True,
                    halted=halted,
                )
            if wake is None:
                wake = self._applied_waiters.add(index)
                if self.replica.applied_index >= index:
                    break  # applied between the check and the add (the wake is spent)
            # Woken by our index only (or a stop); the timeout rechecks the stream's progress.
            if wake.acquire(timeout=min(remaining, LOOP_WAKE_MS_MAX / 1000)):
                wake = None  # released and taken out: a further wait adds a new one

    def close(self) -> None:
        """Ends the session: a best-effort "close" entry (bounded wait), then stops the I/O
        thread and closes the socket."""
        if os.getpid() != self._pid:
            return  # inherited by a fork: the session, socket and thread are the parent's
        with self._lock:
            if self._close_started:
                return
            self._close_started = True  # a second (concurrent) close() returns at once
            wants_close_entry = self._failure is None and self._io.session != 0
        if wants_close_entry:
            request = _Request(
                op="propose",
                deadline=time.monotonic() + self.timeout_ms_close / 1000,
                kind="close",
                internal=True,
            )
            if self._enqueue(request, bounded=False):
                with contextlib.suppress(Exception):
                    request.slot.wait(self.timeout_ms_close / 1000 + 1)
        with self._lock:
            self._closing = True
        self._wake()
        self._thread.join(TIMEOUT_S_THREAD_JOIN)
        if not self._thread.is_alive():
            with self._wake_lock:
                self._wake_tx.close(linger=0)
            self._ctx.term()
        self._applied_waiters.wake_all()

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def session_ttl_ms(self) -> int:
        """The agent's session ttl (from its HELLO reply; the default until it answered): the
        toolkit's liveness leases last as long (docs/toolkit.md)."""
        return self._io.session_ttl_ms

    def _call(self, request: _Request) -> Any:
        if os.getpid() != self._pid:
            raise Error(
                "this superstatic connection belongs to the parent process (it was inherited by "
                "os.fork()); a forked child connects on its own: use superstatic's API, not a "
                "Connection object kept from before the fork"
            )
        timeout_s = self.timeout_ms_request / 1000
        request.deadline = time.monotonic() + timeout_s
        if self._send_direct(request):
            pass  # a lone caller's PROPOSE went out from this thread
        elif not self._enqueue(request, bounded=True):
            self._check_alive()
            raise Error("this superstatic connection is closed")
        try:
            return request.slot.wait(timeout_s + CALLER_GRACE_S)
        except AnswerTimeout:
            # The I/O thread owns deadlines and should have answered; if it did not, it is
            # wedged and we cannot tell whether the request went out.
            raise Unavailable(
                f"no answer within timeout_ms_request={self.timeout_ms_request} ms and the "
                "connection's I/O thread is not responding; the outcome is unknown: it may or "
                "may not have been applied",
                outcome_known=request.op != "propose",
            ) from None
        finally:
            if request.counted and request.slot.done():
                # Answered in an I/O turn that has not ended yet (we reached our wait after
                # the answer was stored): counted out now, once, so that our next request
                # neither finds us still in flight nor is one the others are held for.
                self._count_out_early(request)

    def _count_out_early(self, request: _Request) -> None:
        """Counts out a caller's request whose answer it took before the I/O turn that stored
        it ended (review 29, docs/data-model-v2.md 8.17): that turn's end (`_wake_settled`)
        then neither counts it out again nor holds the others for it."""
        with self._lock:
            if request.counted:
                request.counted = False
                self._pending -= 1
                assert self._pending >= 0

    def _send_direct(self, request: _Request) -> bool:
        """A lone caller's write (nothing of another caller queued or in flight, the socket
        lock free, a session open): registered and sent from this thread, under the socket
        lock, with no hand-off to the I/O thread. False: queue it as usual (concurrent callers
        go through the I/O thread, which coalesces their writes)."""
        if request.op != "propose" or request.internal:
            return False
        with self._lock:
            if self._pending or self._queue or self._expected:
                # Not alone: never wait for the socket lock then (concurrent callers would
                # queue up on it behind the I/O thread); checked again under it below. Callers
                # woken together are not alone either: their writes go out in one frame.
                return False
        # Callers that find each other alone here may all wait for the lock behind one I/O
        # turn, and all but the first then queue: together, so the I/O thread sends them in
        # one PROPOSE_MANY. Counting the first one in flight before it waits (so the others
        # queue at once, one by one) was measured and dropped: smaller batches, more agent
        # CPU per write and fewer writes/s (docs/data-model-v2.md 8.5).
        if not self._socket_lock.acquire(timeout=LONE_CALLER_LOCK_WAIT_S):
            return False  # the I/O thread is busy: it takes the request at its next turn
        try:
            with self._lock:
                if (
                    self._closing
                    or self._failure is not None
                    or self._pending
                    or self._queue
                    or self._expected
                ):
                    return False
                self._pending += 1
                request.counted = True
            if self._io.send_direct(request):
                self.sent_direct += 1  # under the socket lock: one writer at a time
                return True
            with self._lock:
                self._pending -= 1
                request.counted = False
            return False
        finally:
            self._socket_lock.release()

    def _enqueue(self, request: _Request, *, bounded: bool) -> bool:
        with self._lock:
            if self._closing or self._failure is not None:
                return False
            if bounded and self._pending >= self.requests_pending_max:
                raise LimitExceeded(
                    "REQUESTS_PENDING_MAX",
                    self.requests_pending_max,
                    self._pending + 1,
                    "requests queued or in flight on this connection",
                )
            if not request.internal:
                self._pending += 1
                request.counted = True
            # Only the request that finds the queue empty wakes the I/O thread, and only if it
            # sleeps: the others join a queue whose wake-up is already sent (or about to be,
            # by that request), and a thread that is awake takes the queue before it sleeps
            # again. The I/O thread takes the whole queue at once: at most one inproc send
            # per turn, none while it is busy.
            self._queue.append(request)
            expected = self._expected
            if expected and not request.internal:
                # One of the callers woken together is back: the last one wakes the thread.
                self._expected = expected = expected - 1
            wake = self._io_asleep and not self._wake_sent and not expected
            if wake:
                self._wake_sent = True
        if wake:
            self._wake()
        return True

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_tx.closed:
                return
            # A full pipe already holds a wake-up the I/O thread has not consumed yet.
            with contextlib.suppress(zmq.Again):
                self._wake_tx.send(b"", zmq.NOBLOCK)
                self.wakes_sent += 1

    def _check_alive(self) -> None:
        failure = self._failure
        if isinstance(failure, AuthError):
            raise AuthError(str(failure))
        if failure is not None:
            raise Error(f"the superstatic connection stopped: {failure}") from failure
        if self._closing:
            raise Error("this superstatic connection is closed")

    def _done(
        self, request: _Request, result: Any = None, error: BaseException | None = None
    ) -> None:
        """Completes a request (I/O thread, or a lone caller under the socket lock) and wakes
        its caller, and only it."""
        if request.slot.done():
            return
        if self._in_turn and self._pending > 1:
            # The I/O thread's turn, other callers in flight: stored now (a caller about to
            # wait finds it at once), woken at the turn's end with the others of the turn
            # (`_wake_settled`). A lone caller is woken at once, as before: its call waits for
            # nothing else (deferred, sequential calls measured slower: 8.15).
            request.slot.store(result, error)
            self._settled.append(request)
            return
        if request.counted:
            # Counted out before the wake: the woken caller's next write finds itself alone
            # (and may send it directly) instead of racing this decrement.
            with self._lock:
                self._pending -= 1
                assert self._pending >= 0
                request.counted = False
        request.slot.set(result, error)

    def _wake_settled(self) -> None:
        """Wakes the callers settled in the I/O thread's last turn (outside the socket lock):
        counted out first, in one go, so that a woken caller's next write sees the count
        without them; then each caller's own lock, in the order they were settled."""
        settled = self._settled
        if not settled:
            return
        self._settled = []
        with self._lock:
            # A caller that found its answer before now counted itself out already
            # (`_count_out_early`), and may have queued its next request: it is neither
            # counted out again nor waited for.
            callers = 0
            for request in settled:
                if request.counted:
                    request.counted = False
                    callers += 1
            if callers:
                self._pending -= callers
                assert self._pending >= 0
                if callers > 1:
                    # They will most likely queue again: held for each other (take_queued).
                    if not self._expected:
                        self._expected_since = time.monotonic()
                    self._expected = min(self._expected + callers, self.requests_pending_max)
        for request in settled:
            request.slot.wake()

    def _take_queued(self) -> list[_Request]:
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
            return taken

    # ------------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        io = self._io
        # A fault from this thread (a listener reading a hollow node) would wait for a frame
        # only this thread reads: the replica refuses it.
        self.replica.io_thread = threading.get_ident()  # type: ignore[attr-defined]
        try:
            io.loop()
        except (AuthError, IncompatibleAgent) as exc:  # every agent refused: said to callers
            log.warning("superstatic: %s", exc)
            with self._lock:
                self._failure = exc
        except BaseException as exc:  # a bug or a broken replica: fail loudly, never hang
            log.exception("superstatic connection I/O thread stopped")
            with self._lock:
                self._failure = exc
        finally:
            self._in_turn = False
            self._wake_settled()  # a turn that raised: its settled callers are still asleep
            self._socket_lock.acquire()  # a lone caller may be sending: let it finish
            failure = self._failure
            error: BaseException = (
                Error(f"the superstatic connection stopped: {failure}")
                if failure is not None
                else Error("this superstatic connection is closed")
            )
            if self.heap_io is not None:
                self.heap_io.stop(error)
            for request in [*io.requests.values(), *io.waiting, *self._take_queued()]:
                if request.answer is not None:
                    self._done(request, request.answer)  # committed; not applied here yet
                elif request.op == "propose" and request.unresolved:
                    # Sent and unanswered: the stop says nothing about whether it commits.
                    self._done(
                        request,
                        error=Unavailable(
                            f"{error} while a write was in flight; the outcome is UNKNOWN: it "
                            "may still commit",
                            outcome_known=False,
                        ),
                    )
                elif isinstance(failure, AuthError):
                    # One instance per caller's traceback; "nothing was done" holds: unsent.
                    self._done(request, error=AuthError(str(failure)))
                else:
                    self._done(request, error=error)
            if failure is None:
                io.unsubscribe()
            io.close_socket()
            if io.link is not None:
                io.link.close()
                io.link = None
            self._socket_lock.release()
            self._wake_rx.close(linger=0)
            self._applied_waiters.wake_all()
            if isinstance(failure, ReplicaFailed):
                # The replica may be half-changed and will never be updated again: its objects
                # raise from now on rather than serve that state (ReplicaFailed's promise).
                # Last, with no lock of ours held: a reader holding the replica's lock is
                # never waiting on this thread any more (its requests were all failed above).
                detach = getattr(self.replica, "detach", None)  # a ReplicaSink may lack it
                if detach is not None:
                    detach(str(error))


def halt_seen(conn: Connection, now: float) -> tuple[str, str | None]:
    """(a clause for an Unavailable's message, the reason) when an agent refused us within the
    last timeout_ms_request because it halted: the reason is a word of wire.HALT_REASONS (checked
    when noted), never the agent's own message. ("", None) otherwise."""
    last = conn.last_halt
    if last is None or now - last[1] > conn.timeout_ms_request / 1000:
        return "", None
    reason = last[0]
    # "an agent", not "the last": a later refusal from an agent that had not halted (a
    # not_leader while the others elect) leaves the reason kept, and it is still why (review36).
    clause = (
        f"; an agent that refused it within timeout_ms_request had stopped applying ({reason}: "
        "every agent that stopped says why in `superstatic status`, docs/agent.md)"
    )
    return clause, reason


class _IoState:
    """Everything the I/O thread owns: the socket, the session counters, in-flight requests."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rng = conn.rng
        self.req_ids = itertools.count(1)
        self.seq_next = 1
        self.requests: dict[int, _Request] = {}  # by request serial (not req id)
        # Taken from the queue, not yet given a seq: writes held back by SEQ_WINDOW_MAX (and
        # whatever was queued after them, so each caller's order is kept).
        self.waiting: collections.deque[_Request] = collections.deque()
        self.serials = itertools.count(1)
        self.by_req_id: dict[int, _Request] = {}  # every unanswered attempt's req id
        self.by_seq: dict[int, _Request] = {}  # the writes in `requests`, by seq
        # Every queued or in-flight request's deadline, and when the next attempt of each
        # request in flight is due (a first send, a retry after backoff, or a resend after
        # timeout_ms_resend without an answer): each turn costs O(log n), not O(requests).
        self.deadlines: TimerHeap[_Request] = TimerHeap()
        self.sends: TimerHeap[_Request] = TimerHeap()
        # Writes due while no session was open: sent once the "open" in flight is answered.
        self.after_open: list[_Request] = []
        self.feeder = StreamFeeder(conn.replica, filtered=conn.heap_io is not None)
        self.endpoint_index = 0
        self.sock: zmq.Socket[Any] | None = None
        self.sock_fd = -1  # what the I/O thread polls for the socket (its ZMQ_FD)
        # The socket had frames waiting when the lock was last released: poll without waiting.
        self.more = False
        # Whether the next turn must read the socket (`look_sock`) or the link (`look_link`)
        # though the poll did not report its descriptor. The descriptors are edge-triggered:
        # any use of a socket may consume the edge of frames that arrived, so every use is
        # followed by a look at ZMQ_EVENTS (the turn's end; a lone caller's `send_direct`),
        # which sets these. A turn reads a socket only when its descriptor fired or these say
        # so, instead of every turn until `zmq.Again` (an exception of ~5-10 us each: 8.17).
        self.look_sock = True
        self.look_link = True
        self.timeout_ms = 0
        self.monitor: zmq.Socket[Any] | None = None
        self.connected = False
        # Failovers since an agent last answered HELLO, and when the socket of a round that
        # follows a failed one is opened (None: it is open, or opens at once).
        self.failed_attempts = 0
        self.reopen_at: float | None = None
        self.hello_req = 0
        self.sub_req = 0
        self.close_linger_ms = 0  # ZMQ_LINGER of the next close_socket (unsubscribe sets it)
        # Bytes of stream frames received for sub_req, and as last acknowledged in a PING:
        # the agent sends a subscriber only so much unacknowledged (its backlog bound).
        self.stream_bytes = 0
        self.stream_bytes_acked = 0
        self.session_ttl_ms = 60_000
        self.last_rx = 0.0
        self.last_ping = 0.0
        self.last_stream = 0.0
        self.last_propose = time.monotonic()  # last PROPOSE sent or answered
        self.refusing_since: float | None = None
        self.keepalive: _Request | None = None
        # The session: the index of the "open" entry that started it (0: none yet), the open
        # in flight, and when a failed open may be tried again.
        self.session = 0
        self.opening: _Request | None = None
        self.open_retry_at = 0.0
        self.sessions_opened = 0
        self.poller = zmq.Poller()
        # Endpoints that refused our key since the last completed handshake (-> why), and the
        # silent handshake failures per endpoint since its last success (client_keys.refusal).
        self.refused: dict[str, str] = {}
        self.old_model: set[str] = set()  # endpoints whose agent speaks data model 1
        self.no_heap: set[str] = set()  # endpoints whose agent has no virtual heap
        self.silent_failures: dict[str, int] = {}
        # Whether the agent takes PROPOSE_MANY (until it answers one with an ERROR; asked
        # again after every (re)connection, which may be to another agent), and the item req
        # ids of the PROPOSE_MANY frames sent, by the frame's req id (MANY_FRAMES_TRACKED_MAX).
        # Coalescing is on unless SUPERSTATIC_COALESCE=0 (read once, at connect).
        self.coalesce = conn.coalesce
        self.many_ok = self.coalesce
        self.many_frames: dict[int, list[int]] = {}
        # Writes to the leader (docs/data-model-v2.md 8.4): the agent ids behind the endpoints
        # we were given (learned from HELLO answers), the leader our agent names, the link to
        # it, and the last PING's req id (its answer names the leader).
        self.agent_ids: dict[str, str] = {}
        self.leader_id: str | None = None
        self.link: LeaderLink | None = None
        self.link_failed: dict[str, float] = {}  # endpoint -> not tried again before
        self.ping_req = 0
        self.ping_reqs: deque[int] = deque(maxlen=PINGS_TRACKED_MAX)  # this socket's PINGs
        self.held: list[_Request] = []  # requests whose `answer` waits for our replica

    # -- main loop -------------------------------------------------------------------------

    def loop(self) -> None:
        conn = self.conn
        self.poller.register(conn._wake_rx, zmq.POLLIN)
        with conn._socket_lock:
            self.open_socket()
            self.timeout_ms = self.next_wake_ms()
        while True:
            with conn._lock:
                if conn._closing:
                    return
                timeout_ms = self.timeout_ms
                if conn._expected:
                    # Holding for callers woken together: sleep until they are all queued
                    # (the last one wakes us) or the hold is over.
                    held_ms = (time.monotonic() - conn._expected_since) * 1000
                    timeout_ms = min(timeout_ms, max(0, math.ceil(GROUP_HOLD_MS_MAX - held_ms)))
                elif conn._queue:
                    timeout_ms = 0  # queued while this thread was busy: no wake-up was sent
                if self.more:
                    timeout_ms = 0
                conn._io_asleep = timeout_ms > 0
                conn._wake_sent = False
            # The socket's descriptor, not the socket: polling a socket is a use of it, and a
            # lone caller may be sending on it meanwhile (under the lock we do not hold here).
            ready = dict(self.poller.poll(timeout_ms))
            conn._io_asleep = False  # without the lock: a caller seeing it late wakes us once
            with conn._socket_lock:
                conn._in_turn = True
                try:
                    self.turn(ready)
                finally:
                    conn._in_turn = False
            conn._wake_settled()

    def turn(self, ready: dict[Any, int]) -> None:
        """One turn of the I/O thread (under the socket lock): what the poll returned, what
        callers queued, what is due."""
        conn = self.conn
        conn.io_turns += 1
        if conn._wake_rx in ready:
            self.drain_wake()
        if self.monitor is not None and self.monitor in ready:
            self.on_monitor()
        if self.sock is not None and (self.look_sock or self.sock_fd in ready):
            # The descriptor is edge-triggered and any use of the socket (a caller's send
            # too) may consume its edge: read until empty when it fired or when the last
            # look at ZMQ_EVENTS after a use found frames (`look_sock`).
            self.look_sock = False
            self.on_frames()
        if self.link is not None:
            self.on_link(ready)
        # What callers queued while this turn ran (they sent no wake-up: we were awake) goes
        # out with what is due now, in the same frame.
        self.take_queued()
        self.on_timers(time.monotonic())
        # After the turn's last use of either socket: what arrived since their reads (or
        # whose edge a send consumed) is read at once, in the next turn.
        self.look_sock = self.sock is not None and bool(self.sock.get(_ZMQ_EVENTS) & _POLLIN)
        self.look_link = self.link is not None and self.link.more()
        self.more = self.look_sock or self.look_link
        self.timeout_ms = self.next_wake_ms()

    def send_direct(self, request: _Request) -> bool:
        """A lone caller's write, sent from the caller's thread (Connection._send_direct, under
        the socket lock); False if it must wait for the I/O thread (no session or connection
        yet: the I/O thread opens them)."""
        if self.sock is None or not self.connected or self.session == 0:
            return False
        now = time.monotonic()
        request.seq = self.seq_next
        self.seq_next += 1
        if request.trace is not None:
            request.trace["io_taken"] = time.monotonic_ns()
        self.deadlines.set(request, request.deadline)
        self.admit(request, now)
        self.send_request(request, now)
        look_link = self.link is not None and self.link.more()
        look_sock = self.sock is not None and bool(self.sock.get(_ZMQ_EVENTS) & _POLLIN)
        if look_link or look_sock:
            # Frames arrived and our send consumed the descriptor's edge: the I/O thread,
            # waiting on it, must look now, though its poll will not report the descriptor.
            self.look_link = self.look_link or look_link
            self.look_sock = self.look_sock or look_sock
            self.conn._wake()
        return True

    def next_wake_ms(self) -> int:
        """How long the loop may sleep: until the earliest deadline, reconnect or (connected)
        due attempt, at most LOOP_WAKE_MS_MAX. O(log n): the times are kept in heaps."""
        now = time.monotonic()
        wake = now + LOOP_WAKE_MS_MAX / 1000
        if self.reopen_at is not None:
            wake = min(wake, self.reopen_at)
        deadline = self.deadlines.earliest()
        if deadline is not None:
            wake = min(wake, deadline)
        if self.connected:
            due = self.sends.earliest()
            if due is not None:
                wake = min(wake, due)
        return max(0, int((wake - now) * 1000))

    def admit(self, request: _Request, now: float) -> None:
        """Registers a request in flight (its seq, if a write, already given), due now."""
        request.serial = next(self.serials)
        self.requests[request.serial] = request
        if request.seq:
            self.by_seq[request.seq] = request
        self.schedule(request, now)

    def schedule(self, request: _Request, at: float) -> None:
        """Sets when the request's next attempt is due; `inf`: sent, waiting for its answer,
        so a resend is due timeout_ms_resend after `sent_at`. A request the leader answered
        (waiting for our replica only) is never sent again."""
        request.send_at = at
        if request.answer is not None:
            self.sends.cancel(request)
            return
        if at == float("inf"):
            at = request.sent_at + self.conn.timeout_ms_resend / 1000
        self.sends.set(request, at)

    def drain_wake(self) -> None:
        """Empties the wake-up pipe; the queue itself is taken later in the turn."""
        conn = self.conn
        with contextlib.suppress(zmq.Again):
            for _ in range(SOCKET_HWM_FRAMES):
                conn._wake_rx.recv(zmq.NOBLOCK)

    def take_queued(self) -> None:
        """Takes every request callers queued, in their order, and admits what it may."""
        conn = self.conn
        if not conn._queue and not conn._expected:
            return  # read without the lock: a request queued meanwhile is seen before we sleep
        with conn._lock:
            if conn._expected:
                if time.monotonic() - conn._expected_since < GROUP_HOLD_MS_MAX / 1000:
                    return  # callers woken together still due: the last one wakes us
                conn._expected = 0  # the hold is over: what came goes now
            taken = list(conn._queue)
            conn._queue.clear()
        for request in taken:
            self.deadlines.set(request, request.deadline)
        self.waiting.extend(taken)
        self.admit_waiting(time.monotonic())

    def admit_waiting(self, now: float) -> None:
        """Gives the waiting requests their seqs, in order, while the seq window allows."""
        if not self.waiting:
            return
        low = self.seq_low()
        for _ in range(len(self.waiting)):
            request = self.waiting[0]
            if request.op == "propose":
                if self.seq_next - low >= SEQ_WINDOW_MAX:
                    return  # behind a stuck request: wait for it (on_timers tries again)
                request.seq = self.seq_next
                self.seq_next += 1
            self.waiting.popleft()
            if request.trace is not None:
                request.trace["io_taken"] = time.monotonic_ns()
            self.admit(request, now)

    # -- socket lifecycle ------------------------------------------------------------------

    def open_socket(self) -> None:
        conn = self.conn
        endpoint = conn.endpoints[self.endpoint_index]
        conn.endpoint = endpoint
        sock = conn._ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            # Queue only on a completed connection: a send that cannot go out fails now, so we
            # know a PROPOSE that was never handed to an agent cannot have committed.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, SOCKET_HWM_FRAMES)
            sock.setsockopt(zmq.RCVHWM, SOCKET_HWM_FRAMES)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1_000)
            sock.setsockopt(zmq.MAXMSGSIZE, wire.FRAME_BYTES_MAX)
            if conn.keys is not None:
                conn.keys.apply(sock)  # CURVE client: before connect
            self.monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
            sock.connect(endpoint)
        except BaseException:
            # A half-made socket (out of file descriptors, a bad endpoint) must not outlive
            # this: an unclosed socket makes the context's term() in close() wait forever.
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            if self.monitor is not None:
                self.monitor.close(linger=0)
                self.monitor = None
            sock.close(linger=0)
            raise
        self.sock = sock
        self.sock_fd = sock.get(zmq.FD)
        self.look_sock = True  # a new socket: looked at once, whatever its descriptor says
        self.connected = False
        self.last_rx = time.monotonic()
        self.poller.register(self.sock_fd, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def unsubscribe(self) -> None:
        """At a clean close, tells the agent the stream is over (best effort, never waits for
        an answer): without it the agent kept this app's subscription, and for a partial
        replica its held set, streaming to a closed socket until --subscriber-silence-ms."""
        if self.sub_req and self.send(wire.FrameType.UNSUBSCRIBE, {}) is not None:
            self.sub_req = 0
            # The frame is queued in libzmq: give it a bounded time to leave at close.
            self.close_linger_ms = UNSUBSCRIBE_LINGER_MS

    def close_socket(self) -> None:
        if self.sock is None:
            return
        assert self.monitor is not None
        self.poller.unregister(self.sock_fd)
        self.poller.unregister(self.monitor)
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=self.close_linger_ms)
        self.close_linger_ms = 0
        self.sock = None
        self.monitor = None
        self.connected = False
        self.ping_reqs.clear()  # req ids are the connection's: another socket's never match

    def note_halt(self, body: Any) -> None:
        """Remembers the halt reason a refusal names (a word of wire.HALT_REASONS, else
        nothing): what the error raised when no agent serves us says (halt_seen)."""
        reason = wire.halt_reason(body)
        if reason is not None:
            self.conn.last_halt = (reason, time.monotonic())

    def failover(self, reason: str) -> None:
        """Moves to the next endpoint (the same one again when there is only one); after a
        whole round of endpoints without an agent answering HELLO, only after a pause."""
        conn = self.conn
        old = conn.endpoint
        self.close_socket()
        self.endpoint_index = (self.endpoint_index + 1) % len(conn.endpoints)
        conn.failovers += 1
        _stats.STATS.note("failovers")
        self.refusing_since = None
        self.failed_attempts += 1
        rounds_failed, into_round = divmod(self.failed_attempts, len(conn.endpoints))
        delay_ms = 0.0
        if rounds_failed and not into_round:
            delay_ms = reconnect_delay_ms(
                rounds_failed, conn.reconnect_delay_ms_min, conn.reconnect_delay_ms_max, self.rng
            )
        log.info(
            "superstatic: leaving agent %s (%s); trying %s in %.0f ms",
            old,
            reason,
            conn.endpoints[self.endpoint_index],
            delay_ms,
        )
        if delay_ms:
            self.reopen_at = time.monotonic() + delay_ms / 1000
        else:
            self.open_socket()

    def on_monitor(self) -> None:
        assert self.monitor is not None
        for _ in range(FRAMES_PER_TURN_MAX):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            endpoint = self.conn.endpoint
            if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.silent_failures[endpoint] = self.silent_failures.get(endpoint, 0) + 1
            silent = self.silent_failures.get(endpoint, 0)
            refused = client_keys.refusal(kind, event["value"], endpoint, self.conn.keys, silent)
            if refused is not None:
                self.key_refused(refused)
                return  # the monitor socket was replaced
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.refused.clear()
                self.silent_failures.pop(endpoint, None)
                self.on_connected()
            elif kind == zmq.EVENT_DISCONNECTED:
                self.failover("disconnected")
                return  # the monitor socket was replaced
            elif (
                kind == zmq.EVENT_CONNECT_RETRIED
                and not self.connected
                and len(self.conn.endpoints) > 1
            ):
                # Nothing listens there (refused): no point waiting for the silence timeout.
                self.failover("connection refused")
                return

    def key_refused(self, why: str) -> None:
        """This agent refused our key (or our lack of one). Another agent may not have (an
        allow list being updated host by host), so the others are tried; once every endpoint
        refused, the connection stops and every caller gets AuthError with the reason."""
        self.refused[self.conn.endpoint] = why
        if len(self.refused) >= len(set(self.conn.endpoints)):
            raise AuthError(why)
        self.failover("it refused our key")

    def model_refused(self) -> None:
        """This agent speaks another data model (it says none: model 1). The others are tried
        (a cluster is upgraded while stopped, so one of them may be new); once every endpoint
        answered so, the connection stops and every caller gets the reason."""
        endpoint = self.conn.endpoint
        self.old_model.add(endpoint)
        if len(self.old_model) >= len(set(self.conn.endpoints)):
            raise IncompatibleAgent(
                f"the agent at {endpoint} speaks data model 1; upgrade the agents (this "
                f"library speaks data model {wire.DATA_MODEL})"
            )
        self.failover("it speaks data model 1")

    def heap_refused(self) -> None:
        """A partial replica's agent does not speak the virtual heap (its HELLO says no "heap"):
        it would send the whole object table. The others are tried; once every endpoint
        answered so, the connection stops saying what to do. (docs/virtual-heap.md 2.2 asks
        for a fall back to a full replica instead: not built, section 11.)"""
        endpoint = self.conn.endpoint
        self.no_heap.add(endpoint)
        if len(self.no_heap) >= len(set(self.conn.endpoints)):
            raise IncompatibleAgent(
                f"the agent at {endpoint} does not speak the virtual heap that "
                "connect(replicate='partial') needs; upgrade the agents, or connect with "
                "replicate='all'"
            )
        self.failover("it does not speak the virtual heap")

    def on_connected(self) -> None:
        """A (re)established connection: new HELLO, new subscription, re-send everything
        unanswered with its same seq."""
        self.connected = True
        self.many_ok = self.coalesce
        self.many_frames.clear()
        now = time.monotonic()
        self.last_rx = now
        hello = {"client": self.conn.client_id, "model": wire.DATA_MODEL}
        self.hello_req = self.send(wire.FrameType.HELLO, hello) or 0
        self.subscribe()
        for request in self.requests.values():
            self.schedule(request, now)
        for request in self.held:
            request.held_at = now  # the new agent's own time to apply them
        self.last_ping = now

    def subscribe(self) -> None:
        self.feeder.begin()
        self.last_stream = time.monotonic()
        applied = self.conn.replica.applied_index
        self.stream_bytes = self.stream_bytes_acked = 0
        # "answers": our writes that apply "ok" are answered by their event in this stream,
        # not by a REPLY as well (docs/data-model-v2.md 8.2); an agent that predates it ignores
        # the field and replies as before.
        heap = self.conn.heap_io
        if heap is None:
            subscribe = {"from": applied, "model": wire.DATA_MODEL, "answers": True}
            self.sub_req = self.send(wire.FrameType.SUBSCRIBE, subscribe) or 0
            return
        # Partial: the held set is declared in HOLD frames before the stream starts
        # (docs/virtual-heap.md 4.1); own events always pass the agent's filter ("client").
        parts = heap.on_subscribe(self)
        subscribe = wire.subscribe_body(
            applied, heap="partial", client=self.conn.client_id, hold_parts=parts
        )
        subscribe["answers"] = True
        self.sub_req = self.send(wire.FrameType.SUBSCRIBE, subscribe) or 0
        if self.sub_req:
            heap.send_holds(self)

    def resubscribe(self, reason: str) -> None:
        self.conn.resubscribes += 1
        log.info("superstatic: resubscribing to %s (%s)", self.conn.endpoint, reason)
        self.subscribe()  # the agent replaces a connection's subscription with the new one

    def send(self, frame_type: wire.FrameType, body: dict[str, Any]) -> int | None:
        """Sends one frame; returns its req id, or None if it could not go out now."""
        if self.sock is None or not self.connected:
            return None
        req_id = next(self.req_ids)
        data = wire.encode(frame_type, req_id, body)
        try:
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return None
        return req_id

    # -- incoming frames -------------------------------------------------------------------

    def on_frames(self) -> None:
        assert self.sock is not None
        sock = self.sock
        for _ in range(FRAMES_PER_TURN_MAX):
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_rx = time.monotonic()
            try:
                frame = wire.decode(data, wire.AGENT_TO_CLIENT)
                if frame.req_id == self.sub_req and frame.type in _STREAM_FRAMES:
                    self.stream_bytes += len(data)
                self.on_frame(frame)
            except (ProtocolError, StreamGap) as exc:
                if isinstance(exc, ProtocolError):
                    log.warning("superstatic: bad frame from agent %s: %s", self.conn.endpoint, exc)
                self.resubscribe(str(exc))
            # Time spent applying (a large snapshot) is ours, not the agent's silence.
            self.last_rx = time.monotonic()
            if self.sock is not sock:
                return  # failed over while handling a frame
            if self.stream_bytes - self.stream_bytes_acked >= STREAM_ACK_BYTES:
                self.ping()  # acknowledge early: a fast stream must not wait for the timer

    def on_frame(self, frame: wire.Frame) -> None:
        ftype, req_id = frame.type, frame.req_id
        if ftype in _STREAM_FRAMES:
            if req_id != self.sub_req:
                return  # a previous subscription's tail
            self.last_stream = time.monotonic()
            before = self.conn.replica.applied_index
            if ftype is wire.FrameType.LOADED:
                loaded = self.feeder.feed_loaded(frame.body)
                advanced = loaded is not None
                if loaded is not None and self.conn.heap_io is not None:
                    self.conn.heap_io.on_loaded(loaded)
            elif ftype is wire.FrameType.EVENTS:
                if _trace.ENABLED:
                    advanced = _trace.feed_events(self.feeder, frame.body)
                else:
                    advanced = self.feeder.feed_events(frame.body)
            else:
                advanced = self.feeder.feed_snapshot(frame.body)
            if advanced:
                self.conn._applied_waiters.wake_upto(self.conn.replica.applied_index)
                if ftype is wire.FrameType.EVENTS:
                    if self.requests:
                        self.settle_by_events(frame.body)
                elif self.conn.replica.applied_index > before and self.requests:
                    self.ask_again_after_jump()
                if self.held:
                    self.settle_held()
            return
        if req_id == self.hello_req and req_id:
            self.on_hello(frame)
            return
        if (
            ftype is wire.FrameType.ERROR
            and frame.body.get("code") == wire.ErrorCode.FORBIDDEN
            and req_id
            and (req_id == self.sub_req or req_id in self.ping_reqs)
        ):
            # PING and SUBSCRIBE are every role's frames (keyfiles.ROLE_FRAMES): refused, they
            # say this agent no longer trusts our key (revoked since we connected; it dropped
            # our stream too). Taken as a refused HELLO is: the other agents are tried, and
            # AuthError goes to every caller once all refused. Ignored, an idle replica went
            # stale with nothing said, and a write answered by the leader waited for its event
            # on the dropped stream until timeout_ms_agent_silence.
            self.key_refused(str(frame.body.get("message")))
            return
        if req_id == self.sub_req and ftype is wire.FrameType.ERROR:
            code = frame.body.get("code")
            if code == wire.ErrorCode.UNAVAILABLE:
                # This agent cannot feed us (it halted, or its store is damaged): another can.
                # Resubscribing here would be refused again, and its silence would hold our
                # calls until their timeouts.
                self.note_halt(frame.body)
                self.failover(f"it refused our stream: {frame.body.get('message')}")
                return
            self.resubscribe(f"subscription refused: {code}: {frame.body.get('message')}")
            return
        if req_id == self.ping_req and req_id and ftype is wire.FrameType.REPLY:
            self.want_leader(frame.body.get("leader"))  # our agent names the leader it follows
            return
        if ftype is wire.FrameType.REPLY_MANY:
            self.on_reply_many(frame.body)
            return
        heap = self.conn.heap_io
        if heap is not None and req_id in heap.load_reqs:
            if ftype is wire.FrameType.ERROR:
                heap.on_error(self, req_id, frame.body)
            return
        request = self.by_req_id.get(req_id)
        if request is None:
            items = self.many_frames.pop(req_id, None)
            if items is not None and ftype is wire.FrameType.ERROR:
                self.on_many_refused(items, frame.body)
            return  # a PING answer, or the answer to an attempt already settled
        if ftype is wire.FrameType.REPLY:
            self.on_reply(request, req_id, frame.body)
        else:
            self.on_error(request, req_id, frame.body)

    def ask_again_after_jump(self) -> None:
        """A SNAPSHOT or a subscription's own LOADED (a held snapshot) moved our replica past
        entries it was never sent as events. The agent sent no REPLY for a write of ours that
        applied `ok` while our stream was to carry its event (we subscribed with "answers"), and
        decided so when the entry applied: if the stream was behind then and the log was
        compacted before it got there, the event is one of those skipped, and nothing else
        would answer the write before its resend (`timeout_ms_resend`), or its deadline (an
        UNKNOWN outcome for a committed write: review 21). So every write waiting for an
        answer from our own agent goes again now, same seq: the exactly-once record answers a
        copy of one that applied as a dup, by REPLY, with its outcome and first index; one
        that had not applied yet is applied once, by whichever copy comes first. A write on
        the link to the leader is not concerned (the leader REPLYs it: no stream there), nor
        a traced one (its REPLY carries its stamps), nor one answered already. Jumps are rare
        (a stream behind the log, a new subscription): at most one entry more per write in
        flight then."""
        now = time.monotonic()
        for request in self.requests.values():
            if (
                request.op == "propose"
                and request.send_at == float("inf")  # sent, waiting for its answer
                and request.unresolved  # an attempt may have applied (none: all refused)
                and not request.via_link
                and request.trace is None
                and request.answer is None
                and not request.slot.done()
            ):
                self.schedule(request, now)
                self.conn.resent_after_jumps += 1

    def on_reply_many(self, body: dict[str, Any]) -> None:
        """The REPLYs one Ready gave this connection's writes, in one frame: each settles as
        its REPLY would. The whole frame is checked before any item is used (a bad one raises
        ProtocolError, and the frame is dropped); an item whose req id no write waits for (an
        attempt already settled) is ignored, as such a REPLY is."""
        by_req_id = self.by_req_id
        for req_id, reply in wire.parse_reply_many(body):
            request = by_req_id.get(req_id)
            if request is not None and request.op == "propose":
                self.on_reply(request, req_id, reply)

    def settle_by_events(self, body: dict[str, Any]) -> None:
        """Our writes whose events just applied with outcome "ok" are settled from them: the
        agent sends no REPLY for those (we subscribed with "answers"), and the replica already
        holds them, so the caller's wait for the applied index returns at once. Any other
        outcome (conflict, error, dup, session_expired) still comes as a REPLY, and so does a
        traced write's (it carries the stamps)."""
        events = body.get("ev")
        if type(events) is not list:
            return
        client = self.conn.client_id
        by_seq = self.by_seq
        applied = self.conn.replica.applied_index
        settled = False
        for event in events:
            if type(event) is not list or len(event) < 4:
                continue
            if event[1] != client or event[3] != "ok" or type(event[0]) is not int:
                continue
            request = by_seq.get(event[2]) if type(event[2]) is int else None
            if request is None or request.op != "propose" or request.trace is not None:
                continue
            index = event[0]
            if request is self.opening or index > applied:
                # The session's open (on_reply opens the session), or not applied here (never,
                # after a feed): as the REPLY would be.
                self.on_reply(request, 0, {"index": index, "outcome": "ok", "dup": False})
                continue
            # What on_reply does with an "ok" REPLY of an entry our replica holds, without
            # building and checking a REPLY per write (docs/data-model-v2.md 8.17). Settling
            # takes it out of by_seq: a second event of the seq finds nothing.
            settled = True
            self.settle(request, result=Committed(index, "ok", "", False))
        if settled:
            self.refusing_since = None
            self.last_propose = time.monotonic()

    def on_hello(self, frame: wire.Frame) -> None:
        code = frame.body.get("code")
        if frame.type is wire.FrameType.ERROR and code == wire.ErrorCode.FORBIDDEN:
            self.key_refused(str(frame.body.get("message")))  # revoked since we connected
            return
        if frame.type is wire.FrameType.ERROR:
            self.note_halt(frame.body)
            self.failover(f"HELLO refused: {frame.body.get('message')}")
            return
        model = frame.body.get("model")
        if type(model) is not int or model != wire.DATA_MODEL:
            self.model_refused()
            return
        if self.conn.heap_io is not None and frame.body.get("heap") != wire.HEAP_VERSION:
            self.heap_refused()
            return
        self.failed_attempts = 0  # an agent answers: the next failover goes straight on
        ttl = frame.body.get("session_ttl_ms")
        if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
            self.session_ttl_ms = ttl
        agent = frame.body.get("agent")
        if isinstance(agent, str) and agent:
            self.agent_ids[self.conn.endpoint] = agent
        self.want_leader(frame.body.get("leader"))

    def on_reply(self, request: _Request, req_id: int, body: dict[str, Any]) -> None:
        self.refusing_since = None
        if request.op == "read_index":
            index = body.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                self.settle(request, error=ProtocolError(f"READ_INDEX reply without index: {body}"))
                return
            self.settle(request, result=index)
            return
        index, outcome = body.get("index"), body.get("outcome")
        if not isinstance(index, int) or isinstance(index, bool) or not isinstance(outcome, str):
            self.settle(request, error=ProtocolError(f"PROPOSE reply is malformed: {body}"))
            return
        error = body.get("error") or ""
        now = time.monotonic()
        self.last_propose = now
        committed = Committed(index, outcome, str(error), bool(body.get("dup", False)))
        if request is self.opening:
            self.opening = None
            if outcome in ("ok", "dup"):
                self.session = index  # a retried open answers the first one's index
                self.sessions_opened += 1
            else:
                # e.g. SESSIONS_MAX: nothing waiting was sent; they retry until their deadline.
                log.warning("superstatic: no session opened (%s): %s", outcome, error)
                self.open_retry_at = now + self.backoff_s(request.attempts)
            self.settle(request, result=committed)
            self.session_opened(now)
            return
        if outcome == "session_expired":
            self.on_session_expired(request, req_id, str(error))
            return
        if request.trace is not None:
            request.trace["reply_rx"] = time.monotonic_ns()
            request.trace.update(_trace_proto.parse_reply_stamps(body))
            committed.trace = request.trace
            committed.trace_acks = _trace_proto.parse_reply_acks(body)
        elif request.via_link and self.conn.replica.applied_index < committed.index:
            # The leader answered before our own agent applied the entry: the caller would
            # wake only to wait for that (read-your-writes). Held, it is woken once, when our
            # replica has it (settle_held), or at its deadline with this answer (expire).
            if request.answer is None:
                request.answer = committed
                request.held_at = now
                self.held.append(request)
                self.sends.cancel(request)  # answered: never sent again
            return
        self.settle(request, result=committed)

    def settle_held(self) -> None:
        applied = self.conn.replica.applied_index
        held, self.held = self.held, []
        for request in held:
            assert request.answer is not None
            if request.answer.index <= applied:
                self.settle(request, result=request.answer)
            elif not request.slot.done():
                self.held.append(request)

    def on_session_expired(self, request: _Request, req_id: int, error: str) -> None:
        """The agent does not know the session this attempt named any more (it expired: idle
        past session_ttl_ms of log time, e.g. while this process was cut off). The attempt was
        not applied, but the session's recorded outcomes are gone: a write with another attempt
        that may have applied cannot be told from one that did not, so it fails as
        outcome-unknown, never retried (that could apply it twice). Writes with no such attempt
        go out in a new session, opened before them."""
        self.by_req_id.pop(req_id, None)
        request.unresolved.discard(req_id)  # refused by the state machine: not applied
        self.schedule(request, time.monotonic())
        if request.session != self.session or self.session == 0:
            return  # about a session already given up
        log.warning("superstatic: session %d expired (%s); opening a new one", self.session, error)
        expired = self.session
        self.session = 0
        for other in list(self.requests.values()):
            if other.op != "propose":
                continue
            if other.internal:
                self.settle(other, error=Error(f"session {expired} expired"))
            elif other.unresolved:
                self.settle(
                    other,
                    error=Unavailable(
                        f"this connection's session {expired} expired on the cluster (the "
                        f"process was cut off or idle longer than session_ttl_ms="
                        f"{self.session_ttl_ms} of log time: {error}). The outcome is UNKNOWN: "
                        "the write may have been applied before it expired. Check the state "
                        "(after superstatic.sync()) before retrying",
                        outcome_known=False,
                    ),
                )
            else:
                other.session = 0
        for listener in list(self.conn.session_expired_listeners):
            try:
                listener(f"session {expired}: {error}")
            except Exception:  # a listener's bug must not stop the I/O thread
                log.exception("superstatic: a session_expired listener failed")

    def on_error(self, request: _Request, req_id: int, body: dict[str, Any]) -> None:
        code, message = body.get("code"), str(body.get("message", ""))
        now = time.monotonic()
        if code == wire.ErrorCode.NOT_LEADER:
            self.want_leader(body.get("leader"))
        if code in (wire.ErrorCode.NOT_LEADER, wire.ErrorCode.BUSY):
            # Refused before proposing: this attempt cannot commit.
            request.unresolved.discard(req_id)
        if code in (wire.ErrorCode.NOT_LEADER, wire.ErrorCode.BUSY, wire.ErrorCode.UNAVAILABLE):
            self.note_halt(body)
            self.by_req_id.pop(req_id, None)
            request.refusals += 1
            retry_at = now + self.backoff_s(request.refusals)
            if retry_at <= request.deadline - LAST_ATTEMPT_MARGIN_MS / 1000:
                self.schedule(request, retry_at)
            else:
                # It waits for its deadline, refused (LAST_ATTEMPT_MARGIN_MS says why): no
                # retry, and no resend of the refused attempt either.
                request.send_at = float("inf")
                request.via_link = False  # a closing link must not send it again either
                self.sends.cancel(request)
            if self.refusing_since is None:
                self.refusing_since = now
            return
        self.by_req_id.pop(req_id, None)
        request.unresolved.discard(req_id)
        if request.unresolved:
            # This attempt was refused, but an earlier one (e.g. through another agent, with
            # other limits) may be in some log: a refusal of the request would claim too much.
            self.settle(
                request,
                error=Unavailable(
                    f"the agent refused a resend of the write ({code}: {message}) after an "
                    "earlier attempt reached an agent. The outcome is UNKNOWN: it may still "
                    "commit. Check the state (after superstatic.sync()) before retrying",
                    outcome_known=False,
                ),
            )
        elif code == wire.ErrorCode.FORBIDDEN:
            self.settle(request, error=AuthError(message))  # our key's role may not do this
            if request.internal and request.kind == "open":
                # Our key may not write: the writes waiting for this session would meet the
                # same refusal. Those with no attempt in any log are answered now (nothing done).
                for other in list(self.requests.values()):
                    if other.op == "propose" and not other.internal and not other.unresolved:
                        self.settle(other, error=AuthError(message))
        elif code == wire.ErrorCode.TOO_LARGE:
            self.settle(request, error=AgentRefusedTooLarge(message))
        elif code == wire.ErrorCode.STORE_FULL:
            self.settle(request, error=StoreFull(message))
        elif code == wire.ErrorCode.BAD_REQUEST:
            self.settle(request, error=ProtocolError(f"the agent refused the request: {message}"))
        else:
            self.settle(request, error=ProtocolError(f"the agent answered {code!r}: {message}"))

    def settle(
        self, request: _Request, result: Any = None, error: BaseException | None = None
    ) -> None:
        if request.serial:
            self.requests.pop(request.serial, None)
        if request.seq and self.by_seq.get(request.seq) is request:
            del self.by_seq[request.seq]
        for req_id in request.req_ids:
            if self.by_req_id.get(req_id) is request:
                del self.by_req_id[req_id]
        self.deadlines.cancel(request)
        self.sends.cancel(request)
        if request is self.keepalive:
            self.keepalive = None
        if request is self.opening:
            self.opening = None
            self.session_opened(time.monotonic())
        if request.answer is not None and request in self.held:
            self.held.remove(request)
        if error is not None and request.internal:
            log.info("superstatic: session %s entry failed: %s", request.kind, error)
        self.conn._done(request, result, error)

    # -- timers ----------------------------------------------------------------------------

    def on_timers(self, now: float) -> None:
        conn = self.conn
        if conn.heap_io is not None:
            conn.heap_io.expire(now)  # connected or not: a fault never waits past its time
        for request in self.deadlines.pop_due(now):
            if not request.serial:
                self.waiting.remove(request)  # never sent: its outcome is known
            self.expire(request)
        if self.waiting:
            self.admit_waiting(now)
        link = self.link
        if link is not None and not link.ready and now - link.opened_at > LINK_PROBE_MS / 1000:
            self.drop_link(f"no answer to HELLO within LINK_PROBE_MS={LINK_PROBE_MS}")
            self.want_leader(self.leader_id)
        if self.sock is None:
            if self.reopen_at is not None and now >= self.reopen_at:
                self.reopen_at = None
                self.open_socket()
            return
        silence_s = conn.timeout_ms_agent_silence / 1000
        if now - self.last_rx > silence_s:
            self.failover(f"silent for {conn.timeout_ms_agent_silence} ms")
            return
        if (
            self.refusing_since is not None
            and now - self.refusing_since > silence_s
            and len(conn.endpoints) > 1
        ):
            self.failover(f"refusing requests for {conn.timeout_ms_agent_silence} ms")
            return
        if not self.connected:
            return
        if (
            self.held
            and now - min(r.held_at for r in self.held) > silence_s
            and len(conn.endpoints) > 1
        ):
            # Our agent has not applied, for that long, a write the leader committed (cut off
            # from the log while it answers PINGs): with writes on the link it refuses nothing,
            # so this, not the refusals, says to leave it (as when writes are forwarded).
            self.failover(
                f"it has not applied a committed write for {conn.timeout_ms_agent_silence} ms"
            )
            return
        if self.sub_req == 0:
            self.subscribe()  # the first attempt could not go out
        if now - self.last_ping >= conn.ping_interval_ms / 1000:
            self.ping()
        if conn.heap_io is not None:
            conn.heap_io.on_turn(self, now)
        self.check_stream(now)
        self.keep_session_alive(now)
        due = self.sends.pop_due(now)
        if not due:
            return
        due.sort(key=lambda r: r.serial)  # in the order they were admitted (seq order)
        # The writes due now from every caller go out together in PROPOSE_MANY frames (one
        # frame, one agent turn, one Ready for all of them); the rest one by one.
        many: list[_Request] = []
        for request in due:
            if request.answer is not None:
                continue  # answered by the leader: waits for our replica, never sent again
            if request.send_at == float("inf"):
                # Due timeout_ms_resend after it was sent, with no answer from a live agent:
                # try again, same seq.
                request.send_at = now
            if request.op == "propose" and self.session == 0 and request is not self.opening:
                self.open_session(now)  # writes wait for a session
                self.wait_for_session(request, now)
                continue
            if request.op == "propose" and not request.internal and self.many_ok:
                many.append(request)
                continue
            self.send_request(request, now)
        if len(many) == 1:
            self.send_request(many[0], now)
        elif many:
            self.send_many(many, now)

    def ping(self) -> None:
        """Liveness, and the acknowledgement of the stream bytes received so far."""
        body = {"stream": [self.sub_req, self.stream_bytes]} if self.sub_req else {}
        req_id = self.send(wire.FrameType.PING, body)
        if req_id is not None:
            self.ping_req = req_id
            self.ping_reqs.append(req_id)
            self.last_ping = time.monotonic()
            self.stream_bytes_acked = self.stream_bytes

    def open_entry(self, now: float) -> _Request:
        """A session "open" entry (a new session, or the keep-alive of the current one), given
        the next seq and registered in flight, due now."""
        request = _Request(
            op="propose",
            deadline=now + self.conn.timeout_ms_request / 1000,
            kind="open",
            seq=self.seq_next,
            internal=True,
        )
        self.seq_next += 1
        self.deadlines.set(request, request.deadline)
        self.admit(request, now)
        return request

    def wait_for_session(self, request: _Request, now: float) -> None:
        """A write due while no session is open: sent once the open in flight is answered
        (`session_opened`), or when a failed open may be tried again."""
        if self.opening is not None:
            self.after_open.append(request)
        else:
            self.schedule(request, max(now, self.open_retry_at))

    def session_opened(self, now: float) -> None:
        """The open in flight was answered or given up: the writes that waited for it are due
        (at once with a session; at the next try of an open without one)."""
        waited, self.after_open = self.after_open, []
        at = now if self.session else max(now, self.open_retry_at)
        for request in waited:
            if not request.slot.done() and request.send_at <= now:
                self.schedule(request, at)

    def open_session(self, now: float) -> None:
        """Queues the "open" entry that starts a session, unless one is in flight."""
        if self.opening is not None or now < self.open_retry_at:
            return
        self.opening = self.open_entry(now)
        self.send_request(self.opening, now)

    def check_stream(self, now: float) -> None:
        wanted = self.conn._applied_waiters.wanted
        if (
            wanted > self.conn.replica.applied_index
            and now - self.last_stream > TIMEOUT_MS_STREAM_STALL / 1000
        ):
            self.resubscribe("no stream frames while behind")

    def keep_session_alive(self, now: float) -> None:
        """An "open" entry every session_ttl_ms / 3 of idleness, once the session has state
        (a seq) worth keeping: its exactly-once record must not expire under a retry."""
        if self.session == 0 or self.keepalive is not None or self.requests:
            return
        if now - self.last_propose < self.session_ttl_ms / 3000:
            return
        self.keepalive = self.open_entry(now)
        self.last_propose = now  # pace attempts even if this one fails

    def send_request(self, request: _Request, now: float) -> None:
        if request.op == "propose":
            request.session = 0 if request is self.opening else self.session
            assert request.session or request is self.opening, "a write sent without a session"
            body: dict[str, Any] = {
                "client": self.conn.client_id,
                "seq": request.seq,
                "seq_low": self.seq_low(),
                "kind": request.kind,
                "body": request.body,
                "session": request.session,
                # Its answer may come in a REPLY_MANY (docs/data-model-v2.md 8.11).
                wire.REPLY_MANY_FIELD: True,
            }
            if request.trace is not None:
                body[_trace_proto.FIELD_REQUEST] = True
            frame_type = wire.FrameType.PROPOSE
        else:
            body, frame_type = {}, wire.FrameType.READ_INDEX
        via_link = request.op == "propose" and self.link is not None and self.link.ready
        try:
            send = self.send_on_link if via_link else self.send
            req_id = send(frame_type, body)
        except LimitExceeded as exc:
            self.settle(request, error=exc)  # never sent: too large to be a frame
            return
        request.attempts += 1
        if request.op == "propose" and request.attempts > 1:
            _stats.STATS.note("resends")
        if req_id is None:
            self.schedule(request, now + self.backoff_s(request.attempts))
            return
        if request.op == "propose":
            request.unresolved.add(req_id)
            request.via_link = via_link
            self.last_propose = now
            if request.trace is not None:
                request.trace["sent"] = time.monotonic_ns()
        self.by_req_id[req_id] = request
        request.req_ids.append(req_id)
        request.sent_at = now
        self.schedule(request, float("inf"))

    def send_many(self, requests: list[_Request], now: float) -> None:
        """Sends writes in PROPOSE_MANY frames of at most PROPOSE_ITEMS_MAX items and
        MANY_BODY_BYTES_MAX body bytes; each item is an attempt with its own req id, answered
        as a PROPOSE with that req id would be."""
        chunk: list[_Request] = []
        size = 0
        for request in requests:
            item_bytes = len(request.body) + MANY_ITEM_OVERHEAD_BYTES
            if chunk and (
                len(chunk) >= wire.PROPOSE_ITEMS_MAX or size + item_bytes > MANY_BODY_BYTES_MAX
            ):
                self.send_many_frame(chunk, now)
                chunk, size = [], 0
            chunk.append(request)
            size += item_bytes
        if chunk:
            self.send_many_frame(chunk, now)

    def send_many_frame(self, requests: list[_Request], now: float) -> None:
        if len(requests) == 1 or self.sock is None or not self.connected:
            for request in requests:
                self.send_request(request, now)
            return
        items: list[list[Any]] = []
        req_ids: list[int] = []
        for request in requests:
            req_id = next(self.req_ids)
            req_ids.append(req_id)
            item: list[Any] = [req_id, request.seq, request.kind, request.body]
            if request.trace is not None:
                item.append(True)
            items.append(item)
        body = {
            "client": self.conn.client_id,
            "seq_low": self.seq_low(),
            "session": self.session,
            "items": items,
            wire.REPLY_MANY_FIELD: True,
        }
        frame_req = next(self.req_ids)
        try:
            data = wire.encode(wire.FrameType.PROPOSE_MANY, frame_req, body)
        except LimitExceeded:
            for request in requests:  # each alone: one too large for a frame is told so
                self.send_request(request, now)
            return
        via_link = self.link is not None and self.link.ready
        if via_link:
            assert self.link is not None
            sent = self.link.send(data)
            self.conn.sent_to_leader += len(requests) if sent else 0
        else:
            try:
                self.sock.send(data, zmq.NOBLOCK)
                sent = True
            except zmq.Again:
                sent = False
        if not sent:
            for request in requests:  # nothing went out: as send_request after a full queue
                request.attempts += 1
                self.schedule(request, now + self.backoff_s(request.attempts))
            return
        self.last_propose = now
        sent_ns = time.monotonic_ns()
        for request, req_id in zip(requests, req_ids, strict=True):
            request.session = self.session
            request.attempts += 1
            if request.attempts > 1:
                _stats.STATS.note("resends")
            request.unresolved.add(req_id)
            request.via_link = via_link
            self.by_req_id[req_id] = request
            request.req_ids.append(req_id)
            request.sent_at = now
            self.schedule(request, float("inf"))
            if request.trace is not None:
                request.trace["sent"] = sent_ns
        self.many_frames[frame_req] = req_ids
        while len(self.many_frames) > MANY_FRAMES_TRACKED_MAX:
            del self.many_frames[next(iter(self.many_frames))]

    def on_many_refused(
        self, item_req_ids: list[int], body: dict[str, Any], endpoint: str | None = None
    ) -> None:
        """The agent refused a PROPOSE_MANY frame as a whole (an agent that does not know the
        type answers bad_request; a frame-level ERROR is answered before any item is looked
        at): none of its items was proposed. They go again as PROPOSEs, and this connection
        sends PROPOSEs only until it connects again."""
        if self.many_ok:
            log.info(
                "superstatic: agent %s refused PROPOSE_MANY (%s); sending PROPOSEs one by one",
                endpoint or self.conn.endpoint,
                body.get("code"),
            )
        self.many_ok = False
        now = time.monotonic()
        for req_id in item_req_ids:
            request = self.by_req_id.pop(req_id, None)
            if request is None:
                continue  # answered meanwhile (cannot be: the frame was refused whole)
            request.unresolved.discard(req_id)
            self.schedule(request, now)

    # -- writes to the leader (docs/data-model-v2.md 8.4) ------------------------------------

    def send_on_link(self, frame_type: wire.FrameType, body: dict[str, Any]) -> int | None:
        """send(), on the link to the leader."""
        assert self.link is not None
        req_id = next(self.req_ids)
        if not self.link.send(wire.encode(frame_type, req_id, body)):
            return None
        self.conn.sent_to_leader += 1
        return req_id

    def want_leader(self, leader: object) -> None:
        """Our agent (or the leader link's) named the leader: writes go to it directly, over a
        link to the endpoint we were given whose agent is that id (tried in turn until one
        answers HELLO with it). None when our own agent leads or no endpoint is it."""
        if not isinstance(leader, str) or not leader:
            return
        self.leader_id = leader
        link = self.link
        if link is not None and (link.agent is None or link.agent == leader):
            return  # still asking who it is, or already it
        if link is not None:
            self.drop_link(f"the leader is now {leader}", retry=False)
        if self.agent_ids.get(self.conn.endpoint) == leader:
            return  # our own agent leads: nothing to forward
        now = time.monotonic()
        endpoints = [e for e in self.conn.endpoints if self.link_failed.get(e, 0.0) <= now]
        known = [e for e in endpoints if self.agent_ids.get(e) == leader]
        unknown = [e for e in endpoints if e not in self.agent_ids and e != self.conn.endpoint]
        candidates = known or unknown
        if not candidates:
            return
        try:
            self.link = LeaderLink(self.conn._ctx, candidates[0], self.conn.keys, self.poller)
            self.look_link = True  # a new socket: looked at once, whatever its descriptor says
        except zmq.ZMQError as exc:
            log.info("superstatic: no link to the leader at %s: %s", candidates[0], exc)
            self.link_failed[candidates[0]] = now + LINK_RETRY_MS / 1000
            return
        self.link.opened_at = now

    def drop_link(self, reason: str, *, retry: bool = True) -> None:
        """Closes the link; writes whose last attempt went on it and are unanswered are sent
        again now (same seq) through our own agent or the next link: the exactly-once record
        answers a copy that did apply as a dup, and the attempt stays unresolved (its outcome
        is unknown until one is answered)."""
        link = self.link
        if link is None:
            return
        self.link = None
        link.close()
        log.info("superstatic: closed the link to the leader at %s (%s)", link.endpoint, reason)
        now = time.monotonic()
        for request in self.requests.values():
            if request.answer is not None:
                continue  # answered: only waits for our replica
            if request.via_link and request.send_at == float("inf"):
                self.schedule(request, now)
            request.via_link = False
        if retry:
            self.link_failed[link.endpoint] = now + LINK_RETRY_MS / 1000

    def on_link(self, ready: dict[Any, int]) -> None:
        link = self.link
        assert link is not None
        # The monitor is a socket the poll reports while it holds events (level-triggered);
        # the link's own descriptor is edge-triggered, as the connection's (`turn`).
        for kind, _value in link.events() if link.monitor in ready else ():
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.connected = True
                link.hello_req = next(self.req_ids)
                hello = {"client": self.conn.client_id}
                link.send(wire.encode(wire.FrameType.HELLO, link.hello_req, hello))
            else:  # disconnected, or the handshake failed (a refused key)
                self.drop_link("disconnected" if kind == zmq.EVENT_DISCONNECTED else "refused")
                return
        if not (self.look_link or link.fd in ready):
            return  # nothing arrived since the last look (`turn`)
        self.look_link = False
        for data in link.frames():
            try:
                frame = wire.decode(data, wire.AGENT_TO_CLIENT)
            except ProtocolError as exc:
                self.drop_link(f"bad frame: {exc}")
                return
            if frame.req_id == link.hello_req and link.hello_req:
                self.on_link_hello(link, frame)
                if self.link is not link:
                    return
                continue
            if frame.type is wire.FrameType.REPLY_MANY:
                try:
                    self.on_reply_many(frame.body)
                except ProtocolError as exc:
                    self.drop_link(f"bad frame: {exc}")
                    return
                continue
            request = self.by_req_id.get(frame.req_id)
            if request is None:
                # A PROPOSE_MANY refused whole (a leader that predates the type): as on our
                # own socket, its items go again as PROPOSEs.
                items = self.many_frames.pop(frame.req_id, None)
                if items is not None and frame.type is wire.FrameType.ERROR:
                    self.on_many_refused(items, frame.body, link.endpoint)
                continue
            if frame.type is wire.FrameType.REPLY:
                self.on_reply(request, frame.req_id, frame.body)
            elif frame.type is wire.FrameType.ERROR:
                if frame.body.get("code") == wire.ErrorCode.NOT_LEADER:
                    self.drop_link("it is not the leader any more", retry=False)
                self.on_error(request, frame.req_id, frame.body)  # names the leader, if known
                if self.link is not link:
                    return

    def on_link_hello(self, link: LeaderLink, frame: wire.Frame) -> None:
        if frame.type is not wire.FrameType.REPLY:
            self.note_halt(frame.body)
            self.drop_link(f"HELLO refused: {frame.body.get('code')}")
            return
        agent, leader = frame.body.get("agent"), frame.body.get("leader")
        if not isinstance(agent, str) or not agent:
            self.drop_link("HELLO without an agent id")
            return
        link.agent = agent
        self.agent_ids[link.endpoint] = agent
        if agent == leader:
            link.ready = True  # writes go here from now on
            self.leader_id = agent
            return
        # Not the leader (another endpoint is, or it changed): try the next one at once. This
        # endpoint waits LINK_RETRY_MS: asked again at once, an agent that knows no leader (an
        # election, a lost quorum) while ours still names it would be dialled in a busy loop.
        self.drop_link(f"agent {agent} is not the leader")
        self.want_leader(leader if isinstance(leader, str) and leader else self.leader_id)

    def seq_low(self) -> int:
        """Every seq below it was answered (or abandoned: never sent again), so the state
        machine may forget it."""
        # `requests` is in admission order, and writes get their seqs as they are admitted:
        # the first write in it holds the lowest seq (a scan stops there, not at the end).
        for request in self.requests.values():
            if request.op == "propose" and request.seq:
                return request.seq
        return self.seq_next

    def expire(self, request: _Request) -> None:
        conn = self.conn
        if request.answer is not None:
            # Committed (the leader said so), not yet applied here: the caller's own wait
            # for the local apply says how long that takes.
            self.settle(request, result=request.answer)
            return
        halted_clause, halted = halt_seen(conn, time.monotonic())
        if request.op == "read_index":
            error = Unavailable(
                f"no agent confirmed a read index within timeout_ms_request="
                f"{conn.timeout_ms_request} ms (endpoints {conn.endpoints}); no quorum or no "
                "reachable agent. Nothing was written. Retry later or check the agents "
                f"(superstatic status){halted_clause}",
                outcome_known=True,
                halted=halted,
            )
        elif request.unresolved:
            error = Unavailable(
                f"the cluster did not confirm the write within timeout_ms_request="
                f"{conn.timeout_ms_request} ms (endpoints {conn.endpoints}). The outcome is "
                "UNKNOWN: it reached an agent and may still commit. Check the state (after "
                f"superstatic.sync()) before retrying{halted_clause}",
                outcome_known=False,
                halted=halted,
            )
        else:
            error = Unavailable(
                f"no agent accepted the write within timeout_ms_request="
                f"{conn.timeout_ms_request} ms (endpoints {conn.endpoints}); it was NOT "
                f"committed. Retry later or check the agents (superstatic status){halted_clause}",
                outcome_known=True,
                halted=halted,
            )
        self.settle(request, error=error)

    def backoff_s(self, attempt: int) -> float:
        ceiling_ms = min(BACKOFF_MS_MAX, BACKOFF_MS_BASE * (2 ** min(attempt, 20)))
        return self.rng.uniform(ceiling_ms / 2, ceiling_ms) / 1000
