"""A format-2 store (data model 1: one `objects` record per node) written directly with the v1
record encoding, for the migration's unit tests (the cluster test migrates stores written by
the previous release's own agents: tests/cluster/test_migrate_cluster.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import lmdb
from superstatic_agent.storage import KEY_APPLIED, KEY_FORMAT, record_put

from superstatic.protocol import codec

V1_DB_NAMES = (
    b"log",
    b"meta",
    b"sm_meta",
    b"objects",
    b"sessions",
    b"outcomes",
    b"staging_objects",
    b"staging_sessions",
    b"staging_sm_meta",
    b"staging_state",
)


def write_v1_store(
    path: Path, nodes: dict[str, tuple[int, str, Any]], *, applied: int = 50, fmt: int = 2
) -> None:
    """A store holding `nodes` ({oid: (version, kind, contents)}, contents as in a v1 record),
    applied up to `applied`, with a session and a log entry to show they are kept."""
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=256 << 20, max_dbs=16)
    try:
        dbs = {name: env.open_db(name) for name in V1_DB_NAMES}
        with env.begin(write=True) as txn:
            record_put(txn, dbs[b"meta"], KEY_FORMAT, cbor2.dumps(fmt))
            record_put(txn, dbs[b"sm_meta"], KEY_APPLIED, cbor2.dumps([applied, 3, 1_000]))
            record_put(txn, dbs[b"sm_meta"], b"gc", cbor2.dumps([1, 2, len(nodes)]))
            record_put(txn, dbs[b"sessions"], b"app", cbor2.dumps([900, 1, [], 7]))
            record_put(txn, dbs[b"log"], applied.to_bytes(8, "big"), cbor2.dumps([3, 0, b""]))
            # Compacted just below it, as an agent's log is (the log move needs the log to
            # follow the snapshot: agent/migrate.py `_own_log`).
            snap = cbor2.dumps([applied - 1, 3, [["a"], [], [["a", "tcp://127.0.0.1:1"]]]])
            record_put(txn, dbs[b"meta"], b"snap", snap)
            for oid, (version, kind, contents) in nodes.items():
                record = codec.encode_record(version, kind, contents)
                record_put(txn, dbs[b"objects"], oid.encode(), record)
    finally:
        env.close()
