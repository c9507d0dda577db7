"""A nemesis client: one process doing one operation at a time through the public API only
(`superstatic.connect`, `root`, `transaction`, `sync`, `plain`), recording each as Jepsen-style
events in the checker's JSON Lines format (tests/support/checker/history.py).

    python tests/nemesis/client.py --endpoints EP,EP,.. --client 3 --out DIR [--seed S]
        [--keys 4] [--deadline-s 60]        run operations until DIR/stop exists
    python tests/nemesis/client.py --endpoints ... --setup     create the roots
    python tests/nemesis/client.py --endpoints ... --final DIR read every key after healing,
                                                                drain the queue
    python tests/nemesis/client.py ... --role producer|consumer   the queue workload instead

Workloads, one independent object per key (so the checker can split by key):
- register: `nemesis.registers[k]`, a small int. read = sync() then get; write = a lone
  assignment; cas(old, new) = a transaction that writes only if the value is `old` (a cas that
  finds another value commits nothing and is recorded `fail`, Jepsen's convention).
- counter: `nemesis.counters[k]`: add n in a transaction (read-modify-write), read after sync().
- set: `nemesis.sets[k]`, a shared set: add x (blind), read the whole set after sync().
- list-append: `nemesis.lists[k]`, a shared list: append x (blind), read it whole after sync().
- queue (its own clients, `--role producer|consumer`): `superstatic.Queue` put / get / ack,
  see queue_workload.py.
Every value written is unique to the run (client * 10^9 + generation * 10^6 + a counter: a
generation is one process image, see restart()), which makes both
the checker's search and the lost/duplicate accounting exact.

Outcomes: ok; `fail` when the operation certainly did not take effect (`ConflictError`, a
refused transaction, `Unavailable` with `outcome_known` true, a cas that did not match); `info`
when it may or may not have (`Unavailable` saying the outcome is unknown, any other error).
Reads that do not return are dropped by the checker whatever their label.

Each event is written and flushed at once, so a client killed mid-run leaves a usable history
(an invoke without completion counts as info).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import superstatic

if __package__:
    from . import queue_workload
else:  # run as a script (the harness does): its directory is on sys.path
    import queue_workload  # type: ignore[no-redef]

DIED_MARK = queue_workload.DIED_MARK
QueueClient = queue_workload.QueueClient

MODELS = ("register", "counter", "set", "list-append")
ROOTS = {
    "register": "nemesis.registers",
    "counter": "nemesis.counters",
    "set": "nemesis.sets",
    "list-append": "nemesis.lists",
}
KEYS_DEFAULT = 4
# Think time between operations, uniform in [0, PACE_S_MAX]: keeps 4 clients and 3 agents on
# 2 cores from starving the agents' timers (which would turn load into needless elections).
PACE_S_MAX = 0.03
# Per-operation timeout the library enforces (SUPERSTATIC_TIMEOUT_MS); below the agents'
# session TTL (60 s), so a request is never resent after its session could have expired.
TIMEOUT_MS_OP = 10_000
# Unexpected errors in a row before the client gives up its connection: it then re-executes
# itself (a fresh process, a fresh library), keeping its history files and process number.
ERRORS_BEFORE_RESTART = 3
# The library says this when its connection's I/O thread died: nothing works on it any more.
CONNECTION_DEAD = "connection stopped"
RESTART_MARK = "RESTART"
ROLES = ("mixed", *queue_workload.ROLES)
# The drain's process number in the queue history (clients are numbered from 0).
DRAIN_CLIENT = 9_999
# A full outage can kill a connection again and again (about once a second): room for many.
GENERATIONS_MAX = 999
GENERATION_BASE = 1_000_000  # values of one generation: client * 10^9 + generation * 10^6 + n
# Setup and the final reads retry until this long has passed.
TIMEOUT_S_RETRY = 180.0
RETRY_PAUSE_S = 0.5
ELEMENT_BASE = 1_000_000_000
ERROR_CHARS_MAX = 300


def keys_of(count: int) -> list[str]:
    return [f"k{i}" for i in range(count)]


class Roots:
    """The four roots, (re)attached after each connect."""

    def __init__(self) -> None:
        self.registers = superstatic.root(ROOTS["register"], dict)
        self.counters = superstatic.root(ROOTS["counter"], dict)
        self.sets = superstatic.root(ROOTS["set"], dict)
        self.lists = superstatic.root(ROOTS["list-append"], dict)


def retry(what: str, action: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + TIMEOUT_S_RETRY
    while True:
        try:
            return action()
        except superstatic.Error as exc:
            if time.monotonic() > deadline:
                raise
            print(f"{what}: {exc}; retrying", file=sys.stderr, flush=True)
            time.sleep(RETRY_PAUSE_S)


def setup(keys: list[str]) -> None:
    roots = retry("attach roots", Roots)

    @superstatic.transaction()
    def create() -> None:
        for key in keys:
            if key not in roots.sets:
                roots.sets[key] = set()
            if key not in roots.lists:
                roots.lists[key] = []

    retry("create containers", create)
    retry("sync", superstatic.sync)


def read_all(roots: Roots, model: str, keys: list[str]) -> dict[str, Any]:
    if model == "register":
        return {k: roots.registers.get(k) for k in keys}
    if model == "counter":
        return {k: roots.counters.get(k, 0) for k in keys}
    if model == "set":
        return {k: sorted(superstatic.plain(roots.sets[k])) for k in keys}
    return {k: list(superstatic.plain(roots.lists[k])) for k in keys}


def final(keys: list[str], out: Path) -> None:
    roots = retry("attach roots", Roots)
    retry("sync", superstatic.sync)
    for model in MODELS:
        values = read_all(roots, model, keys)
        with open(out / f"final-{model}.jsonl", "w", encoding="utf-8") as file:
            for key in keys:
                file.write(json.dumps({"key": key, "value": values[key]}) + "\n")
    rec = Recorder(out, DRAIN_CLIENT)
    try:
        queue_workload.drain(rec, out)
    finally:
        rec.close()


class Recorder:
    """One JSONL file per model the client used; wall-clock nanoseconds, never going back
    within a process."""

    def __init__(self, out: Path, client: int) -> None:
        self.client = client
        self.out = out
        self.files: dict[str, TextIO] = {}
        self.last_ns = 0
        self.counts: dict[str, int] = {"ok": 0, "fail": 0, "info": 0}

    def event(
        self, model: str, kind: str, f: str, key: str, value: Any, error: str | None = None
    ) -> None:
        # One clock for every process on this machine; clamped so one process's events never
        # go back if the system clock is stepped (the clients run without libfaketime).
        now = max(time.time_ns(), self.last_ns)
        self.last_ns = now
        obj: dict[str, Any] = {
            "type": kind,
            "process": self.client,
            "f": f,
            "key": key,
            "value": value,
            "time": now,
        }
        if error:
            obj["error"] = error[:ERROR_CHARS_MAX]
        file = self.files.get(model)
        if file is None:
            # Open for the client's whole life; closed in close().
            path = self.out / f"history-{model}-c{self.client}.jsonl"
            file = self.files[model] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        file.write(json.dumps(obj) + "\n")
        file.flush()
        if kind != "invoke":
            self.counts[kind] += 1

    def close(self) -> None:
        for file in self.files.values():
            file.close()


class Client:
    def __init__(
        self, client: int, generation: int, keys: list[str], rng: random.Random, rec: Recorder
    ) -> None:
        self.client = client
        self.generation = generation
        self.keys = keys
        self.rng = rng
        self.rec = rec
        self.roots = Roots()
        self.seen: dict[str, Any] = {}  # register: last value read per key (cas expects it)
        self.last_error = ""
        self.numbers = itertools.count(1)

    def unique(self) -> int:
        n = next(self.numbers)
        assert n < GENERATION_BASE, "a client generation ran out of unique values"
        return self.client * ELEMENT_BASE + self.generation * GENERATION_BASE + n

    def choose(self) -> tuple[str, str, str, Any, Callable[[], Any]]:
        """(model, f, key, value, action); the action returns the ok answer or raises."""
        model = self.rng.choice(MODELS)
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        r = self.roots
        if model == "register":
            if roll < 0.4:
                return model, "read", key, None, lambda: self._synced(lambda: r.registers.get(key))
            if roll < 0.7:
                value = self.unique()

                def write() -> int:
                    r.registers[key] = value
                    return value

                return model, "write", key, value, write
            old, new = self.seen.get(key), self.unique()
            return model, "cas", key, [old, new], lambda: self._cas(key, old, new)
        if model == "counter":
            if roll < 0.5:
                return (
                    model,
                    "read",
                    key,
                    None,
                    lambda: self._synced(lambda: r.counters.get(key, 0)),
                )
            n = self.rng.randint(1, 5)
            return model, "add", key, n, lambda: self._add(key, n)
        if model == "set":
            if roll < 0.4:
                return (
                    model,
                    "read",
                    key,
                    None,
                    lambda: self._synced(lambda: sorted(superstatic.plain(r.sets[key]))),
                )
            x = self.unique()
            return model, "add", key, x, lambda: r.sets[key].add(x)
        if roll < 0.4:
            return (
                model,
                "read",
                key,
                None,
                lambda: self._synced(lambda: list(superstatic.plain(r.lists[key]))),
            )
        x = self.unique()
        return model, "append", key, x, lambda: r.lists[key].append(x)

    def _synced(self, read: Callable[[], Any]) -> Any:
        superstatic.sync()
        return read()

    def _cas(self, key: str, old: Any, new: int) -> bool:
        registers = self.roots.registers

        @superstatic.transaction()
        def body() -> bool:
            if registers.get(key) != old:
                return False
            registers[key] = new
            return True

        return body()

    def _add(self, key: str, n: int) -> None:
        counters = self.roots.counters

        @superstatic.transaction()
        def body() -> None:
            counters[key] = counters.get(key, 0) + n

        body()

    def step(self) -> str:
        """One operation: "ok" (whatever its outcome), "error" (an unexpected error), or
        "dead" (the library's connection stopped for good)."""
        model, f, key, value, action = self.choose()
        self.rec.event(model, "invoke", f, key, value)
        try:
            answer = action()
        except superstatic.Unavailable as exc:
            kind = "fail" if exc.outcome_known else "info"
            self.rec.event(model, kind, f, key, value, f"Unavailable: {exc}")
            return "ok"
        except superstatic.ConflictError as exc:
            self.rec.event(model, "fail", f, key, value, f"ConflictError: {exc}")
            return "ok"
        except superstatic.Error as exc:
            # "nothing was applied" is the library's word for a refused transaction.
            kind = "fail" if "nothing was applied" in str(exc) else "info"
            self.rec.event(model, kind, f, key, value, f"{type(exc).__name__}: {exc}")
            if CONNECTION_DEAD in str(exc):
                self.last_error = str(exc)
                return "dead"
            return "ok" if kind == "fail" else "error"
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.rec.event(model, "info", f, key, value, self.last_error)
            traceback.print_exc(file=sys.stderr)
            return "error"
        if f == "cas":
            if answer:
                self.seen[key] = value[1]
                self.rec.event(model, "ok", f, key, value)
            else:
                self.rec.event(model, "fail", f, key, value, "cas: value differs")
                # Expect what this client can see now, so its next cas has a chance.
                self.seen[key] = self.roots.registers.get(key)
            return "ok"
        if f == "read":
            if model == "register":
                self.seen[key] = answer
            self.rec.event(model, "ok", f, key, answer)
            return "ok"
        self.rec.event(model, "ok", f, key, value)
        return "ok"


def restart(
    args: argparse.Namespace, deadline: float, reason: str, mark: str = RESTART_MARK
) -> None:
    """Re-executes this client as a fresh process (same PID, files, process number)."""
    print(f"{mark}: {reason}", file=sys.stderr, flush=True)
    if args.generation >= GENERATIONS_MAX:
        print(f"giving up after {GENERATIONS_MAX} restarts", file=sys.stderr, flush=True)
        os._exit(3)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--endpoints",
        args.endpoints,
        "--client",
        str(args.client),
        "--role",
        args.role,
        "--seed",
        str(args.seed),
        "--keys",
        str(args.keys),
        "--out",
        args.out,
        "--deadline-s",
        str(max(1.0, deadline - time.monotonic())),
        "--generation",
        str(args.generation + 1),
    ]
    sys.stdout.flush()
    # exec, not exit: a process whose connection died may hang in interpreter shutdown.
    os.execv(sys.executable, argv)


