"""Directed schedules of the glue simulation: issue 9's reproductions, replayed at the level of
the agents' real code (the cluster tests replay them with real processes, slower).

Each test scripts the faults of one reproduction into a calm schedule (no random faults) and
runs the same end checks as the seeded schedules (agent_sim.finish): no acknowledged write lost
or applied twice, none applied after it was called failed, linearizable histories, one leader
per term, identical replicas. Each also states the symptom it reproduces, so a regression shows
as that symptom and not only as a failed check.
"""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path

from agent_sim import (
    ELECTION_TICKS,
    HEARTBEAT_TICKS,
    JOINER_ID,
    SESSION_TTL_MS,
    TICK_MS,
    TIMEOUT_MS_PROBE,
    SimClient,
    SimParams,
    World,
    run_schedule,
    sim_address,
)
from agent_sim_io import SimDisk, SimNet, SimStorage, sim_io
from superstatic_agent import peer_codec
from superstatic_agent.config import AgentConfig
from superstatic_agent.raft.types import Role
from superstatic_agent.rules import RULES_NEWEST
from superstatic_agent.server import Server
from superstatic_agent.transport import DropCounter

from superstatic.protocol import wire

HOUR_MS = 3_600_000


def calm(seed: int, **changes: object) -> SimParams:
    """A schedule without random faults: only what the test scripts happens."""
    params = SimParams(
        seed=seed,
        voters=3,
        clients=2,
        keys=1,
        chaos_ms=6_000,
        crashes=False,
        power_loss=False,
        partitions=False,
        skew=False,
        log_retain_entries=100_000,
        op_timeout_ms=8_000,
    )
    for name, value in changes.items():
        setattr(params, name, value)
    return params


def leader_of(world: World) -> str:
    leader = world.leader()
    assert leader is not None, "no leader when the script needed one"
    return leader


def test_a_session_that_expired_is_never_reopened_for_a_retry() -> None:
    """Bug 3: a write applied, its answer lost with the connection, its client stopped past the
    session's ttl. The resend must be refused (session_expired: the outcome is unknown), never
    applied a second time in a silently reopened session."""

    def script(world: World, now: int) -> None:
        if now == 1_500:
            client = world.clients[0]
            client.pause_after_send_ms = SESSION_TTL_MS + 1_500
            client.reconnect_after_pause = True

    outcome = run_schedule(calm(101, script=script))
    assert outcome.sessions_expired >= 1, outcome
    assert outcome.ops["info"] >= 1, "the write whose session expired is outcome-unknown"


def test_a_follower_clock_an_hour_ahead_expires_no_session() -> None:
    """Bug 3: one agent's clock far ahead, clients writing through it. Only the leader stamps
    log time, so no live client's session expires."""

    def script(world: World, now: int) -> None:
        if now == 1:
            world.nodes["c"].skew[0] = HOUR_MS
        if now == 1_000:
            leader = leader_of(world)
            skewed = "c" if leader != "c" else "b"
            world.nodes[skewed].skew[0] = HOUR_MS
            world.nodes[leader].skew[0] = 0
            for client in world.clients:
                point_at(world, client, skewed)

    outcome = run_schedule(calm(102, clients=3, script=script))
    assert outcome.sessions_expired == 0, outcome
    assert outcome.ops["ok"] >= 20, outcome


def test_a_leader_clock_jumping_ahead_is_clamped() -> None:
    """Bug 3, the leader's side: the leader's wall clock jumps an hour ahead mid-run. The log
    time it stamps moves at most log_time_skew_ms_max past its monotonic clock: no session
    expires."""

    def script(world: World, now: int) -> None:
        if now in (1_500, 3_000):
            world.nodes[leader_of(world)].skew[0] += HOUR_MS

    outcome = run_schedule(calm(103, clients=3, script=script))
    assert outcome.sessions_expired == 0, outcome


def test_a_resend_refused_without_a_leader_leaves_a_forwarded_write_unknown() -> None:
    """Bug 2: a write forwarded to a leader that then stops (SIGSTOP, the other follower too);
    the resend meets a follower without a leader and is refused; when they resume, the
    forwarded write commits. Calling it failed (the refusal answered every attempt) shows as a
    write applied after it was called failed."""

    # Long enough for the follower to lose its leader and refuse the resend, shorter than the
    # session ttl: a session expired meanwhile would refuse the forwarded write when the
    # leader resumes, and nothing would commit after the refusal.
    pause_ms = SESSION_TTL_MS * 2 // 3

    def script(world: World, now: int) -> None:
        if now != 1_500:
            return
        leader = leader_of(world)
        follower = next(n for n in world.voter_ids if n != leader)
        other = next(n for n in world.voter_ids if n not in (leader, follower))
        for client in world.clients:
            point_at(world, client, follower)

        def pause_the_others(client: SimClient, op: object, sent_ms: int) -> None:
            # The follower forwards the write to the leader, which is stopped by then.
            client.on_write_sent = None
            for node in (leader, other):
                world.nodes[node].paused_until = sent_ms + pause_ms

        world.clients[0].on_write_sent = pause_the_others

    # Election timeouts longer than the agent's catch-up of ticks after a stall (10): the
    # resumed leader keeps leading, as real agents (30 ticks) do, and appends the write.
    outcome = run_schedule(calm(104, op_timeout_ms=1_500, election_ticks=30, script=script))
    assert outcome.ops["fail"] + outcome.ops["info"] >= 1, outcome


