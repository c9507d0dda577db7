"""A highly available order-processing server, built only from superstatic's toolkit.

Run several of these, each beside its own agent; a client may talk to any of them, and go on
through another when one dies:

    SUPERSTATIC_AGENT=tcp://127.0.0.1:7501,tcp://127.0.0.1:7502,tcp://127.0.0.1:7503 \\
        python examples/ha_server.py serve --port 8001

HTTP (standard library only):

    POST /commands        {"client": "c1", "request": "c1-17", "order": "o-17",
                           "items": {"apple": 2}, "amount": 30}
                          -> 202 {"request": "c1-17"}   (repeat it freely: same request id,
                                                          same effect, once)
    GET  /results/<id>?wait=5   -> 200 {"request", "result"} once done, else 202 {"pending": true}
    DELETE /results/<id>        -> 200: the client has its result; forget it
    GET  /health                -> 200 {"server": name}

How the pieces make it highly available (docs/toolkit.md, "The HA server"):

* A command becomes a task on the durable queue `shop.tasks`, put with the request id as its
  idempotency key: a client that retries (its server died before answering) enqueues nothing
  twice.
* Each command runs as small tasks: create the order, reserve stock, charge, confirm. The
  order's state machine lives in a clustered object (`Order`, in the root `shop.orders`).
  Every task runs in ONE transaction that checks the order's state, applies its step, puts the
  next task (keyed, so idempotent too) and acks itself: all or nothing. A server killed in the
  middle of a task commits none of it; its claim expires with its liveness and another server
  runs the task again from the start. So every step takes effect exactly once.
* The last step puts the reply into `Results("shop.replies")`, in the same transaction. A client
  collects it through any server, later, as often as it needs to; replies nobody collects
  expire by log time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import superstatic

TASKS = "shop.tasks"
REPLIES = "shop.replies"
REPLY_TTL_S = 600.0
# A task's lease: far longer than a task takes. A server that dies frees its tasks sooner,
# when its liveness lapses (the agents' session ttl).
TASK_LEASE_S = 30.0
STEPS = ("create", "reserve", "charge", "confirm")
NEXT_STEP = {"create": "reserve", "reserve": "charge", "charge": "confirm", "confirm": None}
# The order state each step expects, and the state it leaves.
STATE_BEFORE = {"create": None, "reserve": "new", "charge": "reserved", "confirm": "charged"}
STATE_AFTER = {"create": "new", "reserve": "reserved", "charge": "charged", "confirm": "done"}
INITIAL_STOCK = 1_000_000
REQUEST_BYTES_MAX = 64 * 1024
WAIT_S_MAX = 30.0

log = logging.getLogger("ha_server")


@superstatic.register
class Order:
    """One order's state machine: new -> reserved -> charged -> done."""

    def __init__(
        self, order_id: str, client: str, request: str, items: dict[str, int], amount: int
    ) -> None:
        self.order_id = order_id
        self.client = client
        self.request = request
        self.items = items
        self.amount = amount
        self.state = "new"
        self.history: list[str] = []


def shop() -> tuple[Any, Any, Any, Any]:
    """The shared state: orders, stock, the ledger, and the effects journal (every step
    appends (request, step) once: what the tests check exactly-once against)."""
    return (
        superstatic.root("shop.orders", dict),
        superstatic.root("shop.stock", dict),
        superstatic.root("shop.ledger", dict),
        superstatic.root("shop.effects", list),
    )


@superstatic.transaction()
def run_task(job: superstatic.Job, tasks: superstatic.Queue, replies: superstatic.Results) -> str:
    """One step of a command, all or nothing (re-run on conflict): check the order's state,
    apply the step, queue the next one, ack this one."""
    orders, stock, ledger, effects = shop()
    task = job.value
    step, request = task["step"], task["request"]
    order = orders.get(task["order"])
    state = None if order is None else order.state
    if state != STATE_BEFORE[step]:
        # Only a stale duplicate can get here (a step is queued once, by the step before it,
        # in the same transaction that advanced the state): drop it.
        job.ack()
        return f"skipped {step} of {request}: order is {state}"
    if step == "create":
        order = Order(task["order"], task["client"], request, task["items"], task["amount"])
        orders[task["order"]] = order
    elif step == "reserve":
        for sku, n in order.items.items():
            stock[sku] = stock.get(sku, INITIAL_STOCK) - n
    elif step == "charge":
        ledger[order.client] = ledger.get(order.client, 0) + order.amount
    else:
        replies.put(request, {"order": order.order_id, "state": "done", "charged": order.amount})
    order.state = STATE_AFTER[step]
    order.history.append(step)
    effects.append((request, step))
    following = NEXT_STEP[step]
    if following is not None:
        tasks.put({**task, "step": following}, key=f"{request}:{following}")
    job.ack()
    return f"{step} of {request}"


