"""Election roles (Kafka's ``EpochState`` classes) and the :class:`QuorumState` that moves between them.

Theory of operation
-------------------
A node is always in exactly one role for one epoch.  The role object holds
only what that role needs -- votes collected, the leader's view of its
followers, the follower's fetch timer -- and is thrown away on the next
transition, so nothing from an old role (an in-flight request, a parked fetch,
a vote count) can leak into a new one.  Requests a role sends are remembered
in its ``pending`` map (correlation id -> destination); a response whose id is
not there belongs to an earlier role or is a duplicate, and is ignored.

The roles, and the arrows :class:`QuorumState` allows::

    Unattached --election timeout--> Prospective --pre-vote majority--> Candidate --vote majority--> Leader
        ^  (voted or not)               |   ^                                |                        |
        |                               |   +--election timeout / lost-------+                        |
        +--------- higher epoch, EndQuorumEpoch, in any role --------------------------------------- +
    Follower --fetch timeout--> Prospective (voters) / Unattached (observers)
    Leader --resign() or check-quorum failure--> Resigned --election timeout--> Prospective

* **Epochs only go up**, and a node votes at most once per epoch: ``voted_id``
  travels with the epoch through every role of that epoch and is persisted
  with it, before any answer that depends on it is sent.
* **Prospective** is KIP-996's pre-vote: the node asks "would you vote for me
  at the next epoch?" without bumping its epoch.  Voters that still hear from
  a leader say no, so a node that was cut off (and timed out) cannot force an
  election when it comes back; only a majority of yes makes it a Candidate.
* **Candidate** bumps the epoch and votes for itself; a majority of votes
  makes it Leader.  Losing, or timing out, sends it back to Prospective after
  a randomized, exponentially growing backoff (capped by
  ``controller.quorum.election.backoff.max.ms``) so that two nodes do not keep
  splitting the vote.
* **Leader** and **Resigned** both have ``leader_id == local id``; Resigned is
  a leader that has stopped leading (shutdown, or it no longer hears from a
  majority) and waits for the others to elect a successor.
* **Observers** (not in the voter set) are only ever Unattached or Follower.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Callable

from .store import ElectionState, QuorumStateStore

INF = float("inf")


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """The ``controller.quorum.*`` settings, with Kafka's defaults."""

    election_timeout_ms: int = 1000  # controller.quorum.election.timeout.ms
    fetch_timeout_ms: int = 2000  # controller.quorum.fetch.timeout.ms
    election_backoff_max_ms: int = 1000  # controller.quorum.election.backoff.max.ms
    request_timeout_ms: int = 2000  # controller.quorum.request.timeout.ms
    retry_backoff_ms: int = 20  # controller.quorum.retry.backoff.ms
    fetch_max_wait_ms: int = 500  # how long the leader parks a fetch with nothing new
    max_fetch_entries: int = 64  # entries per Fetch response


@dataclass(frozen=True, slots=True)
class RoleChanged:
    role: str
    epoch: int
    leader_id: int | None


@dataclass(frozen=True, slots=True)
class HighWatermarkChanged:
    high_watermark: int


@dataclass(frozen=True, slots=True)
class SnapshotLoaded:
    end_offset: int
    epoch: int


class EpochState:
    name = "?"
    leader_id: int | None = None

    def __init__(self, epoch: int, voted_id: int | None) -> None:
        self.epoch = epoch
        self.voted_id = voted_id
        self.pending: dict[int, int] = {}

    def election_state(self) -> ElectionState:
        return ElectionState(self.epoch, self.voted_id, self.leader_id)

    def __repr__(self) -> str:
        return f"{self.name}(epoch={self.epoch}, voted={self.voted_id}, leader={self.leader_id})"


class Unattached(EpochState):
    """No known leader in this epoch.  Voters wait out ``election_deadline``; observers poll voters for the leader."""

    name = "unattached"

    def __init__(self, epoch: int, voted_id: int | None, election_deadline: float) -> None:
        super().__init__(epoch, voted_id)
        self.election_deadline = election_deadline
        self.discovery_at = 0.0  # observers: when to ask a voter who leads next


class _Election(EpochState):
    def __init__(self, epoch: int, voted_id: int | None, election_deadline: float, retries: int) -> None:
        super().__init__(epoch, voted_id)
        self.granted: set[int] = set()
        self.rejected: set[int] = set()
        self.election_deadline = election_deadline
        self.backoff_until: float | None = None  # set once the round is lost
        self.retries = retries


class Prospective(_Election):
    name = "prospective"


class Candidate(_Election):
    name = "candidate"


@dataclass(slots=True)
class ReplicaState:
    """What the leader knows of one fetcher this epoch (also DescribeQuorum's row)."""

    end_offset: int | None = None  # the fetch offset of its last valid Fetch: it holds the log below it
    last_fetch_ms: float = -INF
    last_caught_up_ms: float = -INF


class Leader(EpochState):
    name = "leader"

    def __init__(self, epoch: int, local_id: int, voters: frozenset[int], epoch_start_offset: int, now: float) -> None:
        super().__init__(epoch, local_id)
        self.leader_id = local_id
        self.epoch_start_offset = epoch_start_offset
        # Every voter is given a grace period of one check-quorum interval, as if it had just fetched.
        self.replicas: dict[int, ReplicaState] = {v: ReplicaState(last_fetch_ms=now) for v in voters if v != local_id}
        self.observers: dict[int, ReplicaState] = {}
        self.begin_pending: set[int] = set(self.replicas)  # voters that have not acknowledged the new epoch
        self.begin_resend_at = INF
        self.parked: dict[int, tuple[object, float]] = {}  # replica id -> (FetchRequest, answer-by deadline)


