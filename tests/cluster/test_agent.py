"""The agent as a process: real `python -m superstatic_agent` clusters on loopback.

Clients here speak the wire protocol directly (superstatic_bench.loadgen.RawClient), so these
tests exercise the agent alone: commits from concurrent clients, kill -9 of the leader, catch-up
after a restart, exactly-once answers to retries, learners, compaction with snapshots, a
full-cluster restart, garbage on both endpoints, SIGTERM, and `superstatic status`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import zmq
from superstatic_bench.loadgen import (
    AgentError,
    RawClient,
    root_oid,
    txn_extend,
)
from support.snapshots import snapshot_feeder

from superstatic.client import keys as client_keys
from superstatic.client import oneshot
from superstatic.protocol import ops, wire
from superstatic.protocol.errors import Unavailable
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
TIMEOUT_MS_ATTEMPT = 1_500
WRITERS = 4
VALUES_PER_WRITER = 600  # 2,400 entries across the writers


def inspect(cluster: LocalCluster, node: str, root: str) -> Any:
    reply = oneshot.request(
        cluster.agents[node].client_endpoint, wire.FrameType.INSPECT, {"root": root}
    )
    assert reply["found"], (node, root)
    return reply["value"]


def applied(cluster: LocalCluster, node: str) -> int:
    return int(cluster.status(node)["applied"])


def caught_up(cluster: LocalCluster, nodes: list[str]) -> Callable[[], bool]:
    """True once every node applied what the leader had committed when first asked."""
    target: list[int] = []

    def check() -> bool:
        if not target:
            target.append(int(cluster.status(cluster.leader())["commit"]))
        return all(applied(cluster, node) >= target[0] for node in nodes)

    return check


class Writer(threading.Thread):
    """Appends 0..count-1 to its list root, one entry each, through any agent: a request
    that fails or times out is retried (same seq) on the next agent until acknowledged."""

    def __init__(self, name: str, endpoints: list[str], count: int, start_at: int = 0) -> None:
        super().__init__(name=f"writer-{name}", daemon=True)
        self.root = name
        self.endpoints = endpoints
        self.count = count
        self.start_at = start_at
        self.acked: list[int] = []
        self.dups = 0
        self.error: BaseException | None = None
        self.client_id = os.urandom(16).hex()

    def run(self) -> None:
        clients = [RawClient(e, client_id=self.client_id) for e in self.endpoints]
        self.current = self.start_at % len(clients)
        try:
            self.deadline = time.monotonic() + 4 * TIMEOUT_S_WAIT
            # Seq 1 opens the session; every client of this writer names it.
            session = self.commit(clients, "open", b"", 1)["index"]
            for client in clients:
                client.session = session
            for value in range(self.count):
                reply = self.commit(clients, "txn", txn_extend(self.root, [value]), value + 2)
                assert reply["outcome"] == "ok", reply
                self.dups += bool(reply["dup"])
                self.acked.append(value)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            for client in clients:
                client.close()

    def commit(self, clients: list[RawClient], kind: str, body: bytes, seq: int) -> dict[str, Any]:
        """Proposes (client, seq) through the agents in turn until one answers it."""
        while True:
            assert time.monotonic() < self.deadline, f"{self.root}: seq {seq} never acked"
            client = clients[self.current]
            try:
                req = client.send(
                    wire.FrameType.PROPOSE, client.propose_body(body, seq, kind, seq_low=seq)
                )
                return client.wait(req, TIMEOUT_MS_ATTEMPT)
            except (AgentError, Unavailable):
                self.current = (self.current + 1) % len(clients)
                time.sleep(0.02)


def check_lists(cluster: LocalCluster, node: str, writers: list[Writer]) -> dict[str, list[int]]:
    """Every acknowledged value is in its list exactly once; nothing else is there."""
    lists = {}
    for writer in writers:
        values = inspect(cluster, node, writer.root)
        assert len(values) == len(set(values)), f"{node}: a value applied twice in {writer.root}"
        missing = set(writer.acked) - set(values)
        assert not missing, f"{node}: acknowledged values lost from {writer.root}: {missing}"
        assert set(values) <= set(range(writer.count)), (node, writer.root)
        lists[writer.root] = values
    return lists


class StreamReader(threading.Thread):
    """Follows one agent's SUBSCRIBE stream from 0 (a snapshot, then events) and rebuilds the
    list roots from it, checking that the stream has no gaps."""

    def __init__(self, endpoint: str, names: list[str]) -> None:
        super().__init__(name="stream-reader", daemon=True)
        self.endpoint = endpoint
        self.lists: dict[str, list[Any]] = {name: [] for name in names}
        self.index = -1
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.feeder, self.capture = snapshot_feeder()

    def run(self) -> None:
        client = RawClient(self.endpoint)
        try:
            req = client.send(wire.FrameType.SUBSCRIBE, {"from": 0, "model": wire.DATA_MODEL})
            last_ping = time.monotonic()
            while not self.stop.is_set():
                if time.monotonic() - last_ping > 1.0:
                    client.send(wire.FrameType.PING, {})  # a silent subscriber is dropped
                    last_ping = time.monotonic()
                frame = client.recv(200)
                if frame is None or frame.req_id != req:
                    continue
                self.feed(frame)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            client.close()

    def feed(self, frame: wire.Frame) -> None:
        # Each list's node, as create_roots made it (its client's oids: rules 3).
        names = {root_oid(name): name for name in self.lists}
        if frame.type is wire.FrameType.SNAPSHOT:
            if self.feeder.feed_snapshot(frame.body):
                for oid, (_version, kind, contents) in self.capture.nodes.items():
                    if oid in names:
                        assert kind == "list"
                        self.lists[names[oid]] = list(contents)
                self.index = frame.body["index"]
            return
        assert frame.type is wire.FrameType.EVENTS, frame
        assert self.index >= 0, "events before the snapshot"
        for ev_index, _client, _seq, outcome, body, _collected, *_time in frame.body["ev"]:
            assert ev_index == self.index + 1, f"gap in the stream: {ev_index} after {self.index}"
            self.index = ev_index
            if outcome == "ok" and body:
                for op in ops.decode_txn(body)[1]:
                    if op[0] == "extend" and op[1] in names:
                        self.lists[names[op[1]]].extend(op[2])

    def result(self, upto: int, cluster: LocalCluster) -> dict[str, list[Any]]:
        cluster.wait_until(
            lambda: self.index >= upto or self.error is not None, "the stream", TIMEOUT_S_WAIT
        )
        self.stop.set()
        self.join(10)
        if self.error is not None:
            raise AssertionError(f"stream reader: {self.error!r}")
        return self.lists


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    made: list[LocalCluster] = []

    def make(*agent_args: str, keyed: bool = True) -> LocalCluster:
        base = tmp_path / f"c{len(made)}"
        cluster = LocalCluster(base, size=3, agent_args=agent_args, keyed=keyed)
        made.append(cluster)
        cluster.start()
        cluster.leader()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


def create_roots(cluster: LocalCluster, names: list[str]) -> None:
    client = RawClient(cluster.agents[cluster.leader()].client_endpoint)
    try:
        reply = client.propose(client.roots_txn(dict.fromkeys(names, "list")))
        assert reply["outcome"] == "ok", reply
    finally:
        client.close()


def run_writers(writers: list[Writer], cluster: LocalCluster) -> None:
    for writer in writers:
        writer.join(4 * TIMEOUT_S_WAIT)
        assert not writer.is_alive(), f"{writer.name} hung\n{cluster.logs()}"
        if writer.error is not None:
            raise AssertionError(f"{writer.name}: {writer.error!r}\n{cluster.logs()}")


def test_commits_survive_leader_kill_and_restart_catches_up(
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = cluster_factory()
    names = [f"w{i}" for i in range(WRITERS)] + ["dup"]
    create_roots(cluster, names)
    endpoints = cluster.client_endpoints()
    first_leader = cluster.leader()
    watched = next(n for n in cluster.agents if n != first_leader)
    reader = StreamReader(cluster.agents[watched].client_endpoint, names)
    reader.start()
    writers = [Writer(f"w{i}", endpoints, VALUES_PER_WRITER, start_at=i) for i in range(WRITERS)]
    for writer in writers:
        writer.start()
    total = WRITERS * VALUES_PER_WRITER
    cluster.wait_until(
        lambda: sum(len(w.acked) for w in writers) >= total // 3, "a third acked", TIMEOUT_S_WAIT
    )
    old_leader = cluster.leader()
    term_before = int(cluster.status(old_leader)["term"])
    cluster.kill(old_leader)
    survivors = [n for n in cluster.agents if n != old_leader]
    run_writers(writers, cluster)
    assert sum(len(w.acked) for w in writers) == total
    new_leader = cluster.leader()
    assert new_leader != old_leader
    assert int(cluster.status(new_leader)["term"]) > term_before
    cluster.wait_until(
        caught_up(cluster, survivors), "survivors applied the commit", TIMEOUT_S_WAIT
    )
    reference = check_lists(cluster, new_leader, writers)
    for node in survivors:
        assert check_lists(cluster, node, writers) == reference

    # Exactly-once: the same (client, seq) again, through the leader and a follower, is
    # answered with the first outcome and index, flagged dup, and applied once.
    follower = next(n for n in survivors if n != new_leader)
    first = RawClient(cluster.agents[new_leader].client_endpoint)
    first.open_session()
    again = RawClient(
        cluster.agents[follower].client_endpoint,
        client_id=first.client_id,
        session=first.session,
    )
    try:
        body = txn_extend("dup", ["once"])
        original = first.propose(body, seq=7)
        assert original["outcome"] == "ok" and not original["dup"], original
        retry = first.propose(body, seq=7)
        assert retry == {**original, "dup": True}, (retry, original)
        via_follower = again.propose(body, seq=7)
        assert via_follower == {**original, "dup": True}, (via_follower, original)
    finally:
        first.close()
        again.close()
    cluster.wait_until(caught_up(cluster, survivors), "dup entries applied", TIMEOUT_S_WAIT)
    for node in survivors:
        assert inspect(cluster, node, "dup") == ["once"]

    # The stream a replica followed through all this holds the same lists, without gaps.
    streamed = reader.result(applied(cluster, watched), cluster)
    assert {name: streamed[name] for name in reference} == reference
    assert streamed["dup"] == ["once"]

    # The killed agent restarts from its LMDB and catches up.
    cluster.start_agent(old_leader)
    cluster.wait_until(
        caught_up(cluster, list(cluster.agents)), "the restarted agent caught up", TIMEOUT_S_WAIT
    )
    assert check_lists(cluster, old_leader, writers) == reference
    assert inspect(cluster, old_leader, "dup") == ["once"]


def test_learner_follows_snapshots_and_full_restart_keeps_everything(
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    # A small retention makes the leader compact, so the learner needs a snapshot to join.
    cluster = cluster_factory("--log-retain-entries", "100")
    create_roots(cluster, ["w0", "w1"])
    endpoints = cluster.client_endpoints()
    writers = [Writer("w0", endpoints, 300)]
    writers[0].start()
    run_writers(writers, cluster)
    leader = cluster.leader()
    cluster.wait_until(
        lambda: int(cluster.status(leader)["log_first"]) > 1, "the leader compacted", TIMEOUT_S_WAIT
    )

    learner = cluster.add_learner("d").id
    all_nodes = list(cluster.agents)
    cluster.wait_until(caught_up(cluster, all_nodes), "the learner caught up", TIMEOUT_S_WAIT)
    status = cluster.status(learner)
    assert status["voter"] is False and status["role"] == "follower"
    assert status["leader"] == cluster.leader()
    members = {m["id"]: m for m in cluster.status(cluster.leader())["members"]}
    assert members[learner]["voter"] is False
    reference = check_lists(cluster, leader, writers)
    assert check_lists(cluster, learner, writers) == reference
    assert "installed snapshot" in (cluster.base_dir / "d.log").read_text()

    # The learner keeps following new entries (and never votes: the voters still decide).
    more = Writer("w1", endpoints, 50)
    more.start()
    run_writers([more], cluster)
    cluster.wait_until(caught_up(cluster, all_nodes), "the learner followed", TIMEOUT_S_WAIT)
    reference = check_lists(cluster, leader, [*writers, more])
    assert check_lists(cluster, learner, [*writers, more]) == reference

    # Full restart: every agent stops on SIGTERM (exit 0), comes back, nothing is lost.
    for node in all_nodes:
        cluster.stop(node)
        process = cluster.agents[node].process
        assert process is not None and process.returncode == 0, (node, process)
    for node in all_nodes:
        cluster.start_agent(node)
    cluster.leader()
    for node in all_nodes:
        # Applied state is durable: each agent serves it again straight from LMDB.
        cluster.wait_until(
            lambda n=node: applied(cluster, n) > 0, f"{node} serving again", TIMEOUT_S_WAIT
        )
        assert check_lists(cluster, node, [*writers, more]) == reference, node
    client = RawClient(cluster.agents[cluster.leader()].client_endpoint)
    try:
        assert client.propose(txn_extend("w1", [1_000]))["outcome"] == "ok"
    finally:
        client.close()


def _client_garbage(endpoint: str) -> list[bytes]:
    """Sends garbage to a client endpoint; returns the ERROR bodies' codes it got back."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    answers: list[bytes] = []
    try:
        frames = [
            os.urandom(64),
            b"",
            cbor2.dumps([99, int(wire.FrameType.STATUS), 11, {}]),  # wrong version
            cbor2.dumps([wire.PROTOCOL_VERSION, int(wire.FrameType.REPLY), 12, {}]),  # direction
            cbor2.dumps([wire.PROTOCOL_VERSION, 200, 13, {}]),  # unknown type
            cbor2.dumps([wire.PROTOCOL_VERSION, int(wire.FrameType.PING), 14, "not a map"]),
            wire.encode(wire.FrameType.PROPOSE, 15, {"client": 5, "seq": "x"}),
            wire.encode(wire.FrameType.SUBSCRIBE, 16, {"from": -3}),
            wire.encode(wire.FrameType.INSPECT, 17, {"root": ["list"]}),
            b"\x81" * 5_000 + b"\x00",  # nesting far past the depth limit
        ]
        for data in frames:
            sock.send(data)
        sock.send_multipart([b"two", b"parts"])
        too_big = wire.encode(
            wire.FrameType.PROPOSE,
            18,
            {"client": "c" * 8, "seq": 1, "seq_low": 0, "kind": "txn", "body": b"\0" * (9 << 20)},
        )
        sock.send(too_big)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(answers) < 8:
            if sock.poll(1_000, zmq.POLLIN):
                frame = wire.decode(sock.recv(), wire.AGENT_TO_CLIENT)
                assert frame.type is wire.FrameType.ERROR, frame
                answers.append(frame.body["code"].encode())
    finally:
        sock.close(linger=0)
    # A frame above FRAME_BYTES_MAX: zmq drops the connection before buffering it all.
    huge = ctx.socket(zmq.DEALER)
    huge.setsockopt(zmq.LINGER, 0)
    huge.connect(endpoint)
    try:
        huge.send(b"\0" * (wire.FRAME_BYTES_MAX + 1024))
        time.sleep(0.3)
    finally:
        huge.close(linger=0)
    return answers


