"""Object ids bound to their creator: state-machine rules version 3 (docs/virtual-heap.md
section 7, "Object ids are bound to their creator"; agent/rules.py).

Under rules >= 3 a `new` op's oid (other than the root table's) must be
`<p>.<counter in lowercase hex>`, `p` the entry's client id [:PREFIX_CHARS] (what the library's
`Session.new_oid` makes), the counter 1..2**64-1 written without leading zeros. Per prefix
the db `oid_marks` keeps a record `[owner, high, window]` from the prefix's first `new` on,
forever (a mark that went with its session would let the prefix create its collected oids
again):

- `owner`: the full client id of the prefix's first creator. Another client id with the same
  prefix (64 random bits from the library: never honest) is refused.
- `high`: the highest counter created; `window`: bit k set when counter `high - 1 - k` was
  created (k < WINDOW_BITS). A counter in the window created before is refused. The window is
  there because one connection's threads each take their oids when their bodies run but commit
  in any order: a thread that took `p.5` and commits after another's `p.6` is not refused. A
  counter more than WINDOW_BITS below `high` is the owner's own (the owner check comes first)
  and is created if no node has it now, as under rules 2: refusing it (as a conflict, first
  built) starved a body whose connection's other threads created more than WINDOW_BITS objects
  during each of its runs (review 38: ConflictError after TXN_ATTEMPTS_MAX runs). So no OTHER
  client id ever creates a prefix's oid; the owner itself could create one of its collected
  oids again only far below its highest, which the library never does (its counter only goes
  up), so that is left to raw tools that misuse their own client id.

Record: key the prefix (utf-8, at most PREFIX_CHARS chars), value CBOR `[owner, high, window]`.
Read and written through the caller's write transaction (one read per entry creating nodes,
one write when its mark moves), after the entry's body was checked: a refused entry changes
no mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import lmdb
from superstatic_agent.nodeops import Rejected
from superstatic_agent.payload import loads_plain
from superstatic_agent.sealed import record_get, record_put

from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.wire import CLIENT_ID_CHARS_MAX

DB_NAME = "oid_marks"
# How much of the client id names its oids (superstatic/objects/session.py: client_id[:16]).
PREFIX_CHARS = 16
# The counter is at most 16 hex digits (below 2**64): a mark record stays ~40 bytes.
COUNTER_HEX_CHARS_MAX = 16
# Counters below the mark remembered one by one (one connection's threads commit the oids
# they took in any order; see the module docstring).
WINDOW_BITS = 64
_WINDOW_MASK = (1 << WINDOW_BITS) - 1
_HEX_DIGITS = frozenset("0123456789abcdef")
_RULE = "rules 3: an object id is <client id[:16]>.<counter in hex> of its creator"


@dataclass(slots=True)
class Mark:
    """One prefix's record: its owner, the highest counter created, the window below it."""

    owner: str
    high: int
    window: int


def prefix_of(client: str) -> str:
    """The prefix a client's oids carry."""
    return client[:PREFIX_CHARS]


def oid_for(client: str, counter: int) -> str:
    """The oid rules 3 lets `client` create with `counter` (as Session.new_oid makes it)."""
    assert 1 <= counter < 1 << (4 * COUNTER_HEX_CHARS_MAX), counter
    return f"{prefix_of(client)}.{counter:x}"


def counter_of(oid: str, prefix: str) -> int | None:
    """The counter of `oid` if it is `<prefix>.<counter in canonical hex>`, else None."""
    if len(oid) <= len(prefix) + 1 or not oid.startswith(prefix) or oid[len(prefix)] != ".":
        return None
    digits = oid[len(prefix) + 1 :]
    if len(digits) > COUNTER_HEX_CHARS_MAX or digits[0] == "0":
        return None  # too long, or not canonical: "p.01" would name counter 1 a second time
    if not _HEX_DIGITS.issuperset(digits):
        return None
    return int(digits, 16)


def encode_mark(mark: Mark) -> bytes:
    return cbor2.dumps([mark.owner, mark.high, mark.window])


