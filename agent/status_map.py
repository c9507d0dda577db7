"""The STATUS reply: what an operator (and `superstatic status`) sees of one agent.

Fields (all present on every agent; leader-only facts are empty elsewhere):

| field | meaning |
|---|---|
| `id`, `role`, `voter` | this agent; role is leader / follower / candidate / pre_candidate |
| `leader`, `term` | the leader this agent follows (None if none known) and the current term |
| `commit`, `applied` | the commit index this agent knows and what it applied |
| `log_first`, `log_last` | first and last index of the log held (entries below: snapshot) |
| `members` | per member: `id`, `address`, `voter`; leader only: `match`, `next`, `state`, `lag` |
| `dropped` | counters of dropped or refused frames by reason |
| `counters` | proposed, applied, Readies, PROPOSE_MANY / REPLY_MANY, turns, APPENDs, acks |
| `disk_bytes`, `syncs` | LMDB data file in use; fsyncs done since start |
| `clients` | PROPOSEs waiting, reads waiting, subscribers |
| `uptime_s`, `tick_ms`, `fsync` | how the agent runs |
| `halted` | None, or why this agent stopped applying: `{"reason", "message", ...}` (below) |

`store`: `format` (on-disk format version), `record_bytes_max`, `repair` (None, or what the
checksum scrub at start found and did: `found`, `action`, `until` (no vote before this index
applies again, 0: none), `done`), the space figures (docs/agent.md), and `log_spare_misses` /
`log_spare_failures` (Raft log rolls with no spare segment ready; spares whose making failed:
agent/logsegments.py).

`auth` (agent/auth.py, docs/security.md): `mode` ("curve", "loopback-only" or "insecure"),
`warning` (set when insecure), `keys_dir`, `agents_trusted`, `app_keys` (count per role),
`reloads` of the allow lists, their `problems`, and `refused`: connections and frames refused
by kind (`client.unknown_key`, `client.no_curve`, `client.handshake`, `client.revoked`,
`client.forbidden`, and `peer.*` alike).

`halted.reason` is "poisoned" (a committed entry apply cannot handle), "store_full" (a write
failed for want of space), "damaged" (a checksum mismatch) or "rules_unknown" (the cluster
moved to state-machine rules this agent does not apply: docs/agent.md, "Rules versions");
`message` says what to do. The server adds `rules`: `{"version", "max"}`.
"""

from __future__ import annotations

from typing import Any

from superstatic_agent.raft.core import RaftNode
from superstatic_agent.raft.types import Role


def role_name(role: Role) -> str:
    return role.name.lower()


def members(node: RaftNode) -> list[dict[str, Any]]:
    conf = node.conf
    progress = node.progress()
    addresses = dict(conf.addresses)
    out = []
    for member in conf.members():
        row: dict[str, Any] = {
            "id": member,
            "address": addresses.get(member, ""),
            "voter": member in conf.voters,
        }
        if member in progress:
            match, next_index, state = progress[member]
            row.update(match=match, next=next_index, state=state, lag=node.last_index - match)
        elif member == node.id and node.role is Role.LEADER:
            row.update(match=node.last_index, next=node.last_index + 1, state="leader", lag=0)
        out.append(row)
    return out


def build(
    node: RaftNode,
    *,
    applied: int,
    dropped: dict[str, int],
    disk_bytes: int,
    syncs: int,
    clients: dict[str, int],
    uptime_s: float,
    tick_ms: int,
    fsync: bool,
    counters: dict[str, int],
    halted: dict[str, Any] | None = None,
    store: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": node.id,
        "role": role_name(node.role),
        "voter": node.id in node.conf.voters,
        # Started from empty storage in an existing cluster: no vote until a leader reached it.
        "votes_withheld": node.votes_withheld,
        "leader": node.leader,
        "term": node.term,
        "commit": node.commit,
        "applied": applied,
        "log_first": node.first_index,
        "log_last": node.last_index,
        "members": members(node),
        "dropped": dropped,
        "disk_bytes": disk_bytes,
        "syncs": syncs,
        "clients": clients,
        "uptime_s": round(uptime_s, 3),
        "tick_ms": tick_ms,
        "fsync": fsync,
        "counters": counters,
        "halted": halted,
        "store": store or {},
        "auth": auth or {},
    }
