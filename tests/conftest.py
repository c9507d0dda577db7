"""Fixtures shared by the test folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from superstatic.client import keys as client_keys
from superstatic.tools import localcluster
from superstatic.tools.localcluster import LocalCluster


@pytest.fixture(scope="session", autouse=True)
def keyed_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite runs keyed, like a deployment (docs/security.md): every LocalCluster uses this
    session's keys directory (agents run with --keys), and SUPERSTATIC_KEYS names its admin key,
    so every client a test makes (the library, oneshot, RawClient, app subprocesses) presents
    a key the cluster trusts. Tests of refusals make clusters with keys of their own."""
    keys_dir = tmp_path_factory.mktemp("keys") / "shared"
    localcluster.ensure_keys(keys_dir, ["a", "b", "c", "d", "e"])
    previous_dir, previous_env = localcluster.shared_keys_dir, os.environ.get(client_keys.ENV_KEYS)
    localcluster.shared_keys_dir = keys_dir
    os.environ[client_keys.ENV_KEYS] = str(keys_dir / "clients" / "admin.key_secret")
    try:
        yield keys_dir
    finally:
        localcluster.shared_keys_dir = previous_dir
        if previous_env is None:
            os.environ.pop(client_keys.ENV_KEYS, None)
        else:
            os.environ[client_keys.ENV_KEYS] = previous_env


@pytest.fixture(scope="module")
def unkeyed_clients() -> Iterator[None]:
    """For a module whose clusters run without keys (`LocalCluster(keyed=False)`: tests of what
    anyone who reaches a port may send): its clients present no key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(client_keys.ENV_KEYS, raising=False)
        yield


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three real agents on loopback with an elected leader; every one stopped by PID after."""
    with LocalCluster(tmp_path / "agents", size=3) as c:
        c.start()
        c.leader()
        yield c
