"""How long and how hard each workload runs: the full suite, `--quick`, and `--large`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Settings:
    duration_s: float = 10.0  # measurement window of one throughput/latency row
    warmup_s: float = 1.0  # run before the window opens; its operations are not counted
    threads: int = 16  # concurrent callers per client process (throughput)
    threads_contention: int = 4  # callers per client process on the one hot object
    payload_bytes: int = 100  # value size of every small write, for every system
    # Keys each writer thread cycles through: the dict root holds at most
    # clients x threads x keys_per_thread items (4,800 at the defaults).
    keys_per_thread: int = 100
    client_counts: tuple[int, ...] = (1, 3)  # client processes (one per agent/member)
    failover_repeats: int = 5
    failover_threads: int = 8  # paced writers (workloads/failover.py)
    catchup_objects: tuple[int, ...] = (100_000,)
    catchup_batch: int = 1_000  # objects per transaction while loading
    read_loops: int = 1_000_000  # reads per timing of one read kind
    read_repeats: int = 5  # timings per read kind; the best counts (least disturbed)
    floor_ops: int = 2_000  # fsync commits / ZeroMQ round trips per floor
    curve_rounds: int = 3  # alternating keyed/unkeyed measurements (workloads/curve.py)
    # bigdict (workloads/bigdict.py): 3 client processes x `threads` writers set existing keys
    # of one dict pre-filled to each of these sizes; values this long (100,000 items of the
    # throughput workload's 100 B would not fit one record of today's data model, 8 MiB).
    bigdict_sizes: tuple[int, ...] = (100, 100_000)
    bigdict_value_bytes: int = 16
    bigdict_fill_batch: int = 10_000  # keys per transaction while pre-filling
    # manyroots (workloads/manyroots.py): roots created in bulk between the two timed points,
    # and single root creations timed at each point (the median counts).
    manyroots_count: int = 100_000
    manyroots_samples: int = 20
    manyroots_batch: int = 50_000  # roots per bulk transaction to start with (halved on limits)
    # disjoint (workloads/disjoint.py): processes x callers, each on a key of its own.
    disjoint_clients: int = 3
    disjoint_threads: int = 16
    # The virtual heap (workloads/heapstart.py, heapmem.py, heapfanout.py; --large adds 1M
    # objects to heapstart and runs heapmem at 1M objects, 10,000 touched, the size).
    # heapstart: other objects in the cluster, fresh app processes per size and mode, and the
    # largest size a full replica (replicate="all") is also measured at.
    heapstart_sizes: tuple[int, ...] = (0, 100_000)
    heapstart_samples: int = 10
    heapstart_all_objects_max: int = 100_000
    # heapmem: objects in the cluster and objects touched (1M and 10,000 take minutes of load
    # and of touching: the default run measures 1% of 100,000).
    heapmem_objects: int = 100_000
    heapmem_touch: int = 1_000
    # heapfanout: app processes per run, small dicts each holds, writes and their rate.
    heapfanout_apps: tuple[int, ...] = (1, 4, 16)
    heapfanout_objects: int = 100
    heapfanout_writes: int = 2_000
    heapfanout_rate: int = 100  # writes per second (paced: skip frames depend on log time)
    # Extra flags for every agent the suite starts (--agent-args): a labelled diagnostic, e.g.
    # to see whether a limit is what a workload runs into. Empty in every quoted result unless
    # the result says otherwise.
    agent_args: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


FULL = Settings()
QUICK = Settings(
    duration_s=2.0,
    warmup_s=0.5,
    threads=8,
    threads_contention=4,
    failover_repeats=2,
    catchup_objects=(5_000,),
    read_loops=200_000,
    read_repeats=3,
    floor_ops=300,
    curve_rounds=2,
    bigdict_sizes=(100, 10_000),
    manyroots_count=10_000,
    manyroots_samples=10,
    heapstart_sizes=(0, 10_000),
    heapstart_samples=5,
    heapstart_all_objects_max=10_000,
    heapmem_objects=20_000,
    heapmem_touch=1_000,
    heapfanout_apps=(1, 4),
    heapfanout_writes=200,
)


def choose(quick: bool, large: bool, catchup_objects: tuple[int, ...] | None = None) -> Settings:
    """`catchup_objects` (--catchup-objects) replaces the catch-up sizes, --large included."""
    base = QUICK if quick else FULL
    if large:
        base = replace(
            base,
            catchup_objects=(*base.catchup_objects, 1_000_000),
            heapstart_sizes=(*base.heapstart_sizes, 1_000_000),
            heapmem_objects=1_000_000,
            heapmem_touch=10_000,
        )
    if catchup_objects is not None:
        base = replace(base, catchup_objects=catchup_objects)
    return base
