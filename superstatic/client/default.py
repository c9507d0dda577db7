"""The process's default session, created by connect() or on first use.

Fork safety: a forked child must not use its parent's connection (the socket and the I/O
thread belong to the parent; the child has a copy of the socket's memory and no thread). The
`os.register_at_fork` hooks below make the fork happen between two log entries (the replica
lock is held across it, so the child's replica is a whole prefix of the log), then give the
child fresh locks and drop the parent's connection, unclosed. The child keeps the replica (so
objects the parent obtained before forking, e.g. in a pre-fork server, stay the same objects)
and starts a connection of its own, a new session with a new client id, right away in the
background: it subscribes from the replica's index, so even a child that only reads sees new
writes. Its first use of superstatic waits for that connection.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from superstatic.objects import txn as _txn
from superstatic.objects.session import Session
from superstatic.protocol.errors import Error

_lock = threading.Lock()
_default: Session | None = None
_endpoints: list[str] | None = None
# Connections a forked child inherited: never used, only kept referenced (their sockets belong
# to the parent; pyzmq does not close what another process opened, but nothing should try).
_inherited: list[Any] = []


def _new_connection(
    endpoints: list[str], keys: Any = None, heap: str = "all", cache_bytes: int = 0
) -> Any:
    """A factory of connections to these agents with this CURVE key (a forked child makes its
    own connection with it)."""
    from superstatic.client.connection import Connection

    return lambda replica: Connection(
        list(endpoints), replica, keys=keys, heap=heap, cache_bytes=cache_bytes
    )


REPLICATE_MODES = ("all", "partial")
# A partial replica is the default (issue 13: an app starts with nothing loaded); the full one
# is asked for by connect(replicate="all") or, without touching the code, by this variable.
REPLICATE_DEFAULT = "partial"
ENV_REPLICATE = "SUPERSTATIC_REPLICATE"


def replicate_of(replicate: str | None) -> str:
    """connect()'s `replicate`, checked: the argument, else $SUPERSTATIC_REPLICATE, else
    REPLICATE_DEFAULT. The variable's value is not echoed (it may be anything)."""
    if replicate is None:
        raw = os.environ.get(ENV_REPLICATE, "").strip()
        if not raw:
            return REPLICATE_DEFAULT
        if raw not in REPLICATE_MODES:
            raise Error(f"${ENV_REPLICATE} must be one of {', '.join(REPLICATE_MODES)}")
        return raw
    if replicate not in REPLICATE_MODES:
        raise Error(f"connect(replicate=...) must be one of {', '.join(REPLICATE_MODES)}")
    return replicate


def cache_bytes_of(replicate: str, cache_bytes: int | None) -> int:
    """connect()'s `cache_bytes`, checked: the argument, else $SUPERSTATIC_CACHE_BYTES, else
    the default; only a partial replica has one."""
    from superstatic.objects import eviction

    if replicate not in REPLICATE_MODES:
        raise Error(f"connect(replicate=...) must be one of {', '.join(REPLICATE_MODES)}")
    low, high = eviction.CACHE_BYTES_MIN, eviction.CACHE_BYTES_MAX
    if replicate == "all":
        if cache_bytes is not None:
            raise Error(
                "connect(cache_bytes=...) bounds a partial replica; replicate='all' holds "
                "every object"
            )
        return 0
    where = "connect(cache_bytes=...)"
    if cache_bytes is None:
        raw = os.environ.get(eviction.ENV_CACHE_BYTES, "").strip()
        if not raw:
            return eviction.CACHE_BYTES_DEFAULT
        where = f"${eviction.ENV_CACHE_BYTES}"
        if not raw.isdigit():
            raise Error(f"{where} must be a whole number of bytes in {low}..{high}")
        cache_bytes = int(raw)
    if type(cache_bytes) is not int or not low <= cache_bytes <= high:
        raise Error(
            f"{where} must be an int in CACHE_BYTES_MIN..CACHE_BYTES_MAX = {low}..{high} bytes"
        )
    return cache_bytes


def connect(
    endpoints: list[str] | str | None = None,
    keys: str | os.PathLike[str] | None = None,
    *,
    replicate: str | None = None,
    cache_bytes: int | None = None,
) -> Session:
    """Connects this process to the cluster (explicit endpoints > $SUPERSTATIC_AGENT > an
    embedded single-node agent for the current directory). Idempotent for the same endpoints.

    `keys`: the app's key file (else $SUPERSTATIC_KEYS; docs/security.md). The embedded agent
    is private to its owner and uses its own (or no) keys, so `keys` needs endpoints.

    `replicate`: "partial" (objects are loaded when first touched and evicted past
    `cache_bytes`, else $SUPERSTATIC_CACHE_BYTES, else CACHE_BYTES_DEFAULT: docs/virtual-heap.md)
    or "all" (every object of the cluster is held in this process and every read is local);
    None: $SUPERSTATIC_REPLICATE, else "partial"."""
    global _default, _endpoints
    from superstatic.client import embedded
    from superstatic.client import keys as client_keys
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
        explicit = bool(endpoints) or bool(os.environ.get(embedded.ENV_AGENT, "").strip())
        if keys is not None and not explicit:
            raise Error(
                "connect(keys=...) needs agents: pass endpoints or set SUPERSTATIC_AGENT (the "
                "embedded agent of this directory is private to you and needs no key file)"
            )
        replicate = replicate_of(replicate)
        cache = cache_bytes_of(replicate, cache_bytes)
        resolved = list(embedded.resolve_endpoints(endpoints))
        # The embedded agent's own key (its TCP fallback) or none: never $SUPERSTATIC_KEYS.
        app_keys = client_keys.resolve(keys) if explicit else embedded.embedded_keys(Path.cwd())
        replica = Replica()
        factory = _new_connection(resolved, app_keys, replicate, cache)
        session = Session(replica, factory(replica), factory)
        _default, _endpoints = session, resolved
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


# ---------------------------------------------------------------------------------- fork


# The session whose replica lock is held across a fork (the hooks run in the forking thread).
_forking: dict[int, Session] = {}


def _before_fork() -> None:
    session = _default
    if session is not None:
        # Between entries: the child must not copy a half-applied replica.
        session.replica.lock.acquire()
        _forking[threading.get_ident()] = session


def _after_fork_in_parent() -> None:
    session = _forking.pop(threading.get_ident(), None)
    if session is not None:
        session.replica.lock.release()


def _after_fork_in_child() -> None:
    global _lock, _default
    session = _forking.pop(threading.get_ident(), None)
    _forking.clear()
    _lock = threading.Lock()  # another thread of the parent may have held it
    running = _txn.current()
    _txn.reset_after_fork(running)
    if session is None:
        return
    session.replica.lock.release()  # acquired by this thread before the fork
    _default = session
    pin = running.pin if running is not None and running.replica is session.replica else None
    inherited = session.after_fork(pin)
    if inherited is not None:
        _inherited.append(inherited)
    if not session.closed:
        # Connect now, in the background, so the replica follows the log even in a child that
        # only reads; the child's first write, sync() or C() waits for it (Session.connection).
        threading.Thread(target=_connect_quietly, args=(session,), daemon=True).start()


def _connect_quietly(session: Session) -> None:
    # A failure here is retried, and reported, by the child's first use of the session.
    with contextlib.suppress(Exception):
        _ = session.connection


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(close)
