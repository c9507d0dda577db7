"""One shared list as a counted B+tree of chunks (data model v2, docs/data-model-v2.md section 3).

A list node's elements live in **leaves** (`[0, version, [values...]]`) under **inner** nodes
(`[1, [[child chunk id, element count], ...]]`), every record CBOR (`codec.dumps`) under its own
chunk id in a `ChunkStore`. The node header's `extra` holds a `ListHeader`: `[length, root chunk
id, height, next chunk id]`; the empty list is root 0, height 0, no records.

Costs, in records read and written: `get(i)` reads the path (height + 1 records); `splice` reads
and rewrites the leaves it touches and the inner nodes on their paths, plus at most one
neighbour per level when something shrank (to merge an underfull node); `extend` is a splice at
the end. A splice that removes or inserts k elements also costs O(k / leaf size) leaves: what it
changes. Nothing ever reads or writes the whole list except `create`, `clear`, `iter_values`
and `check`.

Limits (both split points and the underfull thresholds derive from them):
* a leaf holds at most `leaf_items_max` values and at most `leaf_bytes_max` bytes of encoded
  values (the sum of `len(codec.dumps(v))`; a single value larger than that gets a leaf of its
  own);
* an inner node has at most `fanout_max` children and, unless it is the root, at least
  `max(2, fanout_max // 4)` (the root has at least 2: a root with one child is removed);
* a non-root leaf is *underfull* when both its items and its bytes are below a quarter of their
  maximum. An underfull node is merged with a neighbour when the two fit in one node, else
  rebalanced with it (split in two near-equal halves). The one exception is the last leaf of
  the list, which is left to fill up by appends (SQLite's `balance_quick`): so appending fills
  leaves completely instead of leaving them half full. What `check` can therefore promise for
  leaves: an underfull leaf has no neighbour (in the same parent) it could be merged with.

Each mutating call works on decoded copies of the records it touches and writes them back only
once everything succeeded: a call that raises (an out-of-range splice, a corrupt record) has
written nothing and leaves the header as it was.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from superstatic.protocol import codec
from superstatic.protocol.errors import ProtocolError
from superstatic.protocol.ops import INT64_MAX, OpError

LIST_LEAF_ITEMS_MAX = 256
LIST_LEAF_BYTES_MAX = 64 * 1024
LIST_FANOUT_MAX = 256
# Every inner node but the root has at least 2 children, so a tree of n elements is at most
# log2(n) + 1 high: 64 covers any length a header can hold (< 2**63). A header claiming more is
# garbage (and would make the walk recurse that deep).
LIST_HEIGHT_MAX = 64
# Chunk ids and element counts are 64-bit (big-endian 8-byte LMDB keys).
CHUNK_ID_MAX = INT64_MAX

_LEAF = 0
_INNER = 1


class ListCorrupt(Exception):
    """A stored list record (a chunk or the header) that does not decode or has the wrong shape
    or counts. Names the chunk id, never the bytes. Not a ProtocolError on purpose: it is a
    damaged replica, never the outcome of a transaction."""

    def __init__(self, chunk_id: int | None, reason: str) -> None:
        where = "list header" if chunk_id is None else f"list chunk {chunk_id}"
        super().__init__(f"{where}: {reason}")
        self.chunk_id = chunk_id


class ChunkStore(Protocol):
    """The records of ONE list node; keys are chunk ids (int >= 1)."""

    def get(self, chunk_id: int) -> bytes | None: ...

    def put(self, chunk_id: int, data: bytes) -> None: ...

    def delete(self, chunk_id: int) -> None: ...


class MemoryChunkStore:
    """A ChunkStore in a dict: for tests, benchmarks and anything that stages chunks."""

    def __init__(self) -> None:
        self.records: dict[int, bytes] = {}

    def get(self, chunk_id: int) -> bytes | None:
        return self.records.get(chunk_id)

    def put(self, chunk_id: int, data: bytes) -> None:
        self.records[chunk_id] = data

    def delete(self, chunk_id: int) -> None:
        del self.records[chunk_id]


@dataclass
class ListHeader:
    """What a list node header's `extra` holds: `[length, root, height, next_chunk_id]`."""

    length: int
    root: int
    height: int
    next_chunk_id: int

    @classmethod
    def empty(cls) -> ListHeader:
        return cls(0, 0, 0, 1)

    def to_wire(self) -> list[int]:
        return [self.length, self.root, self.height, self.next_chunk_id]

    @classmethod
    def from_wire(cls, value: Any) -> ListHeader:
        """The header of a stored `extra`; ListCorrupt (naming the field) if malformed."""
        if type(value) is not list or len(value) != 4:
            raise ListCorrupt(
                None, f"is [length, root, height, next_chunk_id], got {codec.describe(value)}"
            )
        names = ("length", "root", "height", "next_chunk_id")
        for name, field in zip(names, value, strict=True):
            if type(field) is not int or not 0 <= field <= INT64_MAX:
                raise ListCorrupt(None, f"{name} is not an int in 0..{INT64_MAX}")
        length, root, height, next_id = value
        if next_id < 1:
            raise ListCorrupt(None, "next_chunk_id is 0 (chunk ids start at 1)")
        if height > LIST_HEIGHT_MAX:
            raise ListCorrupt(None, f"height is above LIST_HEIGHT_MAX={LIST_HEIGHT_MAX}")
        if (length == 0) != (root == 0) or (root == 0 and height != 0):
            raise ListCorrupt(None, "an empty list has root 0 and height 0, and only it")
        if root >= next_id:
            raise ListCorrupt(None, "root is not below next_chunk_id")
        return cls(length, root, height, next_id)


