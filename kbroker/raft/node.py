"""One Raft (KIP-595) node as a pure state machine: :class:`RaftNode`.

Theory of operation
-------------------
Inputs are method calls carrying the time: :meth:`RaftNode.handle` for a
message received, :meth:`RaftNode.tick` when :meth:`RaftNode.next_deadline`
has passed, :meth:`RaftNode.propose` on the leader, :meth:`RaftNode.snapshot`
when the owner has a snapshot of committed state, :meth:`RaftNode.resign` on
shutdown.  Nothing here reads a clock, opens a socket or sleeps; randomness
comes from the injected ``random.Random``.  Outputs accumulate until taken:
``take_messages()`` gives ``(destination id, message)`` pairs to send, and
``take_events()`` gives role changes, high-watermark changes and loaded
snapshots.  The log and the election-state store are injected and written
synchronously: when a method returns, whatever the messages it produced rely
on is already durable (a granted vote is persisted before the answer exists).

Replication is pull-based, as in Kafka: followers and observers send Fetch
with ``(fetch_offset, last_fetched_epoch)``; the leader checks that pair
against its own log (the leader-epoch cache) and answers with one of

* records from ``fetch_offset`` -- the fetcher's log matches the leader's
  below ``fetch_offset``, so the leader records that offset as the fetcher's
  position (used to count the high watermark for voters);
* a diverging epoch ``(epoch, end_offset)`` -- the fetcher truncates to the
  smaller of that offset and the end of that epoch in its own log, then
  fetches again (one or more rounds converge on the common prefix);
* a snapshot id -- the offset is below the leader's log start; the fetcher
  pulls the snapshot with FetchSnapshot and adopts it.

A fetch with nothing to return is parked for ``fetch_max_wait_ms`` (long
poll) unless the fetcher's high watermark is behind, and answered at once
when the log grows or the high watermark moves.

The high watermark counts only voters: it is the largest offset that a
majority of voters (the leader included) hold, and it moves only once it
covers the leader's own epoch-start marker -- Raft's rule that a leader
commits entries of earlier epochs only indirectly, by committing one of its
own.  A node's high watermark never goes back; a follower takes the leader's
but never beyond what it has itself fetched and validated.

A leader that has not heard from a majority within 1.5 fetch timeouts resigns
(KIP-996's check-quorum): partitioned away, it stops accepting proposals it
could never commit.

Elections (the roles are in :mod:`kbroker.raft.state`): a voter whose timer
runs out first asks for pre-votes; a voter grants one only if it has no live
leader -- it is not a Follower that has actually fetched from its leader --
and the asker's log is at least as up to date (last epoch, then end offset).
A Vote answer names the leader only when the answering voter can vouch for
it (it leads, or fetched from it), so nodes do not send each other back to a
dead leader.  The leader announces its epoch with BeginQuorumEpoch, repeated
until each voter acknowledges it, and again to any voter that stops fetching:
such a voter may have moved to a later epoch that its own pre-votes cannot
announce, and its FENCED answer is how the leader learns it must step down.
Requests a node is waiting on are matched by correlation id within the
current role only; duplicates and late answers fall through.
"""

from __future__ import annotations

import random as _random
from typing import Any, Iterable, Sequence

from protocol import ErrorCode

from .log import LEADER_CHANGE, Entry, RaftLog, Snapshot, SnapshotId
from .messages import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    EpochEndOffset,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    LeaderIdAndEpoch,
    Message,
    VoteRequest,
    VoteResponse,
)
from .state import (
    INF,
    Candidate,
    EpochState,
    Follower,
    HighWatermarkChanged,
    Leader,
    Prospective,
    QuorumState,
    RaftConfig,
    ReplicaState,
    Resigned,
    SnapshotLoaded,
    Unattached,
)
from .store import QuorumStateStore

NONE = int(ErrorCode.NONE)
FENCED_LEADER_EPOCH = int(ErrorCode.FENCED_LEADER_EPOCH)
UNKNOWN_LEADER_EPOCH = int(ErrorCode.UNKNOWN_LEADER_EPOCH)
NOT_LEADER_OR_FOLLOWER = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
SNAPSHOT_NOT_FOUND = int(ErrorCode.SNAPSHOT_NOT_FOUND)
INCONSISTENT_CLUSTER_ID = int(ErrorCode.INCONSISTENT_CLUSTER_ID)
INCONSISTENT_VOTER_SET = int(ErrorCode.INCONSISTENT_VOTER_SET)


