"""An agent's subscriber streams without sockets or Raft: a real Storage and state machine,
entries committed one by one, and a fake client socket that records what is sent (for unit
tests of agent/streams.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from superstatic_agent.config import AgentConfig
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind, HardState, Ready, Role
from superstatic_agent.statemachine import Applied, StateMachine
from superstatic_agent.storage import Storage
from superstatic_agent.streams import Streams

from superstatic.protocol import ops, wire
from support.sessions import SESSION_PLACED, place_session

MiB = 1 << 20


class FakeClients:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def send(self, identity: bytes, data: bytes) -> str:
        self.sent.append((identity, data))
        return "ok"


class Harness:
    def __init__(self, path: Path, **overrides: Any) -> None:
        self.config = AgentConfig(
            node_id="a",
            data_dir=path,
            peers={"a": "tcp://127.0.0.1:1"},
            client_endpoint="tcp://127.0.0.1:2",
            **overrides,
        )
        self.storage = Storage(path, fsync=False, map_bytes=256 * MiB)
        self.sm = StateMachine(self.storage.env)
        place_session(self.storage.env, "cl")
        self._clients = {"cl"}
        self.clients = FakeClients()
        self.errors: list[tuple[bytes, int, str, str]] = []
        self.streams = Streams(
            self.config,
            self.storage,
            self.clients,  # type: ignore[arg-type]
            lambda identity, req_id, code, message: self.errors.append(
                (identity, req_id, str(code), message)
            ),
            0,
            lambda exc: None,
        )
        self.index = 0

    def commit(
        self,
        wire_ops: list[Any],
        *,
        client: str = "cl",
        body: bytes | None = None,
        time_ms: int = 1,
    ) -> list[Applied]:
        """One transaction of `client` (its session placed on first use); `body` overrides the
        encoded ops (a model-2 body with reads, to make a conflict)."""
        if client not in self._clients:
            place_session(self.storage.env, client)
            self._clients.add(client)
        payload = Payload(
            "txn",
            client,
            self.index + 1,
            0,
            time_ms,
            ops.encode_txn({}, wire_ops) if body is None else body,
            SESSION_PLACED,
        )
        return self.append(Entry(self.index + 1, 1, EntryKind.NORMAL, encode_payload(payload)))

    def noop(self) -> list[Applied]:
        """A leader's first entry (outcome "noop")."""
        return self.append(Entry(self.index + 1, 1, EntryKind.NOOP, b""))

    def append(self, entry: Entry) -> list[Applied]:
        self.index += 1
        assert entry.index == self.index
        ready = Ready(
            HardState(1, "a", self.index), (entry,), None, (), (entry,), (), Role.LEADER, "a", 1
        )
        results: list[Applied] = []
        self.storage.write(ready, lambda txn: results.extend(self.sm.apply_batch(txn, (entry,))))
        self.streams.record_events(results)
        return results

    def subscribe(
        self, identity: bytes, req_id: int, start: int = 0, model: int | None = wire.DATA_MODEL
    ) -> None:
        body: dict[str, Any] = {"from": start}
        if model is not None:
            body["model"] = model
        frame = wire.Frame(wire.FrameType.SUBSCRIBE, req_id, body)
        self.streams.on_subscribe(identity, frame, 0.0)

    def sent_to(self, identity: bytes) -> int:
        return sum(len(data) for who, data in self.clients.sent if who == identity)

    def close(self) -> None:
        self.streams.close()
        self.storage.close()
