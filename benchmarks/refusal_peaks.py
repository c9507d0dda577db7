"""What refusing a frame with one huge text costs the agent, in process.

    python -m superstatic_bench.refusal_peaks [--peer-mib 60] [--client-mib 15]

Not a test and not part of `superstatic bench`: this builds, by hand, frames whose one text
field is a text of 4-byte UTF-8 characters (the widest str CPython builds, its decoder's
costliest case) and prints, per frame, the Python memory its refusal allocated at its peak
(tracemalloc; the frame itself is built before measuring), this thread's CPU time, and the
refusal's type (docs/data-model-v2.md 8.13 "Bounded", review 27). The frames: a stranger's peer
JOIN whose address is the text, a SNAPSHOT message with it in frm (the fast MSG path reaches it
before giving up), an app's HELLO with it as the client id and a PROPOSE with it before a list.
"""

from __future__ import annotations

import argparse
import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from superstatic_agent import peer_codec

from superstatic.protocol import wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

WIDE = "\U0001f600"


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 1 << 8:
        return bytes([major << 5 | 24, n])
    if n < 1 << 16:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _head(3, len(raw)) + raw


def _arr(*items: bytes) -> bytes:
    return _head(4, len(items)) + b"".join(items)


def _map(pairs: list[tuple[str, bytes]]) -> bytes:
    return _head(5, len(pairs)) + b"".join(_text(key) + value for key, value in pairs)


def _agent_reads(data: bytes) -> None:
    frame = wire.decode(data, wire.CLIENT_TO_AGENT)
    wire.check_client_body(frame, body_bytes_max=8 << 20)


def frames(peer_mib: int, client_mib: int) -> list[tuple[str, bytes, Callable[[bytes], Any]]]:
    huge = _text("tcp://" + WIDE * ((peer_mib << 20) // 4 - 2))
    uint = [_head(0, n) for n in range(24)]
    snapshot = [uint[1], uint[0], uint[9], huge, _text("a"), uint[1], uint[1], uint[1]]
    snapshot += [_head(2, 0), uint[0], b"\xf4", uint[0], _head(2, 0), _arr(uint[1])]
    client = _text(WIDE * ((client_mib << 20) // 4))
    propose = _map([("client", client), ("x", _arr(uint[1]))])
    return [
        (f"peer JOIN, address {peer_mib} MiB", _arr(uint[1], uint[1], _text("b"), huge),
         peer_codec.decode),
        (f"peer SNAPSHOT, frm {peer_mib} MiB", _arr(*snapshot), peer_codec.decode),
        (f"client HELLO, client {client_mib} MiB", _arr(uint[1], uint[1], uint[5],
         _map([("client", client)])), _agent_reads),
        (f"client PROPOSE, client {client_mib} MiB + a list", _arr(uint[1], uint[2], uint[5],
         propose), _agent_reads),
    ]  # fmt: skip


def refusal(decode: Callable[[bytes], Any], data: bytes) -> tuple[int, float, str]:
    """(peak bytes, CPU seconds, what was raised) of decoding `data`."""
    tracemalloc.start()
    start = time.thread_time()
    try:
        decode(data)
        outcome = "accepted"
    except (ProtocolError, LimitExceeded) as exc:
        outcome = type(exc).__name__
    cpu = time.thread_time() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, cpu, outcome


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m superstatic_bench.refusal_peaks")
    parser.add_argument("--peer-mib", type=int, default=60, help="the peer frames' text, MiB")
    parser.add_argument("--client-mib", type=int, default=15, help="the app frames' text, MiB")
    args = parser.parse_args(argv)
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[0]} (1 min)")
    print(f"{'frame':40} {'peak KiB':>10} {'CPU ms':>8}  refusal")
    for name, data, decode in frames(args.peer_mib, args.client_mib):
        peak, cpu, outcome = refusal(decode, data)
        print(f"{name:40} {peak / 1024:10.1f} {cpu * 1000:8.2f}  {outcome}")
        del data


if __name__ == "__main__":
    main()
