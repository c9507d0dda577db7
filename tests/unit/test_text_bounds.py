"""Huge texts and byte strings in the agent's frames are refused at their CBOR header, before
they are built (review 27, docs/data-model-v2.md 8.13 "Bounded"): a text of 4-byte UTF-8
characters costs CPython's decoder ~6x its bytes while it builds the str, so a 60 MiB peer frame
peaked at ~360 MiB and a 16 MiB client frame at ~100 MiB before the field's check refused it.

Every frame here is refused; each test measures the Python memory its refusal allocates
(tracemalloc, the frame itself built before measuring) and checks that the message names the
field and the limit. No timing is asserted.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from superstatic_agent import peer_codec as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import hostile

from superstatic.protocol import codec, wire
from superstatic.protocol.errors import LimitExceeded, ProtocolError

# The hostile string's bytes: far above every field's limit, small enough for a shared machine.
# On main a text of these bytes peaked at ~6x them (24 MiB) while being built.
HUGE_BYTES = 4 << 20
# Python memory one refusal may allocate (the frame excluded): a few texts at their limits.
REFUSAL_BYTES_MAX = 1 << 20
# 4-byte UTF-8 characters: the widest str CPython builds, the costliest decode.
WIDE = "\U0001f600"
HUGE_TEXT = hostile.text("tcp://" + WIDE * (HUGE_BYTES // 4))
HUGE_BLOB = hostile.blob(b"\x00" * HUGE_BYTES)
ID = hostile.text("a")
OTHER_ID = hostile.text("b")


def refusal(call: Callable[..., Any], *args: Any) -> tuple[int, Exception]:
    """(peak Python bytes allocated, the ProtocolError or LimitExceeded raised) of `call`."""
    tracemalloc.start()
    try:
        call(*args)
    except (ProtocolError, LimitExceeded) as exc:
        error: Exception = exc
    else:
        raise AssertionError("accepted")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


def assert_bounded(
    call: Callable[..., Any], data: bytes, *names: str, field_bytes: int = 0
) -> None:
    """`call(data)` is refused within REFUSAL_BYTES_MAX (plus `field_bytes`: a byte string its
    field may hold, copied once), naming every one of `names`, never the value."""
    peak, error = refusal(call, data)
    message = str(error)
    assert peak < REFUSAL_BYTES_MAX + field_bytes, (peak, message)
    for name in names:
        assert name in message, (name, message)
    assert WIDE not in message and len(message) < 400, message


# -- peer frames ------------------------------------------------------------------------------


def peer(kind: int, *fields: bytes) -> bytes:
    return hostile.arr(hostile.uint(1), hostile.uint(kind), *fields)


def msg_fields() -> list[bytes]:
    """An APPEND_RESP's 12 fields after [version, kind]: what `pc.encode_message` writes."""
    return [
        hostile.uint(6),  # type: APPEND_RESP
        ID,  # frm
        OTHER_ID,  # to
        hostile.uint(1),  # term
        hostile.uint(0),  # log_term
        hostile.uint(0),  # index
        hostile.blob(b""),  # entries
        hostile.uint(0),  # commit
        b"\xf4",  # reject
        hostile.uint(0),  # reject_hint
        hostile.blob(b""),  # context
        b"\xf6",  # snapshot
    ]


MSG_NAMES = [
    "type", "frm", "to", "term", "log_term", "index", "entries", "commit", "reject",
    "reject_hint", "context", "snapshot",
]  # fmt: skip


def with_field(fields: list[bytes], at: int, value: bytes) -> list[bytes]:
    return [*fields[:at], value, *fields[at + 1 :]]


