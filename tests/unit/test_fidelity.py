"""Shared objects behave like the plain Python objects they stand for, or refuse at once with a
superstatic.Error saying what to do (issue 10). One test (or more) per row of the issue's
table; `test_rowN_...`. Rows that need real processes (1, 6, 13 with several processes, 14)
have cluster tests too (tests/cluster/test_fidelity_cluster.py)."""

from __future__ import annotations

import asyncio
import bisect
import copy
import dataclasses
import datetime
import decimal
import enum
import heapq
import json
import sys
import threading
import typing
import zoneinfo
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import registry
from superstatic.objects import txn as txn_module
from superstatic.objects.session import Session


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def fresh(cluster: InprocCluster) -> Session:
    """Another process's view: a new replica loaded from the log."""
    return cluster.session()


# ---------------------------------------------------------------------------------- row 1


@superstatic.clustered(name="tests.fidelity.hits")
class Hits:
    hits = 0  # a field added as a class default (how people add a field to a singleton)

    def hit(self) -> None:
        # Nothing read after the write: the increment's read of the default is the only read.
        self.hits += 1


def test_row1_reading_a_class_default_is_a_read(cluster: InprocCluster) -> None:
    fast = cluster.session()
    stale = cluster.session(held=True)  # its replica lags: its first attempt reads 0
    a, b = fast.attach(Hits), stale.attach(Hits)
    a.hit()
    assert a.hits == 1
    before = cluster.last_index
    # Without the read of the default recorded, this would be a blind "set hits 1": lost update.
    b.hit()
    # The stale session's first write opens it (one "open" entry), then one conflicting
    # attempt and one committed.
    assert cluster.last_index == before + 3
    assert b.hits == 2 and fresh(cluster).attach(Hits).hits == 2