class _Leaf:
    """A decoded leaf. `data` is its record when known to be current (read, or encoded for a
    size check), `nbytes` the encoded size of its values (sum of len(codec.dumps(v)))."""

    __slots__ = ("data", "nbytes", "values", "version")

    def __init__(self, version: int, values: list[Any], data: bytes | None = None) -> None:
        self.version = version
        self.values = values
        self.data = data
        self.nbytes = -1 if data is None else len(data) - _leaf_overhead(version, len(values))

    def encode(self) -> bytes:
        if self.data is None:
            self.data = codec.dumps([_LEAF, self.version, self.values])
            self.nbytes = len(self.data) - _leaf_overhead(self.version, len(self.values))
        return self.data

    def size(self) -> int:
        if self.nbytes < 0:
            self.encode()
        return self.nbytes


class _Inner:
    __slots__ = ("entries",)

    def __init__(self, entries: list[list[int]]) -> None:
        self.entries = entries  # [[child chunk id, element count], ...]


def _head_len(n: int) -> int:
    """Bytes of a CBOR array header (or unsigned int) for `n`."""
    if n < 24:
        return 1
    if n < 1 << 8:
        return 2
    if n < 1 << 16:
        return 3
    if n < 1 << 32:
        return 5
    return 9


def _leaf_overhead(version: int, n: int) -> int:
    # [0, version, [values]]: outer header, the 0, the version, the values' array header.
    return 1 + 1 + _head_len(version) + _head_len(n)


def _number(value: int) -> str:
    """An int for a message, unless it is too big to be anything but garbage."""
    return str(value) if -INT64_MAX - 1 <= value <= INT64_MAX else codec.describe(value)


