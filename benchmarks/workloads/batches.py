"""What one loop turn carries over a row's window (docs/data-model-v2.md 8.10).

CPU per write falls as batches grow: every Ready pays a write transaction and an fsync, every
frame a decode and a send, whatever number of writes it carries. So a throughput row records,
beside its CPU (`cpu`, workloads/throughput.py), how large the batches were: the superstatic
agents' STATUS counters read at the start and the end of the row's window, as differences
(`batches`):

* at the leader: writes proposed, PROPOSE_MANY frames and the proposals they carried (the rest
  came as lone PROPOSEs), Readies, fsyncs;
* at each follower: entries applied, Readies, fsyncs;
* at every agent: loop turns, APPENDs with entries sent (leader) and taken (followers), the
  entries they carried, acks (APPEND_RESP) sent (docs/data-model-v2.md 8.12).

From those: proposals per PROPOSE_MANY frame and the share of lone PROPOSEs, per agent the
entries applied per Ready, the fsyncs per write, the writes per loop turn, and at the leader
the entries per APPEND and at the followers the acks per APPEND taken. A Ready that only
sends (heartbeats, acks) or only commits is counted among the Readies too, so entries per
Ready is a floor of what an appending Ready carries. Systems without these counters (the
peers) record nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from superstatic_bench.report import table, with_notes

# STATUS fields read: top-level ones, and those of its "counters" map.
_TOP = ("applied", "syncs")
_COUNTERS = (
    "proposed",
    "readies",
    "propose_many_frames",
    "propose_many_items",
    "reply_many_frames",
    "reply_many_items",
    "turns",
    "appends_sent",
    "append_entries_sent",
    "appends_received",
    "acks_sent",
)


def counters(status: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one agent's STATUS answer this record uses (absent ones: 0)."""
    inner = status.get("counters") or {}
    out: dict[str, Any] = {"role": str(status.get("role", "?"))}
    for name in _TOP:
        out[name] = int(status.get(name) or 0)
    for name in _COUNTERS:
        out[name] = int(inner.get(name) or 0)
    return out


def summarize(
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    ops: int,
) -> dict[str, Any] | None:
    """The row's `batches` record from two samples (agent id -> `counters`) taken at its
    window's edges, `ops` the writes the clients counted in between; None when no agent was
    read at both ends."""
    agents: list[dict[str, Any]] = []
    for node_id in sorted(set(before) & set(after)):
        start, end = before[node_id], after[node_id]
        d = {name: max(0, end[name] - start[name]) for name in (*_TOP, *_COUNTERS)}
        agents.append(
            {
                "agent": node_id,
                "role": end["role"],
                **d,
                "entries_per_ready": _ratio(d["applied"], d["readies"]),
                "syncs_per_write": _ratio(d["syncs"], ops),
                "writes_per_turn": _ratio(ops, d["turns"]),
                "acks_per_append": _ratio(d["acks_sent"], d["appends_received"]),
            }
        )
    if not agents:
        return None
    record: dict[str, Any] = {"ops": ops, "agents": agents}
    leaders = [a for a in agents if a["role"] == "leader"]
    if len(leaders) == 1:
        lead = leaders[0]
        record["proposals_per_propose_many"] = _ratio(
            lead["propose_many_items"], lead["propose_many_frames"]
        )
        lone = max(0, lead["proposed"] - lead["propose_many_items"])
        record["lone_propose_share"] = _ratio(lone, lead["proposed"])
        # The answers to link writes the leader sent in shared frames (data-model-v2.md 8.11).
        record["answers_per_reply_many"] = _ratio(
            lead["reply_many_items"], lead["reply_many_frames"]
        )
        record["reply_many_share"] = _ratio(lead["reply_many_items"], ops)
        record["entries_per_append"] = _ratio(lead["append_entries_sent"], lead["appends_sent"])
    return record


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 3) if den else None


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(rows: list[dict[str, Any]], markdown: bool) -> str:
    """One line per row with a `batches` record."""
    body = []
    for r in rows:
        batches = r.get("batches")
        if not batches:
            continue
        agents = batches["agents"]
        lead = [a for a in agents if a["role"] == "leader"]
        others = [a for a in agents if a["role"] != "leader"]
        share = batches.get("lone_propose_share")
        body.append(
            [
                r["label"],
                r["clients"],
                f"{r['ops_per_s']:,.0f}",
                _num(batches.get("proposals_per_propose_many")),
                "-" if share is None else f"{share:.0%}",
                " / ".join(_num(a["entries_per_ready"]) for a in lead) or "-",
                " / ".join(_num(a["entries_per_ready"]) for a in others) or "-",
                " / ".join(_num(a["syncs_per_write"], 3) for a in lead + others),
                _num(batches.get("answers_per_reply_many")),
                " / ".join(_num(a.get("writes_per_turn")) for a in lead + others),
                _num(batches.get("entries_per_append")),
                " / ".join(_num(a.get("acks_per_append"), 2) for a in others) or "-",
            ]
        )
    headers = [
        "system",
        "clients",
        "ops/s",
        "proposals per PROPOSE_MANY",
        "lone PROPOSEs",
        "leader entries/Ready",
        "followers entries/Ready",
        "fsyncs per write (leader first)",
        "answers per REPLY_MANY",
        "writes per turn (leader first)",
        "entries per APPEND",
        "followers acks per APPEND",
    ]
    notes = [
        "the agents' STATUS counters over the row's window: entries applied per Ready (every "
        "Ready counted, those that only commit or only send included), fsyncs per write "
        "counted by the clients; proposals per PROPOSE_MANY and the share of lone PROPOSEs "
        "at the leader (docs/data-model-v2.md 8.10); answers per REPLY_MANY frame the leader "
        "sent to apps writing over their link (8.11); writes per loop turn of each agent, "
        "entries per APPEND with entries the leader sent, acks per APPEND with entries each "
        "follower took (8.12; a commit-only APPEND is not counted, its rejection's ack is)"
    ]
    return with_notes(table(headers, body, markdown), notes, markdown)
