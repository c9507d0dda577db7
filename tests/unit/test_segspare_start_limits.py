"""segspare, review39's "Left, not verified": a store made with small Raft log segments
(`--log-segment-bytes` near its minimum; the size is stored with the store and kept) then
started with a larger body limit (AgentConfig.body_bytes_max: no command-line flag sets it
today, so this happens through the Python API or a version whose default differs). One entry
of the largest body is one log record, which must fit the log's unsynced window (a segment at
most): before this, the first such entry raised LimitExceeded out of Storage.write, which the
loop does not catch, and the agent crash-looped. Now the start is refused (StartRefused, exit
3 from the command line) with a message naming both limits."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
from superstatic_agent.config import (
    CLIENT_FRAME_ENVELOPE_BYTES,
    GC_COLLECTED_BYTES_MAX,
    AgentConfig,
)
from superstatic_agent.server import Server
from superstatic_agent.storage import StartRefused, Storage

MAP_BYTES = 64 << 20
BODY_BYTES_SMALL = 4 << 20
ENTRY_BYTES_SMALL = BODY_BYTES_SMALL + GC_COLLECTED_BYTES_MAX + CLIENT_FRAME_ENVELOPE_BYTES
SEGMENT_BYTES = 2 * ENTRY_BYTES_SMALL  # the smallest a 4 MiB body allows
BODY_BYTES_LARGE = 12 << 20  # an entry of it (~14 MiB) is more than the whole segment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_store_whose_segments_cannot_hold_the_largest_entry_is_refused_at_start(
    tmp_path: Path,
) -> None:
    store = tmp_path / "a"
    Storage(store, map_bytes=MAP_BYTES, log_segment_bytes=SEGMENT_BYTES).close()
    config = AgentConfig(
        node_id="a",
        data_dir=store,
        peers={"a": f"tcp://127.0.0.1:{free_port()}"},
        client_endpoint=f"tcp://127.0.0.1:{free_port()}",
        map_bytes=MAP_BYTES,
        body_bytes_max=BODY_BYTES_LARGE,
    )
    try:
        server = Server(config)
    except StartRefused as refused:
        message = str(refused)
    else:
        server.close()  # closed, or its sockets keep the interpreter from exiting
        pytest.fail("started on a log whose segments cannot hold its largest entry")
    assert f"body_bytes_max {BODY_BYTES_LARGE}" in message
    assert f"log_segment_bytes {SEGMENT_BYTES}" in message
    # Nothing of the store changed: it opens at its own size, and starts with the old limit.
    storage = Storage(store, map_bytes=MAP_BYTES)
    try:
        assert storage.log.segment_bytes == SEGMENT_BYTES
    finally:
        storage.close()
    small = dataclasses.replace(config, body_bytes_max=BODY_BYTES_SMALL)
    Server(small).close()
