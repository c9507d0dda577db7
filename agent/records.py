"""Storage format 3: the per-key record layout of nodes (docs/data-model-v2.md section 3).

A node is a header record plus one record per entry (dict item, set member, object
attribute), the insertion order of dicts and objects, and for lists the chunks of a counted
B+tree (agent/listtree.py). This module holds the db names, the key builders and the value
encodings, nothing else: storage.py opens the dbs, statemachine.py applies ops over them,
snapshot producers and consumers ship the same records.

| db | key | value (before sealing) |
|---|---|---|
| `oids` | oid utf-8 | nid, 8 bytes big-endian |
| `nodes` | nid (8 B) | CBOR header `[oid, kind, version, shape_version, next_pos, extra, count]` |
| `entries` | nid + `0x01` + ekey | CBOR entry (below) |
| `entries` | nid + `0x02` + blake2b-128(ekey) | CBOR bucket `[[ekey, version, pos, value, orig]]` |
| `order` | nid + pos (8 B) | ekey (already CBOR) |
| `chunks` | nid + chunk id (8 B) | list B+tree node (agent/listtree.py's encoding) |
| `tombs` | version (8 B) + entry key | empty |

Entries: dict/obj live `[version, pos, value]` or `[version, pos, value, original_key]`; set
live `[version]` or `[version, original_member]`; tombstone of any kind `["x", version]`. In a
bucket an item is `[ekey, version, pos, value, original]` with `pos` null for a set member, and
a tombstone is `[ekey, version, null, "x", null]`. `original` is the key as first inserted
when its encoding differs from ekey (Python keeps `1.0` after `d[1.0] = x; d[1] = y`), else
absent (null in a bucket: a normal form is never None where an original is needed, because
None is its own normal form).

Every decoder validates untrusted bytes (records arrive in peer snapshots): a record of the
wrong shape raises `RecordInvalid` naming the db and the key (`describe_key`), never the bytes
or a value. The state machine decodes its own records with `checked=False` (it wrote them; the
seal already caught damage), which skips the per-value walk only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from superstatic.protocol import codec, ops
from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.short_cbor import UNSURE, loads_each, scalar_ok

FORMAT_VERSION = 3

# The node dbs of format 3 (staging copies are "staging_" + name).
DB_OIDS = b"oids"
DB_NODES = b"nodes"
DB_ENTRIES = b"entries"
DB_ORDER = b"order"
DB_CHUNKS = b"chunks"
DB_TOMBS = b"tombs"
NODE_DB_NAMES = (DB_OIDS, DB_NODES, DB_ENTRIES, DB_ORDER, DB_CHUNKS, DB_TOMBS)

# sm_meta scalars of format 3 (CBOR ints).
KEY_NEXT_NID = b"next_nid"  # the nid the next created node takes (first: 1)
KEY_TOMB_HORIZON = b"tomb_horizon"  # the highest tombstone version purged so far
KEY_TOMB_NEXT_SWEEP = b"tomb_next_sweep"  # the applied index of the next tombstone sweep

NID_BYTES = 8
POS_BYTES = 8
CHUNK_ID_BYTES = 8
VERSION_BYTES = 8
UINT64_MAX = (1 << 64) - 1
# Versions, positions and nids are log indexes or counters below 2**63.
INT64_MAX = (1 << 63) - 1

# An entry key nid + 0x01 + ekey is used while it has at most this many bytes; beyond it the
# key is nid + 0x02 + blake2b-128(ekey) and the record is a bucket holding the full ekey. LMDB
# keys are at most 511 bytes (KEY_BYTES_MAX), and a tombs key prefixes an entry key with 8.
ENTRY_KEY_INLINE_BYTES_MAX = 480
ENTRY_INLINE = 0x01
ENTRY_HASHED = 0x02
ENTRY_HASH_BYTES = 16
# Items of one long-key bucket: a blake2b-128 collision among long keys of one node is already
# astronomically unlikely; more than a few items is not a store we wrote.
BUCKET_ITEMS_MAX = 64

# The tombstone marker (a live entry starts with an int version, never with this).
TOMB = "x"

NODE_KINDS = codec.NODE_KINDS
# list header extra: [length, root chunk id, height, next chunk id]
LIST_EXTRA_FIELDS = 4
# Heights of a list B+tree (agent/listtree.py's bound).
LIST_HEIGHT_MAX = 64

# Bounds a stored record is decoded with when it is untrusted (peer snapshot chunks): no
# record exceeds one frame (record_bytes_max is bounded by it) nor holds more CBOR items than a
# transaction body could put there.
RECORD_LIMITS = codec.DecodeLimits(
    what="stored record",
    bytes_max=ops.TXN_BODY_BYTES_MAX,
    bytes_name="TXN_BODY_BYTES_MAX",
    items_max=ops.TXN_ITEMS_MAX,
    items_name="TXN_ITEMS_MAX",
    depth_max=codec.DECODE_DEPTH_MAX,
    depth_name="DECODE_DEPTH_MAX",
    str_keys_only=False,
)


class RecordInvalid(ProtocolError):
    """A record of a node db that does not have its layout: names the db and key, never the
    bytes (they may come from a peer, or be damage the checksum did not catch)."""

    def __init__(self, db: str, key: bytes, problem: str) -> None:
        super().__init__(f"record in db {db!r} at {describe_key(db, key)} is invalid: {problem}")
        self.db = db
        self.key = bytes(key)


# ---------------------------------------------------------------------------------- keys


def u64(n: int) -> bytes:
    assert 0 <= n <= UINT64_MAX, n
    return n.to_bytes(8, "big")


def nid_key(nid: int) -> bytes:
    """The nodes key of a nid (also the prefix of every record of the node)."""
    assert 1 <= nid <= INT64_MAX, nid
    return nid.to_bytes(NID_BYTES, "big")


def key_nid(key: bytes) -> int:
    """The nid a node-db key starts with."""
    return int.from_bytes(key[:NID_BYTES], "big")


def oid_key(oid: str) -> bytes:
    return oid.encode()


def entry_key(nid: int, ekey: bytes) -> bytes:
    """The entries key of a key (by its encoded normal form) in node `nid`: inline when short,
    else the hashed form whose record is a bucket."""
    if NID_BYTES + 1 + len(ekey) <= ENTRY_KEY_INLINE_BYTES_MAX:
        return nid_key(nid) + b"\x01" + ekey
    digest = hashlib.blake2b(ekey, digest_size=ENTRY_HASH_BYTES).digest()
    return nid_key(nid) + b"\x02" + digest


def entry_key_hashed(key: bytes) -> bool:
    return len(key) > NID_BYTES and key[NID_BYTES] == ENTRY_HASHED


def entry_key_ekey(key: bytes) -> bytes:
    """The ekey of an inline entry key."""
    assert len(key) > NID_BYTES and key[NID_BYTES] == ENTRY_INLINE, key[: NID_BYTES + 1]
    return key[NID_BYTES + 1 :]


def entries_prefix(nid: int) -> bytes:
    return nid_key(nid)


def order_key(nid: int, pos: int) -> bytes:
    assert 0 <= pos <= INT64_MAX, pos
    return nid_key(nid) + pos.to_bytes(POS_BYTES, "big")


def chunk_key(nid: int, chunk_id: int) -> bytes:
    assert 1 <= chunk_id <= INT64_MAX, chunk_id
    return nid_key(nid) + chunk_id.to_bytes(CHUNK_ID_BYTES, "big")


def tomb_key(version: int, ekey_entry_key: bytes) -> bytes:
    """The tombs key of a tombstone written at `version` for the entry at `ekey_entry_key`:
    version first, so a range scan from the start finds the oldest."""
    assert 0 <= version <= INT64_MAX, version
    return version.to_bytes(VERSION_BYTES, "big") + ekey_entry_key


def tomb_key_parts(key: bytes) -> tuple[int, bytes]:
    """(version, entry key) of a tombs key."""
    return int.from_bytes(key[:VERSION_BYTES], "big"), key[VERSION_BYTES:]


def describe_key(db: str, key: bytes) -> str:
    """A node-db key for messages: numbers for the fixed-width parts, the rest by length (an
    ekey is untrusted data)."""
    name = db.removeprefix("staging_")
    key = bytes(key)
    if name == "oids":
        return "oid " + repr(key[:80].decode(errors="replace"))
    if len(key) < NID_BYTES:
        return f"a key of {len(key)} bytes"
    nid = key_nid(key)
    rest = key[NID_BYTES:]
    if name == "nodes":
        return f"nid {nid}" + (f" (+{len(rest)} bytes)" if rest else "")
    if name == "entries":
        form = {ENTRY_INLINE: "key", ENTRY_HASHED: "hashed key"}.get(rest[0] if rest else -1)
        return f"nid {nid} {form or 'unknown form'} of {max(0, len(rest) - 1)} bytes"
    if name in ("order", "chunks") and len(rest) == 8:
        what = "pos" if name == "order" else "chunk"
        return f"nid {nid} {what} {int.from_bytes(rest, 'big')}"
    if name == "tombs" and len(key) > VERSION_BYTES + NID_BYTES:
        version, entry = tomb_key_parts(key)
        return f"version {version} entry of nid {key_nid(entry)} ({len(entry)} bytes)"
    return f"a key of {len(key)} bytes"


# ---------------------------------------------------------------------------------- values


def _decode(db: str, key: bytes, data: bytes, checked: bool) -> Any:
    try:
        return codec.loads(data, RECORD_LIMITS if checked else None)
    except ProtocolError as exc:
        raise RecordInvalid(db, key, f"undecodable ({type(exc).__name__})") from None


def _is_u63(value: Any) -> bool:
    return type(value) is int and 0 <= value <= INT64_MAX


def encode_nid(nid: int) -> bytes:
    """The oids value: the node's nid."""
    return nid_key(nid)


