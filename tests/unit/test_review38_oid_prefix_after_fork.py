"""Review 38 (branch oidbind, state-machine rules 3): a forked child's objects carry its own
connection's prefix.

Under rules 3 a `new` op's oid must be `<client id[:16]>.<counter>` of the entry's client. A
forked child drops the parent's connection (`Session.after_fork`) and makes its own, with a new
client id, when it first needs one (`Session.connection`); the prefix `Session.new_oid` puts on
objects was only changed there. A `with superstatic.transaction():` block creates its objects
before it first touches the connection (at the commit), so a child's first block (before the
background connect of client/default.py finished) named its objects with the PARENT's prefix
and the parent's counter, and the commit, under the child's new client id, was refused
("is not named <client id[:16]>.<counter in hex> of this entry's client"). Under rules 2 the
same block applied (colliding only if the parent created the same counter).

The fork is modelled at the Session's level (what client/default.py's at-fork hook calls):
`after_fork` in the child, and a reconnect factory that makes a new connection with a new
client id to the same in-process log, fed from where the replica is.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.inproc import InprocCluster, InprocConnection

from superstatic.objects.node import node_of
from superstatic.objects.replica import Replica
from superstatic.objects.session import Session


class _Resumed(InprocConnection):
    """A child's new connection: a new client id, fed from where the inherited replica is
    (as a real Connection resumes an existing replica), not loaded again."""

    def _start(self, replica: Replica) -> None:
        with self.cluster.events_lock:
            self._next = replica.applied_index
            assert self._next <= len(self.cluster.events)


def _session_with_reconnect(cluster: InprocCluster) -> Session:
    replica = Replica()
    connection = InprocConnection(cluster, replica, held=False)
    cluster.connections.append(connection)

    def reconnect(replica: Replica) -> InprocConnection:
        resumed = _Resumed(cluster, replica, held=False)
        cluster.connections.append(resumed)
        return resumed

    return Session(replica, connection, reconnect)


def test_a_forked_childs_first_block_creates_objects_under_its_own_prefix(
    tmp_path: Path,
) -> None:
    with InprocCluster(tmp_path) as cluster:
        app = _session_with_reconnect(cluster)
        box = app.root("box", dict)
        app.run(lambda: box.__setitem__("parent", []))
        parent_id = app.connection.client_id
        parent_connection = app.after_fork(None)  # the child's side of a fork
        assert parent_connection is not None
        cluster.connections.remove(parent_connection)  # the parent's: this "process" drops it

        with app.transaction():  # the child's first write: a block, no connection yet
            box["child"] = []
        child_oid = node_of(box["child"]).oid
        child_id = app.connection.client_id
        assert child_id != parent_id
        assert child_oid.startswith(child_id[:16] + ".")
