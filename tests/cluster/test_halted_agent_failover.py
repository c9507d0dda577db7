"""An app whose agent halts moves to another agent at once (review 28).

A halted agent (poisoned, rules_unknown, store_full, damaged) applies nothing more. Its
subscribers used to hear nothing (only a damaged store ended its streams, and the library
then resubscribed at the same agent, refused again and again), so an app's calls waited for
their timeouts. Now every halt ends every stream with `unavailable` naming the reason and
refuses HELLO, and the library fails over on a refused stream as when its agent dies.

The halt here is a damaged record (the way tests/cluster/test_hostile_store.py makes one): a
real agent process halts, the same code path as every other reason (Server._halt). The app's
silence timeout is set far above the test's so that only being told can move it in time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from superstatic_agent.listtree import ListHeader, ListTree, MemoryChunkStore
from superstatic_agent.records import chunk_key
from superstatic_agent.storage import seal
from superstatic_bench.loadgen import RawClient, txn_create_roots, txn_extend
from test_hostile_store import KNOWN, flip_everywhere, inspect

import superstatic
from superstatic.client import default as session_default
from superstatic.client.connection import Connection
from superstatic.protocol.errors import ProtocolError
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

TIMEOUT_S_WAIT = 60.0
# Far above anything this test waits for: the app must not leave its agent for silence.
TIMEOUT_MS_AGENT_SILENCE_TEST = 600_000


def test_an_app_on_a_halted_agent_fails_over_at_once_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        lead = cluster.leader()
        raw = RawClient(cluster.agents[lead].client_endpoint)
        try:
            assert raw.propose(raw.roots_txn({"l": "list"}))["outcome"] == "ok"
            index = raw.propose(txn_extend("l", [KNOWN]))["index"]
        finally:
            raw.close()
        follower = next(n for n in cluster.agents if n != lead)
        others = [n for n in cluster.agents if n != follower]
        superstatic.connect(cluster.client_endpoints([follower, *others]))
        try:
            conn = session_default.get().connection
            assert isinstance(conn, Connection)
            conn.timeout_ms_agent_silence = TIMEOUT_MS_AGENT_SILENCE_TEST
            items = superstatic.root("l", list)
            assert list(items) == [KNOWN]  # (a write now would change the record damaged below)
            assert conn.endpoint == cluster.agents[follower].client_endpoint
            failovers = conn.failovers

            # Damage the follower's copy of the list's first chunk (nid 2, chunk 1), as
            # test_hostile_store does; reading it halts the agent (damaged).
            chunks = MemoryChunkStore()
            tree = ListTree(chunks, ListHeader.empty())
            tree.extend([KNOWN], index)
            record = chunks.records[tree.header.root]
            data_file = cluster.agents[follower].data_dir / "data.mdb"
            caplog.set_level(logging.INFO, logger="superstatic")
            assert flip_everywhere(data_file, seal(chunk_key(2, tree.header.root), record)) >= 1
            with pytest.raises(ProtocolError, match="damaged"):
                inspect(cluster, follower, "l")
            assert cluster.status(follower)["halted"]["reason"] == "damaged"

            # The app's next calls go through another agent.
            items.append("after")
            superstatic.sync()
            assert list(items) == [KNOWN, "after"]
            assert conn.failovers > failovers
            assert conn.endpoint != cluster.agents[follower].client_endpoint
            left = [r.getMessage() for r in caplog.records if "leaving agent" in r.getMessage()]
            assert any("stopped (damaged)" in line for line in left), left
        finally:
            superstatic.close()


# The app's request timeout in the test below: its write is meant to fail; shorter than the
# default 30 s only so the test does not wait that long.
TIMEOUT_MS_REQUEST_TEST = 8_000


def test_an_app_whose_agents_all_halted_names_the_reason_when_it_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review 35 (Low): with every agent halted, each refuses the app's stream and HELLO with
    `unavailable` naming its reason, and the error the app finally raised said only that no
    agent accepted the write. It now names the last reason its agents gave: a word of the fixed
    set the agent sends in its own field (wire.HALT_REASONS), never the refusal's text."""
    with LocalCluster(tmp_path / "agents", size=3) as cluster:
        cluster.start()
        raw = RawClient(cluster.agents[cluster.leader()].client_endpoint)
        try:
            assert raw.propose(txn_create_roots({"l": "list"}, raw.client_id))["outcome"] == "ok"
            index = raw.propose(txn_extend("l", [KNOWN]))["index"]
        finally:
            raw.close()
        for node in cluster.voter_ids:
            cluster.wait_until(
                lambda node=node: cluster.status(node)["applied"] >= index,
                f"{node} to apply the write",
                TIMEOUT_S_WAIT,
            )
        superstatic.connect(cluster.client_endpoints(list(cluster.voter_ids)))
        try:
            conn = session_default.get().connection
            assert isinstance(conn, Connection)
            conn.timeout_ms_agent_silence = TIMEOUT_MS_AGENT_SILENCE_TEST
            conn.timeout_ms_request = TIMEOUT_MS_REQUEST_TEST
            items = superstatic.root("l", list)
            assert list(items) == [KNOWN]

            # Every agent's copy of the list's first chunk damaged, then read: each halts.
            chunks = MemoryChunkStore()
            tree = ListTree(chunks, ListHeader.empty())
            tree.extend([KNOWN], index)
            needle = seal(chunk_key(2, tree.header.root), chunks.records[tree.header.root])
            caplog.set_level(logging.INFO, logger="superstatic")
            for node in cluster.voter_ids:
                assert flip_everywhere(cluster.agents[node].data_dir / "data.mdb", needle) >= 1
                with pytest.raises(ProtocolError, match="damaged"):
                    inspect(cluster, node, "l")
                assert cluster.status(node)["halted"]["reason"] == "damaged"

            with pytest.raises(superstatic.Unavailable) as info:
                items.append("after")
                superstatic.sync()
            assert info.value.halted == "damaged", info.value
            assert "stopped applying (damaged" in str(info.value), info.value
            assert all(spec.alive() for spec in cluster.agents.values())
        finally:
            superstatic.close()
