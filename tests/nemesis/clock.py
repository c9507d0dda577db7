"""Per-agent wall clocks through libfaketime, changed while the agents run.

Every agent starts with libfaketime preloaded and its own offset file (FAKETIME_TIMESTAMP_FILE,
re-read at most once a second: FAKETIME_CACHE_DURATION=1). Writing "+90s" there moves that
agent's `time.time()` 90 s ahead from then on: a skew if left, a jump when written at run time.

Only the wall clock is faked (FAKETIME_DONT_FAKE_MONOTONIC=1): Linux's CLOCK_MONOTONIC never
steps, and the agent's timers (ticks, timeouts) use it; the wall clock is what NTP steps and
what the agent stamps into log entries (`time_ms`: log time, which expires client sessions).
libfaketime 0.9.10 with that option breaks `time.sleep()` (clock_nanosleep answers EINVAL);
the agent never sleeps (it polls), so the agents are fine, and nothing else is preloaded.
"""

from __future__ import annotations

import os
from pathlib import Path


class Clocks:
    def __init__(self, directory: Path, library: str | None) -> None:
        self.directory = directory
        self.library = library
        self.offsets: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.library is not None

    def path(self, slot: str) -> Path:
        return self.directory / f"clock-{slot}"

    def env(self, slot: str) -> dict[str, str]:
        """Environment for an agent in `slot`; empty without libfaketime."""
        if self.library is None:
            return {}
        if slot not in self.offsets:
            self.set(slot, 0)
        return {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.path(slot)),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def set(self, slot: str, offset_s: int) -> None:
        """The agent in `slot` sees the wall clock `offset_s` from the real one (within 1 s)."""
        assert self.library is not None, "libfaketime is not available"
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path(slot).with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+d}s\n")
        os.replace(tmp, self.path(slot))  # libfaketime never reads a half-written file
        self.offsets[slot] = offset_s

    def reset(self) -> None:
        for slot in list(self.offsets):
            if self.offsets[slot] != 0:
                self.set(slot, 0)
