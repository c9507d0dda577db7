"""The agent's log: readable text by default, one JSON object per line with `--log-format
json`, and a limit on repeated lines.

JSON lines: `{"ts", "level", "event", "agent", "msg", "fields"}`.

- `ts`: UTC, ISO 8601 with milliseconds (`2024-05-01T12:00:00.123Z`).
- `event`: a stable name for what happened (`became_leader`, `following_leader`,
  `members_changed`, `frame_dropped`, ...): an explicit `extra={"event": ...}` wins, then the
  table `EVENTS` below (keyed by the line's format string, so rewording a message does not
  change its event silently: the test pins the table), else a name derived from the format
  string's words. Alert on events, not on message text.
- `fields`: the format arguments, named for the events in `EVENTS`, else `{"args": [...]}`.
- `exc`: the formatted traceback when the line carries one.

Repeats: the same line (logger, level and format string) is written at most
`LOG_REPEATS_MAX` times per `LOG_REPEAT_WINDOW_S`; the rest are counted, summed up in one
`log_suppressed` line when the window ends (at the next line written), and exported as the
metric `superstatic_log_lines_suppressed_total{event}`. At most `LOG_REPEAT_KEYS_MAX`
distinct lines are tracked per window (memory stays bounded; lines beyond are not limited).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TextIO

from superstatic_agent.config import LOG_FORMATS

# The same line written at most this many times per window; the rest are counted.
LOG_REPEATS_MAX = 10
LOG_REPEAT_WINDOW_S = 60.0
# Distinct lines (logger, level, format string) tracked per window.
LOG_REPEAT_KEYS_MAX = 1_024
# Characters of a message kept in a JSON line (the text format keeps the whole message).
LOG_MESSAGE_CHARS_MAX = 4_000

# Format string -> (event, names of its arguments). The agent's lines that operators alert on.
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "agent %s starting: term %d, applied %d, log %d..%d, members %s": (
        "agent_starting",
        ("id", "term", "applied", "log_first", "log_last", "members"),
    ),
    "agent %s stopped at applied %d": ("agent_stopped", ("id", "applied")),
    (
        "member %s is at %s in the configuration this agent holds, not at %s as its flags say: "
        "the held address is used (a member moves by a membership change: remove it, then add "
        "it again at its new address)"
    ): ("member_address_differs", ("member", "held", "given")),
    "became leader in term %d": ("became_leader", ("term",)),
    "following leader %s in term %d": ("following_leader", ("leader", "term")),
    "lost the leader (term %d, now %s)": ("lost_leader", ("term", "role")),
    "members now: voters %s, learners %s": ("members_changed", ("voters", "learners")),
    "connected to member %s at %s": ("member_connected", ("member", "address")),
    "agent %s asked to join: proposing it as a learner at %s": (
        "member_join_proposed",
        ("member", "address"),
    ),
    "installed snapshot at index %d (term %d)": ("snapshot_installed", ("index", "term")),
    "sending a snapshot at index %d to %s": ("snapshot_sending", ("index", "to")),
    "compacted the log up to index %d": ("log_compacted", ("index",)),
    "proposing %d waiting proposals again through the new leader": (
        "proposals_again",
        ("count",),
    ),
    "checked %d stored records in %.1f s: no damage": ("store_checked", ("records", "took_s")),
    "the store in %s is damaged: %s": ("store_damaged", ("data_dir", "found")),
    "repair: %s": ("store_repair", ("action",)),
    "repair complete: applied %d, votes again": ("store_repaired", ("applied",)),
    "store has room again: appending entries": ("store_room_again", ()),
    "counted but not logged in the last minute: %s": ("drops_not_logged", ("counts",)),
    "metrics on http://%s:%d/metrics, status page on http://%s:%d/": (
        "metrics_listening",
        ("host", "port", "host_again", "port_again"),
    ),
    "dropping a subscriber silent for %.1f s": ("subscriber_dropped_silent", ("silent_s",)),
    "no app sent anything for %d ms (--exit-when-idle-ms): exiting": ("idle_exit", ("idle_ms",)),
}
# Lines logged as "%s" with a message built beforehand: the event comes from its first words.
_PREFIX_EVENTS = (
    ("dropped ", "frame_dropped"),
    ("slow loop turn", "slow_turn"),
    ("--fsync off", "fsync_off"),
)
_DROPPED = re.compile(r"^dropped ([a-z_]+):")
_WORD = re.compile(r"[a-z]+")


def event_of(record: logging.LogRecord) -> str:
    explicit = getattr(record, "event", None)
    if isinstance(explicit, str):
        return explicit
    template = str(record.msg)
    known = EVENTS.get(template)
    if known is not None:
        return known[0]
    if template == "%s" and record.args:
        text = str(record.args[0] if isinstance(record.args, tuple) else record.args)
        for prefix, event in _PREFIX_EVENTS:
            if text.startswith(prefix):
                return event
        template = text
    words = _WORD.findall(re.sub(r"%[-#0 +]*[\d.]*[a-z]", " ", template.lower()))
    return "_".join(words[:4]) or "message"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    args = record.args if isinstance(record.args, tuple) else ()
    known = EVENTS.get(str(record.msg))
    if known is not None and len(known[1]) == len(args):
        return {name: _plain(value) for name, value in zip(known[1], args, strict=True)}
    if str(record.msg) == "%s" and args:
        match = _DROPPED.match(str(args[0]))
        return {"category": match.group(1)} if match else {}
    return {"args": [_plain(a) for a in args]} if args else {}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "event": event_of(record),
            "agent": self.node_id,
            "msg": record.getMessage()[:LOG_MESSAGE_CHARS_MAX],
            "fields": getattr(record, "fields", None) or fields_of(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)[:LOG_MESSAGE_CHARS_MAX]
        return json.dumps(line, ensure_ascii=False, default=str)


def text_formatter(node_id: str) -> logging.Formatter:
    """The readable default (unchanged from before JSON logs existed)."""
    return logging.Formatter(f"%(asctime)s agent {node_id} %(levelname)s %(message)s")


class RepeatLimit(logging.Filter):
    """Writes the same line at most LOG_REPEATS_MAX times per LOG_REPEAT_WINDOW_S (see the
    module docstring). `suppressed` counts the lines not written, by event, since start."""

    def __init__(
        self,
        handler: logging.Handler,
        *,
        repeats_max: int = LOG_REPEATS_MAX,
        window_s: float = LOG_REPEAT_WINDOW_S,
        keys_max: int = LOG_REPEAT_KEYS_MAX,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__()
        assert repeats_max >= 1 and window_s > 0 and keys_max >= 1
        self.handler = handler
        self.repeats_max = repeats_max
        self.window_s = window_s
        self.keys_max = keys_max
        self.clock = clock
        # filter() runs outside the handler's lock, from the loop thread and the HTTP thread.
        self._lock = threading.Lock()
        self.suppressed: Counter[str] = Counter()
        self._seen: Counter[tuple[str, int, str]] = Counter()
        self._held: dict[tuple[str, int, str], tuple[int, str]] = {}  # key -> (count, event)
        self._window_start = clock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        with self._lock:
            ended, passed = self._count(record)
        for summary in ended:
            self.handler.handle(summary)
        return passed

    def counts(self) -> dict[str, int]:
        """Lines suppressed since start, by event (a copy, safe from any thread)."""
        with self._lock:
            return dict(self.suppressed)

    def _count(self, record: logging.LogRecord) -> tuple[list[logging.LogRecord], bool]:
        ended: list[logging.LogRecord] = []
        now = self.clock()
        if now - self._window_start >= self.window_s:
            ended = self._end_window(now)
        key = (record.name, record.levelno, str(record.msg))
        if key not in self._seen and len(self._seen) >= self.keys_max:
            return ended, True  # beyond what is tracked: written, not limited
        self._seen[key] += 1
        if self._seen[key] <= self.repeats_max:
            return ended, True
        event = event_of(record)
        count, _ = self._held.get(key, (0, event))
        self._held[key] = (count + 1, event)
        self.suppressed[event] += 1
        return ended, False

    def _end_window(self, now: float) -> list[logging.LogRecord]:
        """Starts a new window; returns one summary line per line limited in the last one
        (written by the caller, outside the lock)."""
        summaries = []
        held, self._held = self._held, {}
        self._seen.clear()
        self._window_start = now
        for (name, level, template), (count, event) in sorted(held.items()):
            summary = logging.LogRecord(
                name,
                level,
                __file__,
                0,
                "suppressed %d repeats of %s in the last %.0f s: %s",
                (count, event, self.window_s, template[:200]),
                None,
            )
            summary.repeat_summary = True
            summary.event = "log_suppressed"
            summary.fields = {"count": count, "of_event": event, "window_s": self.window_s}
            summaries.append(summary)
        return summaries


def configure(
    node_id: str, level: str, log_format: str, stream: TextIO | None = None
) -> RepeatLimit:
    """Sets up the root logger for the agent process; returns the repeat limit (its counts are
    exported as metrics)."""
    assert log_format in LOG_FORMATS, log_format
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(node_id) if log_format == "json" else text_formatter(node_id)
    )
    limit = RepeatLimit(handler)
    handler.addFilter(limit)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return limit


# Set by configure() when the agent's command line set logging up (None in tests that build a
# Server directly): the observer hands its counts to the metrics.
current_limit: RepeatLimit | None = None


def install(node_id: str, level: str, log_format: str) -> None:
    global current_limit
    current_limit = configure(node_id, level, log_format)