class NotLeaderError(Exception):
    """propose() on a node that is not the leader; carries what it knows of the leader."""

    def __init__(self, leader_id: int | None, epoch: int) -> None:
        super().__init__(f"not the leader (leader {leader_id}, epoch {epoch})")
        self.leader_id = leader_id
        self.epoch = epoch


class RaftNode:
    def __init__(
        self,
        node_id: int,
        voters: Iterable[int],
        log: RaftLog,
        store: QuorumStateStore,
        *,
        rng: _random.Random,
        now_ms: float,
        config: RaftConfig = RaftConfig(),
        cluster_id: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.voters = frozenset(voters)
        self.log = log
        self.config = config
        self.cluster_id = cluster_id
        self.rng = rng
        self._messages: list[tuple[int, Message]] = []
        self._events: list[object] = []
        self._next_cid = rng.randrange(1 << 30)
        # The snapshot (if any) is committed by construction; anything beyond
        # it will be re-learnt from the leader.
        self.high_watermark = log.start_offset
        self.quorum = QuorumState(node_id, self.voters, store, config, rng, self._events.append)
        self.quorum.initialize(now_ms, log.last_epoch)
        self._after_transition(now_ms)

    # ------------------------------------------------------------------ API
    @property
    def state(self) -> EpochState:
        return self.quorum.state

    @property
    def role(self) -> str:
        return self.quorum.state.name

    @property
    def epoch(self) -> int:
        return self.quorum.state.epoch

    @property
    def leader_id(self) -> int | None:
        return self.quorum.state.leader_id

    def take_messages(self) -> list[tuple[int, Message]]:
        out, self._messages = self._messages, []
        return out

    def take_events(self) -> list[object]:
        out = self._events[:]
        self._events.clear()  # in place: QuorumState appends to this very list
        return out

    def next_deadline(self) -> float:
        s = self.state
        if isinstance(s, Unattached):
            return s.election_deadline if self.quorum.is_voter else s.discovery_at
        if isinstance(s, (Prospective, Candidate)):
            return s.backoff_until if s.backoff_until is not None else s.election_deadline
        if isinstance(s, Follower):
            d = min(s.fetch_deadline, s.request_deadline)
            return d if s.send_at is None else min(d, s.send_at)
        if isinstance(s, Leader):
            d = min(s.begin_resend_at, self._check_quorum_deadline(s))
            for _, deadline in s.parked.values():
                d = min(d, deadline)
            return d
        if isinstance(s, Resigned):
            return s.election_deadline
        return INF

    def tick(self, now: float) -> None:
        s = self.state
        if isinstance(s, Unattached):
            if self.quorum.is_voter:
                if now >= s.election_deadline:
                    self._start_prospective(now)
            elif now >= s.discovery_at:
                self._discover(s, now)
        elif isinstance(s, (Prospective, Candidate)):
            if s.backoff_until is not None:
                if now >= s.backoff_until:
                    self._start_prospective(now, s.retries + 1)
            elif now >= s.election_deadline:
                self._start_prospective(now, s.retries + 1)
        elif isinstance(s, Follower):
            if now >= s.fetch_deadline:
                if self.quorum.is_voter:
                    self._start_prospective(now)
                else:
                    self.quorum.to_unattached(s.epoch, now)
                    self._after_transition(now)
                return
            if now >= s.request_deadline:
                s.pending.clear()
                s.request_deadline = INF
                s.send_at = now
            if s.send_at is not None and now >= s.send_at:
                self._send_fetch(s, now)
        elif isinstance(s, Leader):
            if now >= self._check_quorum_deadline(s):
                self._resign(s, now)
                return
            for rid, (req, deadline) in list(s.parked.items()):
                if now >= deadline:
                    del s.parked[rid]
                    self._answer_parked(s, req)  # validated and counted when it arrived
            if now >= s.begin_resend_at:
                self._send_begin_quorum(s, now)
        elif isinstance(s, Resigned):
            if now >= s.election_deadline:
                self._start_prospective(now)

    def propose(self, payloads: Sequence[Any]) -> int:
        """Append payloads in the leader's epoch; returns the offset of the last one (committed later, maybe never)."""
        s = self.state
        if not isinstance(s, Leader):
            raise NotLeaderError(self.leader_id, self.epoch)
        base = self.log.end_offset
        self.log.append(Entry(base + i, s.epoch, p) for i, p in enumerate(payloads))
        self._leader_progress(s)
        return self.log.end_offset - 1

    def snapshot(self, up_to_offset: int, blob: bytes) -> SnapshotId:
        """Record a snapshot of the committed state below ``up_to_offset`` and drop that prefix of the log."""
        if not (self.log.start_offset < up_to_offset <= self.high_watermark):
            raise ValueError(
                f"snapshot end {up_to_offset} outside ({self.log.start_offset}, high watermark {self.high_watermark}]"
            )
        epoch = self.log.epoch_of(up_to_offset - 1)
        assert epoch is not None
        sid = SnapshotId(up_to_offset, epoch)
        self.log.take_snapshot(Snapshot(sid, blob))
        return sid

    def resign(self, now: float) -> None:
        """Graceful shutdown: a leader hands over with EndQuorumEpoch; anyone else has nothing to do."""
        s = self.state
        if isinstance(s, Leader):
            self._resign(s, now)

    def replica_states(self) -> dict[int, ReplicaState]:
        """The leader's view of voters and observers (DescribeQuorum); empty elsewhere."""
        s = self.state
        if not isinstance(s, Leader):
            return {}
        me = ReplicaState(self.log.end_offset)
        return {self.node_id: me, **s.replicas, **s.observers}

    def handle(self, message: Message, now: float) -> None:
        handler = _HANDLERS.get(type(message))
        if handler is None:
            raise TypeError(f"not a Raft message: {message!r}")
        handler(self, message, now)

    def _on_end_quorum_response(self, message: EndQuorumEpochResponse, now: float) -> None:
        self.state.pending.pop(message.correlation_id, None)
        self._observe_epoch(message.leader_epoch, message.leader_id, now)

    # ------------------------------------------------------------ plumbing
    def _cid(self) -> int:
        self._next_cid += 1
        return self._next_cid

    def _send(self, dest: int, msg: Message) -> None:
        self._messages.append((dest, msg))

    def _request(self, dest: int, build) -> None:
        cid = self._cid()
        self.state.pending[cid] = dest
        self._send(dest, build(cid))

    def _cluster_ok(self, req) -> bool:
        # As Kafka: a request without a cluster id (older versions) is accepted.
        return req.cluster_id is None or req.cluster_id == self.cluster_id

    def _current_leader(self) -> LeaderIdAndEpoch:
        # Only a leader that is actually leading is advertised: a Resigned or
        # a timed-out node would otherwise send others back to a dead leader.
        s = self.state
        lid = s.leader_id if isinstance(s, (Leader, Follower)) else None
        return LeaderIdAndEpoch(-1 if lid is None else lid, s.epoch)

    def _set_hw(self, hw: int) -> None:
        if hw > self.high_watermark:
            self.high_watermark = hw
            self._events.append(HighWatermarkChanged(hw))

    def _observe_epoch(self, epoch: int, leader_id: int, now: float) -> bool:
        """React to an epoch/leader seen in a message; True when it moved us to a new role.

        A higher epoch always wins.  In our own epoch, learning the leader ends
        an election we were running or waiting for (a voter that already
        granted its vote to someone else follows the winner all the same).
        That is safe from ping-pong because a voter names a leader in a Vote
        answer only once it has actually fetched from it (:meth:`_vouched_leader`):
        hearsay from voters that merely remember a leader cannot keep sending
        each other back to a dead one."""
        s = self.state
        lid = None if leader_id < 0 else leader_id
        if lid == self.node_id or lid not in self.voters:
            # A stale echo of our own leadership teaches nothing, and only a
            # voter can lead: a node following anyone else would be lost.
            lid = None
        if epoch > s.epoch:
            if lid is not None:
                self.quorum.to_follower(epoch, lid, now)
            else:
                self.quorum.to_unattached(epoch, now)
            self._after_transition(now)
            return True
        if epoch == s.epoch and lid is not None and isinstance(s, (Unattached, Prospective, Candidate)):
            self.quorum.to_follower(epoch, lid, now)
            self._after_transition(now)
            return True
        return False

    def _after_transition(self, now: float) -> None:
        """Start what the new role does on entry."""
        s = self.state
        if isinstance(s, Follower):
            self._send_fetch(s, now)
        elif isinstance(s, Unattached) and not self.quorum.is_voter:
            s.discovery_at = now
            self._discover(s, now)

    # ------------------------------------------------------------ elections
    def _start_prospective(self, now: float, retries: int = 0) -> None:
        self.quorum.to_prospective(now, retries)
        s = self.state
        assert isinstance(s, Prospective)
        self._solicit(s, pre_vote=True, now=now)

    def _solicit(self, s: Prospective | Candidate, pre_vote: bool, now: float) -> None:
        if len(s.granted) >= self.quorum.majority:
            self._election_won(s, now)
            return
        last_epoch, end = self.log.last_epoch, self.log.end_offset
        for v in sorted(self.voters - {self.node_id}):
            self._request(
                v,
                lambda cid, v=v: VoteRequest(cid, self.cluster_id, v, s.epoch, self.node_id, last_epoch, end, pre_vote),
            )

    def _election_won(self, s: Prospective | Candidate, now: float) -> None:
        if isinstance(s, Prospective):
            self.quorum.to_candidate(now)
            c = self.state
            assert isinstance(c, Candidate)
            self._solicit(c, pre_vote=False, now=now)
            return
        start = self.log.end_offset
        self.quorum.to_leader(start, now)
        leader = self.state
        assert isinstance(leader, Leader)
        # The epoch-start marker: committing it commits, indirectly, whatever
        # earlier-epoch entries this leader inherited.
        self.log.append([Entry(start, leader.epoch, LEADER_CHANGE)])
        self._send_begin_quorum(leader, now)
        self._leader_progress(leader)

    def _log_up_to_date(self, last_epoch: int, end: int) -> bool:
        return (last_epoch, end) >= (self.log.last_epoch, self.log.end_offset)

    def _on_vote(self, req: VoteRequest, now: float) -> None:
        if not self._cluster_ok(req):
            self._send(req.replica_id, VoteResponse(req.correlation_id, INCONSISTENT_CLUSTER_ID, -1, self.epoch, False))
            return
        if not req.pre_vote and req.replica_epoch > self.epoch and req.replica_id in self.voters:
            # A real vote at a higher epoch ends our epoch whatever we answer.
            self.quorum.to_unattached(req.replica_epoch, now)
            self._after_transition(now)
        s = self.state
        granted = False
        if req.replica_epoch < s.epoch or req.replica_id not in self.voters or not self.quorum.is_voter:
            granted = False
        elif req.pre_vote:
            # Pre-vote changes nothing here.  Refuse while we hear from a
            # leader (a Follower that has fetched from it), or are/were one.
            no_live_leader = isinstance(s, (Unattached, Prospective, Candidate)) or (
                isinstance(s, Follower) and not s.has_fetched
            )
            granted = no_live_leader and self._log_up_to_date(
                req.last_offset_epoch, req.last_offset
            )
            if (granted and isinstance(s, Prospective) and req.replica_id > self.node_id
                    and (req.last_offset_epoch, req.last_offset) == (self.log.last_epoch, self.log.end_offset)):
                # Two voters whose leader went away together time out
                # together (their fetch timers started at the same answer);
                # granting each other's pre-vote makes two candidates that
                # split the vote and wait a backoff.  Between equal logs the
                # lower id goes first.  Liveness only: a pre-vote commits
                # nothing, and the lower id still needs its own majority.
                granted = False
        elif isinstance(s, (Unattached, Prospective)) and s.voted_id in (None, req.replica_id):
            granted = self._log_up_to_date(req.last_offset_epoch, req.last_offset)
            if granted and s.voted_id is None:
                self.quorum.to_unattached_voted(s.epoch, req.replica_id, now)  # persisted before we answer
        elif isinstance(s, Unattached) and s.voted_id == req.replica_id:
            granted = True
        self._send(
            req.replica_id,
            VoteResponse(req.correlation_id, NONE, self._vouched_leader(), self.epoch, granted),
        )

    def _vouched_leader(self) -> int:
        s = self.state
        if isinstance(s, Leader) or (isinstance(s, Follower) and s.has_fetched):
            return s.leader_id
        return -1

    def _on_vote_response(self, resp: VoteResponse, now: float) -> None:
        s = self.state
        voter = s.pending.pop(resp.correlation_id, None)
        if voter is None:
            return
        if resp.error_code != NONE:
            return
        if self._observe_epoch(resp.leader_epoch, resp.leader_id, now):
            return
        if not isinstance(s, (Prospective, Candidate)) or s.backoff_until is not None:
            return
        (s.granted if resp.vote_granted else s.rejected).add(voter)
        if len(s.granted) >= self.quorum.majority:
            self._election_won(s, now)
        elif len(s.rejected) > len(self.voters) - self.quorum.majority:
            # Lost: wait a randomized, growing backoff before the next pre-vote.
            s.backoff_until = now + self.quorum.backoff(s.retries + 1)

    # ------------------------------------------------- leader announcements
    def _send_begin_quorum(self, s: Leader, now: float) -> None:
        # Besides voters that have not acknowledged the epoch yet, remind any
        # voter that has stopped fetching: it may have moved on to a later
        # epoch (a candidacy whose votes were lost) that pre-vote keeps it
        # from announcing, and it can never follow us again; its FENCED
        # answer is how we learn that epoch and step down.
        quiet = now - self.config.fetch_timeout_ms
        targets = s.begin_pending | {v for v, r in s.replicas.items() if r.last_fetch_ms < quiet}
        for v in sorted(targets):
            self._request(v, lambda cid, v=v: BeginQuorumEpochRequest(cid, self.cluster_id, v, self.node_id, s.epoch))
        s.begin_resend_at = now + (self.config.request_timeout_ms if s.begin_pending else self.config.fetch_timeout_ms)

    def _on_begin_quorum(self, req: BeginQuorumEpochRequest, now: float) -> None:
        if not self._cluster_ok(req):
            resp = BeginQuorumEpochResponse(req.correlation_id, INCONSISTENT_CLUSTER_ID, -1, self.epoch)
            self._send(req.leader_id, resp)
            return
        if req.leader_id not in self.voters:
            # Only a voter can lead (Kafka: INCONSISTENT_VOTER_SET); following
            # anyone else would send this node's fetches nowhere.
            cur = self._current_leader()
            resp = BeginQuorumEpochResponse(req.correlation_id, INCONSISTENT_VOTER_SET, cur.leader_id, cur.leader_epoch)
            self._send(req.leader_id, resp)
            return
        if req.leader_epoch < self.epoch:
            cur = self._current_leader()
            resp = BeginQuorumEpochResponse(req.correlation_id, FENCED_LEADER_EPOCH, cur.leader_id, cur.leader_epoch)
            self._send(req.leader_id, resp)
            return
        self._observe_epoch(req.leader_epoch, req.leader_id, now)
        s = self.state
        if isinstance(s, Follower) and s.leader_id == req.leader_id:
            s.fetch_deadline = max(s.fetch_deadline, now + self.config.fetch_timeout_ms)
        cur = self._current_leader()
        self._send(req.leader_id, BeginQuorumEpochResponse(req.correlation_id, NONE, cur.leader_id, cur.leader_epoch))

    def _on_begin_quorum_response(self, resp: BeginQuorumEpochResponse, now: float) -> None:
        s = self.state
        voter = s.pending.pop(resp.correlation_id, None)
        if voter is None:
            return
        if self._observe_epoch(resp.leader_epoch, resp.leader_id, now):
            return
        if isinstance(s, Leader) and resp.error_code == NONE:
            s.begin_pending.discard(voter)

    def _resign(self, s: Leader, now: float) -> None:
        # Successors in order of how much of the log they hold: the most
        # caught-up one should stand first, the others a little later.
        successors = tuple(
            sorted(s.replicas, key=lambda v: (-(s.replicas[v].end_offset or 0), v))
        )
        parked = list(s.parked.values())
        self.quorum.to_resigned(now)
        for req, _ in parked:
            self._answer_not_leader(req)
        for v in successors:
            self._request(
                v, lambda cid: EndQuorumEpochRequest(cid, self.cluster_id, self.node_id, s.epoch, successors)
            )

    def _on_end_quorum(self, req: EndQuorumEpochRequest, now: float) -> None:
        s = self.state
        if self.quorum.is_voter and self._cluster_ok(req) and req.leader_id in self.voters:
            # A later epoch ends ours whatever we are; in our own epoch only
            # those still waiting on that leader react (an election already
            # under way carries on).
            ours = req.leader_epoch == s.epoch and isinstance(s, (Follower, Unattached)) and s.leader_id in (
                None,
                req.leader_id,
            )
            if req.leader_epoch > s.epoch or ours:
                succ = req.preferred_successors
                if self.node_id in succ:
                    rank = succ.index(self.node_id)
                    # The first successor stands at once, the others one step of the backoff later each.
                    step = self.config.election_backoff_max_ms / len(succ)
                    delay = 0 if rank == 0 else step * rank + self.quorum.backoff(1)
                else:
                    delay = None  # a full election timeout
                self.quorum.to_unattached(req.leader_epoch, now, delay)
                self._after_transition(now)
        cur = self._current_leader()
        self._send(req.leader_id, EndQuorumEpochResponse(req.correlation_id, NONE, cur.leader_id, cur.leader_epoch))

    # --------------------------------------------------------- fetch: leader
    def _check_quorum_deadline(self, s: Leader) -> float:
        if not s.replicas:
            return INF
        # The majority-th most recent fetch (we count as fetching now).
        times = sorted((r.last_fetch_ms for r in s.replicas.values()), reverse=True)
        return times[self.quorum.majority - 2] + 1.5 * self.config.fetch_timeout_ms

    def _answer_not_leader(self, req: FetchRequest) -> None:
        cur = self._current_leader()
        self._send(
            req.replica_id,
            FetchResponse(req.correlation_id, NOT_LEADER_OR_FOLLOWER, self.high_watermark, self.log.start_offset, cur),
        )

    def _on_fetch(self, req: FetchRequest, now: float) -> None:
        s = self.state
        if not self._cluster_ok(req):
            cur = self._current_leader()
            self._send(req.replica_id, FetchResponse(req.correlation_id, INCONSISTENT_CLUSTER_ID, -1, -1, cur))
            return
        if not isinstance(s, Leader):
            self._answer_not_leader(req)
            return
        if req.current_leader_epoch != s.epoch:
            code = FENCED_LEADER_EPOCH if req.current_leader_epoch < s.epoch else UNKNOWN_LEADER_EPOCH
            cur = self._current_leader()
            resp = FetchResponse(req.correlation_id, code, self.high_watermark, self.log.start_offset, cur)
            self._send(req.replica_id, resp)
            return
        superseded = s.parked.pop(req.replica_id, None)
        if superseded is not None:
            # Answer rather than drop it: with reordering, the parked one may
            # be the fetcher's current request and this one a stale copy.
            self._answer_parked(s, superseded[0])
        self._answer_fetch(s, req, now, may_park=True)

    def _answer_fetch(self, s: Leader, req: FetchRequest, now: float, may_park: bool) -> None:
        log = self.log
        cur = LeaderIdAndEpoch(self.node_id, s.epoch)

        def reply(**kw) -> None:
            self._send(
                req.replica_id,
                FetchResponse(req.correlation_id, NONE, self.high_watermark, log.start_offset, cur, **kw),
            )

        snap = log.latest_snapshot
        if req.fetch_offset < log.start_offset:
            assert snap is not None
            reply(snapshot_id=snap.snapshot_id)
            return
        if req.fetch_offset > 0 or req.last_fetched_epoch > 0:
            found = log.end_offset_for_epoch(req.last_fetched_epoch)
            if found is None:
                assert snap is not None
                reply(snapshot_id=snap.snapshot_id)
                return
            epoch, end = found
            if epoch != req.last_fetched_epoch or req.fetch_offset > end:
                reply(diverging_epoch=EpochEndOffset(epoch, end))
                return
        # Valid: the fetcher holds our log below fetch_offset.
        is_voter = req.replica_id in s.replicas
        if is_voter:
            r = s.replicas[req.replica_id]
            s.begin_pending.discard(req.replica_id)
        else:
            r = s.observers.setdefault(req.replica_id, ReplicaState())
        r.end_offset = req.fetch_offset
        r.last_fetch_ms = now
        if req.fetch_offset >= log.end_offset:
            r.last_caught_up_ms = now
        if is_voter and self._advance_hw(s):
            # Others parked on the old high watermark should hear of the new one now.
            self._leader_progress(s)
        records = tuple(log.entries(req.fetch_offset, self.config.max_fetch_entries))
        if not records and may_park and req.high_watermark >= self.high_watermark:
            s.parked[req.replica_id] = (req, now + min(req.max_wait_ms, self.config.fetch_max_wait_ms))
            return
        reply(records=records)

    def _advance_hw(self, s: Leader) -> bool:
        offsets = sorted(
            [self.log.end_offset] + [r.end_offset or 0 for r in s.replicas.values()], reverse=True
        )
        candidate = offsets[self.quorum.majority - 1]
        if candidate > s.epoch_start_offset and candidate > self.high_watermark:
            self._set_hw(candidate)
            return True
        return False

    def _leader_progress(self, s: Leader) -> None:
        """The log grew or the high watermark may move: answer every parked fetch."""
        self._advance_hw(s)
        parked = list(s.parked.values())
        s.parked.clear()
        for req, _ in parked:
            self._answer_parked(s, req)

    def _answer_parked(self, s: Leader, req: FetchRequest) -> None:
        records = tuple(self.log.entries(req.fetch_offset, self.config.max_fetch_entries))
        cur = LeaderIdAndEpoch(self.node_id, s.epoch)
        self._send(
            req.replica_id,
            FetchResponse(req.correlation_id, NONE, self.high_watermark, self.log.start_offset, cur, records=records),
        )

    def _on_fetch_snapshot(self, req: FetchSnapshotRequest, now: float) -> None:
        s = self.state
        cur = self._current_leader()
        snap = self.log.latest_snapshot
        if not isinstance(s, Leader) or req.current_leader_epoch != s.epoch:
            code = NOT_LEADER_OR_FOLLOWER if not isinstance(s, Leader) else (
                FENCED_LEADER_EPOCH if req.current_leader_epoch < s.epoch else UNKNOWN_LEADER_EPOCH
            )
            self._send(req.replica_id, FetchSnapshotResponse(req.correlation_id, code, req.snapshot_id, cur, 0, 0, b""))
            return
        if snap is None or snap.snapshot_id != req.snapshot_id:
            self._send(
                req.replica_id,
                FetchSnapshotResponse(req.correlation_id, SNAPSHOT_NOT_FOUND, req.snapshot_id, cur, 0, 0, b""),
            )
            return
        # Minimal FetchSnapshot: the whole blob in one response.
        blob = snap.blob[req.position :]
        self._send(
            req.replica_id,
            FetchSnapshotResponse(req.correlation_id, NONE, snap.snapshot_id, cur, len(snap.blob), req.position, blob),
        )

    # ------------------------------------------------------- fetch: follower
    def _discover(self, s: Unattached, now: float) -> None:
        """An observer without a leader asks a random voter; the answer names the leader if it knows one."""
        voter = self.rng.choice(sorted(self.voters))
        s.pending.clear()
        self._request(voter, lambda cid: self._fetch_request(cid, s.epoch))
        s.discovery_at = now + self.config.fetch_max_wait_ms

    def _fetch_request(self, cid: int, epoch: int) -> FetchRequest:
        return FetchRequest(
            cid,
            self.cluster_id,
            self.node_id,
            self.config.fetch_max_wait_ms,
            epoch,
            self.log.end_offset,
            self.log.last_epoch,
            self.log.start_offset,
            self.high_watermark,
        )

    def _send_fetch(self, s: Follower, now: float) -> None:
        s.pending.clear()
        self._request(s.leader_id, lambda cid: self._fetch_request(cid, s.epoch))
        s.send_at = None
        s.request_deadline = now + self.config.request_timeout_ms

    def _retry_later(self, s: EpochState, now: float) -> None:
        if isinstance(s, Follower):
            s.request_deadline = INF
            s.send_at = now + self.config.retry_backoff_ms

    def _on_fetch_response(self, resp: FetchResponse, now: float) -> None:
        s = self.state
        source = s.pending.pop(resp.correlation_id, None)
        if source is None:
            return
        cl = resp.current_leader
        if self._observe_epoch(cl.leader_epoch, cl.leader_id, now):
            return
        if not isinstance(s, Follower):
            return
        if (
            resp.error_code == NOT_LEADER_OR_FOLLOWER
            and source == s.leader_id
            and cl.leader_epoch == s.epoch
            and cl.leader_id < 0
        ):
            # Our leader says it no longer leads this epoch (it resigned or
            # restarted): no point waiting out the fetch timeout.
            self.quorum.to_unattached(s.epoch, now)
            self._after_transition(now)
            return
        if resp.error_code != NONE or cl.leader_epoch != s.epoch or cl.leader_id != s.leader_id:
            self._retry_later(s, now)
            return
        s.fetch_deadline = now + self.config.fetch_timeout_ms
        s.has_fetched = True
        log = self.log
        if resp.snapshot_id is not None:
            sid = resp.snapshot_id
            self._request(
                s.leader_id,
                lambda cid: FetchSnapshotRequest(cid, self.cluster_id, self.node_id, s.epoch, sid, 0),
            )
            s.request_deadline = now + self.config.request_timeout_ms
            return
        if resp.diverging_epoch is not None:
            d = resp.diverging_epoch
            mine = log.end_offset_for_epoch(d.epoch)
            target = d.end_offset if mine is None else min(d.end_offset, mine[1])
            target = max(target, log.start_offset)
            if target < self.high_watermark:
                raise AssertionError(
                    f"node {self.node_id}: truncation to {target} below high watermark {self.high_watermark}"
                )
            log.truncate_to(target)
        elif resp.records:
            if resp.records[0].offset != log.end_offset:
                self._retry_later(s, now)
                return
            log.append(resp.records)
        if resp.diverging_epoch is None:
            self._set_hw(min(resp.high_watermark, log.end_offset))
        self._send_fetch(s, now)

    def _on_fetch_snapshot_response(self, resp: FetchSnapshotResponse, now: float) -> None:
        s = self.state
        if s.pending.pop(resp.correlation_id, None) is None:
            return
        cl = resp.current_leader
        if self._observe_epoch(cl.leader_epoch, cl.leader_id, now):
            return
        if not isinstance(s, Follower):
            return
        if resp.error_code != NONE or resp.position != 0 or len(resp.unaligned_records) != resp.size:
            self._retry_later(s, now)
            return
        s.fetch_deadline = now + self.config.fetch_timeout_ms
        sid = resp.snapshot_id
        if sid.end_offset > self.log.start_offset:
            self.log.install_snapshot(Snapshot(sid, bytes(resp.unaligned_records)))
            self._events.append(SnapshotLoaded(sid.end_offset, sid.epoch))
            self._set_hw(sid.end_offset)
        self._send_fetch(s, now)


# One handler per message type (the messages are plain dataclasses, never subclassed).
_HANDLERS = {
    FetchRequest: RaftNode._on_fetch,
    FetchResponse: RaftNode._on_fetch_response,
    VoteRequest: RaftNode._on_vote,
    VoteResponse: RaftNode._on_vote_response,
    BeginQuorumEpochRequest: RaftNode._on_begin_quorum,
    BeginQuorumEpochResponse: RaftNode._on_begin_quorum_response,
    EndQuorumEpochRequest: RaftNode._on_end_quorum,
    EndQuorumEpochResponse: RaftNode._on_end_quorum_response,
    FetchSnapshotRequest: RaftNode._on_fetch_snapshot,
    FetchSnapshotResponse: RaftNode._on_fetch_snapshot_response,
}
