"""SNAPSHOT frames (format 2: node headers and runs) in tests: reading them in tests that
subscribe with a raw socket (the library's own StreamFeeder assembles them into whole nodes),
and making them from node records with the agent's producer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from superstatic_agent import app_snapshot

from superstatic.client.stream import StreamFeeder
from superstatic.protocol import wire


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


def frames_of(recs: list[tuple[str, bytes]], frame_bytes_max: int) -> list[dict[str, Any]]:
    """The SNAPSHOT bodies (index 9, log time 1234) the agent's producer makes of whole node
    records (oid, codec.encode_record(...)), through the wire codec as an app receives them."""
    item_lists = list(
        app_snapshot.snapshot_frames(app_snapshot.nodes_of_records(iter(recs)), frame_bytes_max)
    )
    bodies = []
    for part, items in enumerate(item_lists):
        body = app_snapshot.frame_body(9, part, part == len(item_lists) - 1, 1234, items)
        # Through the wire codec, as an app receives it (scanned with the agent-frame limits).
        data = wire.encode(wire.FrameType.SNAPSHOT, 1, body)
        bodies.append(wire.decode(data, wire.AGENT_TO_CLIENT).body)
    return bodies
