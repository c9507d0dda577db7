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
from superstatic_agent.noderead import NodeSample, lookup, read_nid
from superstatic_agent.storage import Dbs

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
# Roots read to list them (sorted by name among these): the root table is a dict like any
# other, and may hold millions.
ROOTS_LISTED_MAX = 100_000

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


def _read(txn: lmdb.Transaction, dbs: Dbs, oid: str, items_max: int = ITEMS_MAX) -> Any:
    """The node's header and first items (nodestore.NodeSample), None if there is no node."""
    nid = read_nid(txn, dbs, oid)
    return None if nid is None else NodeSample(txn, dbs, nid, items_max)


def _roots(txn: lmdb.Transaction, dbs: Dbs) -> list[tuple[Any, Any]]:
    """(name, value) of the roots, at most ROOTS_LISTED_MAX of them in insertion order (the
    root table may hold millions; listing is bounded like every answer)."""
    found = _read(txn, dbs, gc.ROOTS_OID, ROOTS_LISTED_MAX)
    if found is None or found.kind != "dict":
        return []
    return [(key, value) for key, value in found.contents]


def _roots_count(txn: lmdb.Transaction, dbs: Dbs) -> int:
    found = _read(txn, dbs, gc.ROOTS_OID, 0)
    return 0 if found is None else found.count  # type: ignore[no-any-return]


def list_roots(txn: lmdb.Transaction, dbs: Dbs, limit: int) -> dict[str, Any]:
    """The roots (sorted by name, at most `limit`) with each node's kind, items, version and
    record bytes."""
    assert 1 <= limit <= ROOTS_MAX, limit
    entries = sorted(_roots(txn, dbs), key=lambda kv: str(kv[0]))
    count = _roots_count(txn, dbs)
    out = []
    for name, ref in entries[:limit]:
        row: dict[str, Any] = {"name": str(name)}
        if type(ref) is codec.Ref:
            found = _read(txn, dbs, ref.oid, 0)
            row["oid"] = ref.oid
            if found is None:
                row.update(kind="missing", items=0, version=0, bytes=0)
            else:
                # bytes: the header's (a node's total would cost a scan of its records).
                row.update(
                    kind=found.kind, items=found.count, version=found.version, bytes=found.bytes
                )
                if found.kind == "obj":
                    row["class"] = found.class_name
        else:  # roots always name nodes; show anything else as it is
            row.update(kind="value", items=0, version=0, bytes=0)
        out.append(row)
    return {"roots": out, "count": count, "truncated": count > limit}


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
    roots = read_nid(txn, dbs, gc.ROOTS_OID)
    hit = None if roots is None else lookup(txn, dbs, roots, "dict", root)
    if hit is None or type(hit[0]) is not str:
        return {"found": False, "missing": f"no root named {root!r}"}
    value: Any = hit[1]
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
        found = _read(txn, dbs, value.oid, 0)
        if found is None:
            raise NotFound(f"{here} names node {value.oid}, which is gone")
        kind = found.kind
        ancestors.append((value.oid, here, step))
        if kind == "dict":
            hit = lookup(txn, dbs, found.nid, kind, step)
            # type-exact: True is not 1, "1" is not 1
            if hit is None or type(hit[0]) is not type(step):
                raise NotFound(f"{here} (a dict of {found.count} items) has no key {step!r}")
            value = hit[1]
        elif kind == "obj":
            hit = None if type(step) is not str else lookup(txn, dbs, found.nid, kind, step)
            if hit is None:
                raise NotFound(f"{here} (a {found.class_name}) has no attribute {step!r}")
            value = hit[1]
        elif kind == "list":
            if type(step) is not int or not -found.count <= step < found.count:
                raise NotFound(f"{here} is a list of {found.count} items: no index [{step!r}]")
            value = lookup(txn, dbs, found.nid, kind, step % found.count)
        else:
            raise NotFound(f"{here} is a {kind}: its members have no path (show {here} itself)")
    return value


def _node_answer(
    txn: lmdb.Transaction,
    dbs: Dbs,
    oid: str,
    found: NodeSample,
    depth: int,
    *,
    where: str,
) -> dict[str, Any]:
    walk = _Walk(txn, dbs, depth)
    answer: dict[str, Any] = {
        "found": True,
        "path": where,
        "oid": oid,
        "kind": found.kind,
        "version": found.version,
        "bytes": found.bytes,
        "items": found.count,
    }
    if found.kind == "obj":
        answer["class"] = found.class_name
    walk.read_bytes += found.bytes
    walk.oids[oid] = ""
    walk.seen.add(oid)
    answer["value"] = walk.contents(found, 0, "")
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
        self.seen.add(oid)
        self.oids[oid] = where
        self.read_bytes += found.bytes
        return self.contents(found, level + 1, where)

    def contents(self, found: NodeSample, level: int, where: str) -> Any:
        kind, shown, count = found.kind, found.contents[:ITEMS_MAX], found.count
        if kind == "dict":
            if all(type(key) is str for key, _ in shown):
                out: Any = {k: self.value(v, level, render_path([k], where)) for k, v in shown}
                if count > ITEMS_MAX:
                    self.truncated = True
                    out["__truncated__"] = count - ITEMS_MAX
                return out
            items = [
                [self.value(k, level, where), self.value(v, level, f"{where}[{k!r}]")]
                for k, v in shown
            ]
            out = {"__items__": items}
            if count > ITEMS_MAX:
                self.truncated = True
                out["__truncated__"] = count - ITEMS_MAX
            return out
        if kind in ("list", "set"):
            if kind == "list":
                values = [self.value(v, level, f"{where}[{i}]") for i, v in enumerate(shown)]
            else:
                values = [self.value(v, level, where) for v in shown]
            if count > ITEMS_MAX:
                self.truncated = True
                values.append({"__truncated__": count - ITEMS_MAX})
            return values
        shown_obj: dict[str, Any] = {"__class__": found.class_name}
        for name, v in shown:
            shown_obj[name] = self.value(v, level, render_path([name], where))
        if count > ITEMS_MAX:
            self.truncated = True
            shown_obj["__truncated__"] = count - ITEMS_MAX
        return shown_obj
