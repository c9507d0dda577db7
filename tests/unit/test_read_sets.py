"""What a transaction records as read (model-2 bodies, docs/data-model-v2.md section 4), per
read protocol of every proxy: keys read one by one, READ_SHAPE for membership and length,
READ_CONTENT for whole reads; the body sent carries them with the read base index; NaN keys are
refused at assignment; entries applied under a body doom it only when they touched what it read.
"""

from __future__ import annotations

import contextlib
import decimal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.heap_inproc import partial_session
from support.inproc import InprocCluster

import superstatic
from superstatic.objects import replica as replica_module
from superstatic.objects import txn as txn_module
from superstatic.objects.node import node_of
from superstatic.objects.session import Session
from superstatic.protocol import codec
from superstatic.protocol import ops as ops_module
from superstatic.protocol.ops import READ_CONTENT, READ_SHAPE

TIMEOUT_S = 30
SHAPE_ONLY = (READ_SHAPE, [])
CONTENT_ONLY = (READ_CONTENT, [])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@pytest.fixture
def session(cluster: InprocCluster) -> Session:
    return cluster.session()


@superstatic.register(name="test_read_sets.Item")
class Item:
    kind = "plain"  # an immutable class default
    tags: list[str] = []  # a mutable one (guarded)

    def __init__(self) -> None:
        self.x = 1
        self.y = 2

    @property
    def total(self) -> int:
        return self.x + self.y

    def describe(self) -> str:
        return "item"


def reads_of(session: Session, read: Callable[[], Any]) -> dict[str, tuple[int, list[Any]]]:
    """The read set of a body that runs `read` (exceptions of the read are part of it)."""
    captured: list[dict[str, tuple[int, list[Any]]]] = []

    def body() -> None:
        txn = txn_module.current()
        assert txn is not None
        with contextlib.suppress(KeyError, AttributeError, IndexError, ValueError):
            read()
        captured.append(txn.read_set())

    session.run(body)
    return captured[-1]


def oid(value: Any) -> str:
    found = node_of(value)
    assert found is not None
    return found.oid


def only(value: Any, reads: dict[str, tuple[int, list[Any]]]) -> tuple[int, list[Any]]:
    """The read of `value`'s node, the only node read; content implies shape, so a content
    read is READ_CONTENT whether or not the shape flag is set too."""
    assert list(reads) == [oid(value)], reads
    flags, keys = reads[oid(value)]
    return (READ_CONTENT if flags & READ_CONTENT else flags), keys


@pytest.fixture
def d(session: Session) -> Any:
    found = session.root("d", dict)
    found.update({"a": 1, "b": 2, 1: "one"})
    return found


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda d: d["a"], (0, ["a"])),
        (lambda d: d["missing"], (0, ["missing"])),
        (lambda d: d.get("a"), (0, ["a"])),
        (lambda d: d.get("missing", 0), (0, ["missing"])),
        (lambda d: "a" in d, (0, ["a"])),
        (lambda d: "a" in d.keys(), (0, ["a"])),  # noqa: SIM118 (the keys view's own `in`)
        (lambda d: (d["a"], d["a"], d.get("a"), "a" in d), (0, ["a"])),  # once per node
        (lambda d: (d[1], d[1.0], d.get(True)), (0, [1])),  # one key as Python matches it
        (lambda d: (d["a"], d["b"]), (0, ["a", "b"])),
        (lambda d: len(d), SHAPE_ONLY),
        (lambda d: bool(d), SHAPE_ONLY),
        (lambda d: list(d), SHAPE_ONLY),
        (lambda d: list(reversed(d)), SHAPE_ONLY),
        (lambda d: list(d.keys()), SHAPE_ONLY),
        (lambda d: (len(d), d["a"]), (READ_SHAPE, ["a"])),
        (lambda d: list(d.values()), CONTENT_ONLY),
        (lambda d: list(d.items()), CONTENT_ONLY),
        (lambda d: d == {"a": 1}, CONTENT_ONLY),
        (lambda d: repr(d), CONTENT_ONLY),
        (lambda d: d.copy(), CONTENT_ONLY),
        (lambda d: superstatic.plain(d), CONTENT_ONLY),
        (lambda d: (d["a"], list(d.values()), d["b"]), CONTENT_ONLY),  # content covers keys
        (lambda d: d.pop("a"), (0, ["a"])),
        (lambda d: d.pop("missing", None), (0, ["missing"])),
        (lambda d: d.__delitem__("b"), (0, ["b"])),
        (lambda d: d.setdefault("c", 3), (0, ["c"])),
        (lambda d: d.popitem(), CONTENT_ONLY),
    ],
)
def test_dict_reads(session: Session, d: Any, read: Any, expected: Any) -> None:
    assert only(d, reads_of(session, lambda: read(d))) == expected