def test_row1_threads_count_exactly(cluster: InprocCluster) -> None:
    # One session per thread: the in-process log double gives each session one request at a
    # time (tests/cluster/test_fidelity_cluster.py runs threads sharing real connections).
    objs = [cluster.session().attach(Hits) for _ in range(6)]

    def work(obj: Any) -> None:
        for _ in range(20):
            obj.hit()

    threads = [threading.Thread(target=work, args=(obj,)) for obj in objs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert fresh(cluster).attach(Hits).hits == 120


# ---------------------------------------------------------------------------------- row 2


def test_row2_asyncio_tasks_have_their_own_transactions(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("async", dict)
    d["b"] = 0
    seen: dict[str, Any] = {}

    async def task_a(started: asyncio.Event, go_on: asyncio.Event) -> None:
        with pytest.raises(RuntimeError, match="give up"), session.transaction():
            d["a"] = "uncommitted"
            started.set()
            await go_on.wait()
            raise RuntimeError("give up")

    async def task_b(started: asyncio.Event, go_on: asyncio.Event) -> None:
        await started.wait()
        assert txn_module.current() is None  # not inside A's transaction
        seen["a_in_b"] = d.get("a")
        d["b"] = 1  # its own transaction: commits now, survives A's rollback
        session.sync()  # not "inside a transaction"
        go_on.set()

    async def main() -> None:
        started, go_on = asyncio.Event(), asyncio.Event()
        await asyncio.wait_for(asyncio.gather(task_a(started, go_on), task_b(started, go_on)), 30)

    asyncio.run(main())
    assert seen["a_in_b"] is None
    other = fresh(cluster).root("async", dict)
    assert "a" not in other and other["b"] == 1
    assert not txn_module.overlays_active()


def test_row2_async_with_commits_without_blocking_and_tasks_interleave(
    cluster: InprocCluster,
) -> None:
    session = cluster.session()
    d = session.root("async2", dict)

    async def writer(name: str, step: asyncio.Event, other: asyncio.Event) -> None:
        async with session.transaction():
            d[name] = 1
            step.set()
            await other.wait()  # the other task's block is open at the same time
            d[name + "2"] = 2

    async def main() -> None:
        e1, e2 = asyncio.Event(), asyncio.Event()
        await asyncio.wait_for(asyncio.gather(writer("x", e1, e2), writer("y", e2, e1)), 30)

    asyncio.run(main())
    assert superstatic.plain(fresh(cluster).root("async2", dict)) == {
        "x": 1,
        "x2": 2,
        "y": 1,
        "y2": 2,
    }


def test_row2_transaction_functions_cannot_be_async(cluster: InprocCluster) -> None:
    session = cluster.session()
    with pytest.raises(superstatic.Error, match=r"async with superstatic\.transaction"):

        @session.transaction()
        async def f() -> None:
            pass


# ---------------------------------------------------------------------------------- row 3


@superstatic.clustered(name="tests.fidelity.row3")
class Row3:
    tags: list[str] = []  # a class-level mutable default

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def set_via_vars(self, name: str, value: Any) -> None:
        vars(self)[name] = value

    def tag(self, t: str) -> None:
        self.tags.append(t)


def test_row3_dict_and_vars_writes_replicate(cluster: InprocCluster) -> None:
    obj = cluster.session().attach(Row3, (), {"a": 1, "b": [2]})
    assert obj.a == 1 and obj.b == [2]
    obj.set_via_vars("c", 3)
    vars(obj)["d"] = 4  # outside a transaction: its own
    assert obj.__dict__["c"] == 3 and obj.d == 4
    other = fresh(cluster).attach(Row3)
    assert (other.a, other.b, other.c, other.d) == (1, [2], 3, 4)
    assert dict(vars(other)) == {"a": 1, "b": [2], "c": 3, "d": 4}
    del vars(obj)["d"]
    assert not hasattr(fresh(cluster).attach(Row3), "d")


def test_row3_mutating_a_class_default_is_refused(cluster: InprocCluster) -> None:
    obj = cluster.session().attach(Row3)
    before = cluster.last_index
    assert list(obj.tags) == [] and "x" not in obj.tags  # reading works
    with pytest.raises(superstatic.Error, match=r"Row3.tags is a class-level list default"):
        obj.tag("x")
    with pytest.raises(superstatic.Error, match=r"self.tags = list"):
        obj.tags += ["y"]
    assert Row3.tags == [] and cluster.last_index == before
    obj.tags = ["z"]  # its own value: a shared list
    obj.tag("w")
    assert fresh(cluster).attach(Row3).tags == ["z", "w"]


@superstatic.clustered(name="tests.fidelity.frozen-singleton")
@dataclasses.dataclass(frozen=True)
class FrozenConfig:
    name: str = "main"
    ports: tuple[int, ...] = (1, 2)


def test_row3_frozen_dataclass_singleton(cluster: InprocCluster) -> None:
    cfg = cluster.session().attach(FrozenConfig)
    assert cfg.name == "main" and cfg.ports == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    other = fresh(cluster).attach(FrozenConfig)
    assert other.name == "main" and other.ports == (1, 2)  # the constructor's writes replicated


# ---------------------------------------------------------------------------------- row 4


@superstatic.clustered(name="tests.fidelity.pool")
class Pool:
    def __init__(self) -> None:
        self.results: dict[int, int] = {}

    def fan_out(self, n: int) -> int:
        results = self.results
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: results.__setitem__(i, i * i), range(n)))
        return len(self.results)


