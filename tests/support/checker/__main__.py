"""Replays a saved history through the checker.

    python -m tests.support.checker HISTORY.jsonl --model register [--final FINAL.jsonl]

Exit status: 0 linearizable (and no acknowledgement problem), 1 a violation, 2 bad input,
3 unknown (the search ran out of steps or time; nothing was shown either way).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .acks import check_acks
from .check import TIMEOUT_S_DEFAULT, check_events
from .history import HistoryError, Key, Value, load_jsonl, value_of_json
from .models import MODELS
from .report import describe_acks, describe_verdict
from .wgl import SEARCH_STEPS_MAX, Result

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_INPUT = 2
EXIT_UNKNOWN = 3


def load_finals(path: str) -> dict[Key, Value]:
    """Final states, one JSON object a line: {"key": "x", "value": [1, 2, 3]}."""
    finals: dict[Key, Value] = {}
    with open(path, encoding="utf-8") as file:
        for line_number, text in enumerate(file, start=1):
            if not text.strip():
                continue
            where = f"{path} line {line_number}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HistoryError(where, None, f"not JSON: {exc.msg}") from None
            if not isinstance(obj, dict) or set(obj) != {"key", "value"}:
                raise HistoryError(where, None, 'expected {"key": ..., "value": ...}')
            key = obj["key"]
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise HistoryError(where, "key", f"{key!r} is not a string or int")
            if key in finals:
                raise HistoryError(where, "key", f"{key!r} given twice")
            finals[key] = value_of_json(obj["value"], where, "value")
    return finals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.checker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("history", help="JSON Lines of invoke/ok/fail/info events")
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument(
        "--final", help='JSON Lines {"key": k, "value": v}: each key read after healing'
    )
    parser.add_argument("--steps-max", type=int, default=SEARCH_STEPS_MAX)
    parser.add_argument("--timeout-s", type=float, default=TIMEOUT_S_DEFAULT)
    args = parser.parse_args(argv)
    if args.steps_max <= 0 or args.timeout_s < 0:
        parser.error("--steps-max must be positive and --timeout-s not negative")
    try:
        events = load_jsonl(args.history)
        verdict = check_events(
            events, args.model, steps_max=args.steps_max, timeout_s=args.timeout_s
        )
        problems = check_acks(events, args.model, load_finals(args.final)) if args.final else []
    except (HistoryError, OSError) as exc:
        print(f"{args.history}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(describe_verdict(verdict))
    if args.final:
        print(describe_acks(problems))
    if verdict.result is Result.ILLEGAL or problems:
        return EXIT_VIOLATION
    if verdict.result is Result.UNKNOWN:
        return EXIT_UNKNOWN
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
