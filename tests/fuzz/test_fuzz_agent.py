"""A fuzzer against real agents: every frame type of both ports, hostile.

One 3-agent cluster per module. Each hypothesis example is a batch of shots: valid frames with
hostile fields, mutated valid frames, random bytes and issue 8's reproductions, sent to the
client port, and to the peer port both from a stranger's identity and from a socket claiming a
member's identity. After every batch, on every agent:

- it answers STATUS within TIMEOUT_MS_STATUS (a generous liveness bound);
- its resident memory (VmRSS) stays under `rss_bound_bytes`, derived from its flags (below
  and docs/agent.md "Limits and hostile input");
- an honest client's write commits.

Bounded to about a minute in CI; SUPERSTATIC_FUZZ_EXAMPLES=N runs N batches (scripts/fuzz).

What a member's identity may send is constrained to frames that cannot pass for valid Raft
(their term is at least 2**40, or a field is malformed): the peer port is not authenticated,
and a stranger speaking *valid* Raft under a member's name is out of scope (docs/agent.md).
MEMBERS requests never name a real member and add learners only at unusable addresses, for the
same reason: they are operator commands, not garbage.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from superstatic_agent.cli import config_from, parser
from superstatic_agent.config import transport_memory_bytes

TESTS_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS_DIR))
from superstatic_bench.loadgen import AgentError, RawClient  # noqa: E402
from support import hostile  # noqa: E402

from superstatic.protocol import codec, ops, wire  # noqa: E402
from superstatic.protocol.errors import Error  # noqa: E402
from superstatic.tools.localcluster import LocalCluster  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.fuzz,
    pytest.mark.usefixtures("unkeyed_clients"),
]

EXAMPLES_DEFAULT = 100  # about a minute here (0.3-0.6 s a batch on a shared 2-core machine)
EXAMPLES = int(os.environ.get("SUPERSTATIC_FUZZ_EXAMPLES", EXAMPLES_DEFAULT))
TIMEOUT_MS_STATUS = 5_000
TIMEOUT_S_HONEST_WRITE = 30.0
SHOTS_PER_BATCH_MAX = 12
PING_REQ_ID = 0xF00D  # the PING closing each batch on a client socket
MIB = 1 << 20

# The fuzzed agents run with tighter queue flags than the defaults, so the memory bound below is
# tight enough to mean something (the defaults give the same formula with larger numbers).
CLIENT_RECV_QUEUE_FRAMES = 4
PEER_RECV_QUEUE_FRAMES = 2
PEER_FRAME_BYTES = 16 * MIB
RECV_BYTES_PER_TURN = 16 * MIB
AGENT_ARGS = [
    "--client-recv-queue-frames-max",
    str(CLIENT_RECV_QUEUE_FRAMES),
    "--peer-recv-queue-frames-max",
    str(PEER_RECV_QUEUE_FRAMES),
    "--peer-frame-bytes-max",
    str(PEER_FRAME_BYTES),
    "--recv-bytes-per-turn-max",
    str(RECV_BYTES_PER_TURN),
]
# Connections open to one agent at once: the fuzzer's client socket, the honest client and a
# STATUS probe; on the peer port the two other members, a stranger and a claimed identity.
CLIENT_CONNECTIONS = 3
PEER_CONNECTIONS = 4
# Everything else an agent may grow by during a run: Python heap (sessions, cached events and
# node records of the honest writes), LMDB pages touched, allocator slack.
SLACK_BYTES = 96 * MIB


def rss_bound_bytes(idle_rss_bytes: int, peers_arg: str) -> int:
    """docs/agent.md: an agent's memory beyond its idle size is at most its receive queues
    ((frames + 1) x the largest frame, per connection) and one turn's frames from each socket
    (`config.transport_memory_bytes`), and its caches (SLACK_BYTES here: the fuzz writes little)."""
    # Only parsed: a loopback client endpoint (an unkeyed agent binds nothing else).
    client = "tcp://127.0.0.1:1"
    args = ["--id", "a", "--data-dir", "x", "--peers", peers_arg, "--client", client, *AGENT_ARGS]
    config = config_from(parser().parse_args(args))
    transport = transport_memory_bytes(
        config, client_connections=CLIENT_CONNECTIONS, peer_connections=PEER_CONNECTIONS
    )
    return idle_rss_bytes + transport + SLACK_BYTES


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Harness:
    """The cluster, an honest client, and the measurements every batch is checked against."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.ids = sorted(cluster.agents)
        self.honest: dict[str, RawClient] = {}
        self.honest_id = secrets.token_hex(16)
        self.seq = 0
        self.session = 0  # the honest client's session (its "open" entry's index), once opened
        self.batches = 0
        self.shots = 0
        self.rss_max: dict[str, int] = dict.fromkeys(self.ids, 0)
        self.honest_write()
        self.rss_bound = {
            n: rss_bound_bytes(rss_bytes(self.pid(n)), cluster.peers_arg) for n in self.ids
        }

    def pid(self, node: str) -> int:
        pid = self.cluster.agents[node].pid
        assert pid is not None
        return pid

    def client(self, node: str) -> RawClient:
        if node not in self.honest:
            endpoint = self.cluster.agents[node].client_endpoint
            self.honest[node] = RawClient(endpoint, client_id=self.honest_id)
        self.honest[node].session = self.session  # one session, whichever agent carries it
        return self.honest[node]

    def honest_write(self) -> None:
        """One blind write, retried with its seq through any agent until it commits."""
        if self.session == 0:
            self.session = self.commit(b"", "open")["index"]
        self.commit(ops.encode_txn({}, []), "txn")

    def commit(self, body: bytes, kind: str) -> dict[str, Any]:
        """Proposes (the honest client, the next seq) through any agent until it commits."""
        self.seq += 1
        deadline = time.monotonic() + TIMEOUT_S_HONEST_WRITE
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.ids:
                try:
                    reply = self.client(node).propose(
                        body, seq=self.seq, kind=kind, timeout_ms=3_000
                    )
                except (AgentError, Error) as exc:  # not_leader, busy, a timeout: retry
                    last = exc
                    continue
                assert reply["outcome"] == "ok", reply
                return reply
            time.sleep(0.2)
        raise AssertionError(f"an honest write did not commit: {last!r}\n{self.cluster.logs()}")

    def check(self) -> None:
        for node in self.ids:
            spec = self.cluster.agents[node]
            assert spec.alive(), f"agent {node} died\n{self.cluster.logs()}"
            self.cluster.status(node, timeout_ms=TIMEOUT_MS_STATUS)
            rss = rss_bytes(self.pid(node))
            self.rss_max[node] = max(self.rss_max[node], rss)
            assert rss <= self.rss_bound[node], (node, rss, self.rss_bound[node])
        self.honest_write()

    def close(self) -> None:
        for client in self.honest.values():
            client.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    base = tmp_path_factory.mktemp("fuzz") / "agents"
    # Without keys: the fuzzer is anyone who reaches a port (with keys, only key holders can).
    with LocalCluster(base, size=3, agent_args=AGENT_ARGS, keyed=False) as cluster:
        cluster.start()
        cluster.leader()
        h = Harness(cluster)
        try:
            yield h
        finally:
            dropped = {n: h.cluster.status(n)["dropped"] for n in h.ids}
            h.close()
            print("\nfuzz: frames each agent refused, by reason:")
            for node, counts in dropped.items():
                print(f"  {node}: {dict(sorted(counts.items()))}")
            mib = {n: round(v / MIB) for n, v in h.rss_max.items()}
            bound = {n: round(v / MIB) for n, v in h.rss_bound.items()}
            print(f"\nfuzz: {h.batches} batches, {h.shots} shots; max RSS MiB {mib}, bound {bound}")


