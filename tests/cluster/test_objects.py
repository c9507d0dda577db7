"""The object library against real agents: several app processes, one cluster.

Every app here is a separate Python process running tests/support/cluster_app.py through the
public API only (superstatic.connect / clustered / root / transaction / sync / plain).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS_DIR))
from support import apps  # noqa: E402
from support.apps import rotated  # noqa: E402
from support.cluster_app import ACCOUNTS, OPENING, Counter, Ledger, canonical  # noqa: E402

import superstatic  # noqa: E402
from superstatic.tools.localcluster import LocalCluster  # noqa: E402

pytestmark = pytest.mark.cluster

TIMEOUT_S_WORKER = 180.0


@pytest.fixture
def app(cluster: LocalCluster) -> Iterator[list[str]]:
    """This test process as one more app, connected to every agent."""
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        yield endpoints
    finally:
        superstatic.close()


@pytest.fixture(params=["all", "partial"])
def app_any(
    cluster: LocalCluster, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """`app`, with this process and the workers it starts on full or on partial replicas
    (docs/virtual-heap.md): the checks that matter most run in both."""
    monkeypatch.setenv("SUPERSTATIC_TEST_REPLICATE", request.param)
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints, replicate=request.param)
    try:
        yield endpoints
    finally:
        superstatic.close()


def start_worker(endpoints: list[str], *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    return apps.start_module("support.cluster_app", endpoints, *args, stdin=stdin)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    return apps.finish(proc, TIMEOUT_S_WORKER)


def random_mutations(shared: dict[Any, Any], model: dict[Any, Any], rng: random.Random) -> None:
    """The same seeded mutations on a plain model and on a shared root."""
    keys = ["a", "b", "c", 1, ("t", 2)]
    for _ in range(60):
        key = rng.choice(keys)
        choice = rng.randrange(6)
        if choice == 0:
            value: Any = rng.choice([1, "x", None, b"\x00", (1, "y"), 2.5])
            model[key] = value
            shared[key] = value
        elif choice == 1:
            value = {"n": [rng.randrange(9)], "s": {rng.randrange(9)}}
            model[key] = value
            shared[key] = value
        elif choice == 2 and isinstance(model.get(key), dict):
            model[key]["n"].append(rng.randrange(9))
            shared[key]["n"].append(model[key]["n"][-1])
        elif choice == 3 and isinstance(model.get(key), dict):
            element = rng.randrange(9)
            model[key]["s"].add(element)
            shared[key]["s"].add(element)
        elif choice == 4:
            model.pop(key, None)
            shared.pop(key, None)
        elif choice == 5 and isinstance(model.get(key), dict) and model[key]["n"]:
            model[key]["n"].pop(0)
            shared[key]["n"].pop(0)


def test_state_made_here_reads_the_same_in_another_process(
    cluster: LocalCluster, app: list[str]
) -> None:
    shared = superstatic.root("model", dict)
    model: dict[Any, Any] = {}
    random_mutations(shared, model, random.Random(7))
    assert canonical(superstatic.plain(shared)) == canonical(model)
    reader = start_worker(rotated(app, 2), "dump", "model")
    assert finish(reader)["value"] == json.loads(json.dumps(canonical(model)))


def test_read_modify_write_from_several_processes_is_exact(
    cluster: LocalCluster, app_any: list[str]
) -> None:
    workers, bumps = 3, 25
    procs = [start_worker(rotated(app_any, i), "bump", f"w{i}", str(bumps)) for i in range(workers)]
    for proc in procs:
        assert finish(proc) == {"done": bumps}
    superstatic.sync()
    counter = Counter()
    total = workers * bumps
    assert counter.value == total
    assert superstatic.plain(counter.history) == list(range(1, total + 1))
    assert superstatic.plain(counter.by_worker) == {f"w{i}": bumps for i in range(workers)}


def test_no_process_observes_half_a_transaction(cluster: LocalCluster, app_any: list[str]) -> None:
    Ledger()  # create it once, before the writers race
    writers = [start_worker(rotated(app_any, i), "transfer", "30", str(i)) for i in range(2)]
    auditor = start_worker(rotated(app_any, 2), "audit", "300")
    for proc in writers:
        assert finish(proc) == {"done": 30}
    audit = finish(auditor)
    assert audit["violations"] == 0 and audit["monotonic"]
    superstatic.sync()
    ledger = Ledger()
    assert ledger.audit() == (OPENING * len(ACCOUNTS), 60)


def test_sync_sees_every_write_committed_before_it(
    cluster: LocalCluster, app_any: list[str]
) -> None:
    cfg = superstatic.root("fresh", dict)
    cfg["k"] = -1
    # The reader talks to one agent only, while this process writes through another.
    reader = start_worker([app_any[2]], "serve", "fresh", stdin=True)
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert json.loads(reader.stdout.readline()) == {"ready": True}
        for i in range(15):
            cfg["k"] = i  # acknowledged: committed by a quorum and applied here
            reader.stdin.write(json.dumps({"key": "k", "sync": True}) + "\n")
            reader.stdin.flush()
            assert json.loads(reader.stdout.readline()) == {"value": i}
        assert finish(reader) == {"bye": True}  # communicate() closes stdin: EOF ends serve
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def test_full_cluster_restart_keeps_objects_identities_and_cycles(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        d = superstatic.root("durable", dict)
        inner = [1, 2]
        loop: list[Any] = ["loop"]
        loop.append(loop)
        d.update({"x": inner, "y": inner, "loop": loop, "t": (1, "two", frozenset({3}))})
        d["self"] = d
        Counter().bump("before")
    finally:
        superstatic.close()
    for node_id in cluster.voter_ids:
        cluster.stop(node_id)
    for node_id in cluster.voter_ids:
        cluster.start_agent(node_id)
    cluster.leader()
    superstatic.connect(endpoints)
    try:
        d = superstatic.root("durable", dict)
        assert d["x"] is d["y"] and superstatic.plain(d["x"]) == [1, 2]
        assert d["loop"][1] is d["loop"] and d["loop"][0] == "loop"
        assert d["self"] is d
        assert d["t"] == (1, "two", frozenset({3}))
        counter = Counter()
        assert counter.value == 1 and counter.bump("after") == 2
    finally:
        superstatic.close()


def test_leader_killed_while_processes_bump_through_several_agents(
    cluster: LocalCluster, app: list[str]
) -> None:
    workers, bumps = 3, 40
    procs = [start_worker(rotated(app, i), "bump", f"w{i}", str(bumps)) for i in range(workers)]
    try:
        counter = Counter()
        deadline = time.monotonic() + TIMEOUT_S_WORKER
        while counter.value < bumps // 2:  # the workers are well under way
            assert time.monotonic() < deadline, "the workers made no progress"
            time.sleep(0.02)
        cluster.kill(cluster.leader())
    finally:
        results = [finish(proc) for proc in procs]
    assert results == [{"done": bumps}] * workers
    superstatic.sync()
    total = workers * bumps
    # Exact: a bump retried across the failover (same seq) was answered, not applied twice.
    assert counter.value == total
    assert superstatic.plain(counter.history) == list(range(1, total + 1))
    assert superstatic.plain(counter.by_worker) == {f"w{i}": bumps for i in range(workers)}


def test_an_exception_commits_nothing_seen_from_another_process(
    cluster: LocalCluster, app: list[str]
) -> None:
    cfg = superstatic.root("rollback", dict)
    cfg["keep"] = 1
    ledger = Ledger()
    with pytest.raises(RuntimeError, match="abort"), superstatic.transaction():
        cfg["lost"] = 1
        ledger.transfer("a", "b", 5)  # a method call inside joins the outer transaction
        raise RuntimeError("abort")
    with pytest.raises(KeyError):
        ledger.transfer("a", "nobody", 5)  # balances["a"] changed before the KeyError
    assert superstatic.plain(cfg) == {"keep": 1}
    assert ledger.audit() == (OPENING * len(ACCOUNTS), 0)
    assert finish(start_worker(rotated(app, 1), "dump", "rollback"))["value"] == canonical(
        {"keep": 1}
    )
    audit = finish(start_worker(rotated(app, 2), "audit", "1"))
    assert audit == {"violations": 0, "monotonic": True, "last": 0}


def test_not_storable_commits_nothing(cluster: LocalCluster, app: list[str]) -> None:
    cfg = superstatic.root("storable", dict)
    with pytest.raises(superstatic.NotStorable) as caught, superstatic.transaction():
        cfg["a"] = 1
        cfg["b"] = object()
    assert "root 'storable'['b']" in str(caught.value) and "object" in str(caught.value)
    with pytest.raises(superstatic.NotStorable):
        cfg["c"] = [1, {2: lambda: 3}]
    assert superstatic.plain(cfg) == {}
    assert finish(start_worker(rotated(app, 1), "dump", "storable"))["value"] == canonical({})
