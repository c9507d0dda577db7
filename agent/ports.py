"""What the agent's shell takes from the outside world: a clock, randomness and two transports.

`Server` is handed an `AgentIo`. The process builds it from the system clock and ZeroMQ
(`server.zmq_io`); the glue simulation (tests/sim/agent_sim*.py) builds one from a simulated
clock and network, so the agent's real code above the Raft core (state machine, sessions,
proposal waiters, re-proposal, joiners, ReadIndex contexts, snapshots between agents) runs
deterministically under faults. Nothing in here imports zmq.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # auth needs zmq; the simulation passes an unkeyed one
    from superstatic_agent.auth import AgentAuth

# The most a clock offset may shift the wall clock (--clock-offset-ms): ten years either way.
CLOCK_OFFSET_MS_MAX = 10 * 365 * 24 * 3600 * 1000


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back, never jumps."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the epoch as this host believes it: may be skewed and may jump."""
        ...


class SystemClock:
    """The host's clocks. `offset_ms` shifts the wall clock only (--clock-offset-ms, a test and
    operations knob: it reproduces a host whose clock is wrong without libfaketime)."""

    def __init__(self, offset_ms: int = 0) -> None:
        assert abs(offset_ms) <= CLOCK_OFFSET_MS_MAX, offset_ms
        self.offset_ms = offset_ms

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms


class PeerPort(Protocol):
    """The Raft network as the shell uses it (transport.PeerTransport is the real one)."""

    def set_peers(self, addresses: dict[str, str]) -> list[str]: ...
    def peers(self) -> dict[str, str]: ...
    def send(self, to: str, data: bytes) -> bool: ...
    def recv(self, bytes_max: int | None = None) -> list[tuple[str, bytes]]: ...

    def retry_refused(self, now: float) -> None:
        """Housekeeping: reconnect, after a while, to peers that refused our key (keys only)."""
        ...

    def close(self) -> None: ...


class ClientPort(Protocol):
    """The apps' endpoint (transport.ClientTransport is the real one)."""

    def send(self, identity: bytes, data: bytes) -> str: ...

    def recv(self) -> list[tuple[bytes, bytes, str, str | None]]:
        """(connection identity, frame, the app's address, its key's role: None if revoked,
        "admin" without keys)."""
        ...

    def close(self) -> None: ...


# Waits up to the given milliseconds for frames; returns (peer frames waiting, client frames
# waiting). (False, False) on a timeout or an interrupting signal.
Poll = Callable[[int], tuple[bool, bool]]


@dataclass
class AgentIo:
    clock: Clock
    rng: random.Random  # the Raft core's (election timeouts); seeded in the simulation
    peers: PeerPort
    clients: ClientPort
    poll: Poll
    # Who may send what (agent/auth.py); without keys it lets everything through, as the
    # glue simulation's is.
    auth: AgentAuth
    close: Callable[[], None]  # after the ports are closed: release what they share
