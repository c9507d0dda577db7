"""The errors a user of superstatic can meet. Each message says what happened and what to do."""

from __future__ import annotations


class Error(Exception):
    """Base class of every error superstatic raises on purpose."""


class Unavailable(Error):
    """No quorum (or no reachable agent) within the timeout.

    `outcome_known` tells whether the operation certainly did not commit (True) or may have
    committed (False). The message always says which, so a user reading a log knows too.
    `halted` names why an agent had stopped, when one refused it for that within
    timeout_ms_request of the error (not necessarily the last refusal: a later one from an
    agent that had not halted leaves it kept).
    """

    def __init__(self, message: str, *, outcome_known: bool, halted: str | None = None) -> None:
        super().__init__(message)
        self.outcome_known = outcome_known
        # Why the last agent that refused it had stopped applying (wire.HALT_REASONS: poisoned,
        # rules_unknown, store_full, damaged), when one refused it so; else None.
        self.halted = halted


class ConflictError(Error):
    """A transaction kept conflicting with concurrent writers past its retry budget."""


class NotStorable(Error):
    """A value cannot be replicated. Raised at the assignment; names the path and the type."""

    def __init__(self, path: str, type_name: str, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"cannot store a value of type {type_name!r} at {path}{detail}. Storable values are "
            "None, bool, int, float, str, bytes, tuple, list, dict, set, frozenset, "
            "datetime/date/time, Decimal, UUID and instances of classes registered with "
            "superstatic.register()"
        )
        self.path = path
        self.type_name = type_name


class StoreFull(Error):
    """The cluster refused a write because an agent's store is full (or nearly: it keeps a
    reserve to apply what is already logged). Nothing was written. Reads still work; writes
    that only delete are still accepted. The message names the agent and what to do: give it
    a larger --map-bytes (a restart) or more disk, or delete data."""


class AuthError(Error):
    """An agent refused this process: its CURVE key is missing, unknown to the cluster (not in
    the allow list, or revoked), or its role does not permit the request (a `read` key writing,
    an `app` key changing the membership). Nothing was done. The message names the agent and
    what to do: set SUPERSTATIC_KEYS (or connect(keys=...)) to a key file the cluster's
    operator issued (`superstatic keys new` / `keys add`). Never retried: the same key would be
    refused again."""


class ProtocolError(Error):
    """A peer or client sent something that is not valid superstatic protocol."""


class LimitExceeded(Error):
    """A named limit was hit; the message names the limit, its value and the offending size."""

    def __init__(self, limit_name: str, limit: int, actual: int, what: str) -> None:
        super().__init__(f"{what} is {actual}, above the limit {limit_name}={limit}")
        self.limit_name = limit_name
        self.limit = limit
        self.actual = actual
