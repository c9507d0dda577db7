"""The embedded default: no endpoint and SUPERSTATIC_AGENT unset.

App processes in one temporary directory start (or reuse) one single-node agent with its data
in ./.superstatic/, share its state, and leave nothing running once the last of them exits; a
later app starts the agent again and sees the data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from superstatic.client import embedded, oneshot
from superstatic.client import keys as client_keys
from superstatic.protocol import wire
from superstatic.protocol.errors import AuthError
from superstatic.tools.localcluster import free_ports

pytestmark = pytest.mark.cluster

IDLE_MS = 1_500  # the embedded agent's --exit-when-idle-ms in these tests
TIMEOUT_S_APP = 120.0
TIMEOUT_S_AGENT_EXIT = 30.0  # bound for the idle exit (IDLE_MS plus a loaded machine)
BUMPS = 10

APP = """
import json, sys
from pathlib import Path
import superstatic
from superstatic.client import embedded

cfg = superstatic.root("shared", dict)

@superstatic.transaction()
def bump():
    cfg["n"] = cfg.get("n", 0) + 1

for _ in range(int(sys.argv[1])):
    bump()
superstatic.sync()
record = embedded.agent_record(Path.cwd())
print(json.dumps({"n": cfg.get("n", 0), "agent_pid": record["pid"]}))
superstatic.close()
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A project directory; whatever embedded agent the test leaves behind is killed by pid."""
    started: set[int] = set()
    yield tmp_path
    record = embedded.agent_record(tmp_path)
    if record is not None:
        started.add(int(record["pid"]))
    for pid in started:
        if embedded.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def app_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != embedded.ENV_AGENT}
    env[embedded.ENV_IDLE_MS] = str(IDLE_MS)
    return env


def start_app(workdir: Path, bumps: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APP, str(bumps)],
        cwd=workdir,
        env=app_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S_APP)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S_AGENT_EXIT
    while embedded.pid_alive(pid):
        assert time.monotonic() < deadline, (
            f"the embedded agent (pid {pid}) still runs {TIMEOUT_S_AGENT_EXIT:.0f} s after its "
            f"last app exited (started with {embedded.IDLE_FLAG} {IDLE_MS})"
        )
        time.sleep(0.1)


def test_apps_in_one_directory_share_one_agent_that_exits_after_them(workdir: Path) -> None:
    first, second = start_app(workdir, BUMPS), start_app(workdir, BUMPS)
    a, b = finish(first), finish(second)
    assert a["agent_pid"] == b["agent_pid"], "two apps in one directory started two agents"
    assert max(a["n"], b["n"]) == 2 * BUMPS  # the later one saw both apps' writes
    assert (workdir / ".superstatic" / "data").is_dir()
    wait_gone(a["agent_pid"])

    third = finish(start_app(workdir, 1))
    assert third["n"] == 2 * BUMPS + 1, "the restarted agent lost the data"
    assert third["agent_pid"] != a["agent_pid"]
    wait_gone(third["agent_pid"])


def test_explicit_endpoints_and_the_environment_win(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(embedded.ENV_AGENT, "tcp://127.0.0.1:1,tcp://127.0.0.1:2")
    assert embedded.resolve_endpoints(["tcp://127.0.0.1:3"]) == ["tcp://127.0.0.1:3"]
    assert embedded.resolve_endpoints(None) == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]
    assert not (workdir / ".superstatic").exists()


def test_a_stale_record_is_replaced(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = workdir / ".superstatic"
    state.mkdir()
    # A record left by an agent that died with the machine: its pid is not running.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    peer_port, client_port = free_ports(2)
    stale = {
        "pid": dead.pid,
        "client": f"tcp://127.0.0.1:{client_port}",
        "peer": f"tcp://127.0.0.1:{peer_port}",
    }
    (state / "agent.json").write_text(json.dumps(stale))
    monkeypatch.delenv(embedded.ENV_AGENT, raising=False)
    monkeypatch.setenv(embedded.ENV_IDLE_MS, str(IDLE_MS))
    monkeypatch.chdir(workdir)
    (endpoint,) = embedded.resolve_endpoints(None)
    record = embedded.agent_record(workdir)
    assert record is not None and record["client"] == endpoint and record["pid"] != dead.pid
    # The new agent listens on owner-only ipc sockets, not on the stale record's TCP ports.
    assert record["client"] == f"ipc://{state.resolve() / embedded.CLIENT_SOCKET_NAME}"
    assert record["peer"] == f"ipc://{state.resolve() / embedded.PEER_SOCKET_NAME}"
    assert record["keys"] is None
    assert embedded.pid_alive(record["pid"])
    # Reused, not started again, while it runs.
    assert embedded.resolve_endpoints(None) == [endpoint]
    assert embedded.agent_record(workdir) == record
    wait_gone(record["pid"])  # nobody connected: it exits once idle


OTHER_USER_PROBE = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
    print("connected")
except PermissionError:
    print("denied")
"""
NOBODY_UID = 65534
SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_the_embedded_agent_is_reachable_by_its_owner_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.getuid() != 0 or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root (to act as another user) and /usr/bin/python3")
    # A project folder other users may enter (tmp_path's parents are owner-only).
    work = Path(tempfile.mkdtemp(prefix="superstatic-owner-"))
    os.chmod(work, 0o755)
    monkeypatch.delenv(embedded.ENV_AGENT, raising=False)
    monkeypatch.setenv(embedded.ENV_IDLE_MS, str(IDLE_MS))
    monkeypatch.chdir(work)
    try:
        (endpoint,) = embedded.resolve_endpoints(None)
        state = work / ".superstatic"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert endpoint == f"ipc://{state.resolve() / embedded.CLIENT_SOCKET_NAME}"
        socket_path = endpoint[len("ipc://") :]

        def other_user_connects() -> str:
            return subprocess.run(
                [str(SYSTEM_PYTHON), "-c", OTHER_USER_PROBE, socket_path],
                user=NOBODY_UID,
                group=NOBODY_UID,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()

        assert other_user_connects() == "denied"
        reply = oneshot.request(
            endpoint, wire.FrameType.STATUS, timeout_ms=10_000, keys=client_keys.NO_KEYS
        )
        assert reply["auth"]["mode"] == "loopback-only"
        # Control: with the folder and socket opened up, the same probe gets in; so the
        # refusal above was the owner-only folder.
        os.chmod(state, 0o755)
        os.chmod(socket_path, 0o777)
        assert other_user_connects() == "connected"
    finally:
        record = embedded.agent_record(work)
        if record is not None and embedded.pid_alive(int(record["pid"])):
            os.kill(int(record["pid"]), signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def test_a_path_too_long_for_ipc_gets_a_keyed_tcp_agent(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "IPC_PATH_BYTES_MAX", 1)
    monkeypatch.delenv(embedded.ENV_AGENT, raising=False)
    monkeypatch.setenv(embedded.ENV_IDLE_MS, str(IDLE_MS))
    monkeypatch.chdir(workdir)
    (endpoint,) = embedded.resolve_endpoints(None)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    keys_dir = workdir / ".superstatic" / embedded.KEYS_DIR_NAME
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for secret in keys_dir.glob("**/*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    # Only a process that can read the owner's key gets in.
    with pytest.raises(AuthError, match="requires a CURVE key"):
        oneshot.request(endpoint, wire.FrameType.STATUS, keys=client_keys.NO_KEYS)
    owner = embedded.embedded_keys(workdir)
    assert owner is not None and owner.role == "admin"
    reply = oneshot.request(endpoint, wire.FrameType.STATUS, timeout_ms=10_000, keys=owner)
    assert reply["auth"]["mode"] == "curve"
    record = embedded.agent_record(workdir)
    assert record is not None
    wait_gone(int(record["pid"]))
