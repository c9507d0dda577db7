"""The agent's side of per-call tracing (`--trace`; docs/performance.md "Where one call's time
goes"). Off by default: the server holds `tracer = None` and every hook is one
`if self.tracer is not None:` (an attribute, not a module bool, because tests run several
servers in one process). Nothing is allocated when off.

Only PROPOSEs whose body asks for it (`"trace": true`, sent by an app with SUPERSTATIC_TRACE=1)
are traced. A traced entry is recognised in later Readies by its payload's (client, seq), then
by its log index once a Ready has shown it. Not by its bytes: the leader stamps the log time
into the payload when it appends (logtime.py), so the bytes in the log differ from the bytes
proposed here. Its stamps go back in the PROPOSE REPLY
(`superstatic.protocol.trace` names them); leader-side stamps exist only when this agent is the
leader: an app attached to a follower sees its forward and its own persist, not the leader's.
"""

from __future__ import annotations

import time
from typing import Any

from superstatic_agent.payload import parse_payload
from superstatic_agent.raft.types import Entry, Ready, Role

from superstatic.protocol import trace as _proto
from superstatic.protocol.errors import ProtocolError

# Traced entries in flight here (proposed, not yet answered). A sequential tracer has one; a
# traced load with many callers keeps only the newest this many (older ones lose their stamps,
# their calls still complete).
TRACE_INFLIGHT_MAX = 1_024


class _Record:
    __slots__ = ("acks", "index", "stamps")

    def __init__(self, recv_ns: int) -> None:
        self.stamps: dict[str, int] = {"agent_recv": recv_ns}
        self.acks: dict[str, int] = {}
        self.index = 0


def asked(body: Any) -> bool:
    """Whether a PROPOSE body asks for per-hop stamps. Such a write is answered by a REPLY
    whether or not this agent traces: its app settles it on the REPLY, never on its event."""
    return isinstance(body, dict) and body.get(_proto.FIELD_REQUEST) is True


class AgentTracer:
    def __init__(self) -> None:
        self._by_data: dict[tuple[str, int], _Record] = {}  # proposed, index not seen yet
        self._by_index: dict[int, _Record] = {}  # index known, not answered yet

    def wants(self, body: Any) -> bool:
        return asked(body)

    def on_propose(self, key: tuple[str, int], recv_ns: int) -> None:
        """A traced PROPOSE of (client, seq) `key` was decoded at `recv_ns`. The caller knows
        its key: parsing the payload again here, and in `on_proposed`, cost a traced call two
        payload parses at the leader that an untraced one never makes, inflating the very hops
        being measured (docs/data-model-v2.md section 8.7)."""
        self._by_data[key] = _Record(recv_ns)
        while len(self._by_data) > TRACE_INFLIGHT_MAX:
            del self._by_data[next(iter(self._by_data))]

    def on_proposed(self, keys: list[tuple[str, int]]) -> None:
        """The proposals of these (client, seq) keys went to the core."""
        if not self._by_data:
            return
        now = time.monotonic_ns()
        for key in keys:
            record = self._by_data.get(key)
            if record is not None:
                record.stamps["proposed"] = now

    def on_ready(self, ready: Ready) -> None:
        """A Ready reached the shell: its new entries are "appended", its committed ones
        "committed"."""
        if not self._by_data and not self._by_index:
            return
        now = time.monotonic_ns()
        for entry in ready.entries:
            key = _request_of(entry.data) if self._by_data else None
            record = None if key is None else self._by_data.pop(key, None)
            if record is not None:
                record.index = entry.index
                record.stamps["appended"] = now
                self._by_index[entry.index] = record
                while len(self._by_index) > TRACE_INFLIGHT_MAX:
                    del self._by_index[next(iter(self._by_index))]
        self._stamp(ready.committed, "committed", now)

    def on_written(self, ready: Ready) -> None:
        """The Ready's write (entries fsynced, committed entries applied) returned."""
        if not self._by_index:
            return
        now = time.monotonic_ns()
        self._stamp(ready.entries, "persisted", now)
        self._stamp(ready.committed, "applied", now)

    def on_ack(self, follower: str, index: int, voters: int, role: Role) -> None:
        """The leader received a successful APPEND_RESP: `follower` holds (durably) every entry
        up to `index`. A majority needs voters // 2 followers beside the leader."""
        if role is not Role.LEADER or not self._by_index:
            return
        now = time.monotonic_ns()
        needed = voters // 2
        for record in self._by_index.values():
            if record.index <= index and follower not in record.acks:
                record.acks[follower] = now
                if len(record.acks) == needed:
                    record.stamps["quorum_acked"] = now

    def reply_body(self, index: int, reply: dict[str, Any]) -> dict[str, Any]:
        """The REPLY for entry `index`, with its stamps if it was traced (it is then done)."""
        record = self._by_index.pop(index, None)
        if record is None:
            return reply
        record.stamps["reply_sent"] = time.monotonic_ns()
        return {**reply, _proto.FIELD_REPLY: record.stamps, _proto.FIELD_ACKS: record.acks}

    def _stamp(self, entries: tuple[Entry, ...], name: str, now: int) -> None:
        for entry in entries:
            record = self._by_index.get(entry.index)
            if record is not None:
                record.stamps[name] = now


def _request_of(data: bytes) -> tuple[str, int] | None:
    """(client, seq) of an entry payload; None for anything else (CONF entries, junk)."""
    try:
        payload = parse_payload(data)
    except ProtocolError:  # not a payload: not traced
        return None
    return payload.client, payload.seq
