"""The values that cross the boundary of the pure Raft core (docs/architecture.md section 1).

Everything here is immutable (except `Ready`, which is a one-shot bag handed to the shell) and
free of I/O, so the core stays deterministic: same inputs, same outputs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cbor2

from superstatic.protocol.errors import ProtocolError

# A node id or peer endpoint longer than this is garbage: refuse it rather than carry it around.
NODE_ID_BYTES_MAX = 256
ADDRESS_BYTES_MAX = 1024
CONF_CHANGE_BYTES_MAX = 4096


class MsgType(enum.IntEnum):
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APPEND = 5
    APPEND_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9  # install snapshot; the shell ships the data beside the message
    TIMEOUT_NOW = 10  # leadership transfer
    PROPOSE = 11  # a follower forwarding proposals to the leader (entries carry data)
    READ_INDEX = 12
    READ_INDEX_RESP = 13


class EntryKind(enum.IntEnum):
    NORMAL = 0  # data: opaque bytes from the agent (architecture section 3)
    NOOP = 1  # appended by every new leader
    CONF = 2  # data: ConfChange.encode()


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class ProgressState(enum.Enum):
    """Leader-side replication state of one follower (etcd-io/raft's tracker states)."""

    PROBE = "probe"  # one APPEND per heartbeat until the follower's match is found
    REPLICATE = "replicate"  # optimistic pipelining, bounded by the inflight window
    SNAPSHOT = "snapshot"  # a SNAPSHOT is in flight; wait for its APPEND_RESP


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind
    data: bytes

    def __post_init__(self) -> None:
        # index/term 0 only on entries a follower forwards in PROPOSE (the leader numbers them).
        assert self.index >= 0 and self.term >= 0, self
        assert (self.index == 0) == (self.term == 0), self
        assert isinstance(self.data, bytes)


@dataclass(frozen=True, slots=True)
class HardState:
    term: int
    vote: str | None
    commit: int

    def __post_init__(self) -> None:
        assert self.term >= 0 and self.commit >= 0, self


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[str, ...]  # sorted
    learners: tuple[str, ...]  # sorted
    addresses: tuple[tuple[str, str], ...]  # (node id, peer endpoint), sorted; opaque to the core

    def __post_init__(self) -> None:
        assert list(self.voters) == sorted(set(self.voters)), self.voters
        assert list(self.learners) == sorted(set(self.learners)), self.learners
        assert not set(self.voters) & set(self.learners), self
        assert list(self.addresses) == sorted(self.addresses), self.addresses

    @staticmethod
    def make(
        voters: Iterable[str],
        learners: Iterable[str] = (),
        addresses: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> ConfState:
        """Build a ConfState from any iterables, sorting as the invariants demand."""
        return ConfState(
            voters=tuple(sorted(set(voters))),
            learners=tuple(sorted(set(learners))),
            addresses=tuple(sorted(dict(addresses).items())),
        )

    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.voters + self.learners))

    def address_of(self, node: str) -> str:
        for member, address in self.addresses:
            if member == node:
                return address
        return ""


