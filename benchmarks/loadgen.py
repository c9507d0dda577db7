"""Load generator: commit throughput, commit latency and failover time of a local cluster.

    python -m superstatic_bench.loadgen --clients N --seconds S [--window W] [--fsync on|off]
        [--failovers K] [--json]

Starts a LocalCluster of three agents in a temporary folder, has N client threads (each its own
DEALER and client session) propose small transactions to the leader's agent with up to W
requests in flight each, and reports entries/s and p50/p99 latency from send to REPLY (the
entry is then committed by a quorum, durable, and applied at that agent). With --failovers K it
then kill -9s the leader K times and measures the time from the kill to the next acknowledged
commit through the survivors. A benchmark reports numbers; it never fails on a slow machine.

`RawClient` is a minimal synchronous client of the wire protocol, also used by the cluster
tests (tests/cluster/test_agent.py) to speak to agents without the library.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from superstatic.client import keys as client_keys
from superstatic.protocol import codec, ops, wire
from superstatic.protocol.errors import ProtocolError, Unavailable
from superstatic.tools.localcluster import LocalCluster

TIMEOUT_MS_RAW_DEFAULT = 10_000
# The seq a RawClient's automatic session open takes when its caller numbers its own requests
# (propose(seq=...)): above any seq a test uses, so the open never answers for one of them, and
# the same for every RawClient of one client id (a retry elsewhere joins the same session).
OPEN_SEQ_RESERVED = 1 << 62
# Frames a RawClient skips while waiting for one answer (stream frames, stale answers).
FRAMES_SKIPPED_MAX = 100_000
# Keys each load client cycles through in its dict: constant-size records whatever the run.
LOAD_KEYS = 4
# Attempts to learn the post-failover commit before giving up on one measurement.
FAILOVER_ATTEMPTS_MAX = 10_000
TIMEOUT_MS_FAILOVER_ATTEMPT = 300
# A load proposal unanswered this long is sent again with its same seq (exactly-once).
TIMEOUT_MS_RESEND = 3_000
RETRY_MS_REFUSED = 50
# A load client that hears nothing at all for this long gives up.
TIMEOUT_MS_LOAD_SILENCE = 60_000


class AgentError(Exception):
    """The agent answered ERROR; `code` is the wire error code."""

    def __init__(self, code: str, message: str, leader: str | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.leader = leader


class RawClient:
    """One DEALER, one client session: synchronous requests and pipelined proposals."""

    def __init__(
        self,
        endpoint: str,
        *,
        client_id: str | None = None,
        context: zmq.Context[Any] | None = None,
        keys: client_keys.KeysArg = None,
        session: int = 0,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id or secrets.token_hex(16)
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # CURVE: `keys`, else $SUPERSTATIC_KEYS, else none (NO_KEYS: none whatever the env).
        self.keys = client_keys.resolve(keys)
        if self.keys is not None:
            self.keys.apply(self.sock)
        self.sock.connect(endpoint)
        self.next_seq = 1
        self.session = session  # the index of the "open" entry that started it (0: none yet)
        self._req_ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close(linger=0)

    def send(self, frame_type: wire.FrameType, body: dict[str, Any]) -> int:
        req_id = next(self._req_ids)
        self.sock.send(wire.encode(frame_type, req_id, body))
        return req_id

    def recv(self, timeout_ms: int) -> wire.Frame | None:
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        return wire.decode(self.sock.recv(), wire.AGENT_TO_CLIENT)

    def wait(self, req_id: int, timeout_ms: int = TIMEOUT_MS_RAW_DEFAULT) -> dict[str, Any]:
        """The REPLY body for req_id; AgentError on ERROR, Unavailable on timeout."""
        deadline = time.monotonic() + timeout_ms / 1000
        for _ in range(FRAMES_SKIPPED_MAX):
            left_ms = int((deadline - time.monotonic()) * 1000)
            frame = self.recv(max(0, left_ms)) if left_ms > 0 else None
            if frame is None:
                raise Unavailable(
                    f"{self.endpoint} did not answer request {req_id} in {timeout_ms} ms",
                    outcome_known=False,
                )
            if frame.req_id != req_id:
                continue
            if frame.type is wire.FrameType.ERROR:
                body = frame.body
                raise AgentError(
                    str(body.get("code")), str(body.get("message")), body.get("leader")
                )
            return frame.body
        raise ProtocolError(f"no answer to {req_id} among {FRAMES_SKIPPED_MAX} frames")

    def request(
        self,
        frame_type: wire.FrameType,
        body: dict[str, Any] | None = None,
        timeout_ms: int = TIMEOUT_MS_RAW_DEFAULT,
    ) -> dict[str, Any]:
        return self.wait(self.send(frame_type, body or {}), timeout_ms)

    def propose_body(
        self, body: bytes, seq: int, kind: str = "txn", seq_low: int | None = None
    ) -> dict[str, Any]:
        """A PROPOSE body. seq_low (default: seq) tells the agent every lower seq was answered,
        so the session forgets them: without it the session record grows with every request."""
        low = seq if seq_low is None else seq_low
        return {
            "client": self.client_id,
            "seq": seq,
            "seq_low": low,
            "kind": kind,
            "body": body,
            "session": self.session,
        }

    def roots_txn(self, names_kinds: dict[str, str]) -> bytes:
        """txn_create_roots with oids of this client's (rules 3)."""
        return txn_create_roots(names_kinds, self.client_id)

    def open_session(
        self, timeout_ms: int = TIMEOUT_MS_RAW_DEFAULT, *, seq: int | None = None
    ) -> int:
        """Opens a new session (an "open" entry with session 0); later proposals carry its id,
        the index of that entry. Returns it. `seq`: the open's own seq (default: the next);
        given, the open forgets no lower seq (seq_low 1): the caller numbers those."""
        self.session = 0
        if seq is None:
            reply = self.propose(b"", kind="open", timeout_ms=timeout_ms)
        else:
            body = self.propose_body(b"", seq, "open", seq_low=1)
            reply = self.wait(self.send(wire.FrameType.PROPOSE, body), timeout_ms)
        if reply.get("outcome") not in ("ok", "dup"):
            raise AgentError("session", f"the session was not opened: {reply}", None)
        self.session = int(reply["index"])
        return self.session

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def propose(
        self,
        body: bytes,
        *,
        seq: int | None = None,
        kind: str = "txn",
        timeout_ms: int = TIMEOUT_MS_RAW_DEFAULT,
    ) -> dict[str, Any]:
        """Proposes one entry and waits for its REPLY (index, outcome, error, dup). A write
        outside a session opens one first (with OPEN_SEQ_RESERVED if the caller gave `seq`:
        the open must not take a seq the caller uses)."""
        if self.session == 0 and kind != "open":
            self.open_session(timeout_ms, seq=None if seq is None else OPEN_SEQ_RESERVED)
        seq = self.take_seq() if seq is None else seq
        req_id = self.send(wire.FrameType.PROPOSE, self.propose_body(body, seq, kind))
        return self.wait(req_id, timeout_ms)


