"""The virtual heap workloads of the suite (heapstart, heapmem, heapfanout; docs/virtual-heap.md
section 8): the app worker's commands, the summaries, targets and tables, the settings, and one
small real run of all three through the suite's own code against real agent processes.

No timing is asserted anywhere: a benchmark reports numbers, it never fails on a slow machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench import registry, report, settings, targets
from superstatic_bench.procs import ProcessGroup, WorkerFailed
from superstatic_bench.settings import QUICK
from superstatic_bench.workloads import heap_app, heap_cluster, heapfanout, heapmem, heapstart
from support.bench_run import run_suite


def test_touched_objects_are_distinct_seeded_and_bounded() -> None:
    chosen = heap_app.touched_objects(1_000, 100, seed=13)
    assert len(set(chosen)) == 100 and all(0 <= i < 1_000 for i in chosen)
    assert chosen == heap_app.touched_objects(1_000, 100, seed=13)
    assert chosen != heap_app.touched_objects(1_000, 100, seed=14)
    with pytest.raises(ValueError, match=r"touch outside 0\.\.objects"):
        heap_app.touched_objects(10, 11, seed=0)


def test_fan_writes_go_round_robin_one_app_each() -> None:
    apps, objects = 4, 3
    targets_of = [heap_app.fan_target(w, apps, objects) for w in range(apps * objects * 2)]
    per_app = {a: sum(1 for t in targets_of if t[0] == a) for a in range(apps)}
    assert set(per_app.values()) == {objects * 2}  # every app gets the same share
    # Each app's writes visit each of its dicts in turn.
    assert [j for a, j in targets_of if a == 1] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"phase": "nap"}, "phase is one of connect, counter, start"),
        ({"phase": "mem", "objects": 10, "touch": 11}, "touch outside 0..10"),
        ({"phase": "fan_setup", "apps": 0, "objects": 1}, "apps outside 1..256"),
        ({"phase": "fan_write", "apps": 1, "objects": 1, "writes": 1, "rate": 0}, "rate"),
        ({"phase": "connect", "replicate": "some", "endpoints": []}, "replicate is one of"),
    ],
)
def test_heap_commands_refuse_bad_fields_by_name(command: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        heap_app.heap_command({"cmd": "heap", **command})


def test_a_worker_process_answers_a_bad_heap_command_with_the_error(tmp_path: Path) -> None:
    """The worker protocol: `{"cmd": "heap"}` reaches heap_app in a `--system none` client
    process and a refusal comes back as the worker's error, the process still serving."""
    with ProcessGroup(tmp_path / "logs") as group, heap_cluster.app(group, "heap-app") as app:
        with pytest.raises(WorkerFailed, match="phase is one of"):
            app.call({"cmd": "heap", "phase": "nap"})
        assert app.call({"cmd": "rss"})["RssAnon"] > 0


def _sample(connect_s: float, read_s: float) -> dict[str, Any]:
    return {"import_s": 0.05, "connect_s": connect_s, "read_s": read_s, "value": 0}


def _start_outcome() -> dict[str, Any]:
    rows = [
        heapstart.summarize_row(0, "partial", [_sample(0.010, 0.002), _sample(0.012, 0.004)]),
        heapstart.summarize_row(0, "all", [_sample(0.009, 0.0001)]),
        heapstart.summarize_row(100_000, "partial", [_sample(0.015, 0.003), _sample(0.020, 0.003)]),
        heapstart.summarize_row(100_000, "all", [_sample(2.5, 0.001)]),
    ]
    return {"rows": rows, "loads": [], **heapstart.summarize(rows)}


