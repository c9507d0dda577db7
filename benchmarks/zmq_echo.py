"""The far end of the ZeroMQ round-trip floor: a ROUTER that echoes every message back.

`python -m superstatic_bench.zmq_echo ENDPOINT [KEY_SECRET_FILE]` binds ENDPOINT, prints
{"ready": true}, and echoes until it is stopped (the suite stops it by PID). Blocking sockets, as
in the design's floor. With a key file it is a CURVE server with that key pair (no ZAP
handler: any client key is admitted; the floor measures the encryption, not the allow list).
"""

from __future__ import annotations

import json
import sys

import zmq
import zmq.auth


def main(argv: list[str]) -> int:
    endpoint, *key_file = argv
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    if key_file:
        public, secret = zmq.auth.load_certificate(key_file[0])
        router.curve_server = True
        router.curve_publickey = public
        router.curve_secretkey = secret
    router.bind(endpoint)
    print(json.dumps({"ready": True}), flush=True)
    while True:
        frames = router.recv_multipart()
        router.send_multipart(frames)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
