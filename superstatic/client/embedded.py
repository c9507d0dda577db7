"""Where the library connects: explicit endpoints, $SUPERSTATIC_AGENT, or an embedded agent.

With no endpoint given and SUPERSTATIC_AGENT unset, the library starts (or reuses) a single-node
agent for the current directory, its data in `./.superstatic/data`. The agent is a detached
`python -m superstatic_agent` process, so it outlives the app that started it and later apps in
the same directory share it (and its state). It is started with `--exit-when-idle-ms`: once the
last app stops PINGing it (every connection PINGs every 500 ms), it exits by itself, so nothing
the user did not ask for keeps running.

Reachable only by its owner (docs/security.md): `./.superstatic/` is made (or set) owner-only
(0700), and the agent listens on `ipc://` sockets inside it, so no other local user can connect
to it (nor read its data). A directory whose path is too long for a unix socket
(IPC_PATH_BYTES_MAX) gets a loopback TCP agent with CURVE keys generated in
`./.superstatic/keys` (secrets 0600) instead: only a process that can read them (the owner)
gets in. A `.superstatic` owned by another user is refused.

Files in `./.superstatic/`:
* `agent.lock`: an fcntl lock held while one app checks, starts or replaces the agent, so two
  apps starting at once never start two agents on one data directory;
* `agent.json`: `{"pid", "client", "peer", "started_ms", "keys"}` of the last agent started
  (`keys`: the app key file of a keyed agent, else null). TCP ports are reused on restart (when
  still free) so the peer address stored in the agent's membership stays the one it binds;
* `agent.sock`, `peer.sock`: the ipc sockets;
* `agent.log`: the agent's stderr, appended.

Reuse requires the recorded pid to be alive AND the endpoint to answer a PING: a pid alone can
be recycled by the OS for an unrelated process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from superstatic.client import keys as client_keys
from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Error

ENV_AGENT = "SUPERSTATIC_AGENT"
ENV_IDLE_MS = "SUPERSTATIC_EMBEDDED_IDLE_MS"
STATE_DIR_NAME = ".superstatic"
AGENT_ID = "solo"
# The embedded agent exits this long after its last client went silent. Apps PING every
# 500 ms, so this tolerates a paused app (a debugger, a long GC) without keeping an agent
# around for long after the last app exited.
IDLE_MS_DEFAULT = 5_000
# Starting an agent: process start, LMDB open, and a single-node election.
TIMEOUT_S_START = 30.0
TIMEOUT_MS_PING = 1_000
POLL_S = 0.05
# A chosen port can be taken between our check and the agent's bind; try fresh ports again.
START_ATTEMPTS_MAX = 3
# Waiting for the lock: another app may be starting the agent (bounded by its own start time).
TIMEOUT_S_LOCK = TIMEOUT_S_START * START_ATTEMPTS_MAX + 10
LOG_TAIL_BYTES = 2_000
IDLE_FLAG = "--exit-when-idle-ms"
# Owner only: the folder holds the agent's sockets, data and (TCP fallback) keys.
STATE_DIR_MODE = 0o700
CLIENT_SOCKET_NAME = "agent.sock"
PEER_SOCKET_NAME = "peer.sock"
# A unix socket path has at most 107 bytes (sun_path); beyond this the agent uses TCP with keys.
IPC_PATH_BYTES_MAX = 100
KEYS_DIR_NAME = "keys"
OWNER_KEY_NAME = "owner"


def resolve_endpoints(endpoints: Sequence[str] | None) -> list[str]:
    """Explicit endpoints > $SUPERSTATIC_AGENT (comma-separated) > the embedded agent."""
    if endpoints:
        return [e.strip() for e in endpoints if e.strip()]
    from_env = [e.strip() for e in os.environ.get(ENV_AGENT, "").split(",") if e.strip()]
    if from_env:
        return from_env
    return [ensure_embedded_agent(Path.cwd())]


def idle_ms() -> int:
    raw = os.environ.get(ENV_IDLE_MS, "").strip()
    if not raw:
        return IDLE_MS_DEFAULT
    try:
        value = int(raw)
    except ValueError:
        raise Error(f"{ENV_IDLE_MS}={raw!r} is not an integer number of milliseconds") from None
    if value <= 0:
        raise Error(f"{ENV_IDLE_MS}={raw!r} must be a positive number of milliseconds")
    return value


def ensure_embedded_agent(directory: Path) -> str:
    """The client endpoint of the embedded agent of `directory`, started if needed (its app key
    file, if it is keyed: `embedded_keys`)."""
    state_dir = directory / STATE_DIR_NAME
    private_state_dir(state_dir)
    with _locked(state_dir / "agent.lock"):
        record = _read_record(state_dir)
        if record is not None and _answers(record):
            return str(record["client"])
        return _start(state_dir, record)


def embedded_keys(directory: Path) -> client_keys.ClientKeys | None:
    """The app key of `directory`'s embedded agent when it runs keyed (the TCP fallback)."""
    record = agent_record(directory)
    path = record.get("keys") if record is not None else None
    return client_keys.load(path) if isinstance(path, str) and path else None


