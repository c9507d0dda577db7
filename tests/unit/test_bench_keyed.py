"""The issue-11 workloads of the suite (bigdict, manyroots, disjoint): their summaries, targets,
report tables, the --catchup-objects flag, and one small real run of all three through the
suite's own code against real agent processes.

No timing is asserted anywhere: a benchmark reports numbers, it never fails on a slow machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from superstatic_bench import cli, registry, report, settings, targets
from superstatic_bench.measure import row_from_answers
from superstatic_bench.settings import QUICK
from superstatic_bench.workloads import bigdict, manyroots
from support.bench_run import run_suite


def _answer(calls: int, library: dict[str, int] | None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ops": calls // 2,
        "calls": calls,
        "attempts": 0,
        "errors": {},
        "groups": [[[1000, 2000], 2]],
    }
    if library is not None:
        answer["library"] = library
    return answer


def test_disjoint_row_counts_the_library_retries_of_every_process() -> None:
    answers = [
        _answer(100, {"txn_retries": 30, "conflict_answers": 25, "conflict_errors": 1}),
        _answer(300, {"txn_retries": 10, "conflict_answers": 10, "conflict_errors": 0}),
    ]
    row = row_from_answers("superstatic", "superstatic x3", "disjoint", 2, 16, QUICK, answers)
    assert row["retries"] == 40
    assert row["library"] == {"txn_retries": 40, "conflict_answers": 35, "conflict_errors": 1}
    assert row["calls"] == 400
    assert row["retry_rate"] == pytest.approx(40 / 400)
    # A driver without the library's counters leaves the retries unknown, never 0.
    bare = row_from_answers("etcd", "etcd x3", "disjoint", 1, 16, QUICK, [_answer(10, None)])
    assert bare["retries"] is None and bare["retry_rate"] is None


def _big_row(keys: int, ops_per_s: float) -> dict[str, Any]:
    return {
        "dict_keys": keys,
        "clients": 3,
        "threads": 16,
        "ops_per_s": ops_per_s,
        "latency_us": {"p50": 5000, "p99": 9000, "max": 12000},
        "errors": {},
    }


def test_bigdict_ratio_is_biggest_over_smallest() -> None:
    rows = [_big_row(100_000, 200.0), _big_row(100, 800.0)]
    assert bigdict.ratio(rows) == {"small_keys": 100, "large_keys": 100_000, "ratio": 0.25}
    assert bigdict.ratio(rows[:1])["ratio"] is None
    assert bigdict.ratio([_big_row(100, 0.0), _big_row(100_000, 10.0)])["ratio"] is None


def _roots_outcome() -> dict[str, Any]:
    bulk = {
        "created": 99_980,
        "transactions": 3,
        "batch": 50_000,
        "limits_hit": [{"batch": 100_000, "limit": "TXN_OPS_MAX"}],
        "seconds": 40.0,
    }
    return manyroots.summarize([0.004, 0.002, 0.003], [0.009, 0.006, 0.0065], bulk)


def test_manyroots_summary_compares_the_medians() -> None:
    outcome = _roots_outcome()
    assert outcome["roots_existing"] == 99_983
    assert outcome["first_ms"] == pytest.approx(4.0)
    assert outcome["after_ms"] == pytest.approx(9.0)
    assert outcome["ratio"] == pytest.approx(6.5 / 3.0)
    text = manyroots.render(outcome, markdown=False)
    assert "root 99,984" in text and "TXN_OPS_MAX at 100,000" in text


def _results() -> dict[str, Any]:
    disjoint_row = row_from_answers(
        "superstatic",
        "superstatic x3",
        "disjoint",
        3,
        16,
        QUICK,
        [_answer(90, {"txn_retries": 12, "conflict_answers": 12, "conflict_errors": 0})],
    )
    rows = [_big_row(100, 1000.0), _big_row(100_000, 900.0)]
    return {
        "workloads": {
            "disjoint": {"rows": [disjoint_row]},
            "bigdict": {"rows": rows, "summary": bigdict.ratio(rows)},
            "manyroots": _roots_outcome(),
        }
    }


def test_keyed_targets_are_judged() -> None:
    judged = {t["target"]: t for t in targets.evaluate(_results())}
    big = next(t for name, t in judged.items() if name.startswith("bigdict"))
    assert big["met"] is True and big["gap"] == pytest.approx(0.8 / 0.9)
    roots = next(t for name, t in judged.items() if name.startswith("manyroots"))
    assert roots["met"] is False and roots["gap"] == pytest.approx((6.5 / 3.0) / 1.5)
    disjoint = next(t for name, t in judged.items() if name.startswith("disjoint"))
    assert disjoint["met"] is False and disjoint["measured"] == 12 and disjoint["gap"] is None
    missing = targets.evaluate({"workloads": {}})
    for prefix in ("bigdict", "manyroots", "disjoint"):
        found = next(t for t in missing if t["target"].startswith(prefix))
        assert found["met"] is None and "needs the" in found["note"]


def test_report_renders_the_keyed_sections() -> None:
    results = _results()
    results["targets"] = targets.evaluate(results)
    text = report.render(results)
    assert "disjoint: read-modify-write" in text and "retries/txn" in text
    assert "bigdict: 3 client processes" in text and "100,000 / 100 keys: 0.90" in text
    assert "manyroots: creating a root" in text and "ratio of the medians: 2.17" in text
    markdown = report.render(results, markdown=True)
    assert "| 100,000" in markdown


def test_new_workloads_are_selectable_and_in_the_full_run() -> None:
    assert registry.select("manyroots,bigdict,disjoint") == ["disjoint", "bigdict", "manyroots"]
    everything = registry.select(None)
    for name in ("bigdict", "manyroots", "disjoint", "trace", "catchup"):
        assert name in everything


def test_catchup_objects_flag() -> None:
    assert cli.parse_sizes("1000000") == (1_000_000,)
    assert cli.parse_sizes("5000, 1000000,") == (5_000, 1_000_000)
    for bad in ("0", "-5", "1e6", "20000000"):
        with pytest.raises(ValueError, match="COUNT_MAX"):
            cli.parse_sizes(bad)
    with pytest.raises(ValueError, match="names no count"):
        cli.parse_sizes(" , ")
    chosen = settings.choose(False, True, (1_000_000,))
    assert chosen.catchup_objects == (1_000_000,)
    assert settings.choose(True, True).catchup_objects == (5_000, 1_000_000)


def test_flags_make_the_settings() -> None:
    args = cli.parser().parse_args(
        ["--quick", "--catchup-objects", "1000000", "--agent-args", "--fsync off --trace"]
    )
    chosen = cli.settings_of(args)
    assert chosen.catchup_objects == (1_000_000,)
    assert chosen.agent_args == ("--fsync", "off", "--trace")
    assert chosen.duration_s == QUICK.duration_s
    assert cli.settings_of(cli.parser().parse_args([])).agent_args == ()
    assert cli.settings_of(cli.parser().parse_args(["--threads", "32"])).threads == 32
    assert cli.settings_of(cli.parser().parse_args([])).threads == settings.FULL.threads
    for bad in ("0", "257"):
        with pytest.raises(ValueError, match="THREADS_MAX=256"):
            cli.settings_of(cli.parser().parse_args(["--threads", bad]))


def test_cli_refuses_a_bad_catchup_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--only", "catchup", "--catchup-objects", "lots"])
    assert exc.value.code == 2
    assert "--catchup-objects" in capsys.readouterr().err


@pytest.mark.cluster
def test_small_keyed_workloads_run_end_to_end(tmp_path: Path) -> None:
    """disjoint, bigdict and manyroots at tiny sizes through `suite.run`: real agents, real
    client processes, the library's counters, results and tables written, all stopped."""
    small = dataclasses.replace(
        QUICK,
        duration_s=0.5,
        warmup_s=0.2,
        threads=2,
        bigdict_sizes=(10, 300),
        bigdict_fill_batch=100,
        manyroots_count=60,
        manyroots_samples=3,
        manyroots_batch=25,
        disjoint_clients=2,
        disjoint_threads=2,
    )
    results = run_suite(tmp_path, ["disjoint", "bigdict", "manyroots"], small)
    (row,) = results["workloads"]["disjoint"]["rows"]
    assert row["clients"] == 2 and row["threads"] == 2 and row["calls"] > 0
    assert row["retries"] == row["library"]["txn_retries"] >= 0
    big = results["workloads"]["bigdict"]
    assert [r["dict_keys"] for r in big["rows"]] == [10, 300]
    assert all(r["fill"]["keys"] == r["dict_keys"] and r["ops"] > 0 for r in big["rows"])
    assert big["summary"]["ratio"] is not None
    roots = results["workloads"]["manyroots"]
    assert roots["roots_existing"] == 60 and roots["samples"] == 3
    assert roots["bulk"]["created"] == 57 and roots["bulk"]["transactions"] == 3
    judged = {t["target"].split(":")[0]: t for t in results["targets"]}
    for name in ("bigdict", "manyroots", "disjoint"):
        assert judged[name]["met"] is not None, name
    assert not (tmp_path / "work").exists()


