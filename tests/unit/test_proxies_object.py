"""Shared instances of user classes: @clustered singletons and register()ed classes."""

from __future__ import annotations

import copy
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import proxy_object
from superstatic.objects import txn as txn_module
from superstatic.objects.plain_copy import plain


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@superstatic.clustered
class Inventory:
    """The README's example."""

    def __init__(self) -> None:
        self.stock: dict[str, int] = {}
        self.moves = 0
        self.inits = 1

    def add(self, sku: str, n: int) -> int:
        self.stock[sku] = self.stock.get(sku, 0) + n
        self.moves += 1
        return self.stock[sku]

    def take(self, sku: str, n: int) -> int:
        have = self.stock.get(sku, 0)
        self.moves += 1  # written before the check: must be rolled back with the exception
        if have < n:
            raise ValueError(f"only {have} {sku}")
        self.stock[sku] = have - n
        return self.stock[sku]

    def add_twice(self, sku: str) -> int:
        self.add(sku, 1)  # a nested call joins this transaction
        return self.add(sku, 1)

    @property
    def total(self) -> int:
        return sum(self.stock.values())

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        self._label = value.upper()

    def __repr__(self) -> str:
        return f"Inventory({dict(self.stock)!r})"


@superstatic.register
class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def move(self, dx: int) -> None:
        self.x += dx


@superstatic.clustered(name="tests.unit.named-singleton")
class Named:
    def __init__(self, start: int = 0) -> None:
        self.value = start


def test_singleton_attach_or_create(cluster: InprocCluster) -> None:
    one = cluster.session()
    inv = one.attach(Inventory)
    assert inv is one.attach(Inventory)
    assert isinstance(inv, Inventory) and type(inv).__name__ == "Inventory"
    assert inv.add("apple", 3) == 3
    assert inv.stock["apple"] == 3 and inv.moves == 1
    other = cluster.session().attach(Inventory)
    assert other.inits == 1 and other.stock["apple"] == 3  # __init__ ran once, ever
    assert other.add("apple", 2) == 5
    assert inv.stock["apple"] == 5  # read-your-writes through the log on every replica
    assert repr(inv) == "Inventory({'apple': 5})"
    assert inv.total == 5


RACE_INITS: list[str] = []
RACE_IN_INIT = threading.Event()
RACE_RELEASE = threading.Event()


@superstatic.clustered(name="tests.unit.raced-singleton")
class Raced:
    def __init__(self, creator: str) -> None:
        RACE_INITS.append(creator)
        RACE_IN_INIT.set()
        # Held until the other creator is waiting: a real race on the creation.
        assert RACE_RELEASE.wait(30)
        self.creator = creator


def test_racing_creators_run_init_once_and_share_the_result(cluster: InprocCluster) -> None:
    sessions = [cluster.session(), cluster.session()]
    found: dict[str, Any] = {}
    errors: list[BaseException] = []

    def create(name: str, session: Any) -> None:
        try:
            found[name] = session.attach(Raced, (name,))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    first = threading.Thread(target=create, args=("s0", sessions[0]))
    first.start()
    assert RACE_IN_INIT.wait(30)
    second = threading.Thread(target=create, args=("s1", sessions[1]))
    second.start()
    second.join(timeout=0.3)  # it must be waiting for the first one's commit, not creating
    assert second.is_alive() and RACE_INITS == ["s0"]
    RACE_RELEASE.set()
    for t in (first, second):
        t.join(timeout=60)
    assert not errors, errors
    assert RACE_INITS == ["s0"]  # __init__ ran once in the whole cluster
    assert found["s0"].creator == found["s1"].creator == "s0"
    assert cluster.session().attach(Raced, ("late",)).creator == "s0"
    assert RACE_INITS == ["s0"]


def test_exception_in_method_commits_nothing(cluster: InprocCluster) -> None:
    inv = cluster.session().attach(Inventory)
    inv.add("pear", 1)
    before = cluster.last_index
    with pytest.raises(ValueError, match="only 1 pear"):
        inv.take("pear", 5)
    assert cluster.last_index == before
    assert inv.moves == 1 and inv.stock["pear"] == 1


def test_nested_calls_join_one_transaction(cluster: InprocCluster) -> None:
    inv = cluster.session().attach(Inventory)
    before = cluster.last_index
    assert inv.add_twice("fig") == 2
    assert cluster.last_index == before + 1
    assert inv.moves == 2


def test_attributes_set_delete_and_properties(cluster: InprocCluster) -> None:
    session = cluster.session()
    inv = session.attach(Inventory)
    inv.label = "shop"  # property setter: its own write is intercepted
    assert inv.label == "SHOP" and inv._label == "SHOP"
    inv.extra = [1, 2]
    assert inv.extra == [1, 2] and isinstance(inv.extra, list)
    del inv.extra
    assert not hasattr(inv, "extra")
    with pytest.raises(AttributeError):
        del inv.extra
    other = cluster.session().attach(Inventory)
    assert other._label == "SHOP" and not hasattr(other, "extra")
    with pytest.raises(AttributeError):
        inv.__class__ = object  # type: ignore[assignment]


