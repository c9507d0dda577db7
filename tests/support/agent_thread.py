"""A single-voter agent (a real `Server`) in a thread of the test process, bound to 127.0.0.1 on
free ports, and the `agent` fixture that stops it in teardown: for unit tests that plant
something in the agent's loop (a bug in apply, a watch on its commits and sends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent.config import AgentConfig
from superstatic_agent.server import Server
from superstatic_bench.loadgen import RawClient

from superstatic.client.keys import NO_KEYS
from superstatic.protocol import wire
from superstatic.tools.localcluster import free_ports

TIMEOUT_MS = 10_000


class Agent:
    """A Server in a thread; `stop()` ends its loop and closes it."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        peer_port, client_port = free_ports(2)
        self.config = AgentConfig(
            node_id="a",
            data_dir=data_dir,
            peers={"a": f"tcp://127.0.0.1:{peer_port}"},
            client_endpoint=f"tcp://127.0.0.1:{client_port}",
            **overrides,
        )
        self.server = Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.client = RawClient(self.config.client_endpoint, keys=NO_KEYS)  # an unkeyed agent
        self.stopped = False
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while self.status()["leader"] != "a":  # a single voter elects itself
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        return self.client.request(wire.FrameType.STATUS, timeout_ms=TIMEOUT_MS)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.client.close()
        self.server.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path / "a")
    try:
        yield a
    finally:
        a.stop()