class Follower(EpochState):
    name = "follower"

    def __init__(self, epoch: int, voted_id: int | None, leader_id: int, fetch_deadline: float) -> None:
        super().__init__(epoch, voted_id)
        self.leader_id = leader_id
        self.fetch_deadline = fetch_deadline  # no answer from the leader by then: it is presumed gone
        self.request_deadline = INF  # the in-flight Fetch/FetchSnapshot is presumed lost by then
        self.send_at: float | None = 0.0  # when to send the next Fetch (None while one is in flight)
        self.has_fetched = False  # a valid answer from the leader arrived in this role: it is alive


class Resigned(EpochState):
    name = "resigned"

    def __init__(self, epoch: int, local_id: int, election_deadline: float) -> None:
        super().__init__(epoch, local_id)
        self.leader_id = local_id
        self.election_deadline = election_deadline


class QuorumState:
    """Owns the current role; every transition is checked, persisted, then announced.

    ``emit`` receives a :class:`RoleChanged` after the new election state is
    durable.  The randomized timers live here because every transition needs
    one: ``election_timeout()`` is ``timeout + uniform[0, timeout)`` as in
    Kafka, and ``backoff(retries)`` is a randomized binary exponential backoff.
    """

    def __init__(
        self,
        local_id: int,
        voters: frozenset[int],
        store: QuorumStateStore,
        config: RaftConfig,
        rng: _random.Random,
        emit: Callable[[object], None],
    ) -> None:
        self.local_id = local_id
        self.voters = voters
        self.store = store
        self.config = config
        self.rng = rng
        self.emit = emit
        self.state: EpochState = Unattached(0, None, INF)

    # -- timers ----------------------------------------------------------
    def election_timeout(self) -> int:
        t = self.config.election_timeout_ms
        return t + self.rng.randrange(t)

    def backoff(self, retries: int) -> int:
        cap = self.config.election_backoff_max_ms
        return min(cap, self.rng.randrange(1, 50 * (1 << min(retries, 8)) + 1))

    @property
    def is_voter(self) -> bool:
        return self.local_id in self.voters

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    # -- start-up ----------------------------------------------------------
    def initialize(self, now: float, log_last_epoch: int) -> None:
        """Resume from the persisted election state, as Kafka's QuorumState.initialize does."""
        saved = self.store.read() or ElectionState()
        if saved.epoch < log_last_epoch:
            # The log has seen a later epoch than the state file (a lost or
            # replaced quorum-state): never go back behind the log.
            self._set(Unattached(log_last_epoch, None, self._unattached_deadline(now)))
        elif saved.leader_id is not None and saved.leader_id == self.local_id:
            # We led this epoch before the restart; we cannot know what we
            # promised, so we stay out of the way until someone else leads.
            self._set(Resigned(saved.epoch, self.local_id, now + self.election_timeout()))
        elif saved.leader_id is not None:
            self._set(Follower(saved.epoch, saved.voted_id, saved.leader_id, now + self.config.fetch_timeout_ms))
        else:
            self._set(Unattached(saved.epoch, saved.voted_id, self._unattached_deadline(now)))

    def _unattached_deadline(self, now: float, delay: float | None = None) -> float:
        if not self.is_voter:
            return INF
        return now + (self.election_timeout() if delay is None else delay)

    # -- transitions -------------------------------------------------------
    def _set(self, new: EpochState) -> None:
        old = self.state
        if new.epoch < old.epoch:
            raise AssertionError(f"epoch goes back: {old} -> {new}")
        if new.epoch == old.epoch and old.voted_id is not None and new.voted_id != old.voted_id:
            raise AssertionError(f"second vote in one epoch: {old} -> {new}")
        if old.election_state() != new.election_state() or self.store.read() is None:
            self.store.write(new.election_state())
        self.state = new
        self.emit(RoleChanged(new.name, new.epoch, new.leader_id))

    def _same_epoch_vote(self, epoch: int) -> int | None:
        return self.state.voted_id if epoch == self.state.epoch else None

    def to_unattached(self, epoch: int, now: float, delay: float | None = None) -> None:
        self._set(Unattached(epoch, self._same_epoch_vote(epoch), self._unattached_deadline(now, delay)))

    def to_unattached_voted(self, epoch: int, candidate_id: int, now: float) -> None:
        assert self.is_voter and candidate_id != self.local_id
        self._set(Unattached(epoch, candidate_id, self._unattached_deadline(now)))

    def to_follower(self, epoch: int, leader_id: int, now: float) -> None:
        assert leader_id != self.local_id
        if isinstance(self.state, Leader) and epoch == self.state.epoch:
            raise AssertionError(f"two leaders in epoch {epoch}: {self.local_id} and {leader_id}")
        self._set(Follower(epoch, self._same_epoch_vote(epoch), leader_id, now + self.config.fetch_timeout_ms))

    def to_prospective(self, now: float, retries: int = 0) -> None:
        assert self.is_voter
        s = self.state
        self._set(Prospective(s.epoch, s.voted_id, now + self.election_timeout(), retries))
        self.state.granted.add(self.local_id)

    def to_candidate(self, now: float) -> None:
        s = self.state
        assert isinstance(s, Prospective)
        new = Candidate(s.epoch + 1, self.local_id, now + self.election_timeout(), s.retries)
        new.granted.add(self.local_id)
        self._set(new)

    def to_leader(self, epoch_start_offset: int, now: float) -> None:
        s = self.state
        assert isinstance(s, Candidate) and len(s.granted) >= self.majority
        self._set(Leader(s.epoch, self.local_id, self.voters, epoch_start_offset, now))

    def to_resigned(self, now: float) -> None:
        s = self.state
        assert isinstance(s, Leader)
        self._set(Resigned(s.epoch, self.local_id, now + self.election_timeout()))
