"""INSPECT answers for the object-graph browser (`superstatic inspect`) and the status page.

Read-only, in one LMDB read transaction the caller opens on the loop thread. Every answer is
bounded (items per container, nodes expanded, record bytes read), and says when it was cut
(`truncated`), so a huge graph costs a bounded amount of work and one frame:

- `list_roots`: every root (up to a limit) with its node's kind, item count, version and
  record size in bytes.
- `show`: a node (by root and path, or by object id) or a plain value at the end of a path,
  with its metadata and its value expanded `depth` levels of nodes down; deeper (or repeated)
  nodes are given as `{"__ref__": oid}` to follow with `{"oid": ...}`. `oids` maps every node
  expanded to its path from the one shown (`superstatic inspect --watch` uses it to tell which
  commits touch what it shows).

Value mapping as `StateMachine.node_json` (docs/data-model.md): bytes as `{"__bytes__": hex}`,
a dict with non-str keys as `{"__items__": [[k, v], ...]}`, an object as `{"__class__": name,
attr: value, ...}`, sets and frozensets as lists, tuples as lists, dates as ISO text.
"""

from __future__ import annotations

import re
from typing import Any

import lmdb
from superstatic_agent import gc
from superstatic_agent.storage import Dbs, record_get

from superstatic.protocol import codec, wire

# Roots listed when the request names no limit.
ROOTS_MAX = wire.INSPECT_ROOTS_MAX
# Node levels expanded below the node shown when the request names no depth.
DEPTH_DEFAULT = 3
# Items of one container put in an answer; the rest are counted in "__truncated__".
ITEMS_MAX = 1_000
# Nodes expanded in one answer; further ones are given as references.
NODES_MAX = 10_000
# Record bytes read to expand one answer (a frame must hold the answer: wire.FRAME_BYTES_MAX).
RECORD_BYTES_MAX = 4 << 20

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NotFound(Exception):
    """The path leads nowhere; the message says where it stopped and why."""


def render_path(steps: tuple[str | int, ...] | list[str | int], base: str = "") -> str:
    """`("users", 3, "name")` -> `.users[3].name` after `base` (a root name)."""
    out = [base]
    for step in steps:
        if isinstance(step, str) and _IDENTIFIER.match(step):
            out.append(f".{step}")
        elif isinstance(step, str):
            out.append("[" + _quote(step) + "]")
        else:
            out.append(f"[{step}]")
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read(txn: lmdb.Transaction, dbs: Dbs, oid: str) -> tuple[bytes, int, str, Any] | None:
    raw = record_get(txn, dbs.objects, "objects", oid.encode())
    if raw is None:
        return None
    version, kind, contents = codec.loads(raw)
    return raw, version, kind, contents


def _items(kind: str, contents: Any) -> int:
    if kind == "obj":
        return len(contents[1])
    return len(contents)


def _roots(txn: lmdb.Transaction, dbs: Dbs) -> list[tuple[Any, Any]]:
    found = _read(txn, dbs, gc.ROOTS_OID)
    if found is None or found[2] != "dict":
        return []
    return list(found[3])


def list_roots(txn: lmdb.Transaction, dbs: Dbs, limit: int) -> dict[str, Any]:
    """The roots (sorted by name, at most `limit`) with each node's kind, items, version and
    record bytes."""
    assert 1 <= limit <= ROOTS_MAX, limit
    entries = sorted(_roots(txn, dbs), key=lambda kv: str(kv[0]))
    out = []
    for name, ref in entries[:limit]:
        row: dict[str, Any] = {"name": str(name)}
        if type(ref) is codec.Ref:
            found = _read(txn, dbs, ref.oid)
            row["oid"] = ref.oid
            if found is None:
                row.update(kind="missing", items=0, version=0, bytes=0)
            else:
                raw, version, kind, contents = found
                row.update(kind=kind, items=_items(kind, contents), version=version, bytes=len(raw))
                if kind == "obj":
                    row["class"] = contents[0]
        else:  # roots always name nodes; show anything else as it is
            row.update(kind="value", items=0, version=0, bytes=0)
        out.append(row)
    return {"roots": out, "count": len(entries), "truncated": len(entries) > limit}


