"""`superstatic-agent`: the command line of one agent (design section 3).

    superstatic-agent --id a --data-dir ./data/a \
        --peers a=tcp://127.0.0.1:7401,b=tcp://127.0.0.1:7402,c=tcp://127.0.0.1:7403 \
        --client tcp://127.0.0.1:7501 [--listen tcp://... for a learner] [tuning flags]

The same --peers list is given to every voter. An agent whose --id is not in --peers joins as a
non-voting learner, binding its peer socket on --listen. Exits 0 on SIGTERM/SIGINT after the
current loop turn, with LMDB closed.

    superstatic-agent --migrate --data-dir ./data/a [--map-bytes N]

converts a stopped agent's store of format 2 (data model 1), 3 or 4 (the Raft log in LMDB) to
format 5 (the log in DATA_DIR/raftlog/) and exits (agent/migrate.py, docs/operations.md
"Upgrading").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from superstatic_agent import logs
from superstatic_agent.config import (
    CLIENT_FRAME_ENVELOPE_BYTES,
    GC_COLLECTED_BYTES_MAX,
    LOG_FORMATS,
    LOG_LEVELS,
    LOG_SEGMENT_BYTES_MAX,
    AgentConfig,
    parse_peers,
)

from superstatic.protocol.errors import LimitExceeded

# Exit status when --keys cannot be used (a key file missing, malformed or readable by others).
EXIT_KEYS_REFUSED = 4
# --metrics, --client or the peer endpoint cannot be bound (taken, or not of this host). Not
# 2 (bad arguments): a clash can pass, and docs/operations.md's unit restarts on this status
# while it does not on 2 (review41).
EXIT_LISTEN_REFUSED = 5
DEFAULTS = AgentConfig.__dataclass_fields__  # the single source of every default


def _default(name: str) -> object:
    return DEFAULTS[name].default


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="superstatic-agent",
        description="A superstatic agent: one member of a Raft group over ZeroMQ, data in LMDB.",
        epilog="superstatic-agent --migrate --data-dir D converts a stopped agent's store of "
        "format 2, 3 or 4 to format 5 and exits (superstatic-agent --migrate --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--id", required=True, help="this agent's id (letters, digits, - _ .)")
    p.add_argument("--data-dir", required=True, type=Path, help="LMDB environment folder")
    p.add_argument(
        "--peers", required=True, help="the voters: ID=ENDPOINT,... (same list on every agent)"
    )
    p.add_argument("--client", required=True, help="endpoint apps connect to (tcp:// or ipc://)")
    p.add_argument(
        "--listen", default="", help="peer endpoint of an agent not in --peers (joins as learner)"
    )
    p.add_argument("--tick-ms", type=int, default=_default("tick_ms"))
    p.add_argument(
        "--election-ticks",
        type=int,
        default=_default("election_ticks"),
        help="election timeout in ticks (randomized up to twice this)",
    )
    p.add_argument("--heartbeat-ticks", type=int, default=_default("heartbeat_ticks"))
    p.add_argument(
        "--batch-entries-max",
        type=int,
        default=_default("batch_entries_max"),
        help="entries per APPEND message",
    )
    p.add_argument(
        "--apply-batch-max",
        type=int,
        default=_default("apply_batch_max"),
        help="committed entries applied per loop step (bounds one step's duration)",
    )
    p.add_argument(
        "--apply-batch-bytes-max",
        type=int,
        default=_default("apply_batch_bytes_max"),
        help="entry bytes applied per loop step (at least one entry; bounds a step's "
        "duration and its write transaction's memory)",
    )
    p.add_argument(
        "--batch-bytes-max",
        type=int,
        default=_default("batch_bytes_max"),
        help="entry bytes per APPEND message",
    )
    p.add_argument(
        "--inflight-max",
        type=int,
        default=_default("inflight_max"),
        help="unacknowledged APPENDs per follower",
    )
    p.add_argument("--session-ttl-ms", type=int, default=_default("session_ttl_ms"))
    p.add_argument(
        "--log-time-skew-ms-max",
        type=int,
        default=_default("log_time_skew_ms_max"),
        help="how far a leader's wall clock may move the log time it stamps (at most a tenth "
        "of the session ttl is used)",
    )
    p.add_argument(
        "--log-segment-bytes",
        type=int,
        default=_default("log_segment_bytes"),
        help="size of the Raft log's segment files when this agent makes its log (an existing "
        "log keeps the size it was made with)",
    )
    p.add_argument(
        "--log-retain-entries",
        type=int,
        default=_default("log_retain_entries"),
        help="applied entries kept before the log is compacted",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="answer PROPOSEs from apps with SUPERSTATIC_TRACE=1 with per-hop timestamps",
    )
    p.add_argument(
        "--fsync",
        choices=("on", "off"),
        default="on",
        help="off is a BENCHMARK option: a power loss may lose acknowledged writes",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default=_default("log_level"))
    for flag, what in (
        ("--events-cache-bytes-max", "applied events kept in memory for subscribers"),
        ("--node-cache-bytes-max", "record bytes the state machine keeps decoded"),
        ("--log-retain-bytes", "applied log bytes kept (held in memory) before compacting"),
        (
            "--snapshot-chunk-bytes-max",
            "bytes of one snapshot chunk (to a follower) or SNAPSHOT frame (to an app)",
        ),
        (
            "--snapshot-lag-entries-max",
            "a follower more entries behind the leader's applied index gets a snapshot",
        ),
        (
            "--snapshot-lag-bytes-max",
            "a follower more entry bytes behind the leader's applied index gets a snapshot",
        ),
        ("--subscriber-backlog-bytes-max", "stream bytes an app may leave unacknowledged"),
        ("--subscriber-stall-ms", "a subscriber whose backlog stayed full this long is dropped"),
        ("--subscriber-silence-ms", "a subscriber that sent nothing this long is dropped"),
        ("--subscriber-held-max", "nodes one partial app may hold (virtual heap)"),
        ("--held-entries-max", "nodes all partial apps of this agent may hold"),
        ("--proposals-waiting-bytes-max", "bytes of PROPOSEs waiting to apply here"),
    ):
        p.add_argument(flag, type=int, default=_default(flag[2:].replace("-", "_")), help=what)
    p.add_argument(
        "--map-bytes",
        type=int,
        default=_default("map_bytes"),
        help="LMDB map size: the most the data file may hold; writes are refused (StoreFull) "
        "when less than an eighth of it (or of the disk) is free",
    )
    p.add_argument(
        "--record-bytes-max",
        type=int,
        default=_default("record_bytes_max"),
        help="largest object record (root table included) a write may leave; the same on "
        "every agent",
    )
    p.add_argument(
        "--rules-max",
        type=int,
        default=_default("rules_max"),
        help="newest state-machine rules version this agent applies (default: the newest this "
        "code knows); lower holds the cluster at older rules, e.g. during an upgrade",
    )
    p.add_argument(
        "--exit-when-idle-ms",
        type=int,
        default=_default("exit_when_idle_ms"),
        help="exit once no app sent anything for this long (0: never; the embedded agent)",
    )
    # Limits against hostile input (docs/agent.md "Limits and hostile input").
    p.add_argument(
        "--client-recv-queue-frames-max",
        type=int,
        default=_default("client_recv_queue_frames_max"),
        help="frames queued from one app connection before it waits (x 16 MiB per frame)",
    )
    p.add_argument(
        "--client-send-queue-frames-max",
        type=int,
        default=_default("client_send_queue_frames_max"),
        help="frames queued towards one app connection (replies, stream frames)",
    )
    p.add_argument(
        "--peer-recv-queue-frames-max",
        type=int,
        default=_default("peer_recv_queue_frames_max"),
        help="frames queued from one peer connection before it waits",
    )
    p.add_argument(
        "--peer-send-queue-frames-max",
        type=int,
        default=_default("peer_send_queue_frames_max"),
        help="frames queued towards one peer before sends drop (Raft resends)",
    )
    p.add_argument(
        "--peer-frame-bytes-max",
        type=int,
        default=_default("peer_frame_bytes_max"),
        help="largest peer frame accepted; a sender of a larger one loses its connection",
    )
    p.add_argument(
        "--recv-bytes-per-turn-max",
        type=int,
        default=_default("recv_bytes_per_turn_max"),
        help="bytes taken from one socket per loop turn",
    )
    p.add_argument(
        "--sessions-per-connection-max",
        type=int,
        default=_default("sessions_per_connection_max"),
        help="client sessions live through one app connection at this agent",
    )
    p.add_argument(
        "--sessions-per-address-max",
        type=int,
        default=_default("sessions_per_address_max"),
        help="client sessions live from one address (IP) at this agent",
    )
    p.add_argument(
        "--metrics",
        default=_default("metrics_endpoint"),
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and the status page / over HTTP here (off by default; "
        "loopback only unless --insecure)",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=_default("log_format"),
        help="text (readable) or json (one object per line: ts, level, event, agent, fields)",
    )
    p.add_argument(
        "--keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="CURVE keys and allow lists (superstatic keys new DIR ...): both ports then admit "
        "only listed agents and app keys, by role; the lists are re-read on change or SIGHUP",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow unauthenticated ports on a non-loopback address: the peer and client "
        "ports without --keys (no authentication, no encryption: a trusted lab network only; "
        "said in the log and in STATUS), and --metrics",
    )
    p.add_argument(
        "--clock-offset-ms",
        type=int,
        default=_default("clock_offset_ms"),
        help="shift this agent's wall clock (testing and operations: a host with a wrong clock)",
    )
    p.add_argument(
        "--timeout-ms-probe",
        type=int,
        default=_default("timeout_ms_probe"),
        help="a voter with an empty data directory waits this long for its peers to say "
        "whether they heard from it before",
    )
    return p


def config_from(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        node_id=args.id,
        data_dir=args.data_dir,
        peers=parse_peers(args.peers),
        client_endpoint=args.client,
        listen_endpoint=args.listen,
        tick_ms=args.tick_ms,
        election_ticks=args.election_ticks,
        heartbeat_ticks=args.heartbeat_ticks,
        batch_entries_max=args.batch_entries_max,
        batch_bytes_max=args.batch_bytes_max,
        apply_batch_max=args.apply_batch_max,
        apply_batch_bytes_max=args.apply_batch_bytes_max,
        inflight_max=args.inflight_max,
        session_ttl_ms=args.session_ttl_ms,
        log_time_skew_ms_max=args.log_time_skew_ms_max,
        log_retain_entries=args.log_retain_entries,
        fsync=args.fsync == "on",
        trace=args.trace,
        log_level=args.log_level,
        exit_when_idle_ms=args.exit_when_idle_ms,
        keys_dir=args.keys,
        record_bytes_max=args.record_bytes_max,
        rules_max=args.rules_max,
        map_bytes=args.map_bytes,
        log_segment_bytes=args.log_segment_bytes,
        events_cache_bytes_max=args.events_cache_bytes_max,
        node_cache_bytes_max=args.node_cache_bytes_max,
        log_retain_bytes=args.log_retain_bytes,
        snapshot_lag_entries_max=args.snapshot_lag_entries_max,
        snapshot_chunk_bytes_max=args.snapshot_chunk_bytes_max,
        snapshot_lag_bytes_max=args.snapshot_lag_bytes_max,
        subscriber_backlog_bytes_max=args.subscriber_backlog_bytes_max,
        subscriber_stall_ms=args.subscriber_stall_ms,
        subscriber_held_max=args.subscriber_held_max,
        subscriber_silence_ms=args.subscriber_silence_ms,
        held_entries_max=args.held_entries_max,
        proposals_waiting_bytes_max=args.proposals_waiting_bytes_max,
        client_recv_queue_frames_max=args.client_recv_queue_frames_max,
        client_send_queue_frames_max=args.client_send_queue_frames_max,
        peer_recv_queue_frames_max=args.peer_recv_queue_frames_max,
        peer_send_queue_frames_max=args.peer_send_queue_frames_max,
        peer_frame_bytes_max=args.peer_frame_bytes_max,
        recv_bytes_per_turn_max=args.recv_bytes_per_turn_max,
        sessions_per_connection_max=args.sessions_per_connection_max,
        sessions_per_address_max=args.sessions_per_address_max,
        metrics_endpoint=args.metrics,
        log_format=args.log_format,
        insecure=args.insecure,
        clock_offset_ms=args.clock_offset_ms,
        timeout_ms_probe=args.timeout_ms_probe,
    )


def migrate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="superstatic-agent --migrate",
        description="Convert a stopped agent's store of format 2 (data model 1; a copy is kept "
        "in DATA_DIR/format2-backup/), 3 or 4 (the Raft log in LMDB) to format 5 (the log in "
        "DATA_DIR/raftlog/), then exit.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--migrate", action="store_true", required=True)
    p.add_argument("--data-dir", required=True, type=Path, help="LMDB environment folder")
    p.add_argument(
        "--map-bytes",
        type=int,
        default=_default("map_bytes"),
        help="LMDB map size while converting (the same as the agent's)",
    )
    p.add_argument(
        "--log-segment-bytes",
        type=int,
        default=_default("log_segment_bytes"),
        help="size of the Raft log's segment files the move makes (kept with the log; the "
        "agent's own rule: at least twice the largest entry of the default --body-bytes-max)",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default=_default("log_level"))
    return p


def migrate_main(argv: Sequence[str]) -> int:
    parsed = migrate_parser()
    args = parsed.parse_args(argv)
    # The agent's own check of the size (AgentConfig), with its default body size: a log made
    # too small for the entries it must take would fail its first large write (review40).
    entry_bytes_max = (
        int(_default("body_bytes_max")) + GC_COLLECTED_BYTES_MAX + CLIENT_FRAME_ENVELOPE_BYTES
    )
    if not 2 * entry_bytes_max <= args.log_segment_bytes <= LOG_SEGMENT_BYTES_MAX:
        parsed.error(
            f"--log-segment-bytes must be between {2 * entry_bytes_max} and {LOG_SEGMENT_BYTES_MAX}"
        )
    logs.install("migrate", args.log_level, "text")
    log = logging.getLogger("superstatic.agent")
    from superstatic_agent.migrate import migrate
    from superstatic_agent.storage import EXIT_START_REFUSED, StartRefused

    try:
        done = migrate(
            args.data_dir, map_bytes=args.map_bytes, log_segment_bytes=args.log_segment_bytes
        )
    except StartRefused as exc:
        log.critical("%s", exc)
        return EXIT_START_REFUSED
    if done.already:
        print(f"{args.data_dir}: already format 5, nothing to do")
    elif done.nodes or done.applied:
        print(
            f"{args.data_dir}: migrated {done.nodes} objects ({done.entries} entries) at index "
            f"{done.applied} to format 5 ({done.log_entries} log entries moved to raftlog/); "
            f"the format-2 copy is in {done.backup}"
        )
    else:
        print(f"{args.data_dir}: moved {done.log_entries} log entries to raftlog/: format 5")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--migrate" in argv:
        return migrate_main(argv)
    p = parser()
    args = p.parse_args(argv)
    try:
        config = config_from(args)
    except (ValueError, LimitExceeded) as exc:
        p.error(str(exc))
    logs.install(config.node_id, config.log_level, config.log_format)
    log = logging.getLogger("superstatic.agent")
    if config.keys_dir is None and config.exposed_endpoints:
        from superstatic_agent.auth import insecure_warning

        log.warning("%s", insecure_warning(config.exposed_endpoints))
    if not config.fsync:
        log.warning(
            "--fsync off: BENCHMARK MODE. Nothing is synced to disk; a power loss or kernel "
            "crash can lose writes that were acknowledged. Never use this for real data."
        )
    # Imported here so `--help` and argument errors stay fast.
    from superstatic_agent.http_status import MetricsBindError
    from superstatic_agent.server import Server
    from superstatic_agent.storage import EXIT_START_REFUSED, StartRefused
    from superstatic_agent.transport import ListenError

    from superstatic.protocol.keyfiles import KeyFileError

    try:
        server = Server(config)
    except StartRefused as exc:
        log.critical("%s", exc)
        return EXIT_START_REFUSED
    except (MetricsBindError, ListenError) as exc:  # a port taken or not of this host
        log.critical("%s", exc.strerror)
        return EXIT_LISTEN_REFUSED
    except KeyFileError as exc:
        # A missing or too open key file: refusing to start beats serving unauthenticated.
        log.critical("cannot start with --keys %s: %s", config.keys_dir, exc)
        return EXIT_KEYS_REFUSED
    server.install_signal_handlers()
    try:
        server.run()
    except StartRefused as exc:  # DataLost: found by asking the peers, once running
        log.critical("%s", exc)
        return EXIT_START_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
