"""What each partial subscriber holds, and the filter of its events (docs/virtual-heap.md
sections 4.1-4.3).

A `HeldSet` maps each node the app holds whole to the index it is held since, and each dict it
holds per key to its keys (as ekeys, `keynorm.ekey`) and theirs: an event at or below a since
index is already in what the app was sent. `passes` decides, per subscriber and event, with a
few dict lookups; nothing is decoded unless the subscriber holds keys of a node the event
writes (then the event's ops, once, for their keys).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from superstatic_agent.config import HELD_ENTRY_BYTES
from superstatic_agent.storage import Event

from superstatic.protocol import keynorm, ops
from superstatic.protocol.errors import ProtocolError

# A partial subscriber whose events all fail its filter still gets an empty EVENTS frame (its
# applied index and log time move) once the cursor moved this many entries or this much log
# time past its last frame: the toolkit's leases are judged by log time, in steps of at most
# this, against lease lengths of seconds.
EVENTS_SKIP_ENTRIES_MAX = 4_096
EVENTS_SKIP_MS_MAX = 200
# Clients whose last transaction conflicted, remembered to send the "ok" that ends each run to
# every partial subscriber (objects/fairness.py needs runs to end); least recent forgotten.
CLIENT_OUTCOMES_MAX = 1_024


class HeldSet:
    __slots__ = (
        "_again_count",
        "_again_order",
        "_key_count",
        "keys",
        "keys_read_again",
        "read_again",
        "since",
    )

    def __init__(self) -> None:
        self.since: dict[str, int] = {}  # held whole: oid -> since
        # Held per key: oid -> ekey -> since (an empty map: only the header is known).
        self.keys: dict[str, dict[bytes, int]] = {}
        self._key_count = 0
        # A node (or key) read again while held keeps its earlier since (`add`), which alone
        # cannot tell whether the read came after a collection of its oid that the cursor has
        # not passed yet (the oid created again in between): the index of its latest read is
        # kept beside it, for `collected`. Only for entries read again at a later index.
        self.read_again: dict[str, int] = {}
        self.keys_read_again: dict[str, dict[bytes, int]] = {}
        self._again_count = 0
        # Each note (index, oid, ekey or None for a whole node), in the order noted: one matters
        # only until the stream's cursor passes its index (`passed`). Loads are read at
        # indexes that do not go down, so the oldest come first (a note out of order is let go
        # late, never early). Stale notes (forgotten or read again since) are skipped.
        self._again_order: deque[tuple[int, str, bytes | None]] = deque()

    def __len__(self) -> int:
        """Entries, as the limits count them: whole nodes, per-key nodes and their keys (a long
        key for its bytes, `_key_units`), and the read-again indexes (memory like an entry's)."""
        return len(self.since) + len(self.keys) + self._key_count + self._again_count

    def __contains__(self, oid: object) -> bool:
        """Whether the app has the node's head and contents (whole) or header (per key)."""
        return oid in self.since or oid in self.keys

    def adds(
        self, oids: tuple[str, ...], keys: tuple[tuple[str, tuple[tuple[bytes, Any], ...]], ...]
    ) -> tuple[int, int]:
        """(entries a LOAD or HOLD naming these may add, at most; entries it names that are
        held already). A node or key held already adds nothing (a re-read: the limits must not
        refuse a read the app holds the room for), nor does a per-key dict named whole (its
        header, or with `whole` its one entry in place of its keys'); a key of a dict held
        whole is covered by it."""
        adds = held = 0
        for oid in oids:
            if oid in self:
                held += 1
            else:
                adds += 1
        for oid, pairs in keys:
            if oid in self:
                held += 1
            else:
                adds += 1
            whole = oid in self.since
            node_keys = self.keys.get(oid)
            for ekey, _key in pairs:
                units = _key_units(ekey)
                if whole or (node_keys is not None and ekey in node_keys):
                    held += units
                else:
                    adds += units
        return adds, held

    def add(self, oid: str, since: int, restart: bool = False, again: bool = True) -> None:
        """Holds `oid` whole from `since` on (a per-key hold of it ends: it is all there).

        A node or key held already keeps its earlier since: the events after it that the
        stream has not sent yet still pass, so the app, which holds the node, sees them
        before the answer at `since` (raising it would let the app's applied index pass writes
        its copy never got). Sent before the answer, they are news to nothing else; the read's
        index is kept in `read_again` for `collected`, if `again`: False when the stream has
        passed the read's index already (every collection up to it was passed, so the index
        would never matter, and it would be an entry the read adds).
        `restart`: a start answer, after which the stream resumes past `since`."""
        read = since
        keys = self.keys.pop(oid, None)
        if keys is not None:
            self._key_count -= sum(map(_key_units, keys))
            self._forget_keys_read_again(oid)
            if keys and not restart:
                since = min(since, *keys.values())
        if restart:
            self.since[oid] = since
            self._forget_read_again(oid)
            return
        since = min(since, self.since.get(oid, since))
        self.since[oid] = since
        if since < read and again:
            self._note_read_again(self.read_again, oid, read, oid, None)

    def add_key(
        self, oid: str, ekey: bytes, since: int, restart: bool = False, again: bool = True
    ) -> None:
        """Holds one key (present or absent) of a dict; nothing if the dict is held whole.
        An earlier since stays unless `restart`, as in `add` (`again` too)."""
        if oid in self.since:
            return
        keys = self.keys.setdefault(oid, {})
        held = keys.get(ekey)
        if held is None:
            self._key_count += _key_units(ekey)
            keys[ekey] = since
        elif restart:
            keys[ekey] = since
            self._forget_key_read_again(oid, ekey)
        elif held < since and again:
            self._note_read_again(self.keys_read_again.setdefault(oid, {}), ekey, since, oid, ekey)

    def add_header(self, oid: str) -> None:
        """The app knows the dict's header and holds none of its keys yet."""
        if oid not in self.since:
            self.keys.setdefault(oid, {})

    def discard(self, oid: str) -> bool:
        """Forgets the node, whole or per key (a DROP, or its collection)."""
        keys = self.keys.pop(oid, None)
        if keys is not None:
            self._key_count -= sum(map(_key_units, keys))
            self._forget_keys_read_again(oid)
        self._forget_read_again(oid)
        return self.since.pop(oid, None) is not None or keys is not None

    def collected(self, oid: str, index: int) -> None:
        """The event at `index` collected `oid`: forgets what the app held of it from before
        that index. What it holds from the index on was read after the collection (the oid
        created again, then loaded) and stays, held from that read on (a read again while held
        kept the older since: `read_again` has it); the answer carries the events before it."""
        since = self.since.get(oid)
        if since is not None:
            if since < index:
                read = self._forget_read_again(oid)
                if read is not None and read >= index:
                    self.since[oid] = read
                else:
                    del self.since[oid]
            return
        keys = self.keys.get(oid)
        if keys is None:
            return
        for ekey in [ekey for ekey, key_since in keys.items() if key_since < index]:
            read = self._forget_key_read_again(oid, ekey)
            if read is not None and read >= index:
                keys[ekey] = read
            else:
                self.discard_key(oid, ekey)
        if not keys:
            del self.keys[oid]

    def discard_key(self, oid: str, ekey: bytes) -> bool:
        """Forgets one key; whether it was held."""
        keys = self.keys.get(oid)
        if keys is not None and keys.pop(ekey, None) is not None:
            self._key_count -= _key_units(ekey)
            self._forget_key_read_again(oid, ekey)
            return True
        return False

    def _note_read_again(
        self, reads: dict[Any, int], name: Any, index: int, oid: str, ekey: bytes | None
    ) -> None:
        """Remembers (in `read_again` or one dict's map of `keys_read_again`) that `name` was
        read again at `index` (the latest read counts)."""
        before = reads.get(name)
        if before is None:
            self._again_count += 1
            reads[name] = index
        elif before < index:
            reads[name] = index
        else:
            return
        self._again_order.append((index, oid, ekey))

    def passed(self, cursor: int) -> None:
        """The stream's cursor is at `cursor`: every collection before it was passed
        (`collected`), so a read-again index below it can no longer matter and is forgotten.
        Kept, each counted as a held entry for good (review31): an app that re-read what it
        holds while its stream lagged was refused LOADs within its limit, and the held sets
        stayed past their term of the memory bound."""
        order = self._again_order
        while order and order[0][0] < cursor:
            index, oid, ekey = order.popleft()
            if ekey is None:
                if self.read_again.get(oid) == index:
                    self._forget_read_again(oid)
            else:
                reads = self.keys_read_again.get(oid)
                if reads is not None and reads.get(ekey) == index:
                    self._forget_key_read_again(oid, ekey)

    def _forget_read_again(self, oid: str) -> int | None:
        read = self.read_again.pop(oid, None)
        if read is not None:
            self._again_count -= 1
        return read

    def _forget_key_read_again(self, oid: str, ekey: bytes) -> int | None:
        reads = self.keys_read_again.get(oid)
        if reads is None:
            return None
        read = reads.pop(ekey, None)
        if read is not None:
            self._again_count -= 1
            if not reads:
                del self.keys_read_again[oid]
        return read

    def _forget_keys_read_again(self, oid: str) -> None:
        reads = self.keys_read_again.pop(oid, None)
        if reads is not None:
            self._again_count -= len(reads)

    def passes(self, oid: str, index: int) -> bool:
        """Whether an event at `index` writing all of `oid` is news to the app."""
        since = self.since.get(oid)
        if since is not None:
            return since < index
        keys = self.keys.get(oid)
        return keys is not None and any(s < index for s in keys.values())

    def passes_key(self, oid: str, ekey: bytes | None, index: int) -> bool:
        """Whether an event at `index` writing key `ekey` of `oid` (None: all of it) is news."""
        since = self.since.get(oid)
        if since is not None:
            return since < index
        keys = self.keys.get(oid)
        if keys is None:
            return False
        if ekey is None:
            return any(s < index for s in keys.values())
        key_since = keys.get(ekey)
        return key_since is not None and key_since < index


def _key_units(ekey: bytes) -> int:
    """Entries a held key counts for: one, and one more per HELD_ENTRY_BYTES of its bytes (a
    key may be as long as a frame; counted as one entry, --subscriber-held-max of them would
    hold far more memory than the bound says)."""
    return 1 + len(ekey) // HELD_ENTRY_BYTES


class EventWrites:
    """What the filter needs of one event beyond the event: the nodes its ops write, those it
    creates, (an "ok" ending its client's conflict run) the stub a partial subscriber gets when
    it does not get the event whole, and, decoded on first need, the keys its ops write."""

    __slots__ = ("_body", "_keys", "created", "stub", "written")

    def __init__(
        self,
        written: tuple[str, ...],
        created: tuple[str, ...],
        stub: bytes | None = None,
        body: bytes | None = None,
    ) -> None:
        self.written = written
        self.created = created
        self.stub = stub
        self._body = body
        self._keys: tuple[tuple[str, bytes | None], ...] | None = None

    def key_writes(self) -> tuple[tuple[str, bytes | None], ...]:
        """(oid, ekey) of each set / del op; (oid, None) for every other op (it writes the
        whole node: a `new` or `clear` reaches every key)."""
        if self._keys is None:
            self._keys = () if self._body is None else _key_writes(self._body)
            self._body = None
        return self._keys


def _key_writes(body: bytes) -> tuple[tuple[str, bytes | None], ...]:
    out: list[tuple[str, bytes | None]] = []
    for op in ops.decode_body(body).ops:
        ekey: bytes | None = None
        if op[0] in ("set", "del"):
            try:
                ekey = keynorm.ekey(op[2])
            except ProtocolError:
                ekey = None  # applied, so storable; a whole-node write if ever not
        out.append((op[1], ekey))
    return tuple(out)


def writes_of(event: Event) -> EventWrites:
    """An event read back from the log: its writes from its body (our own log's bytes)."""
    body = event[4]
    if body is None:
        return EventWrites((), ())
    wire_ops = ops.decode_body(body).ops
    written = tuple(dict.fromkeys(op[1] for op in wire_ops))
    created = tuple(op[1] for op in wire_ops if op[0] == "new")
    return EventWrites(written, created, None, body)


def passes(event: Event, writes: EventWrites, held: HeldSet, client: str) -> bool:
    """Whether a partial subscriber gets the event whole (docs/virtual-heap.md section 4.2):
    its own, a "noop" (leader changes, CONF: the toolkit's Change.noops), a "conflict"
    (bodyless: the fairness tracker's runs), or one writing or collecting a node (or a key of
    a dict) it held before the event."""
    index, event_client, _seq, outcome = event[:4]
    if outcome == "noop" or outcome == "conflict" or (client and event_client == client):
        return True
    per_key = False
    for oid in writes.written:
        since = held.since.get(oid)
        if since is not None and since < index:
            return True
        per_key = per_key or oid in held.keys
    if per_key and any(held.passes_key(oid, ekey, index) for oid, ekey in writes.key_writes()):
        return True
    return any(held.passes(oid, index) for oid in event[5])


def normalized_keys(
    keys: tuple[tuple[str, tuple[Any, ...]], ...],
) -> tuple[tuple[str, tuple[tuple[bytes, Any], ...]], ...]:
    """A LOAD's / DROP's / HOLD's keys with their ekeys: ProtocolError naming the position of a
    key no replica can store (never the key itself)."""
    out = []
    for i, (oid, node_keys) in enumerate(keys):
        pairs = []
        for j, key in enumerate(node_keys):
            try:
                pairs.append((keynorm.ekey(key), key))
            except ProtocolError as exc:
                raise ProtocolError(f"keys[{i}] key #{j}: {exc}") from None
            except (TypeError, ValueError, OverflowError) as exc:
                raise ProtocolError(f"keys[{i}] key #{j}: {type(exc).__name__}") from None
        out.append((oid, tuple(pairs)))
    return tuple(out)
