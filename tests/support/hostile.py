"""Hostile bytes, hand-assembled CBOR: the reproductions of issue 8 and the fuzzer's seeds.

Each builder writes CBOR item headers directly (cbor2 would refuse to encode most of these),
so the tests send exactly the bytes an attacker would.
"""

from __future__ import annotations

import struct

from superstatic.protocol import wire

# Kinds and versions of the peer protocol (agent/peer_codec.py), repeated so that this module
# imports nothing from the agent.
PEER_VERSION = 1
PEER_MSG, PEER_JOIN, PEER_CHUNK = 0, 1, 2


def head(major: int, n: int) -> bytes:
    """A CBOR item header: major type and argument, shortest form."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 1 << 8:
        return bytes([major << 5 | 24, n])
    if n < 1 << 16:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    if n < 1 << 32:
        return bytes([major << 5 | 26]) + struct.pack(">I", n)
    return bytes([major << 5 | 27]) + struct.pack(">Q", n)


def arr(*items: bytes) -> bytes:
    return head(4, len(items)) + b"".join(items)


def cmap(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def uint(n: int) -> bytes:
    return head(0, n)


def text(s: str) -> bytes:
    raw = s.encode()
    return head(3, len(raw)) + raw


def blob(b: bytes) -> bytes:
    return head(2, len(b)) + b


def tag(number: int, item: bytes) -> bytes:
    return head(6, number) + item


def bignum(bits: int) -> bytes:
    """A positive int of `bits` bits (CBOR tag 2): over 4,300 decimal digits from ~14,300
    bits, Python refuses to turn it into text."""
    nbytes = (bits + 7) // 8
    return tag(2, blob(b"\xff" * nbytes))


HUGE_INT = bignum(32_000)  # about 9,600 decimal digits


def shared_dag(levels: int, fan: int) -> bytes:
    """A flat array of shareable values (tag 28), each an array of `fan` references (tag 29)
    to the previous one: a few hundred bytes that stand for fan**levels leaves. Its repr is
    gigabytes; cbor2 builds it in microseconds unless shared references are refused."""
    defs = [tag(28, arr())]
    for i in range(1, levels):
        defs.append(tag(28, arr(*[tag(29, uint(i - 1))] * fan)))
    return arr(*defs)


def client_frame(frame_type: int, req_id: int, body: bytes, version: bytes | None = None) -> bytes:
    return arr(version or uint(wire.PROTOCOL_VERSION), uint(frame_type), uint(req_id), body)


def dag_client_frame(req_id: int = 7) -> bytes:
    """Issue 8 reproduction 4: a ~280-byte client frame whose version field is a shared DAG of
    10**8 leaves (it stalled an agent 47 s at 3.7 GiB while formatting an error)."""
    return client_frame(int(wire.FrameType.PING), req_id, cmap([]), version=shared_dag(9, 10))


def dag_peer_frame() -> bytes:
    """Issue 8 reproduction 4: a ~630-byte peer frame, same trick (35 s, 3.5 GiB)."""
    return arr(shared_dag(6, 40), uint(PEER_MSG))


def semantic_tags_body() -> bytes:
    """A PING body holding regex, MIME, IPv4, Fraction, and cbor2's newer IP tags."""
    return cmap(
        [
            (text("regex"), tag(35, text("(a+)+$"))),
            (text("mime"), tag(36, text("Content-Type: text/plain\n\nhi"))),
            (text("ip"), tag(260, blob(b"\x01\x02\x03\x04"))),
            (text("fraction"), tag(30, arr(uint(3), uint(6)))),
            (text("ip4"), tag(52, blob(b"\x01\x02\x03\x04"))),
        ]
    )


def empty_arrays_ping(nbytes: int = 15 << 20, req_id: int = 9) -> bytes:
    """Issue 8 reproduction 4: a 15 MiB PING whose body holds one array of ~15 M empty arrays
    (~1 GiB once built; it stalled the leader 9.6 s and cost it leadership)."""
    count = nbytes - 32
    body = cmap([(text("pad"), head(4, count) + b"\x80" * count)])
    return client_frame(int(wire.FrameType.PING), req_id, body)


