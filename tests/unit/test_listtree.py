"""The list B+tree (agent/listtree.py) against a plain Python list, and its costs in records.

The model is `ops.apply_op("list", ...)` itself: the op's one meaning, which every app replica
keeps applying to plain lists, so the agent's tree and the apps' lists cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from superstatic_agent.listtree import (
    LIST_FANOUT_MAX,
    LIST_LEAF_BYTES_MAX,
    LIST_LEAF_ITEMS_MAX,
    ListCorrupt,
    ListHeader,
    ListTree,
    MemoryChunkStore,
)

from superstatic.protocol import codec, ops


class CountingStore(MemoryChunkStore):
    """Counts the record reads, writes and deletes a tree makes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = self.writes = self.deletes = 0

    def get(self, chunk_id: int) -> bytes | None:
        self.reads += 1
        return super().get(chunk_id)

    def put(self, chunk_id: int, data: bytes) -> None:
        self.writes += 1
        super().put(chunk_id, data)

    def delete(self, chunk_id: int) -> None:
        self.deletes += 1
        super().delete(chunk_id)

    def reset(self) -> None:
        self.reads = self.writes = self.deletes = 0


# Values as the state machine hands them over: wire form, of very different encoded sizes (so
# the byte limit splits leaves as well as the item limit).
VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=40),
    st.binary(max_size=60),
    st.none(),
    st.tuples(st.integers(0, 9), st.text(max_size=3)),
    st.sampled_from([codec.Ref("a1"), codec.Ref("b2")]),
)
VALUE_LISTS = st.lists(VALUES, max_size=40)


class ListMachine(RuleBasedStateMachine):
    """Random splices / extends / clears / reads on a tree and on a plain list; the tree is
    rebuilt from its header's wire form before every step, as the state machine would."""

    limits: dict[str, int] = {}

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryChunkStore()
        self.model: list[Any] = []
        self.wire = ListHeader.empty().to_wire()
        self.version = 1

    def tree(self) -> ListTree:
        return ListTree(self.store, ListHeader.from_wire(self.wire), **self.limits)

    def _write(self, tree: ListTree) -> None:
        self.wire = tree.header.to_wire()
        self.version += 1

    @rule(values=VALUE_LISTS)
    def create(self, values: list[Any]) -> None:
        # A second list in a store of its own: the bulk build against the model.
        store = MemoryChunkStore()
        header = ListTree.create(store, values, self.version, **self.limits)
        tree = ListTree(store, header, **self.limits)
        tree.check(store.records)
        assert list(tree.iter_values()) == values

    @rule(data=st.data(), values=VALUE_LISTS)
    def splice(self, data: st.DataObject, values: list[Any]) -> None:
        n = len(self.model)
        # Mostly in range, sometimes negative, reversed or past the end (apply_op refuses a
        # stop past the end, and slices the rest the Python way).
        start = data.draw(st.integers(-n - 2, n + 2), label="start")
        stop = data.draw(
            st.one_of(st.integers(-n - 2, n + 2), st.integers(min(max(start, 0), n), n)),
            label="stop",
        )
        tree = self.tree()
        op = ["splice", "L", start, stop, values]
        try:
            ops.apply_op("list", self.model, op)
        except ops.OpError:
            before = dict(self.store.records)
            with pytest.raises(ops.OpError, match="is outside a list of length"):
                tree.splice(start, stop, values, self.version)
            assert self.store.records == before, "a refused splice wrote nothing"
            return
        tree.splice(start, stop, values, self.version)
        self._write(tree)

    @rule(values=VALUE_LISTS)
    def extend(self, values: list[Any]) -> None:
        tree = self.tree()
        ops.apply_op("list", self.model, ["extend", "L", values])
        tree.extend(values, self.version)
        self._write(tree)

    @rule(data=st.data())
    def delete_run(self, data: st.DataObject) -> None:
        # Long deletions cut across many subtrees: the case that leaves chains of only
        # children along both edges of the cut.
        n = len(self.model)
        start = data.draw(st.integers(0, n), label="start")
        stop = data.draw(st.integers(start, n), label="stop")
        tree = self.tree()
        del self.model[start:stop]
        tree.splice(start, stop, [], self.version)
        self._write(tree)

    @rule(values=st.lists(st.integers(0, 1000), min_size=50, max_size=400))
    def extend_many(self, values: list[int]) -> None:
        tree = self.tree()
        self.model.extend(values)
        tree.extend(values, self.version)
        self._write(tree)

    @precondition(lambda self: len(self.model) < 50)
    @rule()
    def clear(self) -> None:
        tree = self.tree()
        ops.apply_op("list", self.model, ["clear", "L"])
        tree.clear(self.version)
        self._write(tree)
        assert not self.store.records

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        n = len(self.model)
        i = data.draw(st.integers(-n - 2, n + 1), label="index")
        if -n <= i < n:
            assert self.tree().get(i) == self.model[i]
        else:
            with pytest.raises(IndexError):
                self.tree().get(i)

    @rule(data=st.data())
    def slice(self, data: st.DataObject) -> None:
        n = len(self.model)
        start = data.draw(st.integers(-n - 2, n + 2), label="start")
        stop = data.draw(st.integers(-n - 2, n + 2), label="stop")
        assert self.tree().slice(start, stop) == self.model[start:stop]

    @invariant()
    def same_list(self) -> None:
        tree = self.tree()
        tree.check(self.store.records)
        assert len(tree) == len(self.model)
        assert list(tree.iter_values()) == self.model
        assert ListHeader.from_wire(tree.header.to_wire()) == tree.header


