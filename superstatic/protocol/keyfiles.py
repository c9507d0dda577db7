"""Key files: the CURVE key pairs and public allow lists of a cluster (docs/security.md).

The files are pyzmq's certificates (`zmq.auth.create_certificates` writes them,
`zmq.auth.load_certificate` reads them): ZPL text with a `metadata` section and a `curve`
section holding the Z85 `public-key` and, in a `.key_secret` file, the `secret-key`. This module
reads and checks them and the allow lists they form; it is pure (no zmq, no sockets), so both
the agent and the library use it. `superstatic.client.keys` writes them.

A keys directory (`superstatic keys new DIR --agents a,b,c --clients app,admin`):

    DIR/cluster.key              the client port's public key (each app file carries a copy)
    DIR/cluster.key_secret       the client port's key pair: every agent needs it
    DIR/agents/ID.key            agent ID's public key: the peer allow list (file name = id)
    DIR/agents/ID.key_secret     agent ID's key pair: only agent ID needs it
    DIR/clients/NAME.key         an app's public key and `role`: the client allow list
    DIR/clients/NAME.key_secret  the app's own file (SUPERSTATIC_KEYS=FILE): its key pair, its
                                 role and the cluster's public key (`cluster-key`)

Secret files must be readable by their owner only (0600): one that is not is refused, like ssh
refuses a private key others can read. Nothing here ever puts a secret key in a message.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from superstatic.protocol.errors import Error
from superstatic.protocol.wire import FrameType

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
CLUSTER_KEY_NAME = "cluster"
AGENTS_DIR = "agents"
CLIENTS_DIR = "clients"
# Metadata fields superstatic writes (and reads) in key files.
META_ROLE = "role"
META_CLUSTER_KEY = "cluster-key"
META_NAME = "name"
# Z85 text of a 32-byte CURVE key.
Z85_KEY_CHARS = 40
_Z85_ALPHABET = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
# A key file is a few hundred bytes; anything much larger is not one.
KEY_FILE_BYTES_MAX = 64 << 10
# Public keys read from one allow-list folder: far beyond any real cluster's members and apps,
# and a bound on the work of a reload (every file is read).
ALLOW_LIST_FILES_MAX = 10_000
# Names of agents and apps in key files: the agent's rule for node ids (config.NODE_ID_CHARS_MAX).
KEY_NAME_CHARS_MAX = 64
# Permission bits a secret file must not have: readable or writable by group or others.
SECRET_MODE_FORBIDDEN = 0o077

# Roles of client keys, weakest first, and the client frames each may send. `read` may only
# follow and look (subscribe, inspect, status, sync); `app` also writes; `admin` also changes
# the membership and moves the leadership (MEMBERS).
ROLES = ("read", "app", "admin")
_READ_FRAMES = frozenset(
    {
        FrameType.HELLO,
        FrameType.PING,
        FrameType.SUBSCRIBE,
        FrameType.UNSUBSCRIBE,
        FrameType.READ_INDEX,
        FrameType.STATUS,
        FrameType.INSPECT,
        # The virtual heap's frames read no more than a subscription's snapshot would.
        FrameType.LOAD,
        FrameType.DROP,
        FrameType.HOLD,
    }
)
ROLE_FRAMES: dict[str, frozenset[FrameType]] = {
    "read": _READ_FRAMES,
    "app": _READ_FRAMES | {FrameType.PROPOSE, FrameType.PROPOSE_MANY},
    "admin": _READ_FRAMES | {FrameType.PROPOSE, FrameType.PROPOSE_MANY, FrameType.MEMBERS},
}
assert set(ROLE_FRAMES) == set(ROLES)


class KeyFileError(Error):
    """A key file or keys directory is missing, malformed or too open; the message names the
    file and what to do (never its contents)."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    path: Path
    public: str  # Z85
    secret: str | None  # Z85; None in a public file
    metadata: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"KeyFile({str(self.path)!r}, public={self.public!r}, metadata={self.metadata!r})"


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class AllowLists:
    """The public keys a cluster trusts, by Z85 key: agents (-> id) and apps (-> name, role).
    `problems` lists files left out, and why (the agent logs them at each reload)."""

    agents: dict[str, str]
    clients: dict[str, ClientKey]
    problems: tuple[str, ...] = ()

    def agent_key(self, node_id: str) -> str | None:
        for key, owner in self.agents.items():
            if owner == node_id:
                return key
        return None


def valid_name(name: str) -> bool:
    """The rule for agent ids and app key names: 1..64 letters, digits, '-', '_', '.'."""
    return 0 < len(name) <= KEY_NAME_CHARS_MAX and all(ch.isalnum() or ch in "-_." for ch in name)


def valid_key(text: str) -> bool:
    return len(text) == Z85_KEY_CHARS and all(ch in _Z85_ALPHABET for ch in text)


def parse(text: str, where: str) -> tuple[str, str | None, dict[str, str]]:
    """(public, secret or None, metadata) of a key file's text; KeyFileError names `where`."""
    section = ""
    public: str | None = None
    secret: str | None = None
    metadata: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not raw[:1].isspace():
            section = line
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise KeyFileError(f"{where}: a line in section {section!r} is not NAME = VALUE")
        name, value = name.strip(), value.strip().strip("\"'")
        if section == "curve" and name == "public-key":
            public = value
        elif section == "curve" and name == "secret-key":
            secret = value
        elif section == "metadata":
            metadata[name] = value
    if public is None or not valid_key(public):
        raise KeyFileError(f"{where}: no valid curve public-key (40 Z85 characters)")
    if secret is not None and not valid_key(secret):
        raise KeyFileError(f"{where}: the curve secret-key is not 40 Z85 characters")
    return public, secret, metadata


