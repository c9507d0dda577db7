"""What the server calls to be observed: one object, a few hooks (docs/operations.md).

The server makes one `Observer` first thing (so a taken `--metrics` port fails the start
before LMDB or ZeroMQ are opened), calls `start(server)` once it is built, the hooks from its
loop, and `close()` first thing when it stops. The hooks are the `Recorder`'s bound methods
(agent/metrics.py): no indirection on the hot path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from superstatic_agent import logs
from superstatic_agent.config import AgentConfig, parse_metrics_address
from superstatic_agent.metrics import Recorder

if TYPE_CHECKING:
    from superstatic_agent.http_status import HttpStatus
    from superstatic_agent.server import Server


class Observer:
    def __init__(self, config: AgentConfig) -> None:
        self.recorder = Recorder(
            config.node_id, config.timeout_ms_proposal, publishing=bool(config.metrics_endpoint)
        )
        self.http: HttpStatus | None = None
        if config.metrics_endpoint:
            from superstatic_agent.http_status import HttpStatus

            address = parse_metrics_address(config.metrics_endpoint, insecure=config.insecure)
            self.http = HttpStatus(address, self.recorder)
        r = self.recorder
        self.on_ready = r.on_ready
        self.on_answered = r.on_answered
        self.on_error = r.on_error
        self.on_halt = r.on_halt
        self.housekeeping = r.housekeeping

    def start(self, server: Server) -> None:
        self.recorder.start(server)
        server.storage.sync_observer = self.recorder.on_sync
        self.recorder.log_limit = logs.current_limit
        if self.http is not None:
            self.recorder.housekeeping(time.monotonic())  # the page has figures from the start
            self.http.start()

    def extend_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """STATUS gains `recent`: throughput and commit latency over the last second."""
        status["recent"] = self.recorder.recent()
        return status

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None
