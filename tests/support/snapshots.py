"""Reading SNAPSHOT frames (format 2: node headers and runs) in tests that subscribe with a
raw socket: the library's own StreamFeeder assembles them into whole nodes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from superstatic.client.stream import StreamFeeder


class SnapshotCapture:
    """A ReplicaSink that keeps the last snapshot's nodes as {oid: (version, kind, contents)}
    (contents shaped like a v1 node record's) and ignores events."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.nodes: dict[str, tuple[int, str, Any]] = {}

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, int, str, Any]]) -> None:
        self.nodes = {oid: (version, kind, contents) for oid, version, kind, contents in nodes}
        self.applied_index = index

    def apply_events(self, events: Sequence[Any]) -> None:
        self.applied_index = events[-1][0]


def snapshot_feeder() -> tuple[StreamFeeder, SnapshotCapture]:
    capture = SnapshotCapture()
    return StreamFeeder(capture), capture
