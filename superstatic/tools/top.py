"""`superstatic top`: the cluster's live throughput, commit latency and lag, in a terminal.

    superstatic top --agent tcp://127.0.0.1:7501,tcp://127.0.0.1:7502,...  [--interval-ms 1000]

Asks every agent for STATUS once per interval (over the client port: no `--metrics` needed)
and redraws one table with plain ANSI escapes (no curses, no extra dependency): role, term,
commit and applied indexes, entries applied per second, PROPOSEs answered per second and their
latency at that agent (STATUS `recent`, the last second), the leader's view of each member's
lag, waiting proposals, streams and store space. `--count N` draws N frames and exits (without
clearing the screen when stdout is not a terminal: usable in scripts and tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Error
from superstatic.tools.status import add_keys_argument, use_keys

# Agents one view follows.
AGENTS_MAX = 64
# A STATUS that takes longer than this marks the agent as not answering for that frame.
TIMEOUT_MS_STATUS = 800
INTERVAL_MS_MIN = 100

_CLEAR = "\x1b[H\x1b[2J"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"  # pragma: no cover


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.0f}")


def gather(endpoints: Sequence[str]) -> dict[str, dict[str, Any] | str]:
    """endpoint -> STATUS, or the reason it did not answer."""
    out: dict[str, dict[str, Any] | str] = {}
    for endpoint in endpoints:
        try:
            out[endpoint] = oneshot.request(
                endpoint, wire.FrameType.STATUS, timeout_ms=TIMEOUT_MS_STATUS
            )
        except Error as exc:
            out[endpoint] = str(exc).split(";")[0]
    return out


def render(statuses: dict[str, dict[str, Any] | str], *, color: bool) -> str:
    bold, dim, reset = (_BOLD, _DIM, _RESET) if color else ("", "", "")
    answered = [s for s in statuses.values() if isinstance(s, dict)]
    leaders = {s.get("leader") for s in answered if s.get("leader") is not None}
    terms = [int(s.get("term", 0)) for s in answered]
    lag: dict[str, Any] = {}
    for s in answered:
        if s.get("role") == "leader":
            lag = {m["id"]: m.get("lag") for m in s.get("members", []) if "lag" in m}
    head = (
        f"{bold}superstatic top{reset}  {len(answered)}/{len(statuses)} agents answering, "
        f"leader {','.join(sorted(str(x) for x in leaders)) or 'none'}, "
        f"term {max(terms) if terms else '-'}   {time.strftime('%H:%M:%S')}"
    )
    rows = [
        (
            "agent",
            "role",
            "term",
            "commit",
            "applied",
            "applied/s",
            "answered/s",
            "p50 ms",
            "p99 ms",
            "lag",
            "waiting",
            "streams",
            "store used/free",
        )
    ]
    for endpoint, s in statuses.items():
        if not isinstance(s, dict):
            rows.append((endpoint, "DOWN", s[:60], *([""] * 10)))
            continue
        recent = s.get("recent", {})
        clients = s.get("clients", {})
        store = s.get("store", {})
        role = str(s.get("role")) + ("" if s.get("voter", True) else " (learner)")
        if s.get("halted"):
            role = "HALTED " + str(s["halted"].get("reason"))
        rows.append(
            (
                str(s.get("id")),
                role,
                str(s.get("term")),
                str(s.get("commit")),
                str(s.get("applied")),
                f"{recent.get('applied_per_s', 0):.0f}",
                f"{recent.get('answered_per_s', 0):.0f}",
                _ms(recent.get("commit_p50_ms")),
                _ms(recent.get("commit_p99_ms")),
                str(lag.get(s.get("id"), "-")),
                str(clients.get("proposals_waiting", "-")),
                str(clients.get("subscribers", "-")),
                f"{_size(store.get('used_bytes'))}/{_size(store.get('free_bytes'))}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i >= 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        line = "  ".join(cells).rstrip()
        lines.append(f"{dim}{line}{reset}" if n == 0 else line)
    lines.append("")
    lines.append(
        f"{dim}applied/s: entries applied at that agent; answered/s and p50/p99: PROPOSEs its apps "
        f"sent, over the last second; lag: entries behind the leader's log.{reset}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="superstatic top", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--agent",
        default=os.environ.get("SUPERSTATIC_AGENT", ""),
        help="client endpoints, comma-separated (default: $SUPERSTATIC_AGENT)",
    )
    parser.add_argument("--interval-ms", type=int, default=1_000)
    parser.add_argument("--count", type=int, default=0, help="frames to draw (0: until Ctrl-C)")
    add_keys_argument(parser)
    args = parser.parse_args(argv)
    use_keys(args.keys)
    endpoints = [e.strip() for e in args.agent.split(",") if e.strip()]
    if not endpoints:
        parser.error("give --agent EP[,EP...] (or set SUPERSTATIC_AGENT)")
    if len(endpoints) > AGENTS_MAX:
        parser.error(f"at most {AGENTS_MAX} agents")
    if args.interval_ms < INTERVAL_MS_MIN:
        parser.error(f"--interval-ms must be >= {INTERVAL_MS_MIN}")
    tty = sys.stdout.isatty()
    drawn = 0
    try:
        while True:
            started = time.monotonic()
            frame = render(gather(endpoints), color=tty)
            sys.stdout.write((_CLEAR if tty else "") + frame + "\n")
            sys.stdout.flush()
            drawn += 1
            if args.count and drawn >= args.count:
                return 0
            time.sleep(max(0.0, args.interval_ms / 1000.0 - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
