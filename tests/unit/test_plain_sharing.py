"""`plain()` keeps the sharing of what it copies on a partial replica too: a node reached by
two paths is one plain object, though the replica may evict it between the two (test_model's
SharedMatchesPlainPartial found it: a list shared by two containers came out as two)."""

from __future__ import annotations

from pathlib import Path

from support.heap_inproc import partial_session
from support.inproc import InprocCluster

from superstatic.objects.plain_copy import plain


def test_a_node_reached_by_two_paths_is_one_plain_object_on_an_evicting_replica(
    tmp_path: Path,
) -> None:
    with InprocCluster(tmp_path) as cluster:
        writer = cluster.session()
        model = writer.root("model", dict)

        def two_writes() -> None:
            model["a"] = None
            model[("pair", 1)] = {}

        writer.run(two_writes)
        model["a"] = {}
        model["b"] = []
        model["a"]["a"] = {"a": []}
        model["b"].append(model["a"]["a"]["a"])  # one list, two paths
        assert model["b"][0] is model["a"]["a"]["a"]
        # A replica built afterwards, whose cache evicts every node nothing references.
        reader = partial_session(cluster, cache_bytes=1)
        copied = plain(reader.root("model", dict))
        assert copied == {"a": {"a": {"a": []}}, ("pair", 1): {}, "b": [[]]}
        assert copied["b"][0] is copied["a"]["a"]["a"]


def test_closing_a_partial_replica_that_holds_hollow_instances_raises_nothing(
    tmp_path: Path,
) -> None:
    """Session.close() detaches every node's ref; a hollow instance (a shared object whose node
    was evicted) must be detached without faulting it in (it raised Error at exit)."""
    from superstatic.objects import hollow
    from superstatic.objects.replica import _detach_ref
    from superstatic.protocol.errors import Error

    class Thing:
        pass

    stub = object.__new__(hollow.hollow_class(Thing))
    _detach_ref(stub, "closed here")  # no fault, no raise
    try:
        stub.anything  # noqa: B018
    except Error as exc:
        assert "closed here" in str(exc)
    else:
        raise AssertionError("a detached instance served a read")
