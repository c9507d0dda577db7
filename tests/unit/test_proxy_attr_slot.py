"""The container proxies' generic attribute slot (objects/attr_slot.py, proxy_base
`adopt_fast_lookup`; docs/library.md "Reads"): it applies on the validated CPython, the switch
turns it off, and what a read answers is what the `__getattr__` hook answered."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wrapt
from support.heap_inproc import partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import attr_slot, proxy_base
from superstatic.objects import txn as txn_module
from superstatic.objects.factory import make_node
from superstatic.objects.hollow import Hollow
from superstatic.objects.node import HOLLOW, PROXY_TYPES, Node, node_of
from superstatic.objects.partial_dict import PartialDict
from superstatic.objects.proxy_dict import DictProxy
from superstatic.objects.proxy_list import ListProxy
from superstatic.objects.proxy_set import SetProxy
from superstatic.objects.replica import Replica
from superstatic.protocol.ops import READ_CONTENT, READ_SHAPE

PROXIES = (DictProxy, ListProxy, SetProxy)
SWITCHED_OFF = os.environ.get(attr_slot.ENV_FAST_GETATTR, "").strip() == "0"
VALIDATED = attr_slot.layout_refusal() is None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


def _error(fn: Any, *args: Any) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


def test_the_layout_is_validated_on_cpython_3_11() -> None:
    # The fast slot must not stop applying silently on the interpreter the suite targets.
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        assert not hasattr(sys, "gettotalrefcount"), "run the suite on a release build"
        assert attr_slot.layout_refusal() is None
    else:
        assert attr_slot.layout_refusal() is not None


@pytest.mark.skipif(not VALIDATED, reason="type layout not validated in this interpreter")
def test_each_proxy_class_has_the_generic_slot_unless_switched_off() -> None:
    generic, hook = attr_slot.generic_getattr_address(), attr_slot.hook_address()
    assert generic != hook
    for cls in PROXIES:
        if SWITCHED_OFF:
            assert attr_slot.getattro_of(cls) == hook and cls not in proxy_base._HOOKED
        else:
            assert attr_slot.getattro_of(cls) == generic, cls
            hooked = proxy_base._HOOKED[cls]
            assert attr_slot.getattro_of(hooked) == hook and hooked.__mro__[1] is cls
            assert hooked.__qualname__ == cls.__qualname__


def test_reads_and_misses_answer_as_plain_containers(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("slot", dict)
    d.update({"a": 1, "b": [1, 2, 2], "c": {3}})
    lst, s = d["b"], d["c"]
    assert d.get("a") == 1 and d.get("zz", 5) == 5 and list(d.keys()) == ["a", "b", "c"]
    assert list(d.values()) == [1, [1, 2, 2], {3}] and ("a", 1) in d.items()
    assert d.copy() == {"a": 1, "b": [1, 2, 2], "c": {3}} and type(d.copy()) is dict
    assert lst.count(2) == 2 and lst.index(2) == 1 and lst.copy() == [1, 2, 2]
    assert s.union({4}) == {3, 4} and s.issubset({3, 5}) and not s.isdisjoint({3})
    assert dict.fromkeys("x") == d.fromkeys("x")
    for proxy, plain in ((d, {}), (lst, []), (s, set())):
        for name in ("nope", "__nope__", "get" if isinstance(plain, list) else "append"):
            got, want = _error(getattr, proxy, name), _error(getattr, plain, name)
            assert type(got) is AttributeError and str(got) == str(want), (proxy, name)
            assert got.name == name  # type: ignore[attr-defined]
            assert not hasattr(proxy, name)
    # Not a plain dict's, and unchanged: the proxy class's own module and docstring.
    assert d.__module__ == "superstatic.objects.proxy_dict" and d.__doc__ is DictProxy.__doc__
    # Class-level lookups of the forwarded names: as before they existed.
    assert str(_error(lambda: DictProxy.get)) == "type object 'DictProxy' has no attribute 'get'"
    assert str(_error(lambda: ListProxy.index)) == (
        "type object 'ListProxy' has no attribute 'index'"
    )
    assert type(d).__name__ == "DictProxy" and "DictProxy" in repr(type(d))
    if not SWITCHED_OFF and VALIDATED:
        # CPython's own messages name the proxy as they name a plain dict.
        assert str(_error(lambda: d())) == "'dict' object is not callable"


def _outcome(proxy: Any, name: str) -> tuple[Any, ...]:
    try:
        value = getattr(proxy, name)
    except BaseException as exc:
        return ("raised", type(exc), str(exc))
    if callable(value):
        return ("callable", type(value), getattr(value, "__name__", None))
    if isinstance(value, (dict, list, set, Node)):
        return ("value", type(value))
    return ("value", type(value), repr(value))


@pytest.mark.skipif(not VALIDATED or SWITCHED_OFF, reason="the fast slot is not in use")
def test_the_fast_class_answers_every_name_as_the_hook_does() -> None:
    """A differential check over every name any class involved has (and some none has): the
    fast class and its hooked twin (the `__getattr__` hook, as before the slot) answer alike."""
    names = {"nope", "__nope__", "_self_nope", "Nope", "__wrapped__"}
    for klass in (dict, list, set, PartialDict, Hollow, wrapt.BaseObjectProxy, *PROXIES):
        names.update(dir(klass))
    replica = Replica()
    for i, kind in enumerate(("dict", "list", "set")):
        fast = make_node(replica, f"f{i}", kind, None, None).ref
        hooked = make_node(replica, f"h{i}", kind, None, None).ref
        proxy_base._set_class(hooked, proxy_base._HOOKED[type(fast)])
        assert attr_slot.getattro_of(type(hooked)) == attr_slot.hook_address()
        for name in sorted(names - {"__slots__"}):  # the twin's own (empty) __slots__
            assert _outcome(fast, name) == _outcome(hooked, name), (kind, name)


def test_reads_inside_a_transaction_still_record_what_they_read(cluster: InprocCluster) -> None:
    session = cluster.session()
    d = session.root("txnread", dict)
    d.update({"a": 1, "b": 2})
    d.get("a"), d.keys(), d.values()  # the bound methods cached in the proxy's instance dict
    node = node_of(d)
    assert node is not None
    seen: list[Any] = []

    def body(read: Any) -> None:
        current = txn_module.current()
        assert current is not None
        seen.append(read())
        seen.append((current.reads.get(node.oid), list(current.read_keys.get(node.oid, ()))))

    session.run(lambda: body(lambda: d.get("a")))
    assert seen[-2:] == [1, (0, ["a"])]  # d.get: a read of the one key
    session.run(lambda: body(lambda: sorted(d.keys())))
    assert seen[-2:] == [["a", "b"], (READ_SHAPE, [])]  # keys(): the shape only
    session.run(lambda: body(lambda: sorted(d.values())))
    assert seen[-2] == [1, 2] and seen[-1][0] & READ_CONTENT  # values(): the contents


def test_a_subclass_getattr_and_getattribute_are_still_called(cluster: InprocCluster) -> None:
    node = node_of(cluster.session().root("sub", dict))
    assert node is not None

    class WithGetattr(DictProxy):  # type: ignore[misc]
        def __getattr__(self, name: str) -> Any:
            if name[:2] == "__":
                raise AttributeError(name)  # wrapt probes special names
            return ("getattr", name)

    class WithGetattribute(DictProxy):  # type: ignore[misc]
        def __getattribute__(self, name: str) -> Any:
            if name == "special":
                return "getattribute"
            return object.__getattribute__(self, name)

    with_getattr = WithGetattr(node.live, node)
    assert with_getattr.anything == ("getattr", "anything")
    assert with_getattr.get("zz", 7) == 7
    with_getattribute = WithGetattribute(node.live, node)
    assert with_getattribute.special == "getattribute"
    assert str(_error(lambda: with_getattribute.nope)) == "'dict' object has no attribute 'nope'"
    # A class nobody adopted keeps its class whatever it wraps.
    with_getattr.__wrapped__ = {"z": 1}
    assert type(with_getattr) is WithGetattr and with_getattr["z"] == 1
    assert with_getattr.anything == ("getattr", "anything")


@pytest.mark.skipif(not VALIDATED or SWITCHED_OFF, reason="the fast slot is not in use")
def test_class_attributes_assigned_later_are_honoured(cluster: InprocCluster) -> None:
    node = node_of(cluster.session().root("later", dict))
    assert node is not None
    proxy = node.ref
    DictProxy.extra = property(lambda self: 42)  # type: ignore[attr-defined]
    try:
        assert proxy.extra == 42
    finally:
        del DictProxy.extra  # type: ignore[attr-defined]
    assert str(_error(lambda: proxy.extra)) == "'dict' object has no attribute 'extra'"
    assert attr_slot.getattro_of(DictProxy) == attr_slot.generic_getattr_address()

    # A class given __getattr__ after adoption: CPython recomputes the slot (the hook) and the
    # new method is called. On a throwaway class, so the real ones keep their slot.
    class Throwaway(proxy_base.NodeProxy):  # type: ignore[misc]
        _PLAIN = dict

    assert proxy_base.adopt_fast_lookup(Throwaway)
    try:
        throwaway = Throwaway({}, node)
        assert _error(lambda: throwaway.nope).__class__ is AttributeError
        Throwaway.__getattr__ = lambda self, name: ("late", name)  # type: ignore[method-assign]
        assert attr_slot.getattro_of(Throwaway) == attr_slot.hook_address()
        assert throwaway.nope == ("late", "nope")
    finally:
        PROXY_TYPES.discard(proxy_base._HOOKED.pop(Throwaway))


@pytest.mark.skipif(not VALIDATED or SWITCHED_OFF, reason="the fast slot is not in use")
def test_a_hollow_or_closed_proxy_keeps_the_hook_and_its_answers(cluster: InprocCluster) -> None:
    writer = cluster.session()
    writer.root("top", dict)["d"] = {"k": 1}
    app = partial_session(cluster)
    mine = app.root("top", dict)
    inner = mine["d"]
    node = node_of(inner)
    assert node is not None and node.state == HOLLOW
    assert type(inner) is proxy_base._HOOKED[DictProxy]  # wraps the hollow stand-in
    assert isinstance(inner, dict) and inner.get("k") == 1  # faulted in: a plain dict again
    assert type(inner) is DictProxy
    with app.replica.lock:
        app.replica.hollow(node)
    assert type(inner) is proxy_base._HOOKED[DictProxy]
    # A miss on a hollow container loads it, then answers as the plain dict does.
    assert str(_error(lambda: inner.nope)) == "'dict' object has no attribute 'nope'"
    assert type(inner) is DictProxy

    session = cluster.session()
    d = session.root("closing", dict)
    d["x"] = 1
    d.get("x")
    session.close()
    assert type(d) is proxy_base._HOOKED[DictProxy]
    for use in (lambda: d.get("x"), lambda: d.keys(), lambda: d.nope, lambda: d.fromkeys("a")):
        with pytest.raises(superstatic.Error, match="connection was closed"):
            use()


def test_the_switch_turns_it_off(tmp_path: Path) -> None:
    """SUPERSTATIC_PROXY_FAST_GETATTR=0: nothing written, the hook stays, the reads answer."""
    script = textwrap.dedent(
        """
        import sys
        from superstatic.objects import attr_slot, proxy_base
        from superstatic.objects.factory import make_node
        from superstatic.objects.proxy_dict import DictProxy
        from superstatic.objects.replica import Replica

        assert attr_slot.refusal() == "turned off by SUPERSTATIC_PROXY_FAST_GETATTR=0"
        assert proxy_base._HOOKED == {}
        if attr_slot.layout_refusal() is None:
            assert attr_slot.getattro_of(DictProxy) == attr_slot.hook_address()
        node = make_node(Replica(), "d1", "dict", None, None)
        node.live["a"] = 1
        p = node.ref
        assert p.get("a") == 1 and list(p.keys()) == ["a"]
        try:
            p.nope
        except AttributeError as exc:
            assert str(exc) == "'dict' object has no attribute 'nope'"
        try:
            p()
        except TypeError as exc:
            assert str(exc) == "'DictProxy' object is not callable"
        print("ok")
        """
    )
    env = {**os.environ, attr_slot.ENV_FAST_GETATTR: "0"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
