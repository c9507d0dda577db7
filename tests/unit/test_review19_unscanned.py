"""Hostile review of the unscanned decode (review19): what codec.loads_unscanned keeps between
calls, and what its callers keep of a refused batch."""

from __future__ import annotations

import gc
import sys
import threading

from superstatic.protocol import codec, ops, wire


def test_the_reused_decoder_does_not_keep_the_last_input_alive() -> None:
    # The per-thread decoder is kept for the next call: the bytes it last read must not be
    # (an EVENTS frame is up to 4 MiB, a body 1 MiB, per thread and per setting).
    body = ops.encode_txn({}, [["set", "a.1", "k", "x" * 100_000]])
    before = sys.getrefcount(body)
    assert ops.decode_ops_fast(body) == [["set", "a.1", "k", "x" * 100_000]]
    gc.collect()
    assert sys.getrefcount(body) - before == 0  # (not the bytes in the message)

    # (cbor2 reads ahead a few KiB: it may keep an input that short, which costs nothing.)
    event = [7, "c", 3, "ok", body, [], 0, []]
    frame = wire.encode(wire.FrameType.EVENTS, 0, {"ev": [event], "to": 7, "t": 0})
    before = sys.getrefcount(frame)
    assert wire.decode(frame, wire.AGENT_TO_CLIENT).body["ev"] == [event]
    gc.collect()
    assert sys.getrefcount(frame) - before == 0


def test_a_refused_input_does_not_keep_the_input_alive_either() -> None:
    # [1, undefined, a long str]: decoded, then refused by every caller.
    refused = b"\x83\x01\xf7" + codec.dumps("x" * 100_000)
    before = sys.getrefcount(refused)
    assert codec.loads_unscanned(refused, ops.txn_limits()) is not codec.NOT_DECODED
    gc.collect()
    assert sys.getrefcount(refused) - before == 0
    # A short item followed by many bytes: refused for its trailing bytes, not kept either.
    trailing = b"\x01" + codec.dumps("x" * 100_000)
    before = sys.getrefcount(trailing)
    assert codec.loads_unscanned(trailing, ops.txn_limits()) is codec.NOT_DECODED
    gc.collect()
    assert sys.getrefcount(trailing) - before == 0


def test_each_thread_decodes_with_its_own_decoder() -> None:
    bodies = [ops.encode_txn({}, [["set", "a.1", "k", i]]) for i in range(200)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i, body in enumerate(bodies):
                assert ops.decode_ops_fast(body) == [["set", "a.1", "k", i]]
                # A refused body in between: the next one decodes as ever.
                assert codec.loads_unscanned(b"\x9f\xff", ops.txn_limits()) is codec.NOT_DECODED
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_bytes_left_over_by_one_input_never_reach_the_next() -> None:
    # Trailing bytes make NOT_DECODED without an exception: the decoder is kept, and cbor2 had
    # read them ahead into its buffer. The next input must be decoded alone (a cbor2 that kept
    # its buffer across `fp` would decode the leftovers as the next body's start).
    limits = ops.txn_limits()
    for leftover in (b"\x02", b"\x82\x01", codec.dumps("y" * 5_000)):
        for head in (b"\x01", codec.dumps("x" * 5_000)):
            assert codec.loads_unscanned(head + leftover, limits) is codec.NOT_DECODED
            assert codec.loads_unscanned(b"\x81\x05", limits) == [5]
            assert codec.loads_unscanned(b"\x03", limits) == 3
