"""Client side of the catch-up workload (workload 6): write many objects; attach and load them.

* `load`: writes `count` objects, each a small dict (a node of its own), `batch` objects per
  transaction. Object i is stored under key f"o{i}" of bucket i // OBJECTS_PER_BUCKET, a dict
  under key f"b{bucket}" of one root dict. Buckets, because a dict is one node (one record) in
  superstatic's data model: a write into a dict re-encodes its whole record, so 100 000 objects
  in one dict would make the load quadratic and measure that instead of catch-up
  (docs/performance.md has the numbers).
* `attach`: connects this (so far unconnected) process to the given agents, syncs, and reads
  the root: the time until an app served by that agent sees every object, and the resident
  memory the replica took (per object). `replicate` names the replica (default "all": a full
  replica, what "memory per object in an app" means; the library's default is "partial",
  whose memory per touched object the heapmem workload measures).
"""

from __future__ import annotations

import time
from typing import Any

from superstatic_bench.client import rss_bytes

import superstatic

OBJECTS_ROOT = "bench.objects"
OBJECTS_PER_BUCKET = 1_000
# Objects per transaction: the library bounds one transaction to TXN_NEW_NODES_MAX (100 000).
BATCH_MAX = 10_000
COUNT_MAX = 10_000_000
REPLICATE_MODES = ("all", "partial")


def load_objects(command: dict[str, Any]) -> dict[str, Any]:
    count = int(command["count"])
    batch = int(command["batch"])
    # Objects first..count-1 (the heap workloads grow one cluster in steps: 0, 100,000, 1M).
    first_object = int(command.get("first", 0))
    if not 1 <= batch <= BATCH_MAX:
        raise ValueError(f"batch={batch} outside 1..BATCH_MAX={BATCH_MAX}")
    if not 1 <= count <= COUNT_MAX:
        raise ValueError(f"count={count} outside 1..COUNT_MAX={COUNT_MAX}")
    if not 0 <= first_object < count:
        raise ValueError("first outside 0..count-1")
    buckets = superstatic.root(OBJECTS_ROOT, dict)
    began = time.perf_counter()
    for first in range(first_object, count, batch):
        with superstatic.transaction():
            for i in range(first, min(first + batch, count)):
                name = f"b{i // OBJECTS_PER_BUCKET}"
                bucket = buckets.get(name)
                if bucket is None:
                    buckets[name] = {}
                    bucket = buckets[name]
                bucket[f"o{i}"] = {"i": i, "name": f"object {i}"}
    elapsed = time.perf_counter() - began
    written = count - first_object
    return {
        "count": count,
        "first": first_object,
        "batch": batch,
        "seconds": elapsed,
        "objects_per_s": written / elapsed,
    }


def attach(command: dict[str, Any]) -> dict[str, Any]:
    endpoints = list(command["endpoints"])
    expect = int(command["expect"])
    replicate = command.get("replicate", "all")
    if replicate not in REPLICATE_MODES:
        raise ValueError(f"replicate is one of {', '.join(REPLICATE_MODES)}")
    before = rss_bytes()
    began = time.perf_counter()
    # Connects and syncs (a ReadIndex barrier); with the key file the suite names, if any.
    superstatic.connect(endpoints, keys=command.get("keys") or None, replicate=replicate)
    buckets = superstatic.root(OBJECTS_ROOT, dict)
    found = sum(len(bucket) for bucket in buckets.values())
    last = buckets.get(f"b{(expect - 1) // OBJECTS_PER_BUCKET}", {}).get(f"o{expect - 1}")
    seconds = time.perf_counter() - began
    after = rss_bytes()
    return {
        "seconds": seconds,
        "found": found,
        "last_ok": last is not None and last["i"] == expect - 1,
        "rss_before": before,
        "rss_after": after,
        "replicate": replicate,
    }
