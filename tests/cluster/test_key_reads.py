"""Key-level reads against real agents (issue 11 item 2; docs/data-model-v2.md section 4):
writers of different keys of one dict never conflict, a read of a key's absence or of a dict's
length conflicts exactly with what changes it, and 1 / 1.0 / True are one key across apps.

Every other app is a separate Python process running tests/support/key_reads_app.py through
the public API; counts of conflicts come from the library's own counters (superstatic.stats()).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS_DIR))
from support import apps  # noqa: E402
from support.apps import rotated  # noqa: E402
from support.key_reads_app import DISJOINT_ROOT, NUMBERS_ROOT  # noqa: E402

import superstatic  # noqa: E402
from superstatic.tools.localcluster import LocalCluster  # noqa: E402

pytestmark = pytest.mark.cluster

TIMEOUT_S_WORKER = 240.0
PROBE_ROOT = "key_reads.probe"


@pytest.fixture
def app(cluster: LocalCluster) -> Iterator[list[str]]:
    """This test process as one more app, connected to every agent."""
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        yield endpoints
    finally:
        superstatic.close()


def start_worker(endpoints: list[str], *args: str) -> subprocess.Popen[str]:
    return apps.start_module("support.key_reads_app", endpoints, *args)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    return apps.finish(proc, TIMEOUT_S_WORKER)


def conflicts_here() -> int:
    return int(superstatic.stats()["commits"].get("conflict", 0))


def test_disjoint_read_modify_writes_on_one_dict_never_conflict(
    cluster: LocalCluster, app: list[str]
) -> None:
    processes, threads, rounds = 2, 8, 12
    # Made here first: two processes creating the root at once conflict on it (both read the
    # root table's key), which is not what this test counts.
    superstatic.root(DISJOINT_ROOT, dict)
    procs = [
        start_worker(rotated(app, i), "disjoint", f"p{i}", str(threads), str(rounds))
        for i in range(processes)
    ]
    results = [finish(proc) for proc in procs]
    for i, result in enumerate(results):
        assert result["errors"] == []
        assert result["mine"] == {f"p{i}.{t}": rounds for t in range(threads)}
        # The library's counts: conflict answers, and bodies run again (doomed ones included).
        assert (result["conflicts"], result["txn_retries"]) == (0, 0), result
    superstatic.sync()
    assert sum(superstatic.root(DISJOINT_ROOT, dict).values()) == processes * threads * rounds


def run_with_interference(
    app: list[str], read: Callable[[Any], Any], interfere: tuple[str, str]
) -> tuple[list[Any], int]:
    """A transaction function that reads the probe dict, and on its first run lets another
    process commit `probe[key] = value` before writing: the reads it returns per run, and the
    conflict answers the commit got."""
    probe = superstatic.root(PROBE_ROOT, dict)
    runs: list[Any] = []
    before = conflicts_here()

    @superstatic.transaction()
    def body() -> None:
        seen = read(probe)
        runs.append(seen)
        if len(runs) == 1:
            # Committed by another app while this body is open (its replica applies it once
            # the pin window passes; the body reads nothing more, so only the leader judges).
            put = finish(start_worker(rotated(app, 1), "put", PROBE_ROOT, *interfere))
            assert put["done"] and put["conflicts"] == 0, put
        probe["seen"] = repr(seen)

    body()
    return runs, conflicts_here() - before


def test_membership_read_conflicts_with_a_concurrent_insert_and_reruns(
    cluster: LocalCluster, app: list[str]
) -> None:
    runs, conflicts = run_with_interference(app, lambda d: "k" in d, ("k", "v"))
    assert runs == [False, True]  # re-run on the state with k
    assert conflicts == 1
    assert superstatic.root(PROBE_ROOT, dict)["seen"] == "True"


def test_membership_read_does_not_conflict_with_another_key(
    cluster: LocalCluster, app: list[str]
) -> None:
    runs, conflicts = run_with_interference(app, lambda d: "k" in d, ("other", "v"))
    assert runs == [False] and conflicts == 0


def test_length_read_vs_update_and_insert(cluster: LocalCluster, app: list[str]) -> None:
    superstatic.root(PROBE_ROOT, dict)["a"] = "1"
    # An update of a present key leaves the length: no conflict ("seen" itself is written by
    # the body, after its read).
    runs, conflicts = run_with_interference(app, len, ("a", "2"))
    assert runs == [1] and conflicts == 0
    # An insert changes it: conflict, and the re-run sees the new length.
    runs, conflicts = run_with_interference(app, len, ("b", "1"))
    assert runs == [2, 3] and conflicts == 1


def test_one_and_one_point_zero_are_one_key_across_apps(
    cluster: LocalCluster, app: list[str]
) -> None:
    threads, rounds = 4, 10
    procs = [
        start_worker(rotated(app, i), "number", key, str(threads), str(rounds))
        for i, key in enumerate(("1", "1.0", "True"))
    ]
    results = [finish(proc) for proc in procs]
    for result in results:
        assert result["errors"] == []
        assert len(result["keys"]) == 1  # one key, whichever numeric form came first
    superstatic.sync()
    numbers = superstatic.root(NUMBERS_ROOT, dict)
    # Exact: every read-modify-write through any of the three forms conflicted with the others.
    assert numbers[1] == numbers[1.0] == numbers[True] == 3 * threads * rounds
    assert len(numbers) == 1
