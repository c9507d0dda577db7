"""benchmarks/read_floors.py: it times what it says it times. No timing is asserted (a
benchmark reports numbers; the machine is shared and noisy)."""

from __future__ import annotations

import json

import pytest
from superstatic_bench import read_floors

from superstatic.objects.proxy_dict import DictProxy
from superstatic.objects.proxy_list import ListProxy


def test_the_rows_read_real_proxies_and_give_what_plain_values_give() -> None:
    namespace = read_floors._namespace()
    assert type(namespace["p"]) is DictProxy and type(namespace["q"]) is ListProxy
    for _group, _label, statement in read_floors.ROWS:
        # Every statement runs, and the proxy rows read what the plain rows read.
        eval(statement, {}, dict(namespace))
    assert eval('p.get("a")', {}, namespace) == namespace["d"].get("a") == 1
    assert list(eval("p.keys()", {}, namespace)) == ["a", "b"]
    assert eval("q[1]", {}, namespace) == namespace["lst"][1] == 2


def test_a_short_run_reports_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert read_floors.main(["--loops", "20", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["read"], r["statement"]) for r in out["rows"]] == [
        (group, statement) for group, _label, statement in read_floors.ROWS
    ]
    assert all(r["ns"] >= 0.0 for r in out["rows"])
    assert len(out["load_average"]) == 3
    assert out["clock"] == "wall" and isinstance(out["slot"], str)


def test_the_cpu_clock_is_chosen_by_its_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert read_floors.main(["--loops", "20", "--repeats", "1", "--json", "--cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clock"] == "cpu" and len(out["rows"]) == len(read_floors.ROWS)


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        read_floors.main(["--loops", "0"])
    assert "--loops and --repeats must be at least 1" in capsys.readouterr().err
