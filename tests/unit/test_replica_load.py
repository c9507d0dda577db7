"""Replica.load_snapshot in one pass (docs/library.md, "Memory per object"): each record is
fed to the same SnapshotLoad the stream feeds frame by frame (each node made at its record and
filled at once, a ref to a later record patched when that one comes), and each record's
contents are dropped once used. What must not change: refs in any order (forward, backward,
cycles), identity of the nodes that survive a second snapshot, death of those that do not, and
no half-made node after a load that fails."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from superstatic.objects.node import KINDS, HeapNode, Node
from superstatic.objects.replica import Replica
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import ProtocolError


def _fresh(s: str) -> str:
    # A str equal to `s` but another object, as each decoded frame item holds its own copy.
    return "".join(list(s))


def graph() -> list[tuple[str, int, str, Any]]:
    """Records as the stream assembles them; refs to nodes before and after them, a cycle."""
    return [
        ("@roots", 1, _fresh("dict"), [["a", Ref(_fresh("a1"))], ["l", Ref(_fresh("l1"))]]),
        ("a1", 1, _fresh("dict"), [["i", 1], ["next", Ref(_fresh("b1"))]]),
        # Any sequence will do as a record (a list here), not only the stream's tuples.
        ["b1", 1, _fresh("dict"), [["i", 2], ["back", Ref(_fresh("a1"))]]],  # type: ignore[list-item]
        ("l1", 1, _fresh("list"), [Ref(_fresh("s1")), Ref(_fresh("a1")), 3]),
        ("s1", 1, _fresh("set"), ["x", "y"]),
    ]


def test_refs_in_any_order_resolve_to_the_nodes_of_the_snapshot() -> None:
    replica = Replica()
    records = graph()
    replica.load_snapshot(5, records)
    nodes = replica.nodes
    assert sorted(nodes) == ["@roots", "a1", "b1", "l1", "s1"]
    assert all(type(node) is Node for node in nodes.values())
    a1, b1 = nodes["a1"], nodes["b1"]
    assert nodes["@roots"].live == {"a": a1.ref, "l": nodes["l1"].ref}
    assert a1.live["next"] is b1.ref and b1.live["back"] is a1.ref  # the cycle
    assert nodes["l1"].live == [nodes["s1"].ref, a1.ref, 3]
    assert nodes["s1"].live == {"x", "y"}
    assert replica.applied_index == 5
    # Consumed: the wire form is gone once its node is filled.
    assert all(contents == [] for _oid, _v, _kind, contents in records)


def test_a_node_keeps_its_records_own_oid_and_one_str_per_kind() -> None:
    replica = Replica()
    records = graph()
    own = {oid: oid for oid, _v, _k, _c in records}
    replica.load_snapshot(5, records)
    for oid, node in replica.nodes.items():
        # Claimed through a ref first (b1, l1, s1) or not: the record's str, not the ref's.
        assert node.oid is own[oid]
        assert any(node.kind is kind for kind in KINDS), node.kind


def test_a_second_snapshot_keeps_survivors_and_kills_the_rest() -> None:
    replica = Replica()
    replica.load_snapshot(5, graph())
    before = dict(replica.nodes)
    second = [
        ("@roots", 2, "dict", [["a", Ref("a1")], ["n", Ref("n1")]]),
        ("a1", 2, "dict", [["i", 10]]),
        ("n1", 1, "list", [Ref("a1")]),
        ("s1", 2, "list", []),  # another kind under the same oid: a new node
    ]
    replica.load_snapshot(9, second)
    nodes = replica.nodes
    assert nodes["a1"] is before["a1"] and nodes["a1"].live == {"i": 10}
    assert nodes["@roots"].ref is before["@roots"].ref
    assert nodes["@roots"].live == {"a": nodes["a1"].ref, "n": nodes["n1"].ref}
    assert nodes["n1"].live == [nodes["a1"].ref]
    assert nodes["s1"] is not before["s1"] and nodes["s1"].kind == "list"
    assert before["s1"].dead and before["b1"].dead and before["l1"].dead
    assert not nodes["a1"].dead and not nodes["n1"].dead


def test_a_load_that_fails_half_way_leaves_only_nodes() -> None:
    replica = Replica()
    records = [
        ("a1", 1, "dict", [["i", 1]]),
        ("b1", 1, "dict", [["gone", Ref("zz")]]),  # a ref to no node of the snapshot
        ("c1", 1, "dict", [["i", 3]]),
    ]
    with pytest.raises(ProtocolError, match="unknown to this replica"):
        replica.load_snapshot(5, records)
    assert all(type(node) is Node for node in replica.nodes.values())
    assert "c1" not in replica.nodes  # never claimed
    assert replica.applied_index == 0


def test_a_full_replicas_node_has_no_eviction_fields() -> None:
    """A full replica's node leaves out the clock's fields (32 B per object: docs/library.md,
    "Memory per object"); a partial replica's node keeps them, and they start at 0."""
    full = Replica()
    full.load_snapshot(5, graph())
    node = full.nodes["a1"]
    assert type(node) is Node and (node.cost, node.inrefs, node.sweep_mark) == (0, 0, 0)
    with pytest.raises(AttributeError):
        node.cost = 1  # no full-replica path may count what only the clock uses
    partial = Replica()
    partial.start_partial(5, lambda oids, keys, whole: None, 1 << 20)
    roots = partial.nodes["@roots"]
    assert type(roots) is HeapNode and (roots.inrefs, roots.sweep_mark) == (0, 0)
    roots.sweep_mark = -3
    assert roots.sweep_mark == -3 and Node.sweep_mark == 0
    assert sys.getsizeof(node) < sys.getsizeof(roots)
