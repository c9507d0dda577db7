"""The agent package of an older commit, extracted from git and imported under another package
name, for tests that compare its outcomes and stored bytes with this tree's (rules parity)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def extract(root: Path, commit: str, package: str, names: tuple[str, ...]) -> dict[str, ModuleType]:
    """Writes `commit`'s agent/ under `root/package` (its own imports renamed to `package`),
    puts `root` on sys.path and imports `names`: the modules by short name."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", commit, "agent/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if not name.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        target = root / package / name.removeprefix("agent/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("superstatic_agent", package))
    sys.path.insert(0, str(root))
    return {n: importlib.import_module(f"{package}.{n}") for n in names}


def loaded(
    tmp_path_factory: pytest.TempPathFactory, commit: str, package: str, names: tuple[str, ...]
) -> Iterator[dict[str, ModuleType]]:
    """A fixture's body: the old modules while the fixture lives, then sys.path and sys.modules
    as they were. Skips (naming the commit) when the checkout lacks it (a shallow clone)."""
    root = tmp_path_factory.mktemp(package)
    try:
        modules = extract(root, commit, package, names)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"commit {commit} is not in this checkout's history")
    try:
        yield modules
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.startswith(package)]:
            del sys.modules[name]
