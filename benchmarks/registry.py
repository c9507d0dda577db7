"""The named workloads and `--only` selection."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    peers: bool = False  # peers run it too (with --peers)


WORKLOADS: tuple[Workload, ...] = (
    Workload("floors", "floors: LMDB write + fsync, ZeroMQ DEALER/ROUTER round trip"),
    Workload("sequential", "1 client, sequential method calls on a counter", peers=True),
    Workload("throughput", "small writes to a dict root, 1 and 3 client processes", peers=True),
    Workload("contention", "every client read-modify-writes one object", peers=True),
    Workload("disjoint", "3 x 16 callers read-modify-write their own key of one dict: retries"),
    Workload("bigdict", "3 client processes set existing keys of a 100-key and a 100,000-key dict"),
    Workload("reads", "local reads: proxies vs plain objects"),
    Workload("nofsync", "sequential, throughput, contention with agents at --fsync off"),
    Workload("curve", "the cost of CURVE: sequential and throughput, keyed vs without keys"),
    Workload("failover", "kill -9 of the leader to the next acknowledged write"),
    Workload("catchup", "restart of an agent after many objects were written"),
    Workload("manyroots", "creating the 1st root, and the 100,001st after 100,000 in bulk"),
    Workload("trace", "per-hop breakdown of sequential calls (agents --trace, app traced)"),
    Workload("heapstart", "virtual heap: connect() + first read with 0 to 1M other objects"),
    Workload("heapmem", "virtual heap: app memory after touching 1% of the objects"),
    Workload("heapfanout", "virtual heap: agent send work per write with 1 to 16 apps"),
    Workload("queue", "work queue put+get+ack, 3 producer and 3 consumer processes", peers=True),
)
NAMES = tuple(w.name for w in WORKLOADS)
BY_NAME = {w.name: w for w in WORKLOADS}
# The write workloads measured on every system, in this order.
WRITE_WORKLOADS = ("sequential", "throughput", "contention")
# The virtual heap's workloads (docs/virtual-heap.md section 8), each on a fresh cluster.
HEAP_WORKLOADS = ("heapstart", "heapmem", "heapfanout")
# Rows measured on the superstatic cluster only, after the write workloads (the questions they
# ask are about superstatic's data model: per-key storage and conflicts; docs/data-model-v2.md).
KEYED_WORKLOADS = ("disjoint", "bigdict")


def select(only: str | None) -> list[str]:
    """Workload names to run, in suite order: all, or those named (comma-separated)."""
    if only is None or not only.strip():
        return list(NAMES)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}"
        )
    return [name for name in NAMES if name in wanted]
