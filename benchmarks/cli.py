"""`superstatic bench`: the benchmark suite's command line (see docs/performance.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

from superstatic_bench import registry, report, settings
from superstatic_bench.suite import Options, run

DEFAULT_OUT = Path("bench-results")
# --threads: each caller is an OS thread in every client process, and the suite starts up to
# three client processes on this one machine.
THREADS_MAX = 256


def parser() -> argparse.ArgumentParser:
    workloads = "\n".join(f"  {w.name:<11} {w.title}" for w in registry.WORKLOADS)
    p = argparse.ArgumentParser(
        prog="superstatic bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Starts everything it needs on loopback, runs the workloads, prints tables, "
        "writes JSON and PNG plots, and stops everything it started.",
        epilog=f"workloads:\n{workloads}",
    )
    p.add_argument("--quick", action="store_true", help="short runs: about a minute in all")
    p.add_argument(
        "--large",
        action="store_true",
        help="also catch up after 1M objects; the heap workloads at 1M objects",
    )
    p.add_argument("--only", default=None, help="comma-separated workloads (default: all)")
    p.add_argument(
        "--peers",
        action="store_true",
        help="also run PySyncObj, Redis and etcd (pip-installs missing Python packages; "
        "servers come from apt: redis-server, etcd-server)",
    )
    p.add_argument(
        "--keys-per-thread",
        type=int,
        default=None,
        help="keys each writer thread cycles through (default 100; the dict root holds "
        "clients x threads x this many items)",
    )
    p.add_argument(
        "--catchup-objects",
        default=None,
        metavar="N[,N...]",
        help="objects written before the catch-up workload's restart, one run per size "
        "(default 100000; --quick 5000; --large adds 1000000); e.g. 1000000",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"concurrent callers per client process in the throughput and bigdict rows "
        f"(default {settings.FULL.threads}; at most THREADS_MAX={THREADS_MAX}): the batches a "
        "closed loop makes grow with the callers in flight (docs/data-model-v2.md 8.12)",
    )
    p.add_argument(
        "--agent-args",
        default=None,
        metavar="FLAGS",
        help="extra flags for every agent the suite starts, one quoted string (a labelled "
        "diagnostic, noted in the results), e.g. '--peer-recv-queue-frames-max 64'",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for JSON and PNG")
    p.add_argument("--no-plots", action="store_true", help="write no PNG")
    p.add_argument("--keep", action="store_true", help="keep the work folder (data, logs)")
    p.add_argument("--work-dir", type=Path, default=None, help="work folder (default: temp)")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="run nothing: print the tables of an earlier results.json as Markdown",
    )
    return p


def parse_sizes(text: str) -> tuple[int, ...]:
    """--catchup-objects: comma-separated object counts, each 1..COUNT_MAX."""
    from superstatic_bench.workloads.objects_load import COUNT_MAX

    sizes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= COUNT_MAX:
            raise ValueError(
                f"--catchup-objects takes counts from 1 to COUNT_MAX={COUNT_MAX:,}, comma-separated"
            )
        sizes.append(int(part))
    if not sizes:
        raise ValueError("--catchup-objects names no count")
    return tuple(sizes)


def settings_of(args: argparse.Namespace) -> settings.Settings:
    """The run's settings from the parsed flags; ValueError names a bad flag."""
    sizes = None if args.catchup_objects is None else parse_sizes(args.catchup_objects)
    chosen = settings.choose(args.quick, args.large, sizes)
    if args.agent_args:
        chosen = dataclasses.replace(chosen, agent_args=tuple(shlex.split(args.agent_args)))
    if args.threads is not None:
        if not 1 <= args.threads <= THREADS_MAX:
            raise ValueError(f"--threads takes 1 to THREADS_MAX={THREADS_MAX} callers")
        chosen = dataclasses.replace(chosen, threads=args.threads)
    if args.keys_per_thread is not None:
        chosen = dataclasses.replace(chosen, keys_per_thread=args.keys_per_thread)
    return chosen


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        print(f"command: `{results.get('command')}`, {results.get('started_at')}\n")
        print(report.render(results, markdown=True))
        return 0
    try:
        selected = registry.select(args.only)
    except ValueError as exc:
        parser().error(str(exc))
    try:
        chosen = settings_of(args)
    except ValueError as exc:
        parser().error(str(exc))
    options = Options(
        selected=selected,
        settings=chosen,
        out_dir=args.out,
        peers=args.peers,
        keep=args.keep,
        plots=not args.no_plots,
        command=shlex.join(["superstatic", "bench", *argv]),
        work_dir=args.work_dir,
    )
    return run(options)
