"""Text tables of a run's results (what the terminal shows and docs/performance.md quotes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    assert all(len(r) == len(headers) for r in rows), "every row has a cell per header"
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded))
        if n == 0:
            rule = ["-" * w for w in widths]
            lines.append(("| " + " | ".join(rule) + " |") if markdown else "  ".join(rule))
    return "\n".join(line.rstrip() for line in lines)


def with_notes(text: str, notes: Sequence[str], markdown: bool) -> str:
    """A table and the lines under it; in Markdown a blank line apart, or they would be read as
    rows of the table."""
    gap = "\n\n" if markdown else "\n"
    return gap.join([text, *notes])


def us(value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def rate(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.0f}"


def curve_table(curve: dict[str, Any], markdown: bool) -> str:
    """The curve workload: the floor (a ZeroMQ round trip) and each row kind, keyed vs not."""
    floor = curve.get("floor", {})
    rows: list[list[Any]] = []
    for size in (64, 4096):
        plain, keyed = floor.get(f"plain_{size}"), floor.get(f"curve_{size}")
        if plain and keyed:
            rows.append(
                [
                    f"ZeroMQ round trip, {size} B",
                    "-",
                    "-",
                    us(keyed["p50_us"]),
                    us(plain["p50_us"]),
                    _signed(floor[f"cost_{size}"]["p50_pct"]),
                ]
            )
    for c in curve["cost"]:
        rows.append(
            [
                f"{c['workload']}: {c['op']}, {c['clients']} client(s) x {c['threads']}",
                f"{rate(c['keyed_ops_per_s'])} vs {rate(c['plain_ops_per_s'])}",
                _signed(c["ops_per_s_pct"]),
                us(c["keyed_p50_us"]),
                us(c["plain_p50_us"]),
                _signed(c["p50_pct"]),
            ]
        )
    headers = ["measure", "ops/s keyed vs not", "ops/s", "p50 keyed", "p50 no keys", "p50"]
    return table(headers, rows, markdown)


def _signed(pct: float | None) -> str:
    return "-" if pct is None else f"{pct:+.1f}%"


def _write_rows(rows: list[dict[str, Any]], markdown: bool) -> str:
    headers = [
        "system",
        "op",
        "clients",
        "threads",
        "ops/s",
        "p50",
        "p99",
        "max",
        "retries/op",
        "errors",
    ]
    body = []
    for r in rows:
        lat = r.get("latency_us", {})
        retry = r.get("retry_rate")
        errors = ", ".join(f"{k}={v}" for k, v in r.get("errors", {}).items()) or "-"
        body.append(
            [
                r["label"],
                r["op"],
                r["clients"],
                r["threads"],
                rate(r["ops_per_s"]),
                us(lat.get("p50")),
                us(lat.get("p99")),
                us(lat.get("max")),
                "-" if retry is None else f"{retry:.2f}",
                errors,
            ]
        )
    return table(headers, body, markdown)


def render(results: dict[str, Any], markdown: bool = False) -> str:
    parts: list[str] = []
    workloads = results.get("workloads", {})
    m = results.get("machine", {})
    if m:
        memory = m.get("memory_bytes") or 0
        disk = m.get("disk", {})
        parts.append(
            f"machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {memory / 2**30:.1f} GiB, "
            f"disk {disk.get('device', '?')} ({disk.get('fstype', '?')}), "
            f"Linux {m.get('kernel')}, Python {m.get('python')}; load average at start "
            f"{m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}"
            + (
                f"; source {m['source_commit']} (at end {m.get('source_commit_at_end')})"
                if m.get("source_commit")
                else ""
            )
            + "\n"
        )

    def section(title: str, text: str) -> None:
        parts.append(f"### {title}\n\n{text}\n" if markdown else f"== {title}\n{text}\n")

    if workloads.get("queue"):
        from superstatic_bench.workloads import queue

        section("queue: put + get + ack per second", queue.render(workloads["queue"], markdown))
    floors = workloads.get("floors")
    if floors:
        rows = [
            [name, us(f.get("p50")), us(f.get("p99")), us(f.get("max")), int(f.get("count", 0))]
            for name, f in (
                ("LMDB 100 B put + env.sync (one fsync)", floors.get("lmdb_fsync_us", {})),
                ("file write 100 B + fdatasync", floors.get("fdatasync_us", {})),
                ("ZeroMQ DEALER/ROUTER round trip, tcp", floors.get("zmq_rtt_us", {})),
            )
        ]
        section("floors", table(["floor", "p50", "p99", "max", "samples"], rows, markdown))
    for name, title in (
        ("sequential", "sequential calls (1 client, 1 caller)"),
        ("throughput", "throughput: small writes to a dict root"),
        ("contention", "contention: read-modify-write of one object"),
        ("nofsync", "superstatic with --fsync off (not durable)"),
    ):
        rows = workloads.get(name, {}).get("rows")
        if rows:
            section(title, _write_rows(rows, markdown))
    measured = [
        r
        for name in ("sequential", "throughput", "contention", "nofsync")
        for r in workloads.get(name, {}).get("rows", [])
        if r.get("cpu")
    ]
    if measured:
        from superstatic_bench.workloads import throughput

        section(
            "CPU per operation over each row's window: is it CPU-bound?",
            throughput.render(measured, markdown),
        )
    counted = [
        r
        for name in ("sequential", "throughput", "contention", "nofsync")
        for r in workloads.get(name, {}).get("rows", [])
        if r.get("batches")
    ]
    if counted:
        from superstatic_bench.workloads import batches

        section(
            "batches over each row's window: what a Ready and a frame carry",
            batches.render(counted, markdown),
        )
    if workloads.get("disjoint", {}).get("rows"):
        from superstatic_bench.workloads import disjoint

        section(
            "disjoint: read-modify-write of each caller's own key of one dict",
            disjoint.render(workloads["disjoint"], markdown),
        )
    if workloads.get("bigdict", {}).get("rows"):
        from superstatic_bench.workloads import bigdict

        section(
            "bigdict: 3 client processes set existing keys of a small and a big dict",
            bigdict.render(workloads["bigdict"], markdown),
        )
    if workloads.get("manyroots"):
        from superstatic_bench.workloads import manyroots

        section(
            "manyroots: creating a root, first and after many",
            manyroots.render(workloads["manyroots"], markdown),
        )
    for name, title in (
        ("heapstart", "heapstart: connect() + the first read of one counter root"),
        ("heapmem", "heapmem: app memory after touching 1% of the objects"),
        ("heapfanout", "heapfanout: the follower's send work per committed write"),
    ):
        if workloads.get(name, {}).get("rows"):
            import importlib

            module = importlib.import_module(f"superstatic_bench.workloads.{name}")
            section(title, module.render(workloads[name], markdown))
    curve = workloads.get("curve")
    if curve and curve.get("cost"):
        section(
            "the cost of CURVE (keyed vs no keys, medians of alternating rounds)",
            curve_table(curve, markdown),
        )
    reads = workloads.get("reads")
    if reads and reads.get("rows"):
        rows = [
            [r["read"], f"{r['plain_ns']:.1f}", f"{r['shared_ns']:.1f}", f"{r['ratio']:.1f}x"]
            for r in reads["rows"]
        ]
        section(
            "local reads (ns per read, loop overhead subtracted)",
            table(["read", "plain ns", "shared ns", "ratio"], rows, markdown),
        )
    traced = workloads.get("trace")
    if traced and traced.get("rows"):
        section(
            "where one call's time goes (agents --trace, app SUPERSTATIC_TRACE=1)",
            _trace_table(traced, markdown),
        )
    failover = workloads.get("failover")
    if failover and failover.get("rounds"):
        rows = [
            [
                i + 1,
                r["killed"],
                r.get("client_agent") or "?",
                r["new_leader"],
                "no write acked" if r["failover_s"] is None else f"{r['failover_s'] * 1000:.0f} ms",
                _ms(r.get("in_flight_acked_s_max")),
                ", ".join(f"{k}={v}" for k, v in r.get("errors", {}).items()) or "-",
            ]
            for i, r in enumerate(failover["rounds"])
        ]
        med = failover.get("failover_s_median")
        text = table(
            [
                "round",
                "killed",
                "client's agent",
                "new leader",
                "kill -> next ack",
                "in-flight writes acked by",
                "client errors",
            ],
            rows,
            markdown,
        )
        text = with_notes(
            text, [f"median: {'-' if med is None else f'{med * 1000:.0f} ms'}"], markdown
        )
        section("failover (kill -9 of the leader)", text)
    catchup = workloads.get("catchup")
    if catchup and catchup.get("sizes"):
        rows = []
        notes = []
        for size in catchup["sizes"]:
            if "error" in size:
                notes.append(f"{size['objects']} objects: failed: {size['error']}")
                continue
            if "app_error" in size:
                notes.append(
                    f"{size['objects']} objects: the app could not load: {size['app_error']}"
                )
            rows.append(
                [
                    size["objects"],
                    rate(size["load"]["objects_per_s"]),
                    f"{size['catch_up_s']:.2f} s",
                    "failed" if "app_error" in size else f"{size['app_load_s']:.2f} s",
                    f"{size['disk']['allocated_bytes'] / 1e6:.1f} MB",
                    f"{size['agent_bytes_per_object']:.0f} B",
                    "-"
                    if "app_error" in size
                    else f"{size['app_bytes_per_object']:.0f} B"
                    + (f" ({size['app_replicate']})" if size.get("app_replicate") else ""),
                ]
            )
        headers = [
            "objects",
            "written/s",
            "agent caught up",
            "app loaded via it",
            "agent disk",
            "agent RSS/object",
            "app RSS/object (replica)",
        ]
        text = with_notes(table(headers, rows, markdown), notes, markdown)
        section("catch-up of a restarted agent", text)
    targets = results.get("targets")
    if targets:
        rows = []
        for t in targets:
            met = {True: "met", False: "NOT met", None: "-"}[t["met"]]
            fmt = (
                us
                if t["unit"] == "us"
                else (rate if t["unit"] in ("writes/s", "retries") else _plain)
            )
            gap = "-" if t["gap"] is None else f"{t['gap']:.2f}"
            rows.append(
                [
                    t["target"],
                    fmt(t["measured"]),
                    fmt(t["goal"]),
                    met,
                    gap if t["met"] is not None else t["note"],
                ]
            )
        section(
            "targets (gap: measured/goal for at-most goals, goal/measured for at-least; <= 1 met)",
            table(["target", "measured", "goal", "result", "gap"], rows, markdown),
        )
    notes = results.get("notes", [])
    skipped = results.get("skipped", {})
    if notes or skipped:
        lines = [f"- {n}" for n in notes] + [f"- skipped {k}: {v}" for k, v in skipped.items()]
        section("notes", "\n".join(lines))
    return "\n".join(parts)


def _trace_table(traced: dict[str, Any], markdown: bool) -> str:
    rows_by = traced["rows"]
    attaches = list(rows_by)
    hops: list[str] = []
    titles: dict[str, str] = {}
    for row in rows_by.values():
        for h in row["hops"]:
            if h["hop"] not in titles:
                hops.append(h["hop"])
                titles[h["hop"]] = h["title"]
    headers = ["hop (ends at stamp)", "what"]
    for a in attaches:
        headers += [f"{a} p50", f"{a} p99"]
    rows: list[list[Any]] = []
    for hop in hops:
        line: list[Any] = [hop, titles[hop]]
        for a in attaches:
            found = next((h for h in rows_by[a]["hops"] if h["hop"] == hop), None)
            line += [us(found["p50_us"]), us(found["p99_us"])] if found else ["-", "-"]
        rows.append(line)
    for label, key in (
        ("sum of hop p50s", "hop_p50_sum_us"),
        ("traced p50 (call -> woken)", "traced_p50_us"),
        ("end-to-end p50 (around the call)", "end_to_end_p50_us"),
    ):
        line = [label, ""]
        for a in attaches:
            line += [us(rows_by[a][key]), ""]
        rows.append(line)
    calls = ", ".join(
        f"{a}: {rows_by[a]['calls']} calls, agent {rows_by[a]['agent']}" for a in attaches
    )
    return with_notes(table(headers, rows, markdown), [calls], markdown)


def _ms(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds) * 1000:.0f} ms"


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    # Three significant digits, but never in exponent form (a target of 1,024 B read 1.02e+03).
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
