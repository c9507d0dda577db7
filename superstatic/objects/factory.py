"""Making a node: its empty container and the ref user code will hold (proxy or instance).

The one module that knows every concrete proxy class, so that the proxies themselves (which
store values, which may create nodes) never import each other: a new node is asked of the
replica (`Replica.new_node`), which calls `make_node` here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt

from superstatic.objects import proxy_object, txn
from superstatic.objects.node import HeapNode, Node, bind
from superstatic.objects.proxy_dict import DictProxy
from superstatic.objects.proxy_list import ListProxy
from superstatic.objects.proxy_set import SetProxy

if TYPE_CHECKING:
    from superstatic.objects.replica import Replica
    from superstatic.objects.txn import Txn


# The proxies' own __new__ (a Python method: `type(proxy)(iterable)` makes a plain container)
# is skipped here: the replica makes every node through this function, about 1 us less each.
_proxy_new = wrapt.BaseObjectProxy.__new__


def _proxy(cls: Any, live: Any, node: Node) -> Any:
    proxy = _proxy_new(cls)
    cls.__init__(proxy, live, node)
    return proxy


def make_node(
    replica: Replica, oid: str, kind: str, class_name: str | None, owner: Txn | None
) -> Node:
    """A node with an empty container and its ref; `owner` is the creating transaction, if any.
    A partial replica's node has the eviction clock's fields (HeapNode)."""
    cls = HeapNode if replica.partial else Node
    if kind == "dict":
        node = cls(oid, kind, {}, replica, owner, None)
        node.ref = _proxy(DictProxy, node.live, node)
    elif kind == "list":
        node = cls(oid, kind, [], replica, owner, None)
        node.ref = _proxy(ListProxy, node.live, node)
    elif kind == "set":
        node = cls(oid, kind, set(), replica, owner, None)
        node.ref = _proxy(SetProxy, node.live, node)
    else:
        assert kind == "obj" and class_name is not None
        instance = proxy_object.new_instance(class_name)
        node = cls(oid, kind, proxy_object.attrs_of(instance), replica, owner, class_name)
        node.ref = instance
        bind(instance, node)
    if type(node.ref) not in txn.OVERLAYS_ENABLED:
        txn.enable_overlay(type(node.ref))
    return node