class TinyLeaves(ListMachine):
    # Leaf 4 / fanout 4: many levels from a few hundred values; every split and merge path.
    limits = {"leaf_items_max": 4, "fanout_max": 4}


class ByteBoundLeaves(ListMachine):
    # A 48-byte leaf: most leaves split on bytes, and a 60-byte value is a leaf of its own.
    limits = {"leaf_items_max": 8, "leaf_bytes_max": 48, "fanout_max": 5}


class DefaultLimits(ListMachine):
    limits = {}


_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestTinyLeaves = TinyLeaves.TestCase
TestTinyLeaves.settings = _SETTINGS
TestByteBoundLeaves = ByteBoundLeaves.TestCase
TestByteBoundLeaves.settings = _SETTINGS
TestDefaultLimits = DefaultLimits.TestCase
TestDefaultLimits.settings = settings(_SETTINGS, max_examples=25)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.text(max_size=200), max_size=300),
    items_max=st.integers(2, 12),
    bytes_max=st.integers(1, 300),
    fanout_max=st.integers(4, 9),
)
def test_any_limits_hold_after_random_edits(
    values: list[str], items_max: int, bytes_max: int, fanout_max: int
) -> None:
    """Leaves within both limits (a value over the byte limit alone), for any limits."""
    limits = {"leaf_items_max": items_max, "leaf_bytes_max": bytes_max, "fanout_max": fanout_max}
    store = MemoryChunkStore()
    tree = ListTree(store, ListTree.create(store, values, 1, **limits), **limits)
    tree.check(store.records)
    model = list(values)
    for step, (start, stop) in enumerate([(0, 0), (len(model) // 3, len(model) // 2), (1, 1)]):
        start, stop = min(start, len(model)), min(stop, len(model))
        insert = values[: step * 7]
        model[start:stop] = insert
        tree.splice(start, stop, insert, 2 + step)
        tree.check(store.records)
    assert list(tree.iter_values()) == model


def test_leaf_bytes_are_the_encoded_values() -> None:
    """The byte limit counts exactly sum(len(codec.dumps(v))): a leaf record is that plus its
    few bytes of framing, and a single value over the limit is stored alone."""
    store = MemoryChunkStore()
    big = "x" * 100
    values = ["a", big, "b", "c", 7, big, big]
    limits = {"leaf_items_max": 8, "leaf_bytes_max": 60, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, values, 3, **limits), **limits)
    tree.check(store.records)
    leaves = [codec.loads(data) for data in store.records.values() if codec.loads(data)[0] == 0]
    for _kind, version, leaf_values in leaves:
        assert version == 3
        if big in leaf_values:
            assert leaf_values == [big]
        else:
            assert sum(len(codec.dumps(v)) for v in leaf_values) <= 60
    assert list(tree.iter_values()) == values


def test_rewritten_leaves_carry_the_splice_version() -> None:
    """Leaves keep the version of their last change (kept: one int per 256 values, and it
    shows in an inspection which part of a long list an entry touched)."""
    store = MemoryChunkStore()
    limits = {"leaf_items_max": 4, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, list(range(1000)), 1, **limits), **limits)
    tree.splice(500, 501, ["new"], 7)
    tree.check(store.records)
    versions = [codec.loads(d)[1] for d in store.records.values() if codec.loads(d)[0] == 0]
    assert set(versions) == {1, 7}
    assert 1 <= versions.count(7) <= 2  # the leaf changed (and its split half)
    assert tree.get(500) == "new"


def test_refused_splice_and_empty_splice_write_nothing() -> None:
    store = CountingStore()
    tree = ListTree(store, ListTree.create(store, list(range(10)), 1))
    before, header = dict(store.records), tree.header
    store.reset()
    with pytest.raises(ops.OpError, match=r"splice \[3:11\] is outside a list of length 10"):
        tree.splice(3, 11, ["x"], 2)
    with pytest.raises(ops.OpError, match="an int of 80 bits"):  # never printed whole
        tree.splice(0, 2**79, [], 2)
    tree.splice(4, 4, [], 2)  # changes nothing
    tree.splice(9, 2, [], 2)  # a stop before the start is the start: nothing
    assert store.records == before and tree.header == header
    assert store.writes == store.deletes == 0


def test_a_value_that_cannot_be_encoded_writes_nothing() -> None:
    """Records are encoded before any is written: a failing call leaves the store and the
    header as they were (the state machine turns the ProtocolError into an error outcome)."""
    store = CountingStore()
    limits = {"leaf_items_max": 4, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, list(range(50)), 1, **limits), **limits)
    before, header = dict(store.records), tree.header
    store.reset()
    for start, stop in ((0, 0), (10, 30), (50, 50)):
        with pytest.raises(codec.ProtocolError, match="not storable"):
            tree.splice(start, stop, [1, 2, 3, 4, 5, {"a set", "is not a wire value"}], 2)
    assert store.records == before and tree.header == header
    assert store.writes == store.deletes == 0
    empty = ListTree(MemoryChunkStore(), ListHeader.empty())
    with pytest.raises(codec.ProtocolError):
        empty.extend([object()], 2)
    assert empty.header == ListHeader.empty()


