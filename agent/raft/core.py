"""RaftNode: the pure Raft state machine (Ongaro's thesis, shaped like etcd-io/raft's RawNode).

Inputs: tick(), step(message), propose(), propose_conf_change(), read_index(),
transfer_leadership(), compact(). Output: ready() -> Ready, acknowledged by advance(). No I/O,
no clock, no threads; randomness only from the injected rng, so a run is a function of its
inputs. See docs/raft.md for the decisions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from superstatic_agent.raft.log import RaftLog
from superstatic_agent.raft.membership import (
    apply_change,
    committed_index,
    refusal,
    vote_result,
)
from superstatic_agent.raft.progress import Progress
from superstatic_agent.raft.types import (
    ConfChange,
    ConfState,
    Dropped,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    ProgressState,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
)

# ReadIndex requests waiting at the leader (for its first commit, or for a heartbeat quorum).
READS_PENDING_MAX = 4096
# A read context is the shell's name for one read; the core adds READ_NONCE_BYTES to it when it
# forwards the read, so the whole still fits the peer codec's CONTEXT_BYTES_MAX (256).
READ_CONTEXT_BYTES_MAX = 248
READ_NONCE_BYTES = 8
# A SNAPSHOT nobody answered is sent again after this many election timeouts. Long, because the
# shell may still be streaming a large snapshot; the shell can drop a duplicate it is already
# shipping to the same peer.
SNAPSHOT_RETRY_ELECTIONS = 8
# A member being removed keeps getting the log until it holds the entry that removes it, so it
# learns it is out and stops campaigning (thesis 4.2.3); a member that stays unreachable is
# given up on after this many election timeouts (it is then simply never answered).
REMOVED_NOTIFY_ELECTIONS = 8
# VOTE context of an election started by TIMEOUT_NOW: voters skip the leader-lease check.
TRANSFER_CONTEXT = b"transfer"
# APPEND context of a commit-only APPEND (no entries, sent because the commit advanced) to a
# follower in replicate state that was sent the leader's whole log: the leader wants no
# APPEND_RESP if it is accepted, as it would repeat the answer to the last APPEND with entries.
# A rejection, or a prev index below the follower's commit, is still answered; an unmarked
# APPEND (an older leader's) always is. docs/raft.md, "Commit-only APPENDs go unanswered", says
# why this is safe and live.
UNACKED_CONTEXT = b"no-ack"


@dataclass(slots=True)
class _Read:
    """A ReadIndex request at the leader (thesis 6.4), answered once a majority of voters
    acknowledged a heartbeat round numbered `round` or later. Rounds are numbered per
    leadership and only rounds broadcast after the read was registered are >= `round`, so an
    acknowledgement that was already in flight (or one for an earlier read that happened to use
    the same context) can never confirm it."""

    index: int
    requester: str
    context: bytes
    round: int


class RaftNode:
    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState,
        conf: ConfState,
        snapshot: SnapshotMeta | None,
        entries: Sequence[Entry],
        applied: int,
        storage_lost: bool = False,
    ) -> None:
        assert node_id, "empty node id"
        self._id = node_id
        self._config = config
        self._rng = rng
        base_index, base_term = (snapshot.index, snapshot.term) if snapshot else (0, 0)
        # Storage may still hold entries the snapshot covers (it trims lazily): skip them.
        kept = [entry for entry in entries if entry.index > base_index]
        if kept and kept[0].index != base_index + 1:
            raise AssertionError(f"log gap after snapshot {base_index}: first entry {kept[0]}")
        self._log = RaftLog(base_index, base_term, kept)
        assert self._log.last_term <= hard_state.term, ("entry from the future", hard_state)
        # Membership: the configuration at the log's base, then one per CONF entry after it.
        self._conf_base = snapshot.conf if snapshot else conf
        self._conf_history: list[tuple[int, ConfState]] = []
        self._rebuild_conf()
        self._term = hard_state.term
        self._vote = hard_state.vote
        # storage_lost: the shell found this node's storage empty although the cluster already
        # exists (issue 9, bug 6c): it may have voted in a term it no longer knows. Until a
        # leader has given it log state it grants no vote and never campaigns. The core cannot
        # tell lost storage from a new member's, so the shell decides (docs/raft.md, "Empty
        # storage": why, and what remains).
        if storage_lost:
            assert hard_state == HardState(0, None, 0) and snapshot is None and not kept, (
                "storage_lost with storage that holds something",
                hard_state,
            )
        self._votes_withheld = storage_lost
        commit = max(hard_state.commit, base_index)
        assert commit <= self._log.last_index, ("commit beyond the stored log", commit)
        self._log.commit_to(commit)
        self._applied = max(applied, base_index)
        assert self._applied <= self._log.commit, ("applied beyond commit", applied, commit)
        self._applying = self._applied  # last index handed out in Ready.committed
        self._snapshot_meta = snapshot  # what compact() last gave: sent to lagging followers
        self._pending_snapshot: SnapshotMeta | None = None  # installed, for the next Ready
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._ready_outstanding = False
        self._prev_hard = self._hard_state()
        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self._prev_soft: tuple[Role, str | None] = (self._role, self._leader)
        # Set by _reset(); declared here so every attribute exists from the start.
        self._votes: dict[str, bool] = {}
        self._prs: dict[str, Progress] = {}
        self._reads: dict[bytes, _Read] = {}
        self._reads_waiting: list[tuple[str, bytes]] = []
        # Leader: heartbeat rounds of this leadership (carried in HEARTBEAT/HEARTBEAT_RESP
        # `index`), the newest round each voter acknowledged, and whether a round is owed to
        # reads registered since the last one.
        self._heartbeat_round = 0
        self._round_acked: dict[str, int] = {}
        self._pending_read_bcast = False
        # Prefixed to every read this incarnation forwards; an answer without it belongs to a
        # read of an earlier incarnation (whose shell context may have been reused) and is
        # dropped, never delivered as a ReadState.
        self._read_nonce = rng.getrandbits(8 * READ_NONCE_BYTES).to_bytes(READ_NONCE_BYTES, "big")
        self._transferee: str | None = None
        self._pending_conf_index = 0
        self._pending_bcast = False
        self._pending_commit_bcast = False
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._election_timeout = config.ticks_election
        self._reset()

    # -- read-only view ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> str | None:
        return self._vote

    @property
    def commit(self) -> int:
        return self._log.commit

    @property
    def applied(self) -> int:
        """Last index the shell confirmed applying (advance())."""
        return self._applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def last_term(self) -> int:
        return self._log.last_term

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def conf(self) -> ConfState:
        return self._conf_history[-1][1] if self._conf_history else self._conf_base

    @property
    def base_conf(self) -> ConfState:
        """The configuration at first_index - 1: what to pass as `conf` on restart."""
        return self._conf_base

    @property
    def votes_withheld(self) -> bool:
        """Started with storage_lost, and no leader has given it log state yet."""
        return self._votes_withheld

    @property
    def transferee(self) -> str | None:
        return self._transferee

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot_meta

    def term_at(self, index: int) -> int | None:
        """Term of the entry at index (None if compacted or beyond the log)."""
        return self._log.term(index)

    def entries_between(self, lo: int, hi: int) -> tuple[Entry, ...]:
        return self._log.entries_between(lo, hi)

    def progress(self) -> dict[str, tuple[int, int, str]]:
        """Leader only: node -> (match, next, state). Empty on followers."""
        return {node: (pr.match, pr.next, pr.state.value) for node, pr in sorted(self._prs.items())}

    def _promotable(self) -> bool:
        return self._id in self.conf.voters and not self._votes_withheld

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._log.commit)

    # -- inputs --------------------------------------------------------------------------------

    def tick(self) -> None:
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()
        self._check_invariants()

    def propose(self, datas: Sequence[bytes]) -> None:
        if not datas:
            return
        limit = self._config.proposals_pending_max
        if self._role is Role.LEADER:
            if self._transferee is not None:
                raise Dropped("leadership transfer in progress", self._id)
            pending = self._log.last_index - self._log.commit
            if pending + len(datas) > limit:
                raise Dropped(
                    f"proposals_pending_max={limit} reached ({pending} uncommitted)", self._id
                )
            self._append([(EntryKind.NORMAL, data) for data in datas])
            self._check_invariants()
            return
        if self._leader is None:
            raise Dropped("no leader", None)
        if len(datas) > limit:
            raise Dropped(f"proposals_pending_max={limit}: {len(datas)} proposals", self._leader)
        # Forwarded in messages no bigger than an APPEND, so the leader's transport limits hold.
        chunk_max = self._config.append_entries_max
        for start in range(0, len(datas), chunk_max):
            chunk = tuple(
                Entry(0, 0, EntryKind.NORMAL, data) for data in datas[start : start + chunk_max]
            )
            self._send(Message(MsgType.PROPOSE, self._id, self._leader, self._term, entries=chunk))

    def propose_conf_change(self, change: ConfChange) -> None:
        if self._role is not Role.LEADER:
            raise Dropped("not leader", self._leader)
        if self._transferee is not None:
            raise Dropped("leadership transfer in progress", self._id)
        if self._pending_conf_index > self._log.commit:
            # Also covers "no entry of this term committed yet" (the NOOP sets the index), the
            # thesis' fix for single-server changes across leader changes.
            raise Dropped("a configuration change is still uncommitted", self._id)
        reason = refusal(self.conf, change)
        if reason is not None:
            raise Dropped(reason, self._id)
        self._append([(EntryKind.CONF, change.encode())])
        self._pending_conf_index = self._log.last_index
        self._check_invariants()

    def read_index(self, context: bytes) -> None:
        if not context:
            raise Dropped("empty read context", self._leader)
        if len(context) > READ_CONTEXT_BYTES_MAX:
            raise Dropped(
                f"READ_CONTEXT_BYTES_MAX={READ_CONTEXT_BYTES_MAX}: context of {len(context)} bytes",
                self._leader,
            )
        if self._role is Role.LEADER:
            if not self._handle_read_index(self._id, context):
                raise Dropped(
                    f"READS_PENDING_MAX={READS_PENDING_MAX} reached or context in use", self._id
                )
            return
        if self._leader is None:
            raise Dropped("no leader", None)
        wrapped = self._read_nonce + context
        self._send(Message(MsgType.READ_INDEX, self._id, self._leader, self._term, context=wrapped))

    def transfer_leadership(self, to: str) -> None:
        if self._role is not Role.LEADER:
            raise Dropped("not leader", self._leader)
        if to == self._id:
            return
        if to not in self.conf.voters:
            raise Dropped(f"{to} is not a voter", self._id)
        if self._transferee == to:
            return
        self._transferee = to
        # The transfer is aborted if it has not happened within an election timeout.
        self._election_elapsed = 0
        pr = self._prs[to]
        if pr.match == self._log.last_index:
            self._send_timeout_now(to)
        else:
            self._send_append(to, send_empty=True)

    def compact(self, snapshot: SnapshotMeta) -> None:
        assert snapshot.index <= self._applied, ("compacting beyond applied", snapshot.index)
        if snapshot.index <= self._log.base_index:
            return
        self._log.compact(snapshot.index, snapshot.term)
        base_conf = self._conf_base
        kept: list[tuple[int, ConfState]] = []
        for index, conf in self._conf_history:
            if index <= snapshot.index:
                base_conf = conf
            else:
                kept.append((index, conf))
        self._conf_base = base_conf
        self._conf_history = kept
        self._snapshot_meta = snapshot
        self._check_invariants()

    # -- Ready / advance -----------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._read_states
            or self._pending_snapshot is not None
            or self._pending_bcast
            or self._pending_commit_bcast
            or self._pending_read_bcast
            or self._log.unstable_from <= self._log.last_index
            or self._log.commit > self._applying
            or self._hard_state() != self._prev_hard
            or (self._role, self._leader) != self._prev_soft
        )

    def ready(self) -> Ready:
        assert not self._ready_outstanding, "ready() called again before advance()"
        if self._role is Role.LEADER:
            self._flush_broadcasts()
        hard = self._hard_state()
        committed = self._log.committed_after(
            self._applying,
            self._config.committed_per_ready_max,
            self._config.committed_bytes_per_ready_max,
        )
        ready = Ready(
            hard_state=hard if hard != self._prev_hard else None,
            entries=self._log.unstable_entries(),
            snapshot=self._pending_snapshot,
            messages=tuple(self._msgs),
            committed=committed,
            read_states=tuple(self._read_states),
            role=self._role,
            leader=self._leader,
            term=self._term,
        )
        self._msgs.clear()
        self._read_states.clear()
        self._pending_snapshot = None
        self._log.handed_out()
        self._prev_hard = hard
        self._prev_soft = (self._role, self._leader)
        if committed:
            self._applying = committed[-1].index
        self._ready_outstanding = True
        return ready

    def advance(self, ready: Ready) -> None:
        assert self._ready_outstanding, "advance() without ready()"
        self._ready_outstanding = False
        if ready.snapshot is not None:
            self._applied = max(self._applied, ready.snapshot.index)
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.committed:
            self._applied = max(self._applied, ready.committed[-1].index)
        assert self._applied <= self._log.commit
        if self._role is Role.LEADER:
            # Our own log now counts as a replica up to what is durable.
            self._maybe_commit()
        self._check_invariants()

    # -- step ----------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.to != self._id or m.frm == self._id:
            return  # misaddressed: not ours to judge
        if self._role is Role.LEADER and m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            self._maybe_tell_removed(m)
        if m.term > self._term:
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
                forced = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self._config.check_quorum
                    and self._leader is not None
                    and self._election_elapsed < self._config.ticks_election
                )
                if in_lease and not forced:
                    # Leader stickiness: we heard from a live leader recently, so a node that
                    # wants an election is the one that is cut off. Do not even bump our term.
                    return
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes terms; a granted one is for our future term
            else:
                leader = (
                    m.frm
                    if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT)
                    else None
                )
                self._become_follower(m.term, leader)
        elif m.term < self._term:
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT) and (
                self._config.check_quorum or self._config.pre_vote
            ):
                # A stale leader (e.g. after a partition healed) may never hear our higher
                # term otherwise, because with PreVote/CheckQuorum we never vote it down.
                self._send(Message(MsgType.APPEND_RESP, self._id, m.frm, self._term))
            elif m.type is MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, self._id, m.frm, self._term, reject=True))
            return
        if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            self._handle_vote_request(m)
        elif self._role is Role.LEADER:
            self._step_leader(m)
        elif self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)
        self._check_invariants()

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self._vote == m.frm
            or (self._vote is None and self._leader is None)
            or (m.type is MsgType.PRE_VOTE and m.term > self._term)
        )
        if self._votes_withheld:
            can_vote = False  # we may have voted in this term before our storage was lost
        response = MsgType.PRE_VOTE_RESP if m.type is MsgType.PRE_VOTE else MsgType.VOTE_RESP
        if can_vote and self._log.is_up_to_date(m.index, m.log_term):
            # Answer in the candidate's term so a pre-candidate can count it for its next term.
            self._send(Message(response, self._id, m.frm, m.term))
            if m.type is MsgType.VOTE:
                assert m.term == self._term
                self._election_elapsed = 0
                self._vote = m.frm
        else:
            self._send(Message(response, self._id, m.frm, self._term, reject=True))

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MsgType.APPEND:
            self._election_elapsed = 0
            self._leader = m.frm
            self._handle_append(m)
        elif t is MsgType.HEARTBEAT:
            self._election_elapsed = 0
            self._leader = m.frm
            self._handle_heartbeat(m)
        elif t is MsgType.SNAPSHOT:
            self._election_elapsed = 0
            self._leader = m.frm
            self._handle_snapshot(m)
        elif t is MsgType.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre=False, transfer=True)
        elif t is MsgType.READ_INDEX_RESP and m.context[:READ_NONCE_BYTES] == self._read_nonce:
            # Without our nonce it answers a read an earlier incarnation of this node forwarded:
            # the shell may have reused that context for a newer read, which it must not answer.
            self._read_states.append(ReadState(m.context[READ_NONCE_BYTES:], m.index))
        # PROPOSE / READ_INDEX reaching a follower: the sender's view of the leader is stale;
        # dropping is safe (the client retries), forwarding could loop.

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            # Someone won this term: follow it.
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        expected = MsgType.PRE_VOTE_RESP if self._role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if t is not expected:
            return
        if m.frm in self.conf.voters:
            self._votes.setdefault(m.frm, not m.reject)
        result = vote_result(self.conf.voters, self._votes)
        if result is True:
            if self._role is Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
        elif result is False:
            self._become_follower(self._term, None)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        assert t not in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT), (
            "two leaders in one term",
            m,
        )
        if t is MsgType.PROPOSE:
            self._handle_forwarded_proposal(m)
            return
        if t is MsgType.READ_INDEX:
            self._handle_read_index(m.frm, m.context)
            return
        pr = self._prs.get(m.frm)
        if pr is None:
            return  # not (or no longer) a member
        pr.recent_active = True
        if t is MsgType.APPEND_RESP:
            self._handle_append_response(m, pr)
        elif t is MsgType.HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, pr)

    # -- follower handlers ---------------------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        previous_index = m.index
        for offset, entry in enumerate(m.entries):
            assert entry.index == previous_index + 1 + offset, ("APPEND not contiguous", m)
            assert entry.term <= m.term, ("entry from a future term", m)
        if previous_index < self._log.commit:
            # Everything up to our commit already matches; tell the leader where we are.
            self._send(
                Message(MsgType.APPEND_RESP, self._id, m.frm, self._term, index=self._log.commit)
            )
            return
        result = self._log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if result is None:
            hint = self._log.find_conflict_by_term(min(m.index, self._log.last_index), m.log_term)
            hint_term = self._log.term(hint)
            assert hint_term is not None
            self._send(
                Message(
                    MsgType.APPEND_RESP,
                    self._id,
                    m.frm,
                    self._term,
                    index=m.index,
                    reject=True,
                    reject_hint=hint,
                    log_term=hint_term,
                )
            )
            return
        last_new, written_from = result
        self._votes_withheld = False  # a leader's log state: we follow the cluster again
        if written_from:
            # Configurations of replaced entries are gone; appended CONF entries take effect.
            while self._conf_history and self._conf_history[-1][0] >= written_from:
                self._conf_history.pop()
            for entry in self._log.entries_between(written_from, self._log.last_index):
                if entry.kind is EntryKind.CONF:
                    self._record_conf(entry)
        if m.context == UNACKED_CONTEXT and not m.entries:
            return  # accepted: the answer would repeat our last one (UNACKED_CONTEXT)
        self._send(Message(MsgType.APPEND_RESP, self._id, m.frm, self._term, index=last_new))

    def _handle_heartbeat(self, m: Message) -> None:
        # The leader sends min(our match, its commit): within our log, unless our log was lost
        # (issue 9, bug 6b: an emptied data directory). Then the leader's claim is about
        # entries we no longer hold, and those we hold now may not be its own: take nothing
        # from it but the term and leader (step() took those), and still answer.
        lost = m.commit > self._log.last_index
        if not lost:
            self._log.commit_to(m.commit)
        # Echo the round: the leader counts it for the reads registered before that round. A
        # rejection tells it where our log really ends, so it replicates again from there.
        self._send(
            Message(
                MsgType.HEARTBEAT_RESP,
                self._id,
                m.frm,
                self._term,
                index=m.index,
                reject=lost,
                reject_hint=self._log.last_index if lost else 0,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        assert meta is not None and meta.index >= 1, ("SNAPSHOT without meta", m)
        self._votes_withheld = False  # a leader's log state: we follow the cluster again
        if meta.index <= self._log.commit:
            pass  # stale: we already have it all; the shell drops the staged data
        elif self._log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: just commit up to it.
            self._log.commit_to(meta.index)
        else:
            self._log.restore(meta.index, meta.term)
            self._conf_base = meta.conf
            self._conf_history = []
            self._snapshot_meta = meta
            self._pending_snapshot = meta
            self._applying = meta.index
        self._send(
            Message(MsgType.APPEND_RESP, self._id, m.frm, self._term, index=self._log.commit)
        )

    # -- leader handlers -----------------------------------------------------------------------

    def _handle_forwarded_proposal(self, m: Message) -> None:
        if self._transferee is not None:
            return
        datas = [entry.data for entry in m.entries if entry.kind is EntryKind.NORMAL]
        pending = self._log.last_index - self._log.commit
        if not datas or pending + len(datas) > self._config.proposals_pending_max:
            return  # dropped: the proposer learns by never seeing it applied, and retries
        self._append([(EntryKind.NORMAL, data) for data in datas])

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe = self._log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                self._send_append(m.frm, send_empty=True)
            return
        updated = pr.maybe_update(m.index)
        if pr.departing and pr.match >= pr.departing:
            del self._prs[m.frm]  # it holds its removal: it knows it is out
            return
        if pr.state is ProgressState.SNAPSHOT:
            # Installed (or it already had everything): replicate from its match onwards.
            if pr.match + 1 >= self._log.first_index:
                pr.become_probe()
                pr.become_replicate()
                updated = True
        elif pr.state is ProgressState.PROBE:
            if updated:
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if not updated:
            return
        self._maybe_commit()
        if self._role is not Role.LEADER:
            return  # our own removal committed and we stepped down
        # Fill the pipeline: keep sending while the window has room and entries remain.
        for _ in range(self._config.inflight_max):
            if not self._send_append(m.frm, send_empty=False):
                break
        if m.frm == self._transferee and pr.match == self._log.last_index:
            self._send_timeout_now(m.frm)

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            # It lost entries it had acknowledged (an emptied data directory): its match is
            # lower, which only ever delays a future commit, never undoes one.
            pr.lost_beyond(m.reject_hint)
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            # An answer came back, so the link works: make room for one more message, in
            # case acknowledgements were lost and the window would otherwise never drain.
            pr.inflights.free_first()
        last = self._log.last_index
        if pr.state is not ProgressState.SNAPSHOT and pr.match < last:
            acks_flow = (
                pr.state is ProgressState.REPLICATE
                and pr.next > last
                and pr.match > pr.heartbeat_match
            )
            # Rule "acks that flow need no heartbeat APPEND" (docs/raft.md): everything was
            # sent and its answers moved `match` since the last heartbeat answer, so the
            # answers to what is in flight are coming; an empty APPEND would only be answered
            # with one of them again. If they stop (lost), `match` stays put until the next
            # heartbeat answer, which sends it.
            if not acks_flow:
                self._send_append(m.frm, send_empty=True)
        pr.heartbeat_match = pr.match
        if m.frm in self.conf.voters:
            acked = m.index  # the heartbeat round this reply answers
            if self._round_acked.get(m.frm, 0) < acked <= self._heartbeat_round:
                self._round_acked[m.frm] = acked
                self._confirm_reads()
            # A round above ours was never sent by this leadership: garbage, ignored.

    # -- ReadIndex -----------------------------------------------------------------------------

    def _reads_pending(self) -> int:
        return len(self._reads) + len(self._reads_waiting)

    def _handle_read_index(self, requester: str, context: bytes) -> bool:
        """Leader: start answering a read; False if refused (limit or duplicate context)."""
        if not context or context in self._reads or self._reads_pending() >= READS_PENDING_MAX:
            return False
        if self._log.term(self._log.commit) != self._term:
            # Our commit index may lag the previous leader's until our NOOP commits.
            self._reads_waiting.append((requester, context))
            return True
        if self.conf.voters == (self._id,):
            self._answer_read(requester, context, self._log.commit)
            return True
        # Only rounds broadcast from now on count; the next ready() sends one (several reads
        # registered in between share it).
        self._reads[context] = _Read(
            self._log.commit, requester, context, self._heartbeat_round + 1
        )
        self._pending_read_bcast = True
        return True

    def _confirm_reads(self) -> None:
        """Answer, in order, every read whose round a majority of voters acknowledged."""
        voters = self.conf.voters
        acked = {voter: self._round_acked.get(voter, 0) for voter in voters}
        if self._id in voters:
            acked[self._id] = self._heartbeat_round  # we trivially confirm our own rounds
        confirmed_round = committed_index(voters, acked)
        while self._reads:
            context, read = next(iter(self._reads.items()))
            if read.round > confirmed_round:
                break  # later reads have later (or equal) rounds: FIFO
            del self._reads[context]
            self._answer_read(read.requester, read.context, read.index)

    def _answer_read(self, requester: str, context: bytes, index: int) -> None:
        if requester == self._id:
            self._read_states.append(ReadState(context, index))
        else:
            self._send(
                Message(
                    MsgType.READ_INDEX_RESP,
                    self._id,
                    requester,
                    self._term,
                    index=index,
                    context=context,
                )
            )

    # -- leader machinery ----------------------------------------------------------------------

    def _append(self, items: Sequence[tuple[EntryKind, bytes]]) -> None:
        assert self._role is Role.LEADER
        index = self._log.last_index
        entries = []
        for kind, data in items:
            index += 1
            entries.append(Entry(index, self._term, kind, data))
        self._log.append(entries)
        if any(entry.kind is EntryKind.CONF for entry in entries):
            for entry in entries:
                if entry.kind is EntryKind.CONF:
                    self._record_conf(entry)
            self._on_conf_changed()
        # Batched: the APPENDs go out at the next ready(), carrying every proposal made since.
        self._pending_bcast = True

    def _maybe_commit(self) -> bool:
        assert self._role is Role.LEADER
        matches = {node: pr.match for node, pr in self._prs.items()}
        matches[self._id] = self._log.stable_index
        candidate = committed_index(self.conf.voters, matches)
        # Only entries of the current term are committed by counting (thesis 3.6.2).
        if candidate <= self._log.commit or self._log.term(candidate) != self._term:
            return False
        first_in_term = self._log.term(self._log.commit) != self._term
        self._log.commit_to(candidate)
        if first_in_term:
            waiting, self._reads_waiting = self._reads_waiting, []
            for requester, context in waiting:
                self._handle_read_index(requester, context)
        if self._id not in self.conf.voters and self._conf_committed():
            # Our own removal is committed: tell the followers, then step down.
            self._bcast_append()
            self._become_follower(self._term, None)
        else:
            self._pending_commit_bcast = True
        return True

    def _conf_committed(self) -> bool:
        last_conf_index = self._conf_history[-1][0] if self._conf_history else 0
        return last_conf_index <= self._log.commit

    def _send_append(self, to: str, *, send_empty: bool, commit_only: bool = False) -> bool:
        """An APPEND to `to` from its next index (entries if it lacks any, else empty if
        send_empty); commit_only: sent to tell the commit index (UNACKED_CONTEXT)."""
        pr = self._prs[to]
        if pr.is_paused():
            return False
        previous_index = pr.next - 1
        previous_term = self._log.term(previous_index)
        if previous_term is None:
            self._send_snapshot(to, pr, self._snapshot_meta)
            return True
        if pr.state is ProgressState.PROBE and self._far_behind(previous_index):
            self._send_snapshot(to, pr, self._applied_meta())
            return True
        entries: tuple[Entry, ...] = ()
        if pr.next <= self._log.last_index:
            entries = self._log.slice(
                pr.next,
                self._log.last_index,
                self._config.append_entries_max,
                self._config.append_bytes_max,
            )
        if not entries and not send_empty:
            return False
        # A commit-only APPEND to a follower in replicate state without entries (so it was sent
        # our whole log): its answer would be index = our last index, what the answer to the
        # last APPEND with entries already says (or said: match). Empty APPENDs take no inflight
        # slot, so nothing waits for it.
        unacked = commit_only and not entries and pr.state is ProgressState.REPLICATE
        self._send(
            Message(
                MsgType.APPEND,
                self._id,
                to,
                self._term,
                log_term=previous_term,
                index=previous_index,
                entries=entries,
                commit=self._log.commit,
                context=UNACKED_CONTEXT if unacked else b"",
            )
        )
        if entries:
            pr.sent_entries(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _far_behind(self, previous_index: int) -> bool:
        """A follower known to hold the log up to previous_index lacks more applied entries
        than the snapshot_lag limits allow. Only asked in probe state (the leader just learned
        where the follower's log ends): a follower in replicate state that falls behind under
        load keeps the log, rather than pausing for a snapshot of everything."""
        config = self._config
        if config.snapshot_lag_entries_max is None and config.snapshot_lag_bytes_max is None:
            return False
        if previous_index >= self._applied:
            return False
        return self._log.exceeds(
            previous_index + 1,
            self._applied,
            config.snapshot_lag_entries_max,
            config.snapshot_lag_bytes_max,
        )

    def _applied_meta(self) -> SnapshotMeta:
        """The meta of the state machine at our applied index (the shell ships its own, at
        least as new): its term, and the configuration in force there."""
        index = self._applied
        term = self._log.term(index)
        assert term is not None and index >= self._log.base_index, (index, self._log.base_index)
        conf = self._conf_base
        for conf_index, changed in self._conf_history:
            if conf_index > index:
                break
            conf = changed
        return SnapshotMeta(index, term, conf)

    def _send_snapshot(self, to: str, pr: Progress, meta: SnapshotMeta | None) -> None:
        assert meta is not None and meta.index >= self._log.base_index, (
            "compacted log without a snapshot meta",
            meta,
        )
        self._send(Message(MsgType.SNAPSHOT, self._id, to, self._term, snapshot=meta))
        pr.become_snapshot(meta.index)

    def _send_timeout_now(self, to: str) -> None:
        self._send(Message(MsgType.TIMEOUT_NOW, self._id, to, self._term))

    def _flush_broadcasts(self) -> None:
        """Send what proposals, commits and reads since the last Ready call for, batched."""
        if self._pending_read_bcast:
            self._bcast_heartbeat()
        if self._pending_bcast:
            self._pending_bcast = False
            for node in self._prs:
                # Pipelining: as many APPENDs as the window allows, not one per Ready.
                for _ in range(self._config.inflight_max):
                    if not self._send_append(node, send_empty=False):
                        break
        if self._pending_commit_bcast:
            self._pending_commit_bcast = False
            commit = self._log.commit
            told = {m.to for m in self._msgs if m.type is MsgType.APPEND and m.commit == commit}
            for node in self._prs:
                if node not in told:
                    self._send_append(node, send_empty=True, commit_only=True)

    def _bcast_append(self) -> None:
        for node in self._prs:
            self._send_append(node, send_empty=True)

    def _bcast_heartbeat(self) -> None:
        """One heartbeat round: a new round number, to every follower (reads wait for it)."""
        self._heartbeat_round += 1
        self._pending_read_bcast = False
        for node, pr in self._prs.items():
            commit = min(pr.match, self._log.commit)
            self._send(
                Message(
                    MsgType.HEARTBEAT,
                    self._id,
                    node,
                    self._term,
                    commit=commit,
                    index=self._heartbeat_round,
                )
            )

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._config.ticks_election:
            self._election_elapsed = 0
            if self._config.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self._term, None)
                    return
                for pr in self._prs.values():
                    pr.recent_active = False
            self._transferee = None  # a transfer that took an election timeout is abandoned
        notify_ticks = REMOVED_NOTIFY_ELECTIONS * self._config.ticks_election
        for node, pr in list(self._prs.items()):
            if pr.departing:
                pr.departing_ticks += 1
                if pr.departing_ticks >= notify_ticks:
                    del self._prs[node]
        retry_ticks = SNAPSHOT_RETRY_ELECTIONS * self._config.ticks_election
        for node, pr in self._prs.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= retry_ticks:
                    pr.become_probe()
                    self._send_append(node, send_empty=True)
        if self._heartbeat_elapsed >= self._config.ticks_heartbeat:
            self._heartbeat_elapsed = 0
            # Every round counts for every read registered before it, so a lost round does
            # not strand a read: the next periodic one confirms it.
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {node: True for node, pr in self._prs.items() if pr.recent_active}
        active[self._id] = True
        return vote_result(self.conf.voters, active) is True

    # -- elections -----------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._election_timeout:
            self._election_elapsed = 0
            self._campaign(pre=self._config.pre_vote, transfer=False)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._role = Role.PRE_CANDIDATE
            self._leader = None
            self._reset()
            term = self._term + 1  # what we would run with; our term does not change yet
            request = MsgType.PRE_VOTE
        else:
            assert self._term + 1 > self._term
            self._term += 1
            self._vote = self._id
            self._role = Role.CANDIDATE
            self._leader = None
            self._reset()
            term = self._term
            request = MsgType.VOTE
        voters = self.conf.voters
        if self._id in voters:
            self._votes[self._id] = True
        if vote_result(voters, self._votes) is True:
            # A single voter wins on its own.
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        context = TRANSFER_CONTEXT if transfer else b""
        for voter in voters:
            if voter != self._id:
                self._send(
                    Message(
                        request,
                        self._id,
                        voter,
                        term,
                        index=self._log.last_index,
                        log_term=self._log.last_term,
                        context=context,
                    )
                )

    def _become_follower(self, term: int, leader: str | None) -> None:
        assert term >= self._term, ("term went backwards", term, self._term)
        if term > self._term:
            self._term = term
            self._vote = None
        self._role = Role.FOLLOWER
        self._leader = leader
        self._reset()

    def _become_leader(self) -> None:
        assert self._role is Role.CANDIDATE and self._vote == self._id
        assert not self._votes_withheld, "campaigned while withholding votes"
        self._role = Role.LEADER
        self._leader = self._id
        self._reset()
        for node in self.conf.members():
            if node != self._id:
                self._prs[node] = Progress(self._log.last_index + 1, self._config.inflight_max)
        self._append([(EntryKind.NOOP, b"")])
        # No conf change until this term's NOOP commits (see propose_conf_change).
        self._pending_conf_index = self._log.last_index

    def _reset(self) -> None:
        """Forget everything that belongs to one role in one term."""
        self._votes = {}
        self._prs = {}
        self._reads = {}
        self._reads_waiting = []
        self._heartbeat_round = 0
        self._round_acked = {}
        self._pending_read_bcast = False
        self._transferee = None
        self._pending_conf_index = 0
        self._pending_bcast = False
        self._pending_commit_bcast = False
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        ticks = self._config.ticks_election
        self._election_timeout = ticks + self._rng.randrange(ticks)

    # -- membership ----------------------------------------------------------------------------

    def _record_conf(self, entry: Entry) -> None:
        assert entry.kind is EntryKind.CONF
        assert not self._conf_history or self._conf_history[-1][0] < entry.index
        conf = apply_change(self.conf, ConfChange.decode(entry.data))
        self._conf_history.append((entry.index, conf))

    def _rebuild_conf(self) -> None:
        """Recompute configurations from the base after the log changed under them."""
        self._conf_history = []
        if self._log.last_index > self._log.base_index:
            for entry in self._log.entries_between(self._log.first_index, self._log.last_index):
                if entry.kind is EntryKind.CONF:
                    self._record_conf(entry)

    def _on_conf_changed(self) -> None:
        """Leader: track the current members, and removed ones until they know; the quorum
        may have moved."""
        assert self._role is Role.LEADER
        members = set(self.conf.members()) - {self._id}
        conf_index = self._conf_history[-1][0] if self._conf_history else 0
        for node, pr in list(self._prs.items()):
            if node in members:
                pr.departing = 0  # added again while it was departing
            elif not pr.departing:
                # Removed: keep replicating until it holds this entry (see REMOVED_NOTIFY_...).
                pr.departing = conf_index
                pr.departing_ticks = 0
        for node in sorted(members - set(self._prs)):
            self._prs[node] = Progress(self._log.last_index + 1, self._config.inflight_max)
            self._prs[node].recent_active = True  # give a new member one timeout to answer
        if self._transferee is not None and self._transferee not in self.conf.voters:
            self._transferee = None
        self._maybe_commit()

    def _maybe_tell_removed(self, m: Message) -> None:
        """Leader: a node campaigns at us that our log shows removed and that we no longer
        track (its remover was deposed before it told it, or gave up): replicate to it until it
        holds its removal, as for a departing member (thesis 4.2.3, disruptive servers; rule
        "a removed candidate is told", docs/raft.md). Only when the sender's term is not above
        ours: a node of a higher term rejects our APPENDs, and with PreVote/CheckQuorum answers
        them with its term, which would depose us for nothing. A stranger our log never names
        gets nothing, so no sender makes us track more nodes than our log removed."""
        sender = m.frm
        if sender in self._prs:
            return  # a member, or a departing node already being told
        # A pre-candidate asks in the term it would run with; its own term is one lower.
        sender_term = m.term - 1 if m.type is MsgType.PRE_VOTE else m.term
        if sender_term > self._term:
            return
        removed_at = self._removal_index(sender)
        if removed_at == 0:
            return
        pr = Progress(self._log.last_index + 1, self._config.inflight_max)
        pr.departing = removed_at
        self._prs[sender] = pr
        self._send_append(sender, send_empty=True)

    def _removal_index(self, node: str) -> int:
        """The index of the CONF entry in our log that last removed `node` (0: none, or it is
        a member again; a removal compacted away is not known)."""
        if node in self.conf.members():
            return 0
        removed_at = 0
        previous = self._conf_base
        for index, conf in self._conf_history:
            if node in previous.members() and node not in conf.members():
                removed_at = index
            previous = conf
        return removed_at

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        assert m.frm == self._id and m.to != self._id, m
        self._msgs.append(m)

    def _check_invariants(self) -> None:
        log = self._log
        assert log.base_index <= log.commit <= log.last_index, (
            log.base_index,
            log.commit,
            log.last_index,
        )
        assert self._applied <= self._applying <= log.commit, (
            self._applied,
            self._applying,
            log.commit,
        )
        assert log.last_term <= self._term, (log.last_term, self._term)
        assert self._prev_hard.term <= self._term and self._prev_hard.commit <= log.commit
        if self._role is Role.LEADER:
            assert self._leader == self._id and self._vote == self._id
            assert self._id not in self._prs
            assert all(r <= self._heartbeat_round for r in self._round_acked.values())
            conf = self.conf
            for node, pr in self._prs.items():
                # Progress for exactly the members, plus removed nodes still being told.
                member = node in conf.voters or node in conf.learners
                assert member == (pr.departing == 0), (node, pr.departing)
            previous_round = 0
            for read in self._reads.values():
                # FIFO, and no read waits for a round that cannot have been sent yet.
                assert previous_round <= read.round <= self._heartbeat_round + 1, read
                previous_round = read.round
        else:
            assert not self._prs and not self._reads and not self._round_acked
