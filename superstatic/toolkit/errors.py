"""The toolkit's errors (subclasses of superstatic.Error; exported by the package)."""

from __future__ import annotations

from superstatic.protocol.errors import Error, LimitExceeded


class LeaseLost(Error):
    """What this process claimed (a job) or held (a lock) is no longer its own: the lease ran
    out or its liveness lapsed and another process took it over, or it was already acked or
    released. Nothing was changed; inside a transaction, the whole transaction is abandoned,
    so a state change that depended on holding it never commits."""


class QueueFull(LimitExceeded):
    """A put was refused: the queue holds `maxsize` items (ready, delayed and claimed)."""

    def __init__(self, name: str, maxsize: int, size: int) -> None:
        LimitExceeded.__init__(self, "maxsize", maxsize, size + 1, f"items in queue {name!r}")
        self.args = (
            f"queue {name!r} is full: it holds {size} items, and maxsize={maxsize}. Nothing was "
            "put; retry once consumers caught up (or create the Queue with a larger maxsize)",
        )


class Timeout(Error, TimeoutError):
    """A blocking call's timeout passed before what it waited for happened."""
