"""`superstatic status --agent ENDPOINT [--json] [--timeout-ms N]`: one agent's view of the cluster.

Prints the STATUS map (docs/agent.md) as a table: the agent's own line (role, leader, term,
commit, applied), then one row per member. Replication facts (match, lag) are known only to the
leader, so when the asked agent is a follower and the leader is reachable through the member
list the table says so instead of guessing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from superstatic.client import keys as client_keys
from superstatic.client import oneshot
from superstatic.protocol import wire

TIMEOUT_MS_STATUS_DEFAULT = 3_000


def format_table(status: dict[str, Any]) -> str:
    lines = [
        f"agent {status.get('id')}: {status.get('role')}"
        f"{'' if status.get('voter', True) else ' (learner)'}, "
        f"leader {status.get('leader') or '-'}, term {status.get('term')}, "
        f"commit {status.get('commit')}, applied {status.get('applied')}",
        f"log {status.get('log_first')}..{status.get('log_last')}, "
        f"disk {_mib(status.get('disk_bytes'))}, syncs {status.get('syncs')}, "
        f"fsync {'on' if status.get('fsync', True) else 'OFF (benchmark mode)'}",
    ]
    members = status.get("members") or []
    header = ("id", "role", "kind", "match", "lag", "state", "address")
    rows: list[tuple[str, ...]] = []
    leader = status.get("leader")
    for member in members:
        member_id = str(member.get("id"))
        if member_id == leader:
            role = "leader"
        elif member_id == status.get("id"):
            role = str(status.get("role"))
        else:
            role = "-"
        rows.append(
            (
                member_id,
                role,
                "voter" if member.get("voter") else "learner",
                _opt(member.get("match")),
                _opt(member.get("lag")),
                _opt(member.get("state")),
                str(member.get("address", "")),
            )
        )
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines.append("")
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if status.get("role") != "leader" and members:
        lines.append("(match and lag are known by the leader: ask its agent for them)")
    auth_line = format_auth(status.get("auth") or {})
    if auth_line:
        lines.append("")
        lines.append(auth_line)
    dropped = status.get("dropped") or {}
    if dropped:
        lines.append("")
        lines.append("dropped frames: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    return "\n".join(lines)


def format_auth(auth: dict[str, Any]) -> str:
    """One line about who may talk to the agent (STATUS `auth`); the loud warning if none."""
    if auth.get("warning"):
        return str(auth["warning"])
    mode = auth.get("mode")
    if not mode:
        return ""
    line = f"auth {mode}"
    if mode == "curve":
        agents = ",".join(auth.get("agents_trusted") or []) or "-"
        roles = ", ".join(f"{role} {n}" for role, n in (auth.get("app_keys") or {}).items())
        line += f": agents {agents}; app keys {roles}"
    refused = auth.get("refused") or {}
    if refused:
        line += "; refused " + ", ".join(f"{k} {v}" for k, v in sorted(refused.items()))
    return line


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def _mib(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return f"{value / (1 << 20):.1f} MiB"


def add_keys_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument(
        "--keys",
        default=None,
        metavar="FILE",
        help=f"app key file (default ${client_keys.ENV_KEYS}) for agents run with --keys"
        + (f"; {what}" if what else ""),
    )


def use_keys(path: str | None) -> None:
    """--keys FILE: this command's requests present that key (as $SUPERSTATIC_KEYS would)."""
    if path:
        os.environ[client_keys.ENV_KEYS] = path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="superstatic status", description="Members, roles, leader, term, commit and lag."
    )
    parser.add_argument("--agent", required=True, help="client endpoint, e.g. tcp://127.0.0.1:7501")
    parser.add_argument("--json", action="store_true", help="print the raw status map as JSON")
    parser.add_argument("--timeout-ms", type=int, default=TIMEOUT_MS_STATUS_DEFAULT)
    add_keys_argument(parser)
    args = parser.parse_args(argv)
    use_keys(args.keys)
    if args.timeout_ms < 1:
        parser.error("--timeout-ms must be positive")
    status = oneshot.request(args.agent, wire.FrameType.STATUS, {}, timeout_ms=args.timeout_ms)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_table(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
