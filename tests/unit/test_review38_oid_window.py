"""Review 38 (branch oidbind, state-machine rules 3): the 64-counter window and a connection
whose other threads keep creating objects.

Under rules 3 as first built, a counter more than WINDOW_BITS below the highest its prefix
created was refused as a `conflict`, and the library re-ran the body "whose new oids are above
the mark"
(docs/virtual-heap.md section 7). That holds only if the connection's other threads create
fewer than WINDOW_BITS objects while the re-run body runs and commits. When they create more
during every run (a sustained rate: objects per second times a body's time from its first new
object to its apply above 64, e.g. a bulk-loading thread beside request threads), every run
is refused again, and after TXN_ATTEMPTS_MAX runs the app gets a ConflictError, though nothing
it read or wrote was touched by anyone (under rules 2 it commits at its first run). Fixed: such
a counter, the owner's own, is now created if no node has it (agent/oidmarks.py).

Deterministic here: each run of the slow body takes its oid, then another thread of the same
connection creates WINDOW_BITS + 1 objects and commits, then the slow body ends.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from superstatic_agent.oidmarks import WINDOW_BITS, oid_for
from test_oid_marks import PAD_ENTRIES_MAX, A, B, Clients

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

from superstatic.objects.session import TXN_ATTEMPTS_MAX

TIMEOUT_S_THREAD = 60


def test_a_body_commits_while_the_connections_other_threads_create_past_the_window(
    tmp_path: Path,
) -> None:
    with InprocCluster(tmp_path) as cluster:
        app = cluster.session()
        box = app.root("box", dict)
        runs: list[int] = []
        failures: list[BaseException] = []

        def burst() -> None:
            try:
                app.run(lambda: box.__setitem__("fast", [[] for _ in range(WINDOW_BITS + 1)]))
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        def slow_body() -> None:
            runs.append(1)
            box["slow"] = []  # its oid is taken here
            other = threading.Thread(target=burst)  # meanwhile, another thread creates more
            other.start()
            other.join(TIMEOUT_S_THREAD)
            assert not other.is_alive()

        app.run(slow_body)
        assert not failures, failures
        assert app.root("box", dict)["slow"] == []
        assert len(runs) < TXN_ATTEMPTS_MAX


def _gone(log: Clients, oid: str, pad: str, first_counter: int, seen: set[str]) -> int:
    """Makes garbage of `pad`'s (its own counters from `first_counter`) until a collection
    took `oid` (`seen`: what earlier entries collected); returns the pad's next counter."""
    counter = first_counter
    while oid not in seen:
        assert counter < first_counter + PAD_ENTRIES_MAX, f"{oid} was not collected"
        padded = log.txn(pad, [["new", oid_for(pad, counter), "set", []]])
        assert padded.outcome == "ok", padded
        seen.update(padded.collected)
        counter += 1
    return counter


def test_the_old_highest_is_remembered_when_the_mark_jumps_by_exactly_the_window(
    tmp_path: Path,
) -> None:
    """The window's edge (a mutation of `shift > WINDOW_BITS` to `>=` passed every other
    test, and would let the old highest counter be created twice): after a jump of exactly
    WINDOW_BITS the old highest is the window's last bit ("created before"); one further it
    has left the window and the owner may create it again (the rule's one exception: the
    owner's own counter far below its highest, oidmarks' docstring). The oids are collected
    first, so "already exists" is not what answers."""
    log = Clients(tmp_path / "s", 3, gc_threshold=1)
    try:
        assert log.txn(A, [["new", "@roots", "dict", []]]).outcome == "ok"
        pad = 1
        for jump, answer in ((WINDOW_BITS, "created before"), (WINDOW_BITS + 1, None)):
            old = 1 + 1000 * jump
            seen: set[str] = set()
            for counter in (old, old + jump):
                made = log.txn(A, [["new", oid_for(A, counter), "list", []]])
                assert made.outcome == "ok", made
                seen.update(made.collected)
            pad = _gone(log, oid_for(A, old), B, pad, seen)
            again = log.txn(A, [["new", oid_for(A, old), "list", []]])
            if answer is None:
                assert again.outcome == "ok", (jump, again)
            else:
                assert again.outcome != "ok" and answer in again.error, (jump, again)
    finally:
        log.close()
