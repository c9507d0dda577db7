"""Review 11 finding on object ids (agent/nodeops.py writes each one as an LMDB key of the
`oids` db): an id within OID_CHARS_MAX characters can be more bytes than LMDB takes as a key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_keyreads import Replica, with_dict

from superstatic.protocol.codec import Ref

# 128 characters (OID_CHARS_MAX) of 4 UTF-8 bytes each: 512 bytes, one above LMDB's key bound.
WIDE_OID = "\U0001f600" * 128


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Replica]:
    replica = Replica(tmp_path / "r")
    try:
        yield replica
    finally:
        replica.close()


def test_an_object_id_too_long_for_an_lmdb_key_is_an_error_outcome(r: Replica) -> None:
    with_dict(r)
    applied = r.v1([["new", WIDE_OID, "dict", []], ["set", "c.d", "x", Ref(WIDE_OID)]])
    assert applied.outcome == "error"
    assert "OID_BYTES_MAX=511" in applied.error
    # The agent keeps serving.
    assert r.v1([["set", "c.d", "y", 1]]).outcome == "ok"
    assert r.node("c.d")[2] == [["y", 1]]
