"""Transactions: isolation, read-your-writes, conflicts and retries, rollback, nesting."""

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
from superstatic.objects import session as session_module
from superstatic.objects import txn as txn_module
from superstatic.objects.plain_copy import plain


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@superstatic.clustered
class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.history: list[int] = []

    def bump(self) -> int:
        self.value += 1
        self.history.append(self.value)
        return self.value


def test_conflict_reruns_the_body_on_fresh_state(cluster: InprocCluster) -> None:
    fresh = cluster.session()
    stale = cluster.session(held=True)
    a = fresh.attach(Counter)
    b = stale.attach(Counter)
    a.bump()  # the held replica does not see this yet
    assert b.value == 0
    assert b.bump() == 2  # conflicted, waited for the winner's entry, re-ran
    assert a.value == 2 and b.value == 2 and plain(b.history) == [1, 2]


def test_serializable_increments_from_threads(cluster: InprocCluster) -> None:
    sessions = [cluster.session() for _ in range(3)]
    counters = [s.attach(Counter) for s in sessions]
    per_thread = 20
    errors: list[BaseException] = []

    def work(counter: Any) -> None:
        try:
            for _ in range(per_thread):
                counter.bump()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    total = per_thread * len(counters)
    for s, c in zip(sessions, counters, strict=True):
        s.sync()
        assert c.value == total
        assert plain(c.history) == list(range(1, total + 1))


def test_conflict_budget_raises_conflict_error(
    cluster: InprocCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "TXN_ATTEMPTS_MAX", 3)
    monkeypatch.setattr(session_module, "BACKOFF_S_MAX", 0.0)
    winner = cluster.session()
    loser = cluster.session(held=True)
    w = winner.attach(Counter)
    lose = loser.attach(Counter)
    attempts = []

    def body() -> None:
        attempts.append(1)
        lose.value = lose.value + 100
        # Another client commits between this body's read and its commit, every attempt.
        t = threading.Thread(target=w.bump)
        t.start()
        t.join(30)

    with pytest.raises(superstatic.ConflictError, match="TXN_ATTEMPTS_MAX=3"):
        loser.run(body)
    assert len(attempts) == 3
    winner.sync()
    assert w.value == 3  # only the winner's bumps; the loser's write never applied


def test_transaction_block_is_atomic_and_one_entry(cluster: InprocCluster) -> None:
    session = cluster.session()
    counter = session.attach(Counter)
    cfg = session.root("config", dict)
    before = cluster.last_index
    with session.transaction():
        counter.bump()
        cfg["last"] = counter.value
        assert cfg["last"] == 1  # sees its own writes
    assert cluster.last_index == before + 1
    assert cfg["last"] == 1 and counter.value == 1


def test_exception_in_block_commits_nothing(cluster: InprocCluster) -> None:
    session = cluster.session()
    cfg = session.root("config", dict)
    before = cluster.last_index
    with pytest.raises(RuntimeError), session.transaction():
        cfg["a"] = 1
        cfg["new"] = {"deep": [1]}
        raise RuntimeError("abort")
    assert cluster.last_index == before and "a" not in cfg and not txn_module.overlays_active()


def test_block_conflict_raises_instead_of_rerunning(cluster: InprocCluster) -> None:
    fresh = cluster.session()
    stale = cluster.session(held=True)
    a = fresh.root("config", dict)
    b = stale.root("config", dict)
    a["n"] = 1
    with pytest.raises(superstatic.ConflictError, match="with-block"), stale.transaction():
        b["n"] = b.get("n", 0) + 10
    stale.sync()
    assert b["n"] == 1


def test_decorated_function_is_rerun_on_conflict(cluster: InprocCluster) -> None:
    fresh = cluster.session()
    stale = cluster.session(held=True)
    a = fresh.root("config", dict)
    b = stale.root("config", dict)
    a["n"] = 1

    @stale.transaction()
    def add_ten() -> int:
        b["n"] = b.get("n", 0) + 10
        return b["n"]

    assert add_ten() == 11 and a["n"] == 11


def test_isolation_from_other_threads_until_commit(cluster: InprocCluster) -> None:
    session = cluster.session()
    cfg = session.root("config", dict)
    cfg["v"] = "old"
    inside = threading.Event()
    release = threading.Event()
    seen: list[Any] = []

    def body() -> None:
        cfg["v"] = "new"
        seen.append(("body", cfg["v"]))
        inside.set()
        release.wait(30)

    t = threading.Thread(target=lambda: session.run(body))
    t.start()
    assert inside.wait(30)
    seen.append(("outside", cfg["v"], cfg.get("v"), "new" in cfg.values()))
    release.set()
    t.join(30)
    assert seen == [("body", "new"), ("outside", "old", "old", False)]
    assert cfg["v"] == "new"


def test_read_only_transaction_and_read_set(cluster: InprocCluster) -> None:
    session = cluster.session()
    cfg = session.root("config", dict)
    cfg["a"] = 1
    before = cluster.last_index
    captured: list[Any] = []

    def body() -> int:
        value = cfg["a"]
        txn = txn_module.current()
        assert txn is not None
        captured.append((txn.base, txn.read_set()))
        return value

    assert session.run(body) == 1
    assert cluster.last_index == before  # read-only: nothing committed
    node = session.replica.roots_node().live["config"]._self_node
    assert captured == [(before, {node.oid: (0, ["a"])})]


def test_sync_inside_a_transaction_is_refused(cluster: InprocCluster) -> None:
    session = cluster.session()
    with pytest.raises(superstatic.Error, match="sync"):
        session.run(session.sync)


def test_new_objects_keep_identity_across_commit(cluster: InprocCluster) -> None:
    session = cluster.session()
    cfg = session.root("config", dict)

    def body() -> Any:
        cfg["fresh"] = {"k": [1]}
        return cfg["fresh"]

    made = session.run(body)
    assert made is cfg["fresh"]  # the proxy made in the body is the replica's node after commit
    made["k"].append(2)
    assert cfg["fresh"]["k"] == [1, 2]


def test_objects_of_two_connections_cannot_mix(cluster: InprocCluster) -> None:
    one = cluster.session()
    two = cluster.session()
    a = one.root("config", dict)
    b = two.root("config", dict)
    with pytest.raises(superstatic.Error, match="another superstatic connection"):
        one.run(lambda: a.__setitem__("x", b))
