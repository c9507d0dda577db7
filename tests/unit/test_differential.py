"""Differential tester (issue 10, deliverable 6): random programs run on plain Python objects and
on shared ones must do the same thing.

Hypothesis drives a sequence of operations over a world made of a root dict holding nested
dicts, lists, sets and instances of a user class with class defaults, methods and a property.
Each operation runs on the plain world and on the shared one (through a writer session); the
results, or the exception types, must match, and after every step both the writer's replica
and an observer's (another replica fed only by the log, as another process's would be) must
hold the same graph as the plain world: same values and types, same sharing and cycles.

Operations include writes inside transactions that raise (nothing of them may remain),
several threads calling methods at once (commutative, so the plain result is known), values
that need the codec's registry (Decimal specials, Fraction, timedelta, enums, zoned
datetimes), lookups with equal values of other types (Fraction(2) for the key 2), iteration
of a list that grows inside a transaction, and refused values caught inside a transaction.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import decimal
import enum
import shutil
import sys
import tempfile
import threading
import zoneinfo
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import node as node_module
from superstatic.objects.session import Session


@superstatic.register(name="tests.differential.Level")
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@superstatic.register(name="tests.differential.Color")
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@superstatic.register(name="tests.differential.Thing")
class Thing:
    """A user class: class defaults, methods that write, a property with a setter."""

    count = 0  # class defaults, overridden per object by writes
    label = "none"

    def __init__(self, items: list[Any] | None = None) -> None:
        self.items = list(items or [])
        self.meta: dict[Any, Any] = {}

    def bump(self, n: int) -> int:
        self.count += n
        return self.count

    def bump_quietly(self, n: int) -> None:
        self.count += n  # reads nothing after writing: only the increment's read protects it

    def add(self, x: Any) -> int:
        self.items.append(x)
        return len(self.items)

    def tag(self, k: Any, v: Any) -> None:
        self.meta[k] = v

    def tag_then_fail(self, k: Any, v: Any) -> None:
        self.meta[k] = v
        self.count += 1
        raise ValueError("after writing")

    @property
    def both(self) -> tuple[Any, Any]:
        return (self.count, self.label)

    @both.setter
    def both(self, value: tuple[Any, Any]) -> None:
        self.count, self.label = value


ZONE = zoneinfo.ZoneInfo("Europe/Paris")
keys = st.sampled_from(["a", "b", "c", 1, 2, ("t", 1), Level.LOW, Color.RED])
# Lookup keys equal to stored keys but of other types (plain Python finds the stored key).
lookup_keys = st.sampled_from(["a", 1, 2, Fraction(2), Level.LOW, Level.HIGH, 1.0, True])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=2),
    st.sampled_from(
        [
            decimal.Decimal("NaN"),
            decimal.Decimal("-0"),
            decimal.Decimal("1.50"),
            Fraction(1, 3),
            datetime.timedelta(days=1, seconds=2),
            Level.HIGH,
            Color.BLUE,
            datetime.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=ZONE),
        ]
    ),
)
# Set elements: no NaN (never equal to itself, so not a useful element) and no zoned datetime
# at a DST transition (refused as a set element, see test_fidelity row 8).
hashables = st.one_of(
    scalars.filter(lambda x: not _is_nan(x) and not isinstance(x, datetime.datetime)),
    st.tuples(st.integers(0, 2)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
        st.sets(hashables, max_size=3),
        st.tuples(inner),
        st.builds(Thing, st.lists(st.integers(0, 3), max_size=2)),
    ),
    max_leaves=5,
)


def _is_nan(x: Any) -> bool:
    return isinstance(x, decimal.Decimal) and x.is_nan()


def _shared(x: Any) -> bool:
    return node_module.node_of(x) is not None


def canon(value: Any, seen: dict[int, int] | None = None) -> Any:
    """A comparable form of a graph of plain or shared values: types and reprs of scalars,
    insertion order of dicts and lists, sets sorted, objects by their attributes; a container
    met again is ("ref", n), so sharing and cycles must match too."""
    seen = {} if seen is None else seen
    if isinstance(value, Thing):
        kind = "thing"
    elif isinstance(value, dict):
        kind = "dict"
    elif isinstance(value, list):
        kind = "list"
    elif isinstance(value, set):
        kind = "set"
    elif type(value) is tuple:
        return ("tuple", [canon(x, seen) for x in value])
    elif type(value) is frozenset:
        return ("frozenset", sorted(repr(canon(x, seen)) for x in value))
    else:
        return (type(value).__name__, repr(value))
    if id(value) in seen:
        return ("ref", seen[id(value)])
    seen[id(value)] = len(seen)
    if kind == "thing":
        return ("thing", [(k, canon(v, seen)) for k, v in sorted(vars(value).items())])
    if kind == "dict":
        return ("dict", [(canon(k, seen), canon(v, seen)) for k, v in list(value.items())])
    if kind == "list":
        return ("list", [canon(x, seen) for x in list(value)])
    return ("set", sorted(repr(canon(x, seen)) for x in list(value)))


def targets(root: Any, kind: type) -> list[Any]:
    """Every container (or Thing) of `kind` reachable from root, in a stable order (the same
    in both worlds while they are equal)."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict | list | set | Thing) and id(v) not in seen:
            seen.add(id(v))
            if isinstance(v, kind):
                found.append(v)
            if isinstance(v, Thing):
                inner: Any = list(vars(v).values())
            elif isinstance(v, dict):
                inner = list(v.values())
            else:
                inner = list(v)
            for x in inner:
                walk(x)
        elif isinstance(v, tuple):
            for x in v:
                walk(x)

    walk(root)
    return found