CONF_OPS = ("add_learner", "promote", "add_voter", "remove")


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: str  # "add_learner" | "promote" | "add_voter" | "remove"
    node: str
    address: str  # peer endpoint ("" for remove/promote)

    def __post_init__(self) -> None:
        assert self.op in CONF_OPS, self.op
        assert 1 <= len(self.node.encode()) <= NODE_ID_BYTES_MAX, self.node
        assert len(self.address.encode()) <= ADDRESS_BYTES_MAX, self.address

    def encode(self) -> bytes:
        return cbor2.dumps([self.op, self.node, self.address])

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        """Decode a CONF entry payload; raises ProtocolError (never AssertionError) on garbage."""
        if len(data) > CONF_CHANGE_BYTES_MAX:
            raise ProtocolError(
                f"conf change is {len(data)} bytes, above CONF_CHANGE_BYTES_MAX="
                f"{CONF_CHANGE_BYTES_MAX}"
            )
        try:
            value = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types on malformed input
            raise ProtocolError(f"conf change is not CBOR: {exc}") from exc
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(part, str) for part in value)
            and value[0] in CONF_OPS
            and 1 <= len(value[1].encode()) <= NODE_ID_BYTES_MAX
            and len(value[2].encode()) <= ADDRESS_BYTES_MAX
        ):
            raise ProtocolError(f"conf change has the wrong shape: {value!r}")
        return ConfChange(op=value[0], node=value[1], address=value[2])


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState

    def __post_init__(self) -> None:
        assert self.index >= 0 and self.term >= 0, self
        assert (self.index == 0) == (self.term == 0), self


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    frm: str
    to: str
    term: int
    log_term: int = 0  # APPEND: prev log term
    index: int = 0  # APPEND: prev log index
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # fast backtracking: follower's last index / conflict hint
    context: bytes = b""  # READ_INDEX / HEARTBEAT read contexts
    snapshot: SnapshotMeta | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    context: bytes
    index: int  # a ReadIndex answer: wait for applied >= index


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None  # persist if not None (changed since last Ready)
    entries: tuple[Entry, ...]  # persist: truncate stored log at entries[0].index, then append
    snapshot: SnapshotMeta | None  # follower: install the staged snapshot with this meta
    messages: tuple[Message, ...]  # send only AFTER hard_state and entries are durable
    committed: tuple[Entry, ...]  # apply in order (after the same persist)
    read_states: tuple[ReadState, ...]
    role: Role
    leader: str | None
    term: int


@dataclass(frozen=True, slots=True)
class RaftConfig:
    ticks_election: int = 16  # randomized per term in [ticks_election, 2*ticks_election)
    ticks_heartbeat: int = 4
    append_entries_max: int = 512  # entries per APPEND message
    append_bytes_max: int = 4 << 20  # bytes of entry data per APPEND message
    inflight_max: int = 64  # unacked APPENDs per follower (pipelining window)
    pre_vote: bool = True
    check_quorum: bool = True
    proposals_pending_max: int = 65536  # leader-side bound; beyond it propose() raises Dropped
    # Committed entries handed to the shell per Ready; more wait for the next Ready, so one
    # Ready never holds an apply batch that stalls the shell's loop (and its heartbeats).
    committed_per_ready_max: int = 4096
    # ... and at most this many bytes of entry data (always at least one entry): an entry count
    # alone let a catching-up follower apply 512 entries of 1,000 objects each in one Ready,
    # a loop turn of 30-68 s and ~190 MB of LMDB dirty pages kept until the store closes.
    committed_bytes_per_ready_max: int = 64 << 20
    # A follower whose log ends more than this many entries, or this many bytes of entry data,
    # below the leader's applied index gets a SNAPSHOT of the leader's state instead of the log,
    # even if the log still holds what it lacks (docs/data-model-v2.md section 10: installing
    # records is far cheaper than applying the ops that made them). None: only below the
    # compacted base, as in plain Raft.
    snapshot_lag_entries_max: int | None = None
    snapshot_lag_bytes_max: int | None = None

    def __post_init__(self) -> None:
        assert self.ticks_heartbeat >= 1, self
        assert self.ticks_election > self.ticks_heartbeat, self
        assert self.append_entries_max >= 1 and self.append_bytes_max >= 1, self
        assert self.inflight_max >= 1 and self.proposals_pending_max >= 1, self
        assert self.committed_per_ready_max >= 1, self
        assert self.committed_bytes_per_ready_max >= 1, self
        assert self.snapshot_lag_entries_max is None or self.snapshot_lag_entries_max >= 1, self
        assert self.snapshot_lag_bytes_max is None or self.snapshot_lag_bytes_max >= 1, self


class Dropped(Exception):
    """A proposal (or conf change, read, transfer) the core did not take; the caller may retry.

    `leader` is the leader the core knows of (None if none), so the shell can redirect clients.
    """

    def __init__(self, reason: str, leader: str | None = None) -> None:
        super().__init__(f"dropped: {reason}" + (f" (leader {leader})" if leader else ""))
        self.reason = reason
        self.leader = leader
