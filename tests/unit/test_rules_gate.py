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
from superstatic_agent.rules_gate import RULES_ADVERTISE_MS, RULES_HEARD_MS, RulesGate

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
    gate.version = 2  # the cluster runs what we know: nothing more to say
    assert gate.tell("c", 3, 10.0) is None


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


def test_a_new_clusters_leader_proposes_its_newest_unless_a_member_said_less() -> None:
    gate = RulesGate("a", rules_max=2, version=1)
    assert gate.to_propose_new(1) == 2
    assert gate.to_propose_new(1) is None
    capped = RulesGate("a", rules_max=2, version=1)
    capped.heard(RulesKnown("b", "a", 1), 0.0)
    assert capped.to_propose_new(1) is None
    assert RulesGate("a", rules_max=1, version=1).to_propose_new(1) is None


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
