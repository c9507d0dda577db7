"""The agent's frame decodes without the scan (docs/data-model-v2.md 8.13) against the scanned
ones they fall back to: `peer_codec.decode` against `peer_codec.decode_scanned`, `wire.decode`
against `wire.decode_scanned`, `wire.parse_propose_many` against the one before its inline
check, and an APPEND's entries read by cbor2 against `_entries_full`. On valid frames, frames
mutated field by field (simple values, foreign and registered tags, bignums, floats,
non-minimal and huge lengths, nesting, duplicate and non-string keys, invalid UTF-8, missing
and extra fields) and byte by byte (truncated, flipped, extended), every decode gives the same
value or raises the same exception with the same message and reason; valid frames of the usual
shape take the fast path; hostile frames cost as little memory as before."""

from __future__ import annotations

import dataclasses
import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import peer_codec as pc
from superstatic_agent.raft.types import ConfState, Entry, EntryKind, Message, MsgType, SnapshotMeta
from superstatic_bench.frame_decodes import propose_many_before

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import cbor_forms, hostile

from superstatic.protocol import codec, wire
from superstatic.protocol.errors import ProtocolError

INDEX_MAX = (1 << 63) - 1
BODY_BYTES_MAX = 1 << 10
# Python memory a hostile frame's refusal may allocate (the frame itself excluded).
REFUSAL_BYTES_MAX = 1 << 20
# Bounds in bytes that some of the frames tested exceed (a limit each decode must enforce).
SMALL_FRAME_BYTES = 120
SMALL_CLIENT_LIMITS = [
    dataclasses.replace(limits, bytes_max=SMALL_FRAME_BYTES)
    for limits in (wire.CLIENT_FRAME_LIMITS, wire.PROPOSE_MANY_FRAME_LIMITS)
]


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a decode answered: its value's repr (types included: True is not 1), or its
    exception's type, message and reason."""
    try:
        value = call(*args, **kwargs)
    except Exception as exc:  # the type and message are what the comparison is about
        return "refused", type(exc).__name__, str(exc), getattr(exc, "reason", None)
    return "ok", repr(value)


# ---------------------------------------------------------------------- a CBOR writer with quirks


class Pairs(list[tuple[Any, Any]]):
    """A map written from its pairs: keys may repeat, and be anything."""


def write(value: Any, width: Any) -> bytes:
    """CBOR of `value`, headers `width()` wide (cbor_forms.encode, with Pairs and nesting of
    either inside the other)."""
    tp = type(value)
    if tp is list:
        return cbor_forms.head(4, len(value), width()) + b"".join(write(x, width) for x in value)
    if tp is dict or tp is Pairs:
        pairs = list(value.items()) if tp is dict else list(value)
        items = b"".join(write(k, width) + write(v, width) for k, v in pairs)
        return cbor_forms.head(5, len(pairs), width()) + items
    return cbor_forms.encode(value, width)


