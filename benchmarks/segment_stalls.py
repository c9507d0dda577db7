"""The agent's loop stalls while its Raft log makes a segment (review40; docs/data-model-v2.md
8.18, "Review 40"): three real agents, WRITES writes of ~1 MB through the public API; per
agent, the slow loop turns it logged (at least SLOW_TURN_MS_MIN) and the leader changes; and
(segspare) each agent's rolls that found no spare segment ready.

    python -m superstatic_bench.segment_stalls --segment-bytes 67108864 --dir /tmp/stalls
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

import superstatic
from superstatic.tools.localcluster import LocalCluster

WRITES = 200
VALUE_BYTES = 1_000_000
SLOW_TURN_MS_MIN = 300  # the default election timeout (config.py: 30 ticks of 10 ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segment-bytes", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="emptied, then the agents' folder")
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    agent_args = ["--log-segment-bytes", str(args.segment_bytes)]
    with LocalCluster(args.dir / "agents", size=3, agent_args=agent_args) as cluster:
        cluster.start()
        cluster.leader()
        os.environ.update(cluster.client_env())
        terms = {n: cluster.status(n)["term"] for n in cluster.agents}
        superstatic.connect(cluster.client_endpoints())
        try:
            blob = superstatic.root("blob", dict)
            started = time.monotonic()
            for i in range(WRITES):
                blob["v"] = "z" * VALUE_BYTES + str(i)
            superstatic.sync()
            wall_s = time.monotonic() - started
        finally:
            superstatic.close()
        terms_after = {n: cluster.status(n)["term"] for n in cluster.agents}
        # segspare: rolls that found no spare segment ready (None: an agent without spares).
        misses = {n: cluster.status(n)["store"].get("log_spare_misses") for n in cluster.agents}
    load = os.getloadavg()[0]
    print(f"segment {args.segment_bytes} B, load {load:.1f}, {WRITES} writes in {wall_s:.1f} s")
    print(f"terms {terms} -> {terms_after}")
    print(f"spare misses {misses}")
    for node_id in sorted(terms):
        text = (args.dir / "agents" / f"{node_id}.log").read_text()
        turns = [int(ms) for ms in re.findall(r"slow loop turn: (\d+) ms", text)]
        slow = sorted(ms for ms in turns if ms >= SLOW_TURN_MS_MIN)
        print(f"{node_id}: slow turns (ms) {slow}")


if __name__ == "__main__":
    main()
