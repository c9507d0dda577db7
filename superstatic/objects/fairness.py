"""Fairness between optimistic writers: who is starving, and when a winner should yield.

Optimistic transactions are unfair by construction. An app whose agent is the leader sees every
commit first and its proposals take the shortest path, so under contention on one object it wins
almost every round, while an app behind a follower reads a slightly older state and keeps losing:
measured on the demo (3 workers, one bank object), a follower-side worker exhausted its whole
retry budget while the others never conflicted.

The cure needs no extra messages: every app sees every entry's (client, outcome) in its stream.
An app tracks each client's current run of consecutive conflicts; before it starts a
transaction, if some other client has been losing longer than it has, it waits about one of its
own commit round trips, which leaves the loser a window to commit. Winners pay a little latency
only while someone is starving; nobody waits when nobody conflicts.
"""

from __future__ import annotations

import random
import threading
import time

# A client's conflict run counts as "starving" from this many consecutive conflicts on.
STARVING_CONFLICTS_MIN = 2
# A run not extended for this long is forgotten (its client gave up, or committed through an
# agent whose events we saw late).
STARVING_WINDOW_S = 1.0
# Clients tracked at once; the oldest are dropped beyond it (bounded memory under many apps).
TRACKED_CLIENTS_MAX = 1024
# The yield is this many own round trips (uniformly jittered around it), within these bounds.
YIELD_ROUND_TRIPS = 2.0
YIELD_S_MIN = 0.0005
YIELD_S_MAX = 0.05
# Weight of the newest sample in the round-trip estimate (exponential moving average).
ROUND_TRIP_EMA_WEIGHT = 0.2


class ContentionTracker:
    """Fed with the stream's (client, outcome) pairs; asked whether to yield before a commit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # client id -> [consecutive conflicts, monotonic time of the last one]
        self._runs: dict[str, list[float]] = {}
        self._round_trip_s = 0.002
        self._rng = random.Random()

    def observe(self, client: str | None, outcome: str) -> None:
        if client is None:
            return
        with self._lock:
            if outcome == "conflict":
                run = self._runs.pop(client, None)  # re-insert: dict order = recency
                self._runs[client] = [(run[0] if run else 0) + 1, time.monotonic()]
                if len(self._runs) > TRACKED_CLIENTS_MAX:
                    del self._runs[next(iter(self._runs))]
            elif outcome == "ok":
                self._runs.pop(client, None)

    def record_round_trip(self, seconds: float) -> None:
        with self._lock:
            w = ROUND_TRIP_EMA_WEIGHT
            self._round_trip_s = (1 - w) * self._round_trip_s + w * seconds

    def yield_s(self, me: str) -> float:
        """How long `me` should wait before its next attempt (0.0: go ahead)."""
        with self._lock:
            if not self._runs:
                return 0.0
            now = time.monotonic()
            mine = self._runs.get(me)
            my_run = mine[0] if mine is not None and now - mine[1] < STARVING_WINDOW_S else 0
            worst = 0.0
            for client, (run, at) in self._runs.items():
                if client != me and now - at < STARVING_WINDOW_S and run > worst:
                    worst = run
            if worst < STARVING_CONFLICTS_MIN or worst <= my_run:
                return 0.0
            base = YIELD_ROUND_TRIPS * self._round_trip_s
            return min(YIELD_S_MAX, max(YIELD_S_MIN, base * self._rng.uniform(0.5, 1.5)))