def test_blind_dict_writes_record_no_read(session: Session, d: Any) -> None:
    def write() -> None:
        d["a"] = 5
        d.update({"z": 1})

    assert reads_of(session, write) == {}


@pytest.fixture
def lst(session: Session) -> Any:
    found = session.root("lst", list)
    found.extend([1, 2, 3])
    return found


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda lst: lst[0], CONTENT_ONLY),
        (lambda lst: lst[-1:], CONTENT_ONLY),
        (lambda lst: 2 in lst, CONTENT_ONLY),
        (lambda lst: list(lst), CONTENT_ONLY),
        (lambda lst: lst.index(2), CONTENT_ONLY),
        (lambda lst: lst.count(2), CONTENT_ONLY),
        (lambda lst: lst == [1, 2, 3], CONTENT_ONLY),
        (lambda lst: len(lst), SHAPE_ONLY),
        (lambda lst: bool(lst), SHAPE_ONLY),
        (lambda lst: lst.__setitem__(0, 9), SHAPE_ONLY),
        (lambda lst: lst.insert(0, 9), SHAPE_ONLY),
        (lambda lst: lst.__delitem__(0), SHAPE_ONLY),
        (lambda lst: lst.__delitem__(slice(0, 2)), SHAPE_ONLY),
        (lambda lst: lst.__delitem__(slice(0, 3, 2)), CONTENT_ONLY),
        (lambda lst: lst.pop(), CONTENT_ONLY),
        (lambda lst: lst.remove(2), CONTENT_ONLY),
        (lambda lst: lst.sort(), CONTENT_ONLY),
    ],
)
def test_list_reads(session: Session, lst: Any, read: Any, expected: Any) -> None:
    assert only(lst, reads_of(session, lambda: read(lst))) == expected


def test_list_append_is_blind(session: Session, lst: Any) -> None:
    assert reads_of(session, lambda: lst.append(4)) == {}


@pytest.fixture
def s(session: Session) -> Any:
    found = session.root("s", set)
    found.update({1, "a", (1, 2)})
    return found


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda s: "a" in s, (0, ["a"])),
        (lambda s: (1, 2) in s, (0, [(1, 2)])),
        (lambda s: len(s), SHAPE_ONLY),
        (lambda s: bool(s), SHAPE_ONLY),
        (lambda s: sorted(s, key=repr), SHAPE_ONLY),
        (lambda s: s == {1}, CONTENT_ONLY),
        (lambda s: s.issubset({1}), CONTENT_ONLY),
        (lambda s: s | {9}, CONTENT_ONLY),
        (lambda s: s.remove("a"), (0, ["a"])),
        (lambda s: s.symmetric_difference_update({"a", 7}), (0, ["a", 7])),
        (lambda s: s.pop(), CONTENT_ONLY),
    ],
)
def test_set_reads(session: Session, s: Any, read: Any, expected: Any) -> None:
    reads = reads_of(session, lambda: read(s))
    flags, keys = only(s, reads)
    assert (flags, sorted(keys, key=repr)) == (expected[0], sorted(expected[1], key=repr))


def test_blind_set_writes_record_no_read(session: Session, s: Any) -> None:
    def write() -> None:
        s.add(5)
        s.discard(1)
        s.update({6})

    assert reads_of(session, write) == {}


