"""The floors the targets refer to, measured on this machine in this run.

* fsync: one small durable LMDB write, done the way the agent's storage does it (a 100-byte
  put in its own write transaction on an environment opened with sync off, then one
  `env.sync(True)`): the unit cost of every durable commit here. Also the raw
  `write + fdatasync` of 100 bytes on a plain file, for reference.
* ZeroMQ round trip: a DEALER in this process and a ROUTER echo in another process, blocking
  sockets, loopback tcp, 64-byte messages: the cost of one hop between two processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lmdb
import zmq
import zmq.auth
from superstatic_bench.procs import ProcessGroup
from superstatic_bench.stats import summarize_us

from superstatic.tools.localcluster import free_port

LMDB_MAP_BYTES = 64 << 20
VALUE_BYTES = 100
MESSAGE_BYTES = 64
TIMEOUT_MS_ECHO = 10_000
WARMUP_OPS = 50


def lmdb_fsync(path: Path, ops: int) -> dict[str, Any]:
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=LMDB_MAP_BYTES, sync=False)
    value = b"v" * VALUE_BYTES
    samples: list[float] = []
    try:
        for i in range(WARMUP_OPS + ops):
            began = time.perf_counter_ns()
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), value)
            env.sync(True)
            if i >= WARMUP_OPS:
                samples.append((time.perf_counter_ns() - began) / 1000)
    finally:
        env.close()
    return summarize_us(samples)


def file_fdatasync(path: Path, ops: int) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    value = b"v" * VALUE_BYTES
    samples: list[float] = []
    try:
        for i in range(WARMUP_OPS + ops):
            began = time.perf_counter_ns()
            os.write(fd, value)
            os.fdatasync(fd)
            if i >= WARMUP_OPS:
                samples.append((time.perf_counter_ns() - began) / 1000)
    finally:
        os.close(fd)
    return summarize_us(samples)


def zmq_round_trip(
    group: ProcessGroup,
    ops: int,
    *,
    curve_key_file: Path | None = None,
    message_bytes: int = MESSAGE_BYTES,
) -> dict[str, Any]:
    """Round trips to an echo process; with `curve_key_file` (a .key_secret) over CURVE."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = ["-m", "superstatic_bench.zmq_echo", endpoint]
    if curve_key_file is not None:
        args.append(str(curve_key_file))
    echo = group.start_worker("zmq-echo", args)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS_ECHO)
    if curve_key_file is not None:
        server_public, _ = zmq.auth.load_certificate(curve_key_file)
        dealer.curve_publickey, dealer.curve_secretkey = zmq.curve_keypair()
        dealer.curve_serverkey = server_public
    samples: list[float] = []
    try:
        echo.receive(TIMEOUT_MS_ECHO / 1000)  # {"ready": true} once bound
        dealer.connect(endpoint)
        message = b"m" * message_bytes
        for i in range(WARMUP_OPS + ops):
            began = time.perf_counter_ns()
            dealer.send(message)
            dealer.recv()
            if i >= WARMUP_OPS:
                samples.append((time.perf_counter_ns() - began) / 1000)
    finally:
        dealer.close()
        context.term()
        group.stop(echo.process)
    return summarize_us(samples)


def measure(group: ProcessGroup, work_dir: Path, ops: int) -> dict[str, Any]:
    return {
        "lmdb_fsync_us": lmdb_fsync(work_dir / "floor-lmdb", ops),
        "fdatasync_us": file_fdatasync(work_dir / "floor-file" / "append.bin", ops),
        "zmq_rtt_us": zmq_round_trip(group, ops * 5),
    }
