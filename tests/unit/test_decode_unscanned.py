"""ops.decode_body_fast and decode_ops_fast (one pass, no scan) against ops.decode_body (scan,
decode, checks): on random valid bodies and on bodies mutated at the CBOR level (indefinite and
non-minimal lengths, duplicate keys, simple values, foreign tags, deep nesting, trailing bytes)
and at the byte level, they give the same result or raise the same exception with the same
message."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import random
import uuid
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from superstatic.client import stream
from superstatic.protocol import codec, ops, wire


def _outcome(decode: Any, body: Any) -> tuple[str, ...]:
    try:
        txn = decode(body)
    except Exception as exc:  # the type and message are what the comparison is about
        return "refused", type(exc).__name__, str(exc)
    return "ok", repr(txn)


def _agree(body: Any) -> tuple[str, ...]:
    """decode_body_fast and decode_ops_fast agree with decode_body on `body`."""
    fast = _outcome(ops.decode_body_fast, body)
    assert fast == _outcome(ops.decode_body, body)
    ops_only = _outcome(ops.decode_ops_fast, body)
    assert ops_only == _outcome(lambda b: ops.decode_body(b).ops, body)
    return fast


# ---------------------------------------------------------------------- a CBOR writer with quirks


class Raw(bytes):
    """Bytes spliced into the encoding as they are (a simple value, a foreign tag, ...)."""


class Pairs(list[tuple[Any, Any]]):
    """A map written from its pairs: keys may repeat."""


class Tagged:
    def __init__(self, tag: int, payload: Any) -> None:
        self.tag = tag
        self.payload = payload


def _head(major: int, arg: int, rnd: random.Random, quirk: float) -> bytes:
    widths = [w for w, top in ((0, 24), (1, 1 << 8), (2, 1 << 16), (4, 1 << 32), (8, 1 << 64))
              if arg < top]  # fmt: skip
    width = widths[0] if rnd.random() >= quirk else rnd.choice(widths)
    if width == 0:
        return bytes([major << 5 | arg])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + arg.to_bytes(width, "big")


def write(value: Any, rnd: random.Random, quirk: float = 0.0) -> bytes:
    """CBOR of `value`; with probability `quirk` each length is written indefinite (a
    container or string) or wider than needed."""
    indefinite = rnd.random() < quirk / 2
    tp = type(value)
    if tp is Raw:
        return bytes(value)
    if tp is Tagged:
        return _head(6, value.tag, rnd, quirk) + write(value.payload, rnd, quirk)
    if tp is int and -(1 << 64) <= value < (1 << 64):
        return _head(0, value, rnd, quirk) if value >= 0 else _head(1, -1 - value, rnd, quirk)
    if tp is str or tp is bytes:
        major = 3 if tp is str else 2
        data = value.encode() if tp is str else value
        if indefinite:
            return bytes([major << 5 | 31]) + _head(major, len(data), rnd, quirk) + data + b"\xff"
        return _head(major, len(data), rnd, quirk) + data
    if tp is list:
        items = b"".join(write(x, rnd, quirk) for x in value)
        if indefinite:
            return b"\x9f" + items + b"\xff"
        return _head(4, len(value), rnd, quirk) + items
    if tp is dict or tp is Pairs:
        pairs = list(value.items()) if tp is dict else list(value)
        items = b"".join(write(k, rnd, quirk) + write(v, rnd, quirk) for k, v in pairs)
        if indefinite:
            return b"\xbf" + items + b"\xff"
        return _head(5, len(pairs), rnd, quirk) + items
    if tp is tuple:
        return _head(6, codec.TAG_TUPLE, rnd, quirk) + write(list(value), rnd, quirk)
    return codec.dumps(value)  # anything else of the registry: its own encoding


# ---------------------------------------------------------------------- bodies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.decimals(places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from([decimal.Decimal("NaN"), decimal.Decimal("-0"), decimal.Decimal("Infinity")]),
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([None, datetime.UTC])),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.builds(codec.Ref, st.sampled_from(["o.1", "o.2", "x" * 128, "é" * 128])),
    st.builds(codec.enum_form, st.just("app.E"), st.just(codec.ENUM_BY_STR), st.text(max_size=3)),
    st.builds(codec.enum_form, st.just("app.E"), st.just(codec.ENUM_BY_INT), st.integers()),
    st.builds(codec.enum_form, st.just("app.E"), st.just(codec.ENUM_BY_NAME), st.just("A")),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
# What a hostile agent could put anywhere: CBOR the library never writes.
RAW_ODDITIES = [
    Raw(b"\xf7"),  # undefined
    Raw(b"\xf0"),  # simple value 16
    Raw(b"\xf8\x20"),  # simple value 32
    Raw(b"\xc1\x1a\x5f\x00\x00\x00"),  # tag 1 (epoch datetime): not registered
    Raw(b"\xd9\x01\x02\x82\x01\x02"),  # tag 258 (a set)
    Raw(b"\xd8\x1e\x82\x01\x02"),  # tag 30 (a fraction)
    Raw(b"\xc4\x82\x21\xc2\x58\x20" + b"\x01" * 32),  # a Decimal with a bignum mantissa
    Raw(b"\xc4\x82\x21\xc2\x59\x04\x01" + b"\x01" * 1025),  # its mantissa past the bound
    Raw(b"\xd8\x04\x82\x21\x03"),  # a Decimal, its tag written non-minimally
    Raw(b"\x81" * 300 + b"\x01"),  # nesting past DECODE_DEPTH_MAX
    Raw(b"\xd9\xd9\xf8\x81" * 120 + b"\x01"),  # tuples 120 deep: 240 CBOR levels
    Raw(b"\xd9\xd9\xf8\x81" * 130 + b"\x01"),  # ... 260
    Raw(b"\xd9\xd9\xfa\x61x"),  # a Ref
    Raw(b"\xff"),  # a break where an item belongs
]
oddities = st.one_of(
    st.sampled_from(RAW_ODDITIES),
    st.builds(Tagged, st.sampled_from([codec.TAG_TUPLE, codec.TAG_FROZENSET, 55899, 2]), values),
    st.dictionaries(st.text(max_size=2), values, max_size=2),
    st.lists(values, max_size=2),
)
anything = st.one_of(values, values, values, values, values, values, oddities)
oids = st.one_of(st.sampled_from(["o.1", "o.2", "x" * 128, "é" * 128, "x" * 129, ""]), anything)


@st.composite
def op_docs(draw: Any) -> Any:
    tag = draw(st.sampled_from(["set", "del", "set", "clear", "splice", "extend", "add", "discard",
                                "new", "new"]))  # fmt: skip
    oid = draw(oids)
    vals = st.lists(anything, max_size=3)
    if tag == "set":
        op = [tag, oid, draw(anything), draw(anything)]
    elif tag == "del":
        op = [tag, oid, draw(anything)]
    elif tag == "clear":
        op = [tag, oid]
    elif tag == "splice":
        start = draw(st.integers(min_value=-1, max_value=3))
        op = [tag, oid, start, start + draw(st.integers(0, 2)), draw(vals)]
    elif tag == "new":
        kind = draw(st.sampled_from(["dict", "list", "set", "obj", "map"]))
        if kind == "dict":
            contents: Any = draw(st.lists(st.lists(anything, min_size=2, max_size=2), max_size=3))
        elif kind == "obj":
            name = st.sampled_from(["a", "b", "__class__", "__x"])
            attrs = st.lists(st.tuples(name, anything).map(list), max_size=3)
            contents = [draw(st.sampled_from(["app.C", 5])), draw(attrs)]
        else:
            contents = draw(vals)
        op = [tag, oid, kind, contents]
    else:
        op = [tag, oid, draw(vals)]
    if draw(st.integers(0, 20)) == 0:
        op = op[:-1] if draw(st.booleans()) else [*op, draw(anything)]
    return op


@st.composite
def body_docs(draw: Any) -> Any:
    ops_list = draw(st.lists(op_docs(), max_size=4))
    if draw(st.booleans()):
        reads = draw(
            st.dictionaries(
                oids.filter(lambda o: type(o) is str),
                st.tuples(
                    st.integers(min_value=-1, max_value=4), st.lists(anything, max_size=3)
                ).map(list),
                max_size=2,
            )
        )
        version = draw(st.sampled_from([2, 2, 2, 1, True]))
        base = draw(st.sampled_from([0, 5, -1, 1 << 63]))
        doc: Any = Pairs([("v", version), ("a", base), ("r", reads), ("o", ops_list)])
    else:
        versions = draw(st.dictionaries(oids.filter(lambda o: type(o) is str), st.integers(-1, 9)))
        doc = Pairs([("r", versions), ("o", ops_list)])
    shuffle = draw(st.integers(0, 9))
    if shuffle == 0:  # a key repeated (the first value then never reaches the checks)
        doc.insert(0, (doc[-1][0], draw(anything)))
    elif shuffle == 1:
        doc.append((draw(st.sampled_from(["x", "o", "v"])), draw(anything)))
    elif shuffle == 2:  # a key that equals "o" but is not a str
        key = codec.enum_form("app.E", codec.ENUM_BY_STR, doc[-1][0])
        doc[-1] = (key, doc[-1][1])
    elif shuffle == 3:
        doc = draw(anything)
    return doc


@settings(max_examples=600, deadline=None)
@given(
    body_docs(),
    st.randoms(use_true_random=False),
    st.sampled_from([0.0, 0.0, 0.0, 0.05]),
    st.integers(0, 9),
    st.binary(max_size=3),
)
def test_fast_decode_agrees_with_decode_body(
    doc: Any, rnd: random.Random, quirk: float, mutation: int, noise: bytes
) -> None:
    body = write(doc, rnd, quirk)
    if mutation == 1 and body:  # a byte flipped
        at = rnd.randrange(len(body))
        body = body[:at] + bytes([body[at] ^ (1 << rnd.randrange(8))]) + body[at + 1 :]
    elif mutation == 2:  # trailing bytes
        body += noise or b"\x00"
    elif mutation == 3 and body:  # truncated
        body = body[: rnd.randrange(len(body))]
    elif mutation == 4:  # bytes inserted
        at = rnd.randrange(len(body) + 1)
        body = body[:at] + noise + body[at:]
    _agree(body)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("set"), st.just("o.1"), values, values),
            st.tuples(st.just("del"), st.just("o.1"), values),
            st.tuples(st.just("extend"), st.just("l.1"), st.lists(values, max_size=3)),
            st.tuples(st.just("new"), st.just("n.1"), st.just("list"), st.lists(values)),
        ).map(list),
        max_size=5,
    ),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_bodies_the_library_writes_take_the_fast_path(ops_list: list[Any], base: int) -> None:
    """Valid bodies of either model decode to what decode_body makes of them, and the common
    ones (flat values) without decode_body."""
    for body in (
        ops.encode_txn_v2(base, {"o.1": (ops.READ_SHAPE, ["k", 1])}, ops_list),
        ops.encode_txn({"o.1": base}, ops_list),
    ):
        assert _agree(body)[0] == "ok"


def test_the_fast_path_decides_without_decode_body_for_flat_bodies(monkeypatch: Any) -> None:
    body = ops.encode_txn_v2(
        7,
        {"kv": (ops.READ_CONTENT, [("a", 1)])},
        [
            ["set", "kv", "k", "v" * 100],
            ["del", "kv", codec.Ref("r.1")],
            ["new", "n.1", "obj", ["app.C", [["x", (1, 2)]]]],
            ["splice", "l.1", 0, 1, [uuid.UUID(int=5), decimal.Decimal("NaN")]],
            ["clear", "kv"],
        ],
    )
    expected = repr(ops.decode_body(body))

    def refuse(_body: bytes) -> ops.TxnBody:
        raise AssertionError("decode_body called")

    monkeypatch.setattr(ops, "decode_body", refuse)
    assert repr(ops.decode_body_fast(body)) == expected


def test_unusual_bodies_are_refused_as_decode_body_refuses_them() -> None:
    good = ops.encode_txn_v2(3, {}, [["set", "kv", "k", 1]])
    deep = codec.dumps((((((1,),),),),))
    cases = [
        good + b"\x00",  # trailing bytes
        good[:-1],  # truncated
        b"\xbf" + good[1:] + b"\xff",  # an indefinite map
        b"\xa3\x61o\x80" + cbor2.dumps({"r": {}, "o": []})[1:],  # "o" twice: cbor2 keeps the last
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", decimal.Decimal("1.5")]]),
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", codec.loads(deep)]]),
        ops.encode_txn_v2(3, {}, [["set", "kv", "k", "x" * (ops.TXN_ITEMS_MAX + 1)]]),
        cbor2.dumps({"v": 2, "a": 1, "r": {}, "o": [["set", "kv", "k", cbor2.undefined]]}),
        None,
        bytearray(good),
    ]
    outcomes = [_agree(body)[0] for body in cases]
    assert outcomes == ["refused"] * 3 + ["ok"] * 4 + ["refused"] * 2 + ["ok"]
    # Lengths declared far past the bytes there are: cbor2 must not allocate for them first
    # (the scan refuses them at their header; here they are refused without building much).
    for head in (b"\x5b", b"\x7b", b"\x9b", b"\xbb", b"\xc2\x5b"):
        for declared in (1 << 31, 1 << 40, 1 << 60):
            body = head + declared.to_bytes(8, "big") + b"\x01"
            assert codec.loads_unscanned(body, ops.txn_limits()) is codec.NOT_DECODED
            assert _agree(body)[0] == "refused"


def test_what_only_the_scan_bounds_is_refused_as_it_refuses_it() -> None:
    """Bodies that pass every check of decode_body but one bound of the scan: the fast path
    must not accept them (each case fails if the guard against it is removed)."""
    valid = cbor2.dumps({"v": 2, "a": 1, "r": {}, "o": [["set", "kv", "k", 1]]})
    # "o" as an EnumStr key: equal to "o", but not a str (the scan refuses the tag as a key).
    enum_o = valid.replace(b"\x61o", codec.dumps(codec.enum_form("app.E", 2, "o")))
    # A Decimal whose mantissa is past DECIMAL_MANTISSA_BYTES_MAX (cbor2 alone would build it).
    mantissa = b"\xc4\x82\x21\xc2\x59\x04\x01" + b"\x01" * 1025
    big_decimal = valid[:-1] + mantissa
    # More CBOR items than TXN_ITEMS_MAX in ops decode_body's checks accept.
    half = ops.TXN_ITEMS_MAX // 2 + 1
    many_ops = ops.encode_txn_v2(1, {}, [["extend", "l.1", [1] * half]] * 2)
    for body, limit in [
        (enum_o, "map key"),
        (big_decimal, "DECIMAL_MANTISSA_BYTES_MAX"),
        (many_ops, "TXN_ITEMS_MAX"),
    ]:
        outcome = _agree(body)
        assert outcome[0] == "refused" and limit in outcome[2], outcome


def test_nested_tuples_are_left_to_decode_body(monkeypatch: Any) -> None:
    """A value nested deeper than a tuple of scalars goes to decode_body: the scan counts two
    CBOR levels per tuple, check_value one, so only the scan's count is trusted there."""
    calls: list[bytes] = []
    full = ops.decode_body

    def counted(body: bytes) -> ops.TxnBody:
        calls.append(body)
        return full(body)

    monkeypatch.setattr(ops, "decode_body", counted)
    flat = ops.encode_txn_v2(1, {}, [["set", "kv", "k", (1, 2)]])
    nested = ops.encode_txn_v2(1, {}, [["extend", "l.1", [((1,),)]]])
    ops.decode_body_fast(flat)
    assert calls == []
    ops.decode_body_fast(nested)
    assert calls == [nested]


