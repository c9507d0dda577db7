"""What this machine offers the nemesis, and installing what is missing.

Network faults need root, `ip` (iproute2) and `nft` (nftables); clock faults need libfaketime
(Debian package `faketime`). When run as root on a Debian/Ubuntu machine with any of them
missing, `ensure()` installs them with apt-get (scripts/setup-system does the same before the
test suite). Otherwise the faults that need them are left out and the reason, with the command
that would install them, is carried in `Capabilities` so that every run prints it: never
silently.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass

APT_PACKAGES = ("iproute2", "nftables", "faketime")
INSTALL_COMMAND = "apt-get install -y " + " ".join(APT_PACKAGES)
# An apt-get run can be slow on a cold mirror; past this the install counts as failed.
TIMEOUT_S_APT = 600.0
TIMEOUT_S_PROBE = 10.0
# Set to 1 to never run apt-get from the harness (the tests then skip what is missing).
ENV_NO_INSTALL = "SUPERSTATIC_NEMESIS_NO_INSTALL"
FAKETIME_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


@dataclass(frozen=True)
class Capabilities:
    netns: bool  # network namespaces, veth pairs and nft rules work here
    faketime_lib: str | None  # path of libfaketime.so.1
    why_no_netns: str = ""
    why_no_faketime: str = ""
    installed: str = ""  # what ensure() installed, for the run's log

    def missing(self) -> list[str]:
        """One line per missing capability, with what to do about it."""
        lines = []
        if not self.netns:
            lines.append(f"network faults skipped: {self.why_no_netns}")
        if self.faketime_lib is None:
            lines.append(f"clock faults skipped: {self.why_no_faketime}")
        return lines


_lock = threading.Lock()
_cached: Capabilities | None = None


def faketime_library() -> str | None:
    for pattern in FAKETIME_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    return None


def _missing_packages() -> list[str]:
    missing = []
    if shutil.which("ip") is None:
        missing.append("iproute2")
    if shutil.which("nft") is None:
        missing.append("nftables")
    if faketime_library() is None:
        missing.append("faketime")
    return missing


def install(packages: list[str]) -> str:
    """apt-get install as root; returns "" on success, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        first = subprocess.run(command, capture_output=True, env=env, timeout=TIMEOUT_S_APT)
        if first.returncode == 0:
            return ""
        # A fresh machine often has no package lists yet.
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=TIMEOUT_S_APT)
        second = subprocess.run(command, capture_output=True, env=env, timeout=TIMEOUT_S_APT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get failed: {exc}"
    if second.returncode != 0:
        return f"apt-get failed: {second.stderr.decode(errors='replace')[-500:]}"
    return ""


def _probe_netns() -> str:
    """Creates and deletes a namespace with an nft table in it; "" if that works."""
    name = f"ssnemprobe{os.getpid()}"
    try:
        subprocess.run(
            ["ip", "netns", "add", name], check=True, capture_output=True, timeout=TIMEOUT_S_PROBE
        )
        try:
            subprocess.run(
                ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "probe"],
                check=True,
                capture_output=True,
                timeout=TIMEOUT_S_PROBE,
            )
        finally:
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT_S_PROBE
            )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"{exc} {detail.decode(errors='replace').strip()}".strip()
    return ""


def ensure(*, allow_install: bool = True) -> Capabilities:
    """Probes once per process (installing what is missing when root and allowed)."""
    global _cached
    with _lock:
        if _cached is not None:
            return _cached
        installed = ""
        missing = _missing_packages()
        allow_install = allow_install and os.environ.get(ENV_NO_INSTALL) != "1"
        if missing and allow_install and os.geteuid() == 0:
            failure = install(missing)
            installed = failure or f"installed {' '.join(missing)}"
        hint = f"as root, run: {INSTALL_COMMAND}"
        why_netns = ""
        if os.geteuid() != 0:
            why_netns = f"not root (namespaces and nft rules need root); {hint}"
        elif shutil.which("ip") is None or shutil.which("nft") is None:
            why_netns = f"ip or nft not found; {hint}"
        else:
            failure = _probe_netns()
            if failure:
                why_netns = f"creating a network namespace failed: {failure}"
        lib = faketime_library()
        why_faketime = "" if lib else f"libfaketime not found; {hint}"
        _cached = Capabilities(
            netns=not why_netns,
            faketime_lib=lib,
            why_no_netns=why_netns,
            why_no_faketime=why_faketime,
            installed=installed,
        )
        return _cached


if __name__ == "__main__":
    caps = ensure()
    print(caps.installed or "nothing to install")
    for line in caps.missing():
        print(line)
