"""Keys as files: `superstatic keys`, the allow lists and roles, app key files, safe defaults
(docs/security.md). No agent process here; tests/cluster/test_security.py has the real ones."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import zmq.auth
from superstatic_agent.config import AgentConfig, is_loopback_endpoint

from superstatic.client import keys as client_keys
from superstatic.protocol import keyfiles, wire
from superstatic.protocol.keyfiles import KeyFileError
from superstatic.tools.keys import main as keys_main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def secret_of(path: Path) -> str:
    key = keyfiles.read_key_file(path, secret=True)
    assert key.secret is not None
    return key.secret


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    assert keys_main(["new", str(path), "--agents", "a,b,c", "--clients", "app,admin,ci:read"]) == 0
    return path


def test_keys_new_writes_pairs_owner_only_and_allow_lists_with_roles(keys_dir: Path) -> None:
    assert mode(keys_dir) == 0o700
    for sub in ("agents", "clients"):
        assert mode(keys_dir / sub) == 0o700
    secrets = [keys_dir / "cluster.key_secret", *keys_dir.glob("*/*.key_secret")]
    assert len(secrets) == 1 + 3 + 3
    for path in secrets:
        assert mode(path) == 0o600, path
        # The pyzmq certificate format: zmq.auth reads both halves and they agree.
        public, secret = zmq.auth.load_certificate(path)
        assert secret is not None
        public_only, none = zmq.auth.load_certificate(path.with_suffix(".key"))
        assert none is None and public_only == public
    lists = keyfiles.load_allow_lists(keys_dir)
    assert sorted(lists.agents.values()) == ["a", "b", "c"]
    assert {c.name: c.role for c in lists.clients.values()} == {
        "app": "app",
        "admin": "admin",
        "ci": "read",
    }
    assert lists.problems == ()
    # An app's file names the cluster's client-port key, which the agents serve with.
    app = client_keys.load(keys_dir / "clients" / "app.key_secret")
    cluster_public, _ = zmq.auth.load_certificate(keys_dir / "cluster.key")
    assert app.server == cluster_public and app.role == "app" and app.name == "app"
    assert lists.clients[app.public.decode()].role == "app"


def test_keys_are_never_overwritten(keys_dir: Path) -> None:
    with pytest.raises(KeyFileError, match="already holds a cluster's keys"):
        client_keys.create_keys_dir(keys_dir, ["a"], [])
    before = secret_of(keys_dir / "agents" / "a.key_secret")
    with pytest.raises(KeyFileError, match="exists: revoke that key first"):
        client_keys.add_keys(keys_dir, ["a"], [])
    with pytest.raises(KeyFileError, match="exists"):
        client_keys.add_keys(keys_dir, [], [("ci", "app")])
    assert secret_of(keys_dir / "agents" / "a.key_secret") == before
    with pytest.raises(KeyFileError, match="not a valid key name"):
        client_keys.add_keys(keys_dir, ["../x"], [])
    with pytest.raises(KeyFileError, match="role 'root'"):
        client_keys.add_keys(keys_dir, [], [("ops", "root")])


def test_add_revoke_and_role_change_the_allow_lists(keys_dir: Path) -> None:
    assert keys_main(["add", str(keys_dir), "--agents", "d", "--clients", "web"]) == 0
    lists = keyfiles.load_allow_lists(keys_dir)
    assert "d" in lists.agents.values()
    assert {c.name for c in lists.clients.values()} == {"app", "admin", "ci", "web"}
    stamp = keyfiles.allow_lists_stamp(keys_dir)

    assert keys_main(["role", str(keys_dir), "web", "read"]) == 0
    assert keyfiles.allow_lists_stamp(keys_dir) != stamp  # the agents notice it
    lists = keyfiles.load_allow_lists(keys_dir)
    assert {c.name: c.role for c in lists.clients.values()}["web"] == "read"

    assert keys_main(["revoke", str(keys_dir), "web", "d"]) == 0
    lists = keyfiles.load_allow_lists(keys_dir)
    assert "d" not in lists.agents.values()
    assert "web" not in {c.name for c in lists.clients.values()}
    assert not (keys_dir / "clients" / "web.key_secret").exists()
    with pytest.raises(KeyFileError, match="no key named 'web'"):
        client_keys.revoke(keys_dir, ["web"])


def test_a_secret_others_can_read_is_refused_without_showing_it(keys_dir: Path) -> None:
    path = keys_dir / "clients" / "app.key_secret"
    secret = secret_of(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600") as refused:
        client_keys.load(path)
    assert secret not in str(refused.value)
    os.chmod(path, 0o600)
    loaded = client_keys.load(path)
    assert secret not in repr(loaded)
    assert secret not in repr(keyfiles.read_key_file(path, secret=True))
    # A public file is not an app key, and an agent's secret is not one either.
    with pytest.raises(KeyFileError, match="holds no secret key"):
        client_keys.load(path.with_suffix(".key"))
    with pytest.raises(KeyFileError, match="names no cluster key"):
        client_keys.load(keys_dir / "agents" / "a.key_secret")


def test_unusable_allow_list_files_are_left_out_and_named(keys_dir: Path) -> None:
    clients = keys_dir / "clients"
    app = keyfiles.read_key_file(clients / "app.key", secret=False)
    # A copy of app's key under another name: ambiguous, so neither counts.
    (clients / "copy.key").write_text((clients / "app.key").read_text())
    (clients / "norole.key").write_text(
        keyfiles.format_key_file(
            keyfiles.read_key_file(clients / "ci.key", secret=False).public, {}, "x"
        )
    )
    (clients / "garbage.key").write_text('metadata\ncurve\n    public-key = "short"\n')
    (clients / "bad name!.key").write_text((clients / "admin.key").read_text())
    lists = keyfiles.load_allow_lists(keys_dir)
    names = {c.name for c in lists.clients.values()}
    assert app.public not in lists.clients and "copy" not in names and "app" not in names
    problems = "\n".join(lists.problems)
    for fragment in ("listed in 2 files", "garbage.key", "'bad name!'"):
        assert fragment in problems, problems
    # norole's key equals ci's: ambiguous as well; a lone file without a role is named too.
    (clients / "norole.key").unlink()
    client_keys.add_keys(keys_dir, [], [("late", "app")])
    late = clients / "late.key"
    key = keyfiles.read_key_file(late, secret=False)
    late.write_text(keyfiles.format_key_file(key.public, {"role": "owner"}, "x"))
    lists = keyfiles.load_allow_lists(keys_dir)
    assert "late" not in {c.name for c in lists.clients.values()}
    assert any("role 'owner'" in p for p in lists.problems), lists.problems


def test_client_names_get_roles_by_default() -> None:
    assert client_keys.parse_clients("app,admin, read ,ci:read,ops:admin,") == [
        ("app", "app"),
        ("admin", "admin"),
        ("read", "read"),
        ("ci", "read"),
        ("ops", "admin"),
    ]


def test_roles_permit_what_docs_security_says() -> None:
    frames = keyfiles.ROLE_FRAMES
    t = wire.FrameType
    assert frames["admin"] == wire.CLIENT_TO_AGENT
    assert frames["app"] == wire.CLIENT_TO_AGENT - {t.MEMBERS}
    assert frames["read"] == wire.CLIENT_TO_AGENT - {t.MEMBERS, t.PROPOSE, t.PROPOSE_MANY}
    for role in keyfiles.ROLES:  # everyone may look and follow (and fault nodes in)
        following = {t.SUBSCRIBE, t.INSPECT, t.STATUS, t.READ_INDEX, t.HELLO, t.PING}
        assert following | {t.LOAD, t.DROP, t.HOLD} <= frames[role]


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:7500", True),
        ("tcp://127.0.0.9:7500", True),
        ("tcp://localhost:7500", True),
        ("tcp://[::1]:7500", True),
        ("tcp://lo:7500", True),
        ("ipc:///tmp/x.sock", True),
        ("inproc://x", True),
        ("tcp://0.0.0.0:7500", False),
        ("tcp://*:7500", False),
        ("tcp://10.0.0.5:7500", False),
        ("tcp://eth0:7500", False),
        ("tcp://agent-1.example.com:7500", False),
        ("udp://127.0.0.1:7500", False),
    ],
)
def test_loopback_endpoints(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


def test_an_agent_binds_beyond_loopback_only_with_keys_or_insecure(tmp_path: Path) -> None:
    def make(client: str, **kw: object) -> AgentConfig:
        return AgentConfig(
            node_id="a",
            data_dir=tmp_path,
            peers={"a": "tcp://127.0.0.1:7401"},
            client_endpoint=client,
            **kw,  # type: ignore[arg-type]
        )

    make("tcp://127.0.0.1:7501")
    make("ipc:///tmp/superstatic-test.sock")
    refusal = re.escape("refusing to bind tcp://0.0.0.0:7501 without --keys")
    with pytest.raises(ValueError, match=refusal):
        make("tcp://0.0.0.0:7501")
    assert make("tcp://0.0.0.0:7501", insecure=True).insecure
    make("tcp://0.0.0.0:7501", keys_dir=tmp_path)
