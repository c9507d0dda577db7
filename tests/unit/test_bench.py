"""The benchmark suite's own logic, and one real quick run of the reads workload.

No timing is asserted anywhere: a benchmark reports numbers, it never fails on a slow machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path

import pytest
from superstatic_bench import cli, registry, report, targets
from superstatic_bench.measure import row_from_answers
from superstatic_bench.settings import QUICK
from superstatic_bench.stats import (
    Reservoir,
    median,
    percentile,
    summarize_groups_us,
    summarize_us,
)
from superstatic_bench.workloads import batches, throughput
from support.bench_run import run_suite


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.5) == 1
    assert percentile([7.0], 50) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 51) == 3
    with pytest.raises(AssertionError):
        percentile([], 50)
    with pytest.raises(AssertionError):
        percentile([1], 0)


def test_summary_and_median() -> None:
    summary = summarize_us([5, 1, 3, 2, 4])
    assert summary["count"] == 5
    assert summary["p50"] == 3
    assert summary["max"] == 5
    assert summary["mean"] == 3
    assert summarize_us([]) == {}
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 2, 3]) == 2.5


def test_weighted_merge_counts_sampled_processes_by_what_they_saw() -> None:
    # Process A saw 1000 operations of 10 us, reported as 10 samples; process B saw 10 of
    # 1000 us, all reported. Of all operations, 99% took 10 us: p50 and p90 are 10, the max
    # and the tail beyond 99% are 1000.
    merged = summarize_groups_us([([10] * 10, 1000), ([1000] * 10, 10)])
    assert merged["count"] == 1010
    assert merged["p50"] == 10
    assert merged["p90"] == 10
    assert merged["p99.9"] == 1000
    assert merged["max"] == 1000
    # Unsampled groups merge like one list.
    values = [random.Random(1).randrange(1000) for _ in range(999)]
    plain = summarize_us(values)
    split = summarize_groups_us([(values[:500], 500), (values[500:], 499)])
    for key in ("p50", "p90", "p99", "max"):
        assert split[key] == plain[key], key
    assert summarize_groups_us([([], 0)]) == {}


def test_reservoir_is_bounded_and_counts_everything() -> None:
    reservoir = Reservoir(capacity=100, seed=3)
    for i in range(10_000):
        reservoir.add(i)
    assert reservoir.seen == 10_000
    assert len(reservoir.values) == 100
    assert len(set(reservoir.values)) == 100
    # A uniform sample of 0..9999 is not stuck on the first values.
    assert max(reservoir.values) > 5_000


def test_workload_selection() -> None:
    assert registry.select(None) == list(registry.NAMES)
    assert registry.select("") == list(registry.NAMES)
    # Suite order, whatever order they are named in; blanks ignored.
    assert registry.select("reads, floors,") == ["floors", "reads"]
    with pytest.raises(ValueError, match=r"unknown workload.*nope"):
        registry.select("reads,nope")


def test_cli_refuses_an_unknown_workload(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "unknown workload" in capsys.readouterr().err


def _answer(ops: int, calls: int, attempts: int, samples: list[int]) -> dict[str, object]:
    return {
        "ops": ops,
        "calls": calls,
        "attempts": attempts,
        "errors": {"Unavailable": 1} if ops == 0 else {},
        "duration_s": QUICK.duration_s,
        "groups": [[samples, len(samples)]],
    }


def test_row_shape_is_json_and_counts_retries() -> None:
    answers = [_answer(100, 110, 150, [900, 1000, 1100]), _answer(0, 0, 0, [])]
    row = row_from_answers("superstatic", "superstatic x3", "rmw", 2, 4, QUICK, answers)
    decoded = json.loads(json.dumps(row))
    assert decoded["ops"] == 100
    assert decoded["ops_per_s"] == pytest.approx(100 / QUICK.duration_s)
    assert decoded["latency_us"]["p50"] == 1000
    assert decoded["errors"] == {"Unavailable": 1}
    assert decoded["retry_rate"] == pytest.approx((150 - 110) / 110)
    for key in ("system", "label", "op", "clients", "threads", "payload_bytes", "duration_s"):
        assert key in decoded
    write = row_from_answers("etcd", "etcd x3", "write", 1, 4, QUICK, answers[:1])
    assert "retry_rate" not in write


def _results() -> dict[str, object]:
    def row(system: str, op: str, clients: int, ops_per_s: float, p50: float) -> dict[str, object]:
        return {
            "system": system,
            "label": system,
            "op": op,
            "clients": clients,
            "threads": 8,
            "ops_per_s": ops_per_s,
            "latency_us": {"p50": p50, "p99": p50 * 2, "max": p50 * 3},
            "errors": {},
        }

    return {
        "workloads": {
            "floors": {"lmdb_fsync_us": {"p50": 200.0}, "zmq_rtt_us": {"p50": 100.0}},
            "sequential": {
                "rows": [
                    row("superstatic", "call", 1, 800, 1000.0),
                    row("etcd", "call", 1, 500, 2000.0),
                ]
            },
            "throughput": {
                "rows": [
                    row("superstatic", "write", 3, 9000, 3000.0),
                    row("etcd", "write", 3, 5000, 5000.0),
                    row("pysyncobj", "write", 3, 8000, 4000.0),
                    row("pysyncobj-batch", "write", 3, 12000, 100000.0),
                ]
            },
            "reads": {"rows": [{"read": "obj.x", "plain_ns": 3.0, "shared_ns": 3.3, "ratio": 1.1}]},
            "failover": {
                "rounds": [{"killed": "a", "new_leader": "b", "failover_s": 2.0, "errors": {}}],
                "failover_s_median": 2.0,
            },
        }
    }


def test_targets_are_judged_with_their_gap() -> None:
    judged = {t["target"]: t for t in targets.evaluate(_results())}
    seq = judged["sequential call p50 < etcd put p50 (us)"]
    assert seq["met"] is True and seq["gap"] == pytest.approx(0.5)
    floor = next(t for name, t in judged.items() if "ZeroMQ round trips" in name)
    assert floor["goal"] == pytest.approx(3 * (200 + 2 * 100))
    assert floor["met"] is True
    etcd = next(t for name, t in judged.items() if "x etcd" in name)
    assert etcd["met"] is False and etcd["gap"] == pytest.approx(10000 / 9000)
    pso = next(t for name, t in judged.items() if "PySyncObj's best mode" in name)
    assert pso["goal"] == 12000 and pso["met"] is False  # against its better (batched) mode
    read = next(t for name, t in judged.items() if "obj.x" in name)
    assert read["met"] is True
    failover = next(t for name, t in judged.items() if "failover" in name)
    assert failover["met"] is False and failover["gap"] == pytest.approx(2.0)


def _catchup_size(
    objects: int, seconds: float, agent_b: float, app_b: float, mode: str | None
) -> dict[str, object]:
    size: dict[str, object] = {
        "objects": objects,
        "catch_up_s": seconds,
        "agent_bytes_per_object": agent_b,
        "app_bytes_per_object": app_b,
    }
    if mode is not None:
        size["app_replicate"] = mode
    return size


def test_issue_11_targets_judge_catch_up_at_1m_and_memory_at_the_largest_size() -> None:
    results = _results()
    sequential = results["workloads"]["sequential"]["rows"]  # type: ignore[index]
    sequential.append({**sequential[0], "system": "pysyncobj", "latency_us": {"p50": 500.0}})
    results["workloads"]["catchup"] = {  # type: ignore[index]
        "sizes": [
            _catchup_size(100_000, 5.0, 800.0, 1500.0, "all"),
            _catchup_size(1_000_000, 60.0, 700.0, 900.0, "all"),
        ]
    }
    judged = {t["target"]: t for t in targets.evaluate(results)}
    pso = next(t for name, t in judged.items() if "x PySyncObj immediate" in name)
    assert pso["goal"] == pytest.approx(750.0) and pso["met"] is False  # 1,000 us vs 1.5 x 500
    catch_up = judged["catch-up of 1,000,000 objects < 15 s"]
    assert catch_up["met"] is False and catch_up["gap"] == pytest.approx(4.0)
    agent = judged["agent memory per object <= 400 B, at 1,000,000 objects (B)"]
    assert agent["measured"] == 700.0 and agent["met"] is False
    app = judged[
        (
            "app memory per object, full replica <= 1024 B, the catch-up app's VmRSS growth (the "
            "library's own cost included), at 1,000,000 objects (B)"
        )
    ]
    assert app["measured"] == 900.0 and app["met"] is True
    # At 100,000 only, catch-up is not judged (it grows with the count), memory is, and an app
    # whose replica the results do not name (runs before it was recorded) is not judged.
    results["workloads"]["catchup"] = {  # type: ignore[index]
        "sizes": [_catchup_size(100_000, 5.0, 800.0, 1500.0, None)]
    }
    judged = {t["target"]: t for t in targets.evaluate(results)}
    assert judged["catch-up of 1,000,000 objects < 15 s"]["met"] is None
    assert "--large" in judged["catch-up of 1,000,000 objects < 15 s"]["note"]
    assert judged["agent memory per object <= 400 B, at 100,000 objects (B)"]["met"] is False
    app = judged[
        "app memory per object, full replica <= 1024 B, the catch-up app's VmRSS growth (the "
        "library's own cost included), at 100,000 objects (B)"
    ]
    assert app["met"] is None and "full-replica" in app["note"]


def test_issue_11_app_memory_is_judged_at_the_margin_too_by_heapmems_full_replica_row() -> None:
    """The heapmem 'all' row: RssAnon above an app connected to an empty cluster, per object."""
    label = (
        "app memory per object, full replica <= 1024 B, heapmem 'all' RssAnon above an empty "
        "app, at 100,000 objects (B)"
    )
    partial = {"replicate": "partial", "objects": 100_000, "above_empty_anon_mb": 0.7}
    rows = [partial, {"replicate": "all", "objects": 100_000, "above_empty_anon_mb": 86.0}]
    judged = {t["target"]: t for t in targets.evaluate({"workloads": {"heapmem": {"rows": rows}}})}
    assert judged[label]["measured"] == pytest.approx(860.0) and judged[label]["met"] is True
    rows[1]["above_empty_anon_mb"] = 131.7
    judged = {t["target"]: t for t in targets.evaluate({"workloads": {"heapmem": {"rows": rows}}})}
    assert judged[label]["met"] is False and judged[label]["gap"] == pytest.approx(1317 / 1024)
    # Without a full-replica row (a partial-only run) the target is not judged.
    judged = {
        t["target"]: t for t in targets.evaluate({"workloads": {"heapmem": {"rows": rows[:1]}}})
    }
    missing = [t for name, t in judged.items() if "heapmem 'all'" in name]
    assert [t["met"] for t in missing] == [None] and "full-replica row" in missing[0]["note"]


def test_plain_figures_are_never_in_exponent_form() -> None:
    assert report._plain(1558.4) == "1,558" and report._plain(1024) == "1,024"
    assert report._plain(0.893) == "0.893" and report._plain(12.34) == "12.3"


def test_lines_under_a_markdown_table_are_a_blank_line_apart() -> None:
    """GitHub reads a line right under a table as one more row of it."""
    text = report.with_notes(report.table(["a"], [[1]], markdown=True), ["ratio 1"], True)
    assert text.endswith("| 1 |\n\nratio 1")
    assert report.with_notes("x", ["y"], False) == "x\ny"


def test_client_0_can_be_placed_at_the_follower_after_the_leader(tmp_path: Path) -> None:
    """The curve workload compares two clusters: its one sequential client must sit at the
    same role in both (not at agent a, the leader of one of them by chance)."""
    from superstatic_bench.systems import SuperstaticCluster

    cluster = SuperstaticCluster(tmp_path, keyed=False, name="x")  # not started: no process
    ends = cluster.local.client_endpoints()
    assert cluster.endpoints(0)[0] == ends[0]
    for leader, after in (("a", "b"), ("b", "c"), ("c", "a")):
        cluster.leader = leader
        assert cluster.first_client_at_a_follower() == after
        first = cluster.endpoints(0)
        assert first[0] == ends["abc".index(after)] and sorted(first) == sorted(ends)
        assert {cluster.endpoints(i)[0] for i in range(3)} == set(ends)  # still one per agent


def test_targets_without_measurements_say_what_is_missing() -> None:
    judged = targets.evaluate({"workloads": {}})
    assert all(t["met"] is None for t in judged)
    assert all(t["note"] for t in judged)


def test_report_renders_every_section() -> None:
    results = _results()
    results["targets"] = targets.evaluate(results)
    results["notes"] = ["a note"]
    results["skipped"] = {"redis": "redis-server not found: apt-get install -y redis-server"}
    text = report.render(results)
    for expected in ("floors", "sequential", "throughput", "local reads", "failover", "targets"):
        assert expected in text, expected
    assert "apt-get install -y redis-server" in text
    markdown = report.render(results, markdown=True)
    assert "| superstatic" in markdown


@pytest.mark.cluster
def test_quick_reads_run_end_to_end(tmp_path: Path) -> None:
    """A real `superstatic bench --quick --only reads`: 3 agents, a client process, the reads
    measured through real proxies, results written, everything stopped."""
    out = tmp_path / "out"
    code = cli.main(
        ["--quick", "--only", "reads", "--out", str(out), "--no-plots",
         "--work-dir", str(tmp_path / "work")]
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert code == 0, results.get("errors")
    assert results["selected"] == ["reads"]
    rows = results["workloads"]["reads"]["rows"]
    assert [r["read"] for r in rows] == [label for label, _ in _reads_labels()]
    for r in rows:
        assert r["plain_ns"] >= 0 and r["shared_ns"] >= 0
    assert any(t["target"].startswith("proxied read") and t["met"] is not None
               for t in results["targets"])  # fmt: skip
    # The work folder is removed (data, logs) once the run is over.
    assert not (tmp_path / "work").exists()


def _reads_labels() -> tuple[tuple[str, str], ...]:
    from superstatic_bench.workloads.reads import READS

    return READS


def test_failover_counts_only_writes_started_after_the_kill() -> None:
    from superstatic_bench.workloads.failover import ack_timing

    killed_at = 100.0
    acks = [
        [99.0, 99.5],  # done before the kill
        [99.9, 100.01],  # in flight at the kill, acknowledged 10 ms after it
        [99.95, 105.0],  # in flight, acknowledged 5 s after it
        [100.2, 100.9],  # the first fresh write: 0.9 s after the kill
        [100.5, 101.2],
    ]
    timing = ack_timing(acks, killed_at)
    assert timing["failover_s"] == pytest.approx(0.9)
    assert timing["in_flight_at_kill"] == 2
    assert timing["in_flight_acked_s_max"] == pytest.approx(5.0)
    assert timing["acks_before_kill"] == 1
    assert timing["acks_after_kill"] == 2
    none = ack_timing([[99.0, 99.5]], killed_at)
    assert none["failover_s"] is None and none["in_flight_acked_s_max"] is None


def test_a_missing_peer_server_is_skipped_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from superstatic_bench.peers import etcd_peer, install, redis_peer

    # The Python side present (whatever this environment has), the servers absent.
    monkeypatch.setattr(install, "_missing_modules", lambda names: [])
    monkeypatch.setattr(redis_peer, "server_path", lambda: None)
    monkeypatch.setattr(etcd_peer, "server_path", lambda: None)
    redis_reason = install.check("redis", install=False)
    etcd_reason = install.check("etcd", install=False)
    assert redis_reason is not None and "apt-get install -y redis-server" in redis_reason
    assert etcd_reason is not None and "apt-get install -y etcd-server" in etcd_reason


def test_report_keeps_catch_up_numbers_when_the_app_load_fails() -> None:
    agent_side = {
        "objects": 1_000_000,
        "load": {"objects_per_s": 4716.0},
        "agent": "a",
        "catch_up_s": 48.3,
        "disk": {"allocated_bytes": 260_000_000, "apparent_bytes": 260_000_000},
        "agent_bytes_per_object": 480.0,
        "app_error": "worker catchup-app: Unavailable: applied only up to 0 after 30.0 s",
    }
    results = {
        "workloads": {
            "catchup": {"sizes": [agent_side, {"objects": 5, "error": "TimeoutError: boom"}]}
        }
    }
    text = report.render(results)
    assert "48.30 s" in text and "failed" in text
    assert "the app could not load" in text and "TimeoutError: boom" in text


def test_trace_rows_summarize_and_render() -> None:
    from superstatic_bench.workloads import trace as trace_workload

    from superstatic.protocol import trace as proto

    calls = []
    for i in range(1, 11):
        stamps = {name: k * i for k, name in enumerate(proto.CHAIN)}
        assembled = proto.assemble(stamps)
        calls.append({**assembled, "end_to_end_ns": assembled["total_ns"] + 5})
    row = trace_workload.summarize(calls)
    assert [h["hop"] for h in row["hops"]] == list(proto.HOPS)
    assert all(h["p50_us"] >= 0 and h["p99_us"] >= h["p50_us"] for h in row["hops"])
    assert row["end_to_end_p50_us"] >= row["traced_p50_us"]
    row["agent"] = "a"
    text = report.render({"workloads": {"trace": {"rows": {"leader": row}}}})
    assert "where one call's time goes" in text and "sum of hop p50s" in text


def _cpu_procs() -> list[throughput.Proc]:
    return [
        throughput.Proc("agent a", "leader", 11),
        throughput.Proc("agent b", "follower", 12),
        throughput.Proc("agent c", "follower", 13),
        throughput.Proc("client 0", "client", 21),
    ]


def test_cpu_per_op_and_saturation_arithmetic() -> None:
    """Two samples 10 s apart, 2,000 writes between them: each process's CPU over the window
    per write, the total, the cores used, the machine's busy share and the CPU-bound rate."""
    procs = _cpu_procs()
    before = throughput.Sample((5.0, 3.0, 3.0, 1.0), machine_busy_s=100.0, machine_total_s=400.0)
    # Leader 4 s, followers 2 s and 3 s, the client 1 s; the machine 19 of 20 core-seconds busy.
    after = throughput.Sample((9.0, 5.0, 6.0, 2.0), machine_busy_s=119.0, machine_total_s=420.0)
    cpu = throughput.summarize(procs, before, after, ops=2000, wall_s=10.0, cores_n=2)
    assert cpu is not None
    by_name = {p["name"]: p for p in cpu["processes"]}
    assert by_name["agent a"]["cpu_s"] == 4.0
    assert by_name["agent a"]["ms_per_op"] == 2.0  # 4 s / 2,000 writes
    assert by_name["agent b"]["ms_per_op"] == 1.0
    assert by_name["agent c"]["cores"] == 0.3
    assert throughput.by_role(cpu, "follower") == [1.0, 1.5]
    assert throughput.by_role(cpu, "client") == [0.5]
    assert cpu["total_cpu_s"] == 10.0
    assert cpu["total_ms_per_op"] == 5.0
    assert cpu["cores_used"] == 1.0
    assert cpu["utilization"] == 0.5
    assert cpu["ops_per_s_cpu_bound"] == 400.0  # 2 cores / 5 ms per write
    assert cpu["machine_busy"] == 0.95
    assert cpu["saturated"] is True
    # The same processes on a machine with room to spare: not saturated.
    idle = throughput.Sample(after.process_s, machine_busy_s=110.0, machine_total_s=420.0)
    calm = throughput.summarize(procs, before, idle, ops=2000, wall_s=10.0, cores_n=2)
    assert calm is not None and calm["machine_busy"] == 0.5 and calm["saturated"] is False


