"""Per-call tracing: the stamp names both sides agree on, and the assembly of one call's stamps
into a breakdown of hops (issue 11, item 4; docs/performance.md "Where one call's time goes").

Pure: no clock, no threads. The app (`superstatic.objects.trace`) and the agent
(`superstatic_agent.trace`) take the stamps; this module names them and turns them into hops.

Clocks: every stamp is `time.monotonic_ns()`, taken in different processes. On Linux
CLOCK_MONOTONIC is one system-wide clock, so stamps of processes on ONE machine are comparable;
across machines they are not (a trace across hosts would need the agent's stamps relative to its
own receive stamp; nothing here does that yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The stamps of one call, in the order of its critical path. A stamp may be missing (an app
# talking to a follower sees no leader-side stamps; a follower's "proposed" is its forward).
# Names are keys in the PROPOSE REPLY's "trace" map (agent stamps) and in the app's record.
STAMPS_APP_BEFORE: tuple[str, ...] = ("call", "io_taken", "sent")
STAMPS_AGENT: tuple[str, ...] = (
    "agent_recv",  # the agent's loop decoded the PROPOSE
    "proposed",  # handed to the Raft core (leader: appended in memory; follower: forwarded)
    "appended",  # the Ready carrying the entry reached the shell (the LMDB write starts)
    "persisted",  # that write's commit + fsync returned
    "quorum_acked",  # leader: enough followers acknowledged (durable there) for a majority
    "committed",  # the Ready carrying it as committed reached the shell
    "applied",  # the write that applied it (same LMDB transaction as the applied index) returned
    "reply_sent",  # the REPLY went to the app's socket
)
STAMPS_APP_AFTER: tuple[str, ...] = ("reply_rx", "event_rx", "replica_applied", "woken")
CHAIN: tuple[str, ...] = STAMPS_APP_BEFORE + STAMPS_AGENT + STAMPS_APP_AFTER

# What each hop (named by the stamp that ends it) costs, for tables.
HOP_TITLES: dict[str, str] = {
    "io_taken": "caller -> I/O thread (queue, wake pipe)",
    "sent": "I/O thread: encode + send PROPOSE",
    "agent_recv": "app -> agent (ZeroMQ, agent loop wake, decode)",
    "proposed": "agent: checks, payload encode, propose",
    "appended": "core -> Ready (next loop turn)",
    "persisted": "LMDB write + fsync (this agent)",
    "quorum_acked": "wait for a follower's durable ack",
    "committed": "ack -> commit seen in a Ready",
    "applied": "apply write (LMDB txn, no fsync)",
    "reply_sent": "build + send REPLY",
    "reply_rx": "agent -> app (REPLY)",
    "event_rx": "EVENTS frame after the REPLY",
    "replica_applied": "app: apply event to the replica",
    "woken": "I/O thread -> caller wakes",
}
HOPS: tuple[str, ...] = CHAIN[1:]

# Keys of the PROPOSE/REPLY fields (only present when tracing).
FIELD_REQUEST = "trace"  # PROPOSE: true asks the agent for its stamps
FIELD_REPLY = "trace"  # REPLY: {stamp: ns}
FIELD_ACKS = "trace_acks"  # REPLY: {follower id: ns its APPEND_RESP covering the entry arrived}


def assemble(stamps: Mapping[str, int]) -> dict[str, Any]:
    """One call's hops from its stamps (ns). Hops lie on the critical path: a stamp earlier than
    the one before it (parallel branches: the REPLY and the EVENTS frame, the leader's fsync and
    the followers' acks) is lifted to it, so its hop is 0 (its work overlapped). So every hop is
    >= 0 and they sum to woken - call exactly. Missing stamps merge their hop into the next.

    Returns {"hops_ns": {hop: ns}, "total_ns": int, "missing": [stamp, ...]}.
    """
    if "call" not in stamps or "woken" not in stamps:
        raise ValueError("a trace needs at least its 'call' and 'woken' stamps")
    hops: dict[str, int] = {}
    missing: list[str] = []
    previous = stamps["call"]
    for name in HOPS:
        raw = stamps.get(name)
        if raw is None:
            missing.append(name)
            continue
        at = max(raw, previous)
        hops[name] = at - previous
        previous = at
    return {"hops_ns": hops, "total_ns": previous - stamps["call"], "missing": missing}


def parse_reply_stamps(body: Mapping[str, Any]) -> dict[str, int]:
    """The agent's stamps from a REPLY body (untrusted: anything malformed is ignored)."""
    out: dict[str, int] = {}
    raw = body.get(FIELD_REPLY)
    if isinstance(raw, dict):
        for name in STAMPS_AGENT:
            value = raw.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                out[name] = value
    return out


def parse_reply_acks(body: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    raw = body.get(FIELD_ACKS)
    if isinstance(raw, dict):
        for peer, value in raw.items():
            if isinstance(peer, str) and isinstance(value, int) and not isinstance(value, bool):
                out[peer] = value
    return out
