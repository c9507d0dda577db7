"""Which peers can run here; `--peers` installs the missing Python packages with pip.

Servers come from Debian packages: the suite never installs those itself, it prints the exact
command and skips that peer with the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

from superstatic_bench.peers import etcd_peer, redis_peer

TIMEOUT_S_PIP = 300.0
# Python packages each peer needs in the suite's own interpreter (its client processes).
PIP_NEEDS = {"pysyncobj": ["pysyncobj"], "redis": ["redis"], "etcd": []}
PEERS = ("pysyncobj", "redis", "etcd")


def _missing_modules(names: list[str]) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def pip_install(packages: list[str]) -> str | None:
    """Installs into the running interpreter's environment; the error text, or None."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", *packages]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S_PIP)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(cmd)} failed: {exc}"
    if done.returncode != 0:
        return f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}"
    importlib.invalidate_caches()
    return None


def check(peer: str, install: bool) -> str | None:
    """None if `peer` can run; else why not (and what to run to fix it)."""
    missing = _missing_modules(PIP_NEEDS[peer])
    if missing and install:
        error = pip_install(missing)
        if error is not None:
            return error
        missing = _missing_modules(PIP_NEEDS[peer])
    if missing:
        return f"Python package(s) {', '.join(missing)} missing: pip install {' '.join(missing)}"
    if peer == "redis" and redis_peer.server_path() is None:
        return f"{redis_peer.SERVER_BINARY} not found: apt-get install -y {redis_peer.APT_PACKAGE}"
    if peer == "etcd" and etcd_peer.server_path() is None:
        return f"{etcd_peer.SERVER_BINARY} not found: apt-get install -y {etcd_peer.APT_PACKAGE}"
    return None
