"""Fixtures shared by the test folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from superstatic.tools.localcluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three real agents on loopback with an elected leader; every one stopped by PID after."""
    with LocalCluster(tmp_path / "agents", size=3) as c:
        c.start()
        c.leader()
        yield c
