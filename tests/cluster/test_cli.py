"""The `superstatic` command against real agents: inspect, and the README's main job (demo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

SUPERSTATIC = [
    sys.executable,
    "-c",
    "import sys; from superstatic.tools.cli import main; sys.exit(main())",
]
TIMEOUT_S_COMMAND = 60.0
TIMEOUT_S_DEMO = 300.0
LINES_BEFORE_WORKERS_MAX = 20


def run(*args: str, timeout_s: float = TIMEOUT_S_COMMAND) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SUPERSTATIC, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def test_inspect_prints_a_root_as_json(cluster: LocalCluster) -> None:
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints)
    try:
        inv = superstatic.root("cli.inventory", dict)
        inv["stock"] = {"apple": 3, "pear": 1}
        inv["tags"] = {"fresh"}
        inv["history"] = [("apple", 3), ("pear", 1)]
        inv["self"] = inv  # a cycle: printed as a reference, not followed forever
    finally:
        superstatic.close()
    # Through a follower's agent too: inspect reads that agent's applied state.
    done = run("inspect", "cli.inventory", "--agent", endpoints[-1])
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout)
    assert value["stock"] == {"apple": 3, "pear": 1}
    assert value["tags"] == ["fresh"]
    assert value["history"] == [["apple", 3], ["pear", 1]]
    assert set(value["self"]) == {"__ref__"}

    missing = run("inspect", "cli.nothing-here", "--agent", endpoints[0])
    assert missing.returncode == 1
    assert "no root named 'cli.nothing-here'" in missing.stderr


def test_inspect_names_an_unreachable_agent() -> None:
    from superstatic.tools.localcluster import free_port

    done = run("inspect", "x", "--agent", f"tcp://127.0.0.1:{free_port()}", "--timeout-ms", "300")
    assert done.returncode != 0
    assert "127.0.0.1" in done.stderr


def test_the_demo_checks_out(tmp_path: Path) -> None:
    """The README's first command, smaller: starts 3 agents, kills the leader, checks."""
    done = run(
        "demo",
        "--workers",
        "2",
        "--transfers",
        "60",
        "--dir",
        str(tmp_path / "demo"),
        timeout_s=TIMEOUT_S_DEMO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "RESULT: everything checks out" in done.stdout
    assert "nothing acknowledged was lost, nothing applied twice: yes" in done.stdout


def test_a_terminated_demo_stops_everything_it_started(tmp_path: Path) -> None:
    """SIGTERM (what a service manager or `kill` sends) unwinds like Ctrl-C: no agent stays."""
    work = tmp_path / "demo"
    demo = subprocess.Popen(
        [*SUPERSTATIC, "demo", "--transfers", "100000", "--dir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for _ in range(LINES_BEFORE_WORKERS_MAX):
            line = demo.stdout.readline()
            if not line or "worker processes" in line:
                break
        assert "worker processes" in line, line
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=TIMEOUT_S_COMMAND)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    leftovers = processes_mentioning(str(work))
    for pid in leftovers:  # never leave them behind, even when the assertion fails
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes still running from {work}: {leftovers}"


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (from /proc: no pgrep needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if text in cmdline:
            found.append(int(entry.name))
    return found