def test_a_joiner_with_one_contact_never_forms_a_minority_quorum() -> None:
    """Bug 1: four voters and a joiner whose --peers names only the leader, promoted. The
    leader and the joiner are cut off from the other three and clients write through them;
    then both crash, the three elect a leader and commit, and the two come back. A joiner
    that built its configuration from its --peers believed the voters were [leader, joiner]:
    it won an election on one vote and acknowledged writes the majority then overwrote."""
    state: dict[str, str] = {}

    def script(world: World, now: int) -> None:
        if now == 200:
            state["contact"] = leader_of(world)
            world.add_joiner(contact=state["contact"])
        joiner = world.nodes.get(JOINER_ID)
        operator = world.operator
        promoted = operator is not None and operator.done
        if "cut" not in state and joiner is not None and promoted and now > 1_500:
            pair = {state["contact"], JOINER_ID}
            rest = [n for n in world.nodes if n not in pair]
            cut = {(a, b) for a in pair for b in rest} | {(b, a) for a in pair for b in rest}
            world.net.blocked |= cut
            for i, client in enumerate(world.clients):
                point_at(world, client, sorted(pair)[i % 2])
            state["cut"] = str(now)
        if "cut" in state and now == int(state["cut"]) + 2_500:
            world.nodes[state["contact"]].crash(power_loss=False)
            world.nodes[JOINER_ID].crash(power_loss=False)
            world.net.blocked.clear()
            world.restart_at[state["contact"]] = now + 1_500
            world.restart_at[JOINER_ID] = now + 1_500

    params = calm(105, voters=4, joiner=True, chaos_ms=9_000, op_timeout_ms=1_500, script=script)
    params.joiner_at_ms = 10**9  # the script adds it, with the contact it wants
    outcome = run_schedule(params)
    assert "cut" in state, "the joiner was never promoted"
    assert outcome.ops["ok"] >= 10, outcome


def test_a_late_voter_withholds_its_vote_while_the_cluster_exists() -> None:
    """Bug 6c: a voter starting from an empty data directory may have voted before it lost its
    data. When its probe shows that the cluster exists, its core starts with storage_lost and
    grants no vote until a leader reached it. Scripted: c starts late (its data directory
    empty), just as the leader of a and b crashes; b alone cannot elect without c's vote, so no
    leader may exist until the crashed node is back. A c that voted as a fresh voter would
    elect b (or itself) at once."""
    state: dict[str, str] = {}

    def script(world: World, now: int) -> None:
        if now == 1:
            world.nodes["c"].crash(power_loss=False)
            world.nodes["c"].disk.wipe()
        if now == 2_000:
            state["down"] = leader_of(world)
            world.nodes[state["down"]].crash(power_loss=False)
            world.restart_at["c"] = now
        if "down" in state and 2_000 + 2 * TIMEOUT_MS_PROBE <= now < 5_000:
            c = world.nodes["c"].server
            assert c is not None, "c did not start"
            assert world.leader() is None, f"{world.leader()} elected with c's vote at {now} ms"
            assert c.node.votes_withheld
            state["withheld"] = str(now)
        if now == 5_000:
            world.restart_at[state["down"]] = now

    outcome = run_schedule(calm(106, op_timeout_ms=1_500, script=script))
    assert "withheld" in state, "the window was never checked"
    assert outcome.ops["ok"] >= 5, outcome


def test_appends_to_a_member_added_in_the_same_ready_are_not_dropped(tmp_path: Path) -> None:
    """Bug 6: the leader sends its APPENDs before its own write; the transport connected to a
    member added by a CONF entry of that same Ready only after the write, so early APPENDs to
    it were dropped (peer_send_unknown). One real Server leads alone; a JOIN and a write reach
    it in one turn, so the add_learner entry and the write share one Ready."""
    net = SimNet(random.Random(7))
    net.delay_ms = (1, 1)
    drops = DropCounter()
    disk = SimDisk(tmp_path / "a")
    disk.path.mkdir()
    config = AgentConfig(
        node_id="a",
        data_dir=disk.path,
        peers={"a": sim_address("a")},
        client_endpoint="sim-client://a",
        tick_ms=TICK_MS,
        election_ticks=ELECTION_TICKS,
        heartbeat_ticks=HEARTBEAT_TICKS,
        insecure=True,  # simulated endpoints, nothing bound
    )
    net.up.update(("a", "a:clients", "j"))
    net.addresses[sim_address("a")] = "a"
    net.addresses[sim_address("j")] = "j"
    io = sim_io(net, "a", [0], 7, drops, disk)
    server = Server(config, io=io, drops=drops, storage=SimStorage(disk))
    try:
        while not (server.node.role is Role.LEADER and server.applied >= 1):
            net.now_ms += 1
            net.deliver_due()
            server.step()
            assert net.now_ms < 5_000, "a single voter never led"
        # As a joiner does: which rules it applies first (a leader past rules 1 adds no joiner
        # that did not say: docs/agent.md, "Rules versions"), then JOIN.
        known = peer_codec.RulesKnown("j", "a", RULES_NEWEST)
        net.inbox.setdefault("a", deque()).extend(
            [
                ("j", peer_codec.encode_rules_known(known)),
                ("j", peer_codec.encode_join("j", sim_address("j"))),
            ]
        )
        propose = {"client": "c1", "seq": 1, "seq_low": 1, "kind": "open", "body": b""}
        net.inbox.setdefault("a:clients", deque()).append(
            ("@p0.1", wire.encode(wire.FrameType.PROPOSE, 1, propose))
        )
        server.step()
        assert "j" in server.node.conf.learners
        sent_to_j = [data for src, dst, data in net.frames_in_flight() if dst == "j"]
        assert sent_to_j, "nothing was sent to the new member"
        assert drops.counts.get("peer_send_unknown", 0) == 0, drops.snapshot()
    finally:
        server.storage.close()


def point_at(world: World, client: SimClient, node: str) -> None:
    """Makes `client` talk to `node` from now on."""
    members = world.member_ids()
    client.node_index = members.index(node)
    client.connect()
    client.pinned = node
