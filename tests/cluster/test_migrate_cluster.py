"""The upgrade to data model 2 end to end (docs/operations.md, "Upgrading to data model 2"):
a three-agent cluster of the previous release (format-2 stores, data model 1) is written by
that release's own library; every agent is stopped and its store migrated with
`superstatic-agent --migrate`; the cluster restarted with this release serves everything back
to this release's library, and takes new writes.

The previous release is the repository's own history: `git archive` of PREVIOUS_RELEASE into a
temporary folder, put first on the agents' and the writer's PYTHONPATH. Without the history (a
source tarball) the test is skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import migrate_app

import superstatic
from superstatic.tools.localcluster import LocalCluster

pytestmark = pytest.mark.cluster

# The last commit whose agents write format-2 stores (branch glue before data model 2).
PREVIOUS_RELEASE = "a57a408d1db303d4e37a6d9ad5535404e3ce191a"
# The last commit whose agents write format-3/4 stores (the Raft log inside LMDB): `main`
# before the log moved to raftlog/ (docs/data-model-v2.md 8.18).
LOG_IN_LMDB_RELEASE = "794281083ad278632aab33c7c080a05b28bfaaa9"
TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
TIMEOUT_S_PROCESS = 300
# Package name -> folder in the source tree (pyproject.toml's package-dir).
PACKAGES = {
    "superstatic": "superstatic",
    "superstatic_agent": "agent",
    "superstatic_bench": "benchmarks",
}


def previous_release(into: Path, release: str = PREVIOUS_RELEASE) -> Path:
    """A PYTHONPATH folder holding the packages of `release` (a commit)."""
    found = subprocess.run(
        ["git", "-C", str(REPO_DIR), "cat-file", "-e", f"{release}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip(f"needs the repository's history (commit {release[:12]})")
    source, path = into / "src", into / "path"
    source.mkdir(parents=True)
    path.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", release, *PACKAGES.values()],
        capture_output=True,
        check=True,
        timeout=TIMEOUT_S_PROCESS,
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    for package, folder in PACKAGES.items():
        (path / package).symlink_to(source / folder)
    return path


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd,
        cwd=TESTS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S_PROCESS,
        check=False,
    )
    assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-4000:])
    return done


@pytest.mark.parametrize(
    ("release", "old_format"), [(PREVIOUS_RELEASE, "2"), (LOG_IN_LMDB_RELEASE, "3")]
)
def test_a_cluster_of_the_previous_release_is_migrated_and_serves_everything(
    tmp_path: Path, release: str, old_format: str
) -> None:
    old_path = previous_release(tmp_path / "previous", release)
    old_env = {**os.environ, "PYTHONPATH": str(old_path)}
    with LocalCluster(tmp_path / "agents", size=3, env={"PYTHONPATH": str(old_path)}) as cluster:
        cluster.start()
        cluster.leader()
        probe = run([sys.executable, "-c", "import superstatic_agent.storage as s; "
                     "print(s.FORMAT_VERSION)"], old_env)  # fmt: skip
        assert probe.stdout.strip() == old_format, "the agents run the previous release"
        run(
            [sys.executable, "-m", "support.migrate_app", "write"],
            {**old_env, **cluster.client_env("admin")},
        )
        applied = {node: cluster.status(node)["applied"] for node in cluster.agents}
        cluster.wait_until(
            lambda: len({cluster.status(n)["applied"] for n in cluster.agents}) == 1,
            "every member at the same applied index (the upgrade procedure's step 2)",
            60,
        )
        for node in cluster.agents:
            cluster.stop(node)

        new_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for node, spec in cluster.agents.items():
            done = run(
                [sys.executable, "-m", "superstatic_agent", "--migrate", "--data-dir",
                 str(spec.data_dir)],
                new_env,
            )  # fmt: skip
            assert "format 5" in done.stdout, (node, done.stdout)
            assert (spec.data_dir / "raftlog").is_dir()
            if old_format == "2":
                assert (spec.data_dir / "format2-backup" / "data.mdb").is_file()
            again = run(
                [sys.executable, "-m", "superstatic_agent", "--migrate", "--data-dir",
                 str(spec.data_dir)],
                new_env,
            )  # fmt: skip
            assert "already format 5" in again.stdout

        cluster.env = None  # this release from here on
        cluster.start()
        cluster.leader()
        for node in cluster.agents:
            cluster.wait_until(
                lambda node=node: cluster.status(node)["applied"] >= max(applied.values()),
                f"{node} serving its migrated store",
                60,
            )
        # Each agent in turn serves a new app everything (a snapshot of its migrated records).
        for node in cluster.agents:
            superstatic.connect(cluster.client_endpoints([node]))
            try:
                migrate_app.check()
            finally:
                superstatic.close()
        # New writes, then a new app sees them along with the old data.
        superstatic.connect(cluster.client_endpoints())
        try:
            d = superstatic.root("d", dict)
            d["after"] = "upgrade"
            del d["k0"]
            superstatic.root("l", list).append("tail")
        finally:
            superstatic.close()
        superstatic.connect(cluster.client_endpoints())
        try:
            d = superstatic.root("d", dict)
            assert d["after"] == "upgrade" and "k0" not in d and d[1.0] == "float one"
            assert list(superstatic.root("l", list))[-1] == "tail"
        finally:
            superstatic.close()