def test_heapstart_splits_connect_and_read_and_compares_partial_sizes() -> None:
    outcome = _start_outcome()
    empty = outcome["rows"][0]
    assert empty["total_median_ms"] == pytest.approx(14.0)  # (12 + 16) / 2
    assert empty["connect_max_ms"] == pytest.approx(12.0)
    assert empty["read_median_ms"] == pytest.approx(3.0)
    assert outcome["largest"] == 100_000
    assert outcome["largest_median_ms"] == pytest.approx(20.5)  # (18 + 23) / 2
    assert outcome["ratio"] == pytest.approx(20.5 / 14.0)
    # Without a sample at 0 objects there is no ratio.
    assert heapstart.summarize(outcome["rows"][2:])["ratio"] is None
    text = heapstart.render(outcome, markdown=False)
    assert "100,000" in text and "2.50 s" in text and "over the empty cluster's: 1.46" in text


def test_heapstart_measures_a_full_replica_only_up_to_its_limit() -> None:
    assert heapstart.modes_at(100_000, settings.FULL) == ["partial", "all"]
    assert heapstart.modes_at(1_000_000, settings.FULL) == ["partial"]


def _mem_answer(objects: int, touched: int, anon_connected: int, anon: int) -> dict[str, Any]:
    return {
        "objects": objects,
        "touched": touched,
        "found": touched,
        "touch_s": 1.5,
        "rss_connected": {"VmRSS": anon_connected + 10_000_000, "RssAnon": anon_connected},
        "rss_touched": {"VmRSS": anon + 10_000_000, "RssAnon": anon},
        "held_bytes": 1_200_000,
        "partial": True,
        "heap_stats": {"loads": 1_022, "evictions": 0, "stubs_made": 20_021, "stubs_removed": 0},
    }


def test_heapmem_subtracts_the_empty_app_of_the_same_mode() -> None:
    baseline = _mem_answer(0, 0, 22_000_000, 22_500_000)
    touched = _mem_answer(100_000, 1_000, 23_000_000, 40_000_000)
    row = heapmem.summarize_row(baseline, touched, "partial")
    assert row["above_empty_anon_mb"] == pytest.approx(17.5)
    assert row["grown_while_touching_mb"] == pytest.approx(17.0)
    assert row["held_mb"] == pytest.approx(1.2)
    outcome = {"objects": 100_000, "touched": 1_000, "rows": [row]}
    text = heapmem.render(outcome, markdown=True)
    assert "17.5 MB" in text and "1022 / 20021" in text and "--large for 1M" in text
    # In Markdown the line under the table is a paragraph of its own, not a row.
    assert "|\n\ntarget: partial < 30 MB" in text
    plain = heapmem.render(outcome, markdown=False)
    assert "\ntarget: partial" in plain and "\n\ntarget" not in plain


METRICS_PAGE = """# HELP superstatic_stream_bytes_sent_total Stream frame bytes sent to apps.
# TYPE superstatic_stream_bytes_sent_total counter
superstatic_stream_bytes_sent_total 12345.0
superstatic_stream_bytes_sent_created 1.7e+09
superstatic_stream_events_sent_total 100.0
superstatic_stream_events_filtered_total 300.0
superstatic_held_entries 412.0
superstatic_subscribers 4.0
superstatic_role{role="follower"} 1.0
"""


def test_metrics_page_parsing_takes_counters_and_gauges_and_names_what_is_missing() -> None:
    parsed = heapfanout.parse_metrics(METRICS_PAGE)
    assert parsed == {
        "stream_bytes_sent": 12345.0,
        "stream_events_sent": 100.0,
        "stream_events_filtered": 300.0,
        "held_entries": 412.0,
        "subscribers": 4.0,
    }
    with pytest.raises(RuntimeError, match="no stream_events_sent"):
        heapfanout.parse_metrics(METRICS_PAGE.replace("events_sent", "other"))


def _fan_row(mode: str, apps: int, sent: float, events: float) -> dict[str, Any]:
    before = dict.fromkeys(heapfanout.METRICS, 0.0)
    after = {
        "stream_bytes_sent": sent,
        "stream_events_sent": events,
        "stream_events_filtered": 0.0,
        "held_entries": 101.0 * apps,
        "subscribers": float(apps),
    }
    row = heapfanout.summarize_row(mode, apps, 200, before, after, cpu_s=0.3)
    row.update(writes_per_s=99.0, settled=True, load_average=[[2.0, 2.0, 2.0], [2.5, 2.0, 2.0]])
    return row


