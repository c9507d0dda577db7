"""Per-call tracing: assembly of stamps into hops, the agent's stamp bookkeeping, the app's
bounded stores. Structural only: no timing thresholds."""

from __future__ import annotations

from superstatic_agent import trace as agent_trace
from superstatic_agent.payload import Payload, encode_payload, stamp_payload
from superstatic_agent.raft.types import Entry, EntryKind, Ready, Role

from superstatic.objects import trace as app_trace
from superstatic.protocol import trace as proto


def _ready(entries: tuple[Entry, ...] = (), committed: tuple[Entry, ...] = ()) -> Ready:
    return Ready(None, entries, None, (), committed, (), Role.LEADER, "a", 1)


def test_assemble_hops_are_nonnegative_and_sum_to_the_total() -> None:
    stamps = {name: 1_000 + 10 * i for i, name in enumerate(proto.CHAIN)}
    # Parallel branches: the EVENTS frame before the REPLY, an ack before the leader's fsync.
    stamps["event_rx"] = stamps["reply_sent"] + 1
    stamps["quorum_acked"] = stamps["appended"] + 1
    out = proto.assemble(stamps)
    assert all(ns >= 0 for ns in out["hops_ns"].values())
    assert sum(out["hops_ns"].values()) == out["total_ns"] == stamps["woken"] - stamps["call"]
    assert out["hops_ns"]["event_rx"] == 0 and out["hops_ns"]["quorum_acked"] == 0
    assert out["missing"] == []


def test_assemble_merges_missing_stamps_into_the_next_hop() -> None:
    stamps = {"call": 0, "sent": 5, "reply_rx": 50, "woken": 60}
    out = proto.assemble(stamps)
    assert out["hops_ns"] == {"sent": 5, "reply_rx": 45, "woken": 10}
    assert "agent_recv" in out["missing"]


def test_reply_stamps_are_validated() -> None:
    body = {
        "trace": {"committed": 5, "applied": True, "bogus": 1, "persisted": -1},
        "trace_acks": {"b": 7, 3: 4},
    }
    assert proto.parse_reply_stamps(body) == {"committed": 5}
    assert proto.parse_reply_acks(body) == {"b": 7}
    assert proto.parse_reply_stamps({}) == {}


def test_agent_tracer_follows_one_entry_to_its_reply() -> None:
    tracer = agent_trace.AgentTracer()
    assert tracer.wants({"trace": True}) and not tracer.wants({"trace": 1}) and not tracer.wants({})
    data = encode_payload(Payload("txn", "app-1", 5, 1, 0, b"body"))
    # The log holds the payload as the leader stamped it (its log time): other bytes, the same
    # request. The tracer must still know it (it once matched bytes and lost every stamp).
    stamped = stamp_payload(data, 1_234)
    assert stamped != data
    entry = Entry(7, 1, EntryKind.NORMAL, stamped)
    tracer.on_propose(("app-1", 5), recv_ns=1)
    tracer.on_proposed([("app-1", 5), ("app-2", 5)])
    tracer.on_ready(_ready(entries=(entry,)))
    tracer.on_written(_ready(entries=(entry,)))
    tracer.on_ack("b", 6, voters=3, role=Role.LEADER)  # below the entry: no ack for it
    tracer.on_ack("b", 7, voters=3, role=Role.LEADER)
    tracer.on_ack("c", 9, voters=3, role=Role.LEADER)
    tracer.on_ready(_ready(committed=(entry,)))
    tracer.on_written(_ready(committed=(entry,)))
    reply = tracer.reply_body(7, {"index": 7, "outcome": "ok"})
    stamps = reply[proto.FIELD_REPLY]
    assert set(stamps) == set(proto.STAMPS_AGENT)
    assert stamps["quorum_acked"] == reply[proto.FIELD_ACKS]["b"]
    assert set(reply[proto.FIELD_ACKS]) == {"b", "c"}
    # Answered: no longer tracked; an untraced entry's reply is untouched.
    assert tracer.reply_body(7, {"index": 7}) == {"index": 7}


def test_agent_tracer_is_bounded() -> None:
    tracer = agent_trace.AgentTracer()
    for i in range(agent_trace.TRACE_INFLIGHT_MAX + 10):
        tracer.on_propose(("app", i + 1), recv_ns=i)
    assert len(tracer._by_data) == agent_trace.TRACE_INFLIGHT_MAX


def test_app_event_stamps_are_bounded_and_claimed_once() -> None:
    app_trace.note_events(1, app_trace.TRACE_EVENT_INDEXES_MAX * 2, rx_ns=10, applied_ns=20)
    assert len(app_trace._events) == app_trace.TRACE_EVENT_INDEXES_MAX
    index = app_trace.TRACE_EVENT_INDEXES_MAX * 2
    stamps = {"call": 0, "reply_rx": 15}
    app_trace.finish(stamps, index, {"b": 12}, "tcp://x")
    (record,) = app_trace.take()
    assert record["stamps"]["event_rx"] == 10 and record["stamps"]["replica_applied"] == 20
    assert record["index"] == index and record["acks"] == {"b": 12}
    assert sum(record["hops_ns"].values()) == record["total_ns"]
    assert app_trace.take() == []
    app_trace._events.clear()


def test_tracing_is_off_by_default() -> None:
    # The test environment does not set SUPERSTATIC_TRACE: every hook is skipped.
    assert app_trace.ENABLED is False