def test_row4_method_writing_from_thread_pool_workers_completes(cluster: InprocCluster) -> None:
    pool = cluster.session().attach(Pool)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(pool.fan_out(6)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the method hung"
    # The workers' writes are their own transactions; the method sees them once they return.
    assert done == [6]
    assert superstatic.plain(fresh(cluster).attach(Pool).results) == {i: i * i for i in range(6)}


def test_row4_a_transaction_does_not_leak_into_other_threads(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("leak", dict)
    seen: list[Any] = []
    with session.transaction():
        d["k"] = "in txn"
        # A thread given this context (as asyncio.to_thread does) is not in the transaction.
        import contextvars

        ctx = contextvars.copy_context()
        t = threading.Thread(target=lambda: seen.append(ctx.run(txn_module.current)))
        t.start()
        t.join(10)
    assert seen == [None]


# ---------------------------------------------------------------------------------- row 5


def _swap_class(name: str, cls: type, *, clustered: bool = False) -> type:
    """Registers `cls` under `name`, replacing this process's class for it: what a new version
    of the program does (each process has one class per name)."""
    old = registry.BY_NAME.pop(name, None)
    if old is not None:
        registry.SHARED_CLASSES.pop(old, None)
        registry.PLAIN_TO_NAME.pop(old.__superstatic_base__, None)
    if clustered:
        return superstatic.clustered(name=name)(cls)  # type: ignore[no-any-return]
    superstatic.register(cls, name=name)
    return registry.BY_NAME[name]


def test_row5_schema_evolution(cluster: InprocCluster) -> None:
    name = "tests.fidelity.account"

    class AccountV1:
        def __init__(self, owner: str) -> None:
            self.owner = owner
            self.legacy = "old"

    _swap_class(name, AccountV1)
    d = cluster.session().root("accounts", dict)
    d["a"] = AccountV1("ann")

    setter_calls: list[str] = []

    class AccountV2:
        balance = 0  # added: a class default
        # `legacy` removed from the class; `owner` now a property over `_owner`

        @property
        def owner(self) -> str:
            if "_owner" in vars(self):
                return self._owner  # type: ignore[no-any-return]
            return vars(self)["owner"]  # type: ignore[no-any-return]  # not migrated yet

        @owner.setter
        def owner(self, value: str) -> None:
            setter_calls.append(threading.current_thread().name)
            self._owner = value

        def deposit(self, n: int) -> int:
            self.balance += n
            return self.balance

        def migrate(self) -> None:
            if "owner" in vars(self):
                self._owner = vars(self)["owner"]
                del vars(self)["owner"]

    _swap_class(name, AccountV2)
    session2 = fresh(cluster)  # loads v1 objects into v2 classes: no user code runs
    acct = session2.root("accounts", dict)["a"]
    assert isinstance(acct, AccountV2) and setter_calls == []
    assert acct.owner == "ann" and acct.legacy == "old" and acct.balance == 0
    assert acct.deposit(5) == 5 and acct.deposit(5) == 10
    acct.migrate()
    assert setter_calls == [] and acct.owner == "ann" and "owner" not in vars(acct)
    acct.owner = "bob"  # the property's setter, as one transaction
    assert setter_calls == [threading.current_thread().name]
    del acct.legacy
    third = fresh(cluster).root("accounts", dict)["a"]
    assert third.owner == "bob" and third.balance == 10 and not hasattr(third, "legacy")
    assert len(setter_calls) == 1  # loading and applying never called it


def test_row5_property_without_setter_over_a_stored_field_loads(cluster: InprocCluster) -> None:
    name = "tests.fidelity.readonly-prop"

    class V1:
        def __init__(self) -> None:
            self.size = 3

    _swap_class(name, V1)
    cluster.session().root("ro", dict)["x"] = V1()

    class V2:
        @property
        def size(self) -> int:
            return vars(self).get("size", 0) * 10  # type: ignore[no-any-return]

    _swap_class(name, V2)
    x = fresh(cluster).root("ro", dict)["x"]  # loading must not fail (was: ReplicaFailed)
    assert x.size == 30
    with pytest.raises(AttributeError):
        x.size = 4


def test_row5_renamed_class_keeps_identity(cluster: InprocCluster) -> None:
    name = "tests.fidelity.old-name"

    class OldName:
        def __init__(self) -> None:
            self.n = 1

    old_cls = _swap_class(name, OldName, clustered=True)
    first = cluster.session().attach(old_cls)

    class NewName:  # renamed in version 2; clustered(name=...) keeps it the same object
        def bump(self) -> int:
            self.n += 1
            return self.n

    new_cls = _swap_class(name, NewName, clustered=True)
    again = fresh(cluster).attach(new_cls)
    assert again.bump() == 2 and first.n == 2


# ---------------------------------------------------------------------------------- rows 7, 8


@superstatic.register(name="tests.fidelity.Color")
class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


@superstatic.register(name="tests.fidelity.Level")
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@superstatic.register(name="tests.fidelity.Perm")
class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


@superstatic.register(name="tests.fidelity.Mode")
class Mode(enum.StrEnum):
    FAST = "fast"


def test_row7_lookups_are_converted_like_stored_values(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("lookups", dict)
    s = session.root("lookup-set", set)
    d.update({1: "one", 2: "two", Color.RED: "red", 3: "three"})
    s.update({1, Color.RED, 5})
    del d[Level.LOW]  # equal to the stored key 1
    assert d.pop(Fraction(2)) == "two"
    s.remove(Color.RED)
    s.discard(Fraction(1))  # plain Python removes 1
    s.discard(Fraction(1, 3))  # absent: nothing
    with pytest.raises(KeyError):
        s.remove(Color.GREEN)
    other = fresh(cluster)
    assert superstatic.plain(other.root("lookups", dict)) == {Color.RED: "red", 3: "three"}
    assert set(other.root("lookup-set", set)) == {5}

    class EqualsThree:  # not storable, but equal to a stored key: found like plain Python
        def __eq__(self, o: object) -> bool:
            return o == 3

        def __hash__(self) -> int:
            return hash(3)

    del d[EqualsThree()]
    assert superstatic.plain(fresh(cluster).root("lookups", dict)) == {Color.RED: "red"}


def test_row7_row17_enums_store_and_round_trip(cluster: InprocCluster) -> None:
    d = cluster.session().root("enums", dict)
    d.update(
        {"c": Color.GREEN, "l": Level.HIGH, "p": Perm.R | Perm.W, "m": Mode.FAST, Level.LOW: 1}
    )
    other = fresh(cluster).root("enums", dict)
    assert other["c"] is Color.GREEN and other["l"] is Level.HIGH
    assert other["p"] == Perm.R | Perm.W and type(other["p"]) is Perm
    assert other["m"] is Mode.FAST
    assert other[1] == 1 and type(next(k for k in other if k == 1)) is Level
    with pytest.raises(superstatic.NotStorable, match="register the enum"):

        class Loose(enum.Enum):
            A = 1

        d["x"] = Loose.A


ZONE = zoneinfo.ZoneInfo("America/New_York")


def test_row8_decimals_and_datetimes_round_trip_exactly(cluster: InprocCluster) -> None:
    values = [
        decimal.Decimal("NaN"),
        decimal.Decimal("Infinity"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("-0"),
        decimal.Decimal("-0.00"),
        decimal.Decimal("1.10"),
        datetime.datetime(2021, 11, 7, 1, 30, tzinfo=ZONE),
        datetime.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZONE),
        datetime.datetime(2021, 11, 7, 1, 30, fold=1),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2), "EET")),
        datetime.time(1, 30, fold=1),
        datetime.timedelta(days=-3, seconds=5, microseconds=7),
        Fraction(-22, 7),
    ]
    lst = cluster.session().root("exact", list)
    lst.extend(values)
    back = list(fresh(cluster).root("exact", list))
    for mine, theirs in zip(values, back, strict=True):
        assert type(mine) is type(theirs) and repr(mine) == repr(theirs)
        if isinstance(mine, datetime.datetime | datetime.time):
            assert mine.fold == theirs.fold and mine.tzinfo == theirs.tzinfo
            assert mine.tzname() == theirs.tzname()
    assert back[6].tzinfo is ZONE  # the same ZoneInfo, not a fixed offset