# -- transaction bodies -----------------------------------------------------------------------


# The node txn_create_roots last made for each root name in this process (txn_extend and
# txn_set address it), and the counter each client id's oids have reached: state-machine rules
# 3 (docs/virtual-heap.md section 7) lets a client create only `<its id[:16]>.<counter in hex>`,
# each once, so a second run against the same cluster makes other oids than the first.
_ROOT_OIDS: dict[str, str] = {}
_COUNTERS: dict[str, itertools.count[int]] = {}
_COUNTERS_LOCK = threading.Lock()


def new_oid(client_id: str) -> str:
    """The next oid `client_id` may create (what the library's Session.new_oid makes)."""
    with _COUNTERS_LOCK:
        counter = _COUNTERS.setdefault(client_id, itertools.count(1))
        return f"{client_id[:16]}.{next(counter):x}"


def root_oid(name: str) -> str:
    """The oid of the node txn_create_roots last made for root `name` in this process."""
    return _ROOT_OIDS.get(name, f"n.{name}")


def txn_create_roots(names_kinds: dict[str, str], client_id: str | None = None) -> bytes:
    """Creates the root table and one empty node per name, bound as roots. Their oids are
    `client_id`'s (the client that proposes the body; rules 3), or `n.<name>` without one,
    which only a cluster held at rules 2 or below (--rules-max 2) creates."""
    new_ops: list[list[Any]] = [["new", "@roots", "dict", []]]
    for name, kind in names_kinds.items():
        oid = f"n.{name}" if client_id is None else new_oid(client_id)
        _ROOT_OIDS[name] = oid
        new_ops.append(["new", oid, kind, [] if kind != "obj" else ["X", []]])
        new_ops.append(["set", "@roots", name, codec.Ref(oid)])
    return ops.encode_txn({}, new_ops)


