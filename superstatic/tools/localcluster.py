"""A cluster of real agent processes on this machine, for the demo, the benchmarks and tests.

Every agent is a `python -m superstatic_agent` subprocess bound to 127.0.0.1 on ports found
free, with its data in its own folder. Everything started here is stopped by PID in `close()`
(also on `with` exit), so nothing outlives its owner.

Keyed by default, like a real deployment (docs/security.md): the cluster's keys are made in
`base_dir/keys` (one key pair per agent; app keys `admin`, `app` and `read` with those roles)
and every agent runs with `--keys`. `key_file(name)` is an app key file for SUPERSTATIC_KEYS or
connect(keys=...); the cluster's own requests (status, leader) use the admin key.
`keyed=False` runs without keys, for a test that needs an unauthenticated agent. `keys_dir`
names another keys directory; when it is not given and the module's `shared_keys_dir` is set
(the test suite sets it, and SUPERSTATIC_KEYS to its admin key), every local cluster uses that
one, so every client of every test cluster is keyed without plumbing keys through each test.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superstatic.client import keys as client_keys
from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Error

# Generous by default: three agents and their apps share two cores on the machines we test on.
TIMEOUT_S_LEADER_DEFAULT = 30.0
TIMEOUT_S_STOP = 10.0
POLL_S = 0.05
PORTS_TRIES_MAX = 100
# Ports for agents are chosen in [PORT_LOW, the ephemeral range's low end): above the usual
# services' ports, below the ports the kernel gives outgoing connections (see free_port).
PORT_LOW = 20_000
EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"
EPHEMERAL_RANGE_DEFAULT = (32_768, 60_999)  # Linux's default, when /proc does not say
# App keys every keyed local cluster has, by name = role.
CLIENT_KEYS = (("admin", "admin"), ("app", "app"), ("read", "read"))
# A keys directory every LocalCluster without its own `keys_dir` uses (see the docstring).
shared_keys_dir: Path | None = None


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (inclusive)."""
    try:
        low, high = Path(EPHEMERAL_RANGE_PATH).read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return EPHEMERAL_RANGE_DEFAULT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now, chosen below the kernel's
    ephemeral range when there is room: a port from that range can be taken, between this
    check and the agent's bind, as the local port of any process's outgoing connection (CI met
    it: an agent of a bench cluster died on EADDRINUSE). Random, so concurrent test processes
    rarely try the same one; each is checked by binding it."""
    low, _high = ephemeral_ports()
    rng = random.SystemRandom()
    if low - PORT_LOW > PORTS_TRIES_MAX:
        for _ in range(PORTS_TRIES_MAX):
            port = rng.randrange(PORT_LOW, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # the kernel's pick, from the ephemeral range
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    for _ in range(PORTS_TRIES_MAX):
        if len(ports) == count:
            break
        ports.add(free_port())
    assert len(ports) == count, f"found only {len(ports)} free ports of {count}"
    return sorted(ports)


def ensure_keys(keys_dir: Path, agents: Sequence[str]) -> None:
    """A keys directory with at least these agents' keys and the CLIENT_KEYS app keys."""
    if not (keys_dir / "cluster.key_secret").exists():
        client_keys.create_keys_dir(keys_dir, list(agents), CLIENT_KEYS)
        return
    missing = [a for a in agents if not (keys_dir / "agents" / f"{a}.key_secret").exists()]
    if missing:
        client_keys.add_keys(keys_dir, missing, [])


