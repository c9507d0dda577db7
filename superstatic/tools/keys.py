"""`superstatic keys`: a cluster's CURVE keys as a workflow (docs/security.md).

    superstatic keys new DIR --agents a,b,c --clients app,admin[,ci:read]
    superstatic keys add DIR [--agents d] [--clients web:app]
    superstatic keys revoke DIR NAME [NAME ...]
    superstatic keys role DIR NAME ROLE
    superstatic keys list DIR [--json]

`new` writes the cluster's client-port key pair, a key pair per agent and per app, and the
public allow lists with the apps' roles (admin, app, read; a name without a role gets the role
of that name when it is one, else `app`). Agents run with `--keys DIR` and re-read the allow
lists within a second of a change (or at once on SIGHUP), so `add`, `revoke` and `role` take
effect without stopping anything. Apps use `SUPERSTATIC_KEYS=DIR/clients/NAME.key_secret`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from superstatic.client import keys
from superstatic.protocol import keyfiles


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="superstatic keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (("new", "create a keys directory"), ("add", "add keys to one")):
        p = sub.add_parser(name, help=what)
        p.add_argument("dir", type=Path)
        p.add_argument("--agents", default="", help="agent ids, comma-separated")
        p.add_argument(
            "--clients", default="", help="app key names, comma-separated, each NAME[:ROLE]"
        )
    p = sub.add_parser("revoke", help="remove agents' or apps' keys (the cluster stops trusting)")
    p.add_argument("dir", type=Path)
    p.add_argument("names", nargs="+")
    p = sub.add_parser("role", help="change an app key's role")
    p.add_argument("dir", type=Path)
    p.add_argument("name")
    p.add_argument("role", choices=keyfiles.ROLES)
    p = sub.add_parser("list", help="the keys a directory's allow lists trust")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.command in ("new", "add"):
        agents = keys.parse_names(args.agents)
        clients = keys.parse_clients(args.clients)
        if not agents and not clients:
            parser.error("give --agents and/or --clients")
        if args.command == "new":
            keys.create_keys_dir(args.dir, agents, clients)
        else:
            keys.add_keys(args.dir, agents, clients)
        _print_next_steps(args.dir, agents, clients)
        return 0
    if args.command == "revoke":
        for path in keys.revoke(args.dir, args.names):
            print(f"removed {path}")
        print("agents watching this folder stop trusting these keys within a second")
        return 0
    if args.command == "role":
        keys.set_role(args.dir, args.name, args.role)
        print(f"{args.name} is now {args.role}")
        return 0
    return _list(args.dir, as_json=args.json)


def _print_next_steps(
    keys_dir: Path, agents: Sequence[str], clients: Sequence[tuple[str, str]]
) -> None:
    for node in agents:
        print(f"agent {node}: {keys_dir / keyfiles.AGENTS_DIR / (node + keyfiles.SECRET_SUFFIX)}")
    for name, role in clients:
        path = keys_dir / keyfiles.CLIENTS_DIR / (name + keyfiles.SECRET_SUFFIX)
        print(f"app key {name} ({role}): SUPERSTATIC_KEYS={path}")
    print(
        f"agents: superstatic-agent --keys {keys_dir} ... (each host needs cluster.key_secret, "
        "its own agents/ID.key_secret and the public *.key files; docs/security.md)"
    )


def _list(keys_dir: Path, *, as_json: bool) -> int:
    lists = keyfiles.load_allow_lists(keys_dir)
    rows = [
        {"kind": "agent", "name": node, "role": "-", "key": key}
        for key, node in sorted(lists.agents.items(), key=lambda item: item[1])
    ] + [
        {"kind": "app", "name": c.name, "role": c.role, "key": key}
        for key, c in sorted(lists.clients.items(), key=lambda item: item[1].name)
    ]
    if as_json:
        print(json.dumps({"keys": rows, "problems": list(lists.problems)}, indent=2))
        return 0
    print(f"{'kind':6} {'name':20} {'role':6} public key")
    for row in rows:
        print(f"{row['kind']:6} {row['name']:20} {row['role']:6} {row['key']}")
    for problem in lists.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 0
