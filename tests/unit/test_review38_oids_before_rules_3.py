"""Review 38 (branch oidbind): oids created before the cluster moved to rules 3.

Rules 3 remembers what it sees created from its own first entry on: a prefix that created
objects under rules 1 or 2 has no mark until it creates again under 3, and even then its window
starts at its first counter under 3. A collected oid created under rules 2 can therefore be
created again after the move, by another client id with its prefix (which then owns the prefix,
so the app that made it is refused from then on), the stale-stub harm of docs/virtual-heap.md
section 7 for objects made before the upgrade. docs/virtual-heap.md section 7 says so (review
38); closing it needs marks for the prefixes that existed at the move (their owners are not
known then), a design decision, not a contained fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from superstatic_agent.oidmarks import oid_for
from superstatic_agent.rules import rules_payload
from test_oid_marks import A_TWIN, A, Clients, collect


@pytest.mark.xfail(
    strict=True,
    reason="review 38, Low, open: an oid created and collected under rules 2 can be created "
    "again under rules 3 by a client id with its prefix (no mark for what rules 2 made)",
)
def test_an_oid_collected_before_the_move_to_rules_3_is_not_created_again(tmp_path: Path) -> None:
    log = Clients(tmp_path / "s", 2, gc_threshold=1)
    try:
        assert log.txn(A, [["new", "@roots", "dict", []]]).outcome == "ok"
        x = oid_for(A, 1)  # the library's form: rules 2 created it, no mark
        assert log.create(A, x).outcome == "ok"
        assert log.txn(A, [["del", "@roots", x]]).outcome == "ok"
        collect(log, x, first_counter=2)
        assert log.raw(rules_payload("a", 3)).outcome == "noop"
        again = log.create(A_TWIN, x)
        assert again.outcome != "ok", again
    finally:
        log.close()