def test_heapfanout_is_per_write_and_compares_partial_app_counts() -> None:
    rows = [
        _fan_row("partial", 1, 22_000, 200),
        _fan_row("partial", 16, 26_400, 200),
        _fan_row("all", 1, 22_000, 200),
        _fan_row("all", 16, 352_000, 3_200),
    ]
    assert rows[0]["bytes_per_write"] == 110 and rows[0]["cpu_ms_per_write"] == pytest.approx(1.5)
    outcome = {"rows": rows, **heapfanout.summarize(rows)}
    assert outcome["apps_compared"] == [1, 16]
    assert outcome["bytes_ratio"] == pytest.approx(1.2)
    assert outcome["events_ratio"] == pytest.approx(1.0)
    text = heapfanout.render(outcome, markdown=False)
    assert "16.00" in text and "16 apps over 1: bytes/write 1.20" in text
    assert heapfanout.summarize(rows[:1])["bytes_ratio"] is None


def test_heap_targets_are_judged_and_name_the_size_measured() -> None:
    fan_rows = [_fan_row("partial", 1, 22_000, 200), _fan_row("partial", 16, 44_000, 400)]
    results = {
        "workloads": {
            "heapstart": _start_outcome(),
            "heapmem": {"objects": 100_000, "touched": 1_000, "partial_above_empty_mb": 64.0},
            "heapfanout": {"rows": fan_rows, **heapfanout.summarize(fan_rows)},
        }
    }
    judged = {t["target"]: t for t in targets.evaluate(results) if t["target"].startswith("heap")}
    assert len(judged) == 5
    start = next(t for n, t in judged.items() if "median < 50 ms at 100,000 objects" in n)
    assert start["met"] is True and start["gap"] == pytest.approx(20.5 / 50)
    mem = next(t for n, t in judged.items() if n.startswith("heapmem"))
    assert "1,000 of 100,000 touched" in mem["target"] and mem["met"] is False
    fan = [t for n, t in judged.items() if n.startswith("heapfanout")]
    assert [t["met"] for t in fan] == [False, False]  # twice the bytes and events at 16 apps
    empty = {t["target"]: t for t in targets.evaluate({}) if t["target"].startswith("heap")}
    assert all(t["met"] is None and t["note"].startswith("needs") for t in empty.values())
    text = report.render({**results, "targets": targets.evaluate(results)})
    assert "heapstart: connect()" in text and "heapfanout: the follower's" in text
    # A workload without rows (here heapmem's) has no table, only its target's line.
    assert "heapmem: app memory" not in text and "heapmem: partial app RssAnon" in text


def test_heap_workloads_are_selectable_and_sized_by_the_flags() -> None:
    assert registry.select("heapfanout,heapstart,heapmem") == ["heapstart", "heapmem", "heapfanout"]
    assert set(registry.HEAP_WORKLOADS) <= set(registry.NAMES)
    quick = settings.choose(True, False)
    assert quick.heapstart_sizes == (0, 10_000) and quick.heapfanout_apps == (1, 4)
    large = settings.choose(False, True)
    assert large.heapstart_sizes == (0, 100_000, 1_000_000)
    assert (large.heapmem_objects, large.heapmem_touch) == (1_000_000, 10_000)
    assert settings.FULL.heapfanout_apps == (1, 4, 16)


