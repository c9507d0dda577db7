"""A SNAPSHOT loaded into the replica as its frames arrive (docs/library.md, "Memory per object").

The stream's feeder (`client/stream.py`) hands each node header and each checked run of
elements here as it decodes them. A node new to this process is made at its header and filled
from each run at once, so a run's decoded wire form is dropped as soon as it is used and the
process never holds the whole decoded snapshot. Holding it all made the resident size: the
allocator keeps freed small blocks, so the decoded snapshot's peak stayed resident as holes
among the nodes made after it.

Nothing is visible before `finish`: the new nodes are private until it swaps the replica's node
table, under the replica's lock, after waiting for running bodies as an entry does. What user
code may already hold is not touched before then: a node that survives from the replica's
previous state, or a committing transaction's private node the snapshot adopts, has its runs
filled into a private container of its kind, moved into its own at the swap. What can fail
(a ref in elements held back for `finish`, below, to a node never sent) fails before the swap
changes anything, so a snapshot refused leaves the replica as it was.

Nodes come in the agent's creation order, so a container usually arrives before the nodes it
references. Such a forward ref stands in its container as the decoded `Ref` itself, with its
position noted, and is replaced by the node's ref when that node's header arrives. A forward ref
where no position can be noted (in a dict key, a set member or a tuple) holds the rest of its
node's elements back until `finish`, which keeps the node's insertion order.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from superstatic.objects.factory import make_node
from superstatic.objects.node import Node
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import ProtocolError

if TYPE_CHECKING:
    from superstatic.objects.replica import Replica

_intern = sys.intern


class _Forward(Exception):
    """A ref to a node whose header has not arrived, where no placeholder can stand (its oid
    the one argument)."""


# A survivor's private container, filled by its runs, moved into its own at the swap (an obj's
# attributes as a dict).
_EMPTY: dict[str, type] = {"dict": dict, "obj": dict, "list": list, "set": set}


class _Arrived:
    """`Replica._resolve`'s node lookup while frames arrive: the nodes whose header came; any
    other oid is a forward reference (never the replica's current nodes: they may not be in
    this snapshot)."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    def get(self, oid: str, /) -> Node:
        node = self.nodes.get(oid)
        if node is None:
            raise _Forward(oid)
        return node


