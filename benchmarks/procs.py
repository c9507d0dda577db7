"""Every process the suite starts, and how it is stopped: by PID, in a finally.

`ProcessGroup` owns server processes (peers' servers) and worker processes (the client
processes that drive a workload). Workers speak JSON lines: the suite writes one command per
line on the worker's stdin, the worker answers one JSON object per line on stdout; its stderr
goes to a log file in the run folder, quoted when a worker fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# How long a stopped process gets to exit after SIGTERM before SIGKILL.
TIMEOUT_S_STOP = 10.0
# Default wait for one worker answer; workloads pass their own (run time + this margin).
TIMEOUT_S_ANSWER = 120.0
# Answer lines a worker may have queued unread (a worker answers once per command).
ANSWERS_QUEUED_MAX = 64
LOG_TAIL_BYTES = 3000


class WorkerFailed(RuntimeError):
    pass


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    answers: queue.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: queue.Queue(ANSWERS_QUEUED_MAX)
    )

    def __post_init__(self) -> None:
        # A reader thread turns stdout lines into answers, so waiting for one can time out.
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for raw in stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                answer = json.loads(line)
            except ValueError:
                answer = {"error": f"worker printed a non-JSON line: {line[:200]}"}
            self.answers.put(answer)
        self.answers.put(None)  # end of stream: the worker exited

    def send(self, command: dict[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(command).encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerFailed(f"worker {self.name} is gone ({exc})\n{self.log_tail()}") from exc

    def receive(self, timeout_s: float = TIMEOUT_S_ANSWER) -> dict[str, Any]:
        try:
            answer = self.answers.get(timeout=timeout_s)
        except queue.Empty:
            raise WorkerFailed(
                f"worker {self.name} gave no answer within {timeout_s:.0f} s\n{self.log_tail()}"
            ) from None
        if answer is None:
            self.process.wait(TIMEOUT_S_STOP)
            raise WorkerFailed(
                f"worker {self.name} exited (code {self.process.returncode})\n{self.log_tail()}"
            )
        if "error" in answer:
            raise WorkerFailed(f"worker {self.name}: {answer['error']}\n{self.log_tail()}")
        return answer

    def call(self, command: dict[str, Any], timeout_s: float = TIMEOUT_S_ANSWER) -> dict[str, Any]:
        self.send(command)
        return self.receive(timeout_s)

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
        return f"--- {self.log_path} ---\n{tail}" if tail else ""


@dataclass
class ProcessGroup:
    """Starts processes and stops every one of them, by PID, in `close()` (use it with `with`)."""

    log_dir: Path
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _log(self, name: str) -> tuple[Path, IO[bytes]]:
        path = self.log_dir / f"{name}.log"
        return path, open(path, "ab")

    def start_server(
        self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        _, log = self._log(name)
        try:
            process = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C reaches the suite, which stops it in order
            )
        finally:
            log.close()
        self.processes.append((name, process))
        return process

    def start_worker(self, name: str, args: Sequence[str]) -> Worker:
        """`python -m superstatic_bench.client ARGS`-style worker: args after the interpreter."""
        path, log = self._log(name)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            process = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.processes.append((name, process))
        return Worker(name, process, path)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(TIMEOUT_S_STOP)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM and wait; SIGKILL past TIMEOUT_S_STOP."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(TIMEOUT_S_STOP)
            except subprocess.TimeoutExpired:
                self.kill(process)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        # Reverse order: workers (started last) go before the servers they talk to.
        while self.processes:
            _, process = self.processes.pop()
            try:
                self.stop(process)
            finally:
                if process.poll() is None:
                    self.kill(process)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Polls `predicate()` until true; TimeoutError naming `what` past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # a server still starting refuses connections
            last_error = exc
        time.sleep(poll_s)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f} s{detail}")
