"""Reading an agent's node store (format 3, agent/records.py) in tests: every node in its data
model 1 form, and the raw node dbs (to assert that nothing changed)."""

from __future__ import annotations

from typing import Any

import lmdb
from superstatic_agent.noderead import materialize
from superstatic_agent.records import NODE_DB_NAMES
from superstatic_agent.storage import open_dbs, records


def objects(env: lmdb.Environment) -> dict[str, tuple[int, str, Any]]:
    """oid -> (header version, kind, contents as a v1 record holds them)."""
    dbs = open_dbs(env)
    out: dict[str, tuple[int, str, Any]] = {}
    with env.begin() as txn:
        for key, _value in records(txn, dbs.oids, "oids"):
            node = materialize(txn, dbs, key.decode())
            assert node is not None
            out[key.decode()] = node
    return out


def node_tables(env: lmdb.Environment) -> dict[bytes, dict[bytes, bytes]]:
    """Every record of every node db, raw (sealed): equal before and after means untouched."""
    out: dict[bytes, dict[bytes, bytes]] = {}
    dbs = open_dbs(env)  # by what each holds: a snapshot install swaps the tables
    with env.begin() as txn:
        for name in NODE_DB_NAMES:
            db = getattr(dbs, name.decode())
            out[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    return out
