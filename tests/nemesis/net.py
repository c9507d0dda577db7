"""Where the nemesis agents live on the network, and the packet filters that cut it.

`Netns` (root only): one network namespace per slot (a place an agent runs: n1, n2, n3), each
with a veth pair to a bridge in a hub namespace. Addresses are 192.0.2.x (TEST-NET-1, RFC 5737:
for documentation, never routed) and exist only inside these namespaces: nothing is added to
the machine's own network. Every agent binds its peer socket to its slot's address on the same
port; its client socket is a unix socket (ipc://) in a short directory, so the harness, the
client processes and `superstatic status` reach every agent whatever the filters say (as in
Jepsen, faults are between the nodes, not between a client and its node).

Filters are one nft table per slot namespace, an input chain rebuilt whole on each change:
- cut (src, dst): every packet from src dropped at dst (a partition is cuts both ways);
- one-way (src, dst): only what src's sockets send to dst's peer port is dropped (src's
  messages to dst), while TCP acknowledgements for dst's own connection to src still pass, so
  dst's messages keep reaching src: a true one-way loss of messages, not of TCP;
- loss: a random share of every packet between agents (nft `numgen random`); TCP retransmits,
  so to Raft this is delay and jitter.

Names carry a tag with the owner's PID (`ssnem<pid>x<hex>-<slot>`); `destroy()` kills any
process left inside and deletes the namespaces, and `sweep_stale()` does the same for tags
whose owner is dead (a harness that was itself killed -9).

`Loopback` is the fallback without root: every agent on 127.0.0.1 with its own ports, no
filters (the network faults are then left out, and said so).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from superstatic.tools.localcluster import free_ports

PREFIX = "ssnem"
SUBNET = "192.0.2"
PEER_PORT = 7400
TABLE = "nemesis"
TIMEOUT_S_COMMAND = 20.0
# Namespaces one harness may create: slots plus the hub (bounds the cleanup loops too).
SLOTS_MAX = 16
TAG_PATTERN = re.compile(rf"^({PREFIX}(\d+)x[0-9a-f]+)-(\S+)")


def _run(command: Sequence[str], stdin: str | None = None) -> str:
    done = subprocess.run(
        list(command),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S_COMMAND,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Rules:
    """What the filters drop now: directed pairs of slots, and a loss percentage."""

    cut: set[tuple[str, str]] = field(default_factory=set)
    one_way: set[tuple[str, str]] = field(default_factory=set)
    loss_pct: int = 0

    def empty(self) -> bool:
        return not self.cut and not self.one_way and self.loss_pct == 0

    def describe(self) -> str:
        parts = []
        if self.cut:
            parts.append("cut " + ",".join(f"{a}->{b}" for a, b in sorted(self.cut)))
        if self.one_way:
            parts.append("one-way " + ",".join(f"{a}->{b}" for a, b in sorted(self.one_way)))
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct}%")
        return "; ".join(parts) or "none"


class Network:
    """The interface the cluster and the nemesis use."""

    filters = False

    def create(self) -> None: ...
    def destroy(self) -> None: ...
    def peer_endpoint(self, slot: str) -> str:
        raise NotImplementedError

    def prefix(self, slot: str) -> list[str]:
        return []

    def apply(self, rules: Rules) -> None:
        assert rules.empty(), "this network has no filters"

    def heal(self) -> None:
        self.apply(Rules())


class Loopback(Network):
    def __init__(self, slots: Sequence[str]) -> None:
        ports = free_ports(len(slots))
        self._endpoints = {s: f"tcp://127.0.0.1:{p}" for s, p in zip(slots, ports, strict=True)}

    def peer_endpoint(self, slot: str) -> str:
        return self._endpoints[slot]


class Netns(Network):
    filters = True

    def __init__(self, slots: Sequence[str]) -> None:
        assert 0 < len(slots) < SLOTS_MAX, slots
        self.slots = list(slots)
        self.tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        self.hub = f"{self.tag}-hub"
        self.created: list[str] = []
        self.rules = Rules()

    def ns(self, slot: str) -> str:
        return f"{self.tag}-{slot}"

    def address(self, slot: str) -> str:
        return f"{SUBNET}.{self.slots.index(slot) + 1}"

    def peer_endpoint(self, slot: str) -> str:
        return f"tcp://{self.address(slot)}:{PEER_PORT}"

    def prefix(self, slot: str) -> list[str]:
        # `ip netns exec` execs the command (no fork): the PID we get is the agent's.
        return ["ip", "netns", "exec", self.ns(slot)]

    def create(self) -> None:
        sweep_stale()
        try:
            self._add_ns(self.hub)
            _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
            for i, slot in enumerate(self.slots):
                ns = self.ns(slot)
                self._add_ns(ns)
                # Both ends are created inside their namespaces: nothing touches the host's.
                veth = ["ip", "link", "add", "eth0", "netns", ns, "type", "veth"]
                _run([*veth, "peer", "name", f"v{i}", "netns", self.hub])
                _run(["ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0"])
                _run(["ip", "-n", self.hub, "link", "set", f"v{i}", "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{self.address(slot)}/24", "dev", "eth0"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            self.apply(Rules())
        except BaseException:
            self.destroy()
            raise

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.created.append(name)

    def apply(self, rules: Rules) -> None:
        """Replaces every slot's filters by `rules` (one nft transaction per slot)."""
        for dst in self.slots:
            lines = [
                f"table inet {TABLE} {{}}",
                f"flush table inet {TABLE}",
                f"table inet {TABLE} {{",
                "  chain input {",
                "    type filter hook input priority 0; policy accept;",
            ]
            for src in self.slots:
                if (src, dst) in rules.cut:
                    lines.append(f"    ip saddr {self.address(src)} drop")
                elif (src, dst) in rules.one_way:
                    lines.append(f"    ip saddr {self.address(src)} tcp dport {PEER_PORT} drop")
            if rules.loss_pct >= 100:
                lines.append(f"    ip saddr {SUBNET}.0/24 drop")
            elif rules.loss_pct > 0:
                lines.append(
                    f"    ip saddr {SUBNET}.0/24 numgen random mod 100 < {rules.loss_pct} drop"
                )
            lines += ["  }", "}"]
            _run(["ip", "netns", "exec", self.ns(dst), "nft", "-f", "-"], "\n".join(lines) + "\n")
        self.rules = rules

    def listing(self, slot: str) -> str:
        return _run(["ip", "netns", "exec", self.ns(slot), "nft", "list", "table", "inet", TABLE])

    def destroy(self) -> None:
        """Kills whatever still runs inside, deletes every namespace this object created."""
        for name in reversed(self.created):
            _kill_inside(name)
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
                _run(["ip", "netns", "del", name])
        self.created = [n for n in self.created if n in namespaces()]
        assert not self.created, f"namespaces left behind: {self.created}"


def namespaces() -> list[str]:
    try:
        out = _run(["ip", "netns", "list"])
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ours(names: Iterable[str] | None = None) -> list[str]:
    """Namespaces made by a nemesis harness (any owner)."""
    return [n for n in (namespaces() if names is None else names) if TAG_PATTERN.match(n)]


def _kill_inside(name: str) -> None:
    """SIGKILL the processes in a namespace we created (our agents), by PID."""
    try:
        pids = [int(p) for p in _run(["ip", "netns", "pids", name]).split()]
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a stopped process dies only once continued
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Deletes namespaces of harnesses that died without cleaning up; returns their names."""
    swept = []
    for name in ours():
        match = TAG_PATTERN.match(name)
        assert match is not None
        if not _alive(int(match.group(2))):
            _kill_inside(name)
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
                _run(["ip", "netns", "del", name])
                swept.append(name)
    return swept
