"""The app side of the virtual heap workloads (heapstart, heapmem, heapfanout; docs/virtual-heap.md
section 8): `{"cmd": "heap", "phase": ...}` in a `--system none` client process, which
connects only when told, with the replicate mode it is told.

Phases:
* `connect`: connects (the loader and the fan-out writer; `replicate` as given).
* `counter`: creates the counter root the heapstart samples read (`{"n": 0}`).
* `start`: one heapstart sample: `connect()` then the first read of the counter root, each
  timed with `time.perf_counter()`; the library's modules are imported before the clock
  starts (their import is the same at every cluster size; it is reported apart).
* `mem`: connect, `gc.collect()`, RssAnon; touch one key of `touch` objects of the load's
  layout chosen at random (seeded) among `objects`; `gc.collect()`, RssAnon again; the
  replica's estimate of what it holds (`Replica.held_bytes`) and its heap counters.
* `fan_setup`: the fan-out's data: for each app k < `apps`, a root `FAN_ROOT_PREFIX + k` of
  `objects` small dicts `{"n": 0}`.
* `fan_hold`: an app connects and reads every small dict of its own root, keeping the proxies
  referenced (so none is evicted: the app holds them for the whole run).
* `fan_write`: the writer commits `writes` writes round-robin over the apps' dicts (write w
  goes to app w % apps), at most `rate` per second.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import time
from dataclasses import asdict, is_dataclass
from typing import Any

from superstatic_bench.client import rss_bytes
from superstatic_bench.workloads.objects_load import COUNT_MAX, OBJECTS_PER_BUCKET, OBJECTS_ROOT

COUNTER_ROOT = "bench.heap.counter"
FAN_ROOT_PREFIX = "bench.heap.fan."
REPLICATE = ("all", "partial")
APPS_MAX = 256
FAN_OBJECTS_MAX = 10_000
WRITES_MAX = 10_000_000
RATE_PER_S_MAX = 100_000
TOUCH_MAX = 1_000_000
# What the fan-out apps hold for the life of the process (module level: never collected).
_held: list[Any] = []


def _bounded(command: dict[str, Any], name: str, low: int, high: int) -> int:
    """An integer field within [low, high]; the error names the field and its bounds."""
    value = int(command[name])
    if not low <= value <= high:
        raise ValueError(f"{name} outside {low}..{high}")
    return value


def _replicate(command: dict[str, Any]) -> str:
    mode = command.get("replicate", "all")
    if mode not in REPLICATE:
        raise ValueError(f"replicate is one of {', '.join(REPLICATE)}")
    return str(mode)


def touched_objects(objects: int, touch: int, seed: int) -> list[int]:
    """The objects heapmem touches: `touch` distinct indices of `objects`, seeded."""
    if not 0 <= touch <= objects:
        raise ValueError("touch outside 0..objects")
    return random.Random(seed).sample(range(objects), touch)


def fan_target(write: int, apps: int, objects: int) -> tuple[int, int]:
    """(app, dict) that write number `write` sets: apps in turn, then each app's dicts in
    turn, so every write is held by exactly one app and every app gets the same share."""
    return write % apps, (write // apps) % objects


def _connect(command: dict[str, Any]) -> None:
    import superstatic

    # The suite names the key file (or none), whatever the environment says.
    os.environ.pop("SUPERSTATIC_KEYS", None)
    superstatic.connect(
        list(command["endpoints"]),
        keys=command.get("keys") or None,
        replicate=_replicate(command),
    )


def _replica() -> Any:
    from superstatic.client import default as session_default

    return session_default.get().replica


def _heap_facts() -> dict[str, Any]:
    replica = _replica()
    stats = getattr(replica, "stats", None)
    return {
        "held_bytes": int(getattr(replica, "held_bytes", 0)),
        "partial": bool(getattr(replica, "partial", False)),
        "heap_stats": asdict(stats) if stats is not None and is_dataclass(stats) else {},
    }


def _start(command: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    # What connect() imports on first use: the same at every cluster size, timed apart.
    importlib.import_module("superstatic.client.connection")
    import superstatic

    imported = time.perf_counter()
    _connect(command)
    connected = time.perf_counter()
    value = superstatic.root(COUNTER_ROOT, dict)["n"]
    read = time.perf_counter()
    return {
        "import_s": imported - began,
        "connect_s": connected - imported,
        "read_s": read - connected,
        "value": value,
    }


def _mem(command: dict[str, Any]) -> dict[str, Any]:
    import superstatic

    objects = _bounded(command, "objects", 0, COUNT_MAX)
    touch = _bounded(command, "touch", 0, min(objects, TOUCH_MAX))
    chosen = touched_objects(objects, touch, int(command.get("seed", 0)))
    _connect(command)
    gc.collect()
    rss_connected = rss_bytes()
    began = time.perf_counter()
    found = 0
    if chosen:
        buckets = superstatic.root(OBJECTS_ROOT, dict)
        for i in chosen:
            found += buckets[f"b{i // OBJECTS_PER_BUCKET}"][f"o{i}"]["i"] == i
    touched_s = time.perf_counter() - began
    gc.collect()
    return {
        "objects": objects,
        "touched": touch,
        "found": found,
        "touch_s": touched_s,
        "rss_connected": rss_connected,
        "rss_touched": rss_bytes(),
        **_heap_facts(),
    }


def _fan_setup(command: dict[str, Any]) -> dict[str, Any]:
    import superstatic

    apps = _bounded(command, "apps", 1, APPS_MAX)
    objects = _bounded(command, "objects", 1, FAN_OBJECTS_MAX)
    for app in range(apps):
        with superstatic.transaction():
            own = superstatic.root(f"{FAN_ROOT_PREFIX}{app}", dict)
            for j in range(objects):
                own[f"d{j}"] = {"n": 0}
    return {"apps": apps, "objects": objects}


def _fan_hold(command: dict[str, Any]) -> dict[str, Any]:
    import superstatic

    app = _bounded(command, "app", 0, APPS_MAX - 1)
    objects = _bounded(command, "objects", 1, FAN_OBJECTS_MAX)
    _connect(command)
    own = superstatic.root(f"{FAN_ROOT_PREFIX}{app}", dict)
    _held.append(own)
    total = 0
    for j in range(objects):
        small = own[f"d{j}"]
        total += small["n"]
        _held.append(small)
    return {"app": app, "held": objects, "sum": total, **_heap_facts()}


def _fan_write(command: dict[str, Any]) -> dict[str, Any]:
    import superstatic

    apps = _bounded(command, "apps", 1, APPS_MAX)
    objects = _bounded(command, "objects", 1, FAN_OBJECTS_MAX)
    writes = _bounded(command, "writes", 1, WRITES_MAX)
    rate = _bounded(command, "rate", 1, RATE_PER_S_MAX)
    roots = [superstatic.root(f"{FAN_ROOT_PREFIX}{app}", dict) for app in range(apps)]
    began = time.perf_counter()
    for w in range(writes):
        # Paced from the start, not after each write: a slow write does not lower the rate.
        wait = began + w / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        app, j = fan_target(w, apps, objects)
        roots[app][f"d{j}"]["n"] = w
    seconds = time.perf_counter() - began
    return {"writes": writes, "seconds": seconds, "writes_per_s": writes / seconds}


PHASES = {
    "start": _start,
    "mem": _mem,
    "fan_setup": _fan_setup,
    "fan_hold": _fan_hold,
    "fan_write": _fan_write,
}


def heap_command(command: dict[str, Any]) -> dict[str, Any]:
    phase = command.get("phase")
    if phase == "connect":
        _connect(command)
        return {"connected": True}
    if phase == "counter":
        import superstatic

        counter = superstatic.root(COUNTER_ROOT, dict)
        counter.setdefault("n", 0)
        return {"n": counter["n"]}
    handler = PHASES.get(str(phase))
    if handler is None:
        raise ValueError(f"phase is one of connect, counter, {', '.join(PHASES)}")
    return handler(command)