def txn_extend(name: str, values: list[Any]) -> bytes:
    """Appends to the list root `name` (blind: no read version, never conflicts)."""
    return ops.encode_txn({}, [["extend", root_oid(name), values]])


def txn_set(name: str, key: Any, value: Any) -> bytes:
    return ops.encode_txn({}, [["set", root_oid(name), key, value]])


# -- the load ---------------------------------------------------------------------------------


@dataclass
class ClientResult:
    acknowledged: int = 0
    refused: int = 0
    resent: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def run_client(
    endpoint: str,
    name: str,
    window: int,
    stop_at: float,
    result: ClientResult,
    keys: client_keys.KeysArg = None,
) -> None:
    """Keeps `window` proposals in flight until stop_at, then drains them. A proposal with no
    answer for TIMEOUT_MS_RESEND is sent again with its same seq (a leader change can drop
    it), as the library does; the latency counts from the first send."""
    client = RawClient(endpoint, keys=keys)
    client.open_session()
    # req_id -> (first send time, seq, PROPOSE body, last send time)
    inflight: dict[int, tuple[float, int, dict[str, Any], float]] = {}
    last_answer = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            while now < stop_at and len(inflight) < window:
                seq = client.take_seq()
                low = min((entry[1] for entry in inflight.values()), default=seq)
                body = client.propose_body(txn_set(name, seq % LOAD_KEYS, seq), seq, seq_low=low)
                inflight[client.send(wire.FrameType.PROPOSE, body)] = (now, seq, body, now)
            if not inflight:
                return
            if now - last_answer > TIMEOUT_MS_LOAD_SILENCE / 1000:
                raise Unavailable(f"no answer from {endpoint} for 60 s", outcome_known=False)
            for req_id, (first, seq, body, sent) in list(inflight.items()):
                if now - sent > TIMEOUT_MS_RESEND / 1000:
                    del inflight[req_id]
                    inflight[client.send(wire.FrameType.PROPOSE, body)] = (first, seq, body, now)
                    result.resent += 1
            frame = client.recv(100)
            if frame is None:
                continue
            entry = inflight.pop(frame.req_id, None)
            if entry is None:
                continue
            last_answer = time.monotonic()
            if frame.type is wire.FrameType.REPLY and frame.body.get("outcome") == "ok":
                result.acknowledged += 1
                result.latencies_ms.append((last_answer - entry[0]) * 1000)
            elif frame.type is wire.FrameType.ERROR:
                # Refused before proposing (no leader yet, busy): the resend loop above sends
                # it again (same seq) after RETRY_MS_REFUSED, not in a tight loop.
                result.refused += 1
                retry_at = last_answer - (TIMEOUT_MS_RESEND - RETRY_MS_REFUSED) / 1000
                inflight[frame.req_id] = (entry[0], entry[1], entry[2], retry_at)
            else:
                raise AssertionError(f"unexpected answer {frame}")
    finally:
        client.close()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_load(
    cluster: LocalCluster, leader: str, clients: int, window: int, seconds: float
) -> dict[str, Any]:
    endpoint = cluster.agents[leader].client_endpoint
    names = {f"load{i}": "dict" for i in range(clients)}
    keys = cluster.keys("app") or client_keys.NO_KEYS
    setup = RawClient(endpoint, keys=keys)
    try:
        reply = setup.propose(txn_create_roots(names, setup.client_id))
        assert reply["outcome"] == "ok", reply
    finally:
        setup.close()
    results = [ClientResult() for _ in range(clients)]
    start = time.monotonic()
    stop_at = start + seconds
    threads = [
        threading.Thread(
            target=run_client, args=(endpoint, f"load{i}", window, stop_at, results[i], keys)
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    latencies = [x for r in results for x in r.latencies_ms]
    acknowledged = sum(r.acknowledged for r in results)
    return {
        "clients": clients,
        "window": window,
        "seconds": round(elapsed, 2),
        "entries": acknowledged,
        "refused": sum(r.refused for r in results),
        "resent": sum(r.resent for r in results),
        "entries_per_s": round(acknowledged / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


def commit_through(cluster: LocalCluster, client_id: str, session: int, seq: int) -> dict[str, Any]:
    """Proposes one entry through any live agent, retrying (same seq) until one is applied."""
    live = [a for a in cluster.agents.values() if a.alive()]
    keys = cluster.keys("app") or client_keys.NO_KEYS
    clients = [
        RawClient(a.client_endpoint, client_id=client_id, keys=keys, session=session) for a in live
    ]
    try:
        for attempt in range(FAILOVER_ATTEMPTS_MAX):
            client = clients[attempt % len(clients)]
            try:
                return client.propose(
                    txn_set("load0", "failover", seq),
                    seq=seq,
                    timeout_ms=TIMEOUT_MS_FAILOVER_ATTEMPT,
                )
            except (AgentError, Unavailable):
                time.sleep(0.005)
        raise Unavailable("no commit after the leader was killed", outcome_known=False)
    finally:
        for client in clients:
            client.close()


def measure_failovers(cluster: LocalCluster, count: int) -> dict[str, Any]:
    """Kill -9 the leader `count` times; time from each kill to the next acknowledged commit."""
    times_ms: list[float] = []
    client_id = secrets.token_hex(16)
    opener = RawClient(cluster.agents[cluster.leader()].client_endpoint, client_id=client_id)
    try:
        session = opener.open_session()
    finally:
        opener.close()
    for i in range(count):
        leader = cluster.leader()
        # The path is warm before the kill; seq 1 was the session's "open".
        commit_through(cluster, client_id, session, 2 * i + 2)
        killed_at = time.monotonic()
        cluster.kill(leader)
        commit_through(cluster, client_id, session, 2 * i + 3)
        times_ms.append((time.monotonic() - killed_at) * 1000)
        cluster.start_agent(leader)
        cluster.leader()
    return {
        "failovers": count,
        "kill_to_commit_ms": [round(t, 1) for t in times_ms],
        "median_ms": round(statistics.median(times_ms), 1) if times_ms else None,
    }


def agents_cpu_s(cluster: LocalCluster) -> float:
    """User + system CPU seconds the cluster's live agents used so far (Linux /proc)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for spec in cluster.agents.values():
        if spec.pid is None or not spec.alive():
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{spec.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def watch_metrics(urls: list[str], stop: threading.Event) -> None:
    """Fetches /metrics and /status.json of every agent once a second until `stop`."""
    while not stop.wait(1.0):
        for url in urls:
            for path in ("/metrics", "/status.json"):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(url + path, timeout=5).read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m superstatic_bench.loadgen", description=__doc__
    )
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=1, help="proposals in flight per client")
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--failovers", type=int, default=0, help="leader kills to time")
    parser.add_argument("--dir", type=Path, default=None, help="data folder (default: temporary)")
    parser.add_argument("--agent-arg", action="append", default=[], help="extra agent flag")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="agents serve --metrics, and every agent's /metrics and /status.json are fetched "
        "each second meanwhile (a status page and a fast Prometheus watching): their cost",
    )
    parser.add_argument(
        "--no-keys", action="store_true", help="agents and clients without CURVE keys"
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.window < 1 or args.seconds <= 0:
        parser.error("--clients, --window and --seconds must be positive")
    base = args.dir or Path(tempfile.mkdtemp(prefix="superstatic-loadgen-"))
    agent_args = ["--fsync", args.fsync, "--log-level", "warning", *args.agent_arg]
    cluster = LocalCluster(
        base, size=3, agent_args=agent_args, metrics=args.metrics, keyed=not args.no_keys
    )
    with cluster.start():
        leader = cluster.leader()
        report: dict[str, Any] = {
            "fsync": args.fsync,
            "keyed": cluster.keyed,
            "leader": leader,
            "metrics": args.metrics,
        }
        watching = threading.Event()
        watcher = None
        if args.metrics:
            urls = [spec.metrics_url for spec in cluster.agents.values()]
            watcher = threading.Thread(target=watch_metrics, args=(urls, watching), daemon=True)
            watcher.start()
        try:
            cpu_before = agents_cpu_s(cluster)
            report.update(measure_load(cluster, leader, args.clients, args.window, args.seconds))
            cpu_s = agents_cpu_s(cluster) - cpu_before
            # CPU the three agents spent (user + system, every thread) per entry: steadier
            # than entries/s on a shared machine, where throughput follows the neighbours.
            report["agents_cpu_s"] = round(cpu_s, 2)
            report["agents_cpu_us_per_entry"] = round(cpu_s * 1e6 / max(1, report["entries"]), 1)
        finally:
            watching.set()
            if watcher is not None:
                watcher.join(timeout=10)
        if args.failovers:
            report.update(measure_failovers(cluster, args.failovers))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