def test_cpu_accounting_skips_unreadable_processes_and_zero_ops() -> None:
    procs = _cpu_procs()
    before = throughput.Sample((1.0, None, 1.0, 1.0), None, None)
    after = throughput.Sample((2.0, 2.0, None, 1.5), None, None)
    cpu = throughput.summarize(procs, before, after, ops=0, wall_s=2.0, cores_n=2)
    assert cpu is not None
    assert [p["name"] for p in cpu["processes"]] == ["agent a", "client 0"]
    assert cpu["total_cpu_s"] == 1.5 and cpu["cores_used"] == 0.75
    # No operation counted: no per-op figures, and no machine figures without /proc/stat.
    assert cpu["total_ms_per_op"] is None and cpu["ops_per_s_cpu_bound"] is None
    assert cpu["processes"][0]["ms_per_op"] is None
    assert cpu["machine_busy"] is None and cpu["saturated"] is None
    nothing = throughput.Sample((None,) * 4, None, None)
    assert throughput.summarize(procs, nothing, after, 10, 2.0, 2) is None
    with pytest.raises(ValueError, match="wall_s"):
        throughput.summarize(procs, before, after, 10, 0.0, 2)


def test_cpu_of_a_live_process_is_read_from_proc() -> None:
    """This process's own CPU grows while it computes; the machine's busy time is below its
    total; a pid that does not exist reads as None."""
    me = throughput.Proc("me", "client", os.getpid())
    first = throughput.sample([me])
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    second = throughput.sample([me])
    assert first.process_s[0] is not None and second.process_s[0] is not None
    assert second.process_s[0] >= first.process_s[0]
    assert first.machine_busy_s is not None and first.machine_total_s is not None
    assert 0 < first.machine_busy_s <= first.machine_total_s
    assert throughput.process_cpu_s(2**22 + 1) is None  # above Linux's largest pid
    assert throughput.cores() >= 1


