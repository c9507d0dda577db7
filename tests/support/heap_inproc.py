"""A partial replica over the in-process log (tests/support/inproc.py): the library half of the
virtual heap (docs/virtual-heap.md) with a loader that answers from the real state machine's
store, as the agent's LOAD does.

The loader plays the agent's part of section 3.1: it delivers every entry up to the log's last
index first (the LOADED frame follows the events up to its index `L` in the stream), reads the
requested nodes at `L` (`noderead.materialize`), names the heads of the nodes they reference,
and installs the answer. Every event is delivered (no held-set filter: the filter only ever
leaves out events that write no held node, which the replica skips anyway), so the tests check
the replica's own skipping. Deliveries to a `held` connection happen only when it waits or
loads, which makes a stale replica deterministically.

For unit tests only; tests/cluster drives partial replicas against real agents.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from superstatic.objects.replica import ROOTS_OID, Replica
from superstatic.objects.session import Session
from support.inproc import InprocCluster, InprocConnection

# The agent's LOAD_WHOLE_ENTRIES_MAX (agent/heap.py): bigger dicts are held per key.
WHOLE_ENTRIES_MAX = 256


class PartialConnection(InprocConnection):
    """An InprocConnection whose replica starts empty and faults nodes in."""

    def __init__(
        self, cluster: InprocCluster, replica: Replica, *, held: bool, cache_bytes: int
    ) -> None:
        # (The base class's __init__ calls _start: a partial replica starts from nothing.)
        self.cache_bytes = cache_bytes
        self.loads: list[list[str]] = []
        super().__init__(cluster, replica, held=held)

    def _start(self, replica: Replica) -> None:
        with self.cluster.events_lock:
            self._next = len(self.cluster.events)
            index = self.cluster.log.last_index
        replica.start_partial(index, self.load, self.cache_bytes)

    def load(self, oids: list[str], keys: list[tuple[str, list[Any]]], whole: bool) -> None:
        """The agent's answer to a LOAD of `oids` and `keys`, installed before returning. The
        root table, and unless `whole` a dict of more than LOAD_WHOLE_ENTRIES_MAX entries, is
        held per key: asked as a node, it answers its header only."""
        from superstatic_agent.noderead import lookup, materialize, read_header, read_nid

        from superstatic.objects.values import wire
        from superstatic.protocol import codec

        self.loads.append([*oids, *(f"{oid}[{k!r}]" for oid, ks in keys for k in ks)])
        log = self.cluster.log
        with self._deliver_lock:
            with self.cluster.events_lock:
                batch = self.cluster.events[self._next :]
                index = log.last_index
                records: list[tuple[str, int, str, Any]] = []
                absent: list[str] = []
                per_key: list[str] = []
                runs: list[tuple[str, list[Any], list[Any]]] = []
                values: list[Any] = []
                heads: dict[str, tuple[str, str, str | None]] = {}
                with log.env.begin() as txn:
                    dbs = log.sm.dbs
                    for oid in oids:
                        if oid == ROOTS_OID:
                            found_nid = read_nid(txn, dbs, oid)
                            (absent if found_nid is None else per_key).append(oid)
                            continue
                        found = materialize(txn, dbs, oid)
                        if found is None:
                            absent.append(oid)
                            continue
                        version, kind, contents = found
                        if kind == "dict" and not whole and len(contents) > WHOLE_ENTRIES_MAX:
                            per_key.append(oid)
                            continue
                        records.append((oid, version, kind, contents))
                        values.extend(codec.refs_in_contents(kind, contents))
                    for oid, asked in keys:
                        nid = read_nid(txn, dbs, oid)
                        if nid is None:
                            absent.append(oid)
                            continue
                        present: list[Any] = []
                        missing: list[Any] = []
                        for key in asked:
                            hit = lookup(txn, dbs, nid, "dict", wire(key))
                            if hit is None:
                                missing.append(wire(key))
                            else:
                                present.append([hit[0], hit[1]])
                                values.extend(codec.refs_in(hit[1]))
                        runs.append((oid, present, missing))
                    answered = {record[0] for record in records}
                    for target in values:
                        if target in answered or target in heads:
                            continue
                        nid = read_nid(txn, dbs, target)
                        assert nid is not None, ("a dangling ref in the store", target)
                        header = read_header(txn, dbs, nid)
                        extra = header.extra if header.kind == "obj" else None
                        heads[target] = (target, header.kind, extra)
            with self._as_io_thread():
                if batch:
                    self.replica.apply_events(batch)
                    self._next += len(batch)
                self.replica.install(index, records, list(heads.values()), absent, runs, per_key)

    def deliver(self, upto: int | None = None) -> None:
        with self._as_io_thread():
            super().deliver(upto)

    @contextlib.contextmanager
    def _as_io_thread(self) -> Iterator[None]:
        """Applying is the connection's I/O thread's work: a fault while applying raises, as
        it does there, instead of waiting for a load this very thread would have to answer."""
        before = self.replica.io_thread
        self.replica.io_thread = threading.get_ident()
        try:
            yield
        finally:
            self.replica.io_thread = before


def partial_session(
    cluster: InprocCluster, *, cache_bytes: int = 1 << 30, held: bool = False
) -> Session:
    """A session of `cluster` whose replica is partial (nothing loaded until touched)."""
    replica = Replica()
    connection = PartialConnection(cluster, replica, held=held, cache_bytes=cache_bytes)
    cluster.connections.append(connection)
    return Session(replica, connection)