def test_runs_are_the_leaves_in_order() -> None:
    store = MemoryChunkStore()
    limits = {"leaf_items_max": 4, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, list(range(30)), 1, **limits), **limits)
    runs = list(tree.iter_runs())
    assert [v for run in runs for v in run] == list(range(30))
    assert len(runs) == sum(1 for d in store.records.values() if codec.loads(d)[0] == 0)
    assert all(1 <= len(run) <= 4 for run in runs)


def test_python_slice_semantics_as_apply_op() -> None:
    """Negative and reversed positions mean what list slice assignment means."""
    for start, stop in [(-3, -1), (-20, 2), (5, 2), (7, -8), (-1, 10), (10, 10)]:
        model = list(range(10))
        store = MemoryChunkStore()
        limits = {"leaf_items_max": 2, "fanout_max": 4}
        tree = ListTree(store, ListTree.create(store, model, 1, **limits), **limits)
        ops.apply_op("list", model, ["splice", "L", start, stop, ["a", "b"]])
        tree.splice(start, stop, ["a", "b"], 2)
        tree.check(store.records)
        assert list(tree.iter_values()) == model, (start, stop)


def test_clear_deletes_every_record() -> None:
    store = CountingStore()
    limits = {"leaf_items_max": 4, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, list(range(300)), 1, **limits), **limits)
    ids = set(tree.chunk_ids())
    assert ids == set(store.records)
    store.reset()
    tree.clear(2)
    assert store.records == {} and store.deletes == len(ids)
    assert tree.header == ListHeader.empty() and list(tree.iter_values()) == []
    tree.extend(["again"], 3)
    tree.check(store.records)
    assert tree.slice(0, 5) == ["again"]