def test_report_renders_the_cpu_of_throughput_rows() -> None:
    results = _results()
    procs = _cpu_procs()
    before = throughput.Sample((5.0, 3.0, 3.0, 1.0), 100.0, 400.0)
    after = throughput.Sample((9.0, 5.0, 6.0, 2.0), 119.0, 420.0)
    row = results["workloads"]["throughput"]["rows"][0]  # type: ignore[index]
    row["cpu"] = throughput.summarize(procs, before, after, 2000, 10.0, 2)
    text = report.render(results)
    assert "is it CPU-bound?" in text
    line = next(
        x for x in text.splitlines() if x.startswith("superstatic") and "1.000 / 1.500" in x
    )
    for cell in ("2.000", "0.500", "5.000", "1.00 of 2", "95% (yes)", "400"):
        assert cell in line, cell
    assert "| superstatic" in report.render(results, markdown=True)
    # Rows without a cpu record (results from before it, or no /proc) render as before.
    del row["cpu"]
    assert "is it CPU-bound?" not in report.render(results)


def _status(role: str, applied: int, syncs: int, **counters: int) -> dict[str, object]:
    return {"role": role, "applied": applied, "syncs": syncs, "counters": counters}


def test_batch_counters_arithmetic() -> None:
    """STATUS at both edges of a window of 1,000 writes: at the leader 100 PROPOSE_MANY frames
    carried 900 of the 1,000 proposals, 50 Readies applied 1,000 entries with 80 fsyncs; a
    follower's 40 Readies applied 1,000 with 40 fsyncs; an agent read at one edge only is left
    out."""
    before = {
        "a": batches.counters(
            _status("leader", 10, 5, proposed=10, readies=7, propose_many_frames=1,
                    propose_many_items=4)
        ),
        "b": batches.counters(_status("follower", 10, 3, readies=4)),
        "c": batches.counters(_status("follower", 10, 3, readies=4)),
    }  # fmt: skip
    after = {
        "a": batches.counters(
            _status("leader", 1010, 85, proposed=1010, readies=57, propose_many_frames=101,
                    propose_many_items=904, reply_many_frames=50, reply_many_items=600)
        ),
        "b": batches.counters(_status("follower", 1010, 43, readies=44)),
    }  # fmt: skip
    record = batches.summarize(before, after, ops=1000)
    assert record is not None
    assert record["proposals_per_propose_many"] == 9.0
    assert record["lone_propose_share"] == 0.1
    assert record["answers_per_reply_many"] == 12.0 and record["reply_many_share"] == 0.6
    by_id = {a["agent"]: a for a in record["agents"]}
    assert sorted(by_id) == ["a", "b"]
    assert by_id["a"]["entries_per_ready"] == 20.0 and by_id["a"]["syncs_per_write"] == 0.08
    assert by_id["b"]["entries_per_ready"] == 25.0 and by_id["b"]["syncs_per_write"] == 0.04
    assert batches.summarize(before, {}, ops=1000) is None
    # What a turn carries (8.12): 1,000 writes over 100 leader turns and 80 APPENDs of 900
    # entries; the follower took 80 APPENDs in 125 turns and sent 100 acks.
    before["a"].update(turns=10, appends_sent=5, append_entries_sent=50)
    before["b"].update(turns=5, appends_received=5, acks_sent=5)
    after["a"].update(turns=110, appends_sent=85, append_entries_sent=950)
    after["b"].update(turns=130, appends_received=85, acks_sent=105)
    turned = batches.summarize(before, after, ops=1000)
    assert turned is not None and turned["entries_per_append"] == 11.25
    by_id = {a["agent"]: a for a in turned["agents"]}
    assert by_id["a"]["writes_per_turn"] == 10.0 and by_id["b"]["writes_per_turn"] == 8.0
    assert by_id["b"]["acks_per_append"] == 1.25 and by_id["a"]["acks_per_append"] is None
    # No Readies, no frames: no ratio, not a division by zero.
    idle = batches.summarize(before, before, ops=0)
    assert idle is not None and idle["proposals_per_propose_many"] is None
    assert idle["agents"][0]["entries_per_ready"] is None


