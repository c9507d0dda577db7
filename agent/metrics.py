"""What the agent measures about itself, for `--metrics` (Prometheus), the status page, STATUS
`recent` and `superstatic top`.

Two sides, two threads, one rule: **only immutable snapshots cross threads.**

- The loop side (`Recorder`) runs on the agent's single loop thread. The server calls its hooks
  (`on_ready`, `on_answered`, `on_error`, `on_sync`, `housekeeping`); they only add to plain
  counters and fixed-bucket histograms (`Buckets`): a few hundred nanoseconds each, no lock, no
  allocation worth speaking of. Every `PUBLISH_MS` (only with `--metrics`) `housekeeping`
  builds a `Published`: a deep copy of everything the HTTP side may show (STATUS, counters,
  histograms, the history of the last minutes, recent events, roots) and swaps it in with one
  reference assignment (atomic in CPython). The loop never waits for the HTTP thread.
- The HTTP side (`agent/http_status.py`, its own thread) reads `recorder.published` and never
  touches the Raft core, LMDB or any of the loop's structures. `StateCollector` turns the
  snapshot into Prometheus families for `prometheus_client.generate_latest` on a registry of
  this agent's own (never the process-global one).

Why the HTTP thread does not read LMDB itself (roots and their sizes), although LMDB allows
readers on other threads: a read transaction there would race `Storage.close()` at shutdown
and the repair that empties a damaged store, a damaged record met there must halt the agent
(which only the loop may do), and every reader pins pages and a reader slot the streams budget
for. So the loop reads the roots itself, in one short read transaction, at most every
`ROOTS_REFRESH_MS` and only while someone looks at the status page (the HTTP thread sets
`roots_wanted_until`, a float: a torn read is impossible under the GIL and a stale one harmless).

Histograms are kept by the loop with fixed bounds (a bisect per observation) instead of
`prometheus_client.Histogram` objects: the same buckets then give the per-second quantiles of
the status page's chart, and the hot path takes no lock (measured: docs/operations.md).
"""

from __future__ import annotations

import copy
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
from superstatic_agent.raft.types import Ready, Role
from superstatic_agent.statemachine import Applied
from superstatic_agent.storage import Corrupt

if TYPE_CHECKING:
    from superstatic_agent.logs import RepeatLimit
    from superstatic_agent.server import Server

# The HTTP side sees the loop's state at most this old (with --metrics only).
PUBLISH_MS = 500
# One point of the status page's chart (throughput and latency) per this interval.
HISTORY_SAMPLE_MS = 1_000
# Points kept: ten minutes at one per second.
HISTORY_SAMPLES_MAX = 600
# Recent events (leader changes, members joining or leaving, snapshots, halts) kept.
EVENTS_KEPT_MAX = 100
# Roots (and their sizes) are read again at most this often, only while the page is watched.
ROOTS_REFRESH_MS = 2_000
# The status page asks for roots for this long after its last request.
ROOTS_WANTED_S = 10.0
# Roots listed on the status page (the largest first; `superstatic inspect` lists them all).
STATUS_PAGE_ROOTS_MAX = 50