# Every kind but MSG, its fields after [version, kind], and their names.
PEER_KINDS: dict[str, tuple[int, list[bytes], list[str]]] = {
    "JOIN": (1, [ID, hostile.text("tcp://127.0.0.1:1")], ["frm", "address"]),
    "CHUNK": (
        2,
        [ID, OTHER_ID, *[hostile.uint(1)] * 3, b"\xf5", hostile.blob(b"x")],
        ["frm", "to", "term", "snap_index", "part", "last", "data"],
    ),
    "WELCOME": (
        3,
        [ID, OTHER_ID, hostile.arr(hostile.arr(ID), hostile.arr(), hostile.arr())],
        ["frm", "to", "conf"],
    ),
    "PROBE": (4, [ID, OTHER_ID], ["frm", "to"]),
    "PROBE_REPLY": (5, [ID, OTHER_ID, *[hostile.uint(1)] * 3], ["frm", "to", "term"]),
    "CHUNK_ACK": (6, [ID, OTHER_ID, *[hostile.uint(1)] * 3], ["frm", "to", "term"]),
    "HELLO": (
        7,
        [ID, OTHER_ID, hostile.uint(1), hostile.text("tcp://127.0.0.1:1")],
        ["frm", "to", "term", "address"],
    ),
    "RULES": (8, [ID, OTHER_ID, hostile.uint(1)], ["frm", "to", "rules_max"]),
}


@pytest.mark.parametrize("at", range(12), ids=MSG_NAMES)
def test_a_huge_text_in_any_msg_field_is_refused_unbuilt(at: int) -> None:
    # The fast MSG path (cbor2 alone) reaches every one of these before giving up.
    data = peer(0, *with_field(msg_fields(), at, HUGE_TEXT))
    assert_bounded(pc.decode, data, "PEER_TEXT_BYTES_MAX", MSG_NAMES[at])
    assert_bounded(pc.decode_scanned, data, "PEER_TEXT_BYTES_MAX", MSG_NAMES[at])


def test_a_huge_text_after_the_fields_the_fast_path_reads_is_refused_unbuilt() -> None:
    # frm huge, then a simple value in the last field: the fast path gave up only at its end.
    fields = with_field(with_field(msg_fields(), 1, HUGE_TEXT), 11, b"\xe0")
    assert_bounded(pc.decode, peer(0, *fields), "PEER_TEXT_BYTES_MAX", "frm")
    # A huge text inside a SNAPSHOT's meta (its addresses: nested, scanned only).
    meta = hostile.arr(
        hostile.uint(1),
        hostile.uint(1),
        hostile.arr(ID),
        hostile.arr(),
        hostile.arr(hostile.arr(ID, HUGE_TEXT)),
    )
    fields = with_field(with_field(msg_fields(), 0, hostile.uint(9)), 11, meta)  # SNAPSHOT
    assert_bounded(pc.decode, peer(0, *fields), "PEER_TEXT_BYTES_MAX", "snapshot")


@pytest.mark.parametrize("kind", sorted(PEER_KINDS))
def test_a_huge_text_in_any_field_of_other_peer_kinds_is_refused_unbuilt(kind: str) -> None:
    number, fields, names = PEER_KINDS[kind]
    for at, name in enumerate(names):
        data = peer(number, *with_field(fields, at, HUGE_TEXT))
        assert_bounded(pc.decode, data, "PEER_TEXT_BYTES_MAX", kind, name)


def test_a_huge_text_nested_in_a_welcome_is_refused_unbuilt() -> None:
    conf = hostile.arr(hostile.arr(ID), hostile.arr(), hostile.arr(hostile.arr(ID, HUGE_TEXT)))
    assert_bounded(pc.decode, peer(3, ID, OTHER_ID, conf), "PEER_TEXT_BYTES_MAX", "conf")


@pytest.mark.parametrize("kind", sorted(set(PEER_KINDS) - {"CHUNK"}))
def test_a_huge_byte_string_in_a_kind_without_one_is_refused_unbuilt(kind: str) -> None:
    # These kinds carry no byte string: the scan refuses one at its header (a copy of up to
    # peer_frame_bytes_max before).
    number, fields, names = PEER_KINDS[kind]
    for at, name in enumerate(names):
        data = peer(number, *with_field(fields, at, HUGE_BLOB))
        assert_bounded(pc.decode, data, "PEER_NO_BYTES_MAX", kind, name)


