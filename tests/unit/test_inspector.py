"""INSPECT's object-graph answers (agent/inspector.py) on records written by the real state
machine: roots with sizes, paths into dicts, lists, objects and tuples, object ids, depth,
bounds, and the errors that say where a path stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import inspector
from support.inproc import InprocCluster

import superstatic


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@superstatic.register
class Account:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.tags = ["new"]


def show(cluster: InprocCluster, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("root", None)
    kwargs.setdefault("path", ())
    kwargs.setdefault("oid", None)
    kwargs.setdefault("depth", inspector.DEPTH_DEFAULT)
    with cluster.log.env.begin() as txn:
        return inspector.show(txn, cluster.log.sm.dbs, **kwargs)


def test_roots_are_listed_with_kind_items_and_bytes(cluster: InprocCluster) -> None:
    s = cluster.session()
    s.root("config", dict)["users"] = [{"name": "ann"}, {"name": "bob"}]
    s.root("billing.ledger", list).extend(range(100))
    s.root("tags", set).add("x")
    with cluster.log.env.begin() as txn:
        listing = inspector.list_roots(txn, cluster.log.sm.dbs, 2)
    assert listing["count"] == 3 and listing["truncated"]
    assert [r["name"] for r in listing["roots"]] == ["billing.ledger", "config"]  # by name
    ledger = listing["roots"][0]
    assert (
        ledger["kind"] == "list" and ledger["items"] == 100 and ledger["bytes"] > 0
    )  # the header's (format 3: a node is many records)
    assert ledger["version"] > 0 and ledger["oid"]
    with cluster.log.env.begin() as txn:
        everything = inspector.list_roots(txn, cluster.log.sm.dbs, inspector.ROOTS_MAX)
    assert not everything["truncated"] and everything["roots"][2]["kind"] == "set"


def test_paths_reach_nodes_and_values_and_name_their_containers(cluster: InprocCluster) -> None:
    s = cluster.session()
    cfg = s.root("config", dict)
    cfg["users"] = [{"name": "ann", "keys": (1, "two")}, {"name": "bob"}]
    cfg[3] = "int key"
    cfg["acct"] = Account("ann")
    users = show(cluster, root="config", path=("users",))
    assert users["kind"] == "list" and users["items"] == 2 and users["path"] == "config.users"
    assert users["value"][1] == {"name": "bob"}
    assert set(users["oids"].values()) == {"", "[0]", "[1]"}
    name = show(cluster, root="config", path=("users", -1, "name"))
    assert name["kind"] == "value" and name["value"] == "bob"
    assert name["path"] == "config.users[-1].name"
    # The containers walked, root table first: what --watch follows besides the node itself.
    assert [(where, step) for _, where, step in name["ancestors"]] == [
        ("@roots", "config"),
        ("config", "users"),
        ("config.users", -1),
        ("config.users[-1]", "name"),
    ]
    assert show(cluster, root="config", path=("users", 0, "keys", 1))["value"] == "two"
    assert show(cluster, root="config", path=(3,))["value"] == "int key"  # an int key
    acct = show(cluster, root="config", path=("acct",))
    assert acct["kind"] == "obj" and acct["class"].endswith("Account")
    assert acct["value"]["owner"] == "ann" and acct["value"]["tags"] == ["new"]
    by_id = show(cluster, oid=acct["oid"], depth=0)
    assert by_id["value"]["tags"] == {"__ref__": by_id["value"]["tags"]["__ref__"]}  # depth 0
    tags = show(cluster, oid=by_id["value"]["tags"]["__ref__"])
    assert tags["value"] == ["new"] and tags["path"] == tags["oid"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        (("nope",), "config (a dict of 2 items) has no key 'nope'"),
        (("3",), "has no key '3'"),  # "3" is not 3
        (("users", 5), "config.users is a list of 1 items: no index [5]"),
        (("users", "x"), "no index ['x']"),
        (("n", "x"), "config.n is a int, not a container"),
        (("users", 0, "name", 0), "config.users[0].name is a str"),
    ],
)
def test_a_path_that_leads_nowhere_says_where_it_stopped(
    cluster: InprocCluster, path: tuple[Any, ...], says: str
) -> None:
    s = cluster.session()
    cfg = s.root("config", dict)
    cfg["users"] = [{"name": "ann"}]
    cfg["n"] = 1
    answer = show(cluster, root="config", path=path)
    assert not answer["found"] and says in answer["missing"], answer


def test_missing_roots_and_ids(cluster: InprocCluster) -> None:
    cluster.session().root("config", dict)
    assert show(cluster, root="other")["missing"] == "no root named 'other'"
    assert "no node with id" in show(cluster, oid="zz.1")["missing"]


def test_answers_are_bounded_and_say_so(cluster: InprocCluster) -> None:
    s = cluster.session()
    big = s.root("big", list)
    big.extend(range(inspector.ITEMS_MAX + 5))
    nest = s.root("nest", dict)
    nest["a"] = {"b": {"c": {"d": 1}}}
    answer = show(cluster, root="big", path=())
    assert answer["truncated"] and answer["items"] == inspector.ITEMS_MAX + 5
    assert len(answer["value"]) == inspector.ITEMS_MAX + 1
    assert answer["value"][-1] == {"__truncated__": 5}
    shallow = show(cluster, root="nest", path=(), depth=1)
    assert set(shallow["value"]["a"]["b"]) == {"__ref__"}  # one level of nodes below
    deep = show(cluster, root="nest", path=(), depth=10)
    assert deep["value"] == {"a": {"b": {"c": {"d": 1}}}} and not deep["truncated"]


def test_a_cycle_is_shown_once_then_as_a_reference(cluster: InprocCluster) -> None:
    s = cluster.session()
    cfg = s.root("config", dict)
    cfg["self"] = cfg
    answer = show(cluster, root="config", path=(), depth=50)
    assert answer["value"]["self"] == {"__ref__": answer["oid"]}