def propose(req_id: int, **fields: bytes) -> bytes:
    """A PROPOSE frame; each field given as CBOR bytes (defaults are valid)."""
    values = {
        "client": text("c" * 32),
        "seq": uint(1),
        "seq_low": uint(0),
        "kind": text("txn"),
        "body": blob(b""),
    }
    values.update(fields)
    return client_frame(
        int(wire.FrameType.PROPOSE), req_id, cmap([(text(k), v) for k, v in values.items()])
    )


def peer_msg(
    msg_type: int = 8,  # HEARTBEAT_RESP
    frm: str = "zz",
    to: str = "a",
    term: bytes | None = None,
    index: bytes | None = None,
    commit: bytes | None = None,
) -> bytes:
    """A peer MSG frame [v, 0, type, frm, to, term, log_term, index, entries, commit, reject,
    hint, context, snapshot] with the given (possibly hostile) fields."""
    return arr(
        uint(PEER_VERSION),
        uint(PEER_MSG),
        uint(msg_type),
        text(frm),
        text(to),
        term if term is not None else uint(1),
        uint(0),
        index if index is not None else uint(0),
        blob(b""),
        commit if commit is not None else uint(0),
        b"\xf4",  # false
        uint(0),
        blob(b""),
        b"\xf6",  # null
    )


# -- measuring the decoders: python -m support.hostile (from tests/) ------------------------

MEASURE_AS_BYTES_MAX = 3 << 30  # each case runs in a child capped at this address space
MEASURE_TIMEOUT_S = 60


def _measured_cases() -> dict[str, bytes]:
    body_decimal = cmap(
        [
            (text("r"), cmap([])),
            (text("o"), arr(tag(4, arr(uint(1), bignum(8 * 200_000))))),
        ]
    )
    return {
        "client frame, version a shared-reference DAG": dag_client_frame(),
        "peer frame, a shared-reference DAG": dag_peer_frame(),
        "PING holding regex, MIME, IP, Fraction tags": client_frame(8, 3, semantic_tags_body()),
        "PING of 15 M empty arrays": empty_arrays_ping(),
        "PROPOSE with a 32 000-bit seq": propose(4, seq=HUGE_INT),
        "PROPOSE with kind a list": propose(5, kind=arr()),
        "peer MSG with a 32 000-bit term": peer_msg(term=HUGE_INT),
        "transaction body with a 200 KB Decimal mantissa": body_decimal,
    }


def _measure_one(name: str) -> None:
    import resource
    import time

    resource.setrlimit(resource.RLIMIT_AS, (MEASURE_AS_BYTES_MAX, MEASURE_AS_BYTES_MAX))
    from superstatic_agent import peer_codec

    from superstatic.protocol import ops

    data = _measured_cases()[name]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        if name.startswith(("client", "PING", "PROPOSE")):
            frame = wire.decode(data, wire.CLIENT_TO_AGENT)
            if frame.type is wire.FrameType.PROPOSE:
                wire.parse_propose(frame, body_bytes_max=8 << 20)
        elif name.startswith("peer"):
            peer_codec.decode(data)
        else:
            ops.decode_txn(data)
        outcome = "accepted"
    except Exception as exc:  # what the decoder raised is the measurement
        outcome = f"{type(exc).__name__}: {str(exc)[:80]}"
    took_ms = (time.perf_counter() - started) * 1000
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"| {name} | {len(data)} | {took_ms:.1f} ms | +{grew_mib:.0f} MiB | {outcome} |")


def _measure_all() -> None:
    import subprocess
    import sys

    print("| frame | bytes | decode time | memory growth | outcome |\n|---|---|---|---|---|")
    for name in _measured_cases():
        try:
            done = subprocess.run(
                [sys.executable, "-m", "support.hostile", name],
                capture_output=True,
                text=True,
                timeout=MEASURE_TIMEOUT_S,
            )
            lines = (done.stdout or done.stderr).strip().splitlines() or ["(no output)"]
            print(lines[-1] if done.stdout else f"| {name} | | | | crashed: {lines[-1][:100]} |")
        except subprocess.TimeoutExpired:
            print(f"| {name} | | > {MEASURE_TIMEOUT_S} s | | killed |")


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:
        _measure_one(sys.argv[1])
    else:
        _measure_all()
