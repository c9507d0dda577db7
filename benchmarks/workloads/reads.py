"""Workload 4: local reads through the proxies vs the same reads on plain Python objects.

Runs inside a client process connected to the cluster (its default superstatic session), so
the shared values are the real replica's proxies and shared instances. Each read is timed with
`timeit` over `read_loops` iterations, best of `read_repeats` (the least disturbed timing on a
shared machine), minus the same loop with an empty body: what remains is the read itself.
"""

from __future__ import annotations

import timeit
from typing import Any

import superstatic

READS_ROOT = "bench.reads"
READS_LIST_ROOT = "bench.reads.list"

# (label, statement): the same statement runs against the plain and the shared namespace.
READS: tuple[tuple[str, str], ...] = (
    ('d["a"]', 'd["a"]'),
    ("len(d)", "len(d)"),
    ('"a" in d', '"a" in d'),
    ('d.get("a")', 'd.get("a")'),
    ("lst[1]", "lst[1]"),
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


def _best_ns(statement: str, namespace: dict[str, Any], loops: int, repeats: int) -> float:
    # The setup binds the names as locals of timeit's loop function, so the statement pays a
    # local-variable load (as code reading a value it holds does), not a globals lookup.
    setup = "; ".join(f"{name} = _namespace[{name!r}]" for name in namespace) or "pass"
    timer = timeit.Timer(statement, setup=setup, globals={"_namespace": namespace})
    return min(timer.repeat(repeat=repeats, number=loops)) / loops * 1e9


def measure_reads(command: dict[str, Any]) -> dict[str, Any]:
    loops = int(command["loops"])
    repeats = int(command["repeats"])
    assert loops > 0 and repeats > 0, (loops, repeats)
    shared_d = superstatic.root(READS_ROOT, dict)
    if "a" not in shared_d:
        shared_d.update({"a": 1, "b": 2})
    shared_lst = superstatic.root(READS_LIST_ROOT, list)
    if len(shared_lst) < 3:
        shared_lst.extend([1, 2, 3])
    shared = {"d": shared_d, "lst": shared_lst, "obj": ReadsObject()}
    plain = {"d": {"a": 1, "b": 2}, "lst": [1, 2, 3], "obj": PlainObject()}
    empty_ns = _best_ns("pass", {}, loops, repeats)
    rows = []
    for label, statement in READS:
        plain_ns = max(0.0, _best_ns(statement, plain, loops, repeats) - empty_ns)
        shared_ns = max(0.0, _best_ns(statement, shared, loops, repeats) - empty_ns)
        rows.append(
            {
                "read": label,
                "plain_ns": plain_ns,
                "shared_ns": shared_ns,
                # Sub-nanosecond plain reads would make the ratio meaningless: floor at 0.1 ns.
                "ratio": shared_ns / max(plain_ns, 0.1),
            }
        )
    return {"rows": rows, "loop_overhead_ns": empty_ns, "loops": loops, "repeats": repeats}