def decode_nid(key: bytes, data: bytes) -> int:
    if len(data) != NID_BYTES:
        raise RecordInvalid("oids", key, f"a nid is {NID_BYTES} bytes, got {len(data)}")
    nid = int.from_bytes(data, "big")
    if not 1 <= nid <= INT64_MAX:
        raise RecordInvalid("oids", key, "a nid is in 1..2**63-1")
    return nid


# Values cbor2 encodes exactly as codec.dumps does (no tag of ours, codec.PASS_TYPES): a header
# or entry record whose only other fields are ints and strs is the same bytes from cbor2
# directly, without codec's walk of its fields (~0.6 us per record, two records per write:
# docs/data-model-v2.md 8.6; tests/unit/test_record_encoding.py compares the two).
_CBOR_AS_IS = codec.PASS_TYPES


@dataclass(slots=True)
class Header:
    """A node header (the nodes db). `extra`: obj class name; list [length, root chunk id,
    height, next chunk id]; dict/set None. `count`: live entries (dict items, set members,
    attributes) or the list's length: len() and inspection without a scan."""

    oid: str
    kind: str
    version: int
    shape_version: int
    next_pos: int
    extra: Any
    count: int = 0

    def copy(self) -> Header:
        """A shallow copy (dataclasses.replace costs 5x this, on every node a body writes)."""
        return Header(
            self.oid,
            self.kind,
            self.version,
            self.shape_version,
            self.next_pos,
            self.extra,
            self.count,
        )

    def encode(self) -> bytes:
        fields = [
            self.oid,
            self.kind,
            self.version,
            self.shape_version,
            self.next_pos,
            self.extra,
            self.count,
        ]
        if type(self.extra) in _CBOR_AS_IS:  # a dict's, set's or obj's: no tag of ours
            return cbor2.dumps(fields)
        return codec.dumps(fields)


