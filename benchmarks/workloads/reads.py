"""Workload 4: local reads through the proxies vs the same reads on plain Python objects.

Runs inside a client process connected to the cluster (its default superstatic session), so
the shared values are the real replica's proxies and shared instances. Each read is timed with
`timeit` over `read_loops` reads, best of `read_repeats` (the least disturbed timing on a
shared machine), minus the same loop with an empty body: what remains is the read itself.
"""

from __future__ import annotations

import timeit
from typing import Any

import superstatic

READS_ROOT = "bench.reads"
READS_LIST_ROOT = "bench.reads.list"
READS_SET_ROOT = "bench.reads.set"
READ_UNROLL = 10
RATIO_FLOOR_NS = 0.1

# (label, statement): the same statement runs against the plain and the shared namespace.
READS: tuple[tuple[str, str], ...] = (
    ('d["a"]', 'd["a"]'),
    ("len(d)", "len(d)"),
    ('"a" in d', '"a" in d'),
    ('d.get("a")', 'd.get("a")'),
    ("bool(d)", "bool(d)"),
    ("d.keys()", "d.keys()"),
    ("lst[1]", "lst[1]"),
    ("len(lst)", "len(lst)"),
    ('"a" in s', '"a" in s'),
    ("obj.x", "obj.x"),
    ('obj.stock["a"]', 'obj.stock["a"]'),
)


@superstatic.clustered(name="bench.reads.obj")
class ReadsObject:
    def __init__(self) -> None:
        self.x = 1
        self.stock = {"a": 1, "b": 2}


class PlainObject:
    def __init__(self) -> None:
        self.x = 1
        self.stock = {"a": 1, "b": 2}


def _timer(statement: str, namespace: dict[str, Any]) -> timeit.Timer:
    # The setup binds the names as locals of timeit's loop function, so the statement pays a
    # local-variable load (as code reading a value it holds does), not a globals lookup.
    # The statement is unrolled READ_UNROLL times so the loop's own cost is spread thin.
    setup = "; ".join(f"{name} = _namespace[{name!r}]" for name in namespace) or "pass"
    body = "; ".join([statement] * READ_UNROLL)
    return timeit.Timer(body, setup=setup, globals={"_namespace": namespace})


def measure_reads(command: dict[str, Any]) -> dict[str, Any]:
    loops = max(1, int(command["loops"]) // READ_UNROLL)
    repeats = int(command["repeats"])
    assert loops > 0 and repeats > 0, (loops, repeats)
    shared_d = superstatic.root(READS_ROOT, dict)
    if "a" not in shared_d:
        shared_d.update({"a": 1, "b": 2})
    shared_lst = superstatic.root(READS_LIST_ROOT, list)
    if len(shared_lst) < 3:
        shared_lst.extend([1, 2, 3])
    shared_s = superstatic.root(READS_SET_ROOT, set)
    if "a" not in shared_s:
        shared_s.update({"a", "b"})
    shared = {"d": shared_d, "lst": shared_lst, "s": shared_s, "obj": ReadsObject()}
    plain = {"d": {"a": 1, "b": 2}, "lst": [1, 2, 3], "s": {"a", "b"}, "obj": PlainObject()}
    reads_per_timing = loops * READ_UNROLL
    empty = timeit.Timer("pass")
    rows = []
    for label, statement in READS:
        timers = (empty, _timer(statement, plain), _timer(statement, shared))
        best = [float("inf")] * 3
        # Interleaved: the empty loop, the plain and the shared read are timed back to back in
        # every repeat, so a busy spell of the (shared) machine hits all three alike; the best
        # of each is the least disturbed.
        for _ in range(repeats):
            for i, timer in enumerate(timers):
                best[i] = min(best[i], timer.timeit(number=loops))
        empty_ns = best[0] / loops * 1e9  # one loop turn, spread over READ_UNROLL reads
        plain_ns = max(0.0, (best[1] / loops * 1e9 - empty_ns) / READ_UNROLL)
        shared_ns = max(0.0, (best[2] / loops * 1e9 - empty_ns) / READ_UNROLL)
        rows.append(
            {
                "read": label,
                "plain_ns": plain_ns,
                "shared_ns": shared_ns,
                # Sub-nanosecond plain reads would make the ratio meaningless: floor at 0.1 ns.
                "ratio": shared_ns / max(plain_ns, RATIO_FLOOR_NS),
            }
        )
    return {"rows": rows, "reads_per_timing": reads_per_timing, "repeats": repeats}