def test_report_renders_the_batches_of_throughput_rows() -> None:
    results = _results()
    row = results["workloads"]["throughput"]["rows"][0]  # type: ignore[index]
    before = {"a": batches.counters(_status("leader", 0, 0))}
    after = {
        "a": batches.counters(
            _status("leader", 9000, 900, proposed=9000, readies=600, propose_many_frames=900,
                    propose_many_items=8100, reply_many_frames=400, reply_many_items=5200)
        )
    }  # fmt: skip
    row["batches"] = batches.summarize(before, after, 9000)
    text = report.render(results)
    assert "what a Ready and a frame carry" in text
    line = next(x for x in text.splitlines() if x.startswith("superstatic") and "15.0" in x)
    for cell in ("9,000", "9.0", "10%", "15.0", "0.100", "13.0"):
        assert cell in line, cell
    assert "writes per turn" in text and "entries per APPEND" in text
    del row["batches"]
    assert "what a Ready and a frame carry" not in report.render(results)


@pytest.mark.cluster
def test_throughput_rows_account_the_cpu_of_agents_and_clients(tmp_path: Path) -> None:
    """A small real `throughput` run through `suite.run`: the 2-client row carries the CPU of
    the leader, both followers and both client processes over its window."""
    small = dataclasses.replace(QUICK, duration_s=1.0, warmup_s=0.3, threads=2, client_counts=(2,))
    results = run_suite(tmp_path, ["throughput"], small)
    (row,) = results["workloads"]["throughput"]["rows"]
    cpu = row["cpu"]
    assert row["ops"] > 0 and cpu["ops"] == row["ops"]
    assert sorted(p["role"] for p in cpu["processes"]) == [
        "client", "client", "follower", "follower", "leader"
    ]  # fmt: skip
    assert all(p["cpu_s"] >= 0 for p in cpu["processes"])
    assert cpu["total_cpu_s"] > 0 and cpu["total_ms_per_op"] > 0
    assert cpu["wall_s"] > 0 and cpu["cores"] >= 1
    assert cpu["saturated"] in (True, False)
    assert "is it CPU-bound?" in report.render(results)
    # The agents' batch counters over the same window (workloads/batches.py).
    counted = row["batches"]
    assert sorted(a["role"] for a in counted["agents"]) == ["follower", "follower", "leader"]
    assert all(a["applied"] > 0 and a["readies"] > 0 for a in counted["agents"])
    assert all(a["entries_per_ready"] > 0 for a in counted["agents"])
    assert all(a["turns"] > 0 and a["writes_per_turn"] > 0 for a in counted["agents"])
    (lead,) = (a for a in counted["agents"] if a["role"] == "leader")
    assert lead["appends_sent"] > 0 and counted["entries_per_append"] >= 1
    assert all(
        a["appends_received"] > 0 and a["acks_sent"] > 0
        for a in counted["agents"]
        if a["role"] == "follower"
    )
    assert (
        counted["proposals_per_propose_many"] is None or counted["proposals_per_propose_many"] > 1
    )
    assert "what a Ready and a frame carry" in report.render(results)
