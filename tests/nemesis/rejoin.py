"""How long after a healed partition every agent follows one leader again (docs/reliability.md,
finding 4). No clients: only the cluster, one agent cut off both ways per round (the leader in
even rounds, a follower in odd ones), then every agent's STATUS polled from the heal on.

    cd tests && python -m nemesis.rejoin --rounds 4 --hold-s 20

Prints one line per change of (role, term, leader) and the time to recover, or which agents
died (libzmq aborts, see the finding). Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import system
from .cluster import NemesisCluster
from .net import Network, Rules
from .run import environment

TIMEOUT_S_RECOVER = 60.0
REST_S = 3.0
POLL_S = 0.2


def one_round(cluster: NemesisCluster, net: Network, n: int, hold_s: float) -> str:
    leader = cluster.wait_leader()
    if leader is None:
        return f"round {n}: no leader before the cut"
    slots = cluster.slots
    victim = slots[(slots.index(leader) + n % 2) % len(slots)]
    others = [s for s in slots if s != victim]
    net.apply(Rules(cut={(victim, o) for o in others} | {(o, victim) for o in others}))
    time.sleep(hold_s)
    net.heal()
    healed = time.monotonic()
    seen: dict[str, object] = {}
    while time.monotonic() - healed < TIMEOUT_S_RECOVER:
        elapsed = time.monotonic() - healed
        dead = [s for s in slots if not cluster.alive(s)]
        if dead:
            return f"round {n} ({victim} cut): agents {dead} DIED {elapsed:.2f} s after the heal"
        statuses = {s: cluster.status(s) for s in slots}
        now = {
            s: (st.get("role"), st.get("term"), st.get("leader")) if st else None
            for s, st in statuses.items()
        }
        if now != seen:
            print(f"  +{elapsed:5.2f} s {now}", flush=True)
            seen = now
        if cluster.wait_leader(timeout_s=0.01) is not None:
            return f"round {n} ({victim} cut): recovered {elapsed:.2f} s after the heal"
        time.sleep(POLL_S)
    return f"round {n} ({victim} cut): NOT recovered within {TIMEOUT_S_RECOVER} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemesis.rejoin")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--hold-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    caps = system.ensure()
    if not caps.netns:
        print(f"cannot partition here: {caps.why_no_netns}", file=sys.stderr)
        return 2
    failed = False
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssnem-rejoin-")))
        cluster, net, _clocks = stack.enter_context(environment(tmp, netns=True, clock_lib=None))
        for n in range(args.rounds):
            line = one_round(cluster, net, n, args.hold_s)
            print(line, flush=True)
            if "DIED" in line or "NOT" in line or "no leader" in line:
                failed = True
                print(cluster.logs()[-4000:], flush=True)
                break
            time.sleep(REST_S)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
