"""A read method's first lookup caches the container's bound method in the proxy's instance dict
(proxy_base._forward). A swap of the container (hollow.py filling or emptying a node, replica.py
detaching it) forgets that cache. A lookup that read the old container before the swap and
stored its method after the swap's forget left the old container's method cached: `p.get(k)`
then answered from a container the replica no longer updates, until the next swap (review35
saw review26's swap test fail with `{}.get` cached, under load). The interleaving is forced here
by a container whose attribute lookup runs the swap, as a thread switch there would."""

from __future__ import annotations

from typing import Any

from superstatic.objects import proxy_base
from superstatic.objects.factory import make_node
from superstatic.objects.hollow import _forget_cached_methods
from superstatic.objects.replica import Replica


class _SwapsOnLookup(dict):  # type: ignore[type-arg]
    """Not the plain type (its proxy keeps the hooked class). Looking up `get` on it swaps the
    proxy's container for `then` first, the way another thread could between `_forward`'s read
    of the container and its store into the cache."""

    proxy: Any = None
    then: dict[str, int] = {}

    def __getattribute__(self, name: str) -> Any:
        proxy = dict.__getattribute__(self, "proxy")
        if name == "get" and proxy is not None:
            dict.__setattr__(self, "proxy", None)  # once
            proxy_base._set_wrapped(proxy, dict.__getattribute__(self, "then"))
            _forget_cached_methods(proxy)
        return dict.__getattribute__(self, name)


def test_a_method_looked_up_across_a_swap_is_not_left_cached() -> None:
    proxy = make_node(Replica(), "raced", "dict", None, None).ref
    old = _SwapsOnLookup({"a": 0})
    new = {"a": 1}
    old.then = new
    proxy_base._set_wrapped(proxy, old)
    _forget_cached_methods(proxy)
    old.proxy = proxy
    # This lookup reads the old container; the swap to `new` happens inside it.
    proxy.get  # noqa: B018
    assert proxy.__wrapped__ is new
    # Every later read answers from the container the proxy now holds.
    assert proxy.get("a") == 1
    assert "get" not in proxy.__self_dict__ or proxy.__self_dict__["get"].__self__ is new