@pytest.fixture
def item(session: Session) -> Any:
    holder = session.root("items", dict)
    holder["i"] = Item()
    return holder["i"]


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda o: o.x, (0, ["x"])),
        (lambda o: o.nothing, (0, ["nothing"])),  # AttributeError: the absence was read
        (lambda o: o.kind, (0, ["kind"])),  # a class default: a read of the attribute
        (lambda o: list(o.tags), (0, ["tags"])),
        (lambda o: o.total, (0, ["x", "y"])),  # a property: the attributes its getter read
        (lambda o: vars(o)["x"], (0, ["x"])),
        (lambda o: "y" in vars(o), (0, ["y"])),
        (lambda o: len(vars(o)), SHAPE_ONLY),
        (lambda o: list(vars(o)), SHAPE_ONLY),
        (lambda o: dict(vars(o).items()), (READ_SHAPE, ["x", "y"])),
        (lambda o: o.__delattr__("y"), (0, ["y"])),
    ],
)
def test_object_reads(session: Session, item: Any, read: Any, expected: Any) -> None:
    assert only(item, reads_of(session, lambda: read(item))) == expected


def test_a_method_lookup_reads_nothing(session: Session, item: Any) -> None:
    assert reads_of(session, lambda: item.describe) == {}


def test_keys_past_the_bound_make_the_node_a_whole_read(
    session: Session, d: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = session.root("other", dict)
    monkeypatch.setattr(txn_module, "TXN_READ_KEYS_MAX", 3)

    def read() -> None:
        _ = other.get("o")
        for key in ("k1", "k2", "k3", "k4"):
            _ = d.get(key)

    reads = reads_of(session, read)
    assert reads[oid(d)] == CONTENT_ONLY  # the key past the bound: the node as a whole
    assert reads[oid(other)] == (0, ["o"])  # others keep theirs


class _Weird:
    """Equal to "a" but not storable: a key read of it cannot travel."""

    def __eq__(self, other: object) -> bool:
        return other == "a"

    def __hash__(self) -> int:
        return hash("a")


def sent_reads(
    session: Session, body: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> ops_module.TxnBody:
    """The decoded body `session` sends for `body` (which must write)."""
    sent: list[bytes] = []
    connection = session.connection
    submit = connection.submit

    def capture(data: bytes, kind: str = "txn") -> Any:
        sent.append(data)
        return submit(data, kind)

    monkeypatch.setattr(connection, "submit", capture)
    session.run(body)
    assert len(sent) == 1
    return ops_module.decode_body(sent[0])


def test_the_body_sent_is_model_2_with_base_and_wire_keys(
    session: Session, d: Any, item: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = session.root("other", dict)
    base = session.replica.applied_index

    def body() -> None:
        other["n"] = d.get("a", 0) + len(d) + item.x + (1 if item in {item: 1} else 0)
        other["ref"] = item  # a stored reference: its node is read (shape)

    sent = sent_reads(session, body, monkeypatch)
    assert sent.model == 2 and sent.base == base
    assert sent.reads[oid(d)] == ops_module.NodeReads(READ_SHAPE, ["a"])
    assert sent.reads[oid(item)] == ops_module.NodeReads(READ_SHAPE, ["x"])
    # "n" written blind; storing a shared reference compares it with the one there (`d[k] +=`
    # on a shared container writes nothing): a read of that key.
    assert sent.reads[oid(other)] == ops_module.NodeReads(0, ["ref"])


def test_keys_that_cannot_travel_make_whole_reads(
    session: Session, d: Any, s: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = session.root("other", dict)

    def body() -> None:
        other["n"] = (_Weird() in d, float("nan") in s, decimal.Decimal("NaN") in s)

    sent = sent_reads(session, body, monkeypatch)
    assert sent.reads[oid(d)] == ops_module.NodeReads(READ_CONTENT, [])
    assert sent.reads[oid(s)] == ops_module.NodeReads(READ_CONTENT, [])


def test_a_shared_object_key_travels_as_a_ref(
    session: Session, item: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_item = session.root("by_item", dict)
    by_item[item] = 1

    def body() -> None:
        by_item[item] = by_item[item] + 1

    sent = sent_reads(session, body, monkeypatch)
    assert sent.reads[oid(by_item)] == ops_module.NodeReads(0, [codec.Ref(oid(item))])
    assert by_item[item] == 2


@pytest.mark.parametrize(
    "key",
    [float("nan"), decimal.Decimal("NaN"), (1, float("nan")), frozenset({float("nan")})],
    ids=["float", "decimal", "in-tuple", "in-frozenset"],
)
def test_nan_keys_and_members_are_refused_at_assignment(
    session: Session, d: Any, s: Any, key: Any
) -> None:
    before = session.replica.applied_index
    with pytest.raises(superstatic.NotStorable, match="NaN"):
        d[key] = 1
    with pytest.raises(superstatic.NotStorable, match="NaN"):
        s.add(key)
    with pytest.raises(superstatic.NotStorable, match="NaN"):
        d["nested"] = {key: 1}
    assert session.replica.applied_index == before  # nothing was sent
    d["value"] = (float("nan"), decimal.Decimal("NaN"))  # as a value NaN is fine
    assert repr(d["value"]) == "(nan, Decimal('NaN'))"


def test_a_signaling_nan_key_fails_like_in_a_plain_dict(session: Session, d: Any) -> None:
    with pytest.raises(TypeError, match="signaling NaN"):
        {}[decimal.Decimal("sNaN")] = 1
    with pytest.raises(TypeError, match="signaling NaN"):
        d[decimal.Decimal("sNaN")] = 1


def test_nan_lookups_behave_like_a_plain_container(session: Session, d: Any, s: Any) -> None:
    nan = float("nan")
    s.discard(nan)  # never a member: nothing to discard, nothing sent
    with pytest.raises(KeyError):
        del d[nan]
    assert nan not in d and d.get(nan) is None


# ------------------------------------------------------------------ stability under a body


def _run_waiting(session: Session, read: Callable[[], Any], write: Callable[[], None]) -> list[Any]:
    """Runs a body that reads, lets `write` commit from another thread, and reads again;
    returns what each run of the body read first."""
    started, go_on = threading.Event(), threading.Event()
    runs: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        runs.append(read())
        if len(runs) == 1:
            started.set()
            assert go_on.wait(TIMEOUT_S)
        read()

    def target() -> None:
        try:
            session.run(body)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    assert started.wait(TIMEOUT_S)
    write()  # applies under the pinned body after PIN_MS_MAX
    go_on.set()
    t.join(TIMEOUT_S)
    assert not errors
    return runs


def _set(d: Any, key: str, value: Any) -> Callable[[], None]:
    return lambda: d.__setitem__(key, value)


def test_stability_is_per_key(session: Session, d: Any) -> None:
    assert _run_waiting(session, lambda: d["a"], _set(d, "b", 20)) == [1]  # another key
    assert _run_waiting(session, lambda: d["a"], _set(d, "a", 10)) == [1, 10]  # this key


def test_stability_of_an_absent_key(session: Session, d: Any) -> None:
    assert _run_waiting(session, lambda: "new" in d, _set(d, "b", 3)) == [False]
    assert _run_waiting(session, lambda: "new" in d, _set(d, "new", 1)) == [False, True]


def test_stability_of_shape_reads(session: Session, d: Any) -> None:
    assert _run_waiting(session, lambda: len(d), _set(d, "a", 5)) == [3]  # an update
    assert _run_waiting(session, lambda: len(d), _set(d, "c", 5)) == [3, 4]  # an insert
    assert _run_waiting(session, lambda: len(d), lambda: d.pop("c")) == [4, 3]  # a delete


def test_stability_of_object_attributes(session: Session, item: Any) -> None:
    assert _run_waiting(session, lambda: item.x, lambda: setattr(item, "y", 5)) == [1]
    assert _run_waiting(session, lambda: item.x, lambda: setattr(item, "x", 5)) == [1, 5]


def test_stability_of_list_reads(session: Session, lst: Any) -> None:
    assert _run_waiting(session, lambda: len(lst), lambda: lst.__setitem__(0, 7)) == [3]
    assert _run_waiting(session, lambda: lst[1], lambda: lst.__setitem__(0, 8)) == [2, 2]
    assert _run_waiting(session, lambda: len(lst), lambda: lst.append(4)) == [3, 4]


def test_an_entry_writing_many_keys_touches_the_node_whole(
    session: Session, d: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "TOUCHED_NODE_KEYS_MAX", 3)
    few = lambda: d.update({"x1": 1, "x2": 2})  # noqa: E731
    many = lambda: d.update({f"y{i}": i for i in range(4)})  # noqa: E731
    assert _run_waiting(session, lambda: d["a"], few) == [1]
    assert _run_waiting(session, lambda: d["a"], many) == [1, 1]  # bounded: conservative


def test_an_exception_from_a_moved_read_reruns_only_if_that_read_moved(
    session: Session, d: Any
) -> None:
    """A body that raised re-runs when what it read had moved by then (its exception came
    from a state that no longer holds), judged key by key."""

    def attempt(write: Callable[[], None]) -> tuple[list[Any], Any]:
        started, go_on = threading.Event(), threading.Event()
        runs: list[Any] = []
        outcome: list[Any] = []

        def body() -> Any:
            value = d["a"]
            runs.append(value)
            if len(runs) == 1:
                started.set()
                assert go_on.wait(TIMEOUT_S)
            if value == 1:
                raise ValueError("a is 1")
            return value

        def target() -> None:
            try:
                outcome.append(session.run(body))
            except ValueError as exc:
                outcome.append(exc)

        t = threading.Thread(target=target)
        t.start()
        assert started.wait(TIMEOUT_S)
        write()  # applies under the pinned body after PIN_MS_MAX
        go_on.set()
        t.join(TIMEOUT_S)
        return runs, outcome[0]

    runs, result = attempt(_set(d, "b", 7))  # another key: the error stands
    assert runs == [1] and isinstance(result, ValueError)
    runs, result = attempt(_set(d, "a", 2))  # the key read: re-run on the new state
    assert runs == [1, 2] and result == 2


def test_a_body_older_than_what_the_replica_keeps_reruns(
    session: Session, d: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "TOUCHED_ITEMS_MAX", 4)

    def writes() -> None:
        for i in range(4):  # none touches "a", but they push the body's base out of the record
            d[f"other{i}"] = i

    assert _run_waiting(session, lambda: d["a"], writes) == [1, 1]
    assert len(session.replica._touched) <= 4


def test_touched_records_are_dropped_when_no_body_runs(session: Session, d: Any) -> None:
    _run_waiting(session, lambda: d["a"], _set(d, "b", 9))
    d["b"] = 10  # no body pinned: nothing recorded, earlier records dropped
    assert not session.replica._touched


# ------------------------------------------------------------------ judged by the state machine


@pytest.fixture(params=["all", "partial"])
def heap(request: pytest.FixtureRequest) -> str:
    """The stale session's replica: whole, or partial (docs/virtual-heap.md): its first reads
    fault nodes in, and conflicts are found the same."""
    return str(request.param)


def _stale(cluster: InprocCluster, heap: str) -> Session:
    if heap == "partial":
        return partial_session(cluster, held=True)
    return cluster.session(held=True)


def _stale_run(
    cluster: InprocCluster,
    heap: str,
    setup: Callable[[Session], None],
    read: Callable[[Any], Any],
    write: Callable[[Any], None],
) -> tuple[list[Any], Any]:
    """A held (stale) session runs a body that reads the "probe" root with `read` and writes
    "seen", after a fresh session committed `write` it has not applied: the reads of each run
    of the body, and the probe's final state. Deterministic: only the state machine can tell
    the body its reads moved."""
    fresh = cluster.session()
    setup(fresh)
    stale = _stale(cluster, heap)
    stale.sync()
    stale_probe = stale.root("probe", dict)
    len(stale_probe)  # held from here (a partial replica loads it now): then it goes stale
    write(fresh.root("probe", dict))
    runs: list[Any] = []

    def body() -> None:
        seen = read(stale_probe)
        runs.append(seen)
        stale_probe["seen"] = repr(seen)

    stale.run(body)
    return runs, superstatic.plain(stale_probe)


def _probe(**items: Any) -> Callable[[Session], None]:
    return lambda session: session.root("probe", dict).update(items)


def test_writers_of_other_keys_do_not_conflict(cluster: InprocCluster, heap: str) -> None:
    runs, state = _stale_run(
        cluster, heap, _probe(a=1, b=1), lambda d: d["a"], lambda d: d.__setitem__("b", 2)
    )
    assert runs == [1] and state["b"] == 2 and state["seen"] == "1"


def test_a_writer_of_the_key_read_conflicts(cluster: InprocCluster, heap: str) -> None:
    runs, _state = _stale_run(
        cluster, heap, _probe(a=1), lambda d: d["a"], lambda d: d.__setitem__("a", 2)
    )
    assert runs == [1, 2]


def test_an_insert_of_a_key_read_as_absent_conflicts(cluster: InprocCluster, heap: str) -> None:
    runs, _state = _stale_run(
        cluster, heap, _probe(a=1), lambda d: "k" in d, lambda d: d.__setitem__("k", 1)
    )
    assert runs == [False, True]


def test_a_delete_of_a_key_read_conflicts(cluster: InprocCluster, heap: str) -> None:
    runs, _state = _stale_run(
        cluster, heap, _probe(a=1, k=1), lambda d: d.get("k"), lambda d: d.pop("k")
    )
    assert runs == [1, None]


def test_length_vs_update_and_insert(cluster: InprocCluster, heap: str) -> None:
    runs, _state = _stale_run(cluster, heap, _probe(a=1), len, lambda d: d.__setitem__("a", 2))
    assert runs == [1]  # an update leaves the length
    # (the same probe: "a" and the first body's "seen")
    runs, _state = _stale_run(cluster, heap, _probe(a=1), len, lambda d: d.__setitem__("b", 2))
    assert runs == [2, 3]  # an insert does not


def test_values_read_vs_update(cluster: InprocCluster, heap: str) -> None:
    runs, _state = _stale_run(
        cluster, heap, _probe(a=1), lambda d: sorted(d.values()), lambda d: d.__setitem__("a", 2)
    )
    assert runs == [[1], [2]]


def test_numeric_forms_are_one_key_at_the_leader(cluster: InprocCluster, heap: str) -> None:
    runs, state = _stale_run(
        cluster, heap, _probe(), lambda d: d.get(1.0), lambda d: d.__setitem__(True, "t")
    )
    assert runs == [None, "t"]
    assert state == {1: "t", "seen": "'t'"}
    assert [type(k) for k in state] == [bool, str]  # the first key object is kept, as in Python


def test_an_attribute_read_vs_a_write_of_another_one(cluster: InprocCluster, heap: str) -> None:
    fresh = cluster.session()
    fresh.root("items", dict)["i"] = Item()
    stale = _stale(cluster, heap)
    stale.sync()
    mine = stale.root("items", dict)["i"]
    fresh.root("items", dict)["i"].y = 20
    runs: list[int] = []

    def body() -> None:
        runs.append(mine.x)
        mine.x = mine.x + 1

    stale.run(body)
    assert runs == [1] and (mine.x, mine.y) == (2, 20)
    fresh.root("items", dict)["i"].x = 10
    runs.clear()
    stale.run(body)
    assert runs == [2, 10] and mine.x == 11


def test_write_skew_is_prevented(cluster: InprocCluster, heap: str) -> None:
    """Two withdrawals, each checking the sum of both accounts and writing only its own: each
    reads the key the other writes, so the second conflicts and re-runs on the first's result
    (snapshot isolation alone would let both through and break the invariant)."""
    fresh = cluster.session()
    fresh.root("accounts", dict).update({"x": 50, "y": 50})
    stale = _stale(cluster, heap)
    stale.sync()
    runs: list[int] = []

    def withdraw(accounts: Any, key: str) -> Callable[[], None]:
        def body() -> None:
            runs.append(accounts["x"] + accounts["y"])
            if accounts["x"] + accounts["y"] >= 100:
                accounts[key] -= 100

        return body

    stale_accounts = stale.root("accounts", dict)
    len(stale_accounts)  # held from here (a partial replica loads it now): then it goes stale
    fresh.run(withdraw(fresh.root("accounts", dict), "x"))
    stale.run(withdraw(stale_accounts, "y"))
    assert runs == [100, 100, 0]
    assert superstatic.plain(stale.root("accounts", dict)) == {"x": -50, "y": 50}
