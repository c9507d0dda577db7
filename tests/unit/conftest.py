"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.agent_thread import agent  # noqa: F401  (a fixture: one in-thread agent)

from superstatic.client import keys as client_keys


@pytest.fixture(scope="module", autouse=True)
def no_suite_keys() -> Iterator[None]:
    """Unit tests build unkeyed agents in this process (`Server(AgentConfig(...))`): their
    clients present no key, whatever the suite's SUPERSTATIC_KEYS (tests/conftest.py) says."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(client_keys.ENV_KEYS, raising=False)
        yield
