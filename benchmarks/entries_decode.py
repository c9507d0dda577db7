"""An APPEND's decode by another commit's peer_codec against this tree's, in one process.

    python -m superstatic_bench.entries_decode [--commit 7942810] [--repeat 11]

Not a test and not part of `superstatic bench`: review33's fix (branch lows) reads every
entries blob in one pass of its headers instead of by cbor2 (docs/data-model-v2.md 8.13,
"Entries blobs read in one pass"), and its cost depends on the entries' layout: the widths of
their index and term, the length of their data. This times `peer_codec.decode` of APPENDs of
each layout with `--commit`'s agent/peer_codec.py (read by `git show`, loaded beside this
tree's; the modules it imports are this tree's) and with this tree's, alternating rounds, and
prints each side's best round (us of this thread's CPU per frame) and their ratio. Both must
decode every frame to the same Message.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from superstatic_agent import peer_codec
from superstatic_agent.raft.types import Entry, EntryKind, Message, MsgType

# (name, entries, first index, term, data bytes: one size, or sizes taken in turn)
CASES: list[tuple[str, int, int, int, tuple[int, ...]]] = [
    ("x1 150 B", 1, 123_457, 5, (150,)),
    ("x12 150 B", 12, 123_457, 5, (150,)),
    ("x40 150 B", 40, 123_457, 5, (150,)),
    ("x512 150 B", 512, 123_457, 5, (150,)),
    ("x12 index<65536", 12, 1_000, 5, (150,)),
    ("x40 index<65536", 40, 1_000, 5, (150,)),
    ("x40 10 B", 40, 123_457, 5, (10,)),
    ("x40 term 30", 40, 123_457, 30, (150,)),
    ("x40 300 B", 40, 123_457, 5, (300,)),
    ("x40 200/300 B", 40, 123_457, 5, (200, 300)),
    ("x512 10 B", 512, 123_457, 5, (10,)),
]
ROUND_FRAME_ENTRIES = 40_000  # entries decoded per round and side (at least 200 frames)


def load_at(commit: str) -> ModuleType:
    """agent/peer_codec.py as of `commit`, as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{commit}:agent/peer_codec.py"],
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(source)
    name = f"peer_codec_{commit}"
    spec = importlib.util.spec_from_file_location(name, f.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module


def frame(count: int, first: int, term: int, sizes: tuple[int, ...]) -> bytes:
    entries = tuple(
        Entry(first + i, term, EntryKind.NORMAL, os.urandom(sizes[i % len(sizes)]))
        for i in range(count)
    )
    message = Message(
        MsgType.APPEND, "a", "b", term, log_term=term, index=first - 1, commit=first - 5,
        entries=entries,
    )  # fmt: skip
    return peer_codec.encode_message(message)


def _round(decode: Callable[[bytes], Any], data: bytes, n: int) -> float:
    started = time.thread_time()  # this thread's CPU: other tenants' turns do not count
    for _ in range(n):
        decode(data)
    return (time.thread_time() - started) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m superstatic_bench.entries_decode")
    parser.add_argument("--commit", default="7942810", help="the other side's commit")
    parser.add_argument("--repeat", type=int, default=11, help="rounds per side")
    args = parser.parse_args(argv)
    other = load_at(args.commit)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'frame':<18} {args.commit + ' us':>12} {'this us':>8} {'ratio':>6}")
    for name, count, first, term, sizes in CASES:
        data = frame(count, first, term, sizes)
        assert repr(other.decode(data)) == repr(peer_codec.decode(data)), name
        n = max(200, ROUND_FRAME_ENTRIES // count)
        best_other = best_this = float("inf")
        for _ in range(args.repeat):
            best_other = min(best_other, _round(other.decode, data, n))
            best_this = min(best_this, _round(peer_codec.decode, data, n))
        print(
            f"{name:<18} {best_other * 1e6:>12.2f} {best_this * 1e6:>8.2f} "
            f"{best_this / best_other:>6.2f}"
        )
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