class ListTree:
    """The list stored in `store` under `header`. Not thread-safe; build one per use (it
    caches nothing across calls but the header)."""

    def __init__(
        self,
        store: ChunkStore,
        header: ListHeader,
        *,
        leaf_items_max: int = LIST_LEAF_ITEMS_MAX,
        leaf_bytes_max: int = LIST_LEAF_BYTES_MAX,
        fanout_max: int = LIST_FANOUT_MAX,
    ) -> None:
        if leaf_items_max < 2:
            raise ValueError("leaf_items_max must be at least 2 (a full leaf splits in two)")
        if leaf_bytes_max < 1:
            raise ValueError("leaf_bytes_max must be at least 1")
        if fanout_max < 4:
            raise ValueError("fanout_max must be at least 4 (inner nodes keep 2 children)")
        self._store = store
        self._h = ListHeader(header.length, header.root, header.height, header.next_chunk_id)
        self.leaf_items_max = leaf_items_max
        self.leaf_bytes_max = leaf_bytes_max
        self.fanout_max = fanout_max
        self.fanout_min = max(2, fanout_max // 4)
        # Within one mutating call: decoded records read or made, which to write, which to
        # delete, which were made by this call (never stored, so never deleted from the store).
        self._nodes: dict[int, _Leaf | _Inner] = {}
        self._dirty: set[int] = set()
        self._freed: set[int] = set()
        self._made: set[int] = set()
        self._version = 0
        self._next_id = header.next_chunk_id
        self._in_call = False

    @staticmethod
    def create(
        store: ChunkStore,
        values: Sequence[Any],
        version: int,
        *,
        leaf_items_max: int = LIST_LEAF_ITEMS_MAX,
        leaf_bytes_max: int = LIST_LEAF_BYTES_MAX,
        fanout_max: int = LIST_FANOUT_MAX,
    ) -> ListHeader:
        """Stores a new list of `values` (a bulk build: full leaves, O(n) once)."""
        tree = ListTree(
            store,
            ListHeader.empty(),
            leaf_items_max=leaf_items_max,
            leaf_bytes_max=leaf_bytes_max,
            fanout_max=fanout_max,
        )
        tree.extend(values, version)
        return tree.header

    @property
    def header(self) -> ListHeader:
        """The current header (a copy): what the caller writes back into the node header."""
        h = self._h
        return ListHeader(h.length, h.root, h.height, h.next_chunk_id)

    # ------------------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return self._h.length

    def get(self, index: int) -> Any:
        """`lst[index]` (negative indexes count from the end): height + 1 record reads."""
        n = self._h.length
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("list index out of range")
        cid, height = self._h.root, self._h.height
        while height > 0:
            node = self._inner(cid)
            for child, count in node.entries:
                if index < count:
                    cid = child
                    break
                index -= count
            else:
                raise ListCorrupt(cid, "its counts sum to less than its parent's count for it")
            height -= 1
        leaf = self._leaf(cid)
        if index >= len(leaf.values):
            raise ListCorrupt(cid, "holds fewer values than its parent counts")
        return leaf.values[index]

    def slice(self, start: int, stop: int) -> list[Any]:
        """`lst[start:stop]` with Python's slice semantics (negative, clamped)."""
        start, stop, _ = slice(start, stop).indices(self._h.length)
        out: list[Any] = []
        if start < stop:
            for run in self._walk(self._h.root, self._h.height, start, stop):
                out.extend(run)
        return out

    def iter_values(self) -> Iterator[Any]:
        """Every value in order, reading one leaf at a time."""
        for run in self.iter_runs():
            yield from run

    def iter_runs(self) -> Iterator[list[Any]]:
        """The values leaf by leaf, in order (a snapshot's `[3, oid, [value, ...]]` runs):
        one leaf and the inner nodes on its path in memory at a time."""
        if self._h.length:
            yield from self._walk(self._h.root, self._h.height, 0, self._h.length)

    def chunk_ids(self) -> Iterator[int]:
        """Every record id of the list (reads the inner nodes, not the leaves)."""
        if self._h.root:
            yield from self._ids_under(self._h.root, self._h.height)

    def _ids_under(self, cid: int, height: int) -> Iterator[int]:
        yield cid
        if height > 0:
            for child, _count in self._inner(cid).entries:
                yield from self._ids_under(child, height - 1)

    def _walk(self, cid: int, height: int, start: int, stop: int) -> Iterator[list[Any]]:
        """Runs of values at local positions [start, stop) of the subtree at `cid`."""
        if height == 0:
            leaf = self._leaf(cid)
            if stop > len(leaf.values):
                raise ListCorrupt(cid, "holds fewer values than its parent counts")
            yield leaf.values[start:stop]
            return
        pos = 0
        for child, count in self._inner(cid).entries:
            end = pos + count
            if end > start:
                yield from self._walk(child, height - 1, max(start - pos, 0), min(stop, end) - pos)
            if end >= stop:
                return
            pos = end
        raise ListCorrupt(cid, "its counts sum to less than its parent's count for it")

    # ------------------------------------------------------------------------------ writes

    def splice(self, start: int, stop: int, values: Sequence[Any], version: int) -> None:
        """`lst[start:stop] = values`, with exactly the meaning of ops.apply_op's "splice":
        OpError when `stop` is past the end; otherwise Python's slice assignment (negative
        positions count from the end, positions clamp to the list, a stop before the start is
        the start). Leaves it rewrites carry `version`."""
        n = self._h.length
        if stop > n:
            raise OpError(
                f"splice [{_number(start)}:{_number(stop)}] is outside a list of length {n}"
            )
        start, stop, _ = slice(start, stop).indices(n)
        stop = max(stop, start)
        if start == stop and not values:
            return  # changes nothing: writes nothing
        assert type(version) is int and 0 <= version <= INT64_MAX, "version is a log index"
        self._mutate(start, stop, list(values), version)

    def extend(self, values: Sequence[Any], version: int) -> None:
        """`lst.extend(values)`: a splice at the end (fills the last leaf, then new ones)."""
        n = self._h.length
        self.splice(n, n, values, version)

    def clear(self, version: int) -> None:
        """Deletes every record (reading the inner nodes, not the leaves); the header goes
        back to the empty list. `version` is taken for symmetry: no record is left to carry
        it."""
        if not self._h.root:
            return
        self._begin(version)
        try:
            self._free_subtree(self._h.root, self._h.height)
            self._commit(ListHeader.empty())
        finally:
            self._reset()

    def _mutate(self, start: int, stop: int, values: list[Any], version: int) -> None:
        self._begin(version)
        try:
            h = self._h
            height = h.height
            if h.root == 0:
                entries = self._place_leaves(0, self._pack(values, fill=True))
            else:
                entries = self._splice_at(
                    h.root, height, h.length, start, stop, values, rightmost=True
                )
            # `entries` are the nodes at `height` that replace the old root: give them a parent.
            if len(entries) >= 2:
                self._fix(entries, height, 0, len(entries), rightmost=True)
            while len(entries) > 1:
                entries = self._place_inner(0, entries)
                height += 1
            root = entries[0][0] if entries else 0
            if not root:
                height = 0
            # A root with one child is not a level: remove it.
            while height > 0 and len(self._inner(root).entries) == 1:
                child = self._inner(root).entries[0][0]
                self._free(root)
                root, height = child, height - 1
            length = h.length - (stop - start) + len(values)
            assert (root == 0) == (length == 0), (root, length)
            self._commit(ListHeader(length, root, height, self._next_id))
        finally:
            self._reset()

    def _splice_at(
        self,
        cid: int,
        height: int,
        count: int,
        start: int,
        stop: int,
        values: list[Any],
        *,
        rightmost: bool,
    ) -> list[list[int]]:
        """Applies [start:stop] = values (local positions) to the subtree at `cid` (holding
        `count` elements, as its parent says); returns the
        entries [[chunk id, count], ...] of the nodes, at the same height, that replace it
        (none if it became empty, several if it split). `rightmost`: it ends the list."""
        if height == 0:
            leaf = self._leaf(cid)
            old = leaf.values
            if stop > len(old):
                raise ListCorrupt(cid, "holds fewer values than its parent counts")
            new = old[:start] + values + old[stop:]
            if not new:
                self._free(cid)
                return []
            # Appending at the end of the list fills leaves; anything else splits in halves.
            fill = rightmost and start == stop == len(old)
            return self._place_leaves(cid, self._pack(new, fill=fill))
        node = self._inner(cid)
        entries = node.entries
        last = len(entries) - 1
        i0, off0 = self._locate(cid, entries, start, at_end_ok=True)
        if stop == start:
            i1, off1 = i0, off0
        else:
            i1, off1 = self._locate(cid, entries, stop - 1, at_end_ok=False)
        if i0 == i1:
            child, child_count = entries[i0]
            replacement = self._splice_at(
                child,
                height - 1,
                child_count,
                start - off0,
                stop - off0,
                values,
                rightmost=rightmost and i0 == last,
            )
        else:
            first, first_count = entries[i0]
            replacement = self._splice_at(
                first, height - 1, first_count, start - off0, first_count, values, rightmost=False
            )
            for child, _count in entries[i0 + 1 : i1]:
                self._free_subtree(child, height - 1)
            last_id, last_count = entries[i1]
            replacement += self._splice_at(
                last_id,
                height - 1,
                last_count,
                0,
                stop - off1,
                [],
                rightmost=rightmost and i1 == last,
            )
        entries[i0 : i1 + 1] = replacement
        self._fix(entries, height - 1, i0, i0 + len(replacement), rightmost=rightmost)
        if not entries:
            self._free(cid)
            return []
        self._dirty.add(cid)
        if len(entries) <= self.fanout_max:
            # Merges below move elements between children, never in or out of this node.
            return [[cid, count - (stop - start) + len(values)]]
        return self._place_inner(cid, entries)

    def _locate(
        self, cid: int, entries: list[list[int]], pos: int, *, at_end_ok: bool
    ) -> tuple[int, int]:
        """(index of the child holding local position `pos`, elements before it). With
        `at_end_ok`, `pos` may be the node's count (an insert at its end: the last child)."""
        offset = 0
        for i, (_child, count) in enumerate(entries):
            if pos < offset + count:
                return i, offset
            offset += count
        if at_end_ok and pos == offset:
            return len(entries) - 1, offset - entries[-1][1]
        raise ListCorrupt(cid, "its counts sum to less than its parent's count for it")

    # ------------------------------------------------------------- underfull neighbours

    def _fix(
        self,
        entries: list[list[int]],
        child_height: int,
        lo: int,
        hi: int,
        *,
        rightmost: bool,
    ) -> None:
        """Merges or rebalances underfull children among `entries` (siblings at
        `child_height`) whose positions are in [lo, hi) (the ones just rewritten) and, for
        leaves, their two outer neighbours: a leaf may stay underfull next to a neighbour
        it does not fit with, and a rewritten neighbour (a split half, a cut) may now fit.
        Inner neighbours need no look: outside a call, every non-root inner node has
        fanout_min children. Repeats until nothing in the window changes: each merge removes a
        node, each rebalance makes an underfull node full enough, so it ends."""
        a, b = lo, hi
        if child_height == 0:
            a, b = max(0, lo - 1), hi + 1
        changed = True
        while changed:
            changed = False
            b = min(b, len(entries))
            for p in range(a, b):
                if not self._underfull(entries[p], child_height):
                    continue
                q = self._merge_partner(entries, p, child_height)
                if q is not None:
                    m = min(p, q)
                    self._merge(entries, m, child_height, rightmost=rightmost)
                    b -= 1
                    changed = True
                    break
                last_leaf = rightmost and child_height == 0 and p == len(entries) - 1
                if len(entries) >= 2 and not last_leaf:
                    q = p + 1 if p + 1 < len(entries) else p - 1
                    if self._rebalance(entries, min(p, q), child_height):
                        # The neighbour shrank: its other neighbour may now fit with it.
                        a, b = max(0, min(a, q - 1)), max(b, q + 2)
                        changed = True
                        break

    def _underfull(self, entry: list[int], child_height: int) -> bool:
        cid, count = entry
        if child_height == 0:
            if count * 4 >= self.leaf_items_max:
                return False  # decided by the count alone: no read
            return self._leaf(cid).size() * 4 < self.leaf_bytes_max
        return len(self._inner(cid).entries) < self.fanout_min

    def _fits(self, left: list[int], right: list[int], child_height: int) -> bool:
        if child_height == 0:
            if left[1] + right[1] > self.leaf_items_max:
                return False
            size = self._leaf(left[0]).size() + self._leaf(right[0]).size()
            return size <= self.leaf_bytes_max
        return len(self._inner(left[0]).entries) + len(self._inner(right[0]).entries) <= (
            self.fanout_max
        )

    def _merge_partner(self, entries: list[list[int]], p: int, child_height: int) -> int | None:
        for q in (p - 1, p + 1):
            if 0 <= q < len(entries):
                left, right = (entries[q], entries[p]) if q < p else (entries[p], entries[q])
                if self._fits(left, right, child_height):
                    return q
        return None

    def _merge(
        self, entries: list[list[int]], m: int, child_height: int, *, rightmost: bool
    ) -> None:
        """Merges children m and m+1 into child m (which keeps its chunk id)."""
        (left, left_count), (right, right_count) = entries[m], entries[m + 1]
        if child_height == 0:
            values = self._leaf(left).values + self._leaf(right).values
            self._nodes[left] = _Leaf(self._version, values)
        else:
            node = self._inner(left)
            boundary = len(node.entries)
            node.entries += self._inner(right).entries
            self._regroup(node, child_height, boundary, rightmost and m + 2 == len(entries))
        self._dirty.add(left)
        self._free(right)
        entries[m : m + 2] = [[left, left_count + right_count]]

    def _rebalance(self, entries: list[list[int]], m: int, child_height: int) -> bool:
        """Redistributes children m and m+1 (which do not fit in one) into two near-equal
        halves; False (nothing changed) when no split leaves both halves full enough."""
        (left, left_count), (right, right_count) = entries[m], entries[m + 1]
        if child_height == 0:
            values = self._leaf(left).values + self._leaf(right).values
            halves = self._balanced_pair(values)
            if halves is None:
                return False
            cut = len(halves[0].values)
            self._nodes[left], self._nodes[right] = halves
            entries[m : m + 2] = [[left, cut], [right, left_count + right_count - cut]]
        else:
            a, b = self._inner(left), self._inner(right)
            joined = len(a.entries)  # where the two halves met: the old boundary
            both = a.entries + b.entries
            cut = len(both) // 2
            # Only called when the two do not fit in one: each half has fanout_min children.
            assert cut >= self.fanout_min, (len(both), self.fanout_max)
            a.entries, b.entries = both[:cut], both[cut:]
            counts = sum(c for _id, c in a.entries)
            entries[m : m + 2] = [[left, counts], [right, left_count + right_count - counts]]
            # The two children at the old boundary are now siblings in one of the halves.
            if joined < cut:
                self._regroup(a, child_height, joined, rightmost=False)
            elif joined > cut:
                self._regroup(b, child_height, joined - cut, rightmost=False)
        self._dirty.update((left, right))
        return True

    def _regroup(self, node: _Inner, node_height: int, boundary: int, rightmost: bool) -> None:
        """After the children of two inner nodes at `node_height` were joined in `node` at
        `boundary`, the two children that meet there are siblings for the first time. Either
        may be underfull (a splice that deletes across subtrees can leave a chain of only
        children along its edges, which no parent could fix until now): fix that pair, which
        recurses down the same boundary when they merge."""
        if 0 < boundary < len(node.entries):
            self._fix(
                node.entries,
                node_height - 1,
                boundary - 1,
                boundary + 1,
                rightmost=rightmost,
            )

    # ------------------------------------------------------------------------- packing

    def _pack(self, values: list[Any], *, fill: bool) -> list[_Leaf]:
        """Leaves for `values`, each within both limits, as few as possible. With `fill` all
        but the last are full (appends); else the last two are balanced, so a leaf that
        overflows splits in halves rather than leaving a sliver."""
        version = self._version
        leaves: list[_Leaf] = []
        i, n = 0, len(values)
        while i < n:
            leaf = _Leaf(version, values[i : i + self.leaf_items_max])
            if leaf.size() > self.leaf_bytes_max:
                # Too many bytes: the longest prefix that fits (at least one value).
                total, k = 0, 0
                for v in leaf.values:
                    total += len(codec.dumps(v))
                    if total > self.leaf_bytes_max:
                        break
                    k += 1
                leaf = _Leaf(version, leaf.values[: max(k, 1)])
            leaves.append(leaf)
            i += len(leaf.values)
        if not fill and len(leaves) >= 2:
            pair = self._balanced_pair(leaves[-2].values + leaves[-1].values)
            if pair is not None:
                leaves[-2:] = pair
        return leaves

    def _balanced_pair(self, values: list[Any]) -> tuple[_Leaf, _Leaf] | None:
        """Two leaves splitting `values` (which do not fit in one) where the fuller of the two
        is as empty as possible; None if every split leaves one of them underfull (a huge
        value next to a small one) or overfull."""
        n = len(values)
        items_max, bytes_max = self.leaf_items_max, self.leaf_bytes_max
        whole = _Leaf(self._version, values)
        if whole.size() <= bytes_max:
            # Only the item limit overflows (the usual case): halves by count, no per-value
            # encoding. Each has more than a quarter: together they were over items_max.
            cut = n // 2
            return _Leaf(self._version, values[:cut]), _Leaf(self._version, values[cut:])
        sizes = [len(codec.dumps(v)) for v in values]
        total = sum(sizes)
        best: tuple[float, int] | None = None
        left = 0
        for cut in range(1, n):
            left += sizes[cut - 1]
            right = total - left
            if cut > items_max or (left > bytes_max and cut > 1):
                break  # the left half only grows from here
            if n - cut > items_max or (right > bytes_max and n - cut > 1):
                continue
            fill = max(cut / items_max, left / bytes_max, (n - cut) / items_max, right / bytes_max)
            if best is None or fill < best[0]:
                best = (fill, cut)
        if best is None:
            return None
        cut = best[1]
        pair = (_Leaf(self._version, values[:cut]), _Leaf(self._version, values[cut:]))
        for leaf, count in ((pair[0], cut), (pair[1], n - cut)):
            if count * 4 < items_max and leaf.size() * 4 < bytes_max:
                return None
        return pair

    def _place_leaves(self, cid: int, leaves: list[_Leaf]) -> list[list[int]]:
        """Stores `leaves` (the first under `cid` if it is not 0); their entries."""
        out = []
        for leaf in leaves:
            if not cid:
                cid = self._new_id()
            self._nodes[cid] = leaf
            self._dirty.add(cid)
            out.append([cid, len(leaf.values)])
            cid = 0
        return out

    def _place_inner(self, cid: int, entries: list[list[int]]) -> list[list[int]]:
        """Inner nodes holding `entries` in near-equal groups of at most fanout_max (the
        first under `cid` if it is not 0): their entries, one level up."""
        groups = -(-len(entries) // self.fanout_max)
        out = []
        for g in range(groups):
            part = entries[g * len(entries) // groups : (g + 1) * len(entries) // groups]
            if not cid:
                cid = self._new_id()
            self._nodes[cid] = _Inner(part)
            self._dirty.add(cid)
            out.append([cid, sum(count for _child, count in part)])
            cid = 0
        return out

    # ---------------------------------------------------------------- records of a call

    def _begin(self, version: int) -> None:
        assert not self._nodes and not self._dirty and not self._freed, "nested mutation"
        self._version = version
        self._next_id = self._h.next_chunk_id
        self._in_call = True

    def _reset(self) -> None:
        self._nodes.clear()
        self._dirty.clear()
        self._freed.clear()
        self._made.clear()
        self._in_call = False

    def _commit(self, header: ListHeader) -> None:
        """Encodes every changed record, then writes them and deletes the freed ones (in id
        order, so every replica issues the same writes). Nothing is written if encoding
        fails."""
        writes = []
        for cid in sorted(self._dirty - self._freed):
            node = self._nodes[cid]
            if type(node) is _Leaf:
                assert node.version == self._version, "a rewritten leaf carries the call's"
                writes.append((cid, node.encode()))
            else:
                assert type(node) is _Inner
                # Ints only: no value to tag, so no walk over the entries.
                writes.append((cid, codec.dumps_tagged([_INNER, node.entries])))
        for cid, data in writes:
            self._store.put(cid, data)
        for cid in sorted(self._freed - self._made):
            self._store.delete(cid)
        self._h = header

    def _new_id(self) -> int:
        cid = self._next_id
        assert cid <= CHUNK_ID_MAX, "chunk ids are 64-bit"
        self._next_id = cid + 1
        self._made.add(cid)
        return cid

    def _free(self, cid: int) -> None:
        self._freed.add(cid)
        self._dirty.discard(cid)

    def _free_subtree(self, cid: int, height: int) -> None:
        """Frees a whole subtree: reads its inner nodes, never its leaves."""
        if height > 0:
            for child, _count in self._inner(cid).entries:
                self._free_subtree(child, height - 1)
        self._free(cid)

    def _leaf(self, cid: int) -> _Leaf:
        node = self._nodes.get(cid) or self._read(cid)
        if type(node) is not _Leaf:
            raise ListCorrupt(cid, "is an inner node where a leaf belongs")
        return node

    def _inner(self, cid: int) -> _Inner:
        node = self._nodes.get(cid) or self._read(cid)
        if type(node) is not _Inner:
            raise ListCorrupt(cid, "is a leaf where an inner node belongs")
        return node

    def _read(self, cid: int) -> _Leaf | _Inner:
        """The decoded record `cid`, its shape checked (kept for the rest of a mutating call
        only: a read-only call reads the store every time)."""
        data = self._store.get(cid)
        if data is None:
            raise ListCorrupt(cid, "is missing")
        node = self._decode(cid, bytes(data))
        if self._in_call:
            self._nodes[cid] = node
        return node

    def _decode(self, cid: int, data: bytes) -> _Leaf | _Inner:
        try:
            record = codec.loads(data)
        except ProtocolError:
            raise ListCorrupt(cid, "does not decode as CBOR") from None
        if type(record) is not list or not record or type(record[0]) is not int:
            raise ListCorrupt(cid, "is neither [0, version, values] nor [1, children]")
        if record[0] == _LEAF:
            if len(record) != 3 or type(record[1]) is not int or type(record[2]) is not list:
                raise ListCorrupt(cid, "a leaf is [0, version, [values...]]")
            if not 0 <= record[1] <= INT64_MAX or not record[2]:
                raise ListCorrupt(cid, "a leaf has a version in 0..2**63-1 and values")
            return _Leaf(record[1], record[2], data)
        if record[0] != _INNER:
            raise ListCorrupt(cid, "is neither [0, version, values] nor [1, children]")
        entries = record[1] if len(record) == 2 else None
        # Checked with map/set/min/max (C loops): every get reads up to 256 entries per level.
        if (
            type(entries) is not list
            or not entries
            or set(map(type, entries)) != {list}
            or set(map(len, entries)) != {2}
        ):
            raise ListCorrupt(cid, "an inner node is [1, [[child id, count], ...]]")
        ids, counts = zip(*entries, strict=True)
        if (
            set(map(type, ids)) != {int}
            or set(map(type, counts)) != {int}
            or min(ids) < 1
            or max(ids) >= self._h.next_chunk_id
            or min(counts) < 1
            or max(counts) > INT64_MAX
        ):
            raise ListCorrupt(cid, "a child entry is [chunk id below next_chunk_id, count >= 1]")
        return _Inner(record[1])

    # ---------------------------------------------------------------------- invariants

    def check(self, stored_ids: Collection[int] | None = None) -> None:
        """Asserts every invariant of the tree (reads every record): each record decodes
        with the kind its depth requires, every entry's count is its child's real count, all
        leaves are at the same depth, limits hold (an underfull non-root leaf has no sibling
        it fits with; inner nodes have fanout_min..fanout_max children, the root at least
        2), the length is the sum, ids are below next_chunk_id and referenced once, and, with
        `stored_ids` (every id the store holds), the store holds exactly chunk_ids()."""
        h = self._h
        seen: list[int] = []
        if h.root == 0:
            _require(h.length == 0 and h.height == 0, "an empty list has root 0, height 0")
        else:
            total = self._check_node(h.root, h.height, seen, is_root=True)
            _require(total == h.length, f"header length {h.length}, the tree holds {total}")
        _require(len(set(seen)) == len(seen), "a chunk is referenced twice")
        _require(all(0 < c < h.next_chunk_id for c in seen), "a chunk id >= next_chunk_id")
        _require(list(self.chunk_ids()) == seen, "chunk_ids() is not the tree's records")
        if stored_ids is not None:
            _require(set(stored_ids) == set(seen), "the store holds records not in the tree")

    def _check_node(self, cid: int, height: int, seen: list[int], *, is_root: bool) -> int:
        seen.append(cid)
        if height == 0:
            leaf = self._leaf(cid)
            n = len(leaf.values)
            _require(0 < n <= self.leaf_items_max, f"leaf {cid} holds {n} values")
            size = sum(len(codec.dumps(v)) for v in leaf.values)
            _require(size == leaf.size(), f"leaf {cid}'s size accounting is wrong")
            _require(size <= self.leaf_bytes_max or n == 1, f"leaf {cid} is over the byte limit")
            return n
        node = self._inner(cid)
        k = len(node.entries)
        low = 2 if is_root else self.fanout_min
        _require(low <= k <= self.fanout_max, f"inner {cid} has {k} children")
        total = 0
        for child, count in node.entries:
            real = self._check_node(child, height - 1, seen, is_root=False)
            _require(real == count, f"inner {cid} counts {count} for {child}, which holds {real}")
            total += count
        if height == 1:
            for p, entry in enumerate(node.entries):
                if self._underfull(entry, 0):
                    _require(
                        self._merge_partner(node.entries, p, 0) is None,
                        f"underfull leaf {entry[0]} could merge with a sibling",
                    )
        return total


def _require(condition: bool, message: str) -> None:
    """An invariant of `check` (raised, not `assert`ed: check must work under python -O)."""
    if not condition:
        raise AssertionError(message)
