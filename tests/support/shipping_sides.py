"""A leader's and a follower's `Shipping` (agent/shipping.py) on real stores, with a stand-in
for the Raft core and for the peer sockets: what tests of snapshot shipping drive directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superstatic_agent import peer_codec
from superstatic_agent.config import AgentConfig
from superstatic_agent.raft.types import ConfState, ProgressState, Role
from superstatic_agent.shipping import Shipping
from superstatic_agent.statemachine import StateMachine
from superstatic_agent.storage import Storage
from superstatic_agent.transport import DropCounter

from support.v3store import fill

CHUNK_BYTES_MAX = 700  # the filled store ships as far more chunks than one window
TERM = 3
CONF = ConfState.make(["a", "b"])
APPLIED_INDEX = 40  # what support.v3store.fill leaves applied


@dataclass
class Node:
    """What Shipping asks of the core: term, role, the follower's progress, the log's base."""

    role: Role
    term: int = TERM
    commit: int = 0
    state: ProgressState = ProgressState.SNAPSHOT
    base_conf: ConfState = CONF
    first_index: int = 1_000  # above the applied index: no conf entries to replay

    def progress(self) -> dict[str, tuple[int, int, str]]:
        return {"b": (0, 1, self.state.value)} if self.role is Role.LEADER else {}


@dataclass
class Peers:
    """Records what is sent, decoded: (to, message or chunk)."""

    sent: list[tuple[str, Any]] = field(default_factory=list)

    def send(self, to: str, data: bytes) -> bool:
        self.sent.append((to, peer_codec.decode(data)))
        return True


@dataclass
class Side:
    shipping: Shipping
    storage: Storage
    peers: Peers
    drops: DropCounter
    damage: list[Exception]  # what the shipping reported as store damage


def side(path: Path, node_id: str, role: Role, filled: bool, *, damage_raises: bool) -> Side:
    """`damage_raises`: a report of store damage fails the test at once (else it is kept in
    `Side.damage` for the test to look at)."""
    storage = Storage(path, fsync=False, map_bytes=64 << 20)
    sm = StateMachine(storage.env)
    if filled:
        with storage.env.begin(write=True) as txn:
            fill(txn, sm.dbs)  # applied index APPLIED_INDEX
    config = AgentConfig(
        node_id=node_id,
        data_dir=path,
        peers={"a": "tcp://127.0.0.1:1", "b": "tcp://127.0.0.1:2"},
        client_endpoint="tcp://127.0.0.1:3",
        snapshot_chunk_bytes_max=CHUNK_BYTES_MAX,
    )
    peers, drops, damage = Peers(), DropCounter(), []

    def damaged(exc: Exception) -> None:
        if damage_raises:
            raise AssertionError(f"store damaged: {exc}")
        damage.append(exc)

    shipping = Shipping(config, Node(role), storage, sm, peers, drops, damaged)  # type: ignore[arg-type]
    return Side(shipping, storage, peers, drops, damage)


@contextmanager
def leader_and_follower(tmp_path: Path, *, damage_raises: bool) -> Iterator[tuple[Side, Side]]:
    """Leader `a` on a filled store, follower `b` on an empty one; both closed at the end."""
    leader = side(tmp_path / "a", "a", Role.LEADER, True, damage_raises=damage_raises)
    follower = side(tmp_path / "b", "b", Role.FOLLOWER, False, damage_raises=damage_raises)
    try:
        yield leader, follower
    finally:
        for one in (leader, follower):
            one.shipping.close()
            one.storage.close()