def run(op: Callable[[Any], Any], target: Any) -> tuple[str, Any]:
    try:
        return "ok", canon(op(target))
    except Exception as exc:  # the comparison is the point: the exception types must match
        return "raised", type(exc).__name__


class SharedBehavesLikePlain(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="superstatic-differential-"))
        self.cluster = InprocCluster(self.dir).__enter__()
        self.writer: Session = self.cluster.session()
        self.observer: Session = self.cluster.session()
        # A second writer whose replica lags (it receives the log only when it commits or
        # syncs): what another process is to this one. Its writes start from an old state.
        self.stale: Session = self.cluster.session(held=True)
        self.shared = self.writer.root("world", dict)
        self.plain: dict[Any, Any] = {}

    def teardown(self) -> None:
        try:
            late = self.cluster.session()  # a replica loaded from the snapshot at the end
            assert canon(late.root("world", dict)) == canon(self.plain)
        finally:
            self.cluster.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, kind: type, pick: int, op: Callable[[Any], Any]) -> None:
        """`op` on the pick-th target of `kind` in each world: same outcome."""
        mine, theirs = targets(self.plain, kind), targets(self.shared, kind)
        assert len(mine) == len(theirs)
        if not mine:
            return
        i = pick % len(mine)
        expected = run(op, mine[i])
        got = run(op, theirs[i])
        assert got == expected, (got, expected)

    def both_stale(self, kind: type, pick: int, op: Callable[[Any], Any]) -> None:
        """Like both(), the shared side run by the stale writer on its (old) copy of the same
        object: it must conflict, catch up and do what the plain program does."""
        mine, theirs = targets(self.plain, kind), targets(self.shared, kind)
        if not mine:
            return
        i = pick % len(mine)
        found = node_module.node_of(theirs[i])
        assert found is not None
        old = self.stale.replica.nodes.get(found.oid)
        if old is None:  # made after the stale replica's state: let it catch up first
            self.stale.sync()
            old = self.stale.replica.nodes[found.oid]
        expected = run(op, mine[i])
        got = run(op, old.ref)
        assert got == expected, (got, expected)

    def in_transaction(self, ops: list[Callable[[], Any]], fail: bool, plain_ops: Any) -> None:
        """Runs `ops` (on the shared world) as one transaction that raises at the end if
        `fail`; the plain world gets `plain_ops` applied to a copy, kept only if not `fail`."""
        snapshot = copy.deepcopy(self.plain)
        plain_ops(snapshot)

        def body() -> None:
            for op in ops:
                op()
            if fail:
                raise LookupError("abandon")

        try:
            self.writer.run(body)
        except LookupError:
            assert fail
        else:
            assert not fail
            self.plain = snapshot

    # ------------------------------------------------------------------ containers

    @rule(pick=st.integers(0, 9), key=keys, value=values)
    def dict_set(self, pick: int, key: Any, value: Any) -> None:
        v = copy.deepcopy(value)
        self.both(dict, pick, lambda d: d.__setitem__(key, copy.deepcopy(v)))

    @rule(pick=st.integers(0, 9), key=lookup_keys)
    def dict_pop(self, pick: int, key: Any) -> None:
        self.both(dict, pick, lambda d: d.pop(key, "absent"))

    @rule(pick=st.integers(0, 9), key=lookup_keys)
    def dict_del(self, pick: int, key: Any) -> None:
        self.both(dict, pick, lambda d: d.__delitem__(key))

    @rule(pick=st.integers(0, 9), key=keys, value=values)
    def dict_setdefault(self, pick: int, key: Any, value: Any) -> None:
        self.both(dict, pick, lambda d: d.setdefault(key, copy.deepcopy(value)))

    @rule(pick=st.integers(0, 9), other=st.dictionaries(keys, values, max_size=3))
    def dict_update(self, pick: int, other: dict[Any, Any]) -> None:
        self.both(dict, pick, lambda d: d.update(copy.deepcopy(other)))

    @rule(pick=st.integers(0, 9), key=lookup_keys)
    def dict_reads(self, pick: int, key: Any) -> None:
        self.both(dict, pick, lambda d: (key in d, d.get(key), len(d), list(d.keys())))

    @rule(pick=st.integers(0, 9), value=values)
    def list_append(self, pick: int, value: Any) -> None:
        self.both(list, pick, lambda s: s.append(copy.deepcopy(value)))

    @rule(pick=st.integers(0, 9), index=st.integers(-3, 3), value=values)
    def list_insert(self, pick: int, index: int, value: Any) -> None:
        self.both(list, pick, lambda s: s.insert(index, copy.deepcopy(value)))

    @rule(pick=st.integers(0, 9), index=st.integers(-3, 3))
    def list_pop(self, pick: int, index: int) -> None:
        self.both(list, pick, lambda s: s.pop(index))

    @rule(
        pick=st.integers(0, 9),
        start=st.integers(-3, 3),
        stop=st.integers(-3, 3),
        items=st.lists(hashables, max_size=2),
    )
    def list_slice(self, pick: int, start: int, stop: int, items: list[Any]) -> None:
        self.both(list, pick, lambda s: s.__setitem__(slice(start, stop), items))

    @rule(pick=st.integers(0, 9), value=hashables)
    def list_remove_and_count(self, pick: int, value: Any) -> None:
        self.both(list, pick, lambda s: (s.count(value), s.remove(value)))

    @rule(pick=st.integers(0, 9))
    def list_reverse(self, pick: int) -> None:
        self.both(list, pick, lambda s: s.reverse())

    @rule(pick=st.integers(0, 9), value=hashables)
    def set_add(self, pick: int, value: Any) -> None:
        self.both(set, pick, lambda s: s.add(value))

    @rule(pick=st.integers(0, 9), value=st.one_of(hashables, lookup_keys))
    def set_discard_remove(self, pick: int, value: Any) -> None:
        self.both(set, pick, lambda s: (s.discard(value), s.add(value), s.remove(value)))

    @rule(pick=st.integers(0, 9), other=st.sets(hashables, max_size=3))
    def set_operators(self, pick: int, other: set[Any]) -> None:
        self.both(set, pick, lambda s: (s | other, s & other, s.symmetric_difference_update(other)))

    # ------------------------------------------------------------------ objects

    @rule(key=keys, items=st.lists(st.integers(0, 3), max_size=2))
    def new_thing(self, key: Any, items: list[int]) -> None:
        self.plain[key] = Thing(items)
        self.shared[key] = Thing(items)

    @rule(pick=st.integers(0, 9), n=st.integers(-2, 2))
    def thing_bump(self, pick: int, n: int) -> None:  # reads a class default the first time
        self.both(Thing, pick, lambda t: t.bump(n))

    @rule(pick=st.integers(0, 9), value=values)
    def thing_add(self, pick: int, value: Any) -> None:
        self.both(Thing, pick, lambda t: t.add(copy.deepcopy(value)))

    @rule(pick=st.integers(0, 9), key=keys, value=scalars)
    def thing_tag_then_fail(self, pick: int, key: Any, value: Any) -> None:
        def op(t: Thing) -> Any:
            if _shared(t):
                return t.tag_then_fail(key, value)  # a method: all or nothing
            snapshot = copy.deepcopy(vars(t))
            try:
                return t.tag_then_fail(key, value)
            finally:
                vars(t).clear()
                vars(t).update(snapshot)

        self.both(Thing, pick, op)

    @rule(pick=st.integers(0, 9), count=st.integers(0, 3), label=st.text(max_size=2))
    def thing_property_setter(self, pick: int, count: int, label: str) -> None:
        def op(t: Thing) -> Any:
            t.both = (count, label)
            return t.both

        self.both(Thing, pick, op)

    @rule(pick=st.integers(0, 9), name=st.sampled_from(["label", "extra", "count"]), value=values)
    def thing_vars(self, pick: int, name: str, value: Any) -> None:
        def op(t: Thing) -> Any:
            vars(t)[name] = copy.deepcopy(value)
            return (name in vars(t), t.label, t.count)

        self.both(Thing, pick, op)

    @rule(pick=st.integers(0, 9), name=st.sampled_from(["label", "extra", "count"]))
    def thing_delattr(self, pick: int, name: str) -> None:
        self.both(Thing, pick, lambda t: (delattr(t, name), getattr(t, name, "gone")))

    # ------------------------------------------------------------------ from a stale replica

    @rule(pick=st.integers(0, 9), n=st.integers(1, 2))
    def stale_thing_bump(self, pick: int, n: int) -> None:  # row 1: a read of the default
        self.both_stale(Thing, pick, lambda t: t.bump_quietly(n))

    @rule(first=st.integers(1, 2), second=st.integers(1, 2))
    def default_raced_by_a_stale_writer(self, first: int, second: int) -> None:
        """Row 1: the stale writer knows the object only with its class default when another
        writer's increment lands; its own increment must not overwrite that one."""
        key = ("raced",)
        self.plain[key] = Thing()
        self.shared[key] = Thing()
        self.stale.sync()
        self.shared[key].bump(first)
        self.plain[key].bump(first)
        found = node_module.node_of(self.shared[key])
        assert found is not None
        stale_view = self.stale.replica.nodes[found.oid].ref
        stale_view.bump_quietly(second)
        self.plain[key].bump_quietly(second)

    # Only read-modify-writes that always write: a read-only transaction on a stale replica
    # returns a consistent but older state (no round trip: sync() is the linearizable read),
    # which a plain program running in real-time order cannot reproduce.

    @rule(pick=st.integers(0, 9))
    def stale_list_append_length(self, pick: int) -> None:
        def op(s: Any) -> Any:
            def body() -> int:
                s.append(len(s))
                return len(s)

            return self.stale.run(body) if _shared(s) else body()

        self.both_stale(list, pick, op)

    @rule(pick=st.integers(0, 9), key=lookup_keys)
    def stale_dict_count(self, pick: int, key: Any) -> None:
        def op(d: Any) -> Any:
            def body() -> Any:
                old = d.get(key)
                d[key] = old + 1 if type(old) is int else 0
                return old

            return self.stale.run(body) if _shared(d) else body()

        self.both_stale(dict, pick, op)

    @rule(pick=st.integers(0, 9), value=hashables)
    def stale_set_toggle(self, pick: int, value: Any) -> None:
        def toggle(s: Any) -> Any:
            def body() -> bool:
                if value in s:
                    s.remove(value)
                    return False
                s.add(value)
                return True

            if _shared(s):
                return self.stale.run(body)
            return body()

        self.both_stale(set, pick, toggle)

    # ------------------------------------------------------------------ transactions, threads

    @rule(key=keys, first=values, second=values, fail=st.booleans())
    def two_writes_in_a_transaction(self, key: Any, first: Any, second: Any, fail: bool) -> None:
        shared = self.shared

        def plain_ops(world: dict[Any, Any]) -> None:
            world[key] = copy.deepcopy(first)
            world[("pair", 1)] = copy.deepcopy(second)

        self.in_transaction(
            [
                lambda: shared.__setitem__(key, copy.deepcopy(first)),
                lambda: shared.__setitem__(("pair", 1), copy.deepcopy(second)),
            ],
            fail,
            plain_ops,
        )

    @rule(key=keys, fail=st.booleans())
    def refused_value_caught_then_valid_write(self, key: Any, fail: bool) -> None:
        shared = self.shared
        part = [1, [2]]

        def refused_then_valid() -> None:
            with contextlib.suppress(superstatic.NotStorable):
                shared.update({"ok": 1, "bad": {"part": part, "f": lambda: 0}})
            shared[key] = part

        self.in_transaction(
            [refused_then_valid], fail, lambda world: world.__setitem__(key, [1, [2]])
        )

    @rule(fail=st.booleans())
    def iterate_a_list_growing_in_the_transaction(self, fail: bool) -> None:
        shared = self.shared

        def grow(q: Any) -> list[Any]:
            visited = []
            for x in q:
                visited.append(x)
                if x == "root":
                    q.append("child")
            return visited

        # An existing list (committed before), then a new one (private to the transaction).
        self.plain["queue"] = ["root"]
        shared["queue"] = ["root"]

        def plain_ops(world: dict[Any, Any]) -> None:
            world["visited"] = grow(world["queue"])
            world["new queue"] = ["root"]
            world["visited new"] = grow(world["new queue"])

        def shared_op() -> None:
            shared["visited"] = grow(shared["queue"])
            shared["new queue"] = ["root"]
            shared["visited new"] = grow(shared["new queue"])

        self.in_transaction([shared_op], fail, plain_ops)

    @rule(threads=st.integers(2, 4), calls=st.integers(1, 3))
    def threads_call_methods(self, threads: int, calls: int) -> None:
        # A fresh object each time (other rules may have made an older one's count a str).
        key = ("counter",)
        self.plain[key] = Thing()
        self.shared[key] = Thing()
        mine, theirs = self.plain[key], self.shared[key]
        for i in range(threads):  # the keys exist first: dict order does not depend on timing
            mine.tag(("thread", i), None)
            theirs.tag(("thread", i), None)
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for _ in range(calls):
                    theirs.bump_quietly(1)
                theirs.tag(("thread", i), i)
            except BaseException as exc:  # reported below
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(60)
        assert not errors, errors
        for i in range(threads):
            for _ in range(calls):
                mine.bump_quietly(1)
            mine.tag(("thread", i), i)

    # ------------------------------------------------------------------ checks

    @invariant()
    def worlds_equal(self) -> None:
        expected = canon(self.plain)
        assert canon(self.shared) == expected
        observed = self.observer.root("world", dict)
        self.observer.sync()
        assert canon(observed) == expected


# About 30 s on the 2-core test machine (CI budget: a minute).
SharedBehavesLikePlain.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSharedBehavesLikePlain = SharedBehavesLikePlain.TestCase
