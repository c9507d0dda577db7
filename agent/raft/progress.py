"""Leader-side view of one follower: how far it matches, what to send next, and flow control.

Probe: the leader does not know where the follower's log matches; it sends one APPEND and
waits (paused) for the answer or the next heartbeat answer. Replicate: the follower is known
to match up to `match`; APPENDs are pipelined optimistically (next advances on send), bounded
by an inflight window of unacknowledged messages. Snapshot: a SNAPSHOT is out; nothing else
is sent until the follower answers or the retry timer fires.
"""

from __future__ import annotations

from collections import deque

from superstatic_agent.raft.types import ProgressState


class Inflights:
    """The last index of each unacknowledged APPEND, oldest first, at most size_max of them."""

    __slots__ = ("_indexes", "size_max")

    def __init__(self, size_max: int) -> None:
        assert size_max >= 1
        self.size_max = size_max
        self._indexes: deque[int] = deque()

    def full(self) -> bool:
        return len(self._indexes) >= self.size_max

    def add(self, index: int) -> None:
        assert not self.full(), "inflight window overflow"
        assert not self._indexes or index >= self._indexes[-1], (index, self._indexes[-1])
        self._indexes.append(index)

    def free_le(self, index: int) -> None:
        """Acknowledgement up to index frees every message that ended at or below it."""
        while self._indexes and self._indexes[0] <= index:
            self._indexes.popleft()

    def free_first(self) -> None:
        if self._indexes:
            self._indexes.popleft()

    def reset(self) -> None:
        self._indexes.clear()

    def __len__(self) -> int:
        return len(self._indexes)


class Progress:
    __slots__ = (
        "departing",
        "departing_ticks",
        "heartbeat_match",
        "inflights",
        "match",
        "next",
        "probe_sent",
        "recent_active",
        "snapshot_index",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, inflight_max: int) -> None:
        assert next_index >= 1
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.snapshot_index = 0
        self.snapshot_ticks = 0
        self.inflights = Inflights(inflight_max)
        # Removed from the configuration by the CONF entry at this index (0: a member). The
        # leader keeps replicating to it until it holds that entry, so it learns of its removal.
        self.departing = 0
        self.departing_ticks = 0
        # `match` when the follower's previous heartbeat answer came: whether its APPEND
        # answers moved it since (RaftNode._handle_heartbeat_response).
        self.heartbeat_match = 0

    def _check(self) -> None:
        assert self.next > self.match, (self.next, self.match)

    def become_probe(self) -> None:
        # After a snapshot, the follower is known to hold at least the snapshot.
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.snapshot_index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.snapshot_index = 0
        self.inflights.reset()
        self._check()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.snapshot_index = 0
        self.inflights.reset()
        self._check()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot_index = snapshot_index
        self.snapshot_ticks = 0
        self.probe_sent = False
        self.inflights.reset()

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to index; True if it taught us something new."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        self._check()
        return updated

    def sent_entries(self, last: int) -> None:
        """An APPEND ending at `last` (prev index if empty) went out."""
        if self.state is ProgressState.REPLICATE:
            self.next = max(self.next, last + 1)
            self.inflights.add(last)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
        else:
            raise AssertionError("sending entries in snapshot state")
        self._check()

    def lost_beyond(self, last_index: int) -> bool:
        """The follower says it holds nothing past last_index, below what it acknowledged: its
        storage was lost. Replicate again from its end; False if nothing changes."""
        if last_index >= self.match:
            return False
        # Where its log ends is all it tells: since it lost its storage it may have taken a
        # deposed leader's entries, so nothing of its log is verified. Match 0, not its last
        # index: our heartbeats' `commit = min(match, commit)` must not commit those on it
        # (review 30). The probe still starts at its end and walks back as for any mismatch.
        self.match = 0
        self.become_probe()
        self.next = last_index + 1
        self._check()
        return True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the APPEND whose prev index was `rejected`; False if it is stale.
        Otherwise the follower is (now) in probe state, next at the hinted index."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # an answer to an old message we already got past
            self.become_probe()
        elif self.next - 1 != rejected:
            return False  # not the answer to our current probe
        elif rejected <= self.match:
            # Our probe at the follower's match, rejected: it no longer holds what it
            # acknowledged (lost storage), or this is an old rejection from before it did. The
            # same probe sent again would be rejected again, at network speed, forever. Stay
            # paused: the next heartbeat's answer unpauses us and, if its log really ends
            # below `match`, says where (lost_beyond), so we probe from there.
            return False
        # The hint is where the follower's log may match ours; a probe there verifies it.
        # (In replicate state this matters under reordering: the follower usually has all
        # but the message that overtook its predecessor, so we restart close to the end.)
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        self._check()
        return True
