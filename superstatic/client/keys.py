"""CURVE keys on the library's side: an app's key file, and writing a cluster's keys directory.

An app authenticates to the agents with the key file its operator issued
(`superstatic keys new DIR --clients app` writes DIR/clients/app.key_secret): its key pair,
its role and the cluster's public key (which the client checks the agent against, so a
stranger posing as an agent cannot complete the handshake). The library finds it in
`superstatic.connect(keys=FILE)`, else `$SUPERSTATIC_KEYS`.

Writing keys (`create_keys_dir`, `add_keys`, `revoke`) is here, below the command line, because
the embedded agent and `superstatic.tools.localcluster` generate keys too. Key pairs come from
`zmq.auth.create_certificates` (libsodium's CURVE25519 key generation): no home-made crypto.
Secret files are created 0600 inside a private (0700) folder, so no other user can read one
even for an instant. docs/security.md has the workflow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from superstatic.protocol import keyfiles
from superstatic.protocol.keyfiles import KeyFileError

ENV_KEYS = "SUPERSTATIC_KEYS"
# Folders holding secret keys: owner only.
DIR_MODE = 0o700
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
_PUBLIC_BANNER = (
    "ZeroMQ CURVE Public Certificate (superstatic)\n"
    "A public key: copy it to the agents that must trust it (docs/security.md)."
)


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """An app's CURVE identity: its key pair, and the cluster's public key it expects the agents
    to present. `apply(sock)` makes a socket a CURVE client with them."""

    path: Path
    name: str
    role: str
    public: bytes
    secret: bytes
    server: bytes  # the cluster's client-port public key

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Sets the CURVE client options; must precede connect()."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"ClientKeys({str(self.path)!r}, name={self.name!r}, role={self.role!r})"


def load(path: str | os.PathLike[str]) -> ClientKeys:
    """Reads an app's key file (a .key_secret written by `superstatic keys`)."""
    key = keyfiles.read_key_file(Path(path), secret=True)
    assert key.secret is not None
    server = key.metadata.get(keyfiles.META_CLUSTER_KEY, "")
    if not keyfiles.valid_key(server):
        raise KeyFileError(
            f"{path} names no cluster key ({keyfiles.META_CLUSTER_KEY} in its metadata): it is "
            "not an app key file; give the file `superstatic keys` wrote in DIR/clients/"
        )
    return ClientKeys(
        path=Path(path),
        name=key.metadata.get(keyfiles.META_NAME, Path(path).name),
        role=key.metadata.get(keyfiles.META_ROLE, "?"),
        public=key.public.encode(),
        secret=key.secret.encode(),
        server=server.encode(),
    )


class NoKeys:
    """No CURVE, whatever $SUPERSTATIC_KEYS says (the embedded agent's own ipc socket)."""


NO_KEYS = NoKeys()
KeysArg = ClientKeys | str | os.PathLike[str] | NoKeys | None


def resolve(keys: KeysArg) -> ClientKeys | None:
    """An explicit key (file) > $SUPERSTATIC_KEYS > None (no CURVE: an unkeyed agent);
    NO_KEYS: none."""
    if isinstance(keys, NoKeys):
        return None
    if isinstance(keys, ClientKeys):
        return keys
    if keys is not None and str(keys):
        return load(keys)
    from_env = os.environ.get(ENV_KEYS, "").strip()
    return load(from_env) if from_env else None


# ------------------------------------------------------------------------ handshake refusals

# Monitor events of a client socket that tell a refusal (libzmq >= 4.3 reports ZAP's answer to
# the client; CURVE itself says nothing to a refused client).
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
# A handshake that just stops (no reason given: the agent could not open our CURVE hello, as
# when our file names another cluster's key) is a refusal only once it repeats: one such
# failure can also be an agent dying mid-handshake. libzmq retries every reconnect interval.
HANDSHAKE_SILENT_FAILURES_MAX = 3