@pytest.mark.cluster
def test_quick_trace_runs_on_the_keyed_cluster(tmp_path: Path) -> None:
    """The per-hop workload end to end (agents --trace, keyed like every suite cluster): both
    rows summarized, and the report's breakdown table printed from them."""
    from superstatic_bench.progress import Progress
    from superstatic_bench.workloads import trace

    outcome = trace.run(tmp_path, True, Progress())
    assert set(outcome["rows"]) == {"leader", "follower"}
    for row in outcome["rows"].values():
        assert row["calls"] == trace.CALLS_QUICK
        assert row["hops"] and row["end_to_end_p50_us"] >= row["traced_p50_us"] > 0
    text = report.render({"workloads": {"trace": outcome}})
    assert "where one call's time goes" in text and "quorum_acked" in text


def test_keyed_ops_are_refused_by_other_drivers_and_bounded() -> None:
    from superstatic_bench.client import Runner, _bounded
    from superstatic_bench.driver import NoDriver, OpFailed

    runner = Runner(NoDriver(), 0)
    with pytest.raises(OpFailed, match="no keyed operations"):
        runner.run({"op": "big_write", "threads": 1, "duration_s": 0.1, "dict_keys": 10})
    assert _bounded({"batch": 5}, "batch", 1, 10) == 5
    assert _bounded({}, "clients", 1, 10, default=1) == 1
    with pytest.raises(ValueError, match=r"batch outside 1\.\.10"):
        _bounded({"batch": 0}, "batch", 1, 10)
    with pytest.raises(KeyError):
        _bounded({}, "batch", 1, 10)
