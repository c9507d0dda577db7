"""Review 20's finding on object ids (docs/virtual-heap.md section 7, "Object ids are bound to
their creator"), closed by state-machine rules 3 (agent/oidmarks.py): before it nothing tied a
created oid to the client that creates it, so a client could create objects under another
client's prefix, its next oids, which the other's `new` then met as "already exists" (every
write creating an object refused while they stayed reachable). Under rules 3 a squat is refused,
whether its client id has another prefix or the app's very prefix (another owner), and the
app's own creations go on. Re-creating a collected oid: tests/unit/test_oid_marks.py and
tests/cluster/test_heap_agent.py.

Neither can be refused at the agent's admission: a client id is whatever the PROPOSE says, and
an oid's prefix is in every Ref anyone reads, so a check of the prefix against the client id is
passed by choosing a client id with that prefix; and whether an oid was ever created is the
state machine's knowledge. Hence the rules change.

The real state machine over the in-process log (tests/support/inproc.py, which runs the newest
rules as a new cluster does).
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


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InprocCluster]:
    with InprocCluster(tmp_path) as c:
        yield c


@pytest.mark.parametrize("same_prefix", [False, True])
def test_another_client_cannot_create_under_an_apps_prefix(
    cluster: InprocCluster, same_prefix: bool
) -> None:
    app = cluster.session()
    first = app.root("first", dict)
    prefix, counter = node_of(first).oid.rsplit(".", 1)
    hostile = cluster.session()
    if same_prefix:  # a client id chosen to carry the app's prefix: not the prefix's owner
        hostile.connection.client_id = prefix + "f" * 16
    # The app's next oids are predictable: its prefix and the counter after the last one seen.
    taken = [f"{prefix}.{int(counter, 16) + k:x}" for k in range(1, 9)]
    squat = [["new", oid, "list", []] for oid in taken]
    squat += [["set", "@roots", f"squat{k}", Ref(oid)] for k, oid in enumerate(taken)]  # kept
    made = hostile.connection.submit(ops.encode_txn({}, squat))
    assert made.outcome == "error"
    rule = "its prefix was first used by another client id" if same_prefix else "is not named"
    assert rule in made.error and "rules 3" in made.error
    # Nothing was taken: the app's next objects are created.
    app.root("second", dict)["n"] = 1
    assert app.root("second", dict)["n"] == 1
    assert node_of(app.root("second", dict)).oid == taken[0]
