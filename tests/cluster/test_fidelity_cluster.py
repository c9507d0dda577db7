"""Issue 10 rows that need real processes and real agents: class defaults under concurrent
processes and threads (row 1), fork safety (row 6), one __init__ per cluster (row 13), and
close()/connect() with old references (row 14). The app side is tests/support/fidelity_app.py;
every process a test starts is stopped by PID."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS_DIR))
from support import apps  # noqa: E402
from support.apps import rotated  # noqa: E402

import superstatic  # noqa: E402
from superstatic.tools.localcluster import LocalCluster  # noqa: E402

pytestmark = pytest.mark.cluster

TIMEOUT_S_WORKER = 240.0


def start(endpoints: list[str], *args: str) -> subprocess.Popen[str]:
    return apps.start_module("support.fidelity_app", endpoints, *args)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    return apps.finish(proc, TIMEOUT_S_WORKER)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts: any still running at the end are killed by PID."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def app(cluster: LocalCluster) -> Iterator[list[str]]:
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        yield endpoints
    finally:
        superstatic.close()


def test_row1_class_default_increments_are_exact_across_processes_and_threads(
    app: list[str], tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    go = tmp_path / "go"
    workers, threads, calls = 4, 2, 25
    for i in range(workers):
        procs.append(start(rotated(app, i), "hits", str(go), str(threads), str(calls)))
    go.write_text("go")  # all start incrementing at once, from the class default 0
    results = [finish(p) for p in procs]
    assert all(r == {"done": threads * calls, "errors": []} for r in results), results
    from support.fidelity_app import Hits

    superstatic.sync()
    assert Hits().hits == workers * threads * calls


def test_row13_init_runs_once_when_processes_race_to_create(
    app: list[str], tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    go, marker = tmp_path / "go", tmp_path / "inits"
    creators = 4
    for i in range(creators):
        procs.append(start(rotated(app, i), "create", str(go), str(marker), f"p{i}"))
    go.write_text("go")
    results = [finish(p) for p in procs]
    lines = marker.read_text().splitlines()
    assert len(lines) == 1, lines  # the constructor's side effect happened once
    assert {r["creator"] for r in results} == {lines[0]}


def test_row6_multiprocessing_fork_children_connect_on_their_own(
    app: list[str], tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ready = tmp_path / "ready"
    workers, calls = 3, 10
    proc = start(app, "fork-pool", str(workers), str(calls), "pool-flag", str(ready))
    procs.append(proc)
    _wait_ready(proc, ready)
    cfg = superstatic.root("fork.cfg", dict)
    cfg["pool-flag"] = "set after the fork"
    out = finish(proc)
    results = out["results"]
    assert len(results) == workers and len({r["pid"] for r in results}) == workers
    assert all(r["flag"] == "set after the fork" for r in results), results
    assert out["parent_total"] == workers * calls
    from support.fidelity_app import Forked

    superstatic.sync()
    forked = Forked()
    assert forked.total == workers * calls
    assert superstatic.plain(forked.by_worker) == {f"w{i}": calls for i in range(workers)}


def test_row6_prefork_server_workers_use_inherited_objects(
    app: list[str], tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ready = tmp_path / "ready"
    children, calls = 3, 8
    proc = start(app, "prefork", str(children), str(calls), "prefork-flag", str(ready))
    procs.append(proc)
    _wait_ready(proc, ready)
    superstatic.root("fork.cfg", dict)["prefork-flag"] = "live"
    out = finish(proc)
    assert sorted(r["child"] for r in out["reports"]) == list(range(children))
    assert all(r["flag"] == "live" for r in out["reports"]), out
    assert out["total"] == children * calls
    assert out["by_worker"] == {f"c{i}": calls for i in range(children)}


@pytest.mark.parametrize("replicate", ["all", "partial"])
def test_row6_a_forked_childs_first_block_creates_objects_it_may_create(
    app: list[str], procs: list[subprocess.Popen[str]], replicate: str
) -> None:
    """Review 38: rules 3 binds a new object's id to the entry's client id; a child's first
    write, a transaction block made at once after the fork, named its objects with the
    parent's prefix and was refused."""
    proc = start(app, "fork-block", replicate)
    procs.append(proc)
    out = finish(proc)
    assert out == {"outcome": "ok"}, out
    superstatic.sync()
    assert superstatic.root("fork.cfg", dict)["child"] == []


def _wait_ready(proc: subprocess.Popen[str], ready: Path) -> None:
    import time

    deadline = time.monotonic() + TIMEOUT_S_WORKER
    while not ready.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the app exited early: {out[-2000:]} {err[-4000:]}")
        assert time.monotonic() < deadline, "the app never forked"
        time.sleep(0.02)


def test_row14_close_then_connect_old_references_raise_clearly(cluster: LocalCluster) -> None:
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        d = superstatic.root("row14", dict)
        d["x"] = [1]
        inner = d["x"]
    finally:
        superstatic.close()
    for use in (lambda: d["x"], lambda: len(d), lambda: d.get("x"), lambda: inner[0]):
        with pytest.raises(superstatic.Error, match="connection was closed"):
            use()
    with pytest.raises(superstatic.Error, match="connection was closed"):
        d["y"] = 2
    superstatic.connect(endpoints)
    try:
        with pytest.raises(superstatic.Error, match="get it again"):
            _ = d["x"]  # still the old, closed connection's object
        again = superstatic.root("row14", dict)
        assert again["x"] == [1] and again is not d
        assert "closed superstatic connection" in repr(d)
    finally:
        superstatic.close()