def decode_header(key: bytes, data: bytes, *, checked: bool = True, db: str = "nodes") -> Header:
    return header_of(db, key, _decode(db, key, data, checked), checked)


def header_of(db: str, key: bytes, value: Any, checked: bool) -> Header:
    """The header a decoded nodes record holds (checked: every field's type and bounds)."""
    if type(value) is not list or len(value) != 7:
        raise RecordInvalid(
            db, key, "a header is [oid, kind, version, shape_version, next_pos, extra, count]"
        )
    oid, kind, version, shape_version, next_pos, extra, count = value
    if checked:
        if type(oid) is not str or not 0 < len(oid) <= codec.OID_CHARS_MAX:
            raise RecordInvalid(db, key, f"the oid is a str of 1..{codec.OID_CHARS_MAX} chars")
        if type(kind) is not str or kind not in NODE_KINDS:
            raise RecordInvalid(db, key, f"the kind is one of {', '.join(NODE_KINDS)}")
        if not all(_is_u63(x) for x in (version, shape_version, next_pos, count)):
            raise RecordInvalid(
                db, key, "version, shape_version, next_pos and count are ints in 0..2**63-1"
            )
        if shape_version > version:
            raise RecordInvalid(db, key, "shape_version is above version")
        _check_extra(db, key, kind, extra)
        if kind == "list" and count != extra[0]:
            raise RecordInvalid(db, key, "a list header's count is its length")
    return Header(oid, kind, version, shape_version, next_pos, extra, count)


