"""Directed glue-simulation schedules from the hostile review of issue 9's agent-side fixes.

Each test scripts one interleaving into a calm schedule (agent_sim's checks at the end: no
acknowledged write lost or applied twice, linearizable histories, identical replicas) and names
the symptom it reproduces.
"""

from __future__ import annotations

from agent_sim import SESSION_TTL_MS, Op, SimClient, SimParams, World, run_schedule
from superstatic_agent import peer_codec
from superstatic_agent.payload import Payload, encode_payload
from superstatic_agent.raft.types import Entry, EntryKind, Message, MsgType
from superstatic_bench.loadgen import txn_extend


def calm(seed: int, **changes: object) -> SimParams:
    params = SimParams(
        seed=seed,
        voters=3,
        clients=1,
        keys=1,
        chaos_ms=10_000,
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


def point_at(world: World, client: SimClient, node: str) -> None:
    members = world.member_ids()
    client.node_index = members.index(node)
    client.connect()
    client.pinned = node


def test_a_stale_sessions_copy_does_not_expire_the_new_session() -> None:
    """The client idles past the session ttl; its next write (seq N, naming S1) goes through
    follower A and applies as session_expired, so the client opens S2 and resends seq N naming
    S2, through follower B (A went quiet). A second copy of the S1 attempt, which A proposed
    (as it does again after a leader change, _propose_waiting_again) and the network held on
    the A->leader link, reaches the leader just before the resend. It is a stale copy (S1 is
    gone) and may answer only attempts that named S1. Answering the S2 resend with it made the
    client believe S2 expired as well: it sent the write in a third session, after S2 had
    applied it, and the value was appended twice. (Frames on the held link are dropped from
    the client's switch until the copy arrives: they would come after it.)"""
    state: dict[str, object] = {}

    def script(world: World, now: int) -> None:
        client = world.clients[0]
        if now == 1_500:
            leader = world.leader()
            assert leader is not None
            a, b = (n for n in world.voter_ids if n != leader)
            state.update(leader=leader, a=a, b=b)
            point_at(world, client, a)
            client.stopped = True  # idle (no keep-alive) until the session expired
        if now == 1_500 + SESSION_TTL_MS + 1_500:
            client.stopped = False
            # A write goes first, naming S1: were a keep-alive due first (the client idled), it
            # would learn the expiry, and no write would name S1 (so it went once commit-only
            # APPENDs lost their acks, data-model-v2.md 8.9: the schedule's timing moved).
            client.last_propose_ms = now
            client.on_write_sent = on_write_sent
            expired = client.session_expired

            def session_expired(at: int) -> None:
                expired(at)
                if "switched" not in state:
                    state["switched"] = at
                    world.net.blocked.add((str(state["a"]), str(state["leader"])))
                    point_at(world, client, str(state["b"]))

            client.session_expired = session_expired  # type: ignore[method-assign]

    def on_write_sent(client: SimClient, op: Op, sent_ms: int) -> None:
        world = client.world
        if "first" not in state:
            state["first"] = (op.seq, client.seq_low(), client.session, op.key, op.value)
            return
        seq, seq_low, session, key, value = state["first"]  # type: ignore[misc]
        if op.seq != seq or client.session in (0, session):
            return  # a resend of the first attempt, still naming S1
        client.on_write_sent = None
        # The held copy of the S1 attempt as A forwards it (unstamped) reaches the leader.
        a, leader = str(state["a"]), str(state["leader"])
        world.net.blocked.discard((a, leader))
        data = encode_payload(
            Payload("txn", client.client_id, seq, seq_low, 0, txn_extend(key, [value]), session)
        )
        server = world.nodes[a].server
        assert server is not None
        m = Message(
            MsgType.PROPOSE,
            a,
            leader,
            server.node.term,
            entries=(Entry(0, 0, EntryKind.NORMAL, data),),
        )
        world.net.send(a, leader, peer_codec.encode_message(m))
        state["injected"] = sent_ms

    outcome = run_schedule(calm(901, script=script))
    assert "switched" in state and "injected" in state, state
    assert outcome.sessions_expired == 1, outcome


def test_a_stale_leaders_stamps_do_not_expire_live_sessions_when_it_leads_again() -> None:
    """Log time across leaderships (logtime.py): the leader L and follower F1 stop (SIGSTOP)
    for twice the session ttl, so the cluster has no leader and log time stands still. F1
    resumes; F1 and F2 elect N, and log time goes on from where it stood; the clients' sessions
    are refreshed. L resumes cut off from its peers and, still leading its old term for an
    election timeout, stamps the proposals a client queued for it: inherited plus its monotonic
    time, the whole pause included. Those entries never commit, but LeaderStamp keeps the stamp
    as `_last_ms`. When L leads again (a transfer), its first stamp is at least that: log time
    jumps by about the pause, and every session, all of them kept alive, expires at once."""
    pause_ms = 2 * SESSION_TTL_MS
    state: dict[str, object] = {}

    def script(world: World, now: int) -> None:
        if now == 1_500:
            leader = world.leader()
            assert leader is not None
            f1, f2 = (n for n in world.voter_ids if n != leader)
            state.update(leader=leader, f1=f1, f2=f2)
            world.nodes[leader].paused_until = now + pause_ms + 600
            world.nodes[f1].paused_until = now + pause_ms
            world.net.blocked |= {(leader, f1), (f1, leader), (leader, f2), (f2, leader)}
            point_at(world, world.clients[1], leader)  # its resends queue at the stopped L
            point_at(world, world.clients[0], f2)
        if "leader" not in state:
            return
        leader, f1, f2 = str(state["leader"]), str(state["f1"]), str(state["f2"])
        if now == 1_500 + pause_ms + 600 + 400:
            # L stamped the queued proposals; now it may hear the cluster again.
            world.net.blocked.clear()
            world.clients[1].pinned = None
        if "transfer" not in state and now >= 1_500 + pause_ms + 2_500:
            current = world.leader()
            if current is not None and current != leader:
                server = world.nodes[current].server
                assert server is not None
                server.node.transfer_leadership(leader)
            if current == leader:
                state["transfer"] = now

    outcome = run_schedule(calm(902, clients=2, election_ticks=30, chaos_ms=14_000, script=script))
    assert "transfer" in state, "L never led again"
    assert outcome.sessions_expired == 0, outcome
