"""Operability against real agents (issue 16): the status page in headless Chromium while the
leader is killed, JSON logs from real processes, and the `inspect` (browse, --ref, --watch) and
`top` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.browser import INSTALL_HINT, Browser, chromium_path

import superstatic
from superstatic.tools.localcluster import LocalCluster, free_port

pytestmark = pytest.mark.cluster

SUPERSTATIC = [
    sys.executable,
    "-c",
    "import sys; from superstatic.tools.cli import main; sys.exit(main())",
]
TIMEOUT_S_PAGE = 60.0
TIMEOUT_S_COMMAND = 60.0
POLL_S = 0.25
AGENTS = (["a"], ["b"], ["c"])
WATCH_ARGS = ("--watch", "--count", "2", "--seconds", "60")


def run(*args: str, timeout_s: float = TIMEOUT_S_COMMAND) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SUPERSTATIC, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def wait_page(browser: Browser, element: str, predicate: Any, what: str) -> str:
    deadline = time.monotonic() + TIMEOUT_S_PAGE
    seen = None
    while time.monotonic() < deadline:
        seen = browser.text(element)
        if seen is not None and predicate(seen):
            return seen
        time.sleep(POLL_S)
    raise AssertionError(f"the page never showed {what}; #{element} showed {seen!r}")


def test_the_status_page_follows_a_leader_change(tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.skip(f"chromium is not installed: {INSTALL_HINT}")
    with LocalCluster(tmp_path / "agents", size=3, metrics=True) as cluster:
        cluster.start()
        old = cluster.leader()
        follower = next(node for node in cluster.agents if node != old)
        browser = Browser(free_port())
        try:
            browser.start(cluster.agents[follower].metrics_url + "/")
            wait_page(browser, "agent", lambda t: t == follower, f"agent {follower}")
            wait_page(browser, "leader", lambda t: t == old, f"leader {old}")
            assert browser.text("role") == "follower"
            term_before = int(wait_page(browser, "term", str.isdigit, "a term"))
            cluster.kill(old)
            new = cluster.leader()
            assert new != old
            # The same page, loaded before the kill, updates itself: new leader, higher term.
            wait_page(browser, "leader", lambda t: t == new, f"the new leader {new}")
            assert int(browser.text("term") or 0) > term_before
            wait_page(browser, "events", lambda t: f"{new}" in t and "leader" in t, "the event")
        finally:
            browser.close()


def test_json_logs_from_a_real_agent(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=1, agent_args=["--log-format", "json"]) as c:
        c.start()
        c.leader()
        c.stop("a")
        spec = c.agents["a"]
        assert spec.log_path is not None
        lines = [json.loads(line) for line in spec.log_path.read_text().splitlines() if line]
    events = [line["event"] for line in lines]
    assert "agent_starting" in events and "became_leader" in events and "agent_stopped" in events
    assert all(line["agent"] == "a" and line["ts"].endswith("Z") for line in lines)
    starting = lines[events.index("agent_starting")]
    assert starting["fields"]["members"] == "a"


def test_an_agent_says_when_its_flags_move_a_member_its_configuration_places_elsewhere(
    tmp_path: Path,
) -> None:
    # A cluster restarted on new ports with its old data never elects (the held configuration
    # names the old addresses, and it wins over one agent's flags): the log must say why.
    with LocalCluster(tmp_path / "agents", size=1, agent_args=["--log-format", "json"]) as c:
        c.start()
        c.leader()
        c.stop("a")
        spec = c.agents["a"]
        old = spec.peer_endpoint
        spec.peer_endpoint = f"tcp://127.0.0.1:{free_port()}"
        c.start_agent("a")
        c.leader()
        c.stop("a")
        assert spec.log_path is not None
        lines = [json.loads(line) for line in spec.log_path.read_text().splitlines() if line]
    moved = [line for line in lines if line["event"] == "member_address_differs"]
    # Only the restart on the new port says it, and names both addresses.
    assert len(moved) == 1, moved
    assert moved[0]["level"] == "warning"
    assert moved[0]["fields"] == {"member": "a", "held": old, "given": spec.peer_endpoint}


def test_a_non_loopback_metrics_address_needs_insecure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "superstatic_agent",
            "--id",
            "a",
            "--data-dir",
            str(tmp_path / "a"),
            "--peers",
            f"a=tcp://127.0.0.1:{free_port()}",
            "--client",
            f"tcp://127.0.0.1:{free_port()}",
            "--metrics",
            "0.0.0.0:9100",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S_COMMAND,
        check=False,
    )
    assert done.returncode == 2 and "--insecure" in done.stderr


def test_inspect_browses_follows_and_watches_and_top_shows_the_cluster(
    cluster: LocalCluster,
) -> None:
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        cfg = superstatic.root("cli.config", dict)
        cfg["users"] = [{"name": "ann"}, {"name": "bob"}, {"name": "cy"}, {"name": "dee"}]
        cfg["mode"] = "fast"
        agent = endpoints[-1]
        superstatic.sync()
        cluster.wait_until(
            lambda: run("inspect", "cli.config.mode", "--agent", agent).stdout.strip() == '"fast"',
            "the follower to apply",
            30,
        )
        listing = run("inspect", "--agent", agent)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines()[0].split()[:4] == ["root", "kind", "items", "bytes"]
        assert "cli.config" in listing.stdout and "1 roots" in listing.stdout

        name = run("inspect", "cli.config.users[3].name", "--agent", agent)
        assert name.returncode == 0 and json.loads(name.stdout) == "dee"
        users = run("inspect", "cli.config.users", "--agent", agent, "--depth", "0", "--json")
        answer = json.loads(users.stdout)
        assert answer["kind"] == "list" and answer["items"] == 4
        ref = answer["value"][3]["__ref__"]  # depth 0: the items are references
        followed = run("inspect", "--ref", ref, "--agent", agent)
        assert json.loads(followed.stdout) == {"name": "dee"}
        missing = run("inspect", "cli.config.users[9]", "--agent", agent)
        assert missing.returncode == 1 and "no index [9]" in missing.stderr

        watch = subprocess.Popen(
            [*SUPERSTATIC, "inspect", "cli.config.users", "--agent", agent, *WATCH_ARGS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            assert watch.stderr is not None
            started = watch.stderr.readline() + watch.stderr.readline()
            while "watching from index" not in started and time.monotonic() < deadline:
                started += watch.stderr.readline()
            cfg["mode"] = "slow"  # not under users: not printed
            cfg["users"][3]["name"] = "dora"
            cfg["users"].append({"name": "eve"})
            out, err = watch.communicate(timeout=TIMEOUT_S_COMMAND)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait(10)
        assert watch.returncode == 0, err
        assert json.loads(out[: out.index("\n#")])[3] == {"name": "dee"}  # shown first
        lines = [line for line in out.splitlines() if line.startswith("#")]
        assert len(lines) == 2, out  # cli.config.mode is not on the path: not printed
        assert lines[0].endswith('cli.config.users[3].name = "dora"'), lines
        assert "cli.config.users.extend([" in lines[1], lines

        top = run("top", "--agent", ",".join(endpoints), "--count", "1")
        assert top.returncode == 0, top.stderr
        assert "3/3 agents answering" in top.stdout
        rows = [r for r in (line.split() for line in top.stdout.splitlines()) if r[:1] in AGENTS]
        assert sorted(row[0] for row in rows) == ["a", "b", "c"]
        assert sum(row[1] == "leader" for row in rows) == 1
    finally:
        superstatic.close()
