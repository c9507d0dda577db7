"""Fairness on the client port: how many client sessions one connection and one address may
keep live at once through this agent.

The state machine bounds the sessions of the whole cluster (SESSIONS_MAX); without a bound per
sender, one connection could open them all in seconds (a PROPOSE "open" per fresh client id)
and lock every other app out until they expire. Here a client id counts against the ZeroMQ
connection (identity) and the address (IP, or "local" for ipc://) it proposes through while it
keeps proposing: an app keeps its session alive with an "open" every session_ttl_ms / 3 when
idle, so a client id not heard from for session_ttl_ms is forgotten (its session has expired
in the state machine by then too), and a "close" forgets it at once.

The library uses one client id per connection, so the defaults (64 per connection, 4,096 per
address) never bind an honest app; they are per agent (an app spread over three agents counts
at each separately). Memory: at most sessions_per_address_max client ids per address, each
remembered once per connection it used.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K", bytes, str)

# The forgotten client ids are swept this often (in parts of the idle time): a sweep walks
# every remembered id, so it must not run every loop turn.
SWEEPS_PER_IDLE = 4


class SessionAdmission:
    """Which client ids propose through which connection and address; refuses the ones that
    would exceed sessions_per_connection_max or sessions_per_address_max."""

    def __init__(self, per_connection_max: int, per_address_max: int, idle_ms: int) -> None:
        assert per_connection_max >= 1 and per_address_max >= 1 and idle_ms >= 1
        self.per_connection_max = per_connection_max
        self.per_address_max = per_address_max
        self._idle_s = idle_ms / 1000.0
        # identity -> client id -> last heard (monotonic s); address -> the same.
        self._connections: dict[bytes, dict[str, float]] = {}
        self._addresses: dict[str, dict[str, float]] = {}
        self._next_sweep = 0.0

    def admit(self, identity: bytes, address: str, client: str, now: float) -> str | None:
        """None if `client` may propose through this connection (it is now remembered),
        else the refusal, naming the limit."""
        by_connection = self._connections.get(identity)
        by_address = self._addresses.get(address)
        if by_connection is not None and client in by_connection:
            by_connection[client] = now
            if by_address is not None and client in by_address:
                by_address[client] = now
                return None
        elif by_connection is not None and len(by_connection) >= self.per_connection_max:
            return (
                f"this connection already has sessions_per_connection_max="
                f"{self.per_connection_max} client sessions live at this agent; close one or "
                "open another connection"
            )
        new_at_address = by_address is not None and client not in by_address
        if new_at_address and len(by_address or ()) >= self.per_address_max:
            return (
                f"this address already has sessions_per_address_max={self.per_address_max} "
                "client sessions live at this agent"
            )
        self._connections.setdefault(identity, {})[client] = now
        self._addresses.setdefault(address, {})[client] = now
        return None

    def forget(self, identity: bytes, address: str, client: str) -> None:
        """The client closed its session."""
        _forget(self._connections, identity, client)
        _forget(self._addresses, address, client)

    def sweep(self, now: float) -> None:
        """Forgets client ids not heard from for the idle time (called from housekeeping)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._idle_s / SWEEPS_PER_IDLE
        horizon = now - self._idle_s
        _sweep(self._connections, horizon)
        _sweep(self._addresses, horizon)

    def counts(self) -> tuple[int, int]:
        """(connections, addresses) with live sessions: for STATUS."""
        return len(self._connections), len(self._addresses)


def _forget(table: dict[K, dict[str, float]], key: K, client: str) -> None:
    clients = table.get(key)
    if clients is not None:
        clients.pop(client, None)
        if not clients:
            del table[key]


def _sweep(table: dict[K, dict[str, float]], horizon: float) -> None:
    for key in list(table):
        clients = table[key]
        for client in [c for c, seen in clients.items() if seen < horizon]:
            del clients[client]
        if not clients:
            del table[key]