def stopping(stop: Path, deadline: float, parent: int) -> bool:
    return stop.exists() or time.monotonic() >= deadline or os.getppid() != parent


def run(args: argparse.Namespace, endpoints: list[str]) -> dict[str, Any]:
    out = Path(args.out)
    stop = out / "stop"
    parent = os.getppid()
    deadline = time.monotonic() + args.deadline_s
    rng = random.Random(f"{args.seed}.{args.client}.{args.generation}")
    rec = Recorder(out, args.client)
    client: Client | QueueClient | None = None
    errors = 0
    try:
        while not stopping(stop, deadline, parent):
            if client is None:
                try:
                    mixed = Client(args.client, args.generation, keys_of(args.keys), rng, rec)
                    client = (
                        mixed
                        if args.role == "mixed"
                        else QueueClient(args.role, rec, rng, mixed.unique)
                    )
                except superstatic.Error as exc:
                    print(f"attach: {exc}", file=sys.stderr, flush=True)
                    if CONNECTION_DEAD in str(exc):
                        rec.close()
                        restart(args, deadline, str(exc))
                    time.sleep(RETRY_PAUSE_S)
                    continue
            status = client.step()
            if status == "die":  # a consumer dies holding a job: a new process takes over
                rec.close()
                restart(args, deadline, "died holding a job, on purpose", DIED_MARK)
            errors = errors + 1 if status == "error" else 0
            if status == "dead" or errors >= ERRORS_BEFORE_RESTART:
                rec.close()
                restart(args, deadline, f"{status}: {client.last_error}")
            time.sleep(rng.uniform(0.0, PACE_S_MAX))
    finally:
        rec.close()
    return {"client": args.client, "generation": args.generation, **rec.counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--client", type=int, default=0)
    parser.add_argument("--role", choices=ROLES, default="mixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keys", type=int, default=KEYS_DEFAULT)
    parser.add_argument("--out", default=".")
    parser.add_argument("--deadline-s", type=float, default=600.0)
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--final", metavar="DIR")
    parser.add_argument("--generation", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("SUPERSTATIC_TIMEOUT_MS", str(TIMEOUT_MS_OP))
    endpoints = args.endpoints.split(",")
    # connect() syncs: it fails while no quorum answers (a restarted client may arrive then).
    deadline = time.monotonic() + (TIMEOUT_S_RETRY if args.setup or args.final else args.deadline_s)
    while True:
        try:
            superstatic.connect(endpoints)
            break
        except superstatic.Error as exc:
            print(f"connect: {exc}", file=sys.stderr, flush=True)
            if time.monotonic() > deadline or (Path(args.out) / "stop").exists():
                os._exit(2)  # not sys.exit: a dead connection can hang interpreter shutdown
            time.sleep(RETRY_PAUSE_S)
            if CONNECTION_DEAD in str(exc):
                if args.setup or args.final:  # the harness bounds these runs: same command
                    os.execv(sys.executable, [sys.executable, *sys.argv])
                restart(args, deadline, f"connect: {exc}")
    try:
        if args.setup:
            setup(keys_of(args.keys))
            result: dict[str, Any] = {"setup": True}
        elif args.final:
            final(keys_of(args.keys), Path(args.final))
            result = {"final": args.final}
        else:
            result = run(args, endpoints)
    finally:
        superstatic.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