Raw = cbor_forms.Raw
ODDITIES = [
    Raw(b"\xf7"),  # undefined
    Raw(b"\xf0"),  # simple value 16
    Raw(b"\xf8\x20"),  # simple value 32
    Raw(b"\xf8\x14"),  # false, as a two-byte simple value
    Raw(b"\xc1\x1a\x5f\x00\x00\x00"),  # tag 1 (epoch datetime): not registered
    Raw(b"\xd9\x01\x02\x82\x01\x02"),  # tag 258 (a set)
    Raw(b"\xd8\x1c\x01"),  # tag 28 (shared reference)
    Raw(b"\xc2\x41\x05"),  # a bignum 5 (tag 2)
    Raw(b"\xc2\x49\x01" + b"\x00" * 8),  # a bignum 2**64
    Raw(b"\xc3\x41\x05"),  # a negative bignum
    Raw(b"\xc4\x82\x21\x03"),  # a Decimal
    Raw(b"\xd9\xd9\xfa\x61x"),  # a Ref
    Raw(b"\xd9\xd9\xf8\x82\x01\x02"),  # a tuple
    Raw(b"\xff"),  # a break where an item belongs
    Raw(b"\x5f\x41a\xff"),  # an indefinite byte string
    Raw(b"\x7f\x61a\xff"),  # an indefinite text string
    Raw(b"\x9f\x01\xff"),  # an indefinite array
    Raw(b"\xbf\x61a\x01\xff"),  # an indefinite map
    Raw(b"\x1c"),  # a reserved header
    Raw(b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00"),  # a float NaN
    Raw(b"\xf9\x80\x00"),  # a half float -0.0
    Raw(b"\x81" * 20 + b"\x01"),  # nesting past every frame's depth
    Raw(b"\x9b" + b"\xff" * 8),  # an array of 2**64 - 1 items, none there
    Raw(b"\x5b\x00\x00\x00\x00\xff\xff\xff\xff"),  # bytes of 4 GiB, none there
    Raw(b"\x9a\x00\x01\x00\x00" + b"\x80" * 65_536),  # an array of 65,536 empty arrays
    cbor_forms.text_item(b"\xed\xa0\x80"),  # a text that is not UTF-8
    cbor_forms.text_item(b"a\xe2\x82"),
    Pairs([("k", 1), ("k", 2)]),  # a duplicate key
    Pairs([(1, 2)]),  # an int key
    Pairs([(b"k", 2)]),  # a bytes key
    {},
    [],
    [[]],
    [1, 2],
    {"k": [1]},
]
oddities = st.sampled_from(ODDITIES) | cbor_forms.scalars
widths = st.sampled_from([cbor_forms.fixed(0)] * 4 + [cbor_forms.fixed(w) for w in (1, 2, 4, 8)])


@st.composite
def quirky_widths(draw: Any) -> Any:
    """Header widths drawn per item: mostly shortest, sometimes wider."""
    if draw(st.booleans()):
        return draw(widths)
    choices = draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 4, 8]), min_size=1, max_size=8))
    state = {"i": 0}

    def width() -> int:
        state["i"] += 1
        return choices[state["i"] % len(choices)]

    return width


@st.composite
def byte_mutations(draw: Any, data: bytes) -> bytes:
    """`data` truncated, with bytes flipped, inserted or appended."""
    how = draw(st.sampled_from(["truncate", "flip", "insert", "append", "same"]))
    if how == "same" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    extra = draw(st.binary(min_size=1, max_size=4))
    if how == "insert":
        return data[:at] + extra + data[at:]
    return data + extra


# ---------------------------------------------------------------------- peer frames

ids = st.sampled_from(["a", "b", "node-1", "x" * 64, "x" * 65, "", "a b", "é"])
indexes = st.sampled_from([0, 1, 23, 24, 255, 256, 65_536, 1 << 32, INDEX_MAX]) | st.integers(
    0, 1 << 20
)
terms = st.integers(1, 30) | st.sampled_from([1 << 40, INDEX_MAX])
datas = st.binary(max_size=40) | st.binary(min_size=250, max_size=300)


@st.composite
def messages(draw: Any) -> Message:
    """Raft messages as the core makes them, valid or not for the decoder (frm == to, an id
    too long, entries on a HEARTBEAT, a snapshot)."""
    msg_type = draw(st.sampled_from(list(MsgType)))
    term = draw(terms)
    index = draw(indexes)
    entries: tuple[Entry, ...] = ()
    if msg_type is MsgType.APPEND and draw(st.booleans()):
        count = draw(st.integers(1, 12))
        first = min(index, INDEX_MAX - count)
        start_term = draw(st.integers(1, term))
        entries = tuple(
            Entry(
                first + 1 + i,
                draw(st.sampled_from([start_term, term])) if i else start_term,
                EntryKind.NORMAL,
                draw(datas),
            )
            for i in range(count)
        )
        entries = tuple(sorted(entries, key=lambda e: (e.index, e.term)))
        index = first
    elif msg_type is MsgType.PROPOSE:
        entries = tuple(
            Entry(0, 0, EntryKind.NORMAL, draw(datas)) for _ in range(draw(st.integers(1, 5)))
        )
    snapshot = None
    if msg_type is MsgType.SNAPSHOT:
        conf = ConfState.make(["a", "b"], [], {"a": "tcp://127.0.0.1:1", "b": "tcp://h:2"})
        snapshot = SnapshotMeta(draw(st.integers(1, 100)), draw(st.integers(1, term)), conf)
    return Message(
        type=msg_type,
        frm=draw(ids),
        to=draw(ids),
        term=term,
        log_term=draw(indexes),
        index=index,
        entries=entries,
        commit=draw(indexes),
        reject=draw(st.booleans()),
        reject_hint=draw(indexes),
        context=draw(st.sampled_from([b"", b"no-ack", b"r" * 256, b"r" * 257])),
        snapshot=snapshot,
    )


