"""The far end of the ZeroMQ round-trip floor: a ROUTER that echoes every message back.

`python -m superstatic_bench.zmq_echo ENDPOINT` binds ENDPOINT, prints {"ready": true}, and echoes
until it is stopped (the suite stops it by PID). Blocking sockets, as in the design's floor.
"""

from __future__ import annotations

import json
import sys

import zmq


def main(argv: list[str]) -> int:
    (endpoint,) = argv
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    print(json.dumps({"ready": True}), flush=True)
    while True:
        frames = router.recv_multipart()
        router.send_multipart(frames)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
