"""One nemesis run: a cluster, clients, a seeded schedule of faults, healing, checking.

    scripts/nemesis --minutes 10 --seed 7          (or: cd tests && python -m nemesis.run ...)
    scripts/nemesis --steps 4 --seed 7 --kinds kill,pause
    scripts/nemesis --schedule steps.json   (a hand-made schedule: [{"kind", "hold_s",
                                             "rest_s", "params"}, ...]; e.g. a directed one)

Phases: network and cluster up -> roots created -> clients start (each its own process) ->
the nemesis applies the schedule -> everything healed (filters cleared, clocks true, agents
resumed or restarted, every slot's agent a voter) -> clients run healed for a while, then stop
-> a fresh client reads every key after sync() -> every agent must report the same applied
state -> histories checked. A run that fails keeps its directory (histories, final reads, the
fault log, agents' and clients' logs, the seed) and prints the commands that replay it; a run
that passes removes it unless --keep.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from superstatic.client import keys as client_keys
from superstatic.client import oneshot
from superstatic.protocol import wire
from superstatic.protocol.errors import Error

from . import system
from .checks import ModelResult, check_queue_run, check_run, compare_inspected
from .client import KEYS_DEFAULT, MODELS, RESTART_MARK, ROOTS
from .clock import Clocks
from .cluster import SLOTS, NemesisCluster
from .faults import CLOCK_KINDS, KINDS, FaultLog, Nemesis, Step, available, steps
from .net import Loopback, Netns, Network
from .queue_checks import QueueResult
from .queue_workload import DIED_MARK

REPO = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).resolve().parent / "client.py"
ARTIFACTS_DEFAULT = REPO / ".nemesis"
ENV_ARTIFACTS = "SUPERSTATIC_NEMESIS_DIR"
# Mixed clients (every model but the queue) and queue clients: the first queue client puts,
# the others get and ack (queue_workload.py). Queue clients pace slower than mixed ones.
CLIENTS_DEFAULT = 3
QUEUE_CLIENTS_DEFAULT = 3
# Healthy time before the first fault and after the last heal: operations on both sides of
# the faults are in the history (the last ones show the cluster recovered).
WARMUP_S = 2.0
COOLDOWN_S = 4.0
TIMEOUT_S_SETUP = 240.0
# A client stops at its next operation boundary: one operation timeout (10 s) plus close.
TIMEOUT_S_CLIENT_STOP = 40.0
TIMEOUT_S_FINAL = 240.0
TIMEOUT_S_CONVERGE = 90.0
TIMEOUT_MS_INSPECT = 5_000
# The checker's budget per model: generous, the search is exponential only in concurrency.
CHECK_TIMEOUT_S_MIN = 60.0
POLL_S = 0.2
# The summary's rows of acknowledgement problems (support.checker.acks kinds).
ACK_ROWS = (
    ("lost acknowledged writes", ("lost", "too-low")),
    ("writes applied twice", ("duplicated",)),
    ("writes applied though reported failed", ("failed-applied",)),
    ("counters above every bound", ("too-high",)),  # an add doubled, or failed yet applied
    ("writes never attempted, keys never read", ("never-written", "unread")),
)
# The summary's rows of queue problems (queue_checks.KINDS).
QUEUE_ROWS = (
    ("queue: acknowledged puts lost", ("lost", "not-drained")),
    ("queue: delivered, never put or failed", ("never-put", "failed-delivered", "two-items")),
    ("queue: one delivery to two consumers", ("same-delivery-twice", "delivery-regressed")),
    ("queue: acked twice, or acked and redelivered", ("acked-twice", "ack-and-redelivery")),
    ("queue: FIFO beyond the spread", ("fifo",)),
)
# Kinds that need every agent started under libfaketime.
CLOCK_USERS = (*CLOCK_KINDS, "mixed")


@dataclass
class RunConfig:
    seed: int
    steps: int | None = None  # a fixed number of faults (CI), or
    minutes: float | None = None  # faults until this much time has passed
    kinds: Sequence[str] = KINDS
    clients: int = CLIENTS_DEFAULT
    queue_clients: int = QUEUE_CLIENTS_DEFAULT
    keys: int = KEYS_DEFAULT
    artifacts: Path | None = None
    keep: bool = False
    echo: bool = True
    agent_args: Sequence[str] = ()
    # A hand-made schedule (a minimized failure, a directed experiment) instead of the seed's,
    # and the file it came from (for the replay command).
    schedule: Sequence[Step] | None = None
    schedule_path: Path | None = None

    def replay_command(self) -> str:
        parts = ["scripts/nemesis", "--seed", str(self.seed)]
        if self.schedule_path is not None:
            parts += ["--schedule", str(self.schedule_path)]
        if self.steps is not None:
            parts += ["--steps", str(self.steps)]
        if self.minutes is not None:
            parts += ["--minutes", f"{self.minutes:g}"]
        if tuple(self.kinds) != KINDS:
            parts += ["--kinds", ",".join(self.kinds)]
        if self.clients != CLIENTS_DEFAULT:
            parts += ["--clients", str(self.clients)]
        if self.queue_clients != QUEUE_CLIENTS_DEFAULT:
            parts += ["--queue-clients", str(self.queue_clients)]
        if self.keys != KEYS_DEFAULT:
            parts += ["--keys", str(self.keys)]
        return " ".join(parts)


@dataclass
class Outcome:
    config: RunConfig
    run_dir: Path
    kinds_run: list[str]
    skipped: list[str]
    faults: Counter[str]
    results: list[ModelResult]
    convergence_ok: bool
    convergence: list[str]
    notes: list[str]
    elapsed_s: float
    kept: bool = False
    clients: list[dict[str, Any]] = field(default_factory=list)
    recovery_s: list[float | None] = field(default_factory=list)
    # Client processes that re-executed themselves because the library's connection died.
    client_restarts: list[str] = field(default_factory=list)
    # Agents that died on their own (Nemesis.check_crashes): each a violation.
    crashes: list[str] = field(default_factory=list)
    queue: QueueResult | None = None  # None: no queue clients

    @property
    def violations(self) -> int:
        checks = sum(r.violations for r in self.results) + (0 if self.convergence_ok else 1)
        queue = self.queue.violations if self.queue else 0
        return checks + queue + len(self.crashes)

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def operations(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in self.results:
            total.update(r.counts)
        if self.queue is not None:
            total.update(self.queue.counts)
        return total

    def table(self) -> str:
        ops = self.operations()
        rows = [
            ("seed", str(self.config.seed)),
            ("time", f"{self.elapsed_s:.0f} s"),
            (
                "operations",
                f"{sum(ops.values())} (ok {ops['ok']}, fail {ops['fail']}, info {ops['info']})",
            ),
        ]
        for r in self.results:
            verdict = r.verdict.result.value if r.verdict else "unreadable"
            rows.append(
                (
                    f"  {r.model}",
                    f"{sum(r.counts.values())} ops (ok {r.counts['ok']}, fail "
                    f"{r.counts['fail']}, info {r.counts['info']}); linearizable: {verdict}",
                )
            )
        q = self.queue
        if q is not None:
            c = q.counts
            rows.append(
                (
                    f"  {q.model}",
                    f"{sum(c.values())} ops (ok {c['ok']}, fail {c['fail']}, info {c['info']})"
                    f"{'; history unreadable' if q.error else ''}",
                )
            )
            rows.append(("", q.summary()))
        faults = ", ".join(f"{k} {self.faults[k]}" for k in KINDS if self.faults[k])
        rows.append(("faults", f"{sum(self.faults.values())} ({faults or 'none'})"))
        if self.skipped:
            rows.append(("faults skipped", ", ".join(self.skipped)))
        done = sorted(r for r in self.recovery_s if r is not None)
        if self.recovery_s:
            late = len(self.recovery_s) - len(done)
            median = f"{done[len(done) // 2]:.1f}" if done else "-"
            longest = f"{done[-1]:.1f}" if done else "-"
            rows.append(
                (
                    "recovery after heal",
                    f"median {median} s, max {longest} s; {late} of {len(self.recovery_s)} "
                    "not recovered within the rest period",
                )
            )
        illegal = sum(len(r.verdict.illegal()) for r in self.results if r.verdict)
        unknown = sum(len(r.verdict.unknown()) for r in self.results if r.verdict)
        rows.append(("non-linearizable keys", str(illegal)))
        rows.append(("undecided keys (checker budget)", str(unknown)))
        for label, kinds in ACK_ROWS:
            rows.append((label, str(sum(r.ack_count(*kinds) for r in self.results))))
        rows.append(("stale sync() reads", str(sum(len(r.stale) for r in self.results))))
        if self.queue is not None:
            for label, kinds in QUEUE_ROWS:
                rows.append((label, str(self.queue.count(*kinds))))
        rows.append(("agents converged", "yes" if self.convergence_ok else "NO"))
        rows.append(("agents crashed", str(len(self.crashes))))
        rows.append(("client connections died", str(len(self.client_restarts))))
        rows.append(("violations", str(self.violations)))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def report(self) -> str:
        lines = [self.table()]
        if self.notes:
            lines.append("notes:")
            lines.extend(f"  {n}" for n in self.notes)
        if self.client_restarts:
            lines.append("client restarts (the library's connection died; see client-*.err):")
            lines.extend(f"  {r[:200]}" for r in sorted(set(self.client_restarts))[:5])
        if not self.ok:
            lines.extend(r.describe() for r in self.results if r.violations)
            if self.queue is not None and self.queue.violations:
                lines.append(self.queue.describe())
            lines.extend(self.convergence)
            lines.extend(f"crashed: {c[:500]}" for c in self.crashes)
        if self.kept:
            lines.append(f"artifacts: {self.run_dir}")
            lines.append(f"replay the run:     {self.config.replay_command()}")
            for m in MODELS:
                lines.append(
                    f"re-check {m}: python -m tests.support.checker "
                    f"{self.run_dir}/history-{m}.jsonl --model {m} "
                    f"--final {self.run_dir}/final-{m}.jsonl"
                )
        return "\n".join(lines)


def fault_steps(config: RunConfig, kinds: Sequence[str]) -> Iterator[Step]:
    if config.schedule is not None:
        return iter(config.schedule)
    it = steps(config.seed, kinds)
    return islice(it, config.steps) if config.steps is not None else it


def _spawn(
    command: list[str], out: Path, err: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with open(out, "ab") as o, open(err, "ab") as e:
        # Its own session: a Ctrl-C in the terminal reaches the harness, which stops it.
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            start_new_session=True,
            env={**os.environ, **env},
        )


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _client_command(
    cluster: NemesisCluster, config: RunConfig, run_dir: Path, *extra: str, slot: str | None = None
) -> list[str]:
    return [
        sys.executable,
        str(CLIENT),
        "--endpoints",
        ",".join(cluster.endpoints(slot)),
        "--keys",
        str(config.keys),
        "--seed",
        str(config.seed),
        "--out",
        str(run_dir),
        *extra,
    ]


def _client_once(
    command: list[str], env: dict[str, str], run_dir: Path, name: str, timeout_s: float
) -> None:
    process = _spawn(command, run_dir / f"{name}.out", run_dir / f"{name}.err", env)
    try:
        code = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise RuntimeError(f"{name} did not finish within {timeout_s} s") from None
    if code != 0:
        tail = (run_dir / f"{name}.err").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} exited {code}: {tail}")


def _inspect_all(cluster: NemesisCluster) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for slot in cluster.slots:
        ep = cluster.client_endpoint(slot)
        out[slot] = {}
        for root in ROOTS.values():
            reply = oneshot.request(
                ep,
                wire.FrameType.INSPECT,
                {"root": root},
                timeout_ms=TIMEOUT_MS_INSPECT,
                keys=cluster.local.keys("admin") or client_keys.NO_KEYS,
            )
            out[slot][root] = reply.get("value") if reply.get("found") else None
    return out


def converge(cluster: NemesisCluster, run_dir: Path) -> tuple[bool, list[str]]:
    """Every agent at the same commit and applied index, then the same roots everywhere."""
    deadline = time.monotonic() + TIMEOUT_S_CONVERGE
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        statuses = {s: cluster.status(s) for s in cluster.slots}
        seen = {
            s: (st.get("commit"), st.get("applied")) if st else None for s, st in statuses.items()
        }
        if None not in seen.values() and len(set(seen.values())) == 1:
            break
        time.sleep(POLL_S)
    else:
        return False, [f"agents did not reach the same (commit, applied): {seen}"]
    try:
        inspected = _inspect_all(cluster)
    except Error as exc:
        return False, [f"INSPECT failed: {exc}"]
    (run_dir / "inspect.json").write_text(json.dumps(inspected, indent=1, sort_keys=True))
    ok, lines = compare_inspected(run_dir, inspected)
    return ok, [f"applied state at every agent: {seen}", *lines]


@contextlib.contextmanager
def environment(
    run_dir: Path,
    *,
    netns: bool,
    clock_lib: str | None,
    agent_args: Sequence[str] = (),
) -> Iterator[tuple[NemesisCluster, Network, Clocks]]:
    """Network up, three agents started with an agreed leader; on exit (an exception, Ctrl-C,
    or the interpreter exiting) every agent is stopped and the namespaces are deleted."""
    # ipc:// paths are limited to about 100 bytes: the sockets get a short directory of their own.
    sock_dir = Path(tempfile.mkdtemp(prefix="ssnem-", dir="/tmp"))
    net: Network = Netns(SLOTS) if netns else Loopback(SLOTS)
    clocks = Clocks(run_dir / "clocks", clock_lib)
    with contextlib.ExitStack() as stack:
        closed = False

        def cleanup() -> None:
            nonlocal closed
            if not closed:
                closed = True
                stack.close()

        atexit.register(cleanup)  # an exit that skips the with block still cleans up
        stack.callback(atexit.unregister, cleanup)
        stack.callback(shutil.rmtree, sock_dir, True)
        net.create()
        stack.callback(net.destroy)
        cluster = NemesisCluster(run_dir / "agents", sock_dir, net, clocks, SLOTS, agent_args)
        stack.callback(cluster.close)
        cluster.start()
        if cluster.wait_leader() is None:
            raise RuntimeError(f"no leader at start\n{cluster.logs()}")
        yield cluster, net, clocks


def run(config: RunConfig) -> Outcome:
    """Runs, checks and reports; never raises for a violation (see Outcome.ok)."""
    started = time.monotonic()
    caps = system.ensure()
    kinds = available(config.kinds, filters=caps.netns, clocks=caps.faketime_lib is not None)
    skipped = [k for k in config.kinds if k not in kinds]
    notes = [*caps.missing()] if skipped else []
    if caps.installed:
        notes.append(caps.installed)
    artifacts = config.artifacts or Path(os.environ.get(ENV_ARTIFACTS) or ARTIFACTS_DEFAULT)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-seed{config.seed}-{os.getpid()}"
    run_dir = artifacts / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "seed": config.seed,
                "steps": config.steps,
                "minutes": config.minutes,
                "kinds": list(kinds),
                "skipped": skipped,
                "clients": config.clients,
                "queue_clients": config.queue_clients,
                "keys": config.keys,
                "replay": config.replay_command(),
                "schedule": [asdict(s) for s in config.schedule] if config.schedule else None,
            },
            indent=1,
        )
    )
    clock_lib = caps.faketime_lib if any(k in kinds for k in CLOCK_USERS) else None
    log = FaultLog(run_dir / "faults.jsonl", config.echo)
    for line in notes:
        log.note(line)
    clients: list[subprocess.Popen[bytes]] = []
    client_results: list[dict[str, Any]] = []
    phases: list[str] = []
    phase_started = time.monotonic()

    def phase(name: str) -> None:
        nonlocal phase_started
        now = time.monotonic()
        phases.append(f"{name} {now - phase_started:.1f} s")
        phase_started = now

    convergence_ok, convergence_lines = False, ["not reached"]
    crashes: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.callback(log.close)
        cluster, net, clocks = stack.enter_context(
            environment(
                run_dir, netns=caps.netns, clock_lib=clock_lib, agent_args=config.agent_args
            )
        )
        slots = cluster.slots
        client_env = cluster.key_env()
        _client_once(
            _client_command(cluster, config, run_dir, "--setup"),
            client_env,
            run_dir,
            "setup",
            TIMEOUT_S_SETUP,
        )

        def stop_clients() -> None:
            (run_dir / "stop").touch()
            deadline = time.monotonic() + TIMEOUT_S_CLIENT_STOP  # one budget for them all
            for p in clients:
                _stop(p, max(0.1, deadline - time.monotonic()))

        stack.callback(stop_clients)
        budget_s = (config.minutes or 0) * 60 + 3600  # a client outlives no harness by long
        for i in range(config.clients):
            slot = slots[i % len(slots)]
            command = _client_command(
                cluster,
                config,
                run_dir,
                "--client",
                str(i),
                "--deadline-s",
                str(budget_s),
                slot=slot,
            )
            clients.append(
                _spawn(
                    command, run_dir / f"client-{i}.out", run_dir / f"client-{i}.err", client_env
                )
            )
        for j in range(config.queue_clients):
            i = config.clients + j
            role = "producer" if j == 0 else "consumer"
            command = _client_command(
                cluster,
                config,
                run_dir,
                "--client",
                str(i),
                "--role",
                role,
                "--deadline-s",
                str(budget_s),
                slot=slots[i % len(slots)],
            )
            clients.append(
                _spawn(
                    command, run_dir / f"client-{i}.out", run_dir / f"client-{i}.err", client_env
                )
            )
        phase("start")
        time.sleep(WARMUP_S)
        nemesis = Nemesis(cluster, net, clocks, log)
        crashes = nemesis.crashes
        deadline = started + (config.minutes * 60 if config.minutes is not None else float("inf"))
        try:
            for step in fault_steps(config, kinds):
                if time.monotonic() >= deadline:
                    break
                nemesis.perform(step)
        finally:
            nemesis.heal_all()
        phase("faults and healing")
        time.sleep(COOLDOWN_S)
        stop_clients()
        phase("clients stopped")
        for i, p in enumerate(clients):
            out = (run_dir / f"client-{i}.out").read_text(errors="replace").strip().splitlines()
            if p.returncode != 0 or not out:
                notes.append(f"client {i} exited {p.returncode}; see client-{i}.err")
            else:
                client_results.append(json.loads(out[-1]))
        _client_once(
            _client_command(cluster, config, run_dir, "--final", str(run_dir)),
            client_env,
            run_dir,
            "final",
            TIMEOUT_S_FINAL,
        )
        phase("final reads")
        convergence_ok, convergence_lines = converge(cluster, run_dir)
        phase("convergence")
        for slot in slots:
            status = cluster.status(slot)
            if status is not None:
                (run_dir / f"status-{slot}.json").write_text(json.dumps(status, indent=1))
    elapsed = time.monotonic() - started
    check_timeout = max(CHECK_TIMEOUT_S_MIN, elapsed)
    check_started = time.monotonic()
    results, check_notes = check_run(run_dir, timeout_s=check_timeout)
    notes.extend(check_notes)
    queue = check_queue_run(run_dir, notes)
    notes.append("phases: " + ", ".join(phases))
    notes.append(
        f"run {elapsed:.0f} s, checking {time.monotonic() - check_started:.1f} s "
        f"(timeout {check_timeout:.0f} s per model)"
    )
    notes.extend(n for n in log.notes if n not in notes)  # the first few are in both
    outcome = Outcome(
        config,
        run_dir,
        list(kinds),
        skipped,
        log.started,
        results,
        convergence_ok,
        convergence_lines,
        notes,
        time.monotonic() - started,
        clients=client_results,
        recovery_s=log.recovery_s,
        crashes=crashes,
        queue=queue,
        client_restarts=[
            line
            for path in sorted(run_dir.glob("client-*.err"))
            for line in path.read_text(errors="replace").splitlines()
            if line.startswith(RESTART_MARK)
        ],
    )
    died = sum(
        path.read_text(errors="replace").count(f"{DIED_MARK}:")
        for path in run_dir.glob("client-*.err")
    )
    if config.queue_clients:
        notes.append(f"queue consumers that died holding a job (on purpose): {died}")
    keep = config.keep or not outcome.ok
    outcome.kept = keep
    (run_dir / "summary.txt").write_text(outcome.report() + "\n")
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return outcome


STEPS_MAX = 10_000


def load_schedule(path: Path, parser: argparse.ArgumentParser) -> list[Step]:
    """A hand-made schedule: a JSON list of {kind, hold_s, rest_s, params}."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"--schedule {path}: {exc}")
    if not isinstance(raw, list) or not 0 < len(raw) <= STEPS_MAX:
        parser.error(f"--schedule {path}: a JSON list of 1 to STEPS_MAX={STEPS_MAX} steps")
    steps_read = []
    for i, item in enumerate(raw):
        try:
            step = Step(
                str(item["kind"]),
                float(item["hold_s"]),
                float(item["rest_s"]),
                dict(item.get("params", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            parser.error(f"--schedule {path}: step {i}: {exc!r}")
        if step.kind not in KINDS:
            parser.error(f"--schedule {path}: step {i}: unknown kind; kinds: {','.join(KINDS)}")
        steps_read.append(step)
    return steps_read


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/nemesis", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None)
    budget.add_argument("--steps", type=int, default=None)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    parser.add_argument("--clients", type=int, default=CLIENTS_DEFAULT, help="mixed clients")
    parser.add_argument(
        "--queue-clients",
        type=int,
        default=QUEUE_CLIENTS_DEFAULT,
        help="queue clients: one producer, the rest consumers (0: no queue workload)",
    )
    parser.add_argument("--keys", type=int, default=KEYS_DEFAULT)
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"artifacts (default {ARTIFACTS_DEFAULT})"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory even if it passed"
    )
    parser.add_argument(
        "--schedule",
        type=Path,
        default=None,
        help="a JSON list of steps ({kind, hold_s, rest_s, params}) instead of the seed's",
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}; kinds: {','.join(KINDS)}")
    directed = load_schedule(args.schedule, parser) if args.schedule is not None else None
    if directed is not None:
        kinds = sorted({s.kind for s in directed})
    if args.minutes is None and args.steps is None and directed is None:
        args.minutes = 5.0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    config = RunConfig(
        seed=seed,
        steps=args.steps,
        minutes=args.minutes,
        kinds=kinds,
        clients=args.clients,
        queue_clients=args.queue_clients,
        keys=args.keys,
        artifacts=args.dir,
        keep=args.keep,
        schedule=directed,
        schedule_path=args.schedule,
    )
    # SIGINT explicitly too: a process started in the background by a non-interactive shell
    # (a CI runner's `cmd &`, nohup) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: Ctrl-C (and test_interrupted_run_leaves_nothing_behind's
    # SIGINT) did nothing and the run went on to its end.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # unwind and clean up like Ctrl-C
    signal.signal(signal.SIGHUP, _raise_interrupt)
    print(f"nemesis: seed {seed}; replay with: {config.replay_command()}", flush=True)
    outcome = run(config)
    print(outcome.report(), flush=True)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