def peer_frames_agree(data: bytes) -> tuple[Any, ...]:
    """decode and decode_scanned answer alike; returns the answer."""
    new = outcome(pc.decode, data)
    old = outcome(pc.decode_scanned, data)
    assert new == old, (data[:200], new, old)
    # With an agent's own bound on entries, too (the entries' item limit moves with it).
    small = outcome(pc.decode, data, entries_max=4)
    assert small == outcome(pc.decode_scanned, data, entries_max=4), data[:200]
    # And with a peer_frame_bytes_max that some of them exceed.
    limits = pc.frame_limits(bytes_max=SMALL_FRAME_BYTES)
    assert outcome(pc.decode, data, limits=limits) == outcome(
        pc.decode_scanned, data, limits=limits
    )
    return new


def took_fast_path(data: bytes) -> bool:
    raw = pc._loads_flat(data, pc._DEFAULT_LIMITS)
    if raw is None or raw[1] != 0:
        return False
    return pc._message_fast(raw, pc.PEER_FRAME_BYTES_MAX, pc.ENTRIES_PER_MESSAGE_MAX) is not None


@settings(max_examples=400, deadline=None)
@given(messages())
def test_encoded_messages_decode_alike_and_the_valid_ones_fast(message: Message) -> None:
    data = pc.encode_message(message)
    answer = peer_frames_agree(data)
    if answer[0] == "ok" and message.snapshot is None:
        assert answer == ("ok", repr(message))
        assert took_fast_path(data), message


def test_the_usual_messages_take_the_fast_path() -> None:
    entries = tuple(Entry(11 + i, 3, EntryKind.NORMAL, b"x" * 150) for i in range(40))
    for message in (
        Message(MsgType.APPEND_RESP, "b", "a", 3, index=50, commit=49),
        Message(MsgType.HEARTBEAT, "a", "b", 3, commit=50, context=b"no-ack"),
        Message(MsgType.HEARTBEAT_RESP, "b", "a", 3),
        Message(MsgType.APPEND, "a", "b", 3, log_term=3, index=10, commit=9, entries=entries),
        Message(MsgType.PROPOSE, "b", "a", 3, entries=(Entry(0, 0, EntryKind.NORMAL, b"p"),)),
    ):
        data = pc.encode_message(message)
        assert took_fast_path(data)
        assert pc.decode(data) == message


