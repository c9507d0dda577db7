"""What a client process needs from a system under test: the same three operations everywhere.

* `write(state, key, value)`: one small durable write (a dict item; SET; put).
* `call(state)`: one sequential "method call" on a counter (the latency workload).
* `rmw(state)`: read-modify-write of the one hot object shared by every client, retried on
  conflict; `attempts()` counts every attempt made in this process so far, so that
  (attempts - calls) / calls is the conflict-retry rate.

`state` is what `thread_state()` returned for the calling thread (a connection, a session
handle): drivers whose client objects are not thread-safe keep one per thread.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class Driver(Protocol):
    system: str

    def prepare(self) -> dict[str, Any]: ...
    def thread_state(self, thread_index: int) -> Any: ...
    def write(self, state: Any, key: str, value: str) -> None: ...
    def call(self, state: Any) -> None: ...
    def rmw(self, state: Any) -> None: ...
    def attempts(self) -> int: ...
    def close(self) -> None: ...


@runtime_checkable
class KeyedDriver(Protocol):
    """What the keyed workloads (bigdict, disjoint) need beyond `Driver`; superstatic only.

    * `fill_big_dict(size, batch, value)`: the dict of `size` keys, filled before timing;
    * `big_write(size, j, value)`: one lone write setting existing key j of that dict;
    * `disjoint_setup(keys)` then `disjoint_rmw(key)`: read-modify-write of one key of the
      shared dict in a transaction, re-run by the system on conflict;
    * `library_counts()`: the system's own conflict counters, so a run reports their deltas.
    """

    def fill_big_dict(self, size: int, batch: int, value: str) -> dict[str, Any]: ...
    def big_write(self, size: int, j: int, value: str) -> None: ...
    def disjoint_setup(self, keys: list[str]) -> None: ...
    def disjoint_rmw(self, key: str) -> None: ...
    def library_counts(self) -> dict[str, int]: ...


class OpFailed(RuntimeError):
    """An operation the system refused or could not confirm (counted, never hidden)."""


class NoDriver:
    """`--system none`: a client process that opens nothing at start (the catch-up workload's
    app measures its own connect), so it serves only the commands that need no driver."""

    system = "none"

    def prepare(self) -> dict[str, Any]:
        return {}

    def thread_state(self, thread_index: int) -> Any:
        raise OpFailed("--system none runs no operations")

    def write(self, state: Any, key: str, value: str) -> None:
        raise OpFailed("--system none runs no operations")

    def call(self, state: Any) -> None:
        raise OpFailed("--system none runs no operations")

    def rmw(self, state: Any) -> None:
        raise OpFailed("--system none runs no operations")

    def attempts(self) -> int:
        return 0

    def close(self) -> None:
        pass
