"""Review 21's open finding against a real agent: a partial subscriber slower than the log's
retention gets its LOAD answered (docs/virtual-heap.md 4.1, "A LOAD behind a held snapshot").

One agent, flags that make the app's stream slow on purpose, never a timing: every stream frame
waits for the app's acknowledgement (`--subscriber-backlog-bytes-max 1`), the raw app
acknowledges only when the test says; the agent keeps a few entries of log
(`--log-retain-entries`) and none in memory (`--events-cache-bytes-max 1`). The app holds a list
another client writes, and LOADs a second node while its stream is behind. Each round the writer
writes past the log's retention before the app acknowledges what it got: the stream finds the
entries it needs compacted and sends a held snapshot. Before the fix the LOAD was read again at
a newer index once the snapshot had gone out, behind entries compacted again before the app
took them: every round a held snapshot, never the answer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS_DIR))
from superstatic_bench.loadgen import RawClient, new_oid  # noqa: E402
from support.heap_client import HeapClient  # noqa: E402

from superstatic.protocol import codec, ops, wire  # noqa: E402
from superstatic.protocol.codec import Ref  # noqa: E402
from superstatic.tools.localcluster import LocalCluster  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("unkeyed_clients")]

RETAIN_ENTRIES = 3
# Writes per round: past the retention (compaction keeps RETAIN_ENTRIES, at most 1.5 times).
WRITES_PAST = 4 * RETAIN_ENTRIES
# Rounds the app gets (the fixed agent answers in the first after a held snapshot).
ROUNDS_MAX = 6
FRAME_WAIT_S = 30.0


def _flags() -> list[str]:
    return [
        "--log-retain-entries", str(RETAIN_ENTRIES),
        "--events-cache-bytes-max", "1",
        "--subscriber-backlog-bytes-max", "1",
    ]  # fmt: skip


def _commit(writer: RawClient, wire_ops: list[Any]) -> int:
    reply = writer.propose(ops.encode_txn({}, wire_ops))
    assert reply["outcome"] == "ok", reply
    return int(reply["index"])


def _next_frame(app: HeapClient) -> wire.Frame:
    """The stream's next frame (one per acknowledgement, with a backlog bound of one byte)."""
    count = len(app.stream())
    app.wait_for("the next stream frame", lambda: len(app.stream()) > count, FRAME_WAIT_S)
    return app.stream()[count]


def test_a_load_of_an_app_slower_than_the_log_retention_is_answered(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "agents", size=1, keyed=False, agent_args=_flags()) as cluster:
        cluster.start()
        (agent,) = cluster.agents
        cluster.leader()
        endpoint = cluster.agents[agent].client_endpoint
        writer = RawClient(endpoint)
        listed, wanted_oid = (
            new_oid(writer.client_id),
            new_oid(writer.client_id),
        )  # its own (rules 3)
        app = HeapClient(endpoint, "heapleft-slow-app")
        try:
            _commit(
                writer,
                [
                    ["new", "@roots", "dict", [["w", Ref(listed)], ["x", Ref(wanted_oid)]]],
                    ["new", listed, "list", []],
                    ["new", wanted_oid, "list", ["wanted"]],
                ],
            )
            assert app.hello()["heap"] == wire.HEAP_VERSION
            app.subscribe(0)
            app.loaded(0)
            app.loaded(app.load([listed]))  # the app holds the list the writer extends
            app.auto_ack = False
            for n in range(3):
                _commit(writer, [["extend", listed, [f"w{n}"]]])
            _next_frame(app)  # the first write's event; the others wait for an acknowledgement
            wanted = app.load([wanted_oid])
            held_snapshots = 0
            for round_ in range(ROUNDS_MAX):
                for i in range(WRITES_PAST):
                    _commit(writer, [["extend", listed, [f"r{round_}.{i}"]]])
                app.ack()
                frame = _next_frame(app)
                if frame.type is wire.FrameType.LOADED and frame.body["load"] == 0:
                    held_snapshots += 1
                if frame.type is wire.FrameType.LOADED and frame.body["load"] == wanted:
                    break
            else:
                raise AssertionError(
                    f"LOAD {wanted} not answered in {ROUNDS_MAX} rounds: {held_snapshots} held "
                    f"snapshots instead; stream {app.summary()}"
                )
            assert held_snapshots >= 1, "the stream never jumped: nothing was reproduced"
            assert frame.body["last"]
            values = [codec.loads(i[2]) for i in frame.body["items"] if i[0] in (1, 2, 3)]
            assert values == [["wanted"]], frame.body["items"]
        finally:
            app.close()
            writer.close()
