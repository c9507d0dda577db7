"""The queue workload of a nemesis client (client.py --role producer|consumer): one
`superstatic.Queue`, through the public API only, recorded in history-queue-c<N>.jsonl.

- producer: `put(x)`, x unique to the run (client.py's unique values), no idempotency key: a
  put whose outcome is unknown is recorded `info` and never retried. It waits (unrecorded)
  while its replica holds BACKLOG_MAX items, so the consumers keep up and the drain at the end
  stays short whatever the run's length (two commits per item against the producer's one).
- consumer: `get(timeout, lease_s)` then `ack()`, recorded as two operations. The get's ok value
  is `[x, item id, deliveries]` (or null when nothing was claimable within the timeout); the
  ack's value is the same triple. Sometimes a consumer skips the ack (the item must come back
  once the lease lapses), acks only after sleeping past its lease (the ack must then fail with
  `LeaseLost` if anyone took the item over, docs/toolkit.md), or dies holding the job (it
  re-executes itself: a new process whose connection is new, like a crashed worker). The
  existing faults pause, cut off and kill the consumers' agents, so claims also lapse there.
- drain (after healing, from client.py --final): gets and acks until the queue and its
  dead-letter queue are empty, recorded like a consumer (key "queue" or "dead"), then writes
  final-queue.jsonl with what is left.

Outcomes follow client.py: `fail` only when nothing certainly changed (`LeaseLost`, which says
"Nothing was changed"; `Unavailable` with `outcome_known`; `ConflictError`; a refused
transaction), `info` when the outcome is unknown.
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import superstatic

if TYPE_CHECKING:
    from .client import Recorder

MODEL = "queue"
QUEUE_NAME = "nemesis"
KEY_QUEUE = "queue"  # the history's key of operations on the queue ...
KEY_DEAD = "dead"  # ... and on its dead-letter queue (drained at the end)
ROLES = ("producer", "consumer")
# Short against a run (so skipped acks come back within it), long against an operation on a
# healthy cluster (so an ack in time is the common case). Log time, not wall time.
LEASE_S = 3.0
GET_TIMEOUT_S = 1.0
# Per delivered job, what a consumer does instead of acking at once.
P_SKIP_ACK = 0.08
P_SLOW_ACK = 0.03  # sleeps LEASE_S + SLOW_EXTRA_S, then acks
P_DIE = 0.02
SLOW_EXTRA_S = 0.5
# Think time between a producer's puts and a consumer's gets: slower than the mixed clients'
# (client.PACE_S_MAX), so three queue processes cost about what one mixed client did.
PACE_S_MAX = 0.1
BACKLOG_MAX = 50
# The drain: each get waits past a lapsed lease; the whole drain is bounded.
DRAIN_GET_TIMEOUT_S = 2 * LEASE_S + 1.0
TIMEOUT_S_DRAIN = 120.0
RETRY_PAUSE_S = 0.5
DIED_MARK = "DIED"  # client-*.err: a consumer that died on purpose (not a dead connection)


def queue() -> Any:
    return superstatic.Queue(QUEUE_NAME)


def triple(job: Any) -> list[Any]:
    return [job.value, job.id, job.deliveries]


class Attempt:
    """Runs one recorded operation: records the invoke, then ok / fail / info."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.last_error = ""

    def __call__(
        self, f: str, key: str, value: Any, action: Callable[[], Any], answer: Callable[[Any], Any]
    ) -> tuple[str, Any]:
        """("ok", the action's result) or ("fail" | "info" | "dead" | "error", None)."""
        self.rec.event(MODEL, "invoke", f, key, value)
        try:
            result = action()
        except superstatic.LeaseLost as exc:
            self.rec.event(MODEL, "fail", f, key, value, f"LeaseLost: {exc}")
            return "fail", None
        except superstatic.Unavailable as exc:
            kind = "fail" if exc.outcome_known else "info"
            self.rec.event(MODEL, kind, f, key, value, f"Unavailable: {exc}")
            return kind, None
        except superstatic.ConflictError as exc:
            self.rec.event(MODEL, "fail", f, key, value, f"ConflictError: {exc}")
            return "fail", None
        except superstatic.Error as exc:
            kind = "fail" if "nothing was applied" in str(exc) else "info"
            self.rec.event(MODEL, kind, f, key, value, f"{type(exc).__name__}: {exc}")
            self.last_error = str(exc)
            if "connection stopped" in str(exc):
                return "dead", None
            return (kind if kind == "fail" else "error"), None
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.rec.event(MODEL, "info", f, key, value, self.last_error)
            traceback.print_exc(file=sys.stderr)
            return "error", None
        self.rec.event(MODEL, "ok", f, key, answer(result))
        return "ok", result


