"""Why three proxied reads stay near or above 2x plain: the interpreter's floors, measured.

    python -m superstatic_bench.read_floors [--loops N] [--repeats R]

Not a test and not part of `superstatic bench` (whose `reads` workload times the proxies of a
connected app): this times, in one process and the same way (`timeit`, statements unrolled
READ_UNROLL times, best of R, the empty loop subtracted), what a proxied read is made of next
to the reads a proxy cannot use. CPython 3.11 specializes an attribute load and a subscript
only for some types; everything else takes the generic path, whatever the type does:

* `d.get("a")` / `d.keys()`: on a dict the method load is specialized (LOAD_METHOD_NO_DICT).
  A proxy's `get` is its container's bound method, cached in the proxy's instance dict. The
  lookup of a name in an instance dict costs a few ns when specialized (a plain object), but
  every subclass of wrapt's proxy gets CPython's `__getattr__` hook as its attribute slot
  (wrapt's C type defines a `__getattr__` method; any `__getattr__` in the MRO makes the slot
  the generic hook), which no instruction specializes and which also keeps `_PyObject_GetMethod`
  off its inline path. The proxies get the generic slot instead (objects/attr_slot.py, unless
  SUPERSTATIC_PROXY_FAST_GETATTR=0; the header line says which). Rows: the lookup alone on a
  plain object, on a plain object whose class has `__getattr__`, on a wrapt subclass with the
  hook (the proxies' path before), on the proxy, then the call of a cached bound method.
* `lst[1]`: BINARY_SUBSCR is specialized for exact lists, tuples and dicts only. Every other
  container, C or not, goes through PyObject_GetItem: rows for a deque, an array, a bare wrapt
  proxy and a list subclass, next to the shared list's proxy.
"""

from __future__ import annotations

import argparse
import array
import collections
import json
import os
import sys
import time
import timeit
from typing import Any

import wrapt

from superstatic.objects import attr_slot
from superstatic.objects.factory import make_node
from superstatic.objects.replica import Replica

READ_UNROLL = 10
LOOPS_DEFAULT = 200_000
REPEATS_DEFAULT = 7


class _WraptLike(wrapt.BaseObjectProxy):  # type: ignore[misc]
    """The proxies' attribute path (proxy_base.NodeProxy) without the rest of the proxy."""

    __getattribute__ = object.__getattribute__

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


class _Plain:
    pass


class _PlainHook:
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


class _ListSub(list):  # type: ignore[type-arg]
    pass


def _namespace() -> dict[str, Any]:
    replica = Replica()
    shared_d = make_node(replica, "d1", "dict", None, None)
    shared_d.live.update({"a": 1, "b": 2})
    shared_l = make_node(replica, "l1", "list", None, None)
    shared_l.live.extend([1, 2, 3])
    d = {"a": 1, "b": 2}
    plain_obj, hook_obj = _Plain(), _PlainHook()
    plain_obj.get = hook_obj.get = d.get  # type: ignore[attr-defined]
    wrapt_like = _WraptLike(d)
    wrapt_like.__self_setattr__("get", d.get)
    return {
        "d": d,
        "p": shared_d.ref,
        "lst": [1, 2, 3],
        "q": shared_l.ref,
        "plain_obj": plain_obj,
        "hook_obj": hook_obj,
        "wrapt_like": wrapt_like,
        "bound_get": d.get,
        "bound_keys": d.keys,
        "deque": collections.deque([1, 2, 3]),
        "arr": array.array("q", [1, 2, 3]),
        "bare_wrapt": wrapt.BaseObjectProxy([1, 2, 3]),
        "list_sub": _ListSub([1, 2, 3]),
    }


# (group, label, statement)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("d.get", "plain dict", 'd.get("a")'),
    ("d.get", "proxy", 'p.get("a")'),
    ("d.get", "lookup: plain object, instance dict (specialized)", "plain_obj.get"),
    ("d.get", "lookup: plain object, class with __getattr__", "hook_obj.get"),
    ("d.get", "lookup: wrapt subclass with the hook", "wrapt_like.get"),
    ("d.get", "lookup: proxy", "p.get"),
    ("d.get", "call of the cached bound method", 'bound_get("a")'),
    ("d.keys", "plain dict", "d.keys()"),
    ("d.keys", "proxy", "p.keys()"),
    ("d.keys", "call of the cached bound method (METH_NOARGS)", "bound_keys()"),
    ("lst[1]", "plain list (BINARY_SUBSCR_LIST_INT)", "lst[1]"),
    ("lst[1]", "proxy", "q[1]"),
    ("lst[1]", "collections.deque", "deque[1]"),
    ("lst[1]", "array.array", "arr[1]"),
    ("lst[1]", "bare wrapt.BaseObjectProxy", "bare_wrapt[1]"),
    ("lst[1]", "list subclass", "list_sub[1]"),
)


def time_rows(loops: int, repeats: int, cpu: bool = False) -> list[dict[str, Any]]:
    """`cpu`: time the process's CPU time instead of the wall clock (steadier on a machine
    other processes keep busy: time spent waiting for a core is not counted)."""
    namespace = _namespace()
    setup = "; ".join(f"{name} = _namespace[{name!r}]" for name in namespace)
    clock = time.process_time if cpu else time.perf_counter
    empty = timeit.Timer("pass", setup=setup, timer=clock, globals={"_namespace": namespace})
    out = []
    for group, label, statement in ROWS:
        body = "; ".join([statement] * READ_UNROLL)
        timer = timeit.Timer(body, setup=setup, timer=clock, globals={"_namespace": namespace})
        best = best_empty = float("inf")
        for _ in range(repeats):  # interleaved, as the reads workload does
            best_empty = min(best_empty, empty.timeit(number=loops))
            best = min(best, timer.timeit(number=loops))
        ns = max(0.0, (best - best_empty) / loops * 1e9 / READ_UNROLL)
        out.append({"read": group, "what": label, "statement": statement, "ns": ns})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m superstatic_bench.read_floors")
    parser.add_argument("--loops", type=int, default=LOOPS_DEFAULT)
    parser.add_argument("--repeats", type=int, default=REPEATS_DEFAULT)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--cpu", action="store_true", help="time CPU time, not wall time (a busy machine)"
    )
    args = parser.parse_args(argv)
    if args.loops < 1 or args.repeats < 1:
        parser.error("--loops and --repeats must be at least 1")
    load = os.getloadavg()
    rows = time_rows(args.loops, args.repeats, args.cpu)
    slot = attr_slot.refusal() or "generic (objects/attr_slot.py)"
    clock = "cpu" if args.cpu else "wall"
    if args.json:
        out = {"python": sys.version, "load_average": load, "slot": slot, "clock": clock}
        print(json.dumps({**out, "rows": rows}))
        return 0
    print(
        f"Python {sys.version.split()[0]}, load average {load[0]:.1f} {load[1]:.1f}, "
        f"{clock} clock, proxies' attribute slot: {slot}"
    )
    for row in rows:
        print(f"{row['read']:7} {row['what']:52} {row['ns']:6.1f} ns   {row['statement']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
