"""The ops of one transaction body applied per key (docs/data-model-v2.md sections 3 and 4).

The meaning of every op is `superstatic.protocol.ops.apply_op` over plain containers (app
replicas run it); this module reaches the same state over per-key records, touching only the
records an op changes: `set` writes one entry (plus an order record on insert), `del` one
tombstone, `add`/`discard` one entry per member, list ops the chunks they touch
(agent/listtree.py). What it writes stays pending in the NodeView until the state machine
commits the whole body.

Versions (section 4): an entry's version is the index that last wrote it (live or
tombstone); a header's `shape_version` the index of the last change of membership or length;
its `version` the index of the last op naming the node, also one that changed nothing (data
model 1 readers validate against it, and app replicas compute it so).
"""

from __future__ import annotations

from typing import Any

from superstatic_agent import gc
from superstatic_agent import records as rec
from superstatic_agent.listtree import ListHeader, ListTree
from superstatic_agent.nodestore import NodeView, ViewChunks
from superstatic_agent.records import EntryRec, Header

from superstatic.protocol import codec, keynorm, ops
from superstatic.protocol.errors import ProtocolError


class Rejected(Exception):
    """The transaction cannot apply; `outcome` is "error" or "conflict"."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def key_bytes(key: Any, what: str) -> bytes:
    """The ekey of an untrusted key; an "error" Rejected naming the rule if it is refused."""
    try:
        return keynorm.ekey(key)
    except keynorm.KeyRefused as exc:
        raise Rejected("error", f"{what}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        # A key the codec built that Python cannot normalise: the same on every replica, and
        # validation calls this outside apply's own catch, where it would halt the agent. The
        # type only: the text may quote the key.
        raise Rejected(
            "error", f"{what}: the key cannot be normalised ({type(exc).__name__})"
        ) from None


def original_of(key: Any, ekey: bytes) -> Any:
    """What an entry keeps of the key as inserted: the key itself when its encoding differs
    from its normal form's (1.0 kept as 1.0), else nothing."""
    return None if codec.dumps(key) == ekey else key


