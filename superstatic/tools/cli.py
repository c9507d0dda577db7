"""The `superstatic` command: status, inspect, a local cluster, the demo and the benchmarks.

Each subcommand lives in the module that owns its subject; this file only dispatches, so that
`superstatic --help` stays fast (nothing heavy is imported until a subcommand runs).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from superstatic.protocol.errors import Error

USAGE = """superstatic <command> [options]

commands:
  status   --agent ENDPOINT [--json]     members, roles, leader, term, commit/applied, lag
  inspect  [PATH] --agent ENDPOINT       the roots; a node by path (cfg.users[3]) or --ref OID
  top      --agent EP[,EP..]             live throughput, latency and lag of every agent
  members  list|add-learner|promote|remove|transfer [NODE] --agent EP[,EP..]   membership
  keys     new|add|revoke|role|list DIR ...   CURVE keys and allow lists (docs/security.md)
  cluster  [--size N] [--dir DIR] [--metrics] [--no-keys]   a local cluster (Ctrl-C stops)
  demo                                   the guided demo: 3 agents, apps, a leader killed mid-run
  bench    [--quick] [--only W,..] [--peers] [--out DIR]   the benchmark suite
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command in ("demo", "bench"):
        # They start agents and servers and stop them in `finally` blocks: a SIGTERM must
        # unwind the stack like Ctrl-C does, not end the process where it stands.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if command == "status":
            from superstatic.tools.status import main as status_main

            return status_main(rest)
        if command == "inspect":
            from superstatic.tools.inspect import main as inspect_main

            return inspect_main(rest)
        if command == "top":
            from superstatic.tools.top import main as top_main

            return top_main(rest)
        if command == "members":
            from superstatic.tools.members import main as members_main

            return members_main(rest)
        if command == "keys":
            from superstatic.tools.keys import main as keys_main

            return keys_main(rest)
        if command == "cluster":
            return cluster_main(rest)
        if command == "demo":
            from superstatic.tools.demo import main as demo_main

            return demo_main(rest)
        if command == "bench":
            from superstatic_bench.cli import main as bench_main

            return bench_main(rest)
    except Error as exc:
        print(f"superstatic {command}: {exc}", file=sys.stderr)
        return 1
    print(f"superstatic: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def cluster_main(argv: Sequence[str]) -> int:
    from superstatic.tools.localcluster import LocalCluster

    parser = argparse.ArgumentParser(prog="superstatic cluster")
    parser.add_argument("--size", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--dir", type=Path, default=None, help="data folder (default: temporary)")
    parser.add_argument(
        "--metrics", action="store_true", help="each agent serves metrics and its status page"
    )
    parser.add_argument(
        "--no-keys", action="store_true", help="run without CURVE keys (loopback only anyway)"
    )
    args, agent_args = parser.parse_known_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="superstatic-cluster-"))
    cluster = LocalCluster(
        base, size=args.size, agent_args=agent_args, metrics=args.metrics, keyed=not args.no_keys
    )
    with cluster.start():
        leader = cluster.leader()
        endpoints = ",".join(cluster.client_endpoints())
        print(f"cluster of {args.size} up in {base}; leader {leader}")
        print(f"  export SUPERSTATIC_AGENT={endpoints}")
        for spec in cluster.agents.values():
            if spec.metrics_address:
                print(f"  agent {spec.id}: status page {spec.metrics_url}/, metrics /metrics")
        if cluster.keyed:
            print(f"  export SUPERSTATIC_KEYS={cluster.key_file('admin')}")
            print(f"  (app keys admin, app, read in {cluster.keys_dir}/clients)")
        print("Ctrl-C stops every agent.")
        stop = False

        def on_signal(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