def private_state_dir(state_dir: Path) -> None:
    """Creates `state_dir` owner-only, or makes an existing one so; refuses one owned by
    another user (its owner could read our data and reach our agent)."""
    state_dir.mkdir(mode=STATE_DIR_MODE, exist_ok=True)
    info = state_dir.stat()
    if info.st_uid != os.getuid():
        raise Error(
            f"{state_dir} belongs to another user (uid {info.st_uid}): its embedded agent "
            "would not be reachable by you only. Use your own directory, or set "
            f"{ENV_AGENT} to a cluster's agents"
        )
    if info.st_mode & 0o777 != STATE_DIR_MODE:
        os.chmod(state_dir, STATE_DIR_MODE)


def agent_record(directory: Path) -> dict[str, Any] | None:
    """What `agent.json` says about the embedded agent of `directory` (None if never started)."""
    return _read_record(directory / STATE_DIR_NAME)


def pid_alive(pid: int) -> bool:
    """True if `pid` is a running process (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# ---------------------------------------------------------------------------------- internals


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        deadline = time.monotonic() + TIMEOUT_S_LOCK
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Error(
                        f"another process has held {path} for more than {TIMEOUT_S_LOCK:.0f} s "
                        "(TIMEOUT_S_LOCK); if no superstatic app is starting in this directory, "
                        "delete the file and retry"
                    ) from None
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((state_dir / "agent.json").read_text())
    except (FileNotFoundError, ValueError):
        return None  # absent or torn: treated as stale, replaced under the lock
    if not isinstance(record, dict) or not all(
        isinstance(record.get(key), expected)
        for key, expected in (("pid", int), ("client", str), ("peer", str))
    ):
        return None
    return record


def _write_record(state_dir: Path, record: dict[str, Any]) -> None:
    tmp = state_dir / "agent.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, state_dir / "agent.json")  # atomic: readers see the old or the new file


def _answers(record: dict[str, Any]) -> bool:
    if not pid_alive(int(record["pid"])):
        return False
    try:
        oneshot.request(
            str(record["client"]),
            wire.FrameType.PING,
            timeout_ms=TIMEOUT_MS_PING,
            keys=_record_keys(record),
        )
    except Error:
        return False
    return True


def _record_keys(record: dict[str, Any]) -> client_keys.KeysArg:
    """The key an app uses with this agent: its own when keyed, none otherwise (whatever
    SUPERSTATIC_KEYS says: that names a cluster's key, not this private agent's)."""
    path = record.get("keys")
    return Path(path) if isinstance(path, str) and path else client_keys.NO_KEYS


def _owner_keys(state_dir: Path) -> Path:
    """The TCP fallback's keys, made once in ./.superstatic/keys: the agent's pair and one
    admin app key for the owner (secrets 0600 in a 0700 folder)."""
    keys_dir = state_dir / KEYS_DIR_NAME
    if not (keys_dir / "cluster.key_secret").exists():
        client_keys.create_keys_dir(keys_dir, [AGENT_ID], [(OWNER_KEY_NAME, "admin")])
    return keys_dir / "clients" / f"{OWNER_KEY_NAME}.key_secret"


def _port_of(endpoint: Any) -> int | None:
    if not isinstance(endpoint, str) or not endpoint.startswith("tcp://127.0.0.1:"):
        return None
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except ValueError:
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise Error("could not find a free TCP port on 127.0.0.1 for the embedded agent")


def _choose_ports(previous: dict[str, Any] | None) -> tuple[int, int]:
    """The previous agent's ports when free, else fresh ones."""
    if previous is not None:
        peer, client = _port_of(previous.get("peer")), _port_of(previous.get("client"))
        if peer and client and peer != client and _port_free(peer) and _port_free(client):
            return peer, client
    peer = _free_port(set())
    return peer, _free_port({peer})


