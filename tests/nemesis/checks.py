"""Checking one run: the histories with the project's checker (tests/support/checker), plus
the checks linearizability alone does not make.

- linearizable: per model, per key (Wing & Gong search, support.checker.check_events);
- acknowledgements: against the final state read after healing (support.checker.check_acks):
  no ok write lost, none applied twice, nothing present that was never attempted or failed;
- stale reads: a sync() read that misses a write acknowledged before the read began (set,
  list-append, counter). Linearizability implies this; it is counted on its own because it is
  the one property users of sync() rely on, and it reads plainly in a report;
- convergence: after healing, every agent reports the same commit and applied index and
  `INSPECT` gives the same value of every root at every agent, equal to the final reads;
- the queue workload: queue_checks.py (what docs/toolkit.md promises of `superstatic.Queue`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.checker import (
    AckProblem,
    Event,
    HistoryError,
    Verdict,
    check_acks,
    check_events,
    describe_acks,
    describe_verdict,
    load_jsonl,
    pair_operations,
    parse_jsonl,
    save_jsonl,
)
from support.checker.__main__ import load_finals

from .client import DRAIN_CLIENT, MODELS, ROOTS
from .queue_checks import QueueResult, check_queue, load_left
from .queue_workload import MODEL as QUEUE_MODEL


@dataclass
class ModelResult:
    model: str
    events: int
    counts: dict[str, int]  # ok / fail / info operations
    verdict: Verdict | None
    problems: list[AckProblem]
    stale: list[str]
    error: str = ""  # a history the checker could not read

    @property
    def violations(self) -> int:
        illegal = len(self.verdict.illegal()) if self.verdict else 0
        return illegal + len(self.problems) + len(self.stale) + (1 if self.error else 0)

    def ack_count(self, *kinds: str) -> int:
        return sum(1 for p in self.problems if p.kind in kinds)

    def describe(self) -> str:
        lines = [f"== {self.model}: {self.events} events, {self.counts}"]
        if self.error:
            lines.append(f"history unreadable: {self.error}")
        if self.verdict is not None:
            lines.append(describe_verdict(self.verdict))
        lines.append(describe_acks(self.problems))
        if self.stale:
            lines.append(f"stale sync() reads: {len(self.stale)}")
            lines.extend(f"  {s}" for s in self.stale[:10])
        return "\n".join(lines)


@dataclass
class Convergence:
    ok: bool
    detail: str
    applied: dict[str, Any] = field(default_factory=dict)


def merge_histories(run_dir: Path, model: str) -> tuple[Path, list[str]]:
    """history-<model>.jsonl from every client's file, in time order; a last line cut short by
    a killed client is dropped (and said)."""
    events: list[Event] = []
    notes: list[str] = []
    for path in sorted(run_dir.glob(f"history-{model}-c*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines:
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:
                notes.append(f"{path.name}: last line cut short, dropped")
                lines = lines[:-1]
        events.extend(parse_jsonl(lines))
    events.sort(key=lambda e: e.time)  # stable: each process's events keep their order
    merged = run_dir / f"history-{model}.jsonl"
    save_jsonl(merged, events)
    return merged, notes


def stale_reads(events: Sequence[Event], model: str) -> list[str]:
    """Reads that miss a write acknowledged before they were invoked."""
    if model not in ("set", "list-append", "counter"):
        return []
    ops = pair_operations(events)
    writes = sorted(
        (op for op in ops if op.f != "read" and op.status == "ok"), key=lambda o: o.return_time
    )
    reads = sorted(
        (op for op in ops if op.f == "read" and op.status == "ok"), key=lambda o: o.call_time
    )
    found: list[str] = []
    acked: dict[Any, set[Any]] = {}
    sums: dict[Any, int] = {}
    i = 0
    for read in reads:
        while i < len(writes) and writes[i].return_time < read.call_time:
            w = writes[i]
            acked.setdefault(w.key, set()).add(w.value)
            sums[w.key] = sums.get(w.key, 0) + (w.value if model == "counter" else 0)
            i += 1
        if model == "counter":
            if read.value < sums.get(read.key, 0):
                found.append(
                    f"{read.describe()}: below {sums[read.key]}, the sum of adds acknowledged "
                    "before it began"
                )
            continue
        missing = acked.get(read.key, set()) - set(read.value)
        if missing:
            shown = sorted(missing)[:5]
            found.append(
                f"{read.describe()}: misses {len(missing)} acknowledged before it began, "
                f"e.g. {shown}"
            )
    return found


def check_model(run_dir: Path, model: str, *, timeout_s: float, notes: list[str]) -> ModelResult:
    merged, merge_notes = merge_histories(run_dir, model)
    notes.extend(merge_notes)
    events = load_jsonl(merged)
    counts = {"ok": 0, "fail": 0, "info": 0}
    try:
        for op in pair_operations(events):
            counts[op.status] += 1
        verdict = check_events(events, model, timeout_s=timeout_s)
        final_path = run_dir / f"final-{model}.jsonl"
        finals = load_finals(str(final_path)) if final_path.exists() else {}
        if not final_path.exists():
            notes.append(f"{model}: no final reads (acknowledgements unchecked)")
        problems = check_acks(events, model, finals) if finals else []
        stale = stale_reads(events, model)
    except HistoryError as exc:
        return ModelResult(model, len(events), counts, None, [], [], error=str(exc))
    return ModelResult(model, len(events), counts, verdict, problems, stale)


def check_run(run_dir: Path, *, timeout_s: float) -> tuple[list[ModelResult], list[str]]:
    notes: list[str] = []
    return [check_model(run_dir, m, timeout_s=timeout_s, notes=notes) for m in MODELS], notes


def check_queue_run(run_dir: Path, notes: list[str]) -> QueueResult | None:
    """The queue workload's history, or None if no client ran it."""
    if not any(run_dir.glob(f"history-{QUEUE_MODEL}-c*.jsonl")):
        return None
    merged, merge_notes = merge_histories(run_dir, QUEUE_MODEL)
    notes.extend(merge_notes)
    left = load_left(run_dir / f"final-{QUEUE_MODEL}.jsonl")
    if left is None:
        notes.append(f"{QUEUE_MODEL}: no drain (losses unchecked)")
    return check_queue(load_jsonl(merged), left, DRAIN_CLIENT)