class BodyApply:
    """Applies the ops of one body at log index `index` over `view`."""

    def __init__(self, view: NodeView, index: int, record_bytes_max: int, next_nid: int) -> None:
        self.view = view
        self.index = index
        self.record_bytes_max = record_bytes_max
        self.next_nid = next_nid
        # oid -> (nid, header being changed): written back by finish().
        self.touched: dict[str, tuple[int, Header]] = {}
        self.created: set[str] = set()
        self.dropped = 0  # references dropped (the collection trigger, gc.py)
        self.op_position = 0
        self.op_tag = ""

    # ------------------------------------------------------------ nodes

    def node(self, oid: str) -> tuple[int, Header] | None:
        """(nid, header) of a node as this body has it (a copy it may change)."""
        found = self.touched.get(oid)
        if found is not None:
            return found
        nid = self.view.nid(oid)
        if nid is None:
            return None
        found = (nid, self.view.header(nid).copy())
        self.touched[oid] = found
        return found

    def finish(self) -> None:
        """Writes back every header this body touched, stamped with its index."""
        for nid, header in self.touched.values():
            header.version = self.index
            self.view.put_header(nid, header)

    # ------------------------------------------------------------ ops

    def new(self, op: list[Any]) -> None:
        _tag, oid, kind, contents = op
        nid = self.next_nid
        self.next_nid += 1
        self.view.put("oids", rec.oid_key(oid), nid, rec.encode_nid(nid))
        extra: Any = contents[0] if kind == "obj" else None
        header = Header(oid, kind, self.index, self.index, 0, extra, 0)
        self.touched[oid] = (nid, header)
        self.created.add(oid)
        if kind == "list":
            store = self._chunks(oid, nid)
            list_header = ListTree.create(store, list(contents), self.index)
            header.extra = list_header.to_wire()
            header.count = list_header.length
        elif kind == "set":
            for member in contents:
                self._add(oid, nid, header, member)
        else:
            for key, value in contents[1] if kind == "obj" else contents:
                self._set(oid, nid, header, key, value)

    def apply(self, op: list[Any]) -> None:
        """One op other than "new" on an existing node (the caller checked it exists)."""
        tag, oid = op[0], op[1]
        found = self.node(oid)
        assert found is not None, oid
        nid, header = found
        kind = header.kind
        ops.check_fits(kind, op)
        if tag == "set":
            self._set(oid, nid, header, op[2], op[3])
        elif tag == "del":
            self._del(nid, header, op[2])
        elif tag == "add":
            for member in op[2]:
                self._add(oid, nid, header, member)
        elif tag == "discard":
            for member in op[2]:
                self._del(nid, header, member)
        elif tag == "clear":
            if kind == "list":
                self._list_clear(oid, nid, header)
            else:
                self._clear(nid, header)
        elif tag == "splice":
            self._splice(oid, nid, header, op[2], op[3], op[4])
        else:
            self._extend(oid, nid, header, op[2])

    # ------------------------------------------------------------ entries

    def _what(self, oid: str) -> str:
        return f"op #{self.op_position} {self.op_tag!r} on {oid}"

    def _ekey(self, oid: str, key: Any) -> bytes:
        """key_bytes(key, self._what(oid)), the message built only for a refused key
        (formatting it for every set was ~1% of a write's apply)."""
        try:
            return keynorm.ekey(key)
        except Exception:
            return key_bytes(key, self._what(oid))  # refuses it again, naming the op

    def _set(self, oid: str, nid: int, header: Header, key: Any, value: Any) -> None:
        ekey = self._ekey(oid, key)
        entry = self.view.entry(nid, ekey)
        if entry is not None and not entry.tomb:
            if type(entry.value) not in codec.SCALAR_TYPES:  # a scalar holds no reference
                self.dropped += gc.value_refs((entry.value,))
            new = EntryRec(self.index, entry.pos, value, entry.original)
        else:
            pos = header.next_pos
            header.next_pos += 1
            header.count += 1
            header.shape_version = self.index
            new = EntryRec(self.index, pos, value, original_of(key, ekey))
            self.view.put("order", rec.order_key(nid, pos), ekey, ekey)
            if entry is not None:
                self._untomb(nid, ekey, entry)
        self._put_entry(oid, nid, ekey, new)

    def _add(self, oid: str, nid: int, header: Header, member: Any) -> None:
        ekey = self._ekey(oid, member)
        entry = self.view.entry(nid, ekey)
        if entry is not None and not entry.tomb:
            return  # set.add keeps the member it holds
        header.count += 1
        header.shape_version = self.index
        if entry is not None:
            self._untomb(nid, ekey, entry)
        self._put_entry(oid, nid, ekey, EntryRec(self.index, original=original_of(member, ekey)))

    def _del(self, nid: int, header: Header, key: Any) -> None:
        try:
            ekey = keynorm.ekey(key)
        except keynorm.KeyRefused:
            return  # a key that cannot be stored is not there: pop/discard of it is a no-op
        entry = self.view.entry(nid, ekey)
        if entry is None or entry.tomb:
            return
        self._tombstone(nid, header, ekey, entry)

    def _tombstone(self, nid: int, header: Header, ekey: bytes, entry: EntryRec) -> None:
        self.dropped += sum(1 for _ in gc.refs_in_entry(ekey, entry))
        if entry.pos is not None:
            self.view.delete("order", rec.order_key(nid, entry.pos))
        header.count -= 1
        header.shape_version = self.index
        key, _size = self.view.put_entry(nid, ekey, EntryRec(self.index, tomb=True))
        self.view.put("tombs", rec.tomb_key(self.index, key), b"", b"")

    def _untomb(self, nid: int, ekey: bytes, tomb: EntryRec) -> None:
        """A tombstone replaced by a live entry: its purge index record goes with it."""
        assert tomb.tomb, ekey
        self.view.delete("tombs", rec.tomb_key(tomb.version, rec.entry_key(nid, ekey)))

    def _clear(self, nid: int, header: Header) -> None:
        for ekey, entry in self.view.node_entries(nid):
            if not entry.tomb:
                self._tombstone(nid, header, ekey, entry)

    def _put_entry(self, oid: str, nid: int, ekey: bytes, entry: EntryRec) -> None:
        key, size = self.view.put_entry(nid, ekey, entry)
        if size > self.record_bytes_max and size > self.view.stored_size("entries", key):
            self._oversize(oid, size)

    def _oversize(self, oid: str, size: int) -> None:
        raise Rejected(
            "error",
            f"a record of object {oid} would take {size} bytes, above the limit "
            f"record_bytes_max={self.record_bytes_max} (every entry, list chunk and header "
            "must fit one stream frame); nothing was written. Split the value (e.g. a list "
            "of smaller values, or more entries)",
        )

    # ------------------------------------------------------------ lists

    def _chunks(self, oid: str, nid: int) -> ViewChunks:
        def oversize(size: int) -> None:
            self._oversize(oid, size)

        return ViewChunks(self.view, nid, self.record_bytes_max, oversize)

    def _tree(self, oid: str, nid: int, header: Header) -> Any:
        return ListTree(self._chunks(oid, nid), ListHeader.from_wire(header.extra))

    def _list_done(self, tree: Any, header: Header) -> None:
        list_header = tree.header
        if list_header.length != header.count:
            header.shape_version = self.index
        header.extra = list_header.to_wire()
        header.count = list_header.length

    def _splice(
        self, oid: str, nid: int, header: Header, start: int, stop: int, values: list[Any]
    ) -> None:
        if stop > header.count:
            raise ops.OpError(
                f"splice [{start}:{stop}] is outside list {oid!r} of length {header.count}"
            )
        tree = self._tree(oid, nid, header)
        # A count, not the references themselves: reading what is removed would cost O(n)
        # for a large splice; the trigger only needs to be deterministic and not late.
        self.dropped += stop - start
        tree.splice(start, stop, values, self.index)
        self._list_done(tree, header)

    def _extend(self, oid: str, nid: int, header: Header, values: list[Any]) -> None:
        if not values:
            return
        tree = self._tree(oid, nid, header)
        tree.extend(values, self.index)
        self._list_done(tree, header)

    def _list_clear(self, oid: str, nid: int, header: Header) -> None:
        if header.count == 0:
            return
        tree = self._tree(oid, nid, header)
        self.dropped += header.count
        tree.clear(self.index)
        self._list_done(tree, header)


def describe_key(key: Any) -> str:
    """A read key for a conflict message: the type and size of its normal form (untrusted)."""
    try:
        return codec.describe(keynorm.key_norm(key))
    except ProtocolError:
        return codec.describe(key)