def show(
    txn: lmdb.Transaction,
    dbs: Dbs,
    *,
    root: str | None,
    path: tuple[str | int, ...],
    oid: str | None,
    depth: int,
) -> dict[str, Any]:
    """A node or value, by root and path or by oid (see the module docstring)."""
    assert (root is None) != (oid is None)
    assert 0 <= depth <= wire.INSPECT_DEPTH_MAX, depth
    if oid is not None:
        found = _read(txn, dbs, oid)
        if found is None:
            return {"found": False, "missing": f"no node with id {oid!r} (collected, or never was)"}
        return _node_answer(txn, dbs, oid, found, depth, where=oid)
    assert root is not None
    value: Any = None
    for name, ref in _roots(txn, dbs):
        if name == root and type(name) is str:
            value = ref
            break
    else:
        return {"found": False, "missing": f"no root named {root!r}"}
    ancestors: list[tuple[str, str, str | int]] = []
    try:
        value = _walk(txn, dbs, root, value, path, ancestors)
    except NotFound as exc:
        return {"found": False, "missing": str(exc)}
    where = render_path(path, root)
    if type(value) is codec.Ref:
        found = _read(txn, dbs, value.oid)
        if found is None:
            return {"found": False, "missing": f"{where} names node {value.oid}, which is gone"}
        answer = _node_answer(txn, dbs, value.oid, found, depth, where=where)
    else:
        walk = _Walk(txn, dbs, depth)
        answer = {
            "found": True,
            "path": where,
            "kind": "value",
            "value": walk.value(value, 0, ""),
            "oids": walk.oids,
            "truncated": walk.truncated,
        }
    # The containers the path went through, the root table first: a change to any of them
    # may make the path name something else (`inspect --watch` follows them too).
    answer["ancestors"] = ancestors
    return answer


def _walk(
    txn: lmdb.Transaction,
    dbs: Dbs,
    root: str,
    value: Any,
    path: tuple[str | int, ...],
    ancestors: list[tuple[str, str, str | int]],
) -> Any:
    """Follows `path` from a root's value; returns the value at its end. `ancestors` gets
    (oid, path, the key taken there) of every container on the way, the root table first."""
    ancestors.append((gc.ROOTS_OID, gc.ROOTS_OID, root))
    for i, step in enumerate(path):
        here = render_path(path[:i], root)
        if type(value) is tuple:
            if type(step) is not int or not -len(value) <= step < len(value):
                raise NotFound(f"{here} is a tuple of {len(value)} items: no item [{step!r}]")
            value = value[step]
            continue
        if type(value) is not codec.Ref:
            raise NotFound(
                f"{here} is a {type(value).__name__}, not a container: cannot go to {step!r}"
            )
        found = _read(txn, dbs, value.oid)
        if found is None:
            raise NotFound(f"{here} names node {value.oid}, which is gone")
        _raw, _version, kind, contents = found
        ancestors.append((value.oid, here, step))
        if kind == "dict":
            for key, item in contents:
                # type-exact: True is not 1, "1" is not 1
                if type(key) is type(step) and key == step:
                    value = item
                    break
            else:
                raise NotFound(f"{here} (a dict of {len(contents)} items) has no key {step!r}")
        elif kind == "obj":
            class_name, attrs = contents
            for name, item in attrs:
                if name == step:
                    value = item
                    break
            else:
                raise NotFound(f"{here} (a {class_name}) has no attribute {step!r}")
        elif kind == "list":
            if type(step) is not int or not -len(contents) <= step < len(contents):
                raise NotFound(f"{here} is a list of {len(contents)} items: no index [{step!r}]")
            value = contents[step]
        else:
            raise NotFound(f"{here} is a {kind}: its members have no path (show {here} itself)")
    return value


