"""When a cluster moves to newer state-machine rules (agent/rules_gate.py) and the RULES peer
frame that carries what a member knows (agent/peer_codec.py)."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from superstatic_agent import peer_codec
from superstatic_agent.cli import config_from, parser
from superstatic_agent.config import AgentConfig
from superstatic_agent.payload import Payload, encode_payload, is_rules
from superstatic_agent.peer_codec import RulesKnown
from superstatic_agent.rules import RULES_NEWEST, rules_payload
from superstatic_agent.rules_gate import (
    HEARD_MAX,
    RULES_ADVERTISE_MS,
    RULES_HEARD_MS,
    RULES_NEW_WAIT_MS,
    RulesGate,
)

from superstatic.protocol.errors import ProtocolError

MEMBERS = ("a", "b", "c")


def test_a_member_tells_a_new_leader_at_once_then_every_advertise_interval() -> None:
    gate = RulesGate("b", rules_max=2, version=1)
    assert gate.tell(None, 1, 0.0) is None  # no leader known
    assert gate.tell("b", 1, 0.0) is None  # we lead
    assert gate.tell("a", 1, 0.0) == RulesKnown("b", "a", 2)
    assert gate.tell("a", 1, 0.5) is None
    assert gate.tell("c", 2, 0.5) == RulesKnown("b", "c", 2)  # a new leader: at once
    assert gate.tell("c", 2, 0.5 + RULES_ADVERTISE_MS / 1000) is not None
    gate.version = 2  # the cluster runs what we know: a new leader is told once, no repeats
    assert gate.tell("c", 3, 10.0) == RulesKnown("b", "c", 2)
    assert gate.tell("c", 3, 20.0) is None


def test_the_leader_moves_up_only_when_every_member_said_so_lately() -> None:
    gate = RulesGate("a", rules_max=2, version=1)
    gate.heard(RulesKnown("b", "a", 2), 0.0)
    assert gate.to_propose(5, MEMBERS, 0.1) is None  # c said nothing
    gate.heard(RulesKnown("c", "a", 1), 0.1)
    assert gate.to_propose(5, MEMBERS, 0.2) is None  # c applies only rules 1
    gate.heard(RulesKnown("c", "a", 7), 0.2)  # more than we know: we move to ours
    late = 0.2 + RULES_HEARD_MS / 1000 + 0.1
    assert gate.to_propose(5, MEMBERS, late) is None  # b's word is too old
    assert gate.to_propose(5, MEMBERS, 0.3) == 2
    assert gate.to_propose(5, MEMBERS, 0.3) is None  # once per term and version
    assert gate.to_propose(6, MEMBERS, 0.3) == 2  # a new term: again (a copy is a no-op)
    gate.version = 2
    assert gate.to_propose(7, MEMBERS, 0.3) is None


def test_a_removed_members_word_is_forgotten() -> None:
    gate = RulesGate("a", rules_max=2, version=1)
    gate.heard(RulesKnown("b", "a", 2), 0.0)
    gate.heard(RulesKnown("x", "a", 1), 0.0)
    assert gate.to_propose(1, ("a", "b"), 0.0) == 2


def test_a_new_clusters_leader_holds_until_every_member_said_then_moves_to_the_lowest() -> None:
    gate = RulesGate("a", rules_max=2, version=1)
    gate.start_new(1, 0.0)
    gate.heard(RulesKnown("b", "a", 2), 0.0)
    assert gate.to_propose_new(1, MEMBERS, 0.01) is None
    assert gate.holding(1)  # c said nothing yet: client proposals wait
    gate.heard(RulesKnown("c", "a", 2), 0.02)
    assert gate.to_propose_new(1, MEMBERS, 0.02) == 2
    assert not gate.holding(1)
    assert gate.to_propose_new(1, MEMBERS, 0.03) is None  # decided once
    # The upgrade path does not propose the same move again in that term.
    assert gate.to_propose(1, MEMBERS, 0.03) is None

    capped = RulesGate("a", rules_max=2, version=1)
    capped.start_new(1, 0.0)
    capped.heard(RulesKnown("b", "a", 1), 0.0)
    capped.heard(RulesKnown("c", "a", 2), 0.0)
    assert capped.to_propose_new(1, MEMBERS, 0.0) is None
    assert not capped.holding(1)  # decided: stays at 1, at once
    own_cap = RulesGate("a", rules_max=1, version=1)
    own_cap.start_new(1, 0.0)
    assert own_cap.to_propose_new(1, ("a",), 0.0) is None
    assert not own_cap.holding(1)


def test_a_member_silent_at_creation_keeps_a_new_cluster_at_the_rules_in_force() -> None:
    """A voter down (or cut off, or older than versions) when a new cluster's leader is
    elected: the leader holds proposals RULES_NEW_WAIT_MS at most, then lets them in under
    the rules in force; the cluster moves up later, the usual way, once that member speaks."""
    gate = RulesGate("a", rules_max=2, version=1)
    gate.start_new(1, 0.0)
    gate.heard(RulesKnown("b", "a", 2), 0.0)
    # The upgrade path waits while the new cluster's decision is pending, so no rules entry
    # can land behind the proposals held.
    gate.heard(RulesKnown("c", "a", 2), 0.0)
    gate._heard.pop("c")
    assert gate.to_propose(1, MEMBERS, 0.5) is None
    end = RULES_NEW_WAIT_MS / 1000
    assert gate.to_propose_new(1, MEMBERS, end - 0.001) is None and gate.holding(1)
    assert gate.to_propose_new(1, MEMBERS, end) is None
    assert not gate.holding(1)
    assert gate.silent == ("c",)
    gate.heard(RulesKnown("b", "a", 2), end + 1)
    gate.heard(RulesKnown("c", "a", 2), end + 1)
    assert gate.to_propose(1, MEMBERS, end + 1) == 2  # c is back: the usual way up


def test_a_new_leadership_ends_the_last_ones_hold() -> None:
    gate = RulesGate("a", rules_max=2, version=1)
    gate.start_new(1, 0.0)
    assert gate.holding(1)
    assert not gate.holding(2)  # deposed and elected again: _rules_first decides anew
    assert gate.to_propose_new(2, MEMBERS, 0.0) is None
    # A hold of a past leadership never blocks the upgrade path of a later one.
    gate.start_new(3, 0.0)
    gate.heard(RulesKnown("b", "a", 2), 0.0)
    gate.heard(RulesKnown("c", "a", 2), 0.0)
    assert gate.to_propose(4, MEMBERS, 0.0) == 2


def test_a_member_at_its_cap_tells_a_new_leader_once() -> None:
    held = RulesGate("b", rules_max=1, version=1)
    assert held.tell("a", 1, 0.0) == RulesKnown("b", "a", 1)
    assert held.tell("a", 1, 10.0) is None  # nothing to move: no repeats
    assert held.tell("c", 2, 10.0) == RulesKnown("b", "c", 1)


def test_the_words_kept_are_bounded() -> None:
    gate = RulesGate("a", rules_max=2, version=1)
    for n in range(HEARD_MAX + 10):
        gate.heard(RulesKnown(f"x{n}", "a", 2), float(n))
    assert len(gate._heard) == HEARD_MAX
    assert gate.said("x0", float(HEARD_MAX + 10)) is None
    assert gate.said(f"x{HEARD_MAX + 9}", float(HEARD_MAX + 9)) == 2


def test_the_rules_frame_round_trips_and_garbage_is_refused_by_name() -> None:
    known = RulesKnown("b", "a", 2)
    assert peer_codec.decode(peer_codec.encode_rules_known(known)) == known
    assert peer_codec.peek_kind(peer_codec.encode_rules_known(known)) is peer_codec.PeerKind.RULES
    for frame, needle in (
        ([1, 8, "b", "a"], "5 fields"),
        ([1, 8, "b", "a", 0], "rules_max"),
        ([1, 8, "b", "a", "2"], "rules_max"),
        ([1, 8, "b", "a", 1 << 64], "rules_max"),
        ([1, 8, "b!", "a", 2], "rules frm"),
        ([1, 8, "b", "", 2], "rules to"),
    ):
        with pytest.raises(ProtocolError, match=needle):
            peer_codec.decode(cbor2.dumps(frame))


@pytest.mark.parametrize("rules_max", [0, RULES_NEWEST + 1])
def test_rules_max_outside_what_the_code_knows_is_refused_by_name(
    tmp_path: Path, rules_max: int
) -> None:
    with pytest.raises(ValueError, match=f"rules_max .*1..{RULES_NEWEST}.*got {rules_max}"):
        AgentConfig(
            "a", tmp_path, {"a": "tcp://127.0.0.1:1"}, "tcp://127.0.0.1:2", rules_max=rules_max
        )
    args = ["--id", "a", "--data-dir", str(tmp_path), "--peers", "a=tcp://127.0.0.1:1"]
    args += ["--client", "tcp://127.0.0.1:2"]
    assert config_from(parser().parse_args(args)).rules_max == RULES_NEWEST
    assert config_from(parser().parse_args([*args, "--rules-max", "1"])).rules_max == 1


def test_a_rules_payload_is_told_from_its_head() -> None:
    assert is_rules(rules_payload("a", 2))
    for kind in ("txn", "open", "close"):
        assert not is_rules(encode_payload(Payload(kind, "rules", 1, 0, 0, b"rules", 0)))
    assert not is_rules(b"") and not is_rules(b"\x87erule")


def test_strangers_words_never_push_out_a_members() -> None:
    """Review 35: RULES frames from strangers (any peer may send one before its JOIN) evicted
    the oldest word kept, a member's included, so a flood of them made a new cluster's leader
    wait its whole RULES_NEW_WAIT_MS and kept an upgrade from moving. A stranger's word now
    pushes out only a stranger's."""
    gate = RulesGate("a", rules_max=2, version=1)
    members = {"a", "b"}
    gate.heard(RulesKnown("b", "a", 2), 0.0, members)
    for n in range(HEARD_MAX + 10):
        gate.heard(RulesKnown(f"x{n}", "a", 2), 0.5, members)
    assert len(gate._heard) == HEARD_MAX
    assert gate.said("b", 1.0) == 2