def test_clustered_name_and_init_arguments(cluster: InprocCluster) -> None:
    session = cluster.session()
    named = session.attach(Named, (5,))
    assert named.value == 5
    assert session.attach(Named, (99,)).value == 5  # attach ignores constructor arguments
    roots = session.replica.roots_node().live
    assert roots["tests.unit.named-singleton"] is named


def test_registered_instances_become_shared_with_identity(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("points", dict)
    p = Point(1, 2)
    d["p"] = p
    shared = d["p"]
    assert shared is not p and isinstance(shared, Point) and shared is d["p"]
    assert (shared.x, shared.y) == (1, 2)
    d["same"] = shared
    assert d["same"] is shared
    shared.move(5)  # a method of a shared instance is a transaction
    assert shared.x == 6
    shared.y = [shared]  # a cycle through an object
    other = cluster.session().root("points", dict)
    assert other["p"] is other["same"] and other["p"].x == 6
    assert other["p"].y[0] is other["p"]
    # Shared objects hash by identity, so they can be set elements and keys.
    d["set"] = {shared}
    assert shared in d["set"]
    copied = plain(d["p"])
    assert copied["x"] == 6 and copied["y"][0] is copied


def test_copies_are_plain_instances_and_pickling_is_refused(cluster: InprocCluster) -> None:
    session = cluster.session()
    inv = session.attach(Inventory)
    inv.add("kiwi", 2)
    shallow = copy.copy(inv)
    assert type(shallow) is Inventory.__superstatic_base__ and shallow.stock is inv.stock
    deep = copy.deepcopy(inv)
    assert type(deep) is Inventory.__superstatic_base__
    assert type(deep.stock) is dict and deep.stock == {"kiwi": 2}
    with pytest.raises(TypeError):
        pickle.dumps(inv)
    assert plain(inv)["stock"] == {"kiwi": 2}


def test_not_storable_attribute_names_path(cluster: InprocCluster) -> None:
    inv = cluster.session().attach(Inventory)
    before = cluster.last_index
    with pytest.raises(superstatic.NotStorable) as info:
        inv.handler = {"cb": print}
    assert ".handler['cb']" in str(info.value)
    assert cluster.last_index == before


def test_reads_outside_transactions_are_native(cluster: InprocCluster) -> None:
    inv = cluster.session().attach(Inventory)
    inv.add("a", 1)
    cls = type(inv)
    # No Python-level read hooks are installed while no transaction body runs.
    assert "__getattribute__" not in vars(cls)
    from superstatic.objects.proxy_dict import DictProxy

    assert "__getitem__" not in vars(DictProxy)
    seen = []

    def body() -> None:
        seen.append(("__getattribute__" in vars(cls), "__getitem__" in vars(DictProxy)))

    cluster.session().run(body)
    assert seen == [(True, True)]
    assert not txn_module.overlays_active()


def test_unknown_method_types_are_left_alone(cluster: InprocCluster) -> None:
    @superstatic.clustered
    class Gen:
        def __init__(self) -> None:
            self.items: list[Any] = [1, 2]

        def each(self) -> Iterator[Any]:  # generators are not wrapped: nothing to commit
            yield from self.items

        @staticmethod
        def helper() -> int:
            return 1

    g = cluster.session().attach(Gen)
    assert list(g.each()) == [1, 2] and g.helper() == 1


def test_objects_of_unregistered_classes_load_as_placeholders(cluster: InprocCluster) -> None:
    from superstatic.objects.factory import make_node

    session = cluster.session()
    d = session.root("misc", dict)

    def body() -> None:
        # What another process storing an instance of a class this one never registered does.
        txn = txn_module.current()
        assert txn is not None
        node = make_node(session.replica, session.new_oid(), "obj", "elsewhere.Thing", txn)
        txn.add_new([node])
        node.live["size"] = 3
        d["thing"] = node.ref

    session.run(body)
    thing = cluster.session().root("misc", dict)["thing"]
    assert isinstance(thing, proxy_object.UnknownObject) and thing.size == 3
    assert "elsewhere.Thing" in repr(thing)


def test_plain_of_shared_objects_in_sets_and_keys(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("pts", dict)
    d["s"] = {Point(1, 2)}
    copied = plain(d)
    (element,) = copied["s"]
    assert type(element) is Point and element.x == 1  # hashable context: an unshared instance


def test_placeholders_become_instances_when_the_class_is_registered(
    cluster: InprocCluster,
) -> None:
    from superstatic.objects.factory import make_node

    session = cluster.session()
    d = session.root("late", dict)

    def body() -> None:
        txn = txn_module.current()
        assert txn is not None
        node = make_node(session.replica, session.new_oid(), "obj", "tests.unit.Late", txn)
        txn.add_new([node])
        node.live["n"] = 1
        d["late"] = node.ref
        d["again"] = node.ref

    session.run(body)
    other = cluster.session().root("late", dict)
    early = other["late"]
    assert isinstance(early, proxy_object.UnknownObject)

    @superstatic.register(name="tests.unit.Late")
    class Late:
        def bump(self) -> None:
            self.n += 1

    assert isinstance(early, Late) and other["late"] is early is other["again"]
    early.bump()  # a transaction now: it is a shared instance of the registered class
    assert early.n == 2 and d["late"].n == 2