def decode_mark(raw: bytes) -> Mark:
    """The record's Mark; ProtocolError if it is not one this module wrote."""
    try:
        value: Any = loads_plain(raw, 1)
    except ProtocolError as exc:
        raise ProtocolError(f"oid mark record: {exc}") from None
    if not (type(value) is list and len(value) == 3):
        raise ProtocolError("oid mark record is not [owner, high, window]")
    owner, high, window = value
    if type(owner) is not str or not 1 <= len(owner) <= CLIENT_ID_CHARS_MAX:
        raise ProtocolError(f"oid mark owner is not a str of 1..{CLIENT_ID_CHARS_MAX} chars")
    if type(high) is not int or not 1 <= high < 1 << (4 * COUNTER_HEX_CHARS_MAX):
        raise ProtocolError("oid mark high is not an int in 1..2**64-1")
    if type(window) is not int or not 0 <= window <= _WINDOW_MASK:
        raise ProtocolError(f"oid mark window is not an int of {WINDOW_BITS} bits")
    return Mark(owner, high, window)


def check_record(key: bytes, raw: bytes) -> None:
    """A shipped record (peer snapshot staging) is one this module writes; ProtocolError
    naming what is wrong (never the bytes) otherwise."""
    try:
        prefix = key.decode()
    except UnicodeDecodeError:
        raise ProtocolError("oid mark key is not utf-8") from None
    if not 1 <= len(prefix) <= PREFIX_CHARS:
        raise ProtocolError(f"oid mark key is not 1..{PREFIX_CHARS} chars")
    mark = decode_mark(raw)
    if prefix_of(mark.owner) != prefix:
        raise ProtocolError("oid mark owner does not carry its key's prefix")


def bind(
    txn: lmdb.Transaction, db: Any, client: str, news: Sequence[tuple[int, str]]
) -> Mark | None:
    """Checks the oids an entry of `client` creates, `(op position, oid)` in op order (the root
    table's left out); raises Rejected (nothing is written) if one breaks the rule, else
    returns the prefix's mark moved past them, for `put` once the body applied (None: nothing
    created)."""
    if not news:
        return None
    prefix = prefix_of(client)
    raw = record_get(txn, db, DB_NAME, prefix.encode())
    mark = Mark(client, 0, 0) if raw is None else decode_mark(raw)
    for i, oid in news:
        counter = counter_of(oid, prefix)
        if counter is None:
            raise Rejected(
                "error",
                f"op #{i} 'new': object {oid} is not named <client id[:16]>.<counter in hex> "
                f"of this entry's client ({_RULE})",
            )
        if mark.owner != client:
            raise Rejected(
                "error",
                f"op #{i} 'new': object {oid}: its prefix was first used by another client id "
                f"({_RULE}; a prefix has one owner)",
            )
        _move(mark, counter, i, oid)
    return mark


def _move(mark: Mark, counter: int, i: int, oid: str) -> None:
    """Records `counter` as created in `mark`; Rejected if it may have been created before."""
    if counter > mark.high:
        shift = counter - mark.high
        if mark.high == 0 or shift > WINDOW_BITS:
            # Nothing created yet, or everything remembered (the old high included) falls out
            # of the window; never shifted: a shift of up to 2**64 would take that many bits.
            mark.window = 0
        else:
            mark.window = ((mark.window << shift) | (1 << (shift - 1))) & _WINDOW_MASK
        mark.high = counter
        return
    below = mark.high - 1 - counter  # bit of `counter` in the window; -1: it is `high`
    if below >= WINDOW_BITS:
        # The owner's own counter, far below its highest: not remembered, not refused (the
        # module docstring says why); the state machine still refuses an oid a node has now.
        return
    if below < 0 or mark.window >> below & 1:
        raise Rejected(
            "error",
            f"op #{i} 'new': object {oid} was created before ({_RULE}, never created twice)",
        )
    mark.window |= 1 << below


def put(txn: lmdb.Transaction, db: Any, client: str, mark: Mark) -> None:
    record_put(txn, db, prefix_of(client).encode(), encode_mark(mark))