class SnapshotLoad:
    """One snapshot being loaded into `replica`: `node` for each header, `run` for each run of
    the node last started, `finish` at the last frame. Dropped unfinished (a new subscription),
    it leaves the replica as it was."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        # The snapshot's nodes by oid: the replica's node table once finished.
        self.nodes: dict[str, Node] = {}
        self._arrived = _Arrived(self.nodes)
        # Forward refs: oid -> [(container, key or list index, the Ref), ...] where its Ref
        # stands (replaced only if still there: a later item of the same key wins, as it does
        # in a dict filled item by item).
        self._waiting: dict[str, list[tuple[Any, Any, Ref]]] = {}
        # Nodes that existed before the snapshot, each with the private container its runs
        # fill (moved into the node's own at the swap).
        self._kept: list[tuple[Node, Any]] = []
        # Containers whose rest waits for a forward ref where no placeholder stands: (the
        # container, its kind, the elements), appended to it at finish.
        self._held: list[tuple[Any, str, list[Any]]] = []
        # The node last started, the container its runs fill (its own if new, else private),
        # and its elements kept for finish (None: filled as runs come).
        self._current: Node | None = None
        self._live: Any = None
        self._rest: list[Any] | None = None

    def node(self, oid: str, version: int, kind: str, extra: Any) -> None:
        """A node's header (`extra`: an obj's class name, else unused; the version is not
        kept: docs/data-model-v2.md section 4)."""
        class_name = extra if kind == "obj" else None
        node = self._existing(oid, kind, class_name)
        if node is None:
            node = make_node(self.replica, oid, kind, class_name, None)
            self._live = node.live
        else:
            self._live = _EMPTY[kind]()
            self._kept.append((node, self._live))
        self._rest = None
        self.nodes[oid] = node
        self._current = node
        waiting = self._waiting.pop(oid, None)
        if waiting is not None:
            ref = node.ref
            for container, position, placeholder in waiting:
                if container[position] is placeholder:
                    container[position] = ref

    def _existing(self, oid: str, kind: str, class_name: str | None) -> Node | None:
        """The node user code may already hold for `oid`: a committing transaction's private
        node or the replica's own, when of the same kind and class (Replica._claim's rule)."""
        replica = self.replica
        for node in (replica._adopt.get(oid), replica.nodes.get(oid)):
            if (
                node is not None
                and node.kind == kind
                and node.class_name == class_name
                and not node.dead
            ):
                return node
        return None

    def run(self, elements: list[Any]) -> None:
        """Elements of the node last started, in the stream's shapes (dict and obj: [key,
        value] pairs; set and list: the members or values), checked by the feeder."""
        node = self._current
        assert node is not None
        if self._rest is not None:
            self._rest.extend(elements)
            return
        kind, live = node.kind, self._live
        if kind == "list":
            at = self._fill_list(live, elements)
        elif kind == "set":
            at = self._fill_set(live, elements)
        else:
            at = self._fill_items(live, kind == "obj", elements)
        if at is not None:
            self._rest = elements[at:]
            self._held.append((live, kind, self._rest))

    def _wait(self, placeholder: Ref, container: Any, position: Any) -> None:
        oid = placeholder.oid
        waiting = self._waiting.get(oid)
        if waiting is None:
            self._waiting[oid] = [(container, position, placeholder)]
        else:
            waiting.append((container, position, placeholder))

    # Each filler returns None when every element went in, else the index of the first one
    # held back (a forward ref no placeholder can stand for).

    def _fill_items(self, live: Any, obj: bool, elements: list[Any]) -> int | None:
        replica, arrived, nodes = self.replica, self._arrived, self.nodes
        for at, (key, value) in enumerate(elements):
            try:
                if type(key) is str:
                    key = _intern(key)
                elif not obj:
                    key = replica._resolve(key, arrived, True)
                if type(value) is Ref:
                    target = nodes.get(value.oid)
                    if target is None:
                        self._wait(value, live, key)
                    else:
                        value = target.ref
                else:
                    value = replica._resolve(value, arrived)
            except _Forward:
                return at
            live[key] = value
        return None

    def _fill_list(self, live: list[Any], elements: list[Any]) -> int | None:
        replica, arrived, nodes = self.replica, self._arrived, self.nodes
        for at, value in enumerate(elements):
            if type(value) is Ref:
                target = nodes.get(value.oid)
                if target is None:
                    self._wait(value, live, len(live))
                else:
                    value = target.ref
            else:
                try:
                    value = replica._resolve(value, arrived)
                except _Forward:
                    return at
            live.append(value)
        return None

    def _fill_set(self, live: set[Any], elements: list[Any]) -> int | None:
        replica, arrived = self.replica, self._arrived
        for at, member in enumerate(elements):
            try:
                live.add(replica._resolve_key(member, arrived))
            except _Forward:
                return at
        return None

    def finish(self, index: int) -> None:
        """The last frame arrived: the snapshot replaces the replica's state at `index`.

        What can fail is done before anything user code sees changes, so a refused snapshot
        leaves the replica as it was: the elements held back (a forward ref in a key, a member
        or a tuple) are resolved into their containers, a new node's own or a survivor's
        private one (a ref in them to a node the snapshot never sent raises)."""
        if self._waiting:
            oid = next(iter(self._waiting))
            raise ProtocolError(f"the log references object {oid}, unknown to this replica")
        for live, kind, elements in self._held:
            self._resolve_into(live, kind, elements)
        self._held = []
        self.replica._swap_in(index, self.nodes, self._kept)

    def _resolve_into(self, live: Any, kind: str, elements: list[Any]) -> None:
        try:
            self.replica._fill_into(
                live, kind, [None, elements] if kind == "obj" else elements, self._arrived
            )
        except _Forward as exc:
            raise ProtocolError(
                f"the log references object {exc.args[0]}, unknown to this replica"
            ) from None
        elements.clear()
