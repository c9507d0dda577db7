"""Bodies pin the replica instead of holding its lock (issue 10 rows 2 and 4): a body that
waits never holds back other writers for longer than PIN_MS_MAX, and entries applied under a
body make it re-run only if they changed what it read; it never sees an inconsistent state."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

import superstatic

TIMEOUT_S = 30


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def _waiting_body(
    session: Any, read: Any, started: threading.Event, go_on: threading.Event, runs: list[Any]
) -> Any:
    def body() -> Any:
        first = read()
        runs.append(first)
        if len(runs) == 1:
            started.set()
            assert go_on.wait(TIMEOUT_S)  # another thread writes meanwhile
        return first, read()

    return session.run(body)


def test_a_waiting_body_reruns_when_what_it_read_changed(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("pins", dict)
    d["x"] = 1
    started, go_on = threading.Event(), threading.Event()
    runs: list[Any] = []
    result: list[Any] = []
    t = threading.Thread(
        target=lambda: result.append(_waiting_body(session, lambda: d["x"], started, go_on, runs))
    )
    t.start()
    assert started.wait(TIMEOUT_S)
    d["x"] = 2  # commits and applies although the body is pinned (after PIN_MS_MAX)
    go_on.set()
    t.join(TIMEOUT_S)
    assert runs == [1, 2]  # the first run read 1, then x moved: re-run, never (1, 2)
    assert result == [(2, 2)]


def test_a_waiting_body_keeps_going_when_other_nodes_changed(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("mine", dict)
    other = session.root("theirs", dict)
    d["x"] = 1
    started, go_on = threading.Event(), threading.Event()
    runs: list[Any] = []
    result: list[Any] = []
    t = threading.Thread(
        target=lambda: result.append(_waiting_body(session, lambda: d["x"], started, go_on, runs))
    )
    t.start()
    assert started.wait(TIMEOUT_S)
    other["y"] = 2  # another node: the body's view is still consistent
    go_on.set()
    t.join(TIMEOUT_S)
    assert runs == [1] and result == [(1, 1)]


def test_a_block_whose_reads_moved_raises_conflict(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("block", dict)
    d["x"] = 1
    entered, go_on = threading.Event(), threading.Event()
    outcome: list[Any] = []

    def block() -> None:
        try:
            with session.transaction():
                seen = d["x"]
                entered.set()
                assert go_on.wait(TIMEOUT_S)
                d["y"] = seen + d["x"]  # would mix two states: refused
            outcome.append("committed")
        except superstatic.ConflictError as exc:
            outcome.append(exc)

    t = threading.Thread(target=block)
    t.start()
    assert entered.wait(TIMEOUT_S)
    d["x"] = 10
    go_on.set()
    t.join(TIMEOUT_S)
    assert len(outcome) == 1 and isinstance(outcome[0], superstatic.ConflictError)
    assert "y" not in d


def test_a_body_holds_entries_back_once_not_for_every_entry(cluster: InprocCluster) -> None:
    """A body suspended for long (an asyncio task awaiting inside a block) had its window after
    the first forced apply: later entries do not wait PIN_MS_MAX for it again."""
    session = cluster.session()
    d = session.root("once", dict)
    entered, go_on = threading.Event(), threading.Event()

    def block() -> None:
        with session.transaction():
            _ = d.get("x")
            entered.set()
            assert go_on.wait(TIMEOUT_S)

    t = threading.Thread(target=block)
    t.start()
    assert entered.wait(TIMEOUT_S)
    replica = session.replica
    assert replica._blocking()  # the open block holds entries back...
    d["x"] = 1  # ...for this entry (applied after PIN_MS_MAX)
    assert not replica._blocking()  # ...and no longer for the next ones
    d["y"] = 2
    assert d["x"] == 1 and d["y"] == 2
    go_on.set()
    t.join(TIMEOUT_S)
    with session.transaction():  # a new body pins as usual
        assert replica._blocking()
