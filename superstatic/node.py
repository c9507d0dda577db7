"""A node of the local replica: one shared dict, list, set or object, and what user code holds.

`live` is the real container the replica keeps current: a dict, list or set, or for an object
the instance's own `__dict__` (its attribute store). `ref` is what user code sees: the wrapt proxy
around `live`, or the shared instance itself. A node keeps the same `live` and `ref` for its whole
life, so identity holds and caches keyed on them never go stale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superstatic import proxy_object
from superstatic import txn as _txn

if TYPE_CHECKING:
    from superstatic.replica import Replica
    from superstatic.txn import Txn

KINDS = ("dict", "list", "set", "obj")
# The container proxy classes; each proxy module adds its class when it loads (no import cycle).
PROXY_TYPES: set[type] = set()


class Node:
    __slots__ = ("class_name", "dead", "kind", "live", "oid", "ref", "replica", "txn", "version")

    def __init__(
        self,
        oid: str,
        kind: str,
        live: Any,
        replica: Replica,
        txn: Txn | None,
        class_name: str | None,
    ) -> None:
        assert kind in KINDS, kind
        assert (kind == "obj") == (class_name is not None)
        self.oid = oid
        self.kind = kind
        self.live = live
        self.ref: Any = None
        self.replica = replica
        # The transaction that created this node and has not committed yet; None once the
        # node exists in the cluster (adopted by the replica when its entry applied).
        self.txn = txn
        # Log index of the entry that last changed the node; 0 while private.
        self.version = 0
        self.dead = False
        self.class_name = class_name

    def __repr__(self) -> str:
        return f"Node({self.oid!r}, {self.kind}, v{self.version})"


def make_node(
    replica: Replica, oid: str, kind: str, class_name: str | None, txn: Txn | None
) -> Node:
    """A node with an empty container and its ref."""
    from superstatic import proxy_dict, proxy_list, proxy_set

    if kind == "dict":
        node = Node(oid, kind, {}, replica, txn, None)
        node.ref = proxy_dict.DictProxy(node.live, node)
    elif kind == "list":
        node = Node(oid, kind, [], replica, txn, None)
        node.ref = proxy_list.ListProxy(node.live, node)
    elif kind == "set":
        node = Node(oid, kind, set(), replica, txn, None)
        node.ref = proxy_set.SetProxy(node.live, node)
    else:
        assert kind == "obj" and class_name is not None
        instance = proxy_object.new_instance(class_name)
        node = Node(oid, kind, proxy_object.attrs_of(instance), replica, txn, class_name)
        node.ref = instance
        proxy_object.bind(instance, node)
    if type(node.ref) not in _txn.OVERLAYS_ENABLED:
        _txn.enable_overlay(type(node.ref))
    return node


def node_of(value: Any) -> Node | None:
    """The node behind a proxy or shared instance; None for anything else."""
    tp = type(value)
    if tp in PROXY_TYPES:
        return value._self_node  # type: ignore[no-any-return]
    if tp in proxy_object.SHARED_CLASSES:
        return proxy_object.node_get(value)
    return None