# ---------------------------------------------------------------------- EVENTS frames

# An equal copy of the limits: wire.decode takes its unscanned path only for the module's own
# AGENT_FRAME_LIMITS object, so this one decodes every frame through codec.loads (the reference).
_SCANNED = dataclasses.replace(wire.AGENT_FRAME_LIMITS)


def _frame_outcome(data: bytes, limits: Any) -> tuple[str, ...]:
    try:
        frame = wire.decode(data, wire.AGENT_TO_CLIENT, limits)
    except Exception as exc:
        return "refused", type(exc).__name__, str(exc)
    return "ok", repr(frame)


def _frame_agrees(data: bytes) -> tuple[str, ...]:
    fast = _frame_outcome(data, None)
    assert fast == _frame_outcome(data, _SCANNED)
    return fast


small_ints = st.integers(min_value=0, max_value=2**64 - 1)
texts = st.text(max_size=3)


@st.composite
def event_items(draw: Any) -> Any:
    body = ops.encode_txn_v2(1, {}, [["set", "kv", draw(texts), 1]])
    item = [
        draw(small_ints),
        draw(st.one_of(st.none(), texts)),
        draw(st.one_of(st.none(), small_ints)),
        draw(st.sampled_from(["ok", "noop", "conflict"])),
        draw(st.one_of(st.none(), st.just(body), st.binary(max_size=4))),
        draw(st.lists(st.text(min_size=1, max_size=3), max_size=2)),
        draw(small_ints),
        draw(
            st.lists(
                st.tuples(texts, st.sampled_from(["dict", "obj"]), st.one_of(st.none(), texts)).map(
                    list
                ),
                max_size=2,
            )
        ),
    ]
    item.append(draw(texts))
    return item[: draw(st.sampled_from([8] * 6 + [9, 7, 6, 5]))]


