"""The local replica: every node of the cluster's object graph, kept current from the log.

Implements `ReplicaSink` (docs/architecture.md section 6). The connection's I/O thread calls
`load_snapshot` and `apply_events`; each log entry is applied atomically with respect to
transaction bodies, which run holding the same lock, so a body always sees a prefix of the log.
Ops are applied with `superstatic.protocol.ops.apply_op`, the function the agent's state machine
uses, so both reach the same state by construction. Refs in values are resolved to the proxy or
shared instance of their target; nodes created together (a snapshot, or the "new" ops of one
entry) are allocated in a first pass so they can reference each other, cycles included.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from superstatic.objects import values as _values
from superstatic.objects.factory import make_node
from superstatic.objects.fairness import ContentionTracker
from superstatic.objects.node import Node, node_of
from superstatic.objects.proxy_base import NodeProxy
from superstatic.protocol import codec as _codec
from superstatic.protocol import ops as _ops
from superstatic.protocol.errors import Error, ProtocolError

if TYPE_CHECKING:
    from superstatic.objects.session import Session
    from superstatic.objects.txn import Txn

ROOTS_OID = "@roots"
# How long the I/O thread holds entries back while transaction bodies run (so a body normally
# reads one prefix of the log and never has to re-run). Past it the entries apply anyway and
# bodies whose reads they changed re-run (txn.Doomed): a body that waits for another thread's
# write, or an asyncio task awaiting inside `transaction()`, never blocks the log for longer.
PIN_MS_MAX = 100
# What entries applied while bodies run touched (Txn.stable checks a body's reads against it) is
# kept for the bodies running, bounded: past this many items (an entry, a node of it, a key of
# it count one each) the oldest entries are forgotten, and a body whose read base predates what
# is kept re-runs (it cannot tell whether they touched what it read). Pins are short (PIN_MS_MAX
# holds entries back), so only a body suspended for long (an asyncio task awaiting in a block)
# ever meets the bound.
TOUCHED_ITEMS_MAX = 50_000
# Keys of one node one entry touched kept one by one; past it the node counts as touched whole
# (a body that read any key of it re-runs), so one entry adding a million set members costs one
# item, not a million.
TOUCHED_NODE_KEYS_MAX = 256
# describe() walks the graph to name a node in an error message; it gives up past this many
# nodes and names the node by its id instead.
DESCRIBE_NODES_MAX = 100_000

# Decoded scalars that are already what this process holds (enum forms and zone stand-ins are
# not: values.live_of_wire turns them into members and ZoneInfo zones).
_AS_IS = _codec.SCALAR_TYPES - {
    _codec.EnumInt,
    _codec.EnumStr,
    _codec.EnumMember,
    datetime.datetime,
    datetime.time,
}

_intern = sys.intern

Event = tuple[Any, ...]  # [index, client, seq, outcome, body, collected(, log_time_ms)]

log = logging.getLogger("superstatic.objects.replica")


@dataclass(frozen=True, slots=True)
class Change:
    """What one batch of the stream changed, for listeners (superstatic.toolkit): the nodes
    written or dropped (`touched`; None after a snapshot: anything may have changed), the index
    and log time reached, and how many NOOP/CONF entries (a new leader, a membership change)
    passed."""

    index: int
    log_time_ms: int
    touched: frozenset[str] | None
    noops: int


ChangeListener = Callable[[Change], None]


class Replica:
    """The app's copy of the object graph (a prefix of the log)."""

    def __init__(self) -> None:
        # Held while one entry (or a snapshot) is applied, and by readers that need a state
        # with no entry half-applied (plain(), describe(), a body revalidating its reads).
        # Re-entrant: plain() inside such a section takes it again.
        self.lock = threading.RLock()
        # Bumped (under `lock`) before each entry or snapshot that changes nodes: a body that
        # sees it unchanged since its reads began read one consistent state (txn.Txn.stable).
        self.gen = 0
        # Bodies running (pins, by serial) and whether the I/O thread is waiting to apply: see
        # pin(). Pins up to `_overridden` already held entries back for PIN_MS_MAX once: later
        # entries do not wait for them again (an asyncio task suspended in a block for minutes
        # must not slow every entry by PIN_MS_MAX).
        self._gate = threading.Condition(threading.Lock())
        # Running bodies' pins: serial -> the applied index the body started from.
        self._pins: dict[int, int] = {}
        self._pin_serial = itertools.count(1)
        self._overridden = 0
        self._apply_waiting = 0
        self.applied_index = 0
        # What each entry applied while a body was pinned touched, oldest first:
        # (index, {oid: _Touch}); entries at or below `_touched_floor` are not kept (a body
        # whose base is below it cannot be validated and re-runs). `_trim_below`: entries at
        # or below it are no longer needed by any running body (set on unpin).
        self._touched: deque[tuple[int, dict[str, _Touch]]] = deque()
        self._touched_items = 0
        self._touched_floor = 0
        self._trim_below = 0
        # The log time of the last applied entry (leader-stamped, the same on every replica):
        # the toolkit's leases and expiries are judged by it, never by this host's clock.
        self.log_time_ms = 0
        # Called (on the connection's I/O thread, outside the lock) after each batch applied:
        # they must only note the change and wake someone, never block.
        self.listeners: list[ChangeListener] = []
        self.nodes: dict[str, Node] = {}
        self.session: Session | None = None
        # Who keeps losing optimistic races, from the stream's outcomes (superstatic/fairness.py).
        self.contention = ContentionTracker()
        # Private nodes of a transaction being committed: when the entry creating them applies,
        # the replica adopts these very objects, so references the body handed out stay valid.
        self._adopt: dict[str, Node] = {}
        # Set when the replica is abandoned (its session closed): why its objects are unusable.
        self.detached: str | None = None

    # ------------------------------------------------------------------ ReplicaSink

    def load_snapshot(self, index: int, nodes: Iterable[tuple[str, int, str, Any]]) -> None:
        """Replaces everything with the snapshot at `index`: (oid, version, kind, contents)
        as `client.stream.StreamFeeder` assembled and checked them from the per-key runs.
        Nodes that survive keep their identity (same proxy / instance), refilled in place."""
        records = nodes if isinstance(nodes, list) else list(nodes)
        self._hold_bodies()
        try:
            self._load(index, records)
        finally:
            self._release_bodies()
        self._notify(Change(index, self.log_time_ms, None, 0))

    def note_log_time(self, log_time_ms: int) -> None:
        """The log time at a snapshot about to be loaded (the stream says it first)."""
        with self.lock:
            self.log_time_ms = max(self.log_time_ms, log_time_ms)

    def _load(self, index: int, records: list[tuple[str, int, str, Any]]) -> None:
        with self.lock:
            self.gen += 1
            fresh: dict[str, Node] = {}
            for oid, _version, kind, contents in records:
                class_name = contents[0] if kind == "obj" else None
                node = self._claim(oid, kind, class_name, fresh_from=self.nodes)
                fresh[oid] = node
            for oid, node in self.nodes.items():
                if oid not in fresh:
                    node.dead = True
            self.nodes = fresh
            for oid, _version, kind, contents in records:
                self._fill(fresh[oid], kind, contents, {})
            self.applied_index = index
            self._touched_reset(index)  # bodies that read the replaced state re-run

    def apply_events(self, events: Sequence[Event]) -> None:
        if not events or events[-1][0] <= self.applied_index:
            return
        touched: set[str] | None = set() if self.listeners else None
        noops = 0
        self._hold_bodies()
        try:
            for event in events:
                index, client, _seq, outcome, body, collected = event[:6]
                with self.lock:
                    if index <= self.applied_index:
                        continue  # already covered by a snapshot or an earlier delivery
                    self.contention.observe(client, outcome)
                    if (outcome == "ok" and body) or collected:
                        self.gen += 1
                    record: dict[str, _Touch] | None = {} if self._pins else None
                    if outcome == "ok" and body:
                        wire_ops = _ops.decode_body(body).ops
                        self._apply_ops(index, wire_ops, touched, record)
                    for oid in collected:
                        self._drop(oid)
                        if record is not None:
                            record[oid] = _Touch(True, None)
                    if record:
                        self._touched_add(index, record)
                    elif record is None and self._touched:
                        self._touched_reset(index)  # no body runs: nobody needs them
                    if len(event) > 6 and event[6] > self.log_time_ms:
                        self.log_time_ms = event[6]
                    self.applied_index = index
                if outcome == "noop":
                    noops += 1
                if touched is not None and collected:
                    touched.update(collected)
        finally:
            self._release_bodies()
        if self.listeners:
            frozen = frozenset(touched) if touched is not None else None
            self._notify(Change(self.applied_index, self.log_time_ms, frozen, noops))

    def _notify(self, change: Change) -> None:
        for listener in list(self.listeners):
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the stream
                log.exception("superstatic: a replica change listener failed")

    # ------------------------------------------------------------------ lifecycle

    def detach(self, reason: str) -> None:
        """The replica will never be updated again (its session closed): every object of it
        raises `Error(reason)` when used, rather than serve a state that silently goes stale."""
        with self.lock:
            self.detached = reason
            nodes = list(self.nodes.values()) + list(self._adopt.values())
            self.nodes = {}
            self._adopt.clear()
            for node in nodes:
                node.dead = True
                _detach_ref(node.ref, reason)
                node.live = _Detached(reason)  # what the Python-level read paths consult

    def reset_after_fork(self, pin: int | None) -> None:
        """In a forked child (only the forking thread survives): fresh synchronization state.
        `pin`: the pin of the forking thread's transaction body, if it is inside one."""
        self._gate = threading.Condition(threading.Lock())
        self._pins = {} if pin is None else {pin: self.applied_index}
        self._apply_waiting = 0
        self.contention = ContentionTracker()

    # ------------------------------------------------------------------ bodies vs applying

    def pin(self) -> tuple[int, int, int]:
        """A transaction body starts: entries are held back while it runs (bounded by
        PIN_MS_MAX), and what entries applied meanwhile touched is kept for it. Returns the
        pin's serial (for unpin), the generation and the applied index its reads start from.
        If the I/O thread is waiting to apply, the body first lets it (new bodies would
        otherwise starve it)."""
        with self._gate:
            if self._apply_waiting:
                self._gate.wait_for(lambda: not self._apply_waiting, PIN_MS_MAX / 1000)
            serial = next(self._pin_serial)
            # Registered before the index is read below: an entry applied in between sees the
            # pin and records what it touched (apply_events decides under the lock).
            self._pins[serial] = self.applied_index
        with self.lock:  # no entry half-applied: the generation matches the contents
            return serial, self.gen, self.applied_index

    def unpin(self, serial: int) -> None:
        with self._gate:
            self._pins.pop(serial, None)  # (absent in a forked child: the pin was the parent's)
            # Entries up to the oldest running body's start are no longer needed (none at all
            # when no body runs); the apply path drops them (one int write: no lock needed).
            self._trim_below = min(self._pins.values(), default=self.applied_index)
            if not self._blocking():
                self._gate.notify_all()

    def reads_unchanged(
        self, base: int, reads: dict[str, int], read_keys: dict[str, dict[Any, None]]
    ) -> bool:
        """Whether no entry applied after `base` touched what a body read (nodes with
        READ_SHAPE / READ_CONTENT flags, keys one by one). Call under `lock`."""
        if base >= self.applied_index:
            return True
        if base < self._touched_floor:
            return False  # forgotten (or a snapshot since): cannot tell, so moved
        for index, touched in reversed(self._touched):
            if index <= base:
                break
            for oid, touch in touched.items():
                flags = reads.get(oid)
                if flags is None:
                    continue
                if flags & _ops.READ_CONTENT or (touch.shape and flags & _ops.READ_SHAPE):
                    return False
                keys = read_keys.get(oid)
                if keys:
                    if touch.keys is None:
                        return False
                    if len(touch.keys) <= len(keys):
                        if any(k in keys for k in touch.keys):
                            return False
                    elif any(k in touch.keys for k in keys):
                        return False
        return True

    def _touched_reset(self, index: int) -> None:
        """Forgets every touched record: bodies whose base is below `index` re-run (a snapshot
        replaced the state under them). Call under `lock`."""
        self._touched.clear()
        self._touched_items = 0
        self._touched_floor = index

    def _touched_add(self, index: int, touched: dict[str, _Touch]) -> None:
        log_ = self._touched
        trim = self._trim_below
        while log_ and log_[0][0] <= trim:
            self._touched_floor = max(self._touched_floor, log_[0][0])
            self._touched_items -= _items(log_.popleft()[1])
        log_.append((index, touched))
        self._touched_items += _items(touched)
        while self._touched_items > TOUCHED_ITEMS_MAX and len(log_) > 1:
            self._touched_floor = log_[0][0]
            self._touched_items -= _items(log_.popleft()[1])

    def _blocking(self) -> bool:
        overridden = self._overridden
        return any(serial > overridden for serial in self._pins)

    def _hold_bodies(self) -> None:
        with self._gate:
            self._apply_waiting += 1
            if self._blocking() and not self._gate.wait_for(
                lambda: not self._blocking(), PIN_MS_MAX / 1000
            ):
                self._overridden = max(self._pins)  # they had their window

    def _release_bodies(self) -> None:
        with self._gate:
            self._apply_waiting -= 1
            self._gate.notify_all()

    # ------------------------------------------------------------------ library side

    def roots_node(self) -> Node | None:
        return self.nodes.get(ROOTS_OID)

    def root_ref(self, name: str) -> Any:
        roots = self.nodes.get(ROOTS_OID)
        return None if roots is None else roots.live.get(name)

    def expect_new(self, nodes: Iterable[Node]) -> None:
        with self.lock:
            for node in nodes:
                self._adopt[node.oid] = node

    def forget_new(self, oids: Iterable[str]) -> None:
        with self.lock:
            for oid in oids:
                self._adopt.pop(oid, None)

    def new_node(self, oid: str, kind: str, class_name: str | None, owner: Txn | None) -> Node:
        """A new node of this replica (empty; private to `owner` until its entry applies)."""
        return make_node(self, oid, kind, class_name, owner)

    def describe(self, node: Node) -> str:
        """A readable path to `node` from a root, for error messages."""
        if node.txn is not None:
            return f"a new {node.kind} created in this transaction"
        with self.lock:
            roots = self.nodes.get(ROOTS_OID)
            if roots is None or node.dead:
                return f"object {node.oid}"
            paths: dict[str, str] = {}
            queue: deque[Node] = deque()
            for name, ref in list(roots.live.items()):
                target = node_of(ref)
                if target is not None and target.oid not in paths:
                    paths[target.oid] = f"root {name!r}"
                    queue.append(target)
            while queue and len(paths) < DESCRIBE_NODES_MAX:
                current = queue.popleft()
                if current is node:
                    return paths[current.oid]
                for step, value in _children(current):
                    target = node_of(value)
                    if target is not None and target.oid not in paths:
                        paths[target.oid] = paths[current.oid] + step
                        queue.append(target)
            return paths.get(node.oid, f"object {node.oid}")

    # ------------------------------------------------------------------ internals

    def _claim(
        self, oid: str, kind: str, class_name: str | None, fresh_from: dict[str, Node]
    ) -> Node:
        """The node object for `oid`: an adopted private node, a surviving one (emptied), or new."""
        adopted = self._adopt.pop(oid, None)
        if adopted is not None and adopted.kind == kind and adopted.class_name == class_name:
            adopted.txn = None
            adopted.live.clear()
            return adopted
        old = fresh_from.get(oid)
        if old is not None and old.kind == kind and old.class_name == class_name and not old.dead:
            old.live.clear()
            return old
        if old is not None:
            old.dead = True
        return make_node(self, oid, kind, class_name, None)

    def _fill(self, node: Node, kind: str, contents: Any, created: dict[str, Node]) -> None:
        live = node.live
        if kind == "dict":
            for key, value in contents:
                live[self._resolve_key(key, created)] = self._resolve(value, created)
        elif kind == "list":
            live.extend(self._resolve(v, created) for v in contents)
        elif kind == "set":
            live.update(self._resolve_key(v, created) for v in contents)
        else:
            for name, value in contents[1]:
                live[_intern(name)] = self._resolve(value, created)

    def _resolve_key(self, key: Any, created: dict[str, Node]) -> Any:
        """A dict key or set member: str keys are interned, so a lookup by a literal in code
        (`d["name"]`, itself interned) matches by identity instead of comparing characters
        (about 2x faster), and the same key in many nodes (1M dicts with "name") is one str."""
        if type(key) is str:
            return _intern(key)
        return self._resolve(key, created, True)

    def _resolve(self, value: Any, created: dict[str, Node], key: bool = False) -> Any:
        """`key`: a dict key or set member (or part of one), which must stay unequal to every
        key the agent holds apart (values.live_key_of_wire)."""
        tp = type(value)
        if tp in _AS_IS:
            return value
        if tp in _codec.SCALAR_TYPES:
            return _values.live_key_of_wire(value) if key else _values.live_of_wire(value)
        if tp is _codec.Ref:
            node = created.get(value.oid) or self.nodes.get(value.oid)
            if node is None:
                raise ProtocolError(
                    f"the log references object {value.oid}, unknown to this replica"
                )
            return node.ref
        if tp is tuple:
            return tuple(self._resolve(x, created, key) for x in value)
        if tp is frozenset:
            return frozenset(self._resolve(x, created, key) for x in value)
        return value

    def _resolve_list(self, values: Sequence[Any], created: dict[str, Node]) -> list[Any]:
        return [self._resolve(v, created) for v in values]

    def _apply_ops(
        self,
        index: int,
        wire_ops: Sequence[Sequence[Any]],
        touched_oids: set[str] | None = None,
        record: dict[str, _Touch] | None = None,
    ) -> None:
        """Applies one entry's ops. `record`: filled with what they touched (for the bodies
        running: Txn.stable), when given."""
        created: dict[str, Node] = {}
        for op in wire_ops:
            if op[0] == "new":
                _tag, oid, kind, contents = op
                class_name = contents[0] if kind == "obj" else None
                created[oid] = self._claim(oid, kind, class_name, fresh_from=self.nodes)
        for oid, node in created.items():
            self.nodes[oid] = node
        for op in wire_ops:
            tag = op[0]
            if tag == "new":
                node = created[op[1]]
                self._fill(node, op[2], op[3], created)
                if record is not None:
                    record[node.oid] = _Touch(True, None)  # (a body read it as absent)
                if touched_oids is not None:
                    touched_oids.add(node.oid)
                continue
            node = self.nodes[op[1]]
            if tag == "set":
                live_op: list[Any] = [
                    tag,
                    op[1],
                    self._resolve_key(op[2], created),
                    self._resolve(op[3], created),
                ]
            elif tag == "del":
                live_op = [tag, op[1], self._resolve_key(op[2], created)]
            elif tag in ("add", "discard"):
                live_op = [tag, op[1], [self._resolve_key(v, created) for v in op[2]]]
            elif tag == "splice":
                live_op = [tag, op[1], op[2], op[3], self._resolve_list(op[4], created)]
            elif tag in ("extend", "add", "discard"):
                live_op = [tag, op[1], self._resolve_list(op[2], created)]
            else:
                live_op = list(op)
            if record is not None:
                _note_touch(record, node, live_op)
            _ops.apply_op(node.kind, node.live, live_op)
            if touched_oids is not None:
                touched_oids.add(node.oid)

    def _drop(self, oid: str) -> None:
        node = self.nodes.pop(oid, None)
        if node is not None:
            node.dead = True
        adopted = self._adopt.pop(oid, None)
        if adopted is not None:
            adopted.dead = True
            adopted.txn = None