# -- strategies --------------------------------------------------------------------------------

BOUNDARY_INTS = [
    0,
    1,
    -1,
    2,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
    1 << 64,
    -(1 << 64),
    10**30,
]
hostile_scalars = st.one_of(
    st.sampled_from(BOUNDARY_INTS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.just("x" * 5_000),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)), inner, max_size=3),
    ),
    max_leaves=12,
)
# Raw CBOR items cbor2 would never write: shared references, foreign tags, huge ints, ...
RAW_HOSTILE_ITEMS = [
    hostile.HUGE_INT,
    hostile.shared_dag(9, 10),
    hostile.semantic_tags_body(),
    hostile.tag(28, hostile.arr()),
    hostile.tag(29, hostile.uint(0)),
    hostile.tag(35, hostile.text("(a+)+$")),
    hostile.tag(4, hostile.arr(hostile.uint(1), hostile.bignum(8 * 4_000))),
    hostile.head(4, 1 << 40),  # an array promising 2**40 items
    b"\x9f\x80\xff",  # indefinite array
    b"\xf7",  # undefined
    b"\x81" * 300 + b"\x80",  # deep
]


def raw_item(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A field's CBOR: usually valid, else a hostile value or a raw hostile item."""
    return st.one_of(
        valid.map(cbor2.dumps),
        valid.map(cbor2.dumps),
        hostile_values.map(cbor2.dumps),
        st.sampled_from(RAW_HOSTILE_ITEMS),
    )


hostile_item = st.one_of(hostile_values.map(cbor2.dumps), st.sampled_from(RAW_HOSTILE_ITEMS))
# Fields corrupted in one frame: a few, so that the others pass and the checks behind them run.
CORRUPTED_FIELDS_MAX = 2


@st.composite
def fields_cbor(draw: st.DrawFn, valid: list[st.SearchStrategy[Any]]) -> list[bytes]:
    """The CBOR of each field: valid, except up to CORRUPTED_FIELDS_MAX hostile ones."""
    corrupt = draw(st.sets(st.integers(0, max(0, len(valid) - 1)), max_size=CORRUPTED_FIELDS_MAX))
    return [
        draw(hostile_item) if i in corrupt else cbor2.dumps(draw(strategy))
        for i, strategy in enumerate(valid)
    ]


def txn_bodies() -> st.SearchStrategy[bytes]:
    oid = st.one_of(st.just("n.fuzz"), st.text(min_size=1, max_size=8))
    op = st.one_of(
        st.tuples(st.just("new"), oid, st.sampled_from(["dict", "list", "obj", "x"]), st.just([])),
        st.tuples(st.just("set"), oid, st.sampled_from(["k", "__class__", "__dict__"]), st.none()),
        st.tuples(st.just("extend"), oid, st.lists(st.integers(), max_size=3)),
        st.lists(hostile_values, max_size=5),
    ).map(list)
    reads = st.dictionaries(st.text(min_size=1, max_size=8), st.sampled_from(BOUNDARY_INTS))
    valid_shape = st.builds(lambda r, o: codec.dumps({"r": r, "o": o}), reads, st.lists(op))
    raw = st.builds(
        lambda item: hostile.cmap(
            [(hostile.text("r"), hostile.cmap([])), (hostile.text("o"), hostile.arr(item))]
        ),
        st.sampled_from(RAW_HOSTILE_ITEMS),
    )
    return st.one_of(valid_shape, raw, st.binary(max_size=200), hostile_values.map(cbor2.dumps))


def heap_ids() -> st.SearchStrategy[bytes]:
    """A LOAD / DROP / HOLD "oids": CBOR arrays of plausible ids (the root table, fuzzed
    nodes), or of anything, or not CBOR."""
    oid = st.one_of(st.sampled_from(["@roots", "n.fuzz"]), st.text(min_size=1, max_size=8))
    return st.one_of(
        st.lists(oid, max_size=6).map(cbor2.dumps),
        st.lists(hostile_values, max_size=3).map(cbor2.dumps),
        st.binary(max_size=60),
    )


def heap_keys() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(cbor2.dumps([])),
        st.lists(
            st.tuples(st.just("@roots"), st.lists(st.text(max_size=4), max_size=3)).map(list),
            max_size=2,
        ).map(cbor2.dumps),
        st.binary(max_size=40),
    )