@st.composite
def events_frames(draw: Any) -> Any:
    body = Pairs(
        [
            ("ev", draw(st.lists(event_items(), max_size=4))),
            ("to", draw(small_ints)),
            ("t", draw(small_ints)),
        ]
    )
    shuffle = draw(st.integers(0, 9))
    if shuffle == 0:
        body.insert(0, ("ev", draw(anything)))  # a key twice
    elif shuffle == 1:
        body.append((draw(st.sampled_from(["x", "more"])), draw(anything)))
    elif shuffle == 2:
        body.pop(draw(st.integers(0, 2)))
    header = [draw(st.sampled_from([1] * 9 + [2])), int(wire.FrameType.EVENTS), draw(small_ints)]
    return [*header, body] if draw(st.integers(0, 19)) else [*header, body, draw(anything)]


def plant(doc: Any, rnd: random.Random, odd: Any) -> Any:
    """`doc` with one of its values (any one, at any depth) replaced by `odd`."""
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if type(node) is list:
            for i, child in enumerate(node):
                slots.append((node, i))
                walk(child)
        elif type(node) is Pairs:
            for i, (_key, child) in enumerate(node):
                slots.append((node, i))
                walk(child)

    walk(doc)
    leaves = [(parent, i) for parent, i in slots if type(parent[i]) not in (list, Pairs, tuple)]
    if leaves and rnd.random() < 0.8:
        slots = leaves  # (a field, not a whole container: most of what a frame holds)
    if slots:
        parent, i = rnd.choice(slots)
        if type(parent) is Pairs:
            parent[i] = (parent[i][0], odd)
        else:
            parent[i] = odd
    return doc