def test_a_huge_text_in_an_entries_blob_is_refused_unbuilt() -> None:
    # An APPEND whose entries blob holds a text where an entry's data goes.
    entries = hostile.arr(hostile.arr(hostile.uint(1), hostile.uint(1), hostile.uint(0), HUGE_TEXT))
    fields = msg_fields()
    fields[0] = hostile.uint(5)  # APPEND
    fields[6] = hostile.blob(entries)
    # The blob itself (a byte string an APPEND may carry up to the frame's bytes) is built
    # once; the text in it never is (~6x its bytes on main).
    data = peer(0, *fields)
    assert_bounded(pc.decode, data, "ENTRIES_TEXT_BYTES_MAX", field_bytes=len(entries))


# -- client frames ----------------------------------------------------------------------------


def agent_reads(data: bytes) -> None:
    """What the agent does with an app's frame before using any of it."""
    frame = wire.decode(data, wire.CLIENT_TO_AGENT)
    wire.check_client_body(frame, body_bytes_max=8 << 20)


def client(frame_type: wire.FrameType, pairs: list[tuple[str, bytes]]) -> bytes:
    body = hostile.cmap([(hostile.text(key), value) for key, value in pairs])
    return hostile.client_frame(int(frame_type), 5, body)


FT = wire.FrameType
SEQ = [("seq", hostile.uint(1)), ("seq_low", hostile.uint(0))]
# (frame type, its fields, the text fields to make huge one at a time).
CLIENT_TEXTS: list[tuple[wire.FrameType, list[tuple[str, bytes]], list[str]]] = [
    (FT.HELLO, [("client", ID)], ["client"]),
    (
        FT.PROPOSE,
        [("client", ID), *SEQ, ("kind", hostile.text("txn")), ("body", hostile.blob(b"x"))],
        ["client", "kind"],
    ),
    (FT.SUBSCRIBE, [("from", hostile.uint(0)), ("heap", ID), ("client", ID)], ["heap", "client"]),
    (
        FT.MEMBERS,
        [("op", hostile.text("add_learner")), ("node", ID), ("address", ID)],
        ["op", "node", "address"],
    ),
    (FT.INSPECT, [("root", ID)], ["root"]),
    (FT.INSPECT, [("oid", ID)], ["oid"]),
    (FT.PING, [("trace", ID)], ["trace"]),
    (FT.STATUS, [("client", ID)], ["client"]),
    (FT.LOAD, [("sub", hostile.uint(1)), ("oids", ID)], ["oids"]),
]


@pytest.mark.parametrize(
    "case", range(len(CLIENT_TEXTS)), ids=[f"{t.name}" for t, _, _ in CLIENT_TEXTS]
)
def test_a_huge_text_in_any_client_field_is_refused_unbuilt(case: int) -> None:
    frame_type, pairs, names = CLIENT_TEXTS[case]
    for name in names:
        huge = [(key, HUGE_TEXT if key == name else value) for key, value in pairs]
        assert_bounded(agent_reads, client(frame_type, huge), "CLIENT_TEXT_BYTES_MAX", name)


def test_a_huge_text_in_a_nested_client_field_or_key_is_refused_unbuilt() -> None:
    # An INSPECT path step (the longest text a client field holds: 1,024 characters).
    path = hostile.arr(hostile.text("a"), HUGE_TEXT)
    data = client(FT.INSPECT, [("root", ID), ("path", path)])
    assert_bounded(agent_reads, data, "CLIENT_TEXT_BYTES_MAX", "path")
    # A PROPOSE_MANY item's kind, and its client id.
    item = hostile.arr(hostile.uint(7), hostile.uint(1), HUGE_TEXT, hostile.blob(b"x"))
    many = [("client", ID), ("seq_low", hostile.uint(0)), ("items", hostile.arr(item))]
    assert_bounded(agent_reads, client(FT.PROPOSE_MANY, many), "CLIENT_TEXT_BYTES_MAX", "items")
    many[0] = ("client", HUGE_TEXT)
    assert_bounded(agent_reads, client(FT.PROPOSE_MANY, many), "CLIENT_TEXT_BYTES_MAX", "client")
    # A map key: named as a key, never quoted.
    body = hostile.cmap([(HUGE_TEXT, hostile.uint(1))])
    data = hostile.client_frame(int(FT.PING), 5, body)
    assert_bounded(agent_reads, data, "CLIENT_TEXT_BYTES_MAX", "key")
    # Outside the body: the envelope's fields.
    data = hostile.arr(hostile.uint(1), hostile.uint(int(FT.PING)), HUGE_TEXT, hostile.cmap([]))
    assert_bounded(agent_reads, data, "CLIENT_TEXT_BYTES_MAX", "req_id")