FIELDS: dict[wire.FrameType, dict[str, st.SearchStrategy[Any]]] = {
    wire.FrameType.HELLO: {"client": st.text(min_size=1, max_size=64)},
    wire.FrameType.PROPOSE: {
        "client": st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
        "seq": st.integers(1, 1_000),
        "seq_low": st.integers(0, 1),
        "kind": st.sampled_from(["txn", "open", "close"]),
        "body": txn_bodies(),
    },
    wire.FrameType.SUBSCRIBE: {
        "from": st.integers(0, 1_000),
        "model": st.sampled_from([2, 1]),
        # The virtual heap's fields (docs/virtual-heap.md section 2.2).
        "heap": st.sampled_from(["partial", "all", "x"]),
        "client": st.text(max_size=8),
        "hold_parts": st.integers(0, 3),
    },
    wire.FrameType.LOAD: {
        "sub": st.integers(0, 100),
        "oids": heap_ids(),
        "keys": heap_keys(),
        "prefetch_bytes": st.sampled_from([0, 1, 64 << 10, wire.LOAD_PREFETCH_BYTES_MAX + 1]),
    },
    wire.FrameType.DROP: {"sub": st.integers(0, 100), "oids": heap_ids(), "keys": heap_keys()},
    wire.FrameType.HOLD: {
        "sub": st.integers(0, 100),
        "part": st.integers(0, 3),
        "last": st.booleans(),
        "oids": heap_ids(),
        "keys": heap_keys(),
    },
    wire.FrameType.UNSUBSCRIBE: {},
    wire.FrameType.READ_INDEX: {},
    wire.FrameType.STATUS: {},
    wire.FrameType.INSPECT: {"root": st.text(min_size=1, max_size=20)},
    # A stream acknowledgement: [subscription req_id, bytes received].
    wire.FrameType.PING: {
        "stream": st.tuples(st.integers(0, 100), st.integers(0, 10**6)).map(list)
    },
    wire.FrameType.MEMBERS: {
        # Never a real member (ids are one letter), and learners only at unusable addresses.
        "op": st.sampled_from(["add_learner", "promote", "remove", "transfer"]),
        "node": st.text(alphabet="xyz", min_size=2, max_size=8),
        "address": st.sampled_from(["", "tcp://", "http://x", "ipc://"]),
    },
}