@settings(max_examples=300, deadline=None)
@given(
    events_frames(),
    st.randoms(use_true_random=False),
    st.sampled_from([0.0, 0.0, 0.05]),
    st.integers(0, 3),
    st.binary(max_size=3),
)
def test_events_frames_decode_as_through_the_scan(
    frame: Any, rnd: random.Random, quirk: float, mutation: int, noise: bytes
) -> None:
    data = write(frame, rnd, quirk)
    if mutation == 1:
        at = rnd.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rnd.randrange(8))]) + data[at + 1 :]
    elif mutation == 2:
        data += noise or b"\x00"
    elif mutation == 3:
        data = data[: rnd.randrange(len(data))]
    _frame_agrees(data)


@settings(max_examples=300, deadline=None)
@given(
    events_frames(),
    st.randoms(use_true_random=False),
    st.one_of(st.sampled_from(RAW_ODDITIES), oddities, values),
)
def test_a_value_the_scan_refuses_is_refused_in_any_place(
    frame: Any, rnd: random.Random, odd: Any
) -> None:
    """One value anywhere in a frame replaced by CBOR the library never writes (a simple
    value, a foreign tag, a deep nest, a map, another type)."""
    _frame_agrees(write(plant(frame, rnd, odd), rnd))


def _valid_frame() -> list[Any]:
    body = ops.encode_txn_v2(4, {}, [["set", "kv", "k", 1]])
    events = [
        [5, "c" * 32, 9, "ok", body, ["o.1", "o.2"], 77, [["o.3", "obj", "app.C"]]],
        [6, None, None, "noop", None, ["o.5"], 78, [["o.4", "dict", None]]],
    ]
    return [1, int(wire.FrameType.EVENTS), 3, Pairs([("ev", events), ("to", 6), ("t", 78)])]