@dataclass
class AgentSpec:
    id: str
    peer_endpoint: str
    client_endpoint: str
    data_dir: Path
    voter: bool = True
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    metrics_address: str = ""  # HOST:PORT of its --metrics port ("" when not served)

    @property
    def metrics_url(self) -> str:
        assert self.metrics_address, f"agent {self.id} serves no --metrics"
        return f"http://{self.metrics_address}"

    # The voters this agent's --peers names (None: all of them). A joiner needs only one
    # contact; its configuration comes from the cluster.
    contacts: Sequence[str] | None = None
    # Flags for this agent only, after the cluster's agent_args.
    extra_args: Sequence[str] = ()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """N voters (ids a, b, c, ...) plus optional learners, all on loopback."""

    base_dir: Path
    size: int = 3
    agent_args: Sequence[str] = ()
    env: dict[str, str] | None = None
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    metrics: bool = False  # give each agent a --metrics port on 127.0.0.1
    keyed: bool = True
    keys_dir: Path | None = None
    _keys_cache: dict[str, client_keys.ClientKeys] = field(default_factory=dict, repr=False)
    # Per agent: a command prefix and extra environment, e.g. (["ip", "netns", "exec", "ns1"],
    # {"LD_PRELOAD": libfaketime}) for the nemesis tests. The prefix must exec the agent (not
    # fork it), so that the PID we signal is the agent's.
    launcher: Callable[[AgentSpec], tuple[list[str], dict[str, str]]] | None = None

    def __post_init__(self) -> None:
        assert 1 <= self.size <= 26, self.size
        self.base_dir = Path(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            node_id = chr(ord("a") + i)
            self.agents[node_id] = AgentSpec(
                id=node_id,
                peer_endpoint=f"tcp://127.0.0.1:{ports[2 * i]}",
                client_endpoint=f"tcp://127.0.0.1:{ports[2 * i + 1]}",
                data_dir=self.base_dir / node_id,
            )
        if self.metrics:
            for spec, port in zip(self.agents.values(), free_ports(self.size), strict=True):
                spec.metrics_address = f"127.0.0.1:{port}"
        self.keys_dir = Path(self.keys_dir or shared_keys_dir or self.base_dir / "keys")
        if self.keyed:
            ensure_keys(self.keys_dir, list(self.agents))

    # -- keys --------------------------------------------------------------------------------

    def key_file(self, name: str = "admin") -> Path | None:
        """An app key file of this cluster (None when it runs without keys)."""
        if not self.keyed:
            return None
        assert self.keys_dir is not None
        return self.keys_dir / "clients" / f"{name}.key_secret"

    def keys(self, name: str = "admin") -> client_keys.ClientKeys | None:
        path = self.key_file(name)
        if path is None:
            return None
        if name not in self._keys_cache:
            self._keys_cache[name] = client_keys.load(path)
        return self._keys_cache[name]

    def client_env(self, name: str = "app") -> dict[str, str]:
        """Environment for an app process of this cluster: its endpoints and key file."""
        env = {"SUPERSTATIC_AGENT": ",".join(self.client_endpoints())}
        path = self.key_file(name)
        if path is not None:
            env[client_keys.ENV_KEYS] = str(path)
        return env

    # -- addressing --------------------------------------------------------------------------

    @property
    def voter_ids(self) -> list[str]:
        return [a.id for a in self.agents.values() if a.voter]

    @property
    def peers_arg(self) -> str:
        return ",".join(f"{a.id}={a.peer_endpoint}" for a in self.agents.values() if a.voter)

    def peers_arg_for(self, node_id: str) -> str:
        contacts = self.agents[node_id].contacts
        if contacts is None:
            return self.peers_arg
        return ",".join(f"{c}={self.agents[c].peer_endpoint}" for c in contacts)

    def client_endpoints(self, ids: Sequence[str] | None = None) -> list[str]:
        chosen = ids if ids is not None else list(self.agents)
        return [self.agents[i].client_endpoint for i in chosen]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        for node_id in self.voter_ids:
            self.start_agent(node_id)
        return self

    def command(self, node_id: str) -> list[str]:
        spec = self.agents[node_id]
        cmd = [
            sys.executable,
            "-m",
            "superstatic_agent",
            "--id",
            spec.id,
            "--data-dir",
            str(spec.data_dir),
            "--peers",
            self.peers_arg_for(node_id),
            "--client",
            spec.client_endpoint,
        ]
        if not spec.voter:
            cmd += ["--listen", spec.peer_endpoint]
        if spec.metrics_address:
            cmd += ["--metrics", spec.metrics_address]
        if self.keyed:
            cmd += ["--keys", str(self.keys_dir)]  # the agent reads only its own secret
        return cmd + list(self.agent_args) + list(spec.extra_args)

    def start_agent(self, node_id: str) -> AgentSpec:
        spec = self.agents[node_id]
        assert not spec.alive(), f"agent {node_id} is already running (pid {spec.pid})"
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        spec.log_path = self.base_dir / f"{node_id}.log"
        env = dict(os.environ)
        env.update(self.env or {})
        prefix: list[str] = []
        if self.launcher is not None:
            prefix, extra = self.launcher(spec)
            env.update(extra)
        with open(spec.log_path, "ab") as log:
            spec.process = subprocess.Popen(
                prefix + self.command(node_id),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the agents
            )
        return spec

    def add_learner(
        self,
        node_id: str,
        contacts: Sequence[str] | None = None,
        *,
        peer_endpoint: str | None = None,
        client_endpoint: str | None = None,
    ) -> AgentSpec:
        """Starts an agent outside --peers; it joins the cluster as a non-voting learner (keyed:
        with a key pair added to the allow list first, which the agents pick up by themselves).
        `contacts`: the voters its --peers names (default: all). Endpoints default to free ports
        on 127.0.0.1."""
        assert node_id not in self.agents, node_id
        if self.keyed:
            assert self.keys_dir is not None
            ensure_keys(self.keys_dir, [node_id])
        peer_port, client_port = free_ports(2)
        self.agents[node_id] = AgentSpec(
            id=node_id,
            peer_endpoint=peer_endpoint or f"tcp://127.0.0.1:{peer_port}",
            client_endpoint=client_endpoint or f"tcp://127.0.0.1:{client_port}",
            data_dir=self.base_dir / node_id,
            voter=False,
            metrics_address=f"127.0.0.1:{free_port()}" if self.metrics else "",
            contacts=contacts,
        )
        return self.start_agent(node_id)

    def signal(self, node_id: str, sig: signal.Signals) -> None:
        spec = self.agents[node_id]
        assert spec.process is not None, f"agent {node_id} was never started"
        if spec.alive():
            os.kill(spec.process.pid, sig)

    def kill(self, node_id: str) -> None:
        """kill -9: the agent gets no chance to clean up."""
        self.signal(node_id, signal.SIGKILL)
        self._reap(node_id)

    def pause(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGCONT)

    def stop(self, node_id: str) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        spec = self.agents[node_id]
        if not spec.alive():
            return
        self.signal(node_id, signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.signal(node_id, signal.SIGTERM)
        try:
            assert spec.process is not None
            spec.process.wait(TIMEOUT_S_STOP)
        except subprocess.TimeoutExpired:
            self.kill(node_id)

    def _reap(self, node_id: str) -> None:
        process = self.agents[node_id].process
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(TIMEOUT_S_STOP)

    def close(self) -> None:
        for node_id in list(self.agents):
            try:
                self.stop(node_id)
            finally:
                spec = self.agents[node_id]
                if spec.alive():
                    self.kill(node_id)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation -------------------------------------------------------------------------

    def status(self, node_id: str, timeout_ms: int = 2_000) -> dict[str, Any]:
        return oneshot.request(
            self.agents[node_id].client_endpoint,
            wire.FrameType.STATUS,
            timeout_ms=timeout_ms,
            keys=self.keys("admin") or client_keys.NO_KEYS,  # never $SUPERSTATIC_KEYS's
        )

    def leader(self, timeout_s: float = TIMEOUT_S_LEADER_DEFAULT) -> str:
        """Waits until a live agent reports itself leader and the other live agents agree."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen: dict[str, str | None] = {}
            for node_id, spec in self.agents.items():
                if not spec.alive():
                    continue
                try:
                    seen[node_id] = self.status(node_id, timeout_ms=500).get("leader")
                except Error:
                    continue
            leaders = {lead for lead in seen.values() if lead is not None}
            if len(leaders) == 1:
                (lead,) = leaders
                if lead in seen and all(v == lead for v in seen.values()):
                    return lead
            time.sleep(POLL_S)
        raise TimeoutError(f"no agreed leader within {timeout_s} s; agent logs in {self.base_dir}")

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Polls `predicate` until true; an agent error while asking (one restarting or
        electing) counts as "not yet". Past `timeout_s`: AssertionError with the agents' logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except Error:
                pass
            time.sleep(POLL_S)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self) -> str:
        """The tail of every agent's log, for failure messages."""
        parts = []
        for spec in self.agents.values():
            if spec.log_path is not None and spec.log_path.exists():
                tail = spec.log_path.read_bytes()[-4000:].decode(errors="replace")
                parts.append(f"--- agent {spec.id} ({spec.log_path}) ---\n{tail}")
        return "\n".join(parts)