@st.composite
def client_frames(draw: st.DrawFn) -> bytes:
    frame_type = draw(st.sampled_from([*wire.CLIENT_TO_AGENT, wire.FrameType.REPLY]))
    names = [k for k in FIELDS.get(frame_type, {}) if draw(st.integers(0, 9))]  # some missing
    if draw(st.integers(0, 3)) == 0:
        names.append(draw(st.text(max_size=6)))  # an unknown field
    valid = [
        st.just(wire.PROTOCOL_VERSION),
        st.just(int(frame_type)),
        st.one_of(st.integers(0, 1 << 20), st.sampled_from(BOUNDARY_INTS[:7])),
        *[FIELDS.get(frame_type, {}).get(name, hostile_scalars) for name in names],
    ]
    version, type_raw, req_id, *values = draw(fields_cbor(valid))
    body = hostile.cmap([(hostile.text(k), v) for k, v in zip(names, values, strict=True)])
    if draw(st.integers(0, 19)) == 0:
        body = draw(hostile_item)  # not a map
    return hostile.arr(version, type_raw, req_id, body)


def peer_msg_frames(frm: str, to: str) -> st.SearchStrategy[bytes]:
    """MSG frames whose term is at least 2**40 (never valid Raft for this cluster) or whose
    fields are hostile; entries blobs valid-looking or not."""
    entries = st.one_of(
        st.just(b""),
        st.binary(max_size=100),
        st.lists(
            st.tuples(
                st.sampled_from(BOUNDARY_INTS),
                st.sampled_from(BOUNDARY_INTS),
                st.integers(-1, 3),
                st.one_of(st.binary(max_size=20), hostile_values),
            ).map(list),
            max_size=5,
        ).map(cbor2.dumps),
        st.sampled_from(RAW_HOSTILE_ITEMS),
    )
    snapshot = st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(BOUNDARY_INTS),
            st.sampled_from(BOUNDARY_INTS),
            st.lists(st.text(max_size=3), max_size=3),
            st.lists(st.text(max_size=3), max_size=3),
            st.lists(st.lists(st.text(max_size=3), max_size=2), max_size=2),
        ).map(list),
        hostile_values,
    )
    far_term = st.integers(min_value=1 << 40, max_value=(1 << 63) - 1)
    valid = [
        st.just(1),
        st.just(0),
        st.integers(1, 13),
        st.just(frm),
        st.just(to),
        far_term,  # kept valid below: never corrupted into a plausible term
        st.sampled_from(BOUNDARY_INTS[:5]),
        st.sampled_from(BOUNDARY_INTS[:5]),
        entries,
        st.sampled_from(BOUNDARY_INTS[:5]),
        st.booleans(),
        st.sampled_from(BOUNDARY_INTS[:5]),
        st.binary(max_size=300),
        snapshot,
    ]
    return st.builds(
        lambda fields, term: hostile.arr(*fields[:5], cbor2.dumps(term), *fields[6:]),
        fields_cbor(valid),
        far_term,
    )


def peer_other_frames(frm: str, to: str) -> st.SearchStrategy[bytes]:
    far_term = st.integers(min_value=1 << 40, max_value=(1 << 63) - 1)
    join = fields_cbor(
        [
            st.just(1),
            st.just(1),
            st.text(alphabet="zq", min_size=3, max_size=6),
            st.sampled_from(["ipc:///nonexistent/fuzz", "tcp://", "garbage"]),
        ]
    )
    chunk = st.builds(
        lambda fields, term: [*fields[:4], cbor2.dumps(term), *fields[5:]],
        fields_cbor(
            [
                st.just(1),
                st.just(2),
                st.just(frm),
                st.just(to),
                far_term,
                st.sampled_from(BOUNDARY_INTS[:5]),
                st.integers(0, 3),
                st.booleans(),
                st.binary(max_size=200),
            ]
        ),
        far_term,
    )
    return st.one_of(join, chunk).map(lambda fields: hostile.arr(*fields))


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.integers(0, 3))
        if action == 0:
            data[at] = draw(st.integers(0, 255))
        elif action == 1:
            data.insert(at, draw(st.integers(0, 255)))
        elif action == 2:
            del data[at]
        else:
            del data[at:]
    return bytes(data)