def _places(frame: list[Any]) -> list[tuple[Any, ...]]:
    """Where a value sits in _valid_frame: a path of indexes (a Pairs index picks a value)."""
    places: list[tuple[Any, ...]] = [(0,), (2,), (3, 1), (3, 2)]
    for e in range(2):
        places += [(3, 0, e, f) for f in range(8)]
        places += [(3, 0, e, 5, 0), (3, 0, e, 7, 0)]
        places += [(3, 0, e, 7, 0, f) for f in range(3)]
    return places


def _put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step][1] if type(doc) is Pairs else doc[step]
    if type(doc) is Pairs:
        doc[path[-1]] = (doc[path[-1]][0], value)
    else:
        doc[path[-1]] = value


def test_every_field_of_an_events_frame_is_checked() -> None:
    """Each value of a valid EVENTS frame, in turn, replaced by each of RAW_ODDITIES (and a few
    types no field has): refused or accepted exactly as through the scan."""
    others = [Raw(cbor2.dumps(x)) for x in ({"m": 1}, 1.5, True, [1], b"b", "s", 7)]
    assert _frame_agrees(write(_valid_frame(), random.Random(0)))[0] == "ok"
    for place in _places(_valid_frame()):
        for odd in [*RAW_ODDITIES, *others]:
            frame = _valid_frame()
            _put(frame, place, odd)
            _frame_agrees(write(frame, random.Random(0)))
    long_event = _valid_frame()
    long_event[3][0][1][0].append(Raw(b"\xf7"))  # a 9th field
    assert _frame_agrees(write(long_event, random.Random(0)))[0] == "refused"


