"""The eviction clock of a partial replica: what may be hollowed, and the sweep that does it.

docs/virtual-heap.md section 5. Never evicted: a node user code references (judged by reference
counts, `user_referenced`), one a running transaction body read or wrote, one whose reference
bit is set (installed or read by a transaction since the clock last passed: the bit is cleared
and the node skipped once). The rest are hollowed, oldest first, until the estimated bytes held
are back under `SWEEP_TARGET_FRACTION` of `cache_bytes`, at most `EVICT_SWEEP_NODES_MAX` nodes
looked at per sweep (the rest next time), so a sweep never stalls the stream for long.

Sizes are estimates (`cost`): a constant per node known (`STUB_BYTES`: held or not, the node
costs its record), plus for a held node a base and a constant per element, not a walk of the
values; the bound is of that estimate, not of the process's memory. Stubs (hollow nodes) count
in it but are not on the clock: they cannot be hollowed, only forgotten once nothing holds them
(`_forget_stubs`), which the sweep does as it hollows their referrers, so the bytes it frees
include theirs (docs/virtual-heap.md 5.2, "Stubs count").
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from superstatic.objects import inrefs as _inrefs
from superstatic.objects.node import EVICTING, HELD, HOLLOW, PARTIAL, Node, node_of
from superstatic.objects.partial_dict import PartialDict

if TYPE_CHECKING:
    from superstatic.objects.replica import Replica

# cache_bytes: what connect() and SUPERSTATIC_CACHE_BYTES accept, and the default.
CACHE_BYTES_MIN = 1 << 20
CACHE_BYTES_MAX = 1 << 40
CACHE_BYTES_DEFAULT = 256 << 20
ENV_CACHE_BYTES = "SUPERSTATIC_CACHE_BYTES"
# A sweep stops once the held estimate is under this fraction of cache_bytes (hysteresis: a
# sweep per entry at the bound would cost more than the nodes it frees).
SWEEP_TARGET_FRACTION = 0.9
EVICT_SWEEP_NODES_MAX = 10_000
# Thrash of hot nodes the clock cannot see (docs/virtual-heap.md "Risks"): a node read often
# outside transactions through a parent user code holds is neither user-referenced nor marked
# (native reads run no Python), so it could be hollowed and faulted again and again. One
# faulted again within REFAULT_SWEEPS sweeps of its eviction is sticky: no sweep hollows it
# for STICKY_SWEEPS sweeps (Node.sweep_mark). Refaults are counted in stats()["heap"].
REFAULT_SWEEPS = 2
STICKY_SWEEPS = 8
# The size estimate: a held node's container and bookkeeping, plus each element (a dict item
# or attribute with its decoded value, a set member, a list slot). Measured with tracemalloc
# (tests/unit/test_heap_eviction.py keeps the estimate within 0.5x..2x of it): 300 small dicts
# of 3 items (one a short str) 420 B each, dicts of 100 int items 3.5 KB, lists of 50 small ints
# 650 B, objects of 2 attributes 360 B. A list of long strs is underestimated (each str is its
# own object): the bound is of this estimate, not of the process's memory.
NODE_BASE_BYTES = {"dict": 300, "list": 200, "set": 300, "obj": 280}
ELEMENT_BYTES = {"dict": 40, "list": 10, "set": 40, "obj": 40}
# What a node costs whatever its state, hollow (a stub) or held (added to its contents above):
# its Node (136 B), its ref (a container proxy and its instance dict 136 B; a shared instance
# and its attribute store more), its oid str as decoded (~70 B), its slot in Replica.nodes,
# while hollow its stand-in (40 B). Measured with tracemalloc on CPython 3.11 / wrapt 2.5, a
# held list of 2,000 refs loaded: 405 B per stub of a container, 574 B of a shared instance
# (tests/unit/test_heap_eviction.py keeps the estimate within 0.75x..1.5x of it).
STUB_BYTES = {"dict": 410, "list": 410, "set": 410, "obj": 580}
# A key of a per-key dict known absent (PartialDict.absent): its set slot (33 B measured) and
# the key it keeps (a short str, ~50 B).
ABSENT_KEY_BYTES = 80
# References the library itself holds to a ref (node.ref, the argument of getrefcount; for a
# shared instance also its attribute store's back reference). Measured and asserted by
# tests/unit/test_heap_eviction.py: a wrapt or CPython change that moves them fails there.
REF_BASE = {"dict": 2, "list": 2, "set": 2, "obj": 3}
# References to a held container's real container: node.live, the proxy's __wrapped__, the
# argument of getrefcount (plus one per bound read method cached in the proxy).
LIVE_BASE = 3
# References to a bound read method cached in a proxy's instance dict: the dict entry, the
# local that holds it in user_referenced, the argument of getrefcount. One more is user code
# holding that very method (`get = d.get`), which holds the container through it.
CACHED_METHOD_REFS = 3


def cost(node: Node) -> int:
    """The estimated bytes of a held (or per-key) node: its record and its contents."""
    kind = node.kind
    live = node.live
    base = STUB_BYTES[kind] + NODE_BASE_BYTES[kind]
    if kind == "dict":
        # (dict.__len__: a per-key dict's own len() would load it whole)
        size = dict.__len__(live)
        if type(live) is PartialDict:
            base += ABSENT_KEY_BYTES * len(live.absent)
    else:
        size = len(live)
    return base + ELEMENT_BYTES[kind] * size


def user_referenced(node: Node) -> bool:
    """Whether something besides the replica's own containers holds `node`'s ref (user code,
    a transaction, a listener) or its real container (a bound method, an iterator, a view)."""
    if sys.getrefcount(node.ref) - REF_BASE[node.kind] - node.inrefs > 0:
        return True
    if node.kind == "obj" or node.state == HOLLOW:
        return False
    cached = node.ref.__self_dict__
    methods = 0
    for name in type(node.ref)._READ_METHODS:
        bound = cached.get(name)
        if bound is None:
            continue
        if sys.getrefcount(bound) > CACHED_METHOD_REFS:
            return True
        methods += 1
    return sys.getrefcount(node.live) - LIVE_BASE - methods > 0


def _in_running_body(replica: Replica, oid: str) -> bool:
    for txn in list(replica._pin_txns.values()):
        if oid in txn.reads or oid in txn.pending or oid in txn.shadows:
            return True
    return False


def sweep(replica: Replica) -> None:
    """Hollows held nodes until the estimate is under the target. Call under the lock."""
    target = int(replica.cache_bytes * SWEEP_TARGET_FRACTION)
    replica.sweeps += 1
    _forget_stubs(replica)  # the stubs no held node references any more go first
    clock = replica._clock
    looked = 0
    limit = min(len(clock), EVICT_SWEEP_NODES_MAX)
    while replica.held_bytes > target and looked < limit and clock:
        oid, node = clock.popitem(last=False)
        looked += 1
        if node.state == PARTIAL:
            # A dict held per key loses keys, never itself (it is mostly its keys). Its bit
            # is not asked: every key load sets it, so a dict being read key after key would
            # never lose one.
            if not _in_running_body(replica, oid):
                _evict_keys(replica, node, target)
            clock[oid] = node
            continue
        if node.bit:
            node.bit = False
            clock[oid] = node
            continue
        if node.sweep_mark < 0:
            if replica.sweeps <= -node.sweep_mark:
                clock[oid] = node  # sticky
                continue
            node.sweep_mark = 0
        if user_referenced(node):
            clock[oid] = node
            continue
        # A body records its read, then tests the state: with EVICTING set first, either this
        # sees the read (and keeps the node) or the body sees EVICTING (and faults, waiting for
        # this sweep's lock).
        node.state = EVICTING
        if _in_running_body(replica, oid):
            node.state = HELD
            clock[oid] = node
            continue
        clock[oid] = node  # hollow() takes it off
        replica.hollow(node)
        if node.inrefs == 0:
            _forget_stub(replica, node)
        # Its contents' stubs that nothing else holds go with it: the bytes freed are theirs
        # too, so the sweep stops as soon as the estimate is under the target.
        _forget_stubs(replica)


def _evict_keys(replica: Replica, node: Node, target: int) -> None:
    """Lets the oldest loaded keys of a per-key node go (a dict keeps insertion order: load
    order) until the estimate is at `target`, and every key known absent; not the keys the
    load being installed brought. User code holding the dict loses nothing: a later lookup
    loads the key again (PartialDict.load)."""
    live = node.live
    oid = node.oid
    fresh = replica._fresh_keys
    excess = replica.held_bytes - target
    step = ELEMENT_BYTES["dict"]
    pins = replica.key_pins
    dropped = [key for key in live.absent if (oid, key) not in fresh and (oid, key) not in pins]
    live.absent.difference_update(dropped)
    victims: list[Any] = []
    freed = ABSENT_KEY_BYTES * len(dropped)
    for key, value in dict.items(live):  # (a PartialDict's own items() would load it whole)
        if freed >= excess:
            break
        if (oid, key) not in fresh and (oid, key) not in pins:
            victims.append(key)
            freed += step + _stub_freed(value)
    for key in victims:
        value = dict.pop(live, key)
        _inrefs.add_value(key, -1)
        _inrefs.add_value(value, -1)
    dropped.extend(victims)
    if not dropped:
        return
    new_cost = cost(node)
    replica.held_bytes += new_cost - node.cost
    node.cost = new_cost
    replica._key_drops.setdefault(oid, []).extend(dropped)
    if victims:
        replica.stats.count("evictions", len(victims))
        _forget_stubs(replica)  # the values' stubs only these keys held


def _stub_freed(value: Any) -> int:
    """The bytes a stub referenced by `value` alone frees once `value` goes (an estimate: a
    stub user code also holds stays)."""
    node = node_of(value)
    if node is None or node.state != HOLLOW or node.inrefs != 1:
        return 0
    return node.cost


def _forget_stubs(replica: Replica) -> None:
    """Hollow nodes no held node references any more, and user code does not hold: gone from
    the replica (the cyclic collector frees them), so stubs do not accumulate."""
    candidates, replica._stub_candidates = replica._stub_candidates, []
    for node in candidates:
        if node.state == HOLLOW and node.inrefs <= 0:
            _forget_stub(replica, node)


def _forget_stub(replica: Replica, node: Node) -> None:
    if user_referenced(node) or replica.nodes.get(node.oid) is not node:
        return
    del replica.nodes[node.oid]
    replica.held_bytes -= node.cost
    node.cost = 0
    replica.stats.stubs_removed += 1


class KeyPin:
    """Keeps keys of per-key dicts loaded (present or known absent) while it lives: a waiter
    holds one for the keys its predicate read (toolkit Runtime.evaluate). A key the clock let
    go is dropped at the agent too, which then sends no event of it: the wait would never
    wake. Holding the dict's ref is not enough: a per-key dict loses keys, never itself."""

    __slots__ = ("pairs", "replica")

    def __init__(self, replica: Replica, read_keys: dict[str, dict[Any, None]]) -> None:
        self.replica = replica
        self.pairs = [(oid, key) for oid, keys in read_keys.items() for key in keys]
        with replica.key_pins_lock:
            pins = replica.key_pins
            for pair in self.pairs:
                pins[pair] = pins.get(pair, 0) + 1

    def release(self) -> None:
        pairs, self.pairs = self.pairs, []
        with self.replica.key_pins_lock:
            pins = self.replica.key_pins
            for pair in pairs:
                left = pins.get(pair, 0) - 1
                if left > 0:
                    pins[pair] = left
                else:
                    pins.pop(pair, None)

    def __del__(self) -> None:
        self.release()