def test_row8_unsupported_zones_and_ambiguous_keys_are_refused(cluster: InprocCluster) -> None:
    d = cluster.session().root("zones", dict)

    class OddZone(datetime.tzinfo):
        def utcoffset(self, dt: Any) -> datetime.timedelta:
            return datetime.timedelta(hours=1)

    with pytest.raises(superstatic.NotStorable, match=r"zoneinfo\.ZoneInfo"):
        d["x"] = datetime.datetime(2024, 1, 1, tzinfo=OddZone())
    ambiguous = datetime.datetime(2021, 11, 7, 1, 30, tzinfo=ZONE)
    d["value"] = ambiguous  # fine as a value
    with pytest.raises(superstatic.NotStorable, match="DST transition"):
        d[ambiguous] = 1


# ---------------------------------------------------------------------------------- row 9


def test_row9_a_refused_value_leaves_no_trace(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("row9", dict)
    inner = [1, 2]

    with session.transaction():
        with pytest.raises(superstatic.NotStorable):
            d["bad"] = {"inner": inner, "f": lambda: 0}
        d["good"] = inner  # the part of the refused value: stored for real now
    other = fresh(cluster).root("row9", dict)
    assert "bad" not in other and other["good"] == [1, 2]


def test_row9_snapshot_semantics_of_stored_plain_values(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("row9b", dict)
    with session.transaction():
        v = [1]
        d["p"] = v
        v.append(2)
        d["q"] = v  # changed since stored: stored as it is now, a new object
        w = {"k": [0]}
        d["x"] = w
        d["y"] = w  # unchanged: the same shared object
    other = fresh(cluster).root("row9b", dict)
    assert other["p"] == [1] and other["q"] == [1, 2]
    assert other["x"] is other["y"]


# ---------------------------------------------------------------------------------- rows 10, 11


@superstatic.clustered(name="tests.fidelity.row10")
class Row10:
    def __init__(self) -> None:
        self.a = 0
        self.b = 0

    @property
    def both(self) -> tuple[int, int]:
        return (self.a, self.b)

    @both.setter
    def both(self, value: tuple[int, int]) -> None:
        self.a = value[0]
        self.b = value[1]
        if value[0] < 0:
            raise ValueError("negative")


def test_row10_property_setters_are_transactions(cluster: InprocCluster) -> None:
    obj = cluster.session().attach(Row10)
    before = cluster.last_index
    obj.both = (1, 2)
    assert cluster.last_index == before + 1  # one commit for both writes
    with pytest.raises(ValueError, match="negative"):
        obj.both = (-1, 5)
    assert obj.both == (1, 2) and fresh(cluster).attach(Row10).both == (1, 2)
    assert cluster.last_index == before + 1


def test_row11_undecorated_subclass_is_refused_before_anything_commits(
    cluster: InprocCluster,
) -> None:
    @superstatic.clustered(name="tests.fidelity.row11")
    class Base:
        def __init__(self) -> None:
            self.kind = type(self).__name__

    class Sub(Base):  # not decorated
        pass

    before = cluster.last_index
    with pytest.raises(superstatic.Error, match=r"Sub derives from the clustered class .*Base but"):
        Sub()
    assert cluster.last_index == before
    with pytest.raises(superstatic.Error, match="cannot derive from another"):
        superstatic.clustered(name="tests.fidelity.row11-sub")(Sub)


# ---------------------------------------------------------------------------------- row 12


def test_row12_iterating_a_list_that_grows_in_the_transaction(cluster: InprocCluster) -> None:
    session = cluster.session()
    q = session.root("queue", list)
    q.append("root")
    visited: list[str] = []

    def walk() -> None:
        for x in q:
            visited.append(x)
            if x == "root":
                q.append("child")

    session.run(walk)
    plain_q = ["root"]
    plain_visited = []
    for x in plain_q:
        plain_visited.append(x)
        if x == "root":
            plain_q.append("child")
    assert visited == plain_visited == ["root", "child"]
    assert list(q) == plain_q


def test_row12_keys_views_are_live(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("views", dict)
    d["a"] = 1
    views: dict[str, Any] = {}

    def body() -> None:
        d["b"] = 2
        views["k"], views["v"], views["i"] = d.keys(), d.values(), d.items()
        assert set(views["k"]) == {"a", "b"}
        d["c"] = 3
        assert set(views["k"]) == {"a", "b", "c"} and len(views["v"]) == 3

    session.run(body)
    d["z"] = 26  # after the transaction: the views still follow the object
    assert set(views["k"]) == {"a", "b", "c", "z"}
    assert sorted(views["v"]) == [1, 2, 3, 26] and ("z", 26) in views["i"]


def test_row12_dict_changing_size_while_iterated_raises_as_plain(
    cluster: InprocCluster,
) -> None:
    session = cluster.session()
    d = session.root("sizes", dict)
    d.update({"a": 1, "b": 2})

    def body() -> None:
        for k in d:
            d[k + k] = 0

    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        session.run(body)


# ---------------------------------------------------------------------------------- row 13

INITS: list[str] = []


@superstatic.clustered(name="tests.fidelity.claimed")
class Claimed:
    def __init__(self, who: str) -> None:
        INITS.append(who)
        self.who = who


def test_row13_a_claim_whose_creator_died_is_taken_over(
    cluster: InprocCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superstatic.objects import session as session_module

    monkeypatch.setattr(session_module, "CREATE_CLAIM_S", 0.3)
    dead = cluster.session()
    name = Claimed.__superstatic_name__
    key = session_module._claim_key(name)
    me = dead.connection.client_id
    state, _claim = dead.run(lambda: dead._claim(name, key, me, None))
    assert state == "claimed"  # ... and this creator never finishes (it died)
    alive = cluster.session()
    obj = alive.attach(Claimed, ("alive",))
    assert obj.who == "alive" and INITS == ["alive"]
    assert key not in alive.replica.roots_node().live  # the claim is gone
    assert fresh(cluster).attach(Claimed, ("late",)).who == "alive" and INITS == ["alive"]


def test_row13_init_raising_releases_the_claim(cluster: InprocCluster) -> None:
    calls: list[int] = []

    @superstatic.clustered(name="tests.fidelity.fails-once")
    class FailsOnce:
        def __init__(self) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("first try fails")
            self.ok = True

    session = cluster.session()
    with pytest.raises(RuntimeError, match="first try"):
        session.attach(FailsOnce)
    assert fresh(cluster).attach(FailsOnce).ok and len(calls) == 2  # no claim left behind


# ---------------------------------------------------------------------------------- row 14


def test_row14_objects_of_a_closed_session_raise_clearly(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("row14", dict)
    d["x"] = [1]
    inner, obj = d["x"], session.attach(Row10)
    session.close()
    uses = [
        lambda: d["x"],
        lambda: len(d),
        lambda: d.get("x"),
        lambda: list(d),
        lambda: d == {},
        lambda: inner[0],
        lambda: obj.a,
        lambda: d.__setitem__("y", 1),
        lambda: inner.append(2),
        lambda: setattr(obj, "a", 5),
    ]
    for use in uses:
        with pytest.raises(superstatic.Error, match="connection was closed"):
            use()
    assert "closed superstatic connection" in repr(d) + repr(obj)
    assert superstatic.plain(fresh(cluster).root("row14", dict)) == {"x": [1]}


# ---------------------------------------------------------------------------------- rows 15, 16


@superstatic.register(name="tests.fidelity.Point")
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@superstatic.register(name="tests.fidelity.Mutable")
@dataclasses.dataclass(order=True)
class Item:
    rank: int
    name: str = ""


def test_row15_frozen_dataclass_and_equality(cluster: InprocCluster) -> None:
    d = cluster.session().root("points", dict)
    d["p"] = Point(1, 2)
    p = d["p"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 9  # type: ignore[misc]
    assert p == Point(1, 2) and Point(1, 2) == p and p != Point(2, 2)
    assert hash(p) == hash(Point(1, 2))
    assert fresh(cluster).root("points", dict)["p"] == Point(1, 2)
    d["i"] = Item(2, "b")
    assert d["i"] == Item(2, "b") and d["i"] > Item(1, "z") and Item(3) > d["i"]
    assert dataclasses.replace(d["i"], rank=5) == Item(5, "b")
    assert dataclasses.asdict(d["i"]) == {"rank": 2, "name": "b"}
    with pytest.raises(superstatic.NotStorable, match="defines __eq__/__hash__"):
        d["keys"] = {Point(0, 0): 1}


def test_row16_update_with_a_bad_pair_writes_nothing(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("row16", dict)
    with session.transaction():
        with pytest.raises(superstatic.NotStorable):
            d.update({"a": 1, "b": lambda: 0})
        d["c"] = 3
    assert superstatic.plain(fresh(cluster).root("row16", dict)) == {"c": 3}


# ---------------------------------------------------------------------------------- row 17


def test_row17_unsupported_classes_are_refused_clearly() -> None:
    class Slotted:
        __slots__ = ("x",)

    with pytest.raises(superstatic.Error, match="uses __slots__"):
        superstatic.register(Slotted, name="tests.fidelity.slotted")

    class MyDict(dict):  # type: ignore[type-arg]
        pass

    with pytest.raises(superstatic.Error, match="derives from the built-in dict"):
        superstatic.clustered(name="tests.fidelity.mydict")(MyDict)

    class Guarded:
        def __setattr__(self, name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

    with pytest.raises(superstatic.Error, match="defines __setattr__"):
        superstatic.register(Guarded, name="tests.fidelity.guarded")


T = typing.TypeVar("T")


@superstatic.clustered(name="tests.fidelity.repo")
class Repo(typing.Generic[T]):
    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(item)


def test_row17_common_protocols_work_on_proxies(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("protocols", dict)
    d.update({"n": [3, 1, 2], "m": {"a": (1, 2)}, "s": "x"})
    assert json.loads(json.dumps(d, default=superstatic.json_default)) == {
        "n": [3, 1, 2],
        "m": {"a": [1, 2]},
        "s": "x",
    }
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps({"x": object()}, default=superstatic.json_default)

    @dataclasses.dataclass
    class Holder:
        values: Any

    assert dataclasses.asdict(Holder(d["n"])) == {"values": [3, 1, 2]}
    assert dataclasses.asdict(Holder(d["m"])) == {"values": {"a": (1, 2)}}
    assert sorted(d["n"]) == [1, 2, 3] and copy.copy(d["n"]) == [3, 1, 2]
    lst = d["n"]
    lst.sort()
    bisect.insort(lst, 2)
    assert list(lst) == [1, 2, 2, 3] and bisect.bisect_left(lst, 3) == 3

    from superstatic import heapq as sheapq

    h = session.root("heap", list)
    plain_h: list[int] = []
    for x in [5, 1, 4, 2, 3]:
        sheapq.heappush(h, x)
        heapq.heappush(plain_h, x)
    assert list(h) == plain_h
    assert [sheapq.heappop(h) for _ in range(2)] == [heapq.heappop(plain_h) for _ in range(2)]
    assert list(fresh(cluster).root("heap", list)) == plain_h
    with pytest.raises(superstatic.NotStorable, match="lone surrogate"):
        d["bad"] = "a\ud800b"


def test_row17_generic_class_called_through_its_alias(cluster: InprocCluster) -> None:
    # Repo[int]() goes through typing's alias __call__, which sets __orig_class__ (refused as a
    # special attribute, which typing ignores) on the singleton.
    from superstatic.client import default as session_default

    session = cluster.session()
    old = session_default._default
    session_default._default = session
    try:
        repo = Repo[int]()
        assert isinstance(repo, Repo) and repo is session.attach(Repo)
        repo.add(1)
        assert repo.items == [1]
    finally:
        session_default._default = old
