"""A scripted client for hand-made scenarios (tests/nemesis/test_nemesis_regressions.py): one
process, the public API only, driven by lines on stdin and answering one JSON line per command.

    python tests/nemesis/probe.py EP[,EP...]
    append ROOT VALUE       -> {"ok": true, "elapsed_s": 0.01} or {"error": ..., "known": bool}
    tick ROOT SECONDS       -> appends 0, 1, 2 ... every TICK_S for SECONDS, then {"ticks": n}
    read ROOT               -> {"value": [...]} after sync()
    stats -                 -> superstatic.stats() (failovers, resends, ...)
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import superstatic

TICK_S = 0.1
TICKS_MAX = 10_000


def handle(words: list[str]) -> dict[str, Any]:
    command, root = words[0], words[1]
    if command == "stats":
        counts = superstatic.stats()
        return {k: v for k, v in counts.items() if isinstance(v, int)}
    items = superstatic.root(root, list)
    started = time.monotonic()
    if command == "append":
        items.append(int(words[2]))
        return {"ok": True, "elapsed_s": round(time.monotonic() - started, 3)}
    if command == "tick":
        deadline = started + float(words[2])
        ticks = 0
        while time.monotonic() < deadline and ticks < TICKS_MAX:
            items.append(ticks)
            ticks += 1
            time.sleep(TICK_S)
        return {"ticks": ticks}
    if command == "read":
        superstatic.sync()
        return {"value": list(superstatic.plain(items))}
    return {"error": f"unknown command {command!r}", "known": True}


def main() -> int:
    superstatic.connect(sys.argv[1].split(","))
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            try:
                answer = handle(words)
            except superstatic.Unavailable as exc:
                answer = {"error": str(exc), "known": exc.outcome_known}
            except superstatic.Error as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}", "known": False}
            print(json.dumps(answer), flush=True)
    finally:
        superstatic.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
