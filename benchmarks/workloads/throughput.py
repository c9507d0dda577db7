"""CPU of every process of a measured row, over the row's window (is throughput CPU-bound?).

The suite reads `/proc/PID/stat` (utime + stime: every thread of the process) of the system's
server processes (superstatic's agents, each named leader or follower; a peer's servers) and of
the client processes at the row's window start and end (measure.run_row), and `/proc/stat`'s
machine-wide busy time over the same window. From those:

* CPU ms per operation of each process and of all of them (CPU seconds / operations counted in
  the window: the operations the clients counted complete inside it);
* the cores they used (their CPU seconds / the window's wall seconds) and that over the
  machine's cores;
* the machine's busy fraction (every process on it, other work included: on a shared machine
  the neighbours' load shows here and not in the processes' own CPU) and whether the cores
  were saturated (busy at least SATURATED_FRACTION of the window);
* the rate the measured processes' CPU per operation would allow on all the machine's cores
  (`ops_per_s_cpu_bound`): how far the measured rate is from where CPU alone would stop it.

Linux only: elsewhere (no /proc) a row has no `cpu` key and the report says nothing about it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superstatic_bench.report import table, with_notes

# A machine busy this fraction of its cores' time over the window counts as saturated: the
# last few percent are the kernel's idle moments between runnable threads, not spare CPU.
SATURATED_FRACTION = 0.9
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest time is already
# counted in user and nice); idle and iowait are the machine's unused time.
_IDLE_FIELDS = (3, 4)
_BUSY_FIELDS_MAX = 8


@dataclass(frozen=True)
class Proc:
    """A process to account: `name` as the report shows it, `role` (leader, follower, server,
    member, client) for grouping."""

    name: str
    role: str
    pid: int


@dataclass(frozen=True)
class Sample:
    """CPU seconds of each process (None: unreadable, e.g. it exited) and the machine's busy
    and total seconds (all cores), at one instant."""

    process_s: tuple[float | None, ...]
    machine_busy_s: float | None
    machine_total_s: float | None


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far (every thread), or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all the machine's cores so far, or None without /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat") as stat:
            first = stat.readline().split()
        if first[0] != "cpu":
            return None
        ticks = [int(x) for x in first[1 : 1 + _BUSY_FIELDS_MAX]]
        idle = sum(ticks[i] for i in _IDLE_FIELDS)
        total = sum(ticks)
        return (total - idle) / _TICKS_PER_S, total / _TICKS_PER_S
    return None


def sample(procs: Sequence[Proc]) -> Sample:
    machine = machine_cpu_s()
    return Sample(
        tuple(process_cpu_s(p.pid) for p in procs),
        None if machine is None else machine[0],
        None if machine is None else machine[1],
    )


def cores() -> int:
    """The cores this run may use (its affinity mask; the count of CPUs elsewhere)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def summarize(
    procs: Sequence[Proc],
    before: Sample,
    after: Sample,
    ops: int,
    wall_s: float,
    cores_n: int,
) -> dict[str, Any] | None:
    """The row's `cpu` record from two samples `wall_s` apart, `ops` counted between them;
    None when no process could be read at both ends (no /proc)."""
    if wall_s <= 0 or cores_n < 1:
        raise ValueError("wall_s and cores_n must be positive")
    rows: list[dict[str, Any]] = []
    for proc, start, end in zip(procs, before.process_s, after.process_s, strict=True):
        if start is None or end is None:
            continue  # exited or never readable: not counted (the row lists who was)
        cpu_s = max(0.0, end - start)
        rows.append(
            {
                "name": proc.name,
                "role": proc.role,
                "cpu_s": round(cpu_s, 3),
                "cores": round(cpu_s / wall_s, 3),
                "ms_per_op": _per_op_ms(cpu_s, ops),
            }
        )
    if not rows:
        return None
    total_s = sum(r["cpu_s"] for r in rows)
    used = total_s / wall_s
    record: dict[str, Any] = {
        "wall_s": round(wall_s, 3),
        "ops": ops,
        "cores": cores_n,
        "processes": rows,
        "total_cpu_s": round(total_s, 3),
        "total_ms_per_op": _per_op_ms(total_s, ops),
        "cores_used": round(used, 3),
        "utilization": round(used / cores_n, 3),
        # The rate at which the measured processes would need every core, at this CPU per op.
        "ops_per_s_cpu_bound": round(cores_n * ops / total_s, 1) if ops and total_s else None,
        "machine_busy": None,
        "saturated": None,
    }
    if (
        before.machine_busy_s is not None
        and after.machine_busy_s is not None
        and before.machine_total_s is not None
        and after.machine_total_s is not None
        and after.machine_total_s > before.machine_total_s
    ):
        busy = (after.machine_busy_s - before.machine_busy_s) / (
            after.machine_total_s - before.machine_total_s
        )
        record["machine_busy"] = round(busy, 3)
        record["saturated"] = busy >= SATURATED_FRACTION
    return record


def _per_op_ms(cpu_s: float, ops: int) -> float | None:
    return round(cpu_s * 1000 / ops, 4) if ops else None


def by_role(record: dict[str, Any], role: str) -> list[float | None]:
    """ms per op of the processes of one role, in the order listed."""
    return [p["ms_per_op"] for p in record["processes"] if p["role"] == role]


def _ms(values: Sequence[float | None]) -> str:
    if not values:
        return "-"
    return " / ".join("-" if v is None else f"{v:.3f}" for v in values)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def render(rows: Sequence[dict[str, Any]], markdown: bool) -> str:
    """One line per row with a `cpu` record: ms of CPU per operation by process and in all,
    the cores used, the machine's busy share, and the CPU-bound rate."""
    body = []
    for r in rows:
        cpu = r.get("cpu")
        if not cpu:
            continue
        servers = [
            p["ms_per_op"] for p in cpu["processes"] if p["role"] not in ("client", "leader")
        ]
        saturated = {True: "yes", False: "no", None: "-"}[cpu["saturated"]]
        body.append(
            [
                r["label"],
                r["op"],
                r["clients"],
                f"{r['ops_per_s']:,.0f}",
                _ms(by_role(cpu, "leader")),
                _ms(servers),
                _ms(by_role(cpu, "client")),
                "-" if cpu["total_ms_per_op"] is None else f"{cpu['total_ms_per_op']:.3f}",
                f"{cpu['cores_used']:.2f} of {cpu['cores']}",
                f"{_pct(cpu['machine_busy'])} ({saturated})",
                "-" if cpu["ops_per_s_cpu_bound"] is None else f"{cpu['ops_per_s_cpu_bound']:,.0f}",
            ]
        )
    headers = [
        "system",
        "op",
        "clients",
        "ops/s",
        "leader ms/op",
        "other servers ms/op",
        "clients ms/op",
        "all ms/op",
        "cores used",
        "machine busy (saturated)",
        "ops/s if CPU-bound",
    ]
    notes = [
        "CPU (user + system, /proc) of each process over the row's window, per operation "
        "counted in it; machine busy: every process on the machine over the same window "
        f"(saturated: at least {SATURATED_FRACTION:.0%}); ops/s if CPU-bound: the rate at "
        "which these processes' CPU per op would fill every core"
    ]
    return with_notes(table(headers, body, markdown), notes, markdown)