def read_key_file(path: Path, *, secret: bool) -> KeyFile:
    """Reads a public (`secret=False`) or secret key file. A secret file must hold the secret
    key and be readable by its owner only."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if info.st_size > KEY_FILE_BYTES_MAX:
        raise KeyFileError(
            f"key file {path} has {info.st_size} bytes, above KEY_FILE_BYTES_MAX="
            f"{KEY_FILE_BYTES_MAX}: not a key file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {type(exc).__name__}") from None
    public, secret_key, metadata = parse(text, str(path))
    if secret and secret_key is None:
        raise KeyFileError(
            f"{path} holds no secret key: give the .key_secret file, not the public .key"
        )
    if secret:
        check_secret_mode(path, info.st_mode)
    return KeyFile(path, public, secret_key if secret else None, metadata)


def check_secret_mode(path: Path, mode: int) -> None:
    if mode & SECRET_MODE_FORBIDDEN:
        raise KeyFileError(
            f"secret key file {path} is accessible to other users (mode "
            f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}` (and issue a new key if others "
            "may have read it)"
        )


def format_key_file(public: str, metadata: dict[str, str], banner: str) -> str:
    """The text of a public key file in pyzmq's certificate format (what
    `zmq.auth.load_certificate` reads), with metadata (zmq's own writer puts metadata in the
    secret file only; an allow list needs the role in the public one)."""
    assert valid_key(public)
    lines = [f"#   {line}" if line else "" for line in banner.splitlines()]
    lines.append("metadata")
    for name, value in metadata.items():
        assert valid_name(name.replace("-", "_")) and '"' not in value and "\n" not in value
        lines.append(f'    {name} = "{value}"')
    lines.append("curve")
    lines.append(f'    public-key = "{public}"')
    return "\n".join(lines) + "\n"


def allow_lists_stamp(keys_dir: Path) -> tuple[object, ...]:
    """What changes when a file of the allow lists is added, removed, replaced or edited: the
    folders' and the public files' modification times and sizes. Cheap (two small folders), so
    the agent compares it every second and reloads on a change."""
    parts: list[object] = []
    for sub in (AGENTS_DIR, CLIENTS_DIR):
        folder = Path(keys_dir) / sub
        try:
            parts.append(folder.stat().st_mtime_ns)
            with os.scandir(folder) as entries:
                for count, entry in enumerate(sorted(entries, key=lambda e: e.name)):
                    if count >= ALLOW_LIST_FILES_MAX:
                        break
                    if entry.name.endswith(PUBLIC_SUFFIX):
                        info = entry.stat()
                        parts.append((entry.name, info.st_mtime_ns, info.st_size))
        except OSError:
            parts.append((sub, None))
    return tuple(parts)


def load_allow_lists(keys_dir: Path) -> AllowLists:
    """The public keys in DIR/agents/*.key (id = the file's name) and DIR/clients/*.key (name =
    the file's name, `role` from its metadata). A file that cannot be used is left out and
    named in `problems`; a key listed twice is left out everywhere (it would be ambiguous)."""
    problems: list[str] = []
    agents: dict[str, str] = {}
    clients: dict[str, ClientKey] = {}
    seen: dict[str, list[str]] = {}
    for sub in (AGENTS_DIR, CLIENTS_DIR):
        folder = Path(keys_dir) / sub
        if not folder.is_dir():
            problems.append(f"{folder} is not a folder: no {sub} are trusted")
            continue
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(PUBLIC_SUFFIX))
        if len(names) > ALLOW_LIST_FILES_MAX:
            problems.append(
                f"{folder} holds {len(names)} public keys, above ALLOW_LIST_FILES_MAX="
                f"{ALLOW_LIST_FILES_MAX}: the rest are ignored"
            )
            names = names[:ALLOW_LIST_FILES_MAX]
        for file_name in names:
            name = file_name[: -len(PUBLIC_SUFFIX)]
            path = folder / file_name
            if not valid_name(name):
                problems.append(f"{path}: the name {name!r} is not a valid agent or app name")
                continue
            try:
                key = read_key_file(path, secret=False)
            except KeyFileError as exc:
                problems.append(str(exc))
                continue
            seen.setdefault(key.public, []).append(str(path))
            if sub == AGENTS_DIR:
                agents[key.public] = name
                continue
            role = key.metadata.get(META_ROLE, "")
            if role not in ROLES:
                problems.append(f"{path}: role {role!r} is not one of {', '.join(ROLES)}")
                continue
            clients[key.public] = ClientKey(name, role)
    for public, paths in seen.items():
        if len(paths) > 1:
            listed = ", ".join(paths)
            problems.append(f"one key is listed in {len(paths)} files ({listed}): ignored")
            agents.pop(public, None)
            clients.pop(public, None)
    return AllowLists(agents, clients, tuple(problems))


def agent_key_pair(keys_dir: Path, node_id: str) -> KeyFile:
    """Agent `node_id`'s own key pair, DIR/agents/ID.key_secret."""
    return read_key_file(Path(keys_dir) / AGENTS_DIR / f"{node_id}{SECRET_SUFFIX}", secret=True)


def cluster_key_pair(keys_dir: Path) -> KeyFile:
    """The client port's key pair every agent serves with, DIR/cluster.key_secret."""
    return read_key_file(Path(keys_dir) / f"{CLUSTER_KEY_NAME}{SECRET_SUFFIX}", secret=True)