def test_events_frames_the_agent_sends_decode_unscanned(monkeypatch: Any) -> None:
    items = [
        [5, "c" * 32, 9, "ok", ops.encode_txn_v2(4, {}, [["set", "kv", "k", 1]]), [], 77, []],
        [6, None, None, "noop", None, ["o.1", "o.2"], 78, [["o.3", "obj", "app.C"]]],
    ]
    data = cbor2.dumps([1, int(wire.FrameType.EVENTS), 3, {"ev": items, "to": 6, "t": 78}])
    assert _frame_agrees(data)[0] == "ok"

    def refuse(*_args: Any) -> Any:
        raise AssertionError("codec.loads called")

    monkeypatch.setattr(codec, "loads", refuse)
    assert wire.decode(data, wire.AGENT_TO_CLIENT).body["ev"] == items


def _event_outcome(check: Any, item: Any) -> tuple[str, ...]:
    try:
        return "ok", repr(check(item))
    except Exception as exc:
        return "refused", type(exc).__name__, str(exc)


_EDGES = [
    None, True, False, -1, 0, 1, 2**63 - 1, 2**63, "", "x" * 64, "x" * 65, b"", b"b", [], ["o"],
    [""], [["o", "dict", None]], "ok", "noop", "error", "dup", "bogus", 1.0,
    codec.enum_form("app.E", codec.ENUM_BY_STR, "ok"),
    codec.enum_form("app.E", codec.ENUM_BY_INT, 5),
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(event_items())
def test_the_streams_inline_event_check_agrees_with_the_full_one(item: Any) -> None:
    """stream._event checks nearly every event inline: for any item it gives what
    _event_checked gives, or the same refusal."""
    assert _event_outcome(stream._event, item) == _event_outcome(stream._event_checked, item)


def test_every_field_of_a_common_event_is_checked_inline_as_in_full() -> None:
    """Each field of a common event (and a 9th one), in turn, replaced by each edge value."""
    for at in range(9):
        for odd in _EDGES:
            item: list[Any] = [7, "c" * 32, 3, "ok", b"body", [], 99, []]
            if at < 8:
                item[at] = odd
            else:
                item.append(odd)
            fast = _event_outcome(stream._event, item)
            assert fast == _event_outcome(stream._event_checked, item), (at, odd)