def _check_extra(db: str, key: bytes, kind: str, extra: Any) -> None:
    if kind == "obj":
        if type(extra) is not str:
            raise RecordInvalid(db, key, "an obj header's extra is its class name (a str)")
    elif kind == "list":
        if (
            type(extra) is not list
            or len(extra) != LIST_EXTRA_FIELDS
            or not all(_is_u63(x) for x in extra)
            or extra[2] > LIST_HEIGHT_MAX
        ):
            raise RecordInvalid(
                db, key, "a list header's extra is [length, root, height, next chunk id] ints"
            )
    elif extra is not None:
        raise RecordInvalid(db, key, f"a {kind} header's extra is null")


@dataclass(slots=True)
class EntryRec:
    """One entry (live or tombstone) of a node. `pos` is None for set members and tombstones;
    `value` is None for set members and tombstones; `original` is the key as first inserted
    when it differs from the normal form, else None."""

    version: int
    pos: int | None = None
    value: Any = None
    original: Any = None
    tomb: bool = False


def encode_entry(entry: EntryRec) -> bytes:
    """An inline entry record."""
    if entry.tomb:
        return codec.dumps([TOMB, entry.version])
    if entry.pos is None:  # a set member
        if entry.original is None:
            return codec.dumps([entry.version])
        return codec.dumps([entry.version, entry.original])
    if entry.original is None:
        if type(entry.value) in _CBOR_AS_IS:  # a scalar value: no tag of ours
            return cbor2.dumps([entry.version, entry.pos, entry.value])
        return codec.dumps([entry.version, entry.pos, entry.value])
    return codec.dumps([entry.version, entry.pos, entry.value, entry.original])


def decode_entry(key: bytes, data: bytes, *, checked: bool = True, db: str = "entries") -> EntryRec:
    """An inline entry record (see decode_bucket for the hashed form)."""
    return entry_of(db, key, _decode(db, key, data, checked), checked)


def entry_of(db: str, key: bytes, value: Any, checked: bool) -> EntryRec:
    """The entry a decoded inline entry record holds (checked: its value and original key are
    storable)."""
    if type(value) is not list or not 1 <= len(value) <= 4:
        raise RecordInvalid(db, key, "an entry is an array of 1 to 4 items")
    head = value[0]
    if type(head) is str:
        if head != TOMB or len(value) != 2 or not _is_u63(value[1]):
            raise RecordInvalid(db, key, 'a tombstone is ["x", version]')
        return EntryRec(value[1], tomb=True)
    if not _is_u63(head):
        raise RecordInvalid(db, key, "an entry starts with its version (an int in 0..2**63-1)")
    if len(value) <= 2:  # a set member
        original = value[1] if len(value) == 2 else None
        if checked and len(value) == 2:
            _check_key(db, key, original, "original member")
        return EntryRec(head, original=original)
    pos = value[1]
    if not _is_u63(pos):
        raise RecordInvalid(db, key, "an entry's pos is an int in 0..2**63-1")
    original = value[3] if len(value) == 4 else None
    if checked:
        _check_value(db, key, value[2], "value")
        if len(value) == 4:
            _check_key(db, key, original, "original key")
    return EntryRec(head, pos, value[2], original)


