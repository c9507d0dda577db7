"""What an answer costs as its own REPLY frame against a share of one REPLY_MANY, in process.

    python -m superstatic_bench.reply_frames [--answers 3,7,20] [--total N] [--repeat N]

Not a test and not part of `superstatic bench`: this times, per answer, the two ends of the
frames a leader sends the writes an app's link carries (docs/data-model-v2.md 8.11): the
agent's side (encode, then a ROUTER send) and the app's (a DEALER receive, the decode, and for
REPLY_MANY the body's check), over ZeroMQ on 127.0.0.1 in one process. CPU time
(`time.process_time`, ZeroMQ's I/O thread included), best of `--repeat`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import zmq

from superstatic.protocol import wire

# A REPLY body as the agent sends for a write that applied "ok".
_BODY: dict[str, Any] = {"index": 123_456, "outcome": "ok", "error": "", "dup": False}
_IDENTITY = b"app"


def _round(router: zmq.Socket[Any], answers: int, many: bool) -> None:
    if many:
        items = [[1_000 + i, _BODY] for i in range(answers)]
        data = wire.encode(wire.FrameType.REPLY_MANY, 0, wire.reply_many_body(items))
        router.send_multipart([_IDENTITY, data])
    else:
        for i in range(answers):
            router.send_multipart([_IDENTITY, wire.encode(wire.FrameType.REPLY, 1_000 + i, _BODY)])


def _drain(dealer: zmq.Socket[Any], answers: int) -> None:
    got = 0
    while got < answers:
        frame = wire.decode(dealer.recv(), wire.AGENT_TO_CLIENT)
        if frame.type is wire.FrameType.REPLY_MANY:
            got += len(wire.parse_reply_many(frame.body))
        else:
            got += 1


def measure(answers: int, many: bool, total: int) -> tuple[float, float]:
    """(agent us, app us) of CPU per answer over `total` answers in frames of `answers`."""
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.setsockopt(zmq.IDENTITY, _IDENTITY)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"hello")  # the ROUTER learns the DEALER's identity
        router.recv_multipart()
        rounds = max(1, total // answers)
        agent_s = app_s = 0.0
        for _ in range(rounds):
            started = time.process_time()
            _round(router, answers, many)
            sent = time.process_time()
            _drain(dealer, answers)
            agent_s += sent - started
            app_s += time.process_time() - sent
        count = rounds * answers
        return agent_s / count * 1e6, app_s / count * 1e6
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        ctx.term()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", default="3,7,20", help="answers per Ready, comma-separated")
    parser.add_argument("--total", type=int, default=15_000, help="answers per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements; the best is shown")
    args = parser.parse_args(argv)
    for answers in (int(part) for part in args.answers.split(",")):
        for many in (False, True):
            agent_us, app_us = min(
                (measure(answers, many, args.total) for _ in range(args.repeat)), key=sum
            )
            shape = "REPLY_MANY" if many else "REPLYs"
            print(
                f"{answers:3d} answers, {shape:10s}: agent encode + send {agent_us:5.2f} us, "
                f"app receive + decode {app_us:5.2f} us per answer"
            )


if __name__ == "__main__":
    main()
