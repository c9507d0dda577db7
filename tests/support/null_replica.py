"""A ReplicaSink that only follows the applied index: for tests whose state is checked at the
agents, not in the app's replica."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class NullReplica:
    def __init__(self) -> None:
        self.applied_index = 0

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, bytes]]) -> None:
        for _ in nodes:
            pass
        self.applied_index = index

    def apply_events(self, events: Sequence[tuple[Any, ...]]) -> None:
        for event in events:
            self.applied_index = event[0]
