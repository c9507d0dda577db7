"""Review 20's open finding on object ids (docs/virtual-heap.md section 7, "Object ids are not
bound to their creator"): nothing ties a created oid to the client that creates it, so a client can
create objects under another client's prefix: its next oids, which the other's `new` then
meets as "already exists" (every write creating an object refused while they stay reachable).
Re-creating a collected oid: tests/cluster/test_heap_agent.py (a partial app's stale stub needs
the real agent's filter, which never tells a hollow node's collection).

Neither can be refused at the agent's admission: a client id is whatever the PROPOSE says, and
an oid's prefix is in every Ref anyone reads, so a check of the prefix against the client id is
passed by choosing a client id with that prefix; and whether an oid was ever collected is the
state machine's knowledge. The fix is a rules change (written up in the doc, not built here:
another helper owns agent/rules*.py). This strict xfail pins the harm until then.

The real state machine over the in-process log (tests/support/inproc.py); the partial app's
loader answers from its store as the agent's LOAD does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster

from superstatic.objects.node import node_of
from superstatic.protocol import ops
from superstatic.protocol.codec import Ref
from superstatic.protocol.errors import Error

OPEN = "open: needs a rules change tying oids to their creator (docs/virtual-heap.md section 7)"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@pytest.mark.xfail(strict=True, reason=OPEN, raises=Error)
def test_another_client_cannot_create_under_an_apps_prefix(cluster: InprocCluster) -> None:
    app = cluster.session()
    first = app.root("first", dict)
    prefix, counter = node_of(first).oid.rsplit(".", 1)
    hostile = cluster.session()
    # The app's next oids are predictable: its prefix and the counter after the last one seen.
    taken = [f"{prefix}.{int(counter, 16) + k:x}" for k in range(1, 9)]
    squat = [["new", oid, "list", []] for oid in taken]
    squat += [["set", "@roots", f"squat{k}", Ref(oid)] for k, oid in enumerate(taken)]  # kept
    made = hostile.connection.submit(ops.encode_txn({}, squat))
    assert made.outcome == "ok"
    # Refused "already exists" (an Error) while the hostile client keeps them reachable.
    app.root("second", dict)["n"] = 1
    assert app.root("second", dict)["n"] == 1