def worker(name: str, stop: threading.Event) -> None:
    tasks = superstatic.Queue(TASKS)
    replies = superstatic.Results(REPLIES, ttl_s=REPLY_TTL_S)
    while not stop.is_set():
        try:
            job = tasks.get(timeout=1.0, lease_s=TASK_LEASE_S)
            if job is None:
                continue
            log.debug("%s: %s", name, run_task(job, tasks, replies))
        except superstatic.LeaseLost as exc:
            log.info("%s: %s", name, exc)  # someone else runs it (or ran it)
        except superstatic.Error as exc:
            log.warning("%s: %s", name, exc)  # e.g. Unavailable during a failover: go on
            time.sleep(0.2)


class Handler(BaseHTTPRequestHandler):
    server_version = "ha_server/1"
    name = "server"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/health":
            self._send(200, {"server": self.name})
            return
        if not url.path.startswith("/results/"):
            self._send(404, {"error": "unknown path"})
            return
        request = url.path[len("/results/") :]
        wait_s = min(WAIT_S_MAX, float(parse_qs(url.query).get("wait", ["0"])[0]))
        replies = superstatic.Results(REPLIES, ttl_s=REPLY_TTL_S)
        try:
            result = replies.get(request, timeout=wait_s, default=None)
        except superstatic.Error as exc:
            self._send(503, {"error": str(exc)})
            return
        if result is None:
            self._send(202, {"request": request, "pending": True})
        else:
            self._send(200, {"request": request, "result": result, "server": self.name})

    def do_DELETE(self) -> None:
        path = urlparse(self.path).path
        if not path.startswith("/results/"):
            self._send(404, {"error": "unknown path"})
            return
        try:
            superstatic.Results(REPLIES, ttl_s=REPLY_TTL_S).delete(path[len("/results/") :])
        except superstatic.Error as exc:
            self._send(503, {"error": str(exc)})
            return
        self._send(200, {"deleted": True})

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/commands":
            self._send(404, {"error": "unknown path"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 < length <= REQUEST_BYTES_MAX:
            self._send(400, {"error": f"a command is 1..{REQUEST_BYTES_MAX} bytes of JSON"})
            return
        try:
            command = json.loads(self.rfile.read(length))
            task = {
                "step": "create",
                "client": str(command["client"]),
                "request": str(command["request"]),
                "order": str(command["order"]),
                "items": {str(k): int(v) for k, v in command["items"].items()},
                "amount": int(command["amount"]),
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._send(400, {"error": f"bad command: {exc}"})
            return
        try:
            # Keyed by the request id: a retried command (through this or any server) is
            # enqueued once. The 202 is sent only after the put committed.
            superstatic.Queue(TASKS).put(task, key=task["request"])
        except superstatic.Error as exc:
            self._send(503, {"error": str(exc)})
            return
        self._send(202, {"request": task["request"], "server": self.name})


def serve(port: int, workers: int, name: str) -> None:
    superstatic.connect()
    shop()  # create the roots once, before the first task needs them
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(f"{name}.w{i}", stop), daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    Handler.name = name
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True

    def on_term(_signum: int, _frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    print(json.dumps({"serving": port, "server": name, "pid": os.getpid()}), flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        httpd.server_close()
        superstatic.close()


def report() -> dict[str, Any]:
    """What the cluster holds: for checking a run (the tests use the same view)."""
    superstatic.connect()
    superstatic.sync()
    orders, stock, ledger, effects = shop()
    tasks = superstatic.Queue(TASKS)
    return {
        "orders": {oid: o.state for oid, o in orders.items()},
        "effects": [list(e) for e in effects],
        "stock": dict(stock),
        "ledger": dict(ledger),
        "tasks": tasks.stats(),
        "dead_letters": len(tasks.dead_letters),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run one server (agents from $SUPERSTATIC_AGENT)")
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--workers", type=int, default=2, help="task worker threads")
    p_serve.add_argument("--name", default=f"server-{os.getpid()}")
    sub.add_parser("report", help="print the shop's state as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "serve":
        serve(args.port, args.workers, args.name)
    else:
        print(json.dumps(report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