@settings(max_examples=600, deadline=None)
@given(messages(), st.data())
def test_messages_mutated_field_by_field_decode_alike(message: Message, data: Any) -> None:
    fields: list[Any] = cbor2.loads(pc.encode_message(message))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(fields) - 1))
        fields[at] = data.draw(oddities)
    if data.draw(st.integers(0, 5)) == 0:
        if data.draw(st.booleans()):
            del fields[data.draw(st.integers(0, len(fields) - 1))]
        else:
            fields.append(data.draw(oddities))
    frame = write(fields, data.draw(quirky_widths()))
    peer_frames_agree(data.draw(byte_mutations(frame)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_other_peer_frames_decode_alike(data: Any) -> None:
    conf = ConfState.make(["a", "b"], ["c"], {"a": "tcp://127.0.0.1:1", "c": "ipc://x"})
    frame = data.draw(
        st.sampled_from(
            [
                pc.encode_join("c", "tcp://127.0.0.1:7403"),
                pc.encode_hello(pc.Hello("a", "b", 4, "tcp://127.0.0.1:7401")),
                pc.encode_probe(pc.Probe("a", "b")),
                pc.encode_probe_reply(pc.ProbeReply("b", "a", 3, 10, 2)),
                pc.encode_chunk_ack(pc.ChunkAck("b", "a", 3, 10, 0)),
                pc.encode_chunk(pc.SnapshotChunk("a", "b", 3, 10, 0, True, b"data")),
                pc.encode_welcome(pc.Welcome("a", "c", conf)),
            ]
        )
    )
    fields: list[Any] = cbor2.loads(frame)
    if data.draw(st.booleans()):
        fields[data.draw(st.integers(0, len(fields) - 1))] = data.draw(oddities)
    peer_frames_agree(data.draw(byte_mutations(write(fields, data.draw(quirky_widths())))))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_after_a_peer_header_decode_alike(tail: bytes) -> None:
    peer_frames_agree(b"\x8e\x01\x00" + tail)
    peer_frames_agree(b"\x84\x01\x04" + tail)


# ---------------------------------------------------------------------- an APPEND's entries


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_entries_read_in_one_pass_are_the_full_paths(data: Any) -> None:
    prev = data.draw(st.integers(0, 1000) | st.just(INDEX_MAX - 3))
    term = data.draw(st.integers(1, 9))
    count = data.draw(st.integers(1, 6))
    items: list[Any] = [
        [prev + 1 + i, term, 0, data.draw(st.binary(max_size=30))] for i in range(count)
    ]
    if data.draw(st.booleans()):
        entry = items[data.draw(st.integers(0, count - 1))]
        entry[data.draw(st.integers(0, 3))] = data.draw(oddities)
    if data.draw(st.integers(0, 4)) == 0:
        items[0] = data.draw(oddities)
    blob = data.draw(byte_mutations(write(items, data.draw(quirky_widths()))))
    for msg_type in (MsgType.APPEND, MsgType.PROPOSE, MsgType.HEARTBEAT):
        for entries_max in (count, count - 1, 65_536):
            fast = pc._entries_fast(blob, msg_type, term, prev, entries_max)
            full = outcome(pc._entries_full, blob, msg_type, term, prev, entries_max)
            if fast is not None:
                assert ("ok", repr(fast)) == full, blob
    # Forwarded proposals: the one pass takes them as our encoder writes them (minimal
    # headers); wider headers it leaves to the full path, which reads them alike.
    forwarded = write([[0, 0, 0, b"p"], [0, 0, 0, b"q"]], data.draw(quirky_widths()))
    fast = pc._entries_fast(forwarded, MsgType.PROPOSE, 1, 0, 64)
    if forwarded == write([[0, 0, 0, b"p"], [0, 0, 0, b"q"]], lambda: 0):
        assert fast is not None
    if fast is not None:
        full = outcome(pc._entries_full, forwarded, MsgType.PROPOSE, 1, 0, 64)
        assert ("ok", repr(fast)) == full


def test_a_conf_entry_takes_the_full_path() -> None:
    conf = codec.dumps(["add_learner", "c", "tcp://127.0.0.1:7403"])
    entries = (Entry(5, 2, EntryKind.CONF, conf), Entry(6, 2, EntryKind.NORMAL, b"x"))
    blob = pc.encode_entries(entries)
    assert pc._entries_fast(blob, MsgType.APPEND, 2, 4, 64) is None
    message = Message(MsgType.APPEND, "a", "b", 2, log_term=1, index=4, entries=entries)
    assert pc.decode(pc.encode_message(message)) == message


# ---------------------------------------------------------------------- client frames

client_ids = st.sampled_from(["c" * 32, "c" * 64, "c" * 65, "", "k"])
seqs = st.sampled_from([0, 1, 23, 24, 1 << 32, (1 << 63) - 1, 1 << 63]) | st.integers(0, 1000)
kinds = st.sampled_from(["txn", "txn", "open", "close", "TXN", ""])
bodies = st.binary(max_size=40) | st.just(b"b" * BODY_BYTES_MAX) | st.just(b"b" * 1025)


@st.composite
def client_frames(draw: Any) -> tuple[int, int, dict[str, Any]]:
    """(type, req_id, body) of an app's frame as the library writes it, valid or not."""
    writes = [wire.FrameType.PROPOSE, wire.FrameType.PROPOSE_MANY] * 6
    frame_type = draw(st.sampled_from(writes + sorted(wire.CLIENT_TO_AGENT)))
    req_id = draw(seqs)
    body: dict[str, Any]
    if frame_type is wire.FrameType.PROPOSE:
        body = {
            "client": draw(client_ids),
            "seq": draw(seqs),
            "seq_low": draw(seqs),
            "kind": draw(kinds),
            "body": draw(bodies),
            "session": draw(seqs),
            wire.REPLY_MANY_FIELD: True,
        }
        if draw(st.booleans()):
            body["trace"] = True
    elif frame_type is wire.FrameType.PROPOSE_MANY:
        items = []
        for i in range(draw(st.integers(1, 20))):
            item: list[Any] = [req_id + 1 + i, draw(seqs), draw(kinds), draw(bodies)]
            if draw(st.booleans()):
                item.append(draw(st.booleans()))
            items.append(item)
        if draw(st.integers(0, 5)) == 0:
            items.append(list(items[0]))  # a req_id twice
        body = {
            "client": draw(client_ids),
            "seq_low": draw(seqs),
            "session": draw(seqs),
            "items": items,
            wire.REPLY_MANY_FIELD: draw(st.booleans()),
        }
    elif frame_type is wire.FrameType.HELLO:
        body = {"client": draw(client_ids), "model": 2}
    elif frame_type is wire.FrameType.PING:
        body = {"stream": [draw(seqs), draw(seqs)]} if draw(st.booleans()) else {}
    elif frame_type is wire.FrameType.SUBSCRIBE:
        body = wire.subscribe_body(draw(seqs) % 1000, heap="partial", client="c" * 32)
    else:
        body = {}
    return int(frame_type), req_id, body


def client_frames_agree(data: bytes) -> tuple[Any, ...]:
    """decode and decode_scanned answer alike, and so do the body checks; returns the
    decode's answer."""
    new = outcome(wire.decode, data, wire.CLIENT_TO_AGENT)
    old = outcome(wire.decode_scanned, data, wire.CLIENT_TO_AGENT)
    assert new == old, (data[:200], new, old)
    for limits in SMALL_CLIENT_LIMITS:
        assert outcome(wire.decode, data, wire.CLIENT_TO_AGENT, limits) == outcome(
            wire.decode_scanned, data, wire.CLIENT_TO_AGENT, limits
        )
    if new[0] == "ok":
        frame = wire.decode(data, wire.CLIENT_TO_AGENT)
        checked = outcome(wire.check_client_body, frame, body_bytes_max=BODY_BYTES_MAX)
        if frame.type is wire.FrameType.PROPOSE_MANY:
            before = outcome(propose_many_before, frame, body_bytes_max=BODY_BYTES_MAX)
        else:
            before = outcome(wire.check_client_body, frame, body_bytes_max=BODY_BYTES_MAX)
        assert checked == before, (data[:200], checked, before)
    return new


def took_client_fast_path(data: bytes) -> bool:
    limits = wire.CLIENT_FRAME_LIMITS
    if data[2] == wire.FrameType.PROPOSE_MANY:
        limits = wire.PROPOSE_MANY_FRAME_LIMITS
    return wire._client_frame_shallow(data, limits) is not codec.NOT_DECODED


@settings(max_examples=400, deadline=None)
@given(client_frames())
def test_encoded_client_frames_decode_alike_and_the_usual_ones_fast(
    case: tuple[int, int, dict[str, Any]],
) -> None:
    frame_type, req_id, body = case
    data = cbor2.dumps([wire.PROTOCOL_VERSION, frame_type, req_id, body])
    answer = client_frames_agree(data)
    usual = frame_type != wire.FrameType.PING or not body
    if answer[0] == "ok" and usual and len(data) <= wire.PROPOSE_MANY_FRAME_ITEMS_MAX:
        assert took_client_fast_path(data)


@settings(max_examples=600, deadline=None)
@given(client_frames(), st.data())
def test_client_frames_mutated_field_by_field_decode_alike(
    case: tuple[int, int, dict[str, Any]], data: Any
) -> None:
    frame_type, req_id, body = case
    fields: list[Any] = [wire.PROTOCOL_VERSION, frame_type, req_id, body]
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["envelope", "body", "body", "item", "key"]))
        if where == "envelope":
            fields[data.draw(st.integers(0, 3))] = data.draw(oddities)
        elif where == "key" and type(fields[3]) is dict:
            pairs = Pairs(fields[3].items())
            pairs.append((data.draw(oddities | st.sampled_from(list(body) or ["k"])), 1))
            fields[3] = pairs
        elif type(fields[3]) is dict and fields[3]:
            key = data.draw(st.sampled_from(sorted(fields[3])))
            items = fields[3].get("items")
            if where == "item" and type(items) is list and items and type(items[0]) is list:
                item = items[data.draw(st.integers(0, len(items) - 1))]
                if item:
                    item[data.draw(st.integers(0, len(item) - 1))] = data.draw(oddities)
            else:
                fields[3][key] = data.draw(oddities)
    frame = write(fields, data.draw(quirky_widths()))
    client_frames_agree(data.draw(byte_mutations(frame)))


