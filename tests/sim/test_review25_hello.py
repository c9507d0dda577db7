"""Review 25 (hostile review of HELLO, docs/agent.md "A member that missed a promotion"): what
senders that are not in our configuration can make a member do with HELLO, on a real Server
over the simulated network."""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import pytest
from superstatic_agent import peer_codec
from superstatic_agent.raft.types import Message, MsgType
from superstatic_agent.server import (
    HELLO_REPLACE_MS,
    HOUSEKEEPING_MS,
    UNLISTED_LEADER_QUIET_MS,
)
from test_peerknown_leader_hello import hello, one_leader


def test_senders_taking_turns_cannot_make_a_member_reconnect_or_log_per_hello(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two senders (strangers without keys, listed keys that are no members with them) take
    turns saying HELLO of a later term: each would replace the remembered leader, so each HELLO
    closed one connection and dialled the other's address, and logged "connected to member".
    Replacing it is bounded in time (HELLO_REPLACE_MS): a storm of them costs a connection and a
    log line per interval, not per frame."""
    server, net, drops = one_leader(tmp_path)
    try:
        term = server.node.term
        box = net.inbox.setdefault("a", deque())
        dials = 0
        caplog.set_level(logging.INFO, logger="superstatic.agent")
        caplog.clear()
        for i in range(200):
            sender = "x" if i % 2 == 0 else "y"
            box.append((sender, hello(sender, term + 1, f"tcp://127.0.0.1:{100 + i % 2}")))
            before = dict(server.peers.peers())
            server.step()
            after = server.peers.peers()
            dials += sum(1 for node, address in after.items() if before.get(node) != address)
            net.now_ms += 1  # 200 ms in all: less than one replacement interval
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert dials <= 1, (dials, drops.snapshot())
        assert len(lines) <= 2, [r.getMessage() for r in lines]
        assert drops.counts["peer_hello_replace_wait"] >= 99, drops.snapshot()
    finally:
        server.storage.close()


def test_a_hello_claiming_a_term_that_already_has_another_leader_is_refused(
    tmp_path: Path,
) -> None:
    """One leader per term (Raft's election safety): a HELLO of our own term while we lead, or
    while we follow another leader in it, comes from no leader. It made us dial the sender's
    address (kept, with its reconnects, for the rest of the term) and take APPENDs of a second
    leader in a term that has one. Refused now (peer_impossible); a later term still is a
    leader's we may have missed."""
    server, net, drops = one_leader(tmp_path)
    try:
        term = server.node.term
        box = net.inbox.setdefault("a", deque())
        box.append(("x", hello("x", term, "tcp://127.0.0.1:9")))
        server.step()
        assert "x" not in server.peers.peers(), server.peers.peers()
        assert drops.counts["peer_impossible"] == 1, drops.snapshot()
        assert server.counters["unlisted_leaders"] == 0
        # A later term: a leader elected while we were cut off. It leads us.
        box.append(("y", hello("y", term + 1, "tcp://127.0.0.1:10")))
        server.step()
        assert server.peers.peers().get("y") == "tcp://127.0.0.1:10"
        beat = Message(MsgType.HEARTBEAT, "y", "a", term + 1, commit=1)
        box.append(("y", peer_codec.encode_message(beat)))
        server.step()
        assert server.node.leader == "y" and server.node.term == term + 1
        # Now a second claim to lead that term, after the replacement interval: refused, and
        # the leader we follow keeps its slot and connection.
        net.now_ms += HELLO_REPLACE_MS
        box.append(("z", hello("z", term + 1, "tcp://127.0.0.1:11")))
        server.step()
        peers = server.peers.peers()
        assert "z" not in peers and peers.get("y") == "tcp://127.0.0.1:10", peers
        assert drops.counts["peer_impossible"] == 2, drops.snapshot()
        assert server.node.leader == "y"
    finally:
        server.storage.close()


def test_a_remembered_leader_that_never_leads_us_is_forgotten(tmp_path: Path) -> None:
    """A HELLO of a later term from a sender that then sends nothing (a stranger, or a leader
    deposed before it reached us): its slot stayed until our own term passed it, and libzmq
    kept re-dialling its address all that time (review25). A remembered unlisted leader that
    sends no APPEND, HEARTBEAT or SNAPSHOT for UNLISTED_LEADER_QUIET_MS is forgotten and its
    address undialled; one that keeps leading us is kept."""
    server, net, drops = one_leader(tmp_path)
    try:
        term = server.node.term
        box = net.inbox.setdefault("a", deque())
        box.append(("x", hello("x", term + 5, "tcp://127.0.0.1:9")))
        server.step()
        assert server.peers.peers().get("x") == "tcp://127.0.0.1:9"
        for _ in range(UNLISTED_LEADER_QUIET_MS // HOUSEKEEPING_MS + 2):
            net.now_ms += HOUSEKEEPING_MS
            server.step()
        assert "x" not in server.peers.peers(), server.peers.peers()
        assert server.counters["unlisted_leaders_forgotten"] == 1
        assert server.node.term == term  # nothing it said was taken

        # A leader that heartbeats us stays remembered past the same interval.
        box.append(("y", hello("y", term + 1, "tcp://127.0.0.1:10")))
        server.step()
        for _ in range(UNLISTED_LEADER_QUIET_MS // HOUSEKEEPING_MS + 2):
            net.now_ms += HOUSEKEEPING_MS
            beat = Message(MsgType.HEARTBEAT, "y", "a", term + 1, commit=1)
            box.append(("y", peer_codec.encode_message(beat)))
            server.step()
        assert server.peers.peers().get("y") == "tcp://127.0.0.1:10", server.peers.peers()
        assert server.node.leader == "y"
        assert server.counters["unlisted_leaders_forgotten"] == 1, drops.snapshot()
    finally:
        server.storage.close()
