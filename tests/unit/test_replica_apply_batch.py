"""Replica.apply_events over a batch: bodies decoded before the lock, applied in order; a refused
body stops the batch after the events before it, with the error decode_body gives."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from superstatic.client.stream import ReplicaFailed, StreamFeeder
from superstatic.objects import replica as replica_module
from superstatic.objects.replica import Change, Replica
from superstatic.protocol import codec, ops
from superstatic.protocol.errors import ProtocolError


def _replica() -> Replica:
    replica = Replica()
    replica.load_snapshot(
        1,
        [
            ("@roots", 1, "dict", [["kv", codec.Ref("kv")], ["obj", codec.Ref("ob")]]),
            ("kv", 1, "dict", [["a", 1]]),
            ("ob", 1, "obj", ["app.Thing", [["name", "x"]]]),
        ],
    )
    return replica


def _event(index: int, wire_ops: list[Any] | None, body: bytes | None = None) -> tuple[Any, ...]:
    if wire_ops is not None:
        body = ops.encode_txn_v2(index - 1, {}, wire_ops)
    return (index, "c1", index, "ok", body, (), 1_000 + index, ())


def test_a_batch_applies_in_order_and_tells_listeners_once() -> None:
    replica = _replica()
    changes: list[Change] = []
    replica.listeners.append(changes.append)
    replica.apply_events(
        [
            _event(2, [["set", "kv", "a", 2], ["set", "kv", "b", (1, "t")]]),
            _event(3, [["set", "ob", "name", "y"], ["del", "kv", "a"]]),
            (4, None, None, "noop", None, (), 1_010, ()),
            _event(5, [["set", "kv", "c", codec.Ref("ob")]]),
        ]
    )
    kv = replica.nodes["kv"].live
    assert dict(kv) == {"b": (1, "t"), "c": replica.nodes["ob"].ref}
    assert replica.nodes["ob"].live["name"] == "y"
    assert replica.applied_index == 5 and replica.log_time_ms == 1_010  # (the max seen)
    assert [(c.index, c.touched, c.noops) for c in changes] == [(5, frozenset({"kv", "ob"}), 1)]


def test_a_refused_body_stops_the_batch_after_the_events_before_it() -> None:
    replica = _replica()
    garbage = ops.encode_txn_v2(2, {}, [["set", "kv", "a", 1]]) + b"\x00"  # a trailing byte
    with pytest.raises(ProtocolError) as refused:
        replica.apply_events([_event(2, [["set", "kv", "a", 5]]), _event(3, None, garbage)])
    with pytest.raises(ProtocolError) as expected:
        ops.decode_body(garbage)
    assert str(refused.value) == str(expected.value)
    assert replica.applied_index == 2 and replica.nodes["kv"].live["a"] == 5


def test_a_set_that_does_not_fit_its_node_is_refused_as_before() -> None:
    replica = _replica()
    feeder = StreamFeeder(replica)
    body = ops.encode_txn_v2(1, {}, [["set", "ob", "__class__", "x"]])
    frame = {"ev": [[2, "c1", 2, "ok", body, [], 1, []]], "to": 2, "t": 1}
    with pytest.raises(ReplicaFailed, match="dunder"):
        feeder.feed_events(frame)
    assert replica.applied_index == 1


def test_a_long_batch_lets_bodies_take_the_lock_between_chunks(monkeypatch: Any) -> None:
    """The lock is released every EVENTS_PER_LOCK_MAX events."""
    monkeypatch.setattr(replica_module, "EVENTS_PER_LOCK_MAX", 4)
    replica = _replica()
    holds: list[int] = []
    lock = replica.lock

    class Counting:
        def __enter__(self) -> None:
            lock.acquire()
            holds.append(replica.applied_index)

        def __exit__(self, *_exc: Any) -> None:
            lock.release()

    replica.lock = Counting()  # type: ignore[assignment]
    replica.apply_events([_event(i, [["set", "kv", "a", i]]) for i in range(2, 12)])
    assert holds == [1, 5, 9] and replica.applied_index == 11
    assert isinstance(lock, type(threading.RLock()))
