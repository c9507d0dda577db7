"""The agent's frame decodes, the scanned way against the fast one, in process.

    python -m superstatic_bench.frame_decodes [--n N] [--repeat N] [--entries 1,12,40]

Not a test and not part of `superstatic bench`: this times, per frame, what the agent does with
the frames of a write (docs/data-model-v2.md 8.13): a peer frame's decode (`peer_codec.decode`
against `peer_codec.decode_scanned`: an APPEND_RESP, a HEARTBEAT, APPENDs of a few entries of
150 bytes) and a client frame's decode and body check (`wire.decode` + `check_client_body`
against `wire.decode_scanned` + the check as `main` had it before: a PROPOSE, and a
PROPOSE_MANY of 10 writes of a 60-byte and of a 150-byte body). The two sides run in turns,
`--repeat` rounds of `--n` decodes each, and each side's best round is printed (us of this
thread's CPU per frame): on a shared machine only a comparison run side by side means anything.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from superstatic_agent import peer_codec
from superstatic_agent.raft.types import Entry, EntryKind, Message, MsgType

from superstatic.protocol import wire
from superstatic.protocol.codec import FrameError, describe
from superstatic.protocol.errors import LimitExceeded

_BODY_BYTES_MAX = 1 << 20


def propose_many_before(frame: wire.Frame, *, body_bytes_max: int) -> list[wire.ManyItem]:
    """`wire.parse_propose_many` as it was before its inline check of the usual item (main at
    6c06d6a, verbatim but for the module prefixes): what the bench times the new one against,
    and what tests/unit/test_frame_decodes_fast.py compares it with."""
    assert frame.type is wire.FrameType.PROPOSE_MANY
    client = wire.field_str(frame, "client", chars_max=wire.CLIENT_ID_CHARS_MAX)
    assert client is not None
    seq_low = wire.field_int(frame, "seq_low", minimum=0, maximum=wire.SEQ_MAX)
    session = (
        wire.field_int(frame, "session", maximum=wire.SESSION_ID_MAX)
        if "session" in frame.body
        else 0
    )
    reply_many = wire.field_reply_many(frame)
    items = frame.body.get("items")
    if type(items) is not list or not items:
        raise FrameError(
            "field", f"PROPOSE_MANY.items must be a non-empty list, got {describe(items)}"
        )
    if len(items) > wire.PROPOSE_ITEMS_MAX:
        raise LimitExceeded(
            "PROPOSE_ITEMS_MAX", wire.PROPOSE_ITEMS_MAX, len(items), "PROPOSE_MANY items"
        )
    out: list[wire.ManyItem] = []
    seen: set[int] = set()
    for i, item in enumerate(items):
        if type(item) is not list or len(item) not in (4, 5):
            raise FrameError(
                "field",
                f"PROPOSE_MANY.items[{i}] must be [req_id, seq, kind, body] or [req_id, seq, "
                f"kind, body, trace], got {describe(item)}",
            )
        req_id = item[0]
        if type(req_id) is not int or not 0 <= req_id <= wire.REQ_ID_MAX or req_id in seen:
            raise FrameError(
                "field",
                f"PROPOSE_MANY.items[{i}][0] (req_id) must be an integer in [0, 2**64) unique "
                f"in the frame, got {describe(req_id)}",
            )
        seen.add(req_id)
        trace = len(item) == 5 and item[4] is True
        fields = {
            "client": client,
            "seq": item[1],
            "seq_low": seq_low,
            "kind": item[2],
            "body": item[3],
            "session": session,
            wire.REPLY_MANY_FIELD: reply_many,
        }
        try:
            proposal = wire.parse_propose(
                wire.Frame(wire.FrameType.PROPOSE, req_id, fields), body_bytes_max=body_bytes_max
            )
        except (FrameError, LimitExceeded) as exc:
            out.append(wire.ManyItem(req_id, None, trace, exc))
            continue
        out.append(wire.ManyItem(req_id, proposal, trace))
    return out


def _client_old(data: bytes) -> Any:
    frame = wire.decode_scanned(data, wire.CLIENT_TO_AGENT)
    if frame.type is wire.FrameType.PROPOSE_MANY:
        return propose_many_before(frame, body_bytes_max=_BODY_BYTES_MAX)
    return wire.check_client_body(frame, body_bytes_max=_BODY_BYTES_MAX)


def _client_new(data: bytes) -> Any:
    frame = wire.decode(data, wire.CLIENT_TO_AGENT)
    return wire.check_client_body(frame, body_bytes_max=_BODY_BYTES_MAX)


Case = tuple[str, bytes, Callable[[bytes], Any], Callable[[bytes], Any]]


def cases(entry_counts: list[int]) -> list[Case]:
    """(name, frame, old decode, new decode) of each case."""
    old_peer, new_peer = peer_codec.decode_scanned, peer_codec.decode
    out = [
        (
            "APPEND_RESP",
            peer_codec.encode_message(
                Message(MsgType.APPEND_RESP, "b", "a", 5, index=123_456, commit=123_400)
            ),
            old_peer,
            new_peer,
        ),
        (
            "HEARTBEAT",
            peer_codec.encode_message(Message(MsgType.HEARTBEAT, "a", "b", 5, commit=123_456)),
            old_peer,
            new_peer,
        ),
    ]
    for count in entry_counts:
        entries = tuple(
            Entry(123_457 + i, 5, EntryKind.NORMAL, os.urandom(150)) for i in range(count)
        )
        message = Message(
            MsgType.APPEND, "a", "b", 5, log_term=5, index=123_456, commit=123_450, entries=entries
        )
        out.append((f"APPEND x{count}", peer_codec.encode_message(message), old_peer, new_peer))
    client = os.urandom(16).hex()
    body = os.urandom(60)
    propose = {
        "client": client,
        "seq": 5_000,
        "seq_low": 4_990,
        "kind": "txn",
        "body": body,
        "session": 1_234,
        wire.REPLY_MANY_FIELD: True,
    }
    out.append(
        ("PROPOSE", wire.encode(wire.FrameType.PROPOSE, 70_000, propose), _client_old, _client_new)
    )
    # A body longer than wire.CLIENT_TEXT_BYTES_MAX: the fast path reads the body map's headers
    # before decoding (no string over the bound may be built, review 27).
    long_body = {**propose, "body": os.urandom(8 << 10)}
    out.append(
        (
            "PROPOSE 8 KiB",
            wire.encode(wire.FrameType.PROPOSE, 70_000, long_body),
            _client_old,
            _client_new,
        )
    )
    # Ten writes of 60-byte bodies, then of 150-byte ones (a 100-byte value, as the suite's
    # throughput rows write): the second frame is over its items limit in bytes, so it is
    # scanned first, and only its items' check is shorter.
    for body_bytes in (60, 150):
        body = os.urandom(body_bytes)
        items = [[70_001 + i, 5_000 + i, "txn", body] for i in range(10)]
        many = {
            "client": client,
            "seq_low": 4_990,
            "session": 1_234,
            "items": items,
            wire.REPLY_MANY_FIELD: True,
        }
        out.append(
            (
                f"MANY x10 {body_bytes} B",
                wire.encode(wire.FrameType.PROPOSE_MANY, 70_100, many),
                _client_old,
                _client_new,
            )
        )
    return out


def _round(decode: Callable[[bytes], Any], data: bytes, n: int) -> float:
    # This thread's CPU time: on a busy machine, wall time counts the other tenants' turns.
    started = time.thread_time()
    for _ in range(n):
        decode(data)
    return (time.thread_time() - started) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m superstatic_bench.frame_decodes")
    parser.add_argument("--n", type=int, default=5_000, help="decodes per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per side")
    parser.add_argument("--entries", default="1,12,40", help="entries of the APPEND cases")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.entries.split(",") if x]
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'frame':<18} {'bytes':>6} {'scanned us':>11} {'fast us':>8} {'ratio':>6}")
    for name, data, old, new in cases(counts):
        # Same answer both ways (a Message or the parsed body), or the bench is comparing
        # different work.
        assert repr(old(data)) == repr(new(data)), name
        best_old = best_new = float("inf")
        for _ in range(args.repeat):
            best_old = min(best_old, _round(old, data, args.n))
            best_new = min(best_new, _round(new, data, args.n))
        print(
            f"{name:<18} {len(data):>6} {best_old * 1e6:>11.2f} {best_new * 1e6:>8.2f} "
            f"{best_new / best_old:>6.2f}"
        )
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
