"""Glue seeds 152 and 3740 (docs/raft.md, "Rules versions"): a late copy of an older OPEN
replaced the client's live session, and its setup write then met session_expired ("roots: the
setup's session expired"). They pass at the rules a cluster created by this code runs (2, from
its first entry), and still fail at rules 1 (every agent at --rules-max 1: no rules entry, no
RULES frame, the course the code before versions took): the seeds exercise the bug, and rules 1
keeps its old outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from agent_sim import SimParams, World, run_schedule
from superstatic_agent import peer_codec
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind, Message, MsgType
from superstatic_agent.rules import RULES_NEWEST, rules_payload
from test_agent_sim_review9 import calm

SEEDS = (152, 3740)
# The seeds whose course still meets the bug at rules 1. A seed's course moves with any change
# of the agents' frames: 152 stopped meeting it when heartbeat answers stopped drawing empty
# APPENDs (raftfix); the directed schedule below pins the bug whatever the seeds do.
SEEDS_FAILING_AT_RULES_1 = (3740,)
CHAOS_MS = 6_000


@pytest.mark.parametrize("seed", SEEDS)
def test_the_late_open_seeds_pass_at_the_newest_rules(seed: int) -> None:
    params = SimParams.random(seed, CHAOS_MS)
    assert params.rules_max == RULES_NEWEST
    run_schedule(params)  # raises SimFailure (or the client's assertion) naming the seed


@pytest.mark.parametrize("seed", SEEDS_FAILING_AT_RULES_1)
def test_the_late_open_seeds_still_fail_at_rules_1(seed: int) -> None:
    # No RULES frames either: an agent at its cap now tells each new leader once (rulesnew),
    # which moved the seed's course; agents older than versions send none.
    params = dataclasses.replace(SimParams.random(seed, CHAOS_MS), rules_max=1, rules_frames=False)
    with pytest.raises(AssertionError, match="the setup's session expired"):
        run_schedule(params)


@pytest.mark.parametrize("rules_max", [1, 2])
def test_a_late_copy_of_a_given_up_open_does_not_replace_the_live_session(rules_max: int) -> None:
    """Seed 152's course, directed. The client's first open (seq 2) applies but every answer
    to the client is lost, so past its deadline the client gives it up and opens again (seq
    3); answers flow again and that open makes the client's session. Then a copy of the seq 2
    open that a follower held (as it proposes waiting entries again under a new leader)
    reaches the leader. Rules 1 replaces the live session with it: the client's next request
    meets session_expired (its writes in flight become outcome-unknown). Rules 2 answers it
    as the live session's open's dup: no session ever expires in this calm run."""
    state: dict[str, object] = {}

    def script(world: World, now: int) -> None:
        client = world.clients[0]
        if now == 1:
            pairs = {(node, client.name) for node in world.voter_ids}
            world.net.blocked |= pairs
            state["pairs"] = pairs
        opening = client.opening
        if "unblocked" not in state and opening is not None and opening.seq == 3:
            world.net.blocked -= state["pairs"]  # type: ignore[operator]
            state["unblocked"] = now
        if "unblocked" in state and "injected" not in state and client.session:
            leader = world.leader()
            assert leader is not None
            follower = next(n for n in world.voter_ids if n != leader)
            server = world.nodes[follower].server
            assert server is not None
            data = encode_payload(Payload("open", client.client_id, 2, 1, 0, b"", 0))
            m = Message(
                MsgType.PROPOSE,
                follower,
                leader,
                server.node.term,
                entries=(Entry(0, 0, EntryKind.NORMAL, data),),
            )
            world.net.send(follower, leader, peer_codec.encode_message(m))
            client.paused_until = now + 300  # the copy goes first
            client.last_rx_ms = client.paused_until
            state["injected"] = now

    try:
        expired = run_schedule(calm(152, script=script, rules_max=rules_max)).sessions_expired
    except AssertionError as exc:  # the setup itself met it (the client's own check)
        assert "the setup's session expired" in str(exc)
        expired = 1
    assert "injected" in state, state
    # Rules 1: the client's session was replaced under it; rules 2: it never expires here.
    assert expired == (1 if rules_max == 1 else 0), expired


def test_a_forwarded_rules_entry_is_dropped_by_the_leader() -> None:
    """Only a leader appends a "rules" entry: one a peer forwards (a former leader's batch, or
    a peer's bug) is dropped. Here every agent applies only rules 1 and a follower forwards a
    move to rules 2: appended, it would halt every agent (RulesTooNew) and the run would never
    converge."""
    forward_and_converge(lambda follower: rules_payload(follower, 2))


def forward_and_converge(rules_data: Callable[[str], bytes]) -> None:
    """At 2 s a follower forwards to its leader a PROPOSE of `rules_data(follower)` and an
    open, in a calm run of agents that apply only rules 1: the run must converge (a rules
    entry appended would halt every agent) with writes done."""
    state: dict[str, object] = {}

    def script(world: World, now: int) -> None:
        if now != 2_000:
            return
        leader = world.leader()
        assert leader is not None
        follower = next(n for n in world.voter_ids if n != leader)
        server = world.nodes[follower].server
        assert server is not None
        entries = (
            Entry(0, 0, EntryKind.NORMAL, rules_data(follower)),
            Entry(0, 0, EntryKind.NORMAL, encode_payload(Payload("open", "x", 1, 1, 0, b"", 0))),
        )
        m = Message(MsgType.PROPOSE, follower, leader, server.node.term, entries=entries)
        world.net.send(follower, leader, peer_codec.encode_message(m))
        state["sent"] = now

    outcome = run_schedule(calm(153, script=script, rules_max=1))
    assert "sent" in state and outcome.ops["ok"] > 0
