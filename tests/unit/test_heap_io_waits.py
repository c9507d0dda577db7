"""client/heap_io.py: a key load stays asked, in the key's live form, across every path that asks
it again (a socket not ready, an ERROR answer, a resubscription), and its answer settles it
whatever form the agent echoes the key in. Driven with a fake I/O state: which frames go out
and when is what is tested, not the socket."""

from __future__ import annotations

import datetime
import enum
from typing import Any

import pytest
from support.heap_io_fake import setup as _setup
from support.heap_io_fake import turn as _turn

import superstatic
from superstatic.client.stream import Loaded
from superstatic.protocol import codec, wire


@superstatic.register(name="tests.heap_io_waits.Level")
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@superstatic.register(name="tests.heap_io_waits.Color")
class Color(enum.Enum):
    RED = "red"


OID = "d1"
KEYS = [
    7,
    (3, "x"),
    datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC),
    Level.HIGH,
    Color.RED,
]


def _asked_keys(body: dict[str, Any]) -> list[Any]:
    return [key for _oid, keys in codec.loads(body["keys"]) for key in keys]


@pytest.mark.parametrize("key", KEYS, ids=[type(k).__name__ for k in KEYS])
def test_a_key_load_refused_then_resubscribed_is_asked_again(key: Any) -> None:
    heap, io, _replica = _setup()
    heap.request([], [(OID, [key])], False)
    _turn(heap, io)
    assert len(io.loads) == 1
    req_id = io.next_req - 1
    heap.on_error(io, req_id, {"code": wire.ErrorCode.BAD_REQUEST, "message": "no such sub"})  # type: ignore[arg-type]
    _turn(heap, io)
    assert len(io.loads) == 2, "the key was not asked again on the new subscription"
    assert len(_asked_keys(io.loads[1])) == 1, "the key was asked twice in one LOAD"
    assert _asked_keys(io.loads[1]) == _asked_keys(io.loads[0])


@pytest.mark.parametrize("key", KEYS, ids=[type(k).__name__ for k in KEYS])
def test_a_key_load_the_socket_refused_is_sent_next_turn(key: Any) -> None:
    heap, io, _replica = _setup()
    heap.request([], [(OID, [key])], False)
    io.ready = False
    _turn(heap, io)
    io.ready = True
    _turn(heap, io)
    assert len(io.loads) == 1, "a load the socket could not take was lost"


@pytest.mark.parametrize("key", KEYS, ids=[type(k).__name__ for k in KEYS])
def test_an_answered_key_is_settled_and_never_asked_again(key: Any) -> None:
    heap, io, replica = _setup()
    heap.request([], [(OID, [key])], False)
    _turn(heap, io)
    # The agent echoes a key as it decodes from the wire (an enum member as its codec form).
    echoed = codec.loads(codec.dumps(_asked_keys(io.loads[0])[0]))
    loaded = Loaded()
    loaded.key_runs.append((OID, [[echoed, 1]], []))
    heap.on_loaded(loaded)
    assert not heap.asked, "an answered key load is still waiting"
    io.resubscribe("test")
    _turn(heap, io)
    assert len(io.loads) == 1, "an answered key was asked again after a resubscription"
    heap.expire(1e12)
    assert replica.failed == []


@pytest.mark.parametrize("key", KEYS, ids=[type(k).__name__ for k in KEYS])
def test_a_too_large_refusal_fails_the_live_key_wait(key: Any) -> None:
    heap, io, replica = _setup()
    heap.request([], [(OID, [key])], False)
    _turn(heap, io)
    heap.on_error(io, io.next_req - 1, {"code": wire.ErrorCode.TOO_LARGE, "message": "flag"})  # type: ignore[arg-type]
    assert replica.failed == [(OID, key)]
    assert type(replica.failed[0][1]) is type(key)
    assert not heap.asked
    heap.expire(1e12)
    assert replica.failed == [(OID, key)], "the refused wait also timed out"


def test_an_unanswered_key_load_times_out_by_its_live_key() -> None:
    heap, io, replica = _setup()
    heap.request([], [(OID, [Color.RED])], False)
    _turn(heap, io)
    heap.expire(1e12)
    assert replica.failed == [(OID, Color.RED)]
