"""Small helpers over the object layer that the toolkit's transactions need.

*Blind* writes: `set` and `del` ops emitted without recording a read of the container. Two
transactions that only blind-write the same container never conflict (the state machine checks
read versions only), which is what lets producers append to a queue while consumers claim from
it. The proxies record a read for `del d[k]` (Python raises KeyError for a missing key) and for
storing a shared reference (the `d[k] += ...` case); the toolkit knows neither matters where it
uses these, so it emits the ops itself.

*Peeking*: reading a container without recording its version, to pick a candidate (an item to
claim, an expired entry to clean up). The transaction then reads what it acts on (the item
itself), so the commit is still validated: a candidate someone else took meanwhile makes it
conflict and re-run, never act twice.
"""

from __future__ import annotations

from typing import Any

from superstatic.objects import node as _node
from superstatic.objects import txn as _txn
from superstatic.objects import values as _values
from superstatic.objects.plain_copy import plain
from superstatic.protocol.errors import Error


def current() -> _txn.Txn:
    txn = _txn.current()
    assert txn is not None, "a toolkit write outside a transaction body"
    return txn


def node(container: Any) -> _node.Node:
    found = _node.node_of(container)
    assert found is not None, f"not a shared container: {type(container).__name__}"
    return found


def blind_set(container: Any, key: Any, value: Any) -> Any:
    """container[key] = value without recording a read of the container; returns the stored
    value (the new node's proxy for a plain container)."""
    txn = current()
    target = node(container)
    txn.check(target)
    stored = _values.store(txn, value, target, _values.item(key))
    txn.emit(target, ["set", target.oid, key, stored])
    return stored


def blind_del(container: Any, key: Any) -> None:
    """del container[key] without recording a read (a missing key is a no-op, as for the op)."""
    txn = current()
    target = node(container)
    txn.check(target)
    txn.emit(target, ["del", target.oid, key])


def peek(container: Any) -> Any:
    """The container as this transaction sees it, without recording a read (see module doc)."""
    target = node(container)
    txn = _txn.current()
    if txn is None:
        return target.live
    return txn.view_peek(target)


def is_dead(value: Any) -> bool:
    """True if `value` is a shared node that no longer exists (collected by the cluster)."""
    found = _node.node_of(value)
    return found is not None and found.dead


def plain_value(value: Any) -> Any:
    """A plain copy of a stored value (containers become plain ones, scalars stay)."""
    if _node.node_of(value) is None:
        return value
    return plain(value)


def outside_transaction(what: str) -> None:
    """Blocking calls wait for the replica to change, which a transaction body (holding the
    replica back) would prevent: refuse them there with a message saying so."""
    if _txn.current() is not None:
        raise Error(
            f"{what} blocks until the cluster changes, which cannot happen inside a "
            "transaction body (it reads one fixed state); call it before or after the "
            "transaction"
        )