def _check_value(db: str, key: bytes, value: Any, what: str) -> None:
    try:
        codec.check_value(value, what)
    except ProtocolError:
        raise RecordInvalid(db, key, f"its {what} is not a storable value") from None


def _check_key(db: str, key: bytes, value: Any, what: str) -> None:
    _check_value(db, key, value, what)
    if value is None:
        raise RecordInvalid(db, key, f"its {what} is null")
    try:
        hash(value)
    except TypeError:
        raise RecordInvalid(db, key, f"its {what} is unhashable") from None


def encode_bucket(items: list[tuple[bytes, EntryRec]]) -> bytes:
    """A long-key bucket: (ekey, entry) pairs, in ekey order (canonical bytes on every
    replica)."""
    assert 1 <= len(items) <= BUCKET_ITEMS_MAX, len(items)
    out = []
    for ekey, entry in sorted(items, key=lambda item: item[0]):
        if entry.tomb:
            out.append([ekey, entry.version, None, TOMB, None])
        else:
            out.append([ekey, entry.version, entry.pos, entry.value, entry.original])
    return codec.dumps(out)


def decode_bucket(
    key: bytes, data: bytes, *, checked: bool = True, db: str = "entries"
) -> list[tuple[bytes, EntryRec]]:
    """The (ekey, entry) items of a long-key bucket. Checked: every ekey hashes to this key."""
    value = _decode(db, key, data, checked)
    if type(value) is not list or not 1 <= len(value) <= BUCKET_ITEMS_MAX:
        raise RecordInvalid(db, key, f"a bucket is an array of 1..{BUCKET_ITEMS_MAX} items")
    out: list[tuple[bytes, EntryRec]] = []
    for item in value:
        if type(item) is not list or len(item) != 5 or type(item[0]) is not bytes:
            raise RecordInvalid(db, key, "a bucket item is [ekey, version, pos, value, original]")
        ekey, version, pos, val, original = item
        if not _is_u63(version):
            raise RecordInvalid(db, key, "a bucket item's version is an int in 0..2**63-1")
        if checked and entry_key(key_nid(key), ekey) != bytes(key):
            raise RecordInvalid(db, key, "a bucket item's ekey does not hash to its key")
        if pos is None and val == TOMB and type(val) is str:
            if original is not None:
                raise RecordInvalid(db, key, "a bucket tombstone has no original key")
            out.append((ekey, EntryRec(version, tomb=True)))
            continue
        if pos is not None and not _is_u63(pos):
            raise RecordInvalid(db, key, "a bucket item's pos is an int in 0..2**63-1 or null")
        if pos is None and val is not None:
            raise RecordInvalid(db, key, "a bucket's set member has no value")
        if checked:
            _check_value(db, key, val, "value")
            if original is not None:
                _check_key(db, key, original, "original key")
        out.append((ekey, EntryRec(version, pos, val, original)))
    if checked and [e for e, _ in out] != sorted({e for e, _ in out}):
        raise RecordInvalid(db, key, "a bucket's ekeys are not unique and in order")
    return out


def decode_order(key: bytes, data: bytes, *, checked: bool = True, db: str = "order") -> bytes:
    """The ekey an order record points at (checked: it is one CBOR item)."""
    if checked:
        _decode(db, key, data, True)
    return bytes(data)


def decode_tomb(key: bytes, data: bytes, *, db: str = "tombs") -> None:
    if len(key) <= VERSION_BYTES + NID_BYTES + 1:
        raise RecordInvalid(db, key, "a tombs key is version + entry key")
    if data:
        raise RecordInvalid(db, key, "a tombs record is empty")


