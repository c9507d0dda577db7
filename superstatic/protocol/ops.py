"""Operations on nodes: their wire format, shape validation, and their one meaning.

A transaction body is CBOR, in one of two forms (docs/data-model-v2.md section 4):

    {"r": {oid: version}, "o": [op, ...]}                       model 1: whole-node read versions
    {"v": 2, "a": base, "r": {oid: [flags, [key, ...]]}, "o": [op, ...]}
                                                                model 2: what was read, per key

and the ops are the same in both (architecture section 4):

    ["new", oid, kind, contents]          create a node
    ["set", oid, key, value]              dict item / object attribute
    ["del", oid, key]                     dict item / object attribute (missing: no-op)
    ["clear", oid]                        dict / list / set / object
    ["splice", oid, start, stop, [v...]]  list[start:stop] = values
    ["extend", oid, [v...]]               list append / extend
    ["add", oid, [v...]]                  set add / update
    ["discard", oid, [v...]]              set discard / remove / difference_update

`apply_op` is THE meaning of an op over plain Python containers; the agent's state machine and
every app replica call it, so they reach the same state by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from superstatic.protocol import codec
from superstatic.protocol.errors import LimitExceeded, ProtocolError

# Ops in one transaction body; mirrors the library's own bound (txn.TXN_OPS_MAX) so a body
# the library would build is always accepted.
TXN_OPS_MAX = 100_000
# Read versions in one body: one per node the body read.
TXN_READS_MAX = 100_000
# Values carried by one op (extend / add / discard / splice / new contents).
OP_VALUES_MAX = 1_000_000
# Read versions (log indexes) and splice positions are 64-bit: larger ints are garbage, and a
# message must never format one (Python refuses to print an int of over 4,300 digits).
INT64_MAX = (1 << 63) - 1
# CBOR items in one transaction body, counted by codec.scan before anything is built (at the
# agent's PROPOSE and again wherever the body is decoded): they bound the objects one body can
# make every replica build (~64 bytes each), so 8 MiB of empty arrays cannot cost a replica
# half a gigabyte. Of the order of the library's own bounds (TXN_OPS_MAX, OP_VALUES_MAX).
TXN_ITEMS_MAX = 1 << 20
# A body travels in one frame: the static bound a stored body is scanned with (the agent checks
# its own, smaller, body_bytes_max when the PROPOSE arrives).
TXN_BODY_BYTES_MAX = 16 << 20
# Read versions are log indexes.
VERSION_MAX = INT64_MAX
# Keys read one by one (d[k], k in d, obj.attr), summed over every node of one model-2 body: each
# costs the leader one record lookup at validation, so bound them like the ops.
TXN_READ_KEYS_MAX = 100_000

# Model-2 read flags of a node (docs/data-model-v2.md section 4). READ_CONTENT: a whole-content
# read (values, items, ==, repr, iteration of a list, any list read but len): any change to the
# node conflicts. READ_SHAPE: a membership or length read (len, iteration of keys or of a set,
# bool): an insert or a delete conflicts, an update of a present key does not. Content implies
# shape; a reader unsure which it did says READ_CONTENT.
READ_CONTENT = 1
READ_SHAPE = 2
READ_FLAGS_ALL = READ_CONTENT | READ_SHAPE

OP_TAGS = ("new", "set", "del", "clear", "splice", "extend", "add", "discard")
# Which node kinds each op applies to.
_KINDS_OF = {
    "set": ("dict", "obj"),
    "del": ("dict", "obj"),
    "clear": ("dict", "list", "set", "obj"),
    "splice": ("list",),
    "extend": ("list",),
    "add": ("set",),
    "discard": ("set",),
}


class OpError(codec.FrameError):
    """An op that is malformed or does not fit its node; names the op (never a value)."""

    def __init__(self, message: str) -> None:
        super().__init__("op", message)


def txn_limits(bytes_max: int = TXN_BODY_BYTES_MAX) -> codec.DecodeLimits:
    """The bounds a transaction body is scanned with."""
    return codec.DecodeLimits(
        what="transaction body",
        bytes_max=bytes_max,
        bytes_name="body_bytes_max" if bytes_max != TXN_BODY_BYTES_MAX else "TXN_BODY_BYTES_MAX",
        items_max=TXN_ITEMS_MAX,
        items_name="TXN_ITEMS_MAX",
        depth_max=codec.DECODE_DEPTH_MAX,
        depth_name="DECODE_DEPTH_MAX",
    )


_TXN_LIMITS = txn_limits()


def attr_name_refused(name: str) -> bool:
    """Attribute names no replica may set on a shared object: dunders (`__class__`,
    `__dict__`, ...) would change what the object is (the library refuses them on assignment;
    a raw client must be refused too, or every app loading the node fails)."""
    return len(name) >= 4 and name.startswith("__") and name.endswith("__")


# ---------------------------------------------------------------------------------- bodies


@dataclass(frozen=True, slots=True)
class NodeReads:
    """What one model-2 transaction read of one node: whole-node flags and single keys (as the
    library has them; the agent puts each in its normal form before looking it up)."""

    flags: int
    keys: list[Any]


@dataclass(frozen=True, slots=True)
class TxnBody:
    """A decoded transaction body of either model (every shape checked by decode_body).

    model 1: `versions` holds {oid: node version read} (0: read as absent), `base` is 0 and
    `reads` is empty. model 2: `base` is the replica's applied index the reads reflect,
    `reads` holds {oid: NodeReads} and `versions` is empty."""

    model: int
    base: int
    versions: dict[str, int]
    reads: dict[str, NodeReads]
    ops: list[list[Any]]


def encode_txn(reads: dict[str, int], ops: list[list[Any]]) -> bytes:
    """The model-1 body bytes of a transaction (ops already in wire form: Refs, not proxies)."""
    assert len(ops) <= TXN_OPS_MAX, len(ops)
    return codec.dumps({"r": reads, "o": ops})


def encode_txn_v2(
    base: int, reads: dict[str, tuple[int, list[Any]]], ops: list[list[Any]]
) -> bytes:
    """The model-2 body bytes: `reads` maps oid to (flags, keys read one by one)."""
    assert 0 <= base <= INT64_MAX, base
    assert len(ops) <= TXN_OPS_MAX, len(ops)
    assert all(0 <= flags <= READ_FLAGS_ALL for flags, _keys in reads.values()), reads
    return codec.dumps(
        {
            "v": 2,
            "a": base,
            "r": {oid: [flags, keys] for oid, (flags, keys) in reads.items()},
            "o": ops,
        }
    )


def decode_txn(body: bytes) -> tuple[dict[str, int], list[list[Any]]]:
    """(model-1 read versions, ops) of a body of either model (a model-2 body has no read
    versions: {}), every shape checked. For the reads of a model-2 body use decode_body."""
    doc = decode_body(body)
    return doc.versions, doc.ops


def decode_body(body: bytes) -> TxnBody:
    """The body, every shape checked; OpError / ProtocolError naming the problem. Scanned
    first (TXN_ITEMS_MAX, registered tags only): a body is untrusted input."""
    doc = codec.loads(body, _TXN_LIMITS)
    if type(doc) is not dict:
        raise OpError("a transaction body is a map")
    if "v" in doc:
        return _decode_v2(doc)
    if set(doc) != {"r", "o"}:
        raise OpError('a transaction body is a map {"r": {oid: version}, "o": [ops]}')
    versions = doc["r"]
    if type(versions) is not dict:
        raise OpError('"r" is a map of object id to version')
    if len(versions) > TXN_READS_MAX:
        raise LimitExceeded(
            "TXN_READS_MAX", TXN_READS_MAX, len(versions), "read versions in a body"
        )
    for oid, version in versions.items():
        _check_oid(oid, "a read")
        if type(version) is not int or not 0 <= version <= INT64_MAX:
            raise OpError(
                f"read version of {oid!r} must be an int in 0..{INT64_MAX}, got {describe(version)}"
            )
    return TxnBody(1, 0, versions, {}, _checked_ops(doc["o"]))


def decode_body_fast(body: bytes) -> TxnBody:
    """decode_body in one pass over the decoded body, for the bodies nearly every entry
    carries: accepts and refuses exactly what decode_body does, with the same result and the
    same exception (tests/unit/test_decode_unscanned.py compares them on random valid and mutated
    bodies). The body is decoded without the scan (codec.loads_unscanned) and every decoded
    value is then checked here; anything this pass is not sure of (an unusual shape, a nested
    tuple, any refusal) goes to decode_body, which decides as it always did."""
    parts = _one_pass(body)
    return decode_body(body) if parts is None else TxnBody(*parts)


def decode_ops_fast(body: bytes) -> list[list[Any]]:
    """decode_body(body).ops, every check of decode_body made (an app's replica applies the
    ops and needs nothing else of the body), as decode_body_fast makes them."""
    parts = _one_pass(body)
    return decode_body(body).ops if parts is None else parts[4]


_Parts = tuple[int, int, dict[str, int], dict[str, NodeReads], list[list[Any]]]


def _one_pass(body: bytes) -> _Parts | None:
    doc = codec.loads_unscanned(body, _TXN_LIMITS)
    if doc is codec.NOT_DECODED:
        return None
    try:
        return _body_one_pass(doc)
    except Exception:  # e.g. an unhashable key: decode_body names it
        return None


def _body_one_pass(doc: Any) -> _Parts | None:
    """The TxnBody fields decode_body makes of `doc`, if every value of `doc` is checked here and
    passes (what the scan checks as well as decode_body's shapes); None otherwise."""
    if type(doc) is not dict:
        return None
    keys = doc.keys()
    if keys == _V2_KEYS:
        version, base, raw = doc["v"], doc["a"], doc["r"]
        if (
            type(version) is not int
            or version != 2
            or type(base) is not int
            or not 0 <= base <= INT64_MAX
            or type(raw) is not dict
            or len(raw) > TXN_READS_MAX
        ):
            return None
        reads: dict[str, NodeReads] = {}
        if raw:
            keys_total = 0
            for oid, entry in raw.items():
                if not _sure_oid(oid) or type(entry) is not list or len(entry) != 2:
                    return None
                flags, read_keys = entry
                if (
                    type(flags) is not int
                    or not 0 <= flags <= READ_FLAGS_ALL
                    or type(read_keys) is not list
                ):
                    return None
                keys_total += len(read_keys)
                if keys_total > TXN_READ_KEYS_MAX:
                    return None
                for key in read_keys:
                    if not _flat_key(key):
                        return None
                reads[oid] = NodeReads(flags, read_keys)
        model = 2
        versions: dict[str, int] = {}
    elif keys == _V1_KEYS:
        base = 0
        reads = {}
        model = 1
        versions = doc["r"]
        if type(versions) is not dict or len(versions) > TXN_READS_MAX:
            return None
        for oid, version in versions.items():
            if not _sure_oid(oid) or type(version) is not int or not 0 <= version <= INT64_MAX:
                return None
    else:
        return None
    # Equal to the literals, and str themselves: an EnumStr "o" equals "o" too (cbor2's
    # strict map keys refuse it already; this pass does not lean on that).
    for key in keys:
        if type(key) is not str:
            return None
    ops = _ops_one_pass(doc["o"])
    return None if ops is None else (model, base, versions, reads, ops)


_V1_KEYS = frozenset({"r", "o"})
_V2_KEYS = frozenset({"v", "a", "r", "o"})


def _ops_one_pass(ops: Any) -> list[list[Any]] | None:
    if type(ops) is not list or len(ops) > TXN_OPS_MAX:
        return None
    plain = _PLAIN_TYPES
    for i, op in enumerate(ops):
        if type(op) is not list:
            return None
        size = len(op)
        tag = op[0] if size else None
        if (
            size >= 3
            and type(tag) is str
            and (
                (size == 4 and tag == "set" and type(op[3]) in plain)
                or (size == 3 and tag == "del")
            )
            and _sure_oid(op[1])
            and type(op[2]) in plain
        ):
            hash(op[2])  # (raises for a signalling NaN: decode_body then names it)
            continue
        # Any other op: the full checks (they look at every value's type), then the nesting,
        # which they bound less tightly than the scan does (a tuple is two CBOR levels).
        check_op_fully(op, i)
        if not _flat_op(op):
            return None
    return ops


def _sure_oid(oid: Any) -> bool:
    """An oid _check_oid accepts, without its messages (short enough to never need encoding)."""
    return type(oid) is str and 0 < len(oid) <= _OID_CHARS_ALWAYS_FIT


def _flat(value: Any) -> bool:
    """A value check_value accepts whose CBOR nesting is at most a tuple or frozenset of
    scalars (deeper ones go to the scan, which counts CBOR levels as check_value does not)."""
    tp = type(value)
    if tp in _PLAIN_TYPES:
        return True
    if tp is tuple or tp is frozenset:
        return all(type(x) in _PLAIN_TYPES for x in value)
    return False


def _flat_key(key: Any) -> bool:
    if not _flat(key):
        return False
    hash(key)
    return True


def _flat_op(op: list[Any]) -> bool:
    """Every value of an op check_op_fully accepted is _flat."""
    tag = op[0]
    if tag in ("set", "del"):
        return all(_flat(v) for v in op[2:])
    if tag == "clear":
        return True
    if tag == "splice":
        return all(_flat(v) for v in op[4])
    if tag != "new":
        return all(_flat(v) for v in op[2])
    kind, contents = op[2], op[3]
    if kind == "dict":
        return all(_flat(k) and _flat(v) for k, v in contents)
    if kind == "obj":
        return all(_flat(v) for _name, v in contents[1])
    return all(_flat(v) for v in contents)


def _decode_v2(doc: dict[Any, Any]) -> TxnBody:
    if doc.get("v") != 2 or type(doc["v"]) is not int or set(doc) != {"v", "a", "r", "o"}:
        raise OpError(
            'a model-2 transaction body is a map {"v": 2, "a": base index, '
            '"r": {oid: [flags, [keys]]}, "o": [ops]}'
        )
    base = doc["a"]
    if type(base) is not int or not 0 <= base <= INT64_MAX:
        raise OpError(f'"a" (the read base index) must be an int in 0..{INT64_MAX}')
    raw = doc["r"]
    if type(raw) is not dict:
        raise OpError('"r" is a map of object id to [flags, [keys]]')
    if len(raw) > TXN_READS_MAX:
        raise LimitExceeded("TXN_READS_MAX", TXN_READS_MAX, len(raw), "nodes read in a body")
    reads: dict[str, NodeReads] = {}
    keys_total = 0
    for oid, entry in raw.items():
        _check_oid(oid, "a read")
        if type(entry) is not list or len(entry) != 2:
            raise OpError(f"the read of {oid!r} is [flags, [keys]]")
        flags, keys = entry
        if type(flags) is not int or not 0 <= flags <= READ_FLAGS_ALL:
            raise OpError(f"the read flags of {oid!r} must be an int in 0..{READ_FLAGS_ALL}")
        if type(keys) is not list:
            raise OpError(f"the keys read of {oid!r} are an array")
        keys_total += len(keys)
        if keys_total > TXN_READ_KEYS_MAX:
            raise LimitExceeded(
                "TXN_READ_KEYS_MAX", TXN_READ_KEYS_MAX, keys_total, "keys read in a body"
            )
        what = f"a key read of {oid!r}"
        try:
            for key in keys:
                codec.check_value(key, what)
                hash(key)
        except TypeError:
            raise OpError(f"{what}: an unhashable key") from None
        except OpError:
            raise
        except ProtocolError as e:
            raise OpError(str(e)) from None
        reads[oid] = NodeReads(flags, keys)
    return TxnBody(2, base, {}, reads, _checked_ops(doc["o"]))


def _checked_ops(ops: Any) -> list[list[Any]]:
    if type(ops) is not list:
        raise OpError('"o" is an array of ops')
    if len(ops) > TXN_OPS_MAX:
        raise LimitExceeded("TXN_OPS_MAX", TXN_OPS_MAX, len(ops), "ops in a transaction body")
    for i, op in enumerate(ops):
        check_op(op, i)
    return ops


def check_op(op: Any, position: int = 0) -> None:
    """Raises OpError unless `op` is a well-formed op (values in wire form)."""
    size = len(op) if type(op) is list else 0
    if (
        size >= 3
        and type(op[0]) is str
        and (
            (size == 4 and op[0] == "set" and type(op[3]) in _PLAIN_TYPES)
            or (size == 3 and op[0] == "del")
        )
        and type(op[1]) is str
        and 0 < len(op[1]) <= _OID_CHARS_ALWAYS_FIT
        and type(op[2]) in _PLAIN_TYPES
        and _hashable(op[2])
    ):
        # Nearly every op (a dict item or attribute written or deleted): what the full
        # checks accept, without building the messages they would name. Anything else takes
        # them, and is refused with the same message as ever (tests/unit/test_codec_ops.py).
        return
    check_op_fully(op, position)


def check_op_fully(op: Any, position: int = 0) -> None:
    """check_op without its fast path (the reference its tests compare it with)."""
    # type() before `in`: a list or map in the tag's place is never hashed or compared.
    if type(op) is not list or not op or type(op[0]) is not str or op[0] not in OP_TAGS:
        raise OpError(
            f"op #{position} is not one of {', '.join(OP_TAGS)}: got {codec.describe(op)}"
        )
    tag = op[0]
    arity = _ARITY[tag]
    if len(op) != arity:
        raise OpError(f"op #{position} {tag!r} has {len(op)} fields, expected {arity}")
    _check_oid(op[1], f"op #{position} {tag!r}")
    # The oid is a checked str of at most OID_CHARS_MAX chars: safe to name.
    what = f"op #{position} {tag!r} on {op[1]!r}"
    try:
        if tag == "new":
            if type(op[2]) is not str:
                raise OpError(f"{what}: the node kind is {codec.describe(op[2])}, not a str")
            codec.check_contents(op[2], op[3], what)
            _check_count(op[3][1] if op[2] == "obj" else op[3], what)
            if op[2] == "obj":
                for name, _value in op[3][1]:
                    if attr_name_refused(name):
                        raise OpError(f"{what}: {_REFUSED_NAME}")
        elif tag == "set":
            codec.check_value(op[2], what + " key")
            codec.check_value(op[3], what + " value")
            hash(op[2])
        elif tag == "del":
            codec.check_value(op[2], what + " key")
            hash(op[2])
        elif tag == "splice":
            start, stop, values = op[2], op[3], op[4]
            if (
                type(start) is not int
                or type(stop) is not int
                or not 0 <= start <= stop <= INT64_MAX
            ):
                raise OpError(f"{what}: start and stop are ints with 0 <= start <= stop < 2**63")
            _check_values(values, what)
        elif tag in ("extend", "add", "discard"):
            _check_values(op[2], what)
            if tag != "extend":
                for v in op[2]:
                    hash(v)
    except TypeError:
        raise OpError(f"{what}: an unhashable key or set element") from None
    except OpError:
        raise
    except ProtocolError as e:  # a value or contents check of the codec: same kind of fault
        raise OpError(str(e)) from None


# Fields of each op, the tag included.
_ARITY = {
    "new": 4,
    "set": 4,
    "del": 3,
    "clear": 2,
    "splice": 5,
    "extend": 3,
    "add": 3,
    "discard": 3,
}
assert set(_ARITY) == set(OP_TAGS)
# A value codec.check_value accepts at once (a scalar or a Ref), and an oid so short that its
# UTF-8 always fits OID_BYTES_MAX (4 bytes per char at most): check_op's fast path.
_PLAIN_TYPES = codec.SCALAR_TYPES | {codec.Ref}
_OID_CHARS_ALWAYS_FIT = min(codec.OID_CHARS_MAX, codec.OID_BYTES_MAX // 4)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except Exception:  # e.g. a signalling NaN Decimal: the full check says what it says
        return False
    return True


def _check_values(values: Any, what: str) -> None:
    if type(values) is not list:
        raise OpError(f"{what}: values are an array")
    _check_count(values, what)
    for v in values:
        codec.check_value(v, what + " value")


def _check_count(values: list[Any], what: str) -> None:
    if len(values) > OP_VALUES_MAX:
        raise LimitExceeded("OP_VALUES_MAX", OP_VALUES_MAX, len(values), f"values in {what}")


def _check_oid(oid: Any, what: str) -> None:
    if type(oid) is not str or not 0 < len(oid) <= codec.OID_CHARS_MAX:
        raise OpError(
            f"{what}: an object id is a str of 1..{codec.OID_CHARS_MAX} chars, got "
            f"{codec.describe(oid)}"
        )
    if len(oid) * 4 > codec.OID_BYTES_MAX and len(oid.encode()) > codec.OID_BYTES_MAX:
        raise OpError(
            f"{what}: an object id is at most OID_BYTES_MAX={codec.OID_BYTES_MAX} bytes of "
            f"UTF-8, got {len(oid.encode())}"
        )


_REFUSED_NAME = (
    "an attribute name that starts and ends with '__' (a dunder such as __class__ or "
    "__dict__) cannot be set on a shared object"
)


# Type and size of an untrusted value, for messages (the agent's payload, sessions and state
# machine import it from here): the codec's, one implementation.
describe = codec.describe


# ---------------------------------------------------------------------------------- meaning


def container_from(kind: str, contents: Any) -> tuple[Any, str | None]:
    """(plain container, class name) for record contents of a node of `kind`."""
    if kind == "dict":
        return {k: v for k, v in contents}, None
    if kind == "list":
        return list(contents), None
    if kind == "set":
        return set(contents), None
    assert kind == "obj", kind
    class_name, attrs = contents
    return {name: v for name, v in attrs}, class_name


def contents_of(kind: str, container: Any, class_name: str | None) -> Any:
    """Record contents for a plain container (inverse of container_from). Set elements are in
    a canonical order (by encoding) so every agent writes identical bytes."""
    if kind == "dict":
        return [[k, v] for k, v in container.items()]
    if kind == "list":
        return list(container)
    if kind == "set":
        return sorted(container, key=codec.dumps)
    assert kind == "obj" and class_name is not None, (kind, class_name)
    return [class_name, [[name, v] for name, v in container.items()]]


def encode_node(version: int, kind: str, container: Any, class_name: str | None) -> bytes:
    """The node record of a plain container: codec.encode_record(version, kind,
    contents_of(...)) in one pass. Scalars (nearly every key and value) are checked inline
    instead of walked, which makes encoding a 5,000-item dict several times faster; this runs
    for every node an apply batch changed, on every agent."""
    assert version >= 0 and kind in codec.NODE_KINDS, (version, kind)
    scalar = codec.PASS_TYPES
    tagged = codec.tagged
    contents: Any
    if kind == "dict":
        contents = [
            [k, v] if type(k) in scalar and type(v) in scalar else [tagged(k), tagged(v)]
            for k, v in container.items()
        ]
    elif kind == "list":
        contents = [v if type(v) in scalar else tagged(v) for v in container]
    elif kind == "set":
        contents = [tagged(v) for v in contents_of(kind, container, class_name)]
    else:
        assert class_name is not None
        contents = [
            class_name,
            [[name, v if type(v) in scalar else tagged(v)] for name, v in container.items()],
        ]
    return codec.dumps_tagged([version, kind, contents])


def check_fits(kind: str, op: list[Any]) -> None:
    """Raises OpError unless `op` (not "new") applies to a node of `kind`: part of the op's
    meaning, shared by apply_op and the agent's per-key apply."""
    tag = op[0]
    kinds = _KINDS_OF.get(tag)
    if kinds is None or kind not in kinds:
        raise OpError(f"op {tag!r} does not apply to a {kind} node ({op[1]!r})")
    if kind == "obj" and tag in ("set", "del") and type(op[2]) is str and attr_name_refused(op[2]):
        # Only here is the node known to be an object (a dict's "__class__" key is just data).
        raise OpError(f"op {tag!r} on {op[1]!r}: {_REFUSED_NAME}")


def apply_op(kind: str, container: Any, op: list[Any]) -> None:
    """Applies one op (not "new") to the plain container of a node of `kind`. Raises OpError
    when the op does not fit the node; the caller then discards the whole transaction."""
    check_fits(kind, op)
    tag = op[0]
    if tag == "set":
        container[op[2]] = op[3]
    elif tag == "del":
        container.pop(op[2], None)
    elif tag == "clear":
        container.clear()
    elif tag == "splice":
        start, stop = op[2], op[3]
        if stop > len(container):
            raise OpError(
                f"splice [{start}:{stop}] is outside list {op[1]!r} of length {len(container)}"
            )
        container[start:stop] = op[4]
    elif tag == "extend":
        container.extend(op[2])
    elif tag == "add":
        container.update(op[2])
    else:
        container.difference_update(op[2])


def op_oid(op: list[Any]) -> str:
    """The node an op names."""
    return op[1]  # type: ignore[no-any-return]


def refs_of_op(op: list[Any]) -> Iterator[str]:
    """Object ids the values of an op reference (for garbage collection bookkeeping)."""
    tag = op[0]
    if tag == "new":
        yield from codec.refs_in_contents(op[2], op[3])
    elif tag == "set":
        yield from codec.refs_in(op[2])
        yield from codec.refs_in(op[3])
    elif tag == "splice":
        for v in op[4]:
            yield from codec.refs_in(v)
    elif tag in ("extend", "add"):
        for v in op[2]:
            yield from codec.refs_in(v)