def test_appends_fill_leaves() -> None:
    """Appending one value at a time leaves full leaves behind (not halves)."""
    store = MemoryChunkStore()
    tree = ListTree(store, ListHeader.empty())
    for i in range(10 * LIST_LEAF_ITEMS_MAX + 1):
        tree.extend([i], i + 1)
    tree.check(store.records)
    leaves = [len(codec.loads(d)[2]) for d in store.records.values() if codec.loads(d)[0] == 0]
    assert sorted(leaves) == [1] + [LIST_LEAF_ITEMS_MAX] * 10


def test_middle_inserts_split_in_halves() -> None:
    store = MemoryChunkStore()
    limits = {"leaf_items_max": 16, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, list(range(16)), 1, **limits), **limits)
    tree.splice(8, 8, ["mid"], 2)
    tree.check(store.records)
    leaves = sorted(
        len(codec.loads(d)[2]) for d in store.records.values() if codec.loads(d)[0] == 0
    )
    assert leaves == [8, 9]


# ----------------------------------------------------------------------------- corruption


def _tree_with_leaves() -> tuple[MemoryChunkStore, ListTree, int]:
    store = MemoryChunkStore()
    limits = {"leaf_items_max": 4, "fanout_max": 4}
    tree = ListTree(store, ListTree.create(store, list(range(40)), 1, **limits), **limits)
    leaf = next(c for c, d in store.records.items() if codec.loads(d)[0] == 0)
    return store, tree, leaf


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (b"\xffSECRET-BYTES", "does not decode as CBOR"),
        (codec.dumps([2, "SECRET-BYTES"]), "is neither"),
        (codec.dumps([0, -1, [1]]), "a leaf has a version"),
        (codec.dumps([0, 1, []]), "a leaf has a version"),
        (codec.dumps([1, [[1, 1]]]), "is an inner node where a leaf belongs"),
        (codec.dumps([0, 1, "SECRET-BYTES"]), r"a leaf is \[0, version"),
    ],
)
def test_a_damaged_chunk_is_named_never_quoted(damage: bytes, reason: str) -> None:
    store, tree, leaf = _tree_with_leaves()
    store.records[leaf] = damage
    before = dict(store.records)
    with pytest.raises(ListCorrupt, match=rf"list chunk {leaf}: {reason}") as caught:
        list(tree.iter_values())
    assert "SECRET" not in str(caught.value) and caught.value.chunk_id == leaf
    with pytest.raises(ListCorrupt):
        tree.splice(0, 40, [], 2)  # reaches every leaf: fails, and writes nothing
    assert store.records == before


def test_a_count_that_lies_is_caught() -> None:
    store, tree, _leaf = _tree_with_leaves()
    root = tree.header.root
    kind, entries = codec.loads(store.records[root])
    entries[0][1] += 1
    store.records[root] = codec.dumps([kind, entries])
    with pytest.raises(AssertionError, match="counts"):
        tree.check(store.records)
    with pytest.raises(ListCorrupt, match="counts"):
        list(tree.iter_values())