def check_record(db: str, key: bytes, data: bytes) -> None:
    """Validates one record of a node db (by its name without "staging_") as a follower
    receiving a peer snapshot must: RecordInvalid on anything that is not our layout. Chunks
    are listtree's; only their being one CBOR item is checked here."""
    name = db.removeprefix("staging_")
    from_staging = db
    if name == "oids":
        try:
            oid = bytes(key).decode()
        except UnicodeDecodeError:
            raise RecordInvalid(from_staging, key, "an oid is utf-8") from None
        if not 0 < len(oid) <= codec.OID_CHARS_MAX:
            raise RecordInvalid(from_staging, key, f"an oid has 1..{codec.OID_CHARS_MAX} chars")
        decode_nid(key, data)
        return
    if name != "tombs" and (len(key) < NID_BYTES or not 1 <= key_nid(key) <= INT64_MAX):
        raise RecordInvalid(from_staging, key, "a key starts with a nid in 1..2**63-1")
    if name == "nodes":
        if len(key) != NID_BYTES:
            raise RecordInvalid(from_staging, key, f"a nodes key is {NID_BYTES} bytes")
        decode_header(key, data, db=from_staging)
    elif name == "entries":
        if entry_key_hashed(key):
            if len(key) != NID_BYTES + 1 + ENTRY_HASH_BYTES:
                raise RecordInvalid(from_staging, key, "a hashed entry key has a 16-byte hash")
            decode_bucket(key, data, db=from_staging)
            return
        if len(key) <= NID_BYTES + 1 or key[NID_BYTES] != ENTRY_INLINE:
            raise RecordInvalid(from_staging, key, "an entry key is nid + 0x01 + ekey")
        if len(key) > ENTRY_KEY_INLINE_BYTES_MAX:
            raise RecordInvalid(from_staging, key, "an inline entry key is too long")
        _decode(from_staging, key, entry_key_ekey(key), True)
        decode_entry(key, data, db=from_staging)
    elif name == "order":
        if len(key) != NID_BYTES + POS_BYTES:
            raise RecordInvalid(from_staging, key, "an order key is nid + pos")
        decode_order(key, data, db=from_staging)
    elif name == "chunks":
        if len(key) != NID_BYTES + CHUNK_ID_BYTES:
            raise RecordInvalid(from_staging, key, "a chunks key is nid + chunk id")
        _decode(from_staging, key, data, True)
    elif name == "tombs":
        decode_tomb(key, data, db=from_staging)
    else:
        raise RecordInvalid(from_staging, key, "not a node db")


# ---------------------------------------------------------------------------------- many records
#
# A follower validates every record of a peer snapshot (section 10 of docs/data-model-v2.md):
# check_record costs ~2.4 us a record, mostly codec.scan's walk of each value's item headers
# and the calls around it. check_records takes one db's run of a chunk at once: a record the
# checks below are sure of passes on its key's bytes and its value decoded by short_cbor
# (exactly as _decode would, or UNSURE), then the same field checks as decode_header and
# decode_entry; every record they are not sure of takes check_record, which accepts it or
# raises. So the same records pass, and a refused one raises what check_record raises for it.

_NID_ZERO = bytes(NID_BYTES)
# A nid's first byte is below this (nids are at most 2**63-1).
_NID_FIRST_BYTE_END = 0x80


# Entry values whose types codec.check_value accepts without looking inside.
_SURE_VALUE_TYPES = frozenset({type(None), bool, int, float, str, bytes, codec.Ref})


def _nid_ok(key: bytes) -> bool:
    """check_record's nid test (1 <= key_nid(key) <= INT64_MAX) on a key of NID_BYTES or more."""
    return key[0] < _NID_FIRST_BYTE_END and key[:NID_BYTES] != _NID_ZERO