class _Touch:
    """What one entry did to one node, for the bodies running (Replica.reads_unchanged):
    changed its membership or length (`shape`), and which keys it wrote (`keys`; None: the
    node as a whole, as `clear`, a list op, a new or collected node do). A node in an entry's
    record at all had its contents changed."""

    __slots__ = ("keys", "shape")

    def __init__(self, shape: bool, keys: set[Any] | None) -> None:
        self.shape = shape
        self.keys = keys


def _items(touched: dict[str, _Touch]) -> int:
    """How much of TOUCHED_ITEMS_MAX one entry's record takes."""
    return 1 + sum(1 + (len(t.keys) if t.keys else 0) for t in touched.values())


def _note_touch(record: dict[str, _Touch], node: Node, op: list[Any]) -> None:
    """Adds what `op` (live values, not yet applied) will change in `node` to `record`. Ops
    that change nothing (a del of a missing key, an add of a present member, a clear of an
    empty node) touch nothing: no body can tell they ran."""
    tag = op[0]
    live = node.live
    if tag in ("set", "del"):
        key = op[2]
        present = key in live
        if tag == "del" and not present:
            return
        _touch_keys(record, node.oid, (key,), tag == "del" or not present)
    elif tag in ("add", "discard"):
        adding = tag == "add"
        changed = [v for v in op[2] if (v in live) != adding]
        if changed:
            _touch_keys(record, node.oid, changed, True)
    elif tag == "clear":
        if live:
            record[node.oid] = _Touch(True, None)
    else:  # splice, extend: lists are read as a whole (or their length)
        shape = bool(op[2]) if tag == "extend" else op[3] - op[2] != len(op[4])
        found = record.get(node.oid)
        if found is None:
            record[node.oid] = _Touch(shape, None)
        else:
            found.shape = found.shape or shape
            found.keys = None


