"""Review 25: the endpoints a stranger hands us (JOIN, HELLO) are dialled and logged, so the
codec admits only printable text: a newline forged log lines ("connected to member x at
tcp://h:1<newline>... agent a INFO ..."), and a NUL cut the endpoint zmq dials short of the one
logged and kept."""

from __future__ import annotations

import pytest
from superstatic_agent import peer_codec

from superstatic.protocol.errors import ProtocolError

UNPRINTABLE = [
    "tcp://127.0.0.1:9\n2026-12-07 12:00:00 agent a INFO became leader in term 9",
    "tcp://127.0.0.1:9\r",
    "tcp://127.0.0.1:9\x00.evil",
    "ipc:///tmp/\x1b[2Jsock",
    "tcp://127.0.0.1:9\u202e",  # right-to-left override: the log shows another address
    "ipc:///tmp/a\u2028b",  # a line separator
]


@pytest.mark.parametrize("address", UNPRINTABLE)
def test_a_hello_or_join_address_must_be_printable(address: str) -> None:
    hello = peer_codec.encode_hello(peer_codec.Hello("x", "a", 3, address))
    with pytest.raises(ProtocolError, match="HELLO address") as caught:
        peer_codec.decode(hello)
    assert address not in str(caught.value)  # never echoed back
    join = peer_codec.encode_join("x", address)
    with pytest.raises(ProtocolError, match="JOIN address"):
        peer_codec.decode(join)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "ipc:///tmp/agent ü 1.sock"])
def test_printable_endpoints_still_pass(address: str) -> None:
    hello = peer_codec.Hello("x", "a", 3, address)
    assert peer_codec.decode(peer_codec.encode_hello(hello)) == hello