def refusal(
    event: int, value: int, endpoint: str, keys: ClientKeys | None, silent_failures: int
) -> str | None:
    """What an agent's refusal means, from one monitor event of our socket (None: not a
    refusal, or not yet sure). `silent_failures` counts NO_DETAIL failures so far, this one
    included."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            f"the agent at {endpoint} refused this process's key "
            f"{keys.name if keys else '?'} ({keys.path if keys else 'no file'}): it is not in "
            "the cluster's allow list (never added, or revoked). Ask the cluster's operator for "
            f"a key file (superstatic keys add) and set {ENV_KEYS} or connect(keys=...)"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
        if keys is None:
            return (
                f"the agent at {endpoint} requires a CURVE key and this process has none: set "
                f"{ENV_KEYS}=FILE (an app key file from `superstatic keys`) or pass "
                "connect(keys=FILE)"
            )
        return (
            f"the agent at {endpoint} runs without keys but this process was given the key "
            f"file {keys.path}: it will not talk unencrypted to an agent that cannot prove it "
            f"belongs to the cluster. Unset {ENV_KEYS} (or keys=) to use an unkeyed agent"
        )
    if event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL or (
        silent_failures < HANDSHAKE_SILENT_FAILURES_MAX
    ):
        return None
    if keys is None:
        # A keyed agent that saw our plain greeting first just hangs up (which side notices
        # the mechanism mismatch first is a race).
        return (
            f"the agent at {endpoint} ended the handshake {silent_failures} times: it requires "
            f"a CURVE key and this process has none: set {ENV_KEYS}=FILE (an app key file from "
            "`superstatic keys`) or pass connect(keys=FILE)"
        )
    return (
        f"the agent at {endpoint} did not complete the CURVE handshake {silent_failures} "
        f"times: it does not hold the cluster key named in {keys.path} (a key file of another "
        "cluster?), it runs without keys, or it is not a superstatic agent"
    )


# ------------------------------------------------------------------------------ writing keys


def parse_clients(text: str) -> list[tuple[str, str]]:
    """`app,admin,ci:read` -> [("app", "app"), ("admin", "admin"), ("ci", "read")]: a name
    without a role gets the role of that name if it is one (admin, read), else `app`."""
    out: list[tuple[str, str]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, role = part.partition(":")
        role = role.strip() or (name if name in keyfiles.ROLES else "app")
        out.append((name.strip(), role))
    return out


def parse_names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def create_keys_dir(
    keys_dir: Path, agents: Sequence[str], clients: Sequence[tuple[str, str]]
) -> None:
    """A new keys directory: the cluster's client-port key pair, one key pair per agent and per
    app (with its role), and the public allow lists. Refuses a folder that already has keys."""
    keys_dir = Path(keys_dir)
    cluster_secret = keys_dir / f"{keyfiles.CLUSTER_KEY_NAME}{keyfiles.SECRET_SUFFIX}"
    if cluster_secret.exists():
        raise KeyFileError(
            f"{keys_dir} already holds a cluster's keys; use `superstatic keys add` to add keys "
            "to it, or choose a new folder"
        )
    _check_names(agents, clients)
    _private_dir(keys_dir)
    _new_pair(keys_dir, keyfiles.CLUSTER_KEY_NAME, {keyfiles.META_NAME: "cluster"}, public_meta={})
    add_keys(keys_dir, agents, clients)


def add_keys(keys_dir: Path, agents: Sequence[str], clients: Sequence[tuple[str, str]]) -> None:
    """Adds agent and app key pairs to an existing keys directory (agents that watch it trust
    them within a second, or at once on SIGHUP). Refuses a name that already has a key."""
    keys_dir = Path(keys_dir)
    cluster = keyfiles.cluster_key_pair(keys_dir)
    _check_names(agents, clients)
    for sub in (keyfiles.AGENTS_DIR, keyfiles.CLIENTS_DIR):
        _private_dir(keys_dir / sub)
    for node in agents:
        _refuse_existing(keys_dir / keyfiles.AGENTS_DIR, node)
    for name, _ in clients:
        _refuse_existing(keys_dir / keyfiles.CLIENTS_DIR, name)
    for node in agents:
        meta = {keyfiles.META_NAME: node}
        _new_pair(keys_dir / keyfiles.AGENTS_DIR, node, meta, public_meta=meta)
    for name, role in clients:
        public_meta = {keyfiles.META_NAME: name, keyfiles.META_ROLE: role}
        secret_meta = {**public_meta, keyfiles.META_CLUSTER_KEY: cluster.public}
        _new_pair(keys_dir / keyfiles.CLIENTS_DIR, name, secret_meta, public_meta=public_meta)


def revoke(keys_dir: Path, names: Iterable[str]) -> list[Path]:
    """Removes the keys (public and secret) of these agents or apps; returns the files removed.
    Agents watching the folder stop trusting them within a second (docs/security.md)."""
    keys_dir = Path(keys_dir)
    removed: list[Path] = []
    for name in names:
        found = [
            keys_dir / sub / f"{name}{suffix}"
            for sub in (keyfiles.AGENTS_DIR, keyfiles.CLIENTS_DIR)
            for suffix in (keyfiles.PUBLIC_SUFFIX, keyfiles.SECRET_SUFFIX)
            if (keys_dir / sub / f"{name}{suffix}").exists()
        ]
        if not found:
            raise KeyFileError(f"no key named {name!r} in {keys_dir}/agents or {keys_dir}/clients")
        for path in found:
            path.unlink()
            removed.append(path)
    return removed


def set_role(keys_dir: Path, name: str, role: str) -> None:
    """Changes an app key's role in the allow list (its public file); the app's own file keeps
    the role it was issued with, which is only informative."""
    if role not in keyfiles.ROLES:
        raise KeyFileError(f"role {role!r} is not one of {', '.join(keyfiles.ROLES)}")
    path = Path(keys_dir) / keyfiles.CLIENTS_DIR / f"{name}{keyfiles.PUBLIC_SUFFIX}"
    key = keyfiles.read_key_file(path, secret=False)
    meta = {**key.metadata, keyfiles.META_ROLE: role}
    _write_public(path, key.public, meta)


def _check_names(agents: Sequence[str], clients: Sequence[tuple[str, str]]) -> None:
    names = [*agents, *(name for name, _ in clients)]
    for name in names:
        if not keyfiles.valid_name(name) or name == keyfiles.CLUSTER_KEY_NAME:
            raise KeyFileError(
                f"{name!r} is not a valid key name (1..{keyfiles.KEY_NAME_CHARS_MAX} letters, "
                f"digits, '-', '_', '.'; not {keyfiles.CLUSTER_KEY_NAME!r})"
            )
    if len(set(names)) != len(names):
        raise KeyFileError(f"a name is given twice in {', '.join(names)}")
    for name, role in clients:
        if role not in keyfiles.ROLES:
            raise KeyFileError(f"{name}: role {role!r} is not one of {', '.join(keyfiles.ROLES)}")


def _refuse_existing(folder: Path, name: str) -> None:
    for suffix in (keyfiles.PUBLIC_SUFFIX, keyfiles.SECRET_SUFFIX):
        if (folder / f"{name}{suffix}").exists():
            raise KeyFileError(
                f"{folder / (name + suffix)} exists: revoke that key first, or choose a new name"
            )


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def _new_pair(
    folder: Path, name: str, secret_meta: dict[str, str], *, public_meta: dict[str, str]
) -> None:
    """Writes NAME.key (public, with `public_meta`) and NAME.key_secret (0600) in `folder`,
    both made in a private temporary folder first and then moved in."""
    staging = Path(tempfile.mkdtemp(prefix=".new-key-", dir=folder))  # 0700 by mkdtemp
    try:
        public_path, secret_path = zmq.auth.create_certificates(staging, name, secret_meta)
        os.chmod(secret_path, SECRET_MODE)
        public = keyfiles.read_key_file(Path(public_path), secret=False).public
        _write_public(Path(public_path), public, public_meta)
        os.replace(secret_path, folder / f"{name}{keyfiles.SECRET_SUFFIX}")
        os.replace(public_path, folder / f"{name}{keyfiles.PUBLIC_SUFFIX}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_public(path: Path, public: str, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(keyfiles.format_key_file(public, metadata, _PUBLIC_BANNER), encoding="utf-8")
    os.chmod(tmp, PUBLIC_MODE)
    os.replace(tmp, path)  # atomic: an agent reloading sees the old file or the new one
