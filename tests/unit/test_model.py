"""Model test: random mutations applied to plain Python values and to shared ones give equal
states after every step; a replica built afterwards from a snapshot reads the same state."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.compare import same_graph
from support.heap_inproc import partial_session
from support.inproc import InprocCluster

from superstatic.objects.plain_copy import plain
from superstatic.objects.session import Session

keys = st.sampled_from(["a", "b", "c", "d", 1, 2, ("t", 1)])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3), st.binary(max_size=2)
)
hashables = st.one_of(scalars, st.tuples(scalars, scalars))
values = st.recursive(
    hashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
        st.sets(hashables, max_size=3),
        st.tuples(inner),
    ),
    max_leaves=6,
)


def containers(value: Any, kind: type) -> list[Any]:
    """Every container of `kind` reachable in `value` (plain or shared), in a stable order."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, (dict, list, set)) and id(v) not in seen:
            seen.add(id(v))
            if isinstance(v, kind):
                found.append(v)
            items = v.values() if isinstance(v, dict) else v
            for x in list(items):
                walk(x)
        elif isinstance(v, tuple):
            for x in v:
                walk(x)

    walk(value)
    return found


class SharedMatchesPlain(RuleBasedStateMachine):
    """On full replicas; SharedMatchesPlainPartial below runs the same on partial ones."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="superstatic-model-"))
        self.cluster = InprocCluster(self.dir).__enter__()
        self.session = self.new_session()
        self.shared = self.session.root("model", dict)
        self.model: dict[Any, Any] = {}
        self.in_txn = False

    def new_session(self) -> Session:
        return self.cluster.session()

    def teardown(self) -> None:
        try:
            other = self.new_session()  # a replica built afterwards
            assert same_graph(plain(other.root("model", dict)), self.model)
        finally:
            self.cluster.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, op: Any, pick: int, kind: type) -> None:
        """Applies op to the pick-th container of `kind` in the model and in the shared twin
        (the walk order is the same, since the states are equal)."""
        plain_targets = containers(self.model, kind)
        shared_targets = containers(self.shared, kind)
        assert len(plain_targets) == len(shared_targets)
        if not plain_targets:
            return
        i = pick % len(plain_targets)
        expected = error = None
        try:
            expected = op(plain_targets[i])
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            error = type(exc)
        if error is not None:
            try:
                op(shared_targets[i])
            except error:
                return
            raise AssertionError(f"expected {error}")
        got = op(shared_targets[i])
        assert same_graph(plain(got), plain(expected))

    @rule(pick=st.integers(0, 9), key=keys, value=values)
    def dict_set(self, pick: int, key: Any, value: Any) -> None:
        self.both(lambda d: d.__setitem__(key, value), pick, dict)

    @rule(pick=st.integers(0, 9), key=keys)
    def dict_pop(self, pick: int, key: Any) -> None:
        self.both(lambda d: d.pop(key, None), pick, dict)

    @rule(pick=st.integers(0, 9), key=keys, value=values)
    def dict_setdefault(self, pick: int, key: Any, value: Any) -> None:
        self.both(lambda d: d.setdefault(key, value), pick, dict)

    @rule(pick=st.integers(0, 9), other=st.dictionaries(keys, values, max_size=2))
    def dict_update(self, pick: int, other: dict[Any, Any]) -> None:
        self.both(lambda d: d.update(other), pick, dict)

    @rule(pick=st.integers(0, 9), value=values)
    def list_append(self, pick: int, value: Any) -> None:
        self.both(lambda s: s.append(value), pick, list)

    @rule(pick=st.integers(0, 9), index=st.integers(-4, 4), value=values)
    def list_insert(self, pick: int, index: int, value: Any) -> None:
        self.both(lambda s: s.insert(index, value), pick, list)

    @rule(pick=st.integers(0, 9), index=st.integers(-4, 4), value=values)
    def list_setitem(self, pick: int, index: int, value: Any) -> None:
        self.both(lambda s: s.__setitem__(index, value), pick, list)

    @rule(pick=st.integers(0, 9), index=st.integers(-4, 4))
    def list_pop(self, pick: int, index: int) -> None:
        self.both(lambda s: s.pop(index), pick, list)

    @rule(
        pick=st.integers(0, 9),
        start=st.integers(-4, 4),
        stop=st.integers(-4, 4),
        step=st.sampled_from([None, 1, 2, -1]),
        items=st.lists(hashables, max_size=3),
    )
    def list_slice_assign(
        self, pick: int, start: int, stop: int, step: Any, items: list[Any]
    ) -> None:
        self.both(lambda s: s.__setitem__(slice(start, stop, step), items), pick, list)

    @rule(pick=st.integers(0, 9), start=st.integers(-4, 4), stop=st.integers(-4, 4))
    def list_del_slice(self, pick: int, start: int, stop: int) -> None:
        self.both(lambda s: s.__delitem__(slice(start, stop)), pick, list)

    @rule(pick=st.integers(0, 9))
    def list_reverse(self, pick: int) -> None:
        self.both(lambda s: s.reverse(), pick, list)

    @rule(pick=st.integers(0, 9), value=hashables)
    def set_add(self, pick: int, value: Any) -> None:
        self.both(lambda s: s.add(value), pick, set)

    @rule(pick=st.integers(0, 9), value=hashables)
    def set_discard(self, pick: int, value: Any) -> None:
        self.both(lambda s: s.discard(value), pick, set)

    @rule(pick=st.integers(0, 9), other=st.sets(hashables, max_size=3))
    def set_symmetric(self, pick: int, other: set[Any]) -> None:
        self.both(lambda s: s.symmetric_difference_update(other), pick, set)

    @rule(pick=st.integers(0, 9), kind=st.sampled_from([dict, list, set]))
    def clear(self, pick: int, kind: type) -> None:
        self.both(lambda c: c.clear(), pick, kind)

    @precondition(lambda self: len(containers(self.model, list)) >= 2)
    @rule(a=st.integers(0, 9), b=st.integers(0, 9))
    def share_a_list(self, a: int, b: int) -> None:
        """Stores a reference to one existing list inside another: identity, maybe a cycle."""
        plain_lists = containers(self.model, list)
        shared_lists = containers(self.shared, list)
        i, j = a % len(plain_lists), b % len(plain_lists)
        plain_lists[i].append(plain_lists[j])
        shared_lists[i].append(shared_lists[j])
        assert shared_lists[i][-1] is shared_lists[j]

    @rule(key=keys, first=values, second=values)
    def two_writes_in_one_transaction(self, key: Any, first: Any, second: Any) -> None:
        def body() -> None:
            self.shared[key] = first
            self.shared[("pair", 1)] = second

        self.session.run(body)
        self.model[key] = first
        self.model[("pair", 1)] = second

    @invariant()
    def states_equal(self) -> None:
        assert same_graph(plain(self.shared), self.model)


class SharedMatchesPlainPartial(SharedMatchesPlain):
    """The same on partial replicas (the default of connect(): docs/virtual-heap.md) whose
    cache evicts every node nothing references at each sweep: the shared containers the rules
    pick are faulted in again and again, and the replica built afterwards faults in all."""

    def new_session(self) -> Session:
        return partial_session(self.cluster, cache_bytes=1)


# The examples split between the modes (13 + 12): the full replica keeps its CI path, and
# the two together cost what the full one alone did.
for machine, examples in ((SharedMatchesPlain, 13), (SharedMatchesPlainPartial, 12)):
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
test_shared_matches_plain = SharedMatchesPlain.TestCase
test_shared_matches_plain_partial = SharedMatchesPlainPartial.TestCase