def test_the_limits_are_the_largest_texts_fields_hold() -> None:
    # Node ids of 64 characters of 4-byte UTF-8, addresses of ADDRESS_BYTES_MAX, an INSPECT
    # step of INSPECT_KEY_CHARS_MAX: every legitimate text fits its frame's bound.
    assert max(pc.ADDRESS_BYTES_MAX, pc.NODE_ID_BYTES_MAX) <= pc.PEER_TEXT_BYTES_MAX
    assert (
        4
        * max(
            wire.INSPECT_KEY_CHARS_MAX,
            wire.ROOT_NAME_CHARS_MAX,
            wire.INSPECT_OID_CHARS_MAX,
            wire.CLIENT_ID_CHARS_MAX,
        )
        <= wire.CLIENT_TEXT_BYTES_MAX
    )
    assert wire.CLIENT_TEXT_BYTES_MAX >= wire.MEMBER_ADDRESS_BYTES_MAX
    # The longest legitimate INSPECT step, of 4-byte characters, still decodes.
    step = WIDE * wire.INSPECT_KEY_CHARS_MAX
    frame = wire.encode(FT.INSPECT, 5, {"root": "r", "path": [step]})
    request = wire.parse_inspect(wire.decode(frame, wire.CLIENT_TO_AGENT))
    assert request.path == (step,)
    address = "tcp://" + "x" * (pc.ADDRESS_BYTES_MAX - 6)
    join = pc.decode(pc.encode_join("a" * 64, address))
    assert isinstance(join, pc.JoinRequest) and join.address == address


def test_the_scan_names_the_text_limit_without_a_field_namer() -> None:
    limits = codec.DecodeLimits(
        what="test value",
        bytes_max=HUGE_BYTES * 2,
        bytes_name="B",
        items_max=8,
        items_name="I",
        depth_max=4,
        depth_name="D",
        text_bytes_max=16,
        text_name="TEST_TEXT_BYTES_MAX",
    )
    peak, error = refusal(codec.loads, hostile.arr(HUGE_TEXT), limits)
    assert peak < REFUSAL_BYTES_MAX
    assert isinstance(error, codec.DecodeLimitExceeded)
    assert error.limit_name == "TEST_TEXT_BYTES_MAX" and error.actual == len(HUGE_TEXT) - 5
    assert "test value" in str(error)


# -- the fast paths refuse exactly what the scan refuses, at the bounds -----------------------


