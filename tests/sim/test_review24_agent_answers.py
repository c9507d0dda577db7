"""Review 24 of REPLY_MANY (docs/data-model-v2.md 8.11), the agent's answer step on a real
single-voter Server in the glue simulation (the world of tests/sim/test_agent_sim_reply_many.py).

A connection gets the answers of one Ready in the order their entries applied, whatever frame
carries each. The library relies on it: a session_expired answer settles every other write of
that session still waiting as outcome UNKNOWN, so an "ok" answer of an earlier entry that
arrives after it comes too late (the write committed, the caller is told UNKNOWN). A frame lost
to a connection gone is not counted as sent; a flag that is not a boolean refuses its frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from superstatic_bench.loadgen import txn_extend
from test_agent_sim_reply_many import NEW_APP, many_body, new_app_with_root

from superstatic.protocol import trace as trace_proto
from superstatic.protocol import wire


def answers_in_order(frames: list[wire.Frame]) -> list[tuple[int, dict[str, Any]]]:
    """(req id, REPLY body) as the app reads them, frame after frame."""
    out: list[tuple[int, dict[str, Any]]] = []
    for frame in frames:
        if frame.type is wire.FrameType.REPLY_MANY:
            out.extend(wire.parse_reply_many(frame.body))
        elif frame.type is wire.FrameType.REPLY:
            out.append((frame.req_id, frame.body))
    return out


def test_a_traced_answer_does_not_overtake_the_answers_of_earlier_entries(
    tmp_path: Path,
) -> None:
    """One Ready applies two writes of session S, an "open" that replaces S (a stale copy of
    an open does so), and a traced write of S, refused session_expired. The traced write's
    REPLY (traced answers travel alone) must still come after the two "ok" answers."""
    agent, session = new_app_with_root(tmp_path)
    try:
        writes = [[300 + i, 3 + i, "txn", txn_extend("k", [i])] for i in range(2)]
        agent.send(NEW_APP, wire.FrameType.PROPOSE_MANY, many_body("new", session, writes, True))
        reopen = {"client": "new", "seq": 5, "seq_low": 1, "kind": "open", "body": b""}
        reopen[wire.REPLY_MANY_FIELD] = True
        open_req = agent.send(NEW_APP, wire.FrameType.PROPOSE, reopen)
        traced = {
            "client": "new",
            "seq": 6,
            "seq_low": 1,
            "kind": "txn",
            "body": txn_extend("k", [9]),
            "session": session,
            wire.REPLY_MANY_FIELD: True,
            trace_proto.FIELD_REQUEST: True,
        }
        traced_req = agent.send(NEW_APP, wire.FrameType.PROPOSE, traced)
        expected = {300, 301, open_req, traced_req}
        agent.run_until(
            "every write answered",
            lambda: {req for req, _ in answers_in_order(agent.frames[NEW_APP])} >= expected,
        )
        got = answers_in_order(agent.frames[NEW_APP])
        outcomes = {req: body["outcome"] for req, body in got}
        assert outcomes == {300: "ok", 301: "ok", open_req: "ok", traced_req: "session_expired"}
        # The scenario is one Ready's: the two writes shared a REPLY_MANY.
        assert any(f.type is wire.FrameType.REPLY_MANY for f in agent.frames[NEW_APP])
        by_index = sorted(got, key=lambda answer: answer[1]["index"])
        assert [req for req, _ in got] == [req for req, _ in by_index], got
    finally:
        agent.server.storage.close()


def test_answers_to_a_connection_gone_are_not_counted_as_sent(tmp_path: Path) -> None:
    """The app closed its socket after its writes arrived: their REPLY_MANY is lost (counted
    as a client_reply_gone drop, one per frame as a REPLY's), not counted as sent."""
    agent, session = new_app_with_root(tmp_path)
    try:
        writes = [[400 + i, 3 + i, "txn", txn_extend("k", [i])] for i in range(3)]
        agent.send(NEW_APP, wire.FrameType.PROPOSE_MANY, many_body("new", session, writes, True))
        agent.net.up.discard(NEW_APP)  # gone before the agent takes the frame
        gone_before = agent.drops.counts["client_reply_gone"]
        counters = agent.server.counters
        frames_before, items_before = counters["reply_many_frames"], counters["reply_many_items"]
        applied = agent.server.applied
        agent.run_until("the writes applied", lambda: agent.server.applied >= applied + 3)
        assert agent.drops.counts["client_reply_gone"] == gone_before + 1
        assert counters["reply_many_frames"] == frames_before
        assert counters["reply_many_items"] == items_before
        assert not agent.frames[NEW_APP]
    finally:
        agent.server.storage.close()


@pytest.mark.parametrize("flag", [1, 0, "yes", None, [True], {"x": True}])
def test_a_flag_that_is_not_a_boolean_refuses_its_frame_only(tmp_path: Path, flag: Any) -> None:
    """A hostile app's "reply_many" of another type: its PROPOSE and its PROPOSE_MANY are
    refused bad_request naming the field (nothing proposed); the agent serves on, and the
    same writes with a boolean apply."""
    agent, session = new_app_with_root(tmp_path)
    try:
        write = {
            "client": "new",
            "seq": 3,
            "seq_low": 1,
            "kind": "txn",
            "body": txn_extend("k", [1]),
            "session": session,
            wire.REPLY_MANY_FIELD: flag,
        }
        lone = agent.send(NEW_APP, wire.FrameType.PROPOSE, write)
        body = many_body("new", session, [[500, 4, "txn", txn_extend("k", [2])]], True)
        body[wire.REPLY_MANY_FIELD] = flag
        many = agent.send(NEW_APP, wire.FrameType.PROPOSE_MANY, body)
        applied = agent.server.applied

        def errors() -> dict[int, dict[str, Any]]:
            return {
                f.req_id: f.body for f in agent.frames[NEW_APP] if f.type is wire.FrameType.ERROR
            }

        agent.run_until("both refused", lambda: {lone, many} <= set(errors()))
        for req_id in (lone, many):
            assert errors()[req_id]["code"] == wire.ErrorCode.BAD_REQUEST
            assert wire.REPLY_MANY_FIELD in errors()[req_id]["message"]
        assert agent.server.applied == applied and not agent.server._waiters

        write[wire.REPLY_MANY_FIELD] = True
        again = agent.send(NEW_APP, wire.FrameType.PROPOSE, write)
        agent.run_until("the write applied", lambda: again in answers_of(agent.frames[NEW_APP]))
        assert answers_of(agent.frames[NEW_APP])[again]["outcome"] == "ok"
    finally:
        agent.server.storage.close()


def answers_of(frames: list[wire.Frame]) -> dict[int, dict[str, Any]]:
    return dict(answers_in_order(frames))
