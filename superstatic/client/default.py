"""The process's default session, created by connect() or on first use."""

from __future__ import annotations

import atexit
import threading

from superstatic.objects.session import Session
from superstatic.protocol.errors import Error

_lock = threading.Lock()
_default: Session | None = None
_endpoints: list[str] | None = None


def connect(endpoints: list[str] | str | None = None) -> Session:
    """Connects this process to the cluster (explicit endpoints > $SUPERSTATIC_AGENT > an
    embedded single-node agent for the current directory). Idempotent for the same endpoints."""
    global _default, _endpoints
    from superstatic.client import embedded
    from superstatic.client.connection import Connection
    from superstatic.objects.replica import Replica

    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e]
    with _lock:
        if _default is not None and not _default.closed:
            if endpoints is None or list(endpoints) == _endpoints:
                return _default
            raise Error(
                f"already connected to {_endpoints}; call superstatic.close() before connecting "
                "to other agents"
            )
        resolved = embedded.resolve_endpoints(endpoints)
        replica = Replica()
        connection = Connection(list(resolved), replica)
        session = Session(replica, connection)
        _default, _endpoints = session, list(resolved)
    session.sync()  # start from the cluster's current state, not an empty replica
    return session


def get() -> Session:
    session = _default
    if session is not None and not session.closed:
        return session
    return connect()


def close() -> None:
    global _default
    with _lock:
        session, _default = _default, None
    if session is not None:
        session.close()


atexit.register(close)