def outcome(call: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """A decode's answer: its value's repr, or its refusal's type, message and reason."""
    try:
        value = call(*args)
    except Exception as exc:  # the type and message are what the comparison is about
        return "refused", type(exc).__name__, str(exc), getattr(exc, "reason", None)
    return "ok", repr(value)


def around(bound: int) -> list[str]:
    """Texts of `bound` - 1, `bound` and `bound` + 1 bytes, ASCII and of 4-byte characters
    (rounded down to whole characters), and one of two bounds (past the fast paths' early
    stop): each side of every bound the frames below meet."""
    texts = []
    for size in (bound - 1, bound, bound + 1, 2 * bound):
        texts += ["h" * size, WIDE * (size // 4) + "h" * (size % 4)]
    return texts


def test_the_fast_msg_path_answers_as_the_scan_on_each_side_of_the_text_bound() -> None:
    bound = pc.PEER_TEXT_BYTES_MAX
    entries = hostile.blob(b"\x00" * (3 * bound))  # long enough for the header walk
    for at in range(12):
        for value in around(bound):
            fields = with_field(msg_fields(), 6, entries) if at != 6 else msg_fields()
            data = peer(0, *with_field(fields, at, hostile.text(value)))
            assert outcome(pc.decode, data) == outcome(pc.decode_scanned, data), (at, len(value))
    # The usual frames: a HEARTBEAT-sized one and an APPEND, accepted both ways.
    for blob in (b"", pc.encode_entries((pc.Entry(1, 1, pc.EntryKind.NORMAL, b"x" * 5000),))):
        fields = with_field(msg_fields(), 6, hostile.blob(blob))
        fields[0] = hostile.uint(5)
        data = peer(0, *fields)
        assert outcome(pc.decode, data)[0] == "ok"
        assert outcome(pc.decode, data) == outcome(pc.decode_scanned, data)


def test_the_fast_client_path_answers_as_the_scan_on_each_side_of_the_text_bound() -> None:
    bound = wire.CLIENT_TEXT_BYTES_MAX
    body = hostile.blob(b"x" * (3 * bound))  # long enough for the header walk
    for frame_type in (FT.PROPOSE, FT.PING, FT.PROPOSE_MANY):
        for value in around(bound):
            for key in ("client", "unknown"):
                pairs = [(key, hostile.text(value)), *SEQ, ("body", body)]
                data = client(frame_type, pairs)
                assert outcome(wire.decode, data, wire.CLIENT_TO_AGENT) == outcome(
                    wire.decode_scanned, data, wire.CLIENT_TO_AGENT
                ), (frame_type, key, len(value))
            # As a key.
            data = hostile.client_frame(
                int(frame_type), 5, hostile.cmap([(hostile.text(value), body)])
            )
            assert outcome(wire.decode, data, wire.CLIENT_TO_AGENT) == outcome(
                wire.decode_scanned, data, wire.CLIENT_TO_AGENT
            )


def test_strings_within_reads_every_header_it_must() -> None:
    # Every scalar kind before a long text, widths of every header, and what ends the walk.
    fields = [
        hostile.uint(1), hostile.uint(1 << 40), hostile.head(1, 300), b"\xf4", b"\xf6",
        b"\xfb" + b"\x00" * 8, b"\xf9\x00\x00", hostile.blob(b"y" * 300), hostile.arr(),
    ]  # fmt: skip
    for long_at in range(len(fields) + 1):
        for text, ok in ((hostile.text("z" * 100), True), (hostile.text("z" * 101), False)):
            data = hostile.arr(*fields[:long_at], text, *fields[long_at:])
            assert codec.strings_within(data, 1, len(fields) + 1, 100, 300) is ok
            blob = hostile.blob(b"z" * 301)
            data = hostile.arr(*fields[:long_at], blob, *fields[long_at:])
            assert codec.strings_within(data, 1, len(fields) + 1, 100, 300) is False
    for stop in (hostile.arr(hostile.uint(1)), hostile.tag(2, hostile.blob(b"")), b"\x9f"):
        data = hostile.arr(stop, hostile.text("z" * 200))
        assert codec.strings_within(data, 1, 2, 100, 100) is False
    truncated = hostile.arr(hostile.text("z" * 200))[:-1]
    assert codec.strings_within(truncated, 1, 1, 100, 100) is False


def test_a_huge_oid_in_a_heap_frame_is_refused_unbuilt() -> None:
    # A HOLD's "oids" (a byte string holding a CBOR array of oids) with one huge oid: its
    # own decode refuses it at its header (4 x HEAP_OID_CHARS_MAX bytes at most).
    oids = hostile.blob(hostile.arr(hostile.text("a"), HUGE_TEXT))
    fields = [("sub", hostile.uint(1)), ("oids", oids), ("part", hostile.uint(0))]
    data = client(FT.HOLD, [*fields, ("last", b"\xf5")])
    assert_bounded(agent_reads, data, "HEAP_OID_BYTES_MAX", field_bytes=len(oids))
    # The longest oid the check takes still decodes.
    frame = wire.encode(FT.LOAD, 5, wire.load_body(1, [WIDE * wire.HEAP_OID_CHARS_MAX]))
    request = wire.check_client_body(wire.decode(frame, wire.CLIENT_TO_AGENT), body_bytes_max=1)
    assert isinstance(request, wire.HeapRequest) and len(request.oids[0]) == 128
