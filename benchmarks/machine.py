"""What machine the numbers come from: CPUs, memory, disk, kernel, Python, versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

TIMEOUT_S_PROBE = 10.0


def _meminfo_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _disk(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(path)}
    try:
        done = subprocess.run(
            ["df", "--output=source,fstype,size", str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S_PROBE,
        )
        lines = done.stdout.strip().splitlines()
        if len(lines) >= 2:
            source, fstype, size_kib = lines[1].split()[:3]
            out.update(device=source, fstype=fstype, size_bytes=int(size_kib) * 1024)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    return out


def _version(binary: str, flag: str = "--version") -> str | None:
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        done = subprocess.run([path, flag], capture_output=True, text=True, timeout=TIMEOUT_S_PROBE)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else None


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: on a shared 2-core machine, the context of a run."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def source_commit() -> str | None:
    """The git commit of the superstatic tree being measured, when run from a checkout."""
    import superstatic

    tree = Path(superstatic.__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(tree), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S_PROBE,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def describe(work_dir: Path) -> dict[str, Any]:
    return {
        "source_commit": source_commit(),
        "load_average_at_start": load_average(),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_bytes": _meminfo_bytes(),
        "disk": _disk(work_dir),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": _version("redis-server"),
        "etcd": _version("etcd"),
    }