def normalize_inspected(model: str, value: Any) -> dict[str, Any]:
    """An INSPECT answer of a root in the shape of the final reads."""
    if not isinstance(value, dict):
        return {"<not a dict>": value}
    if model == "set":
        return {k: sorted(v) for k, v in value.items()}
    return dict(value)


def finals_of(run_dir: Path, model: str) -> dict[str, Any] | None:
    path = run_dir / f"final-{model}.jsonl"
    if not path.exists():
        return None
    out: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        out[obj["key"]] = obj["value"]
    return out


def compare_inspected(
    run_dir: Path, inspected: dict[str, dict[str, Any]]
) -> tuple[bool, list[str]]:
    """`inspected[slot][root]` -> every slot equal, and equal to the final reads."""
    lines: list[str] = []
    ok = True
    slots = sorted(inspected)
    for model in MODELS:
        root = ROOTS[model]
        values = {s: inspected[s].get(root) for s in slots}
        first = values[slots[0]]
        for s in slots[1:]:
            if values[s] != first:
                ok = False
                lines.append(f"{root}: agent in {s} differs from {slots[0]}")
        finals = finals_of(run_dir, model)
        if finals is not None and first is not None:
            seen = normalize_inspected(model, first)
            want = {k: v for k, v in finals.items() if v is not None}
            got = {k: v for k, v in seen.items() if k in finals}
            if model == "counter":
                want = {k: v for k, v in want.items() if v != 0}
            if got != want:
                ok = False
                lines.append(f"{root}: INSPECT differs from the final reads through the library")
    return ok, lines