VALID_CLIENT = [
    wire.encode(wire.FrameType.PING, 1, {}),
    wire.encode(
        wire.FrameType.PROPOSE,
        2,
        {"client": "f" * 32, "seq": 1, "seq_low": 0, "kind": "txn", "body": b"\xa0"},
    ),
    wire.encode(wire.FrameType.SUBSCRIBE, 3, {"from": 5, "model": wire.DATA_MODEL}),
    wire.encode(wire.FrameType.MEMBERS, 4, {"op": "remove", "node": "zz"}),
]
BIG_CLIENT = [
    hostile.empty_arrays_ping(),
    hostile.propose(77, body=hostile.blob(b"\0" * (9 * MIB))),  # too_large
    b"\0" * (wire.FRAME_BYTES_MAX + 1024),  # above MAXMSGSIZE: the connection goes
]

# (port, agent position, bytes); port: "client", "stranger" or "member" (peer port)
Shot = tuple[str, int, bytes]


@st.composite
def shots(draw: st.DrawFn) -> Shot:
    port = draw(st.sampled_from(["client", "client", "stranger", "member"]))
    agent = draw(st.integers(0, 2))
    ids = ["a", "b", "c"]
    to = ids[agent]
    frm = ids[(agent + 1) % 3] if port == "member" else "zz"
    if port == "client":
        data = draw(
            st.one_of(
                client_frames(),
                client_frames(),
                mutated(st.sampled_from(VALID_CLIENT)),
                st.binary(max_size=500),
                st.just(hostile.dag_client_frame()),
            )
        )
        if draw(st.integers(0, 99)) == 0:
            data = draw(st.sampled_from(BIG_CLIENT))
    else:
        data = draw(
            st.one_of(
                peer_msg_frames(frm, to),
                peer_other_frames(frm, to),
                mutated(peer_msg_frames(frm, to)),
                st.binary(max_size=500),
                st.just(hostile.dag_peer_frame()),
            )
        )
    return port, agent, data


# -- the fuzzer ----------------------------------------------------------------------------------


def fire(h: Harness, batch: list[Shot]) -> None:
    ctx = zmq.Context.instance()
    sockets: dict[tuple[str, int], zmq.Socket[Any]] = {}
    try:
        for port, agent, data in batch:
            node = h.ids[agent]
            sock = sockets.get((port, agent))
            if sock is None:
                sock = sockets[(port, agent)] = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 0)
                if port == "client":
                    sock.connect(h.cluster.agents[node].client_endpoint)
                else:
                    identity = "zz" if port == "stranger" else h.ids[(agent + 1) % 3]
                    sock.setsockopt(zmq.IDENTITY, identity.encode())
                    sock.connect(h.cluster.agents[node].peer_endpoint)
            sock.send(data)
            h.shots += 1
        # The frames of one connection are handled in order: a PING answered on each client
        # socket means its batch was read (peer frames are handled as they arrive).
        for (port, _agent), sock in sockets.items():
            if port == "client":
                sock.send(wire.encode(wire.FrameType.PING, PING_REQ_ID, {}))
                deadline = time.monotonic() + TIMEOUT_MS_STATUS / 1000
                while time.monotonic() < deadline:
                    if sock.poll(100, zmq.POLLIN) and wire.salvage_req_id(sock.recv()) == (
                        PING_REQ_ID
                    ):
                        break
        time.sleep(0.05)
    finally:
        for sock in sockets.values():
            sock.close(linger=0)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(st.lists(shots(), min_size=1, max_size=SHOTS_PER_BATCH_MAX))
@example(batch=[("client", 0, hostile.dag_client_frame()), ("member", 1, hostile.dag_peer_frame())])
@example(
    batch=[("client", 0, hostile.empty_arrays_ping()), ("stranger", 2, hostile.dag_peer_frame())]
)
@example(batch=[("client", 1, hostile.propose(5, seq=hostile.HUGE_INT))])
@example(batch=[("member", 0, hostile.peer_msg(frm="b", to="a", term=hostile.HUGE_INT))])
def test_no_batch_of_hostile_frames_takes_an_agent_down(
    harness: Harness, batch: list[Shot]
) -> None:
    harness.batches += 1
    fire(harness, batch)
    harness.check()
