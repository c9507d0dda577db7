"""App processes the cluster tests start: a `support.*` module run with the cluster's endpoints,
whose last stdout line is its JSON result. One home for starting, bounding and reading them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1]


def rotated(endpoints: list[str], i: int) -> list[str]:
    """Endpoints with agent i first (mod len): the worker talks to it and fails over to the
    others."""
    k = i % len(endpoints)
    return endpoints[k:] + endpoints[:k]


def start_module(
    module: str, endpoints: list[str], *args: str, stdin: bool = False
) -> subprocess.Popen[str]:
    """`python -m module ENDPOINTS ARGS...` from the tests directory."""
    return subprocess.Popen(
        [sys.executable, "-m", module, ",".join(endpoints), *args],
        cwd=TESTS_DIR,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    """The app's JSON result (its last stdout line); killed by PID if it overruns, and its
    stderr's tail in the failure if it exited non-zero."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