def _node_answer(
    txn: lmdb.Transaction,
    dbs: Dbs,
    oid: str,
    found: tuple[bytes, int, str, Any],
    depth: int,
    *,
    where: str,
) -> dict[str, Any]:
    raw, version, kind, contents = found
    walk = _Walk(txn, dbs, depth)
    answer: dict[str, Any] = {
        "found": True,
        "path": where,
        "oid": oid,
        "kind": kind,
        "version": version,
        "bytes": len(raw),
        "items": _items(kind, contents),
    }
    if kind == "obj":
        answer["class"] = contents[0]
    walk.read_bytes += len(raw)
    walk.oids[oid] = ""
    walk.seen.add(oid)
    answer["value"] = walk.contents(kind, contents, 0, "")
    answer["oids"] = walk.oids
    answer["truncated"] = walk.truncated
    return answer


class _Walk:
    """One answer's expansion: each node once, within ITEMS_MAX / NODES_MAX / RECORD_BYTES_MAX."""

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs, depth: int) -> None:
        self.txn = txn
        self.dbs = dbs
        self.depth = depth
        self.seen: set[str] = set()
        self.oids: dict[str, str] = {}  # oid -> path from the node shown
        self.read_bytes = 0
        self.truncated = False

    def value(self, value: Any, level: int, where: str) -> Any:
        tp = type(value)
        if value is None or tp in (bool, int, str):
            return value
        if tp is float:
            return value if value == value and abs(value) != float("inf") else repr(value)
        if tp is bytes:
            return {"__bytes__": value.hex()}
        if tp is codec.Ref:
            return self.node(value.oid, level, where)
        if tp is tuple:
            return [self.value(x, level, f"{where}[{i}]") for i, x in enumerate(value[:ITEMS_MAX])]
        if tp is frozenset:
            ordered = sorted(value, key=codec.dumps)[:ITEMS_MAX]
            return [self.value(x, level, where) for x in ordered]
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value)  # Decimal, UUID: their exact text

    def node(self, oid: str, level: int, where: str) -> Any:
        if oid in self.seen or level >= self.depth:
            return {"__ref__": oid}
        if len(self.seen) >= NODES_MAX or self.read_bytes >= RECORD_BYTES_MAX:
            self.truncated = True
            return {"__ref__": oid}
        found = _read(self.txn, self.dbs, oid)
        if found is None:
            return {"__ref__": oid, "missing": True}
        raw, _version, kind, contents = found
        self.seen.add(oid)
        self.oids[oid] = where
        self.read_bytes += len(raw)
        return self.contents(kind, contents, level + 1, where)

    def contents(self, kind: str, contents: Any, level: int, where: str) -> Any:
        if kind == "dict":
            shown = contents[:ITEMS_MAX]
            if all(type(key) is str for key, _ in shown):
                out: Any = {k: self.value(v, level, render_path([k], where)) for k, v in shown}
                if len(contents) > ITEMS_MAX:
                    self.truncated = True
                    out["__truncated__"] = len(contents) - ITEMS_MAX
                return out
            items = [
                [self.value(k, level, where), self.value(v, level, f"{where}[{k!r}]")]
                for k, v in shown
            ]
            out = {"__items__": items}
            if len(contents) > ITEMS_MAX:
                self.truncated = True
                out["__truncated__"] = len(contents) - ITEMS_MAX
            return out
        if kind in ("list", "set"):
            if kind == "list":
                values = [
                    self.value(v, level, f"{where}[{i}]")
                    for i, v in enumerate(contents[:ITEMS_MAX])
                ]
            else:
                values = [self.value(v, level, where) for v in contents[:ITEMS_MAX]]
            if len(contents) > ITEMS_MAX:
                self.truncated = True
                values.append({"__truncated__": len(contents) - ITEMS_MAX})
            return values
        class_name, attrs = contents
        shown_obj: dict[str, Any] = {"__class__": class_name}
        for name, v in attrs[:ITEMS_MAX]:
            shown_obj[name] = self.value(v, level, render_path([name], where))
        if len(attrs) > ITEMS_MAX:
            self.truncated = True
            shown_obj["__truncated__"] = len(attrs) - ITEMS_MAX
        return shown_obj