def _touch_keys(record: dict[str, _Touch], oid: str, keys: Iterable[Any], shape: bool) -> None:
    found = record.get(oid)
    if found is None:
        found = record[oid] = _Touch(shape, set())
    elif shape:
        found.shape = True
    if found.keys is None:
        return
    found.keys.update(keys)
    if len(found.keys) > TOUCHED_NODE_KEYS_MAX:
        found.keys = None  # the node as a whole: bounded, and covers every key


def _detach_ref(ref: Any, reason: str) -> None:
    if isinstance(ref, NodeProxy):
        detached = _Detached(reason)
        ref.__wrapped__ = detached
        for name in type(ref)._READ_METHODS:  # replaces bound methods of the old container
            ref.__self_setattr__(name, detached._refuse)
    elif ref is not None:
        object.__setattr__(ref, "__class__", _detached_class(type(ref), reason))


_DETACHED_CLASSES: dict[type, type] = {}


def _detached_class(cls: type, reason: str) -> type:
    """A subclass of a shared class whose instances refuse every use (layout-compatible, so an
    instance can be switched to it in place)."""
    found = _DETACHED_CLASSES.get(cls)
    if found is not None:
        return found

    def refuse_attr(self: Any, name: str) -> Any:
        if name[:2] == "__":
            return object.__getattribute__(self, name)
        raise Error(f"{cls.__qualname__} object: {reason}")

    def refuse_write(self: Any, name: str, *value: Any) -> None:
        raise Error(f"{cls.__qualname__} object: {reason}")

    def describe(self: Any) -> str:
        return f"<{cls.__qualname__} of a closed superstatic connection>"

    found = type(
        cls.__name__,
        (cls,),
        {
            "__slots__": (),
            "__getattribute__": refuse_attr,
            "__setattr__": refuse_write,
            "__delattr__": refuse_write,
            "__repr__": describe,
        },
    )
    _DETACHED_CLASSES[cls] = found
    return found


class _Detached:
    """What a container proxy of a closed connection wraps: every use raises, saying why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        object.__setattr__(self, "reason", reason)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise Error(f"shared container: {object.__getattribute__(self, 'reason')}")

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)  # wrapt and Python probing special names
        raise Error(f"shared container: {object.__getattribute__(self, 'reason')}")

    def __repr__(self) -> str:
        return "<shared container of a closed superstatic connection>"

    __getitem__ = __setitem__ = __delitem__ = __len__ = __iter__ = __contains__ = _refuse
    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _refuse
    __reversed__ = __or__ = __and__ = __sub__ = __xor__ = __add__ = __mul__ = _refuse


def _children(node: Node) -> Iterable[tuple[str, Any]]:
    live = node.live
    if node.kind == "dict":
        for key, value in list(live.items()):
            yield f"[{key!r}]", value
    elif node.kind == "obj":
        for name, value in list(live.items()):
            yield f".{name}", value
    elif node.kind == "list":
        for i, value in enumerate(list(live)):
            yield f"[{i}]", value
    else:
        for value in list(live):
            yield " (a set element)", value
