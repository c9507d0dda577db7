"""Verdicts and acknowledgement problems as text for people."""

from __future__ import annotations

from collections.abc import Sequence

from .acks import AckProblem
from .check import Explanation, KeyVerdict, Verdict
from .wgl import Result

# Shown of the prefix before the stuck operation: its end is what matters, and a prefix can
# hold thousands of operations.
PREFIX_SHOWN_MAX = 10
# Keys explained in full; the rest are only counted.
KEYS_EXPLAINED_MAX = 5


def describe_verdict(verdict: Verdict) -> str:
    counts = {r: sum(1 for k in verdict.keys if k.result is r) for r in Result}
    steps = sum(k.steps for k in verdict.keys)
    operations = sum(k.operations for k in verdict.keys)
    keys = f"{len(verdict.keys)} key{'' if len(verdict.keys) == 1 else 's'}"
    lines = [
        f"{verdict.model}: {verdict.result.value.upper()} ({keys}: "
        f"{counts[Result.OK]} ok, {counts[Result.ILLEGAL]} illegal, "
        f"{counts[Result.UNKNOWN]} unknown; {operations} operations searched, {steps} steps)"
    ]
    illegal = verdict.illegal()
    for key_verdict in illegal[:KEYS_EXPLAINED_MAX]:
        assert key_verdict.explanation is not None
        lines.append(describe_explanation(key_verdict.explanation))
    if len(illegal) > KEYS_EXPLAINED_MAX:
        lines.append(f"... and {len(illegal) - KEYS_EXPLAINED_MAX} more illegal keys")
    lines.extend(_describe_unknown(k) for k in verdict.unknown())
    return "\n".join(lines)


def describe_explanation(explanation: Explanation) -> str:
    prefix = explanation.prefix
    lines = [
        f"key {explanation.key!r}: not linearizable",
        f"  longest linearizable prefix found: {len(prefix)} operations"
        + (", ending with:" if prefix else ""),
    ]
    if len(prefix) > PREFIX_SHOWN_MAX:
        lines.append(f"    ... {len(prefix) - PREFIX_SHOWN_MAX} earlier")
    lines.extend(f"    {op.describe()}" for op in prefix[-PREFIX_SHOWN_MAX:])
    stuck = explanation.stuck
    lines.append(f"  state after it: {explanation.state!r}")
    lines.append(f"  had to take effect by {stuck.return_time}: {stuck.describe()}")
    lines.append("  operations that could take effect next:")
    for op, allowed in explanation.candidates:
        why = "allowed, but every order after it fails" if allowed else "not allowed in that state"
        lines.append(f"    {op.describe()}  -- {why}")
    return "\n".join(lines)


def describe_acks(problems: Sequence[AckProblem]) -> str:
    if not problems:
        return "acknowledgements: OK"
    lines = [f"acknowledgements: {len(problems)} problems"]
    for problem in problems:
        lines.append(f"  key {problem.key!r}: {problem.kind}: {problem.message}")
        lines.extend(f"    {op.describe()}" for op in problem.operations[:PREFIX_SHOWN_MAX])
        if len(problem.operations) > PREFIX_SHOWN_MAX:
            lines.append(f"    ... {len(problem.operations) - PREFIX_SHOWN_MAX} more")
    return "\n".join(lines)


def _describe_unknown(key_verdict: KeyVerdict) -> str:
    why = {"steps": "ran out of search steps", "timeout": "ran out of time"}.get(
        key_verdict.why_unknown or "", "stopped"
    )
    return (
        f"key {key_verdict.key!r}: UNKNOWN, {why} after {key_verdict.steps} steps "
        f"({key_verdict.operations} operations; longest prefix {len(key_verdict.order)}): "
        "neither linearizable nor a violation was shown"
    )
