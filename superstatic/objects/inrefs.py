"""`Node.inrefs`: how many times a node's ref occurs in the contents of held nodes.

The eviction clock tells a node that user code references from one only the replica's own
containers reference by reference counts (docs/virtual-heap.md section 5.1): what the replica
holds of a ref is `inrefs` (plus a constant per kind). It is maintained where refs enter or
leave held contents: a node filled (`add_contents`), an op applied (`op_delta`, before and after
`apply_op`), a node hollowed (`add_contents` with -1). A miscount only changes how eagerly the
clock evicts (an overcount keeps a node, an undercount evicts one whose next use faults it in
again, same identity): never a result.

Values are live values (proxies, shared instances, scalars, tuples and frozensets of them);
scalars are skipped by one type test.
"""

from __future__ import annotations

from typing import Any

from superstatic.objects.node import HOLLOW, node_of

# Types whose values never hold a ref (everything a live scalar can be; a miss only costs the
# slower path below).
_NO_REFS = frozenset({str, int, float, bool, bytes, type(None)})


def add_value(value: Any, delta: int) -> None:
    tp = type(value)
    if tp in _NO_REFS:
        return
    if tp is tuple or tp is frozenset:
        for item in value:
            add_value(item, delta)
        return
    node = node_of(value)
    if node is not None:
        node.inrefs += delta
        if node.inrefs <= 0 and node.state == HOLLOW:
            node.replica._stub_candidates.append(node)  # the clock may forget it


def add_contents(kind: str, live: Any, delta: int) -> None:
    """Every ref in a held node's contents (`live`: its container, or an obj's AttrStore)."""
    if kind == "dict":
        for key, value in dict.items(live):  # (a PartialDict's own items() would load it)
            add_value(key, delta)
            add_value(value, delta)
    elif kind == "obj":
        for name in live:
            add_value(live[name], delta)
    else:
        for value in live:
            add_value(value, delta)


def op_removed(kind: str, live: Any, op: list[Any]) -> None:
    """Before `op` (live values) is applied to `live`: the refs it takes out (-1 each)."""
    tag = op[0]
    if tag == "set":
        # dict.get for dicts: a PartialDict's own get would load an unknown key.
        old = (dict.get if isinstance(live, dict) else type(live).get)(live, op[2], _ABSENT)
        if old is not _ABSENT:
            add_value(old, -1)
    elif tag == "del":
        if kind == "dict":
            # (dict.*: a PartialDict's own methods would load the key.) The op's key resolves
            # to the refs the stored (equal) key holds.
            if dict.__contains__(live, op[2]):
                add_value(op[2], -1)
                add_value(dict.__getitem__(live, op[2]), -1)
        elif op[2] in live:
            add_value(live[op[2]], -1)
    elif tag == "clear":
        add_contents(kind, live, -1)
    elif tag == "splice":
        for value in live[op[2] : op[3]]:
            add_value(value, -1)
    elif tag == "discard":
        for value in op[2]:
            if value in live:
                add_value(value, -1)


def op_added(kind: str, live: Any, op: list[Any], present: bool) -> None:
    """`op` is about to be applied (`present`: for a set op, whether its key was there): the
    refs it puts in (+1 each)."""
    tag = op[0]
    if tag == "set":
        if not present and kind == "dict":
            add_value(op[2], 1)
        add_value(op[3], 1)
    elif tag == "splice":
        for value in op[4]:
            add_value(value, 1)
    elif tag == "extend":
        for value in op[2]:
            add_value(value, 1)
    elif tag == "add":
        for value in op[2]:
            if value not in live:
                add_value(value, 1)


_ABSENT: Any = object()