def test_every_oddity_in_every_field_of_a_write_decodes_alike() -> None:
    body: dict[str, Any] = {
        "client": "c" * 32,
        "seq": 9,
        "seq_low": 3,
        "kind": "txn",
        "body": b"b" * 20,
        "session": 7,
        wire.REPLY_MANY_FIELD: True,
    }
    shortest = cbor_forms.fixed(0)
    for oddity in ODDITIES:
        for at in range(4):
            fields: list[Any] = [1, 2, 70, dict(body)]
            fields[at] = oddity
            client_frames_agree(write(fields, shortest))
        for key in body:
            client_frames_agree(write([1, 2, 70, {**body, key: oddity}], shortest))
        client_frames_agree(write([1, 2, 70, {**body, "extra": oddity}], shortest))
        many = {key: body[key] for key in ("client", "seq_low", "session", wire.REPLY_MANY_FIELD)}
        for at in range(5):
            item: list[Any] = [71, 9, "txn", b"b", True]
            item[at] = oddity
            items = [[72, 10, "txn", b"c"], item]
            client_frames_agree(write([1, 10, 70, {**many, "items": items}], shortest))
        for key in many:
            items = [[72, 10, "txn", b"c"]]
            client_frames_agree(write([1, 10, 70, {**many, "items": items, key: oddity}], shortest))
        client_frames_agree(
            write([1, 10, 70, {**many, "items": [[72, 10, "txn", b"c"], oddity]}], shortest)
        )