def _peer_garbage(endpoint: str, impersonate: str, to: str) -> None:
    """The same garbage from a stranger's socket (dropped unread: peer_unknown_sender) and
    from a socket claiming a member's identity (decoded and refused: peer_bad_frame)."""
    ctx = zmq.Context.instance()
    for identity in ("intruder", impersonate):
        other = impersonate if identity == "intruder" else "intruder"
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.connect(endpoint)
        envelope = [1, 0, 5, identity, to, 1, 0, 0, b"", 0, False, 0, b"", None]
        try:
            time.sleep(0.2)
            bad = [
                os.urandom(100),
                cbor2.dumps([2, 0]),  # unknown protocol version
                cbor2.dumps([1, 9, "x"]),  # unknown kind
                cbor2.dumps([1, 0, 5, 7, 8, "term", 0, 0, b"", 0, False, 0, b"", None]),  # types
                cbor2.dumps([*envelope[:2], 99, *envelope[3:]]),  # unknown message type
                # An APPEND whose entries are not contiguous after prev index 0.
                cbor2.dumps([*envelope[:8], cbor2.dumps([[5, 1, 0, b"x"]]), *envelope[9:]]),
                # A SNAPSHOT meta with a voter listed twice.
                cbor2.dumps([*envelope[:2], 9, *envelope[3:13], [5, 1, ["a", "a"], [], []]]),
                # A well-formed message claiming another sender: refused by identity.
                cbor2.dumps([*envelope[:3], other, *envelope[4:]]),
                b"\xff" * 1000,
            ]
            for data in bad:
                sock.send(data)
            sock.send_multipart([b"a", b"b"])
            time.sleep(0.3)
        finally:
            sock.close(linger=0)