def _check_oids(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    for key, data in records:
        # An ASCII oid is UTF-8 with as many chars as bytes; the nid as decode_nid wants it.
        if not (
            0 < len(key) <= codec.OID_CHARS_MAX
            and key.isascii()
            and len(data) == NID_BYTES
            and _nid_ok(data)
        ):
            check_record(db, key, data)


def _check_nodes(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    values = loads_each([data for _key, data in records], RECORD_LIMITS)
    oid_chars_max, u63_max = codec.OID_CHARS_MAX, INT64_MAX
    for (key, data), value in zip(records, values, strict=True):
        if value is UNSURE or len(key) != NID_BYTES or not _nid_ok(key):
            check_record(db, key, data)
            continue
        # Sure without header_of: a dict, set or obj header whose fields have the types and
        # bounds header_of wants (every other header, lists included, takes header_of).
        if type(value) is list and len(value) == 7:
            oid, kind, version, shape_version, next_pos, extra, count = value
            if (
                type(oid) is str
                and 0 < len(oid) <= oid_chars_max
                and type(kind) is str
                and (
                    (extra is None and (kind == "dict" or kind == "set"))
                    or (kind == "obj" and type(extra) is str)
                )
                and type(version) is int
                and type(shape_version) is int
                and 0 <= shape_version <= version <= u63_max
                and type(next_pos) is int
                and 0 <= next_pos <= u63_max
                and type(count) is int
                and 0 <= count <= u63_max
            ):
                continue
        header_of(db, key, value, True)


def _check_entries(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    values = loads_each([data for _key, data in records], RECORD_LIMITS)
    u63_max, sure_types = INT64_MAX, _SURE_VALUE_TYPES
    for (key, data), value in zip(records, values, strict=True):
        # An inline key (a hashed one holds a bucket: check_record) whose ekey is one scalar.
        if (
            value is UNSURE
            or not NID_BYTES + 1 < len(key) <= ENTRY_KEY_INLINE_BYTES_MAX
            or key[NID_BYTES] != ENTRY_INLINE
            or not _nid_ok(key)
            or not scalar_ok(key[NID_BYTES + 1 :])
        ):
            check_record(db, key, data)
            continue
        # Sure without entry_of: a dict or obj item [version, pos, scalar or Ref] or a set
        # member [version] (tombstones, tuples, original keys: entry_of).
        if type(value) is list:
            size = len(value)
            if size == 3:
                version, pos, item = value
                if (
                    type(version) is int
                    and 0 <= version <= u63_max
                    and type(pos) is int
                    and 0 <= pos <= u63_max
                    and type(item) in sure_types
                ):
                    continue
            elif size == 1:
                version = value[0]
                if type(version) is int and 0 <= version <= u63_max:
                    continue
        entry_of(db, key, value, True)


def _check_order(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    for key, data in records:
        if not (len(key) == NID_BYTES + POS_BYTES and _nid_ok(key) and scalar_ok(data)):
            check_record(db, key, data)


def _check_chunks(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    values = loads_each([data for _key, data in records], RECORD_LIMITS)
    for (key, data), value in zip(records, values, strict=True):
        if value is UNSURE or len(key) != NID_BYTES + CHUNK_ID_BYTES or not _nid_ok(key):
            check_record(db, key, data)


def _check_tombs(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    for key, data in records:
        if len(key) <= VERSION_BYTES + NID_BYTES + 1 or data:
            check_record(db, key, data)


_RUN_CHECKS: dict[str, Callable[[str, Sequence[tuple[bytes, bytes]]], None]] = {
    "oids": _check_oids,
    "nodes": _check_nodes,
    "entries": _check_entries,
    "order": _check_order,
    "chunks": _check_chunks,
    "tombs": _check_tombs,
}


def check_records(db: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    """check_record on every (key, data) of one node db, in order, at a fraction of its cost:
    the same records pass, and the first refused one raises what check_record raises for it.
    Keys and values must be bytes (a peer snapshot's items are checked to be)."""
    check = _RUN_CHECKS.get(db.removeprefix("staging_"))
    if check is None:
        for key, data in records:
            check_record(db, key, data)
        return
    check(db, records)
