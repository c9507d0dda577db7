"""The in-memory Raft log: a snapshot base (index, term) followed by contiguous entries.

It also tracks which suffix has not yet been handed to the shell for persistence
(`unstable_from`) and how far the shell confirmed persistence (`stable_index`), because the
leader may count its own log as a replica only for entries that are durable.
"""

from __future__ import annotations

from collections.abc import Sequence

from superstatic_agent.raft.types import Entry


class RaftLog:
    __slots__ = ("_entries", "base_index", "base_term", "commit", "stable_index", "unstable_from")

    def __init__(self, base_index: int, base_term: int, entries: Sequence[Entry]) -> None:
        assert base_index >= 0 and base_term >= 0
        assert (base_index == 0) == (base_term == 0)
        self.base_index = base_index
        self.base_term = base_term
        self._entries: list[Entry] = []
        previous_term = base_term
        for offset, entry in enumerate(entries):
            assert entry.index == base_index + 1 + offset, ("entries not contiguous", entry)
            assert entry.term >= previous_term, ("entry terms decrease", entry)
            previous_term = entry.term
            self._entries.append(entry)
        self.commit = base_index
        # Everything given at construction is already durable (it came from storage).
        self.stable_index = self.last_index
        self.unstable_from = self.last_index + 1

    # -- queries -------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index held in memory (entries below it only exist in the snapshot)."""
        return self.base_index + 1

    @property
    def last_index(self) -> int:
        return self.base_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.base_term

    def term(self, index: int) -> int | None:
        """Term at index; 0 for index 0; None if compacted away or beyond the end."""
        if index == self.base_index:
            return self.base_term
        if index < self.base_index or index > self.last_index:
            return None
        return self._entries[index - self.base_index - 1].term

    def entry(self, index: int) -> Entry:
        assert self.base_index < index <= self.last_index, (index, self.base_index)
        entry = self._entries[index - self.base_index - 1]
        assert entry.index == index
        return entry

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Thesis 3.6.1: a candidate's log is at least as up-to-date as ours."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def slice(self, lo: int, hi: int, entries_max: int, bytes_max: int) -> tuple[Entry, ...]:
        """Entries [lo, hi], at most entries_max of them and bytes_max data bytes, but at least
        one entry (an oversized entry must still move, or replication would stall forever)."""
        assert self.base_index < lo, (lo, self.base_index)
        hi = min(hi, self.last_index, lo + entries_max - 1)
        out: list[Entry] = []
        size_bytes = 0
        for index in range(lo, hi + 1):
            entry = self._entries[index - self.base_index - 1]
            size_bytes += len(entry.data)
            if out and size_bytes > bytes_max:
                break
            out.append(entry)
        return tuple(out)

    def exceeds(self, lo: int, hi: int, entries_max: int | None, bytes_max: int | None) -> bool:
        """True if entries [lo, hi] are more than entries_max entries or hold more than
        bytes_max bytes of data (a limit of None never counts). Scans at most entries_max + 1
        entries (or up to the bytes limit), so a far-behind follower costs a bounded scan."""
        assert self.base_index < lo, (lo, self.base_index)
        hi = min(hi, self.last_index)
        if hi < lo:
            return False
        if entries_max is not None and hi - lo + 1 > entries_max:
            return True
        if bytes_max is None:
            return False
        size_bytes = 0
        for entry in self._entries[lo - self.base_index - 1 : hi - self.base_index]:
            size_bytes += len(entry.data)
            if size_bytes > bytes_max:
                return True
        return False

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (fast backtracking, as etcd).

        Stops at the snapshot base: below it we know nothing, and the leader then sends a
        snapshot anyway.
        """
        index = min(index, self.last_index)
        while index > self.base_index:
            entry_term = self.term(index)
            assert entry_term is not None
            if entry_term <= term:
                break
            index -= 1
        return index

    def unstable_entries(self) -> tuple[Entry, ...]:
        if self.unstable_from > self.last_index:
            return ()
        lo = self.unstable_from - self.base_index - 1
        assert lo >= 0, (self.unstable_from, self.base_index)
        return tuple(self._entries[lo:])

    def committed_after(self, applied: int, count_max: int, bytes_max: int) -> tuple[Entry, ...]:
        """Committed entries after `applied`: at most count_max of them, and at most bytes_max
        bytes of entry data unless the first alone is larger (progress: it goes by itself)."""
        assert applied >= self.base_index, (applied, self.base_index)
        assert count_max >= 1 and bytes_max >= 1, (count_max, bytes_max)
        hi = min(self.commit, applied + count_max)
        if hi <= applied:
            return ()
        lo = applied - self.base_index
        taken = 1
        total_bytes = len(self._entries[lo].data)
        for entry in self._entries[lo + 1 : hi - self.base_index]:  # bounded by count_max
            total_bytes += len(entry.data)
            if total_bytes > bytes_max:
                break
            taken += 1
        committed = tuple(self._entries[lo : lo + taken])
        assert 1 <= len(committed) <= count_max, (len(committed), count_max)
        return committed

    # -- mutations -----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that extend the log exactly (the leader's own proposals)."""
        for entry in entries:
            assert entry.index == self.last_index + 1, (entry.index, self.last_index)
            assert entry.term >= self.last_term, (entry.term, self.last_term)
            self._entries.append(entry)

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        """Replace everything from entries[0].index on (a follower resolving a conflict)."""
        if not entries:
            return
        at = entries[0].index
        assert self.base_index < at <= self.last_index + 1, (at, self.base_index, self.last_index)
        # Committed entries are never replaced: that is the heart of Raft's safety.
        assert at > self.commit, ("truncating committed entries", at, self.commit)
        del self._entries[at - self.base_index - 1 :]
        self.unstable_from = min(self.unstable_from, at)
        self.stable_index = min(self.stable_index, at - 1)
        self.append(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[int, int] | None:
        """The follower side of APPEND. None if the log does not match at prev; else
        (last index known to match the leader, first index written or 0 if nothing was)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        written_from = 0
        for entry in entries:
            assert entry.index >= self.first_index
            if not self.match_term(entry.index, entry.term):
                written_from = entry.index
                break
        if written_from:
            assert written_from > self.commit, ("conflict with committed entry", written_from)
            self.truncate_and_append(entries[written_from - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new, written_from

    def commit_to(self, index: int) -> bool:
        if index <= self.commit:
            return False
        assert index <= self.last_index, ("commit beyond the log", index, self.last_index)
        self.commit = index
        return True

    def stable_to(self, index: int, term: int) -> None:
        """The shell made entries up to (index, term) durable."""
        if self.term(index) == term and index > self.stable_index:
            self.stable_index = index

    def handed_out(self) -> None:
        """Everything unstable was given to the shell in a Ready."""
        self.unstable_from = self.last_index + 1

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to index (they live in the snapshot now)."""
        assert index <= self.commit, ("compacting uncommitted entries", index, self.commit)
        if index <= self.base_index:
            return
        assert self.term(index) == term, ("snapshot term mismatch", index, term, self.term(index))
        del self._entries[: index - self.base_index]
        self.base_index = index
        self.base_term = term
        assert self.unstable_from > index, "compacting entries not yet persisted"

    def restore(self, index: int, term: int) -> None:
        """Install a snapshot: the log becomes empty after (index, term)."""
        assert index > self.commit, (index, self.commit)
        self._entries.clear()
        self.base_index = index
        self.base_term = term
        self.commit = index
        self.stable_index = index
        self.unstable_from = index + 1

    def entries_between(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries [lo, hi] (both held in memory)."""
        assert self.base_index < lo and hi <= self.last_index
        return tuple(self._entries[lo - self.base_index - 1 : hi - self.base_index])
