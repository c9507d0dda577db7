"""In-process measurement of an app applying the event stream (docs/library.md, "Applying events").

Not a test. A full replica holding the throughput workload's dict (clients x 16 threads x 100
keys, `superstatic bench --only throughput`'s shape) is fed `--count` events, each a lone blind
`set` of one of its keys to a 100-byte str (a model-2 body as the library sends it), `--per-frame`
events per EVENTS frame (an app of the 3-client run receives about 10):

* `apply`: `Replica.apply_events` of the already parsed events (what the replica's apply costs);
* `frame`: the whole I/O thread's path of a frame: `wire.decode` of the frame bytes, then
  `StreamFeeder.feed_events` (the events' fields checked, then applied).

`--partial`: the replica is partial (the library's default, docs/virtual-heap.md), holding the
dict per key with every key loaded, its stream filtered (each frame says how far it reaches).

It prints microseconds of process CPU per event, best and median of `--repeat` runs. Compare two
trees by running the same command with each tree's Python, alternated:

    .venv/bin/python benchmarks/replica_apply.py apply --count 20000 --repeat 5
    .venv/bin/python benchmarks/replica_apply.py frame --count 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from typing import Any

import cbor2

from superstatic.client.stream import StreamFeeder
from superstatic.objects.replica import Replica
from superstatic.protocol import ops, wire
from superstatic.protocol.codec import Ref

VALUE = "v" * 100
KEYS_PER_THREAD = 100
THREADS = 16
CLIENTS_MAX = 1_000
COUNT_MAX = 10_000_000
PER_FRAME_MAX = 10_000
REPEAT_MAX = 100
KV_OID = "kv"
# A partial replica's cache: far above the workload's dict (no eviction while measuring).
CACHE_BYTES = 1 << 30


def _key(n: int, clients: int) -> str:
    thread = (n // clients) % THREADS
    i = (n // clients // THREADS) % KEYS_PER_THREAD
    return f"c{n % clients}-t{thread}-{i}"


def fresh_replica(clients: int, partial: bool = False) -> Replica:
    """A replica at index 1 holding the root table and the workload's dict, every key set: a
    full one, or (`partial`) a partial one (the library's default) holding the dict per key
    with every key loaded, as the agent answers a dict of more than 256 entries."""
    replica = Replica()
    keys = [_key(n, clients) for n in range(clients * THREADS * KEYS_PER_THREAD)]
    if partial:
        replica.start_partial(1, lambda _oids, _keys, _whole: None, CACHE_BYTES)
        runs = [("@roots", [["kv", Ref(KV_OID)]], []), (KV_OID, [[k, VALUE] for k in keys], [])]
        replica.install(1, [], [(KV_OID, "dict", None)], [], runs, ["@roots", KV_OID])
        return replica
    nodes = [
        ("@roots", 1, "dict", [["kv", Ref(KV_OID)]]),
        (KV_OID, 1, "dict", [[k, VALUE] for k in keys]),
    ]
    replica.load_snapshot(1, nodes)
    return replica


def event_items(count: int, clients: int) -> list[list[Any]]:
    """The events as the agent encodes them: [index, client, seq, outcome, body, collected,
    log_time_ms, heads], from index 2 on."""
    names = [secrets.token_hex(16) for _ in range(clients)]
    items: list[list[Any]] = []
    for n in range(count):
        index = n + 2
        body = ops.encode_txn_v2(index - 1, {}, [["set", KV_OID, _key(n, clients), VALUE]])
        items.append([index, names[n % clients], 2 + n // clients, "ok", body, [], n // 5, []])
    return items


def measure(
    what: str, count: int, clients: int, per_frame: int, repeat: int, partial: bool = False
) -> list[float]:
    runs: list[float] = []
    items = event_items(count, clients)
    frames = [
        cbor2.dumps(
            [
                wire.PROTOCOL_VERSION,
                int(wire.FrameType.EVENTS),
                7,
                {"ev": items[i : i + per_frame], "to": items[i : i + per_frame][-1][0], "t": 0},
            ]
        )
        for i in range(0, count, per_frame)
    ]
    events = [(*item[:5], (), item[6], ()) for item in items]
    for _ in range(repeat):
        replica = fresh_replica(clients, partial)
        if what == "apply":
            started = time.process_time()
            for first in range(0, count, per_frame):
                replica.apply_events(events[first : first + per_frame])
        else:
            feeder = StreamFeeder(replica, filtered=partial)
            started = time.process_time()
            for data in frames:
                feeder.feed_events(wire.decode(data, wire.AGENT_TO_CLIENT).body)
        runs.append((time.process_time() - started) / count * 1e6)
        assert replica.applied_index == count + 1, replica.applied_index
    return runs


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("apply", "frame"))
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--per-frame", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--partial", action="store_true", help="a partial replica (the default)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= COUNT_MAX:
        parser.error(f"--count is 1..COUNT_MAX={COUNT_MAX}")
    if not 1 <= args.clients <= CLIENTS_MAX:
        parser.error(f"--clients is 1..CLIENTS_MAX={CLIENTS_MAX}")
    if not 1 <= args.per_frame <= PER_FRAME_MAX:
        parser.error(f"--per-frame is 1..PER_FRAME_MAX={PER_FRAME_MAX}")
    if not 1 <= args.repeat <= REPEAT_MAX:
        parser.error(f"--repeat is 1..REPEAT_MAX={REPEAT_MAX}")
    before = os.getloadavg()[0]
    runs = measure(args.what, args.count, args.clients, args.per_frame, args.repeat, args.partial)
    print(
        f"{args.what}{' (partial)' if args.partial else ''}: {args.count} events, "
        f"{args.per_frame} per frame: CPU per event best "
        f"{min(runs):.2f} us, median {statistics.median(runs):.2f} us "
        f"({', '.join(f'{r:.2f}' for r in runs)}); load {before:.2f} -> {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
