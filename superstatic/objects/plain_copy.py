"""plain(obj): a deep copy made of plain Python values, for json.dumps, printing, or handing to
code that must not hold shared objects.

Shared dicts, lists and sets become plain ones; a shared object becomes a plain dict of its
attributes (JSON has no objects), except where a hashable value is needed (a set element, a dict
key): there it becomes an unshared instance of the user's class, as copy.deepcopy makes. Tuples
and frozensets are rebuilt around their converted items; everything else is immutable and kept.
Shared references and cycles keep their shape in the copy (one plain copy per node). The copy
is taken under the replica's lock, so it is one consistent state even while updates arrive;
inside a transaction it is what the transaction sees.
"""

from __future__ import annotations

import contextlib
import copy as _copy
from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn

# Depth of nesting plain() follows (each level is a Python stack frame).
PLAIN_DEPTH_MAX = 500


def json_default(value: Any) -> Any:
    """`json.dumps(obj, default=superstatic.json_default)`: shared dicts and lists become plain
    ones, shared objects dicts of their attributes (json's encoder accepts only real dicts and
    lists, which proxies are not). Anything else fails as json.dumps would."""
    if _node.node_of(value) is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return plain(value)


def plain(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A deep plain-Python copy of `value` (shared or not)."""
    node = _node.node_of(value)
    lock = node.replica.lock if node is not None else contextlib.nullcontext()
    with lock:
        return _plain(value, {} if memo is None else memo, 0)


def _plain(value: Any, memo: dict[int, Any], depth: int, hashable: bool = False) -> Any:
    if depth > PLAIN_DEPTH_MAX:
        raise RecursionError(f"plain(): nesting deeper than PLAIN_DEPTH_MAX={PLAIN_DEPTH_MAX}")
    node = _node.node_of(value)
    tp = type(value)
    if node is None and tp not in (dict, list, set, tuple, frozenset):
        return value
    if hashable and node is not None and node.kind == "obj":
        return _copy.deepcopy(value, memo)
    done = memo.get(id(value))
    if done is not None:
        return done
    # The memo is keyed by id(): the original must live until the copy is done. A partial
    # replica may otherwise evict a node whose proxy nothing else holds between two paths to
    # it, fault it in again as a new proxy (a memo miss: the sharing lost in the copy), or let
    # a new object take the old one's id (a wrong hit). copy.deepcopy's convention, so a
    # memo shared with it (an obj's __deepcopy__) keeps both kinds alive in one list.
    try:
        memo[id(memo)].append(value)
    except KeyError:
        memo[id(memo)] = [value]
    source = _txn.view_of(node) if node is not None else value
    kind = node.kind if node is not None else tp.__name__
    if kind in ("dict", "obj"):
        out: Any = {}
        memo[id(value)] = out
        for k, v in list(source.items()):
            out[_plain(k, memo, depth + 1, True)] = _plain(v, memo, depth + 1)
        return out
    if kind == "list":
        out = []
        memo[id(value)] = out
        out.extend(_plain(v, memo, depth + 1) for v in list(source))
        return out
    if kind == "set":
        out = set()
        memo[id(value)] = out
        out.update(_plain(v, memo, depth + 1, True) for v in list(source))
        return out
    items = [_plain(v, memo, depth + 1, hashable or kind == "frozenset") for v in source]
    return tuple(items) if kind == "tuple" else frozenset(items)
