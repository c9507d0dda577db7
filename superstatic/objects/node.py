"""A node of the local replica, and the one lookup from what user code holds to its node.

A node is one shared dict, list, set or object. `live` is the real container the replica keeps
current: a dict, list or set, or for an object the instance's attribute store. `ref` is what user
code sees: the wrapt proxy around `live`, or the shared instance itself. A node keeps the same
`live` and `ref` for its whole life, so identity holds and caches keyed on them never go stale.

A node is in one of four states (docs/virtual-heap.md section 2.1): `HELD` (its contents are
in `live` and the stream keeps them current), `LOADING` and `HOLLOW` (its contents are not here:
`live` and the proxy's wrapped object are a stand-in that faults them in when touched, or a
shared instance's class is a hollow subclass that does), and `EVICTING` (being hollowed: a
transaction that reads it meanwhile waits for the outcome), and `PARTIAL` (a dict held per key).
A replica of everything (`replicate="all"`) has only `HELD` nodes. `dead` is apart: a node of
any state can die.

`node_of(value)` is the only way the object layer turns a user-visible value into its node:
container proxies carry it in `_self_node`, shared instances in the `Shared` mixin's slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superstatic.objects import registry
from superstatic.protocol.errors import Error

if TYPE_CHECKING:
    from superstatic.objects.replica import Replica
    from superstatic.objects.txn import Txn

KINDS = ("dict", "list", "set", "obj")
# Each kind as one str object: a decoded record's kind is a fresh str, which a node would
# otherwise keep (about 56 bytes per node).
_KIND_STR = {kind: kind for kind in KINDS}
# Node states (small ints: `state is not HELD` is the one test the transaction path adds).
HELD = 0
LOADING = 1
HOLLOW = 2
EVICTING = 3
# Held per key (the root table: docs/virtual-heap.md 4.3): `live` is a PartialDict.
PARTIAL = 4
# The container proxy classes; each proxy module adds its class when it loads.
PROXY_TYPES: set[type] = set()


class Node:
    # No version: a transaction records what it read (keys, shape, content) and the replica's
    # applied index, not node versions (docs/data-model-v2.md section 4), which saves every
    # node a slot and, after a snapshot, an int of its own. The eviction clock's own fields
    # are HeapNode's: a full replica's node does without them (docs/library.md, "Memory per
    # object": 10 slots make 112 bytes with the GC header, 13 made 144 in CPython's size
    # classes).
    __slots__ = (
        "bit",
        "class_name",
        "dead",
        "kind",
        "live",
        "oid",
        "ref",
        "replica",
        "state",
        "txn",
    )
    # What a full replica's node reads for HeapNode's fields (nothing counts for it); writing
    # one raises AttributeError, so a full replica's path that would keep them shows at once.
    inrefs = 0
    cost = 0
    sweep_mark = 0

    def __init__(
        self,
        oid: str,
        kind: str,
        live: Any,
        replica: Replica,
        txn: Txn | None,
        class_name: str | None,
    ) -> None:
        assert kind in _KIND_STR, kind
        assert (kind == "obj") == (class_name is not None)
        self.oid = oid
        self.kind = _KIND_STR[kind]
        self.live = live
        self.ref: Any = None
        self.replica = replica
        # The transaction that created this node and has not committed yet; None once the
        # node exists in the cluster (adopted by the replica when its entry applied).
        self.txn = txn
        self.dead = False
        self.class_name = class_name
        self.state = HELD
        # The clock's reference bit (objects/eviction.py). A transaction's read sets it in
        # either kind of replica (one store, cheaper than asking which).
        self.bit = False

    def __repr__(self) -> str:
        return f"Node({self.oid!r}, {self.kind})"


class HeapNode(Node):
    """A node of a partial replica (docs/virtual-heap.md): with the eviction clock's fields."""

    __slots__ = ("cost", "inrefs", "sweep_mark")

    def __init__(
        self,
        oid: str,
        kind: str,
        live: Any,
        replica: Replica,
        txn: Txn | None,
        class_name: str | None,
    ) -> None:
        super().__init__(oid, kind, live, replica, txn, class_name)
        # How many times `ref` occurs in the contents of held nodes (docs/virtual-heap.md 5.1):
        # what the replica itself holds of it, told apart from what user code holds.
        self.inrefs = 0
        # Estimated bytes of the node (its record, and its contents while held:
        # eviction.cost; Replica.held_bytes is their sum).
        self.cost = 0
        # The clock's memory of this node (objects/eviction.py): > 0, the sweep (Replica.sweeps,
        # from 1) that hollowed it, until it is faulted in again (a refault); < 0, sticky: no
        # sweep up to -sweep_mark hollows it (it was faulted again soon after its eviction);
        # 0, neither.
        self.sweep_mark = 0


# Both node classes (what a container proxy accepts as its node).
NODE_TYPES = frozenset({Node, HeapNode})


class Shared:
    """Mixin of every generated shared class; holds the node outside the attribute store."""

    __slots__ = ("__superstatic_node__",)


_NODE_SLOT = Shared.__dict__["__superstatic_node__"]


def node_get(instance: Any) -> Node:
    """The node of a shared instance; a clear error for an instance superstatic did not make."""
    try:
        return _NODE_SLOT.__get__(instance)  # type: ignore[no-any-return]
    except AttributeError:
        raise Error(
            f"this {type(instance).__qualname__} instance was not created by superstatic; "
            "instances of a clustered class come from calling the class"
        ) from None


def node_peek(instance: Any) -> Node:
    """The node of a shared instance known to be bound (the hot read path: no error wrapping)."""
    return _NODE_SLOT.__get__(instance)  # type: ignore[no-any-return]


def bind(instance: Any, node: Node) -> None:
    _NODE_SLOT.__set__(instance, node)


def node_of(value: Any) -> Node | None:
    """The node behind a proxy or shared instance; None for anything else."""
    tp = type(value)
    if tp in PROXY_TYPES:
        return value._self_node  # type: ignore[no-any-return]
    if tp in registry.SHARED_CLASSES:
        return node_get(value)
    return None
