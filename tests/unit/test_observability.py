"""The pure parts of issue 16: histograms and their Prometheus form, the recorder's hooks, JSON
logs and the repeat limit, INSPECT request parsing, the inspect command's paths, library stats.
The agent-facing parts (HTTP port, INSPECT answers) are in test_ops_agent.py."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from superstatic_agent import logs
from superstatic_agent.config import AgentConfig, BadMetricsAddress, parse_metrics_address
from superstatic_agent.metrics import LATENCY_BOUNDS_S, Buckets, Recorder
from superstatic_agent.raft.types import Ready, Role
from superstatic_agent.statemachine import Applied

from superstatic.objects import stats as library_stats
from superstatic.protocol import wire
from superstatic.protocol.errors import ProtocolError
from superstatic.tools.inspect import PathError, parse_steps, split_path

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent"


# -- histograms ------------------------------------------------------------------------------


def test_buckets_count_by_inclusive_upper_bound_and_estimate_quantiles() -> None:
    b = Buckets((1.0, 2.0, 4.0))
    for value in (0.5, 1.0, 1.5, 2.0, 3.0, 100.0):
        b.observe(value)
    frozen = b.frozen()
    # le=1: 0.5 and 1.0; le=2: 1.5, 2.0; le=4: 3.0; +Inf: 100.
    assert frozen.counts == (2, 2, 1, 1)
    assert frozen.cumulative() == [("1.0", 2.0), ("2.0", 4.0), ("4.0", 5.0), ("+Inf", 6.0)]
    assert frozen.count == 6 and frozen.total == pytest.approx(108.0)
    assert frozen.quantile(0.5) == pytest.approx(1.5)  # rank 3 of 6: half way into (1, 2]
    assert frozen.quantile(1.0) == 4.0  # beyond the last bound: the last bound
    assert Buckets((1.0,)).frozen().quantile(0.5) is None
    b.reset()
    assert b.frozen().count == 0


def _applied(index: int, outcome: str) -> Applied:
    return Applied(index=index, kind="txn", client="c", seq=index, outcome=outcome)


def _ready(role: Role, leader: str | None, term: int, n_entries: int = 0) -> Ready:
    return Ready(
        hard_state=None,
        entries=tuple(object() for _ in range(n_entries)),  # type: ignore[misc]
        snapshot=None,
        messages=(),
        committed=(),
        read_states=(),
        role=role,
        leader=leader,
        term=term,
    )


def test_recorder_counts_outcomes_leader_changes_and_latency() -> None:
    rec = Recorder("a", timeout_ms_proposal=30_000, publishing=False)
    rec.on_ready(
        _ready(Role.FOLLOWER, "b", 1, 3), [_applied(1, "ok"), _applied(2, "conflict")], 0.01
    )
    rec.on_ready(_ready(Role.FOLLOWER, "b", 1), [_applied(3, "ok")], None)
    rec.on_ready(_ready(Role.CANDIDATE, None, 2), [], None)
    rec.on_ready(_ready(Role.LEADER, "a", 2), [], None)
    assert rec.applied_by_outcome == {"ok": 2, "conflict": 1}
    assert rec.leader_changes == 2  # b in term 1, a in term 2; losing one is not a change
    kinds = [e["text"] for e in rec.events]
    assert kinds == [
        "b is the leader in term 1",
        "lost the leader b (term 2)",
        "a became leader in term 2",
    ]
    assert rec.batch_entries.frozen().count == 1 and rec.write_seconds.frozen().count == 1
    # A waiter's deadline is its arrival + timeout: latency = now - arrival.
    rec.on_answered(deadline=100.0 + 30.0, outcome="ok", now=100.004)
    assert rec.commit_latency.frozen().counts[LATENCY_BOUNDS_S.index(0.005)] == 1
    rec.on_error("busy")
    rec.on_sync(0.0002)
    assert rec.errors_by_code == {"busy": 1} and rec.fsync_seconds.frozen().counts[0] == 1
    rec.housekeeping(10**9)  # one history point: the interval's rates and quantiles
    point = rec.history[-1]
    assert point["p50_ms"] is not None and 4.0 <= point["p99_ms"] <= 5.0
    assert rec.recent()["leader_changes"] == 2
    assert rec.published is None  # nothing is published without --metrics


def test_the_prometheus_text_parses_and_names_what_the_issue_asks_for(tmp_path: Path) -> None:
    """A Published snapshot rendered through prometheus_client, parsed back by its parser."""
    from superstatic_agent.metrics import Published, StateCollector

    rec = Recorder("a", timeout_ms_proposal=30_000, publishing=True)
    rec.on_answered(deadline=30.0, outcome="ok", now=0.002)
    status = {
        "id": "a",
        "role": "leader",
        "voter": True,
        "leader": "a",
        "term": 3,
        "commit": 10,
        "applied": 10,
        "log_first": 1,
        "log_last": 10,
        "members": [
            {"id": "a", "voter": True, "match": 10, "lag": 0},
            {"id": "b", "voter": True, "match": 7, "lag": 3},
        ],
        "dropped": {"client_bad_frame": 2},
        "disk_bytes": 4096,
        "syncs": 5,
        "clients": {"proposals_waiting": 1, "reads_waiting": 0, "subscribers": 2},
        "counters": {"proposed": 9, "proposed_again": 0, "readies": 20},
        "uptime_s": 1.5,
        "fsync": True,
        "halted": None,
        "store": {"map_bytes": 1 << 30, "used_bytes": 8192, "free_bytes": 1 << 29, "full": False},
    }
    facts = {
        "log_bytes": 900,
        "sessions": 4,
        "snapshot_index": 0,
        "snapshot_bytes": 12288,
        "snapshot_age_s": 1.0,
        "subscriber_backlog_bytes": 100,
        "subscriber_backlog_bytes_largest": 60,
        "leader_changes": 1,
        "snapshots_installed": 0,
    }
    rec.published = Published(
        mono=0.0,
        wall_ms=0,
        status=status,
        facts=facts,
        counts={
            "entries_applied": {"ok": 9, "noop": 1},
            "proposal_replies": {"ok": 1},
            "errors": {},
            "log_lines_suppressed": {},
        },
        histograms={
            "commit_latency_seconds": rec.commit_latency.frozen(),
            "storage_write_seconds": rec.write_seconds.frozen(),
            "fsync_seconds": rec.fsync_seconds.frozen(),
            "append_batch_entries": rec.batch_entries.frozen(),
            "apply_batch_entries": rec.apply_batch_entries.frozen(),
        },
        history=(),
        events=(),
        roots=None,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(rec))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("superstatic_term", ())] == 3
    assert samples[("superstatic_is_leader", ())] == 1
    assert samples[("superstatic_member_lag_entries", (("member", "b"),))] == 3
    assert samples[("superstatic_member_match_index", (("member", "b"),))] == 7
    assert samples[("superstatic_entries_applied_total", (("outcome", "ok"),))] == 9
    assert samples[("superstatic_frames_refused_total", (("reason", "client_bad_frame"),))] == 2
    assert samples[("superstatic_commit_latency_seconds_count", ())] == 1
    assert samples[("superstatic_commit_latency_seconds_bucket", (("le", "0.002"),))] == 1
    assert samples[("superstatic_store_free_bytes", ())] == 1 << 29
    assert samples[("superstatic_sessions", ())] == 4
    assert samples[("superstatic_subscriber_backlog_bytes", ())] == 100
    assert samples[("superstatic_role", (("role", "leader"),))] == 1
    assert samples[("superstatic_role", (("role", "follower"),))] == 0
    assert samples[("superstatic_leader_changes_total", ())] == 1
    for name in ("log_bytes", "snapshot_bytes", "snapshot_age_seconds", "status_age_seconds"):
        assert ("superstatic_" + name, ()) in samples, name


# -- the --metrics address -----------------------------------------------------------------------


def test_metrics_address_binds_loopback_unless_insecure(tmp_path: Path) -> None:
    assert parse_metrics_address("127.0.0.1:9100", insecure=False) == ("127.0.0.1", 9100)
    assert parse_metrics_address("[::1]:9100", insecure=False) == ("::1", 9100)
    assert parse_metrics_address("localhost:0", insecure=False) == ("localhost", 0)
    with pytest.raises(BadMetricsAddress, match="--insecure"):
        parse_metrics_address("0.0.0.0:9100", insecure=False)
    with pytest.raises(BadMetricsAddress, match="--insecure"):
        parse_metrics_address("metrics.example:9100", insecure=False)
    assert parse_metrics_address("0.0.0.0:9100", insecure=True) == ("0.0.0.0", 9100)
    for bad in ("9100", ":9100", "host:", "host:99999", "host:x"):
        with pytest.raises(BadMetricsAddress):
            parse_metrics_address(bad, insecure=True)
    with pytest.raises(ValueError, match="--insecure"):
        AgentConfig("a", tmp_path, {"a": "tcp://127.0.0.1:1"}, "tcp://127.0.0.1:2",
                    metrics_endpoint="10.0.0.1:9100")  # fmt: skip
    with pytest.raises(ValueError, match="log format"):
        AgentConfig("a", tmp_path, {"a": "tcp://127.0.0.1:1"}, "tcp://127.0.0.1:2",
                    log_format="xml")  # fmt: skip


# -- logs ------------------------------------------------------------------------------------------


def _record(msg: str, *args: Any, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("superstatic.agent", level, __file__, 1, msg, args, None)


def test_json_lines_carry_a_stable_event_and_named_fields() -> None:
    fmt = logs.JsonFormatter("b")
    line = json.loads(fmt.format(_record("following leader %s in term %d", "a", 4)))
    assert line["event"] == "following_leader" and line["agent"] == "b"
    assert line["fields"] == {"leader": "a", "term": 4}
    assert line["level"] == "info" and line["msg"] == "following leader a in term 4"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    dropped = json.loads(fmt.format(_record("%s", "dropped client_bad_frame: garbage")))
    assert dropped["event"] == "frame_dropped" and dropped["fields"] == {
        "category": "client_bad_frame"
    }
    other = json.loads(fmt.format(_record("something %d odd happened", 3)))
    assert other["event"] == "something_odd_happened" and other["fields"] == {"args": [3]}
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = _record("became leader in term %d", 2, level=logging.ERROR)
        rec.exc_info = sys.exc_info()
        with_exc = json.loads(fmt.format(rec))
    assert "RuntimeError: boom" in with_exc["exc"] and with_exc["event"] == "became_leader"


def test_every_named_event_is_a_format_string_the_agent_logs() -> None:
    """Rewording a line must update logs.EVENTS too, or its event name would drift."""
    source = "".join(p.read_text() for p in AGENT_DIR.glob("*.py"))
    flat = re.sub(r'"\s*\n\s*"', "", source)  # implicit concatenation of string literals
    for template in logs.EVENTS:
        assert f'"{template}"' in flat, template


def test_repeated_lines_are_limited_counted_and_summed_up() -> None:
    now = [0.0]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("a"))
    limit = logs.RepeatLimit(
        handler, repeats_max=3, window_s=60.0, keys_max=2, clock=lambda: now[0]
    )
    handler.addFilter(limit)
    for i in range(10):
        handler.handle(_record("connected to member %s at %s", "b", str(i)))
    handler.handle(_record("became leader in term %d", 1))  # another line: its own budget
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == [
        "member_connected"
    ] * 3 + ["became_leader"]
    assert limit.suppressed == {"member_connected": 7}
    # Beyond keys_max distinct lines per window: written, not tracked.
    for _ in range(5):
        handler.handle(_record("repair: %s", "x"))
    assert out.getvalue().count('"store_repair"') == 5
    now[0] = 61.0  # the window ends at the next line: one summary per limited line
    handler.handle(_record("became leader in term %d", 2))
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    summary = [x for x in lines if x["event"] == "log_suppressed"]
    assert len(summary) == 1 and summary[0]["fields"]["count"] == 7
    assert summary[0]["fields"]["of_event"] == "member_connected"
    assert lines[-1]["event"] == "became_leader"


def test_configure_switches_the_root_logger_between_text_and_json() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        out = io.StringIO()
        logs.configure("c", "info", "json", stream=out)
        logging.getLogger("superstatic.agent").info("became leader in term %d", 7)
        assert json.loads(out.getvalue())["fields"] == {"term": 7}
        out = io.StringIO()
        logs.configure("c", "info", "text", stream=out)
        logging.getLogger("superstatic.agent").info("became leader in term %d", 8)
        assert out.getvalue().rstrip().endswith("agent c INFO became leader in term 8")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


# -- INSPECT requests and paths ----------------------------------------------------------------


def _inspect(body: Any) -> wire.InspectRequest:
    return wire.parse_inspect(wire.Frame(wire.FrameType.INSPECT, 1, body))


def test_inspect_bodies_are_checked() -> None:
    assert _inspect({"root": "r"}).legacy
    assert not _inspect({"root": "r", "path": []}).legacy
    assert _inspect({"root": "r", "path": ["a", 3, -1]}).path == ("a", 3, -1)
    assert _inspect({"oid": "x.1", "depth": 0}).depth == 0
    assert _inspect({"list": True, "limit": 5}).limit == 5
    bad = [
        {},
        {"root": "r", "oid": "x"},
        {"list": False},
        {"list": 1},
        {"root": "r", "path": "a.b"},
        {"root": "r", "path": [True]},
        {"root": "r", "path": [1.5]},
        {"root": "r", "path": [1 << 64]},
        {"root": "r", "path": ["x"] * (wire.INSPECT_PATH_STEPS_MAX + 1)},
        {"root": "r", "path": ["k" * (wire.INSPECT_KEY_CHARS_MAX + 1)]},
        {"root": "r" * (wire.ROOT_NAME_CHARS_MAX + 1)},
        {"oid": "x", "depth": wire.INSPECT_DEPTH_MAX + 1},
        {"list": True, "limit": 0},
        {"oid": ""},
    ]
    for body in bad:
        with pytest.raises(ProtocolError):
            _inspect(body)


def test_paths_split_at_the_longest_root_and_parse_their_steps() -> None:
    assert parse_steps('.users[3].name["a b"][-1]') == ["users", 3, "name", "a b", -1]
    assert parse_steps("['x']") == ["x"]
    roots = ["config", "billing.ledger", "billing"]
    assert split_path("billing.ledger.total", roots) == ("billing.ledger", ["total"])
    assert split_path("billing.x", roots) == ("billing", ["x"])
    assert split_path("config", roots) == ("config", [])
    assert split_path("configs.x", roots) == ("configs.x", [])  # no root: asked as a name
    for bad in ("config.", "config[x]", "config[1"):
        with pytest.raises(PathError):
            split_path(bad, roots)


# -- library stats ---------------------------------------------------------------------------


def test_library_stats_reach_the_apps_registry() -> None:
    before = library_stats.stats()
    library_stats.STATS.committed("ok", 0.003)
    library_stats.STATS.committed("conflict", 0.5)
    library_stats.STATS.note("txn_retries")
    after = library_stats.stats()
    assert after["commit_seconds"]["count"] == before["commit_seconds"]["count"] + 2
    assert after["txn_retries"] == before["txn_retries"] + 1
    registry = CollectorRegistry()
    assert library_stats.metrics(registry) is library_stats.metrics(registry)  # once per registry
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "superstatic_client_commit_seconds" in families
    commits = {s.labels["outcome"]: s.value for s in families["superstatic_client_commits"].samples}
    assert commits["conflict"] >= 1 and commits["ok"] >= 1