def test_a_missing_or_orphan_chunk_is_caught() -> None:
    store, tree, leaf = _tree_with_leaves()
    store.records[9999] = store.records[leaf]
    with pytest.raises(AssertionError, match="the store holds records not in the tree"):
        tree.check(store.records)
    del store.records[9999]
    del store.records[leaf]
    with pytest.raises(ListCorrupt, match=f"list chunk {leaf}: is missing"):
        tree.check(store.records)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ([1, 2, 3], r"is \[length, root, height, next_chunk_id\]"),
        ("nope", r"is \[length, root, height"),
        ([0, 0, 0, 0], "next_chunk_id is 0"),
        ([1, 0, 0, 5], "an empty list has root 0"),
        ([0, 3, 0, 5], "an empty list has root 0"),
        ([5, 7, 0, 5], "root is not below next_chunk_id"),
        ([5, 1, 65, 5], "height is above LIST_HEIGHT_MAX"),
        ([5, 1, 0, 2**70], "next_chunk_id is not an int"),
        ([True, 1, 0, 5], "length is not an int"),
    ],
)
def test_header_from_wire_is_validated(wire: Any, reason: str) -> None:
    with pytest.raises(ListCorrupt, match=f"list header: {reason}"):
        ListHeader.from_wire(wire)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="leaf_items_max"):
        ListTree(MemoryChunkStore(), ListHeader.empty(), leaf_items_max=1)
    with pytest.raises(ValueError, match="fanout_max"):
        ListTree(MemoryChunkStore(), ListHeader.empty(), fanout_max=3)
    with pytest.raises(ValueError, match="leaf_bytes_max"):
        ListTree(MemoryChunkStore(), ListHeader.empty(), leaf_bytes_max=0)


# ----------------------------------------------------------------------------- costs


def _costs(store: CountingStore, action: Any) -> tuple[int, int, int]:
    store.reset()
    action()
    return store.reads, store.writes, store.deletes


def test_costs_are_per_level_not_per_element() -> None:
    """Records read and written by get(i), a middle insert, a middle delete and an append in
    a 1,000,000-element list, next to the same in a 1,000-element one: they grow with the
    height (2 levels there, 3 here), not with the length."""
    assert LIST_FANOUT_MAX == 256 and LIST_LEAF_BYTES_MAX == 64 * 1024
    results = {}
    for n in (1000, 1_000_000):
        store = CountingStore()
        header = ListTree.create(store, list(range(n)), 1)
        tree = ListTree(store, header)
        levels = header.height + 1
        get = _costs(store, lambda t=tree, n=n: t.get(n // 2 + 17))
        assert get == (levels, 0, 0), (n, get)
        insert = _costs(store, lambda t=tree, n=n: t.splice(n // 2, n // 2, ["new"], 2))
        # The path read once; the leaf written as two halves (it was full) and each inner
        # node on the path rewritten: nothing else.
        assert insert[0] == levels and insert[1] == levels + 1 and insert[2] == 0, insert
        delete = _costs(store, lambda t=tree, n=n: t.splice(n // 2, n // 2 + 1, [], 3))
        # A shrink may read one neighbour per level to see whether it could merge.
        assert delete[0] <= 3 * levels and delete[1] <= 2 * levels, delete
        append = _costs(store, lambda t=tree: t.extend(["end"], 4))
        assert append[0] <= levels and append[1] <= levels + 1, append
        assert tree.get(n // 2) == n // 2 and tree.get(-1) == "end"
        tree.check(store.records)
        results[n] = (header.height, len(store.records), get, insert, delete, append)
    # 1,000: 4 leaves under a root. 1,000,000: 3,907 full leaves under 16 inner nodes under
    # the root (one more leaf now: the insert split a full one).
    assert results[1000][:2] == (1, 4 + 1 + 1)
    assert results[1_000_000][:2] == (2, 3907 + 1 + 16 + 1)
