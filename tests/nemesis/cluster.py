"""Three agents in slots (n1, n2, n3): a slot is a place on the network (its namespace and
address) and a client endpoint; the agent in it may change (a membership fault replaces one).

Built on LocalCluster: the same processes, data directories and logs, with each agent's peer
endpoint on its slot's address, its client endpoint a unix socket named after the slot (so the
clients' endpoint lists survive a replacement), and its command run through the network's
prefix (`ip netns exec`) with its slot's libfaketime environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from superstatic.client import keys as client_keys
from superstatic.protocol.errors import Error
from superstatic.tools.localcluster import AgentSpec, LocalCluster

from .clock import Clocks
from .net import Network

SLOTS = ("n1", "n2", "n3")
TIMEOUT_S_LEADER = 60.0
TIMEOUT_S_CONFIGURATION = 15.0
TIMEOUT_MS_STATUS = 1_500
TIMEOUT_MS_MEMBERS = 30_000
# A `superstatic members` command gets its own timeout plus this for starting Python.
TIMEOUT_S_MEMBERS_EXTRA = 30.0
POLL_S = 0.1
IDS_MAX = 26


class NemesisCluster:
    def __init__(
        self,
        base_dir: Path,
        sock_dir: Path,
        net: Network,
        clocks: Clocks,
        slots: Sequence[str] = SLOTS,
        agent_args: Sequence[str] = (),
    ) -> None:
        self.net = net
        self.clocks = clocks
        self.slots = list(slots)
        self.sock_dir = sock_dir
        self.local = LocalCluster(
            base_dir, size=len(self.slots), agent_args=agent_args, launcher=self._launch
        )
        self.slot_of: dict[str, str] = {}
        for node_id, slot in zip(list(self.local.agents), self.slots, strict=True):
            spec = self.local.agents[node_id]
            spec.peer_endpoint = net.peer_endpoint(slot)
            spec.client_endpoint = self.client_endpoint(slot)
            self.slot_of[node_id] = slot
        self.retired: dict[str, AgentSpec] = {}
        self._next_id = len(self.slots)

    # -- addressing --------------------------------------------------------------------------

    def client_endpoint(self, slot: str) -> str:
        return f"ipc://{self.sock_dir}/{slot}.sock"

    def endpoints(self, first: str | None = None) -> list[str]:
        """Every slot's client endpoint, starting with `first` (a client's own agent)."""
        order = self.slots
        if first is not None:
            i = order.index(first)
            order = order[i:] + order[:i]
        return [self.client_endpoint(s) for s in order]

    def id_in(self, slot: str) -> str:
        (node_id,) = [i for i, s in self.slot_of.items() if s == slot and i in self.local.agents]
        return node_id

    def spec(self, slot: str) -> AgentSpec:
        return self.local.agents[self.id_in(slot)]

    def key_env(self, name: str = "app") -> dict[str, str]:
        """SUPERSTATIC_KEYS naming this cluster's app key `name` (app: writes; admin: members
        and INSPECT), for the processes the harness starts: never whatever key the harness's
        own environment names (a test session's, or none), which these agents do not know."""
        path = self.local.key_file(name)
        return {client_keys.ENV_KEYS: str(path)} if path is not None else {}

    def _launch(self, spec: AgentSpec) -> tuple[list[str], dict[str, str]]:
        slot = self.slot_of[spec.id]
        return self.net.prefix(slot), self.clocks.env(slot)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.local.start()

    def start_slot(self, slot: str) -> None:
        if not self.spec(slot).alive():
            self.local.start_agent(self.id_in(slot))

    def kill(self, slot: str) -> None:
        self.local.kill(self.id_in(slot))

    def pause(self, slot: str) -> None:
        self.local.pause(self.id_in(slot))

    def resume(self, slot: str) -> None:
        self.local.resume(self.id_in(slot))

    def alive(self, slot: str) -> bool:
        return self.spec(slot).alive()

    def pids(self) -> dict[str, int | None]:
        return {s: self.spec(s).pid for s in self.slots}

    def close(self) -> None:
        self.local.close()

    def replace(self, slot: str) -> str:
        """Stops the agent in `slot` (already removed from the configuration) and starts a new
        one there with a fresh id and an empty data directory; it joins as a learner."""
        old = self.id_in(slot)
        self.local.stop(old)
        self.retired[old] = self.local.agents.pop(old)
        assert self._next_id < IDS_MAX, "out of agent ids"
        new = chr(ord("a") + self._next_id)
        self._next_id += 1
        self.slot_of[new] = slot
        self.local.add_learner(
            new,
            peer_endpoint=self.net.peer_endpoint(slot),
            client_endpoint=self.client_endpoint(slot),
        )
        return new

    def mark_voter(self, node_id: str, voter: bool) -> None:
        """Records a promotion, so that a restart gives it --peers, not --listen."""
        self.local.agents[node_id].voter = voter

    # -- observation -------------------------------------------------------------------------

    def status(self, slot: str, timeout_ms: int = TIMEOUT_MS_STATUS) -> dict[str, Any] | None:
        if not self.alive(slot):
            return None
        try:
            return self.local.status(self.id_in(slot), timeout_ms=timeout_ms)
        except Error:
            return None

    def leader_now(self) -> str | None:
        """The slot of the agent that says it leads in the highest term, if any answers."""
        best: tuple[int, str] | None = None
        for slot in self.slots:
            status = self.status(slot)
            if status is not None and status.get("role") == "leader":
                term = int(status.get("term", 0))
                if best is None or term > best[0]:
                    best = (term, slot)
        return best[1] if best else None

    def wait_leader(self, timeout_s: float = TIMEOUT_S_LEADER) -> str | None:
        """A slot whose agent leads and is followed by every member that answers, or None.
        An agent removed from the configuration may never learn a leader again: not asked."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answered = {s: st for s in self.slots if (st := self.status(s)) is not None}
            leading = sorted(
                (s for s, st in answered.items() if st.get("role") == "leader"),
                key=lambda s: -int(answered[s].get("term", 0)),
            )
            for slot in leading:
                leader_id = answered[slot]["id"]
                members = {m["id"] for m in answered[slot].get("members", [])}
                if all(
                    st.get("leader") == leader_id
                    for st in answered.values()
                    if st.get("id") in members
                ):
                    return slot
            time.sleep(POLL_S)
        return None

    def configuration(
        self, timeout_s: float = TIMEOUT_S_CONFIGURATION
    ) -> tuple[list[str], list[str]] | None:
        """(voters, learners) as the leader reports them; None if no leader answers in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            slot = self.leader_now()
            status = self.status(slot) if slot else None
            if status is not None and status.get("role") == "leader":
                members = status.get("members", [])
                voters = sorted(m["id"] for m in members if m.get("voter"))
                learners = sorted(m["id"] for m in members if not m.get("voter"))
                return voters, learners
            time.sleep(POLL_S)
        return None

    def members(self, *args: str, timeout_ms: int = TIMEOUT_MS_MEMBERS) -> tuple[int, str]:
        """Runs `superstatic members ARGS --agent <every slot>`; (exit status, output)."""
        command = [
            sys.executable,
            "-c",
            "import sys; from superstatic.tools.cli import main; sys.exit(main())",
            "members",
            *args,
            "--agent",
            ",".join(self.endpoints()),
            "--timeout-ms",
            str(timeout_ms),
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout_ms / 1000 + TIMEOUT_S_MEMBERS_EXTRA,
                env={**os.environ, **self.key_env("admin")},
            )
        except subprocess.TimeoutExpired:
            return 124, "timed out"
        return done.returncode, (done.stdout + done.stderr).strip()

    def lag(self, node_id: str) -> int | None:
        slot = self.leader_now()
        status = self.status(slot) if slot else None
        if status is None:
            return None
        for m in status.get("members", []):
            if m["id"] == node_id and m.get("lag") is not None:
                return int(m["lag"])
        return None

    def logs(self) -> str:
        return self.local.logs()

    def describe(self) -> str:
        return json.dumps({s: self.id_in(s) for s in self.slots})