# Upper bounds (le) of the latency histograms, seconds: 0.25 ms to 30 s.
LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
# Upper bounds of the batch-size histograms, entries.
BATCH_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Buckets:
    """A histogram with fixed upper bounds, for the loop thread only (no lock)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        assert list(bounds) == sorted(bounds) and bounds, bounds
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as Prometheus' inclusive `le`.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def frozen(self) -> FrozenBuckets:
        return FrozenBuckets(self.bounds, tuple(self.counts), self.total, self.count)


@dataclass(frozen=True, slots=True)
class FrozenBuckets:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; the last one is +Inf
    total: float
    count: int

    def quantile(self, q: float) -> float | None:
        """An estimate (linear within the bucket, as Prometheus' histogram_quantile)."""
        assert 0.0 <= q <= 1.0, q
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(self.bounds):
                    return self.bounds[-1]  # beyond the last bound: say the last bound
                lower = self.bounds[i - 1] if i else 0.0
                return lower + (self.bounds[i] - lower) * max(0.0, rank - seen) / n
            seen += n
        return self.bounds[-1]

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last, as HistogramMetricFamily takes them."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


@dataclass(frozen=True, slots=True)
class Published:
    """What the HTTP thread may read: built by the loop, never changed after."""

    mono: float  # time.monotonic() when built
    wall_ms: int
    status: dict[str, Any]  # STATUS, deep-copied
    facts: dict[str, Any]  # log bytes, sessions, snapshot, subscribers
    counts: dict[str, dict[str, int]]  # counter families: name -> label value -> count
    histograms: dict[str, FrozenBuckets]
    history: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    roots: dict[str, Any] | None


class Recorder:
    """The loop side: hooks the server calls, and the snapshots it publishes."""

    def __init__(self, node_id: str, timeout_ms_proposal: int, publishing: bool) -> None:
        self.node_id = node_id
        self.publishing = publishing  # --metrics given: someone reads `published`
        self._timeout_s_proposal = timeout_ms_proposal / 1000.0
        self.server: Server | None = None
        # Counters by label value (Prometheus counter families).
        self.applied_by_outcome: Counter[str] = Counter()  # entries applied here
        self.replies_by_outcome: Counter[str] = Counter()  # PROPOSEs answered here
        self.errors_by_code: Counter[str] = Counter()  # ERROR frames sent to apps
        self.leader_changes = 0
        self.snapshots_installed = 0
        self.commit_latency = Buckets(LATENCY_BOUNDS_S)
        self.write_seconds = Buckets(LATENCY_BOUNDS_S)
        self.fsync_seconds = Buckets(LATENCY_BOUNDS_S)
        self.batch_entries = Buckets(BATCH_BOUNDS)
        self.apply_batch_entries = Buckets(BATCH_BOUNDS)
        # The interval since the last history sample.
        self._interval_latency = Buckets(LATENCY_BOUNDS_S)
        self._interval_applied = 0
        self._interval_answered = 0
        self._interval_started = time.monotonic()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SAMPLES_MAX)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT_MAX)
        self._soft: tuple[Role, str | None, int] | None = None
        self._members: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._snapshot_index = 0
        self._snapshot_mono = time.monotonic()
        self._next_publish = 0.0
        self._next_sample = time.monotonic() + HISTORY_SAMPLE_MS / 1000.0
        self._roots: dict[str, Any] | None = None
        self._next_roots = 0.0
        self.roots_wanted_until = 0.0  # set by the HTTP thread (see the module docstring)
        self.published: Published | None = None
        # The log's repeat limit (agent/logs.py), when the command line set logging up.
        self.log_limit: RepeatLimit | None = None

    # -- hooks (loop thread) -------------------------------------------------------------------

    def start(self, server: Server) -> None:
        self.server = server
        node = server.node
        self._soft = (node.role, node.leader, node.term)
        conf = node.conf
        self._members = (conf.voters, conf.learners)
        self._snapshot_index = node.first_index - 1
        self.event("started", f"agent {self.node_id} started at applied {server.applied}")

    def on_ready(self, ready: Ready, results: Sequence[Applied], write_s: float | None) -> None:
        """After a Ready was persisted, sent and applied (write_s: its write transaction)."""
        if write_s is not None:
            self.write_seconds.observe(write_s)
        if ready.entries:
            self.batch_entries.observe(len(ready.entries))
        if results:
            self.apply_batch_entries.observe(len(results))
            self._interval_applied += len(results)
            for applied in results:
                self.applied_by_outcome[applied.outcome] += 1
        if ready.snapshot is not None:
            self.snapshots_installed += 1
            self.event(
                "snapshot_installed", f"installed a snapshot at index {ready.snapshot.index}"
            )
        soft = (ready.role, ready.leader, ready.term)
        if soft != self._soft:
            self._on_soft_change(soft)
        server = self.server
        if server is not None:
            conf = server.node.conf
            members = (conf.voters, conf.learners)
            if members != self._members:
                self._on_members_change(members)

    def on_answered(self, deadline: float, outcome: str, now: float) -> None:
        """A PROPOSE answered from its entry's apply; its waiter's deadline says when it came."""
        latency_s = max(0.0, now - (deadline - self._timeout_s_proposal))
        self.commit_latency.observe(latency_s)
        self._interval_latency.observe(latency_s)
        self._interval_answered += 1
        self.replies_by_outcome[outcome] += 1

    def on_error(self, code: str) -> None:
        self.errors_by_code[code] += 1

    def on_sync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def on_halt(self, reason: str, message: str) -> None:
        self.event("halted", f"stopped applying ({reason}): {message[:200]}")

    def housekeeping(self, now: float) -> None:
        """Every housekeeping round (50 ms): a history point each second, a snapshot for the
        HTTP side each PUBLISH_MS when it exists."""
        if now >= self._next_sample:
            self._next_sample = now + HISTORY_SAMPLE_MS / 1000.0
            self._sample(now)
        if self.publishing and now >= self._next_publish:
            self._next_publish = now + PUBLISH_MS / 1000.0
            self.published = self._build(now)

    def recent(self) -> dict[str, Any]:
        """STATUS `recent`: the last history point (throughput and latency of the last second)."""
        last = self.history[-1] if self.history else None
        return {
            "window_s": HISTORY_SAMPLE_MS / 1000.0,
            "applied_per_s": last["applied_per_s"] if last else 0.0,
            "answered_per_s": last["answered_per_s"] if last else 0.0,
            "commit_p50_ms": last["p50_ms"] if last else None,
            "commit_p99_ms": last["p99_ms"] if last else None,
            "leader_changes": self.leader_changes,
        }

    # -- internals -----------------------------------------------------------------------------

    def event(self, kind: str, text: str) -> None:
        self.events.append({"ts_ms": int(time.time() * 1000), "kind": kind, "text": text})

    def _on_soft_change(self, soft: tuple[Role, str | None, int]) -> None:
        old = self._soft
        role, leader, term = soft
        self._soft = soft
        if leader is not None and (old is None or (old[1], old[2]) != (leader, term)):
            self.leader_changes += 1
            if role is Role.LEADER:
                self.event("leader", f"{self.node_id} became leader in term {term}")
            else:
                self.event("leader", f"{leader} is the leader in term {term}")
        elif leader is None and old is not None and old[1] is not None:
            self.event("leader", f"lost the leader {old[1]} (term {term})")

    def _on_members_change(self, members: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
        old = self._members or ((), ())
        self._members = members
        old_all = set(old[0]) | set(old[1])
        new_all = set(members[0]) | set(members[1])
        for node in sorted(new_all - old_all):
            kind = "voter" if node in members[0] else "learner"
            self.event("member_joined", f"{node} joined as a {kind}")
        for node in sorted(old_all - new_all):
            self.event("member_left", f"{node} left the configuration")
        for node in sorted(set(members[0]) & set(old[1])):
            self.event("member_promoted", f"{node} was promoted to voter")

    def _sample(self, now: float) -> None:
        took_s = max(1e-3, now - self._interval_started)
        latency = self._interval_latency.frozen()
        p50 = latency.quantile(0.5)
        p99 = latency.quantile(0.99)
        server = self.server
        point: dict[str, Any] = {
            "ts_ms": int(time.time() * 1000),
            "applied_per_s": round(self._interval_applied / took_s, 1),
            "answered_per_s": round(self._interval_answered / took_s, 1),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }
        if server is not None:
            point["commit"] = server.node.commit
            point["leader"] = server.node.leader
            snapshot_index = server.node.first_index - 1
            if snapshot_index != self._snapshot_index:
                # The log was compacted (or a snapshot installed): the object table as of that
                # index is the newest snapshot this agent can ship.
                self._snapshot_index = snapshot_index
                self._snapshot_mono = now
        self.history.append(point)
        self._interval_latency.reset()
        self._interval_applied = 0
        self._interval_answered = 0
        self._interval_started = now

    def _build(self, now: float) -> Published:
        server = self.server
        assert server is not None, "published before start()"
        status = copy.deepcopy(server.status())
        facts = self._facts(server, now)
        if now < self.roots_wanted_until and now >= self._next_roots:
            self._next_roots = now + ROOTS_REFRESH_MS / 1000.0
            self._roots = self._read_roots(server)
        counts = {
            "entries_applied": dict(self.applied_by_outcome),
            "proposal_replies": dict(self.replies_by_outcome),
            "errors": dict(self.errors_by_code),
            "log_lines_suppressed": self.log_limit.counts() if self.log_limit else {},
        }
        return Published(
            mono=now,
            wall_ms=int(time.time() * 1000),
            status=status,
            facts=facts,
            counts=counts,
            histograms={
                "commit_latency_seconds": self.commit_latency.frozen(),
                "storage_write_seconds": self.write_seconds.frozen(),
                "fsync_seconds": self.fsync_seconds.frozen(),
                "append_batch_entries": self.batch_entries.frozen(),
                "apply_batch_entries": self.apply_batch_entries.frozen(),
            },
            history=tuple(dict(point) for point in self.history),
            events=tuple(dict(event) for event in self.events),
            roots=self._roots,
        )

    def _facts(self, server: Server, now: float) -> dict[str, Any]:
        backlog, largest = server.streams.backlog_bytes()
        storage = server.storage
        sessions = 0
        objects = 0
        table_bytes = 0
        try:
            psize = int(storage.env.stat()["psize"])
            with storage.env.begin() as txn:
                sessions = int(txn.stat(storage.dbs.sessions)["entries"])
                objects = int(txn.stat(storage.dbs.oids)["entries"])
                for db in (storage.dbs.sessions, storage.dbs.sm_meta, *storage.dbs.node_dbs()):
                    stat = txn.stat(db)
                    pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
                    table_bytes += pages * psize
        except lmdb.Error:  # a failing store: STATUS says why; no figures this time
            pass
        return {
            "log_bytes": server._log_retained_bytes(),
            "sessions": sessions,
            "snapshot_index": server.node.first_index - 1,
            "snapshot_bytes": table_bytes,  # the node dbs, sessions and sm state: what ships
            "objects": objects,  # nodes stored (format 3: one oids record each)
            "snapshot_age_s": round(now - self._snapshot_mono, 3),
            "subscriber_backlog_bytes": backlog,
            "subscriber_backlog_bytes_largest": largest,
            "held_entries": server.streams.held_entries(),
            **server.streams.counters,
            "leader_changes": self.leader_changes,
            "snapshots_installed": self.snapshots_installed,
        }

    def _read_roots(self, server: Server) -> dict[str, Any] | None:
        from superstatic_agent import inspector

        if server.halted is not None and server.halted.get("reason") == "damaged":
            return None
        try:
            with server.storage.env.begin() as txn:
                listing = inspector.list_roots(txn, server.storage.dbs, inspector.ROOTS_MAX)
        except Corrupt as exc:  # never served: the agent halts, as for any read (agent.md)
            server._halt_damaged(exc)
            return None
        roots = sorted(listing["roots"], key=lambda r: -r["items"])[:STATUS_PAGE_ROOTS_MAX]
        return {**listing, "roots": roots, "shown": len(roots)}


# -- the Prometheus side (HTTP thread) -----------------------------------------------------------


PREFIX = "superstatic_"
ROLES = ("leader", "follower", "candidate", "pre_candidate")


class StateCollector:
    """Turns the recorder's latest `Published` into Prometheus metric families. Registered on
    the agent's own CollectorRegistry; read by the HTTP thread only."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def describe(self) -> list[Any]:
        return []  # families depend on the snapshot; no describe-time check wanted

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        pub = self.recorder.published
        if pub is None:
            return
        s = pub.status
        f = pub.facts
        node_id = str(s.get("id", ""))

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=float(value))

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=float(value))

        info = GaugeMetricFamily(
            PREFIX + "agent_info", "This agent (value 1).", labels=["id", "fsync"]
        )
        info.add_metric([node_id, "on" if s.get("fsync") else "off"], 1.0)
        yield info
        yield gauge(
            "status_age_seconds",
            "Age of the figures below: grows if the agent's loop is stuck.",
            max(0.0, time.monotonic() - pub.mono),
        )
        yield gauge("uptime_seconds", "Seconds since the agent started.", s.get("uptime_s", 0))
        role = GaugeMetricFamily(PREFIX + "role", "1 for this agent's Raft role.", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if s.get("role") == name else 0.0)
        yield role
        yield gauge("is_leader", "1 if this agent leads.", s.get("role") == "leader")
        yield gauge("has_leader", "1 if this agent knows a leader.", s.get("leader") is not None)
        yield gauge("voter", "1 if this agent votes (0: learner).", bool(s.get("voter")))
        yield gauge("term", "The current Raft term.", s.get("term", 0))
        yield gauge("commit_index", "The commit index this agent knows.", s.get("commit", 0))
        yield gauge("applied_index", "The last index applied here.", s.get("applied", 0))
        yield gauge("log_first_index", "First index the log holds.", s.get("log_first", 0))
        yield gauge("log_last_index", "Last index the log holds.", s.get("log_last", 0))
        entries = max(0, int(s.get("log_last", 0)) - int(s.get("log_first", 0)) + 1)
        yield gauge("log_entries", "Entries the log holds (in memory too).", entries)
        yield gauge("log_bytes", "Bytes of applied entries the log holds.", f["log_bytes"])
        yield gauge(
            "snapshot_index",
            "Index of the newest snapshot (log compacted up to).",
            f["snapshot_index"],
        )
        yield gauge(
            "snapshot_bytes", "Bytes of the node dbs a snapshot ships.", f["snapshot_bytes"]
        )
        yield gauge(
            "snapshot_age_seconds",
            "Seconds since the snapshot index last moved (or since start).",
            f["snapshot_age_s"],
        )
        yield counter(
            "leader_changes", "New (leader, term) pairs this agent saw.", f["leader_changes"]
        )
        yield counter(
            "snapshots_installed", "Snapshots installed from a leader.", f["snapshots_installed"]
        )
        yield counter("syncs", "fsyncs of the store.", s.get("syncs", 0))
        members = s.get("members", [])
        match = GaugeMetricFamily(
            PREFIX + "member_match_index",
            "Leader only: the last index known replicated on each member.",
            labels=["member"],
        )
        lag = GaugeMetricFamily(
            PREFIX + "member_lag_entries",
            "Leader only: entries each member is behind the leader's log.",
            labels=["member"],
        )
        voter = GaugeMetricFamily(
            PREFIX + "member_voter", "1 for a voter, 0 for a learner.", labels=["member"]
        )
        for row in members:
            member = str(row.get("id"))
            voter.add_metric([member], 1.0 if row.get("voter") else 0.0)
            if "match" in row:
                match.add_metric([member], float(row["match"]))
                lag.add_metric([member], float(row["lag"]))
        yield voter
        yield match
        yield lag
        clients = s.get("clients", {})
        yield gauge("sessions", "Client sessions in the state machine.", f["sessions"])
        yield gauge("objects", "Nodes (shared objects) the store holds.", f.get("objects", 0))
        yield gauge("subscribers", "Apps streaming from this agent.", clients.get("subscribers", 0))
        yield gauge(
            "subscriber_backlog_bytes",
            "Stream bytes sent to apps and not acknowledged yet, all subscribers.",
            f["subscriber_backlog_bytes"],
        )
        yield gauge(
            "subscriber_backlog_bytes_largest",
            "The largest one subscriber's unacknowledged stream bytes.",
            f["subscriber_backlog_bytes_largest"],
        )
        yield gauge(
            "held_entries",
            "Nodes and dict keys partial apps hold here (the virtual heap's held sets).",
            f.get("held_entries", 0),
        )
        for name, doc in (
            ("stream_bytes_sent", "Stream frame bytes sent to apps."),
            ("stream_events_sent", "Events sent to apps in EVENTS frames (whole or stubs)."),
            ("stream_events_filtered", "Events partial apps' filters left out of their streams."),
            ("loads_answered", "LOADs answered (virtual heap)."),
        ):
            yield counter(name, doc, f.get(name, 0))
        yield gauge(
            "proposals_waiting",
            "PROPOSEs waiting here for their entry to apply.",
            clients.get("proposals_waiting", 0),
        )
        yield gauge(
            "reads_waiting", "READ_INDEX requests waiting.", clients.get("reads_waiting", 0)
        )
        agent_counters = s.get("counters", {})
        yield counter(
            "proposed", "Entries proposed through this agent.", agent_counters.get("proposed", 0)
        )
        yield counter(
            "proposed_again",
            "Waiting proposals proposed again after a leader change.",
            agent_counters.get("proposed_again", 0),
        )
        yield counter("readies", "Raft Readies handled.", agent_counters.get("readies", 0))
        yield from _labelled_counter(
            "entries_applied",
            "Committed entries applied here, by outcome (ok, conflict, error, dup, noop).",
            "outcome",
            pub.counts["entries_applied"],
        )
        yield from _labelled_counter(
            "proposal_replies",
            "PROPOSEs answered after their entry applied here, by outcome.",
            "outcome",
            pub.counts["proposal_replies"],
        )
        yield from _labelled_counter(
            "errors", "ERROR frames sent to apps, by code.", "code", pub.counts["errors"]
        )
        yield from _labelled_counter(
            "frames_refused",
            "Frames dropped or refused (and other anomalies such as slow_turn), by reason.",
            "reason",
            s.get("dropped", {}),
        )
        yield from _labelled_counter(
            "log_lines_suppressed",
            "Log lines not written by the repeat limit, by event.",
            "event",
            pub.counts["log_lines_suppressed"],
        )
        store = s.get("store", {})
        for key, doc in (
            ("map_bytes", "The LMDB map size (--map-bytes)."),
            ("used_bytes", "Bytes of the store in use."),
            ("free_bytes", "Bytes free for writes (of the map, or the disk under it)."),
            ("disk_free_bytes", "Free bytes on the disk holding the store."),
            ("reserve_bytes", "Below this free, writes are refused (StoreFull)."),
        ):
            if key in store:
                yield gauge("store_" + key, doc, store[key])
        yield gauge(
            "store_full", "1 while writes are refused for want of space.", bool(store.get("full"))
        )
        yield gauge("disk_bytes", "Bytes of the data file in use.", s.get("disk_bytes", 0))
        yield counter(
            "log_spare_misses",
            "Raft log segment rolls with no spare segment ready (made or waited for on the loop).",
            store.get("log_spare_misses", 0),
        )
        yield counter(
            "log_spare_failures",
            "Spare Raft log segments whose making failed (disk full, I/O error).",
            store.get("log_spare_failures", 0),
        )
        halted = GaugeMetricFamily(
            PREFIX + "halted", "1 if this agent stopped applying, by reason.", labels=["reason"]
        )
        reason = (s.get("halted") or {}).get("reason")
        for name in ("poisoned", "store_full", "damaged", "rules_unknown"):
            halted.add_metric([name], 1.0 if reason == name else 0.0)
        yield halted
        docs = {
            "commit_latency_seconds": "PROPOSE received to its reply (quorum-durable, applied).",
            "storage_write_seconds": "One Ready's LMDB write (append, apply, commit, sync).",
            "fsync_seconds": "One explicit fsync of the store.",
            "append_batch_entries": "Entries appended to the log per Ready (group commit).",
            "apply_batch_entries": "Entries applied per Ready.",
        }
        for name, frozen in pub.histograms.items():
            family = HistogramMetricFamily(PREFIX + name, docs[name])
            family.add_metric([], frozen.cumulative(), sum_value=frozen.total)
            yield family


def _labelled_counter(name: str, doc: str, label: str, values: dict[str, int]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([str(value)], float(count))
    yield family


def registry_for(recorder: Recorder) -> Any:
    """A CollectorRegistry of this agent's own (never prometheus_client's global REGISTRY,
    which would mix in whatever else the process registered)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(recorder))  # type: ignore[arg-type]
    return registry
