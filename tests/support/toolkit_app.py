"""The app side of tests/cluster/test_toolkit.py: toolkit users as separate processes.

    python -m support.toolkit_app ENDPOINTS COMMAND [ARGS...]     (from the tests/ folder)

Each command prints JSON lines (flushed) as it goes; the ones that hold something (`hold`,
`lock`) then wait until killed or until stdin closes.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import superstatic


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def hold(queue: str, lease_s: float) -> None:
    """Claims one job and holds it (never acks) until killed or stdin closes."""
    job = superstatic.Queue(queue).get(timeout=60, lease_s=lease_s)
    assert job is not None, "nothing to claim"
    say(id=job.id, value=job.value, deliveries=job.deliveries)
    sys.stdin.read()


def consume(queue: str, count: int, lease_s: float) -> None:
    """Claims and acks `count` jobs, printing each."""
    q = superstatic.Queue(queue)
    for _ in range(count):
        job = q.get(timeout=60, lease_s=lease_s)
        assert job is not None, "nothing to claim within 60 s"
        job.ack()
        say(id=job.id, value=job.value, deliveries=job.deliveries)


def lock(name: str, hold_s: float) -> None:
    """Acquires the lock, prints the token; holds it `hold_s` seconds (negative: until killed
    or stdin closes), then releases and prints that."""
    lk = superstatic.Lock(name)
    token = lk.acquire(timeout=120)
    assert token is not None, "lock not acquired within 120 s"
    say(token=token, acquired_at=time.time())
    if hold_s < 0:
        sys.stdin.read()
    else:
        time.sleep(hold_s)
    lk.release()
    say(released=token)


def lapse(name: str) -> None:
    """Holds a lock and prints every cluster event (flushed) until stdin closes: the test
    pauses this process past the ttl, so its liveness lapses."""
    superstatic.cluster_events(lambda event: say(event=event.kind, detail=event.detail))
    lk = superstatic.Lock(name)
    token = lk.acquire(timeout=120)
    say(token=token)
    sys.stdin.read()
    try:
        lk.release()
        say(released=True)
    except superstatic.LeaseLost:
        say(released=False)


def put(queue: str, *values: str) -> None:
    q = superstatic.Queue(queue)
    say(ids=[q.put(v) for v in values])


def set_key(root: str, key: str, value: str) -> None:
    superstatic.root(root, dict)[key] = json.loads(value)
    say(ok=True)


def result_get(name: str, request_id: str, timeout_s: float) -> None:
    value = superstatic.Results(name).get(request_id, timeout=timeout_s, default="<none>")
    say(value=value)


COMMANDS = {
    "hold": lambda a: hold(a[0], float(a[1])),
    "consume": lambda a: consume(a[0], int(a[1]), float(a[2])),
    "lock": lambda a: lock(a[0], float(a[1])),
    "lapse": lambda a: lapse(a[0]),
    "put": lambda a: put(a[0], *a[1:]),
    "set": lambda a: set_key(a[0], a[1], a[2]),
    "result": lambda a: result_get(a[0], a[1], float(a[2])),
}


def main() -> None:
    endpoints, command, *args = sys.argv[1:]
    superstatic.connect(endpoints.split(","))
    try:
        COMMANDS[command](args)
    finally:
        superstatic.close()


if __name__ == "__main__":
    main()
