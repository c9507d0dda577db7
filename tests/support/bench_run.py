"""One small real run of `superstatic bench` workloads through the suite's own code (real agents
and client processes, everything stopped), for the bench tests that run their workloads end to
end: its results as written to results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from superstatic_bench import suite
from superstatic_bench.settings import Settings


def run_suite(tmp_path: Path, selected: list[str], settings: Settings) -> dict[str, Any]:
    out = tmp_path / "out"
    options = suite.Options(
        selected=selected,
        settings=settings,
        out_dir=out,
        plots=False,
        work_dir=tmp_path / "work",
    )
    code = suite.run(options)
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert code == 0, results.get("errors")
    return results