@pytest.mark.cluster
def test_small_heap_workloads_run_end_to_end(tmp_path: Path) -> None:
    """heapstart, heapmem and heapfanout at tiny sizes through `suite.run`: real agents, real
    app processes in both replicate modes, the follower's /metrics, everything stopped."""
    small = dataclasses.replace(
        QUICK,
        heapstart_sizes=(0, 300),
        heapstart_samples=2,
        heapstart_all_objects_max=300,
        heapmem_objects=300,
        heapmem_touch=30,
        heapfanout_apps=(1, 2),
        heapfanout_objects=5,
        heapfanout_writes=20,
        catchup_batch=100,
    )
    results = run_suite(tmp_path, ["heapstart", "heapmem", "heapfanout"], small)
    start = results["workloads"]["heapstart"]
    assert [(r["objects"], r["replicate"], r["samples"]) for r in start["rows"]] == [
        (0, "partial", 2),
        (0, "all", 2),
        (300, "partial", 2),
        (300, "all", 2),
    ]
    assert start["ratio"] is not None and start["largest"] == 300
    mem = results["workloads"]["heapmem"]
    assert [r["replicate"] for r in mem["rows"]] == ["partial", "all"]
    # Every touched object was read with its own index (the load's layout, seeded choice).
    assert all(r["found"] == r["touched"] == 30 for r in mem["rows"])
    partial_mem = mem["rows"][0]
    assert partial_mem["held_mb"] > 0 and partial_mem["heap_stats"]["loads"] > 0
    fan = {(r["replicate"], r["apps"]): r for r in results["workloads"]["heapfanout"]["rows"]}
    assert set(fan) == {("partial", 1), ("partial", 2), ("all", 1), ("all", 2)}
    # Counts, not timings: a partial app is sent only the writes to what it holds, every full
    # replica every write (plus, in either mode, the odd event of the cluster's own entries
    # that lands in the window: hence ranges).
    assert 1.0 <= fan[("partial", 2)]["events_per_write"] < 1.5
    assert 2.0 <= fan[("all", 2)]["events_per_write"] < 2.5
    assert fan[("partial", 2)]["held_entries"] >= 2 * 5
    judged = [t for t in results["targets"] if t["target"].startswith("heap")]
    assert len(judged) == 5 and all(t["met"] is not None for t in judged)
    assert not (tmp_path / "work").exists()


class _Local:
    """What `serving` reads of a LocalCluster: voter ids, STATUS, log tails."""

    voter_ids = ["a", "b", "c"]

    def __init__(self) -> None:
        self.closed = False

    def status(self, node: str) -> dict[str, Any]:
        if node == "c":
            raise TimeoutError("no answer")
        return {
            "role": "leader" if node == "a" else "follower",
            "leader": "a" if node == "a" else None,
            "term": 2,
            "commit": 40,
            "applied": 40 if node == "a" else 12,
            "members": [{"id": "b", "state": "probe", "match": 12}] if node == "a" else [],
            "dropped": {"peer_send_full": 0, "peer_refused_our_key": 3},
        }

    def logs(self) -> str:
        return "--- agent b ---\nlost the leader"


class _Cluster:
    def __init__(self) -> None:
        self.local = _Local()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_failure_inside_a_heap_cluster_names_each_agents_view_and_closes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CI met a follower that confirmed no read index for 30 s, with nothing said about the
    agents: the error now leads with every agent's view, the log tails are printed, and the
    cluster is closed whatever happened."""
    cluster = _Cluster()
    with pytest.raises(WorkerFailed) as caught, heap_cluster.serving(cluster):
        raise TimeoutError("no agent confirmed a read index")
    text = str(caught.value)
    assert text.startswith("agents at the failure: a: leader leader=a term=2 commit=40")
    assert "progress=['b:probe@12']" in text
    assert "b: follower leader=None" in text and "applied=12" in text
    assert "c: no status (TimeoutError)" in text
    assert "dropped={'peer_refused_our_key': 3}" in text  # zero counters are left out
    assert text.endswith("TimeoutError: no agent confirmed a read index")
    assert "lost the leader" in capsys.readouterr().out
    assert cluster.closed == 1
    with heap_cluster.serving(cluster):
        pass
    assert cluster.closed == 2
