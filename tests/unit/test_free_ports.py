"""Ports for local agents come from below the kernel's ephemeral range: a port from that range
can be taken as the local port of another process's outgoing connection between the check and
the agent's bind (CI met it: a bench agent died on EADDRINUSE and the bench waited 30 s)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from superstatic.tools import localcluster
from superstatic.tools.localcluster import PORT_LOW, ephemeral_ports, free_port, free_ports


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low, _high = ephemeral_ports()
    if low - PORT_LOW <= localcluster.PORTS_TRIES_MAX:
        pytest.skip(f"this machine's ephemeral range starts at {low}: no room below it")
    ports = free_ports(6)
    assert len(set(ports)) == 6
    for port in ports:
        assert PORT_LOW <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_taken_port_is_never_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the room below the ephemeral range narrowed to four ports, the first of them taken,
    and one try each: a try that meets the taken port falls back to the kernel's pick."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        taken = int(held.getsockname()[1])
        monkeypatch.setattr(localcluster, "PORT_LOW", taken)
        monkeypatch.setattr(localcluster, "PORTS_TRIES_MAX", 1)
        ranges = tmp_path / "range"
        ranges.write_text(f"{taken + 4}\t{taken + 100}\n")
        monkeypatch.setattr(localcluster, "EPHEMERAL_RANGE_PATH", str(ranges))
        assert ephemeral_ports() == (taken + 4, taken + 100)
        for _ in range(20):
            assert free_port() != taken


def test_an_unreadable_range_falls_back_to_linux_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(localcluster, "EPHEMERAL_RANGE_PATH", str(tmp_path / "missing"))
    assert ephemeral_ports() == localcluster.EPHEMERAL_RANGE_DEFAULT
