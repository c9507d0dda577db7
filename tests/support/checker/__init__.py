"""Linearizability checker for recorded histories (tests only; stdlib only).

    events = recorder.events()                      # or load_jsonl("run.jsonl")
    verdict = check_events(events, "register")      # Verdict: .result ok / illegal / unknown
    problems = check_acks(events, "list-append", finals)  # lost / duplicated / ... writes

See docs/checker.md. Replay a saved history: python -m tests.support.checker FILE.jsonl
--model register (from the repository root).
"""

from .acks import AckProblem, check_acks, check_acks_operations
from .check import (
    TIMEOUT_S_DEFAULT,
    Explanation,
    KeyVerdict,
    Verdict,
    check_events,
    check_operations,
)
from .history import (
    Event,
    HistoryError,
    Operation,
    Recorder,
    load_jsonl,
    pair_operations,
    parse_jsonl,
    save_jsonl,
)
from .models import COUNTER, LIST_APPEND, MODELS, REGISTER, SET, Model, OpSpec, model_named
from .report import describe_acks, describe_verdict
from .wgl import SEARCH_STEPS_MAX, Result

__all__ = [
    "COUNTER",
    "LIST_APPEND",
    "MODELS",
    "REGISTER",
    "SEARCH_STEPS_MAX",
    "SET",
    "TIMEOUT_S_DEFAULT",
    "AckProblem",
    "Event",
    "Explanation",
    "HistoryError",
    "KeyVerdict",
    "Model",
    "OpSpec",
    "Operation",
    "Recorder",
    "Result",
    "Verdict",
    "check_acks",
    "check_acks_operations",
    "check_events",
    "check_operations",
    "describe_acks",
    "describe_verdict",
    "load_jsonl",
    "model_named",
    "pair_operations",
    "parse_jsonl",
    "save_jsonl",
]
