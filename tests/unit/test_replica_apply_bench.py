"""benchmarks/replica_apply.py: each mode applies every event it says it applies, to a full and
to a partial replica, and the replica ends holding the last value of every key. No timing is
asserted (a benchmark reports numbers; the machine is shared and noisy)."""

from __future__ import annotations

import pytest
from superstatic_bench import replica_apply


@pytest.mark.parametrize("what", ["apply", "frame"])
@pytest.mark.parametrize("partial", [False, True])
def test_a_short_run_applies_every_event(what: str, partial: bool) -> None:
    runs = replica_apply.measure(what, 50, 2, 7, 2, partial)
    assert len(runs) == 2 and all(r > 0 for r in runs)


def test_the_events_are_the_workloads_sets_and_apply_to_the_dict() -> None:
    replica = replica_apply.fresh_replica(2, partial=True)
    items = replica_apply.event_items(5, 2)
    assert [item[0] for item in items] == [2, 3, 4, 5, 6]
    replica.apply_events([(*item[:5], (), item[6], ()) for item in items])
    kv = replica.nodes[replica_apply.KV_OID].live
    assert replica.applied_index == 6 and dict.__len__(kv) == 2 * 16 * 100


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        replica_apply.main(["apply", "--count", "0"])
    assert "--count is 1..COUNT_MAX" in capsys.readouterr().err