def _start(state_dir: Path, previous: dict[str, Any] | None) -> str:
    if previous is not None and pid_alive(int(previous["pid"])):
        # Alive but not answering: hung, or a recycled pid. We only own it if it is ours, and
        # we cannot tell, so we do not kill it; a new agent gets new ports.
        previous = None
    failures: list[str] = []
    idle_flag = True
    client_ipc = f"ipc://{state_dir.resolve() / CLIENT_SOCKET_NAME}"
    use_ipc = len(client_ipc) - len("ipc://") <= IPC_PATH_BYTES_MAX
    keys_file = None if use_ipc else _owner_keys(state_dir)
    for _attempt in range(START_ATTEMPTS_MAX):
        if use_ipc:
            client = client_ipc
            peer = f"ipc://{state_dir.resolve() / PEER_SOCKET_NAME}"
        else:
            peer_port, client_port = _choose_ports(previous)
            peer = f"tcp://127.0.0.1:{peer_port}"
            client = f"tcp://127.0.0.1:{client_port}"
        command = [
            sys.executable,
            "-m",
            "superstatic_agent",
            "--id",
            AGENT_ID,
            "--data-dir",
            str(state_dir / "data"),
            "--peers",
            f"{AGENT_ID}={peer}",
            "--client",
            client,
        ]
        if keys_file is not None:
            command += ["--keys", str(state_dir / KEYS_DIR_NAME)]
        if idle_flag:
            command += [IDLE_FLAG, str(idle_ms())]
        log_path = state_dir / "agent.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        pid = _launch_detached(command, log_path, cwd=state_dir.parent)
        record = {
            "pid": pid,
            "client": client,
            "peer": peer,
            "started_ms": int(time.time() * 1000),
            "keys": str(keys_file) if keys_file is not None else None,
        }
        _write_record(state_dir, record)
        problem = _wait_ready(pid, client, keys_file)
        if problem is None:
            return client
        tail = _log_tail(log_path, log_start)
        failures.append(f"{problem}; log: {tail}")
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)  # ours, started just now, never answered
        if not (idle_flag and IDLE_FLAG in tail and "unrecognized" in tail):
            previous = None  # perhaps a port was taken meanwhile: fresh ones next time
        else:
            # An agent without the idle exit: run it anyway, and say it will keep running.
            idle_flag = False
            print(
                f"superstatic: this superstatic-agent has no {IDLE_FLAG}; the embedded agent in "
                f"{state_dir} will keep running after the app exits (stop it by its pid in "
                "agent.json)",
                file=sys.stderr,
            )
    raise Error(
        f"could not start the embedded superstatic agent in {state_dir} "
        f"({START_ATTEMPTS_MAX} attempts, START_ATTEMPTS_MAX): {' | '.join(failures)}. "
        f"Set {ENV_AGENT} to use running agents instead"
    )


def _launch_detached(command: list[str], log_path: Path, *, cwd: Path) -> int:
    """Starts `command` as a grandchild in its own session and returns its pid.

    Through a short-lived launcher process, so the agent is not this app's child: when it exits
    (idle) while this app still runs, it leaves no zombie here that would look alive."""
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(log_path), *command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S_START,
        check=False,
    )
    if launcher.returncode != 0 or not launcher.stdout.strip().isdigit():
        raise Error(
            f"could not launch the embedded agent ({' '.join(command)}): "
            f"{launcher.stderr.strip()[-LOG_TAIL_BYTES:]}"
        )
    return int(launcher.stdout.strip())


_LAUNCHER = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log,"
    " stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)\n"
    "print(p.pid)\n"
)


def _wait_ready(pid: int, client: str, keys_file: Path | None) -> str | None:
    """None once the agent answers and leads its single-node group, else what went wrong."""
    deadline = time.monotonic() + TIMEOUT_S_START
    keys = keys_file if keys_file is not None else client_keys.NO_KEYS
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return "the agent exited"
        try:
            status = oneshot.request(
                client, wire.FrameType.STATUS, timeout_ms=TIMEOUT_MS_PING, keys=keys
            )
        except Error:
            time.sleep(POLL_S)
            continue
        if status.get("leader") == AGENT_ID:
            return None
        time.sleep(POLL_S)
    return f"the agent did not become ready within {TIMEOUT_S_START:.0f} s (TIMEOUT_S_START)"


def _log_tail(path: Path, start: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
    except OSError:
        return "(no log)"
    text = data[-LOG_TAIL_BYTES:].decode(errors="replace").strip()
    return text or "(empty)"
