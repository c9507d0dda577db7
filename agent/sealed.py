"""Sealed records: every value the agent stores carries a CRC-32 of its key and value
(docs/data-model.md, "Checksums"), verified on every read. The storage layout (storage.py) and
the node records (records.py, noderead.py, nodestore.py) read and write through these."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import lmdb
from superstatic_agent import records as node_records

# A sealed value ends with its CRC-32 over key and value.
CHECKSUM_BYTES = 4
_CHECKSUM = struct.Struct(">I")


class Corrupt(Exception):
    """A stored value whose checksum does not match its bytes: this copy is damaged (a disk
    fault, a stray write, an edited file). Never served; the agent repairs or halts."""

    def __init__(self, db: str, key: bytes) -> None:
        super().__init__(
            f"checksum mismatch in db {db!r} at key {describe_key(db, key)}: this agent's data "
            "file is damaged"
        )
        self.db = db
        self.key = bytes(key)


def describe_key(db: str, key: bytes) -> str:
    """A stored key for messages: log indexes as numbers, node keys by their parts, ids as
    (clipped) text."""
    if db.removeprefix("staging_").encode() in node_records.NODE_DB_NAMES:
        return node_records.describe_key(db, key)
    if db in ("log", "outcomes") and len(key) == 8:
        return str(int.from_bytes(key, "big"))
    return repr(bytes(key[:80]).decode(errors="replace"))


def seal(key: bytes, value: bytes) -> bytes:
    """The stored form of `value` under `key`: value + CRC-32 of key and value. CRC-32 (not a
    cryptographic hash): it catches what it is for (bit flips, torn or misplaced writes: all
    bursts up to 32 bits, else all but 1 in 4 billion) at GB/s from the standard library;
    the key is covered so a value found under the wrong key is caught too."""
    crc = zlib.crc32(value, zlib.crc32(key))
    return value + crc.to_bytes(CHECKSUM_BYTES, "big")


def seal_each(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """(key, seal(key, value)) of each (key, value), in order: a staged snapshot chunk's
    ~35,000 records in one call, without a call per record."""
    crc32, pack = zlib.crc32, _CHECKSUM.pack
    return [(key, value + pack(crc32(value, crc32(key)))) for key, value in records]


def unseal(db: str, key: bytes, sealed: bytes) -> bytes:
    """The value of a sealed record; Corrupt if its checksum does not match."""
    if len(sealed) < CHECKSUM_BYTES:
        raise Corrupt(db, key)
    value = sealed[:-CHECKSUM_BYTES]
    if zlib.crc32(value, zlib.crc32(key)) != int.from_bytes(sealed[-CHECKSUM_BYTES:], "big"):
        raise Corrupt(db, key)
    return value


def record_get(txn: lmdb.Transaction, db: Any, name: str, key: bytes) -> bytes | None:
    """The verified value at `key` in db `name` (handle `db`), None if absent."""
    raw = txn.get(key, db=db)
    return None if raw is None else unseal(name, key, raw)


def record_put(
    txn: lmdb.Transaction, db: Any, key: bytes, value: bytes, *, append: bool = False
) -> bool:
    """Stores `value` sealed. False only for an append whose key is not past the db's last
    key (LMDB stores nothing then): callers that append check it."""
    return bool(txn.put(key, seal(key, value), db=db, append=append))


def records(txn: lmdb.Transaction, db: Any, name: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, verified value) of every record of a db, in key order (unseal's check inline: a
    leader shipping a snapshot reads every record of its store through here)."""
    crc32, unpack_from = zlib.crc32, _CHECKSUM.unpack_from
    for key, raw in txn.cursor(db=db):
        end = len(raw) - CHECKSUM_BYTES
        if end < 0:
            raise Corrupt(name, key)
        value = raw[:end]
        if crc32(value, crc32(key)) != unpack_from(raw, end)[0]:
            raise Corrupt(name, key)
        yield bytes(key), value
