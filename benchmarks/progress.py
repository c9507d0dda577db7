"""The progress display: one status line that ticks while a step runs.

On a terminal the line is redrawn in place (elapsed / expected seconds); otherwise (a log file,
CI) each step prints one line when it starts and one when it ends, so logs stay readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

TICK_S = 0.25
LINE_CHARS_MAX = 110


class Progress:
    def __init__(self, stream: TextIO | None = None, total_steps: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.total_steps = total_steps
        self.done_steps = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def _write(self, text: str, final: bool) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\x1b[2K" + text[:LINE_CHARS_MAX] + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        self._write(text, final=True)

    def _prefix(self) -> str:
        total = self.total_steps if self.total_steps >= self.done_steps + 1 else "?"
        return f"[{self.done_steps + 1}/{total} {time.monotonic() - self.started:5.0f}s]"

    @contextmanager
    def step(self, label: str, expected_s: float = 0.0) -> Iterator[dict[str, str]]:
        """A step; the caller may set `result` in the yielded dict to show on completion."""
        outcome: dict[str, str] = {}
        prefix = self._prefix()
        begun = time.monotonic()
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(TICK_S):
                elapsed = time.monotonic() - begun
                eta = f"/{expected_s:.0f}" if expected_s else ""
                self._write(f"{prefix} {label} ... {elapsed:.1f}{eta} s", final=False)

        if self.live:
            ticker = threading.Thread(target=tick, name="progress", daemon=True)
            ticker.start()
        else:
            self._write(f"{prefix} {label} ...", final=True)
        try:
            yield outcome
        except BaseException:
            outcome.setdefault("result", "failed")
            raise
        finally:
            stop.set()
            if self.live:
                ticker.join()
            self.done_steps += 1
            elapsed = time.monotonic() - begun
            self._write(
                f"{prefix} {label}: {outcome.get('result', 'done')} ({elapsed:.1f} s)", True
            )