def test_garbage_on_both_endpoints_changes_nothing_and_status_prints(
    cluster_factory: Callable[..., LocalCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without keys: the garbage comes from anyone who reaches a port (with keys, a stranger
    # cannot connect at all: tests/cluster/test_security.py), so the clients present none.
    monkeypatch.delenv(client_keys.ENV_KEYS, raising=False)
    cluster = cluster_factory(keyed=False)
    create_roots(cluster, ["w0"])
    leader = cluster.leader()
    follower = next(n for n in cluster.agents if n != leader)
    before = {n: cluster.status(n) for n in cluster.agents}

    codes = _client_garbage(cluster.agents[leader].client_endpoint)
    # Frames with a readable req_id are answered (bad_request / too_large); the rest dropped.
    assert codes.count(b"too_large") == 1, codes
    assert codes.count(b"bad_request") >= 6, codes
    _peer_garbage(cluster.agents[follower].peer_endpoint, impersonate=leader, to=follower)
    _peer_garbage(cluster.agents[leader].peer_endpoint, impersonate=follower, to=leader)

    # Still serving, and the garbage wrote nothing: the list holds exactly what was written.
    writer = Writer("w0", cluster.client_endpoints(), 20)
    writer.start()
    run_writers([writer], cluster)
    cluster.wait_until(caught_up(cluster, list(cluster.agents)), "all applied", TIMEOUT_S_WAIT)
    after = {n: cluster.status(n) for n in cluster.agents}
    for node in cluster.agents:
        assert inspect(cluster, node, "w0") == list(range(20)), node
        assert after[node]["applied"] > before[node]["applied"], node
    leader_drops = after[leader]["dropped"]
    follower_drops = after[follower]["dropped"]
    assert leader_drops.get("client_bad_frame", 0) >= 5, leader_drops
    assert follower_drops.get("peer_bad_frame", 0) >= 7, follower_drops
    assert follower_drops.get("peer_wrong_sender", 0) >= 1, follower_drops
    assert follower_drops.get("peer_unknown_sender", 0) >= 9, follower_drops

    # `superstatic status`: the table and the JSON map.
    leader = cluster.leader()
    command = [sys.executable, "-m", "superstatic.tools.cli", "status", "--agent"]
    endpoint = cluster.agents[leader].client_endpoint
    table = subprocess.run(
        [*command, endpoint], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"agent {leader}: leader" in table, table
    rows = [line.split()[:3] for line in table.splitlines()]
    for node in cluster.agents:
        assert [node, "leader" if node == leader else "-", "voter"] in rows, table
    raw = subprocess.run(
        [*command, endpoint, "--json"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    status = json.loads(raw)
    assert status["role"] == "leader" and status["leader"] == leader
    assert {m["id"] for m in status["members"]} == set(cluster.agents)
    # The leader knows every other member's replication progress.
    assert all(isinstance(m["match"], int) for m in status["members"]), status["members"]