def test_every_oddity_in_every_field_of_a_message_decodes_alike() -> None:
    entries = (Entry(11, 3, EntryKind.NORMAL, b"x"), Entry(12, 3, EntryKind.NORMAL, b"y"))
    message = Message(MsgType.APPEND, "a", "b", 3, log_term=3, index=10, commit=9, entries=entries)
    for oddity in ODDITIES:
        for at in range(14):
            fields: list[Any] = cbor2.loads(pc.encode_message(message))
            fields[at] = oddity
            peer_frames_agree(write(fields, cbor_forms.fixed(0)))
        for at in range(2):
            for field in range(4):
                items: list[Any] = [[11, 3, 0, b"x"], [12, 3, 0, b"y"]]
                items[at][field] = oddity
                fields = cbor2.loads(pc.encode_message(message))
                fields[8] = write(items, cbor_forms.fixed(0))
                peer_frames_agree(write(fields, cbor_forms.fixed(0)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_after_a_client_header_decode_alike(tail: bytes) -> None:
    for head in (b"\x84\x01\x02", b"\x84\x01\x0a", b"\x84\x01\x02\x05", b"\x84\x01\x0a\x05"):
        client_frames_agree(head + tail)


def test_the_usual_write_frames_take_the_fast_path() -> None:
    body = {
        "client": "c" * 32,
        "seq": 9,
        "seq_low": 3,
        "kind": "txn",
        "body": b"b" * 60,
        "session": 7,
        wire.REPLY_MANY_FIELD: True,
    }
    propose = wire.encode(wire.FrameType.PROPOSE, 1 << 40, body)
    assert took_client_fast_path(propose)
    items = [[100 + i, 9 + i, "txn", b"b" * 60] for i in range(16)]
    many_body = {
        "client": "c" * 32,
        "seq_low": 3,
        "session": 7,
        "items": items,
        wire.REPLY_MANY_FIELD: True,
    }
    many = wire.encode(wire.FrameType.PROPOSE_MANY, 99, many_body)
    assert took_client_fast_path(many)
    frame = wire.decode(many, wire.CLIENT_TO_AGENT)
    parsed = wire.check_client_body(frame, body_bytes_max=BODY_BYTES_MAX)
    assert repr(parsed) == repr(propose_many_before(frame, body_bytes_max=BODY_BYTES_MAX))
    # Past its items limit in bytes, a PROPOSE_MANY is scanned first, as ever.
    many_body["items"] = [[100 + i, 9 + i, "txn", b"b" * 200] for i in range(16)]
    big = wire.encode(wire.FrameType.PROPOSE_MANY, 99, many_body)
    assert len(big) > wire.PROPOSE_MANY_FRAME_ITEMS_MAX
    assert not took_client_fast_path(big)
    assert wire.decode(big, wire.CLIENT_TO_AGENT) == wire.decode_scanned(big, wire.CLIENT_TO_AGENT)


# ---------------------------------------------------------------------- hostile frames


def refused_within_memory(call: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    tracemalloc.start()
    try:
        call(*args, **kwargs)
    except ProtocolError as exc:
        error = exc
    else:
        raise AssertionError("accepted")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < REFUSAL_BYTES_MAX, peak
    return error


def test_hostile_frames_cost_no_more_memory_than_before() -> None:
    many_empty = cbor_forms.head(4, 15 << 20, 0) + b"\x80" * (15 << 20)
    # A peer MSG whose last field is an array of 15 M empty arrays: refused at its header.
    fields = [hostile.uint(1), hostile.uint(0), hostile.uint(6), hostile.text("b")]
    fields += [hostile.text("a")] + [hostile.uint(1)] * 3 + [hostile.blob(b"")]
    fields += [hostile.uint(0), b"\xf4", hostile.uint(0), hostile.blob(b"")]
    peer = hostile.arr(*fields, many_empty)
    error = refused_within_memory(pc.decode, peer)
    assert outcome(pc.decode, peer) == outcome(pc.decode_scanned, peer)
    assert "PEER_FRAME_ITEMS_MAX" in str(error)
    # A PROPOSE_MANY whose items are 15 M empty arrays, and a PROPOSE with them as a field.
    for frame_type, key in ((wire.FrameType.PROPOSE_MANY, "items"), (wire.FrameType.PROPOSE, "x")):
        body = hostile.cmap([(hostile.text(key), many_empty)])
        data = hostile.client_frame(int(frame_type), 5, body)
        refused_within_memory(wire.decode, data, wire.CLIENT_TO_AGENT)
        assert outcome(wire.decode, data, wire.CLIENT_TO_AGENT) == outcome(
            wire.decode_scanned, data, wire.CLIENT_TO_AGENT
        )
    # A body map declaring 2**32 pairs, and an APPEND's entries declaring 2**32 entries.
    huge_map = hostile.client_frame(int(wire.FrameType.PROPOSE), 5, b"\xba\xff\xff\xff\xff")
    refused_within_memory(wire.decode, huge_map, wire.CLIENT_TO_AGENT)
    blob = b"\x9a\xff\xff\xff\xff" + b"\x84\x01\x01\x00\x40" * 1000
    assert pc._entries_fast(blob, MsgType.APPEND, 1, 0, 65_536) is None


def test_the_shallow_decoder_does_not_keep_a_long_input_alive() -> None:
    entries = tuple(Entry(2 + i, 1, EntryKind.NORMAL, b"x" * 1000) for i in range(60))
    message = Message(MsgType.APPEND, "a", "b", 1, log_term=1, index=1, entries=entries)
    data = pc.encode_message(message)
    before = sys.getrefcount(data)
    assert pc.decode(data) == message
    gc.collect()
    assert sys.getrefcount(data) - before == 0


def test_loads_shallow_refuses_what_it_is_not_sure_of() -> None:
    assert codec.loads_shallow(b"\x82\x01\x02", 1) == [1, 2]
    assert codec.loads_shallow(b"\x82\x01\x81\x02", 1) is codec.NOT_DECODED  # depth
    assert codec.loads_shallow(b"\x82\x01\x80", 1) == [1, []]  # (empty: no level)
    assert codec.loads_shallow(b"\x01\x02", 1) is codec.NOT_DECODED  # trailing byte
    assert codec.loads_shallow(b"\xc2\x41\x05", 1) is codec.NOT_DECODED  # a bignum
    assert codec.loads_shallow(b"\xd9\xd9\xfa\x61x", 1) is codec.NOT_DECODED  # a Ref
    assert codec.loads_shallow(b"\xa1\x01\x02", 1) is codec.NOT_DECODED  # an int key
    assert codec.loads_shallow(b"\xa2\x61k\x01\x61k\x02", 1) is codec.NOT_DECODED  # twice
    assert codec.loads_shallow(b"\x9f\xff", 1) is codec.NOT_DECODED  # indefinite
    assert codec.loads_shallow(bytearray(b"\x01"), 1) is codec.NOT_DECODED  # type: ignore[arg-type]
    assert codec.loads_shallow(b"\x01", codec.SHALLOW_DEPTH_MAX + 1) is codec.NOT_DECODED
    # After a refusal, the next input decodes from its own start.
    assert codec.loads_shallow(b"\x83\x01\x02", 1) is codec.NOT_DECODED
    assert codec.loads_shallow(b"\x81\x07", 1) == [7]
