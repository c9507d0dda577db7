"""Peer frames: Raft messages, joins and snapshot chunks round-trip; garbage is refused by name."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from superstatic_agent import peer_codec
from superstatic_agent.config import PEER_FRAME_BYTES_MAX
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MsgType,
    SnapshotMeta,
)

from superstatic.protocol.errors import ProtocolError

CONF = ConfState.make(["a", "b", "c"], ["d"], {"a": "tcp://h:1", "b": "tcp://h:2", "d": "x"})


def roundtrip(m: Message) -> Message:
    decoded = peer_codec.decode(peer_codec.encode_message(m))
    assert isinstance(decoded, Message)
    return decoded


def test_messages_roundtrip_every_field() -> None:
    entries = (
        Entry(8, 2, EntryKind.NORMAL, b"payload"),
        Entry(9, 3, EntryKind.NOOP, b""),
        Entry(10, 3, EntryKind.CONF, ConfChange("add_learner", "d", "tcp://h:4").encode()),
    )
    messages = [
        Message(MsgType.APPEND, "a", "b", 3, log_term=2, index=7, entries=entries, commit=6),
        Message(MsgType.APPEND_RESP, "b", "a", 3, index=7, reject=True, reject_hint=5, log_term=1),
        Message(MsgType.HEARTBEAT, "a", "c", 3, commit=9, context=b"a.17"),
        Message(MsgType.PRE_VOTE, "c", "a", 4, index=10, log_term=3),
        Message(MsgType.SNAPSHOT, "a", "d", 3, snapshot=SnapshotMeta(40, 3, CONF)),
        Message(MsgType.PROPOSE, "b", "a", 3, entries=(Entry(0, 0, EntryKind.NORMAL, b"p"),)),
        Message(MsgType.READ_INDEX_RESP, "a", "b", 3, index=12, context=b"b.1"),
    ]
    for m in messages:
        assert roundtrip(m) == m


def test_entries_blob_is_reusable_across_followers() -> None:
    entries = (Entry(1, 1, EntryKind.NORMAL, b"x"), Entry(2, 1, EntryKind.NORMAL, b"y"))
    blob = peer_codec.encode_entries(entries)
    for to in ("b", "c"):
        m = Message(MsgType.APPEND, "a", to, 1, entries=entries, commit=0)
        assert peer_codec.decode(peer_codec.encode_message(m, blob)) == m


def test_join_and_chunk_roundtrip() -> None:
    join = peer_codec.decode(peer_codec.encode_join("d", "tcp://127.0.0.1:9"))
    assert join == peer_codec.JoinRequest("d", "tcp://127.0.0.1:9")
    chunk = peer_codec.SnapshotChunk("a", "d", 3, 40, 2, True, b"data")
    assert peer_codec.decode(peer_codec.encode_chunk(chunk)) == chunk
    ack = peer_codec.ChunkAck("d", "a", 3, 40, 2)
    assert peer_codec.decode(peer_codec.encode_chunk_ack(ack)) == ack


def test_welcome_and_probes_roundtrip() -> None:
    conf0 = ConfState.make(["a", "b"], [], {"a": "tcp://h:1", "b": "tcp://h:2"})
    welcome = peer_codec.Welcome("a", "f", conf0)
    assert peer_codec.decode(peer_codec.encode_welcome(welcome)) == welcome
    probe = peer_codec.Probe("c", "a")
    assert peer_codec.decode(peer_codec.encode_probe(probe)) == probe
    reply = peer_codec.ProbeReply("a", "c", 7, 120, 6)
    assert peer_codec.decode(peer_codec.encode_probe_reply(reply)) == reply
    hello = peer_codec.Hello("j", "a", 7, "tcp://127.0.0.1:9")
    assert peer_codec.decode(peer_codec.encode_hello(hello)) == hello
    assert peer_codec.peek_kind(peer_codec.encode_hello(hello)) is peer_codec.PeerKind.HELLO


def envelope(**changes: object) -> list[object]:
    fields = {
        "type": int(MsgType.APPEND),
        "frm": "a",
        "to": "b",
        "term": 2,
        "log_term": 0,
        "index": 0,
        "entries": b"",
        "commit": 0,
        "reject": False,
        "hint": 0,
        "context": b"",
        "snapshot": None,
    }
    fields.update(changes)
    return [peer_codec.PEER_PROTOCOL_VERSION, 0, *fields.values()]


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"", "truncated CBOR"),
        (b"\xff\xff", "indefinite length"),
        (cbor2.dumps({"a": 1}), "CBOR array"),
        (cbor2.dumps([2, 0]), "version"),
        (cbor2.dumps([1, 99]), "kind"),
        (cbor2.dumps([1, True]), "kind"),
        (cbor2.dumps(envelope()[:-1]), "14 fields"),
        (cbor2.dumps(envelope(type=99)), "unknown Raft message type"),
        (cbor2.dumps(envelope(type="5")), "type must be an integer"),
        (cbor2.dumps(envelope(frm="")), "frm"),
        (cbor2.dumps(envelope(frm="x" * 65)), "frm"),
        (cbor2.dumps(envelope(to="a")), "to itself"),
        (cbor2.dumps(envelope(term=-1)), "term"),
        (cbor2.dumps(envelope(term=1 << 64)), "term"),
        (cbor2.dumps(envelope(commit=True)), "commit"),
        (cbor2.dumps(envelope(reject=1)), "reject"),
        (cbor2.dumps(envelope(context=b"x" * 300)), "context"),
        (cbor2.dumps(envelope(entries="x")), "entries"),
        (cbor2.dumps(envelope(entries=cbor2.dumps([]))), "non-empty"),
        (cbor2.dumps(envelope(entries=cbor2.dumps([[2, 1, 0, b""]]))), "not contiguous"),
        (cbor2.dumps(envelope(entries=cbor2.dumps([[1, 3, 0, b""]]))), "term"),
        (cbor2.dumps(envelope(entries=cbor2.dumps([[1, 0, 0, b""]]))), "term of 0"),
        (
            cbor2.dumps(envelope(entries=cbor2.dumps([[1, 2, 0, b""], [2, 1, 0, b""]]))),
            "below the previous",
        ),
        (cbor2.dumps(envelope(entries=cbor2.dumps([[1, 1, 2, b"garbage"]]))), "conf change"),
        (
            cbor2.dumps(envelope(entries=cbor2.dumps([[1, 1, 2, cbor2.dumps(["x", "d", ""])]]))),
            "CONF entry",
        ),
        (cbor2.dumps(envelope(entries=cbor2.dumps([[1, 1, 7, b""]]))), "entry kind"),
        # Entries hold no text: refused at its header (ENTRIES_TEXT_BYTES_MAX, review 27).
        (cbor2.dumps(envelope(entries=cbor2.dumps([[1, 1, 0, "s"]]))), "ENTRIES_TEXT_BYTES_MAX"),
        (cbor2.dumps(envelope(entries=cbor2.dumps([[1, 1, 0]]))), "[index, term, kind, data]"),
        (
            cbor2.dumps(
                envelope(type=int(MsgType.HEARTBEAT), entries=cbor2.dumps([[1, 1, 0, b""]]))
            ),
            "carry no entries",
        ),
        (
            cbor2.dumps(envelope(type=int(MsgType.PROPOSE), entries=cbor2.dumps([[1, 1, 0, b""]]))),
            "without index",
        ),
        (cbor2.dumps(envelope(type=int(MsgType.SNAPSHOT))), "snapshot meta"),
        (cbor2.dumps(envelope(snapshot=[1, 1, ["a"], [], []])), "snapshot meta"),
        (cbor2.dumps(envelope(type=9, snapshot=[1, 5, ["a"], [], []])), "above the message term"),
        (cbor2.dumps(envelope(type=9, snapshot=[0, 1, ["a"], [], []])), "snapshot index"),
        (cbor2.dumps(envelope(type=9, snapshot=[1, 1, [], [], []])), "no voters"),
        (cbor2.dumps(envelope(type=9, snapshot=[1, 1, ["a", "a"], [], []])), "twice"),
        (cbor2.dumps(envelope(type=9, snapshot=[1, 1, ["a"], ["a"], []])), "both"),
        (cbor2.dumps(envelope(type=9, snapshot=[1, 1, ["a"], [], [["a"]]])), "addresses"),
        (cbor2.dumps(envelope(type=9, snapshot=[1, 1, ["a"], [], [[1, "x"]]])), "address id"),
        (cbor2.dumps([1, 1, "d"]), "4 fields"),
        (cbor2.dumps([1, 1, "d", ""]), "must start with"),
        (cbor2.dumps([1, 1, "d", "garbage"]), "must start with"),
        (cbor2.dumps([1, 2, "a", "d", 1, 1, 0, "yes", b""]), "last"),
        (cbor2.dumps([1, 2, "a", "d", 0, 1, 0, True, b""]), "chunk term"),
        (b"\x81" * 100 + b"\x00", "PEER_DEPTH_MAX"),
        (cbor2.dumps([1, 3, "a", "f"]), "5 fields"),
        (cbor2.dumps([1, 3, "a", "f", [["a"], []]]), "[voters, learners, addresses]"),
        (cbor2.dumps([1, 3, "a", "f", [[], [], []]]), "no voters"),
        (cbor2.dumps([1, 3, "a", "f", [["a"], ["a"], []]]), "both"),
        (cbor2.dumps([1, 4, "c"]), "4 fields"),
        (cbor2.dumps([1, 4, "c", ""]), "probe to"),
        (cbor2.dumps([1, 5, "a", "c", 1, 2]), "7 fields"),
        (cbor2.dumps([1, 5, "a", "c", -1, 2, 0]), "term"),
        (cbor2.dumps([1, 5, "a", "c", 1, 2, "x"]), "heard term"),
        (cbor2.dumps([1, 6, "d", "a", 3, 40]), "CHUNK_ACK must have 7 fields"),
        (cbor2.dumps([1, 6, "d", "a", 0, 40, 2]), "chunk ack term"),
        (cbor2.dumps([1, 6, "d", "a", 3, 40, -1]), "chunk ack part"),
        (cbor2.dumps([1, 6, "d", "", 3, 40, 2]), "chunk ack to"),
        (cbor2.dumps([1, 7]), "HELLO must have 6 fields"),
        (cbor2.dumps([1, 7, "j", "a", 0, "tcp://h:1"]), "hello term"),
        (cbor2.dumps([1, 7, "j", "", 3, "tcp://h:1"]), "hello to"),
        (cbor2.dumps([1, 7, "j", "a", 3, "http://h:1"]), "HELLO address must start with"),
        # Refused at the string's header, before it is built (review 27): the field by its
        # position and name, and the limit.
        (
            cbor2.dumps([1, 7, "j", "a", 3, "tcp://" + "h" * 1024]),
            "text in field 5 .address. of a peer HELLO frame is 1030, above the limit "
            "PEER_TEXT_BYTES_MAX=1024",
        ),
        (
            cbor2.dumps([1, 7, "j", "a", 3, b"tcp://h:1"]),
            "byte string in field 5 .address. of a peer HELLO frame is 9, above the limit "
            "PEER_NO_BYTES_MAX=0",
        ),
    ],
)
def test_garbage_is_refused_by_name(frame: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        peer_codec.decode(frame)


def test_oversized_frame_is_refused_before_decoding() -> None:
    with pytest.raises(ProtocolError, match="peer_frame_bytes_max"):
        peer_codec.decode(b"\x00" * (PEER_FRAME_BYTES_MAX + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_anything_but_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        peer_codec.decode(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-2, max_value=1 << 65),
            st.text(max_size=5),
            st.binary(max_size=5),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=3),
        ),
        min_size=14,
        max_size=14,
    )
)
def test_wrongly_typed_messages_are_protocol_errors(fields: list[object]) -> None:
    fields[0], fields[1] = peer_codec.PEER_PROTOCOL_VERSION, 0
    try:
        decoded = peer_codec.decode(cbor2.dumps(fields))
    except ProtocolError:
        return
    assert isinstance(decoded, Message)  # the rare valid draw is a real message