class QueueClient:
    """A producer or a consumer; step() does one put, or one get (+ ack)."""

    def __init__(
        self, role: str, rec: Recorder, rng: random.Random, unique: Callable[[], int]
    ) -> None:
        self.role = role
        self.rng = rng
        self.unique = unique
        self.attempt = Attempt(rec)
        self.queue = queue()

    @property
    def last_error(self) -> str:
        return self.attempt.last_error

    def step(self) -> str:
        """One operation: "ok", "error" (unexpected), "dead" (the connection stopped) or "die" (a
        consumer chose to die holding its job)."""
        if self.role == "producer":
            if len(self.queue) >= BACKLOG_MAX:  # the local replica's count: no network
                time.sleep(PACE_S_MAX)
                return "ok"
            x = self.unique()
            status, _ = self.attempt("put", KEY_QUEUE, x, lambda: self.queue.put(x), lambda _: x)
            return _step_status(status)
        status, job = self.attempt(
            "get",
            KEY_QUEUE,
            None,
            lambda: self.queue.get(timeout=GET_TIMEOUT_S, lease_s=LEASE_S),
            lambda j: None if j is None else triple(j),
        )
        if status != "ok" or job is None:
            return _step_status(status)
        roll = self.rng.random()
        if roll < P_SKIP_ACK:
            return "ok"  # never acked by this delivery: it comes back once the lease lapses
        if roll < P_SKIP_ACK + P_DIE:
            return "die"
        if roll < P_SKIP_ACK + P_DIE + P_SLOW_ACK:
            time.sleep(LEASE_S + SLOW_EXTRA_S)
        status, _ = self.attempt("ack", KEY_QUEUE, triple(job), job.ack, lambda _: triple(job))
        return _step_status(status)


def _step_status(status: str) -> str:
    return status if status in ("dead", "error") else "ok"


def drain(rec: Recorder, out: Path) -> None:
    """Gets and acks until the queue and its dead letters are empty (or TIMEOUT_S_DRAIN), then
    writes final-queue.jsonl: the items left (0 and 0 when the drain got everything)."""
    attempt = Attempt(rec)
    q = queue()
    deadline = time.monotonic() + TIMEOUT_S_DRAIN
    for key, source in ((KEY_QUEUE, q), (KEY_DEAD, q.dead_letters)):
        while time.monotonic() < deadline:
            # Empty once synced: done (a get would wait out its whole timeout to say so).
            try:
                superstatic.sync()
            except superstatic.Error as exc:  # the healed cluster still electing: again
                print(f"drain: sync: {exc}", file=sys.stderr, flush=True)
                time.sleep(RETRY_PAUSE_S)
                continue
            if len(source) == 0:
                break
            status, job = attempt(
                "get",
                key,
                None,
                lambda s=source: s.get(timeout=DRAIN_GET_TIMEOUT_S, lease_s=LEASE_S),
                lambda j: None if j is None else triple(j),
            )
            if status == "ok" and job is not None:
                attempt("ack", key, triple(job), job.ack, lambda _, j=job: triple(j))
            elif status != "ok":
                time.sleep(RETRY_PAUSE_S)
    superstatic.sync()
    left = {"key": "left", "value": {KEY_QUEUE: len(q), KEY_DEAD: len(q.dead_letters)}}
    (out / f"final-{MODEL}.jsonl").write_text(json.dumps(left) + "\n", encoding="utf-8")
