"""The proxies' generic attribute slot (objects/attr_slot.py, docs/library.md "Reads") in an
app connected to three real agents through the public API: the reads it speeds up answer as
before, on a partial replica (the default) a proxy whose container is not held keeps the hook
and its answers, and after close() an old reference refuses as it did."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import superstatic
from superstatic.objects import attr_slot, proxy_base
from superstatic.objects.proxy_dict import DictProxy
from superstatic.objects.proxy_list import ListProxy
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

FAST = (
    attr_slot.layout_refusal() is None
    and os.environ.get(attr_slot.ENV_FAST_GETATTR, "").strip() != "0"
)


@pytest.fixture
def app(cluster: LocalCluster) -> Iterator[list[str]]:
    endpoints = cluster.client_endpoints()
    superstatic.connect(endpoints, replicate="partial")
    try:
        yield endpoints
    finally:
        superstatic.close()


def test_reads_through_the_generic_slot_against_real_agents(app: list[str]) -> None:
    cfg = superstatic.root("slot.cfg", dict)
    cfg["mode"] = "fast"
    cfg["hosts"] = ["a", "b", "b"]
    with superstatic.transaction():
        cfg["n"] = cfg.get("n", 0) + 1
        assert sorted(cfg.keys()) == ["hosts", "mode", "n"]
    superstatic.sync()
    hosts = cfg["hosts"]
    if FAST:
        assert attr_slot.getattro_of(type(cfg)) == attr_slot.generic_getattr_address()
        assert type(cfg) is DictProxy and type(hosts) is ListProxy
    assert cfg.get("mode") == "fast" and cfg.get("none", 3) == 3 and cfg.get("n") == 1
    assert list(cfg.keys()) == ["mode", "hosts", "n"] and hosts.count("b") == 2
    assert isinstance(cfg, dict) and cfg == {"mode": "fast", "hosts": ["a", "b", "b"], "n": 1}
    with pytest.raises(AttributeError) as missing:
        cfg.nope  # noqa: B018 - the read is the test
    assert str(missing.value) == "'dict' object has no attribute 'nope'"
    with pytest.raises(AttributeError) as missing_list:
        hosts.get  # noqa: B018
    assert str(missing_list.value) == "'list' object has no attribute 'get'"


def test_a_proxy_not_held_keeps_the_hook_then_a_closed_one_refuses(app: list[str]) -> None:
    top = superstatic.root("slot.top", dict)
    top["inner"] = {"k": 1}
    superstatic.close()
    # A fresh partial replica: the nested dict is known by its head only until first used.
    superstatic.connect(app, replicate="partial")
    top = superstatic.root("slot.top", dict)
    inner = top["inner"]
    if FAST:
        assert type(inner) is proxy_base._HOOKED[DictProxy]
    assert inner.get("k") == 1 and list(inner.keys()) == ["k"]  # loads it: a plain dict now
    if FAST:
        assert type(inner) is DictProxy
    superstatic.close()
    for use in (lambda: inner.get("k"), lambda: inner.keys(), lambda: inner.nope):
        with pytest.raises(superstatic.Error, match="connection was closed"):
            use()
    superstatic.connect(app, replicate="partial")  # for the fixture's close()
