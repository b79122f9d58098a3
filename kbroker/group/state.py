"""The group coordinator's state machine: groups, offsets and their timers, no IO.

Theory of operation
-------------------
Every input is a method call carrying the current time (``now`` in
milliseconds, wall clock): a request (join, sync, heartbeat, leave, offset
commit/fetch/delete, list, describe, delete groups) or :meth:`tick`, which
runs the timers that are due.  Each returns a :class:`Result`:

* ``records``: coordinator records to append to ``__consumer_offsets``
  before anything is answered;
* ``effects``: changes to the offsets (commit, delete, expiry) that the
  step has decided but not made: the caller runs them with
  :meth:`Result.apply` once the records are durable, and drops them if the
  append failed, so a lost write never shows up as a committed offset;
* ``response``: the answer to this request, or None when the request is
  parked (a JoinGroup waiting for the rebalance, a follower's SyncGroup
  waiting for the leader);
* ``completions``: ``(waiter, response)`` pairs for parked requests that
  this step finished -- possibly including the caller's own.

Parked requests are identified by the opaque ``waiter`` passed in with
them; the caller (the trio shell, or a test) decides what a waiter is.
Membership steps (join, sync, leave, KIP-848 heartbeats, their timers,
group deletion) change groups as they decide, because a rebalance is one
intertwined computation.  For those the caller takes a :meth:`checkpoint`
of the groups the step may touch before running it and :meth:`restore` s it
if the records could not be written -- Kafka's coordinator runtime reverts
its timeline snapshot the same way.  A checkpoint copies only the groups in
its scope; the hot offset-commit path needs none (its changes are effects).

Timers are held in :class:`~kbroker.group.timers.Timers`; the caller asks
:meth:`next_deadline` and calls :meth:`run_timer` (one timer, one step, one
scope: :meth:`timer_scope`) or :meth:`tick` (all that are due) when it passes.  Start-up
replays the log through :meth:`replay` and then calls :meth:`on_loaded`.

The semantics follow Kafka's group coordinator (classic protocol, Kafka 4.x):
KIP-394 member ids, KIP-345 static membership, KIP-814 skip-assignment for a
static leader that rejoins, the initial rebalance delay, rebalance and
session timeouts, pending-sync expiry, and offset retention.
"""

from __future__ import annotations

import copy
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from protocol import ErrorCode

from .classic import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    ClassicGroup,
    GroupState,
    Member,
    join_error,
    sync_error,
)
from .consumer import (
    ConsumerGroup,
    ConsumerGroupsMixin,
    ConsumerHeartbeatRequest,
    StaticTopics,
    tombstones_for_group,
)
from .records import (
    CoordinatorRecord,
    OffsetAndMetadata,
    empty_group_metadata_record,
    group_metadata_record,
    group_tombstone,
    offset_commit_record,
    offset_tombstone,
)
from .timers import Timers

log = logging.getLogger("kbroker.group")

INT_MAX = (1 << 31) - 1
NO_OFFSET = -1


@dataclass
class GroupConfig:
    initial_rebalance_delay_ms: int = 3000
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1800000
    max_size: int = INT_MAX
    new_member_join_timeout_ms: int = 300000
    offset_metadata_max_bytes: int = 4096
    offsets_retention_ms: int = 10080 * 60 * 1000
    offsets_retention_check_interval_ms: int = 600000
    consumer_session_timeout_ms: int = 45000
    consumer_heartbeat_interval_ms: int = 5000
    consumer_max_size: int = INT_MAX
    consumer_assignors: tuple = ("uniform", "range")

    @classmethod
    def from_broker_config(cls, config) -> "GroupConfig":
        def get(name, default):
            try:
                return config[name]
            except KeyError:
                return default

        return cls(
            initial_rebalance_delay_ms=get("group.initial.rebalance.delay.ms", 3000),
            min_session_timeout_ms=get("group.min.session.timeout.ms", 6000),
            max_session_timeout_ms=get("group.max.session.timeout.ms", 1800000),
            max_size=get("group.max.size", INT_MAX),
            offset_metadata_max_bytes=get("offset.metadata.max.bytes", 4096),
            offsets_retention_ms=get("offsets.retention.minutes", 10080) * 60 * 1000,
            offsets_retention_check_interval_ms=get("offsets.retention.check.interval.ms", 600000),
            consumer_session_timeout_ms=get("group.consumer.session.timeout.ms", 45000),
            consumer_heartbeat_interval_ms=get("group.consumer.heartbeat.interval.ms", 5000),
            consumer_max_size=get("group.consumer.max.size", INT_MAX),
            consumer_assignors=tuple(get("group.consumer.assignors", ["uniform", "range"])),
        )


# -- inputs -----------------------------------------------------------------------------


@dataclass
class JoinRequest:
    group_id: str
    member_id: str = ""
    group_instance_id: str | None = None
    protocol_type: str = "consumer"
    protocols: list = field(default_factory=list)  # [(name, metadata bytes)]
    session_timeout_ms: int = 10000
    rebalance_timeout_ms: int = 30000
    client_id: str = ""
    client_host: str = ""
    version: int = 9
    reason: str | None = None

    @property
    def requires_known_member_id(self) -> bool:
        return self.version >= 4

    @property
    def supports_skip_assignment(self) -> bool:
        return self.version >= 9


@dataclass
class SyncRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignments: dict = field(default_factory=dict)  # member id -> bytes


@dataclass
class HeartbeatRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


@dataclass
class LeaveMember:
    member_id: str = ""
    group_instance_id: str | None = None
    reason: str | None = None


@dataclass
class LeaveRequest:
    group_id: str
    members: list = field(default_factory=list)  # [LeaveMember]


@dataclass
class CommitPartition:
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""


@dataclass
class CommitRequest:
    group_id: str
    topics: dict = field(default_factory=dict)  # topic -> [CommitPartition]
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None
    retention_time_ms: int = -1
    version: int = 9


@dataclass
class Result:
    records: list = field(default_factory=list)
    response: Any = None
    completions: list = field(default_factory=list)
    effects: list = field(default_factory=list)

    def extend(self, other: "Result") -> None:
        self.records.extend(other.records)
        self.completions.extend(other.completions)
        self.effects.extend(other.effects)

    def apply(self) -> None:
        """Make the step's deferred changes; call once its records are durable."""
        effects, self.effects = self.effects, []
        for effect in effects:
            effect()


@dataclass
class Checkpoint:
    """The groups (with their offsets and timers) a step may change, as they were before it."""

    groups: dict  # group id -> a deep copy of the group, or None if it did not exist
    offsets: dict  # group id -> a copy of its offsets, or None
    timers: dict


def _sync_ok(group: ClassicGroup, assignment: bytes) -> dict:
    return {
        "error_code": ErrorCode.NONE,
        "protocol_type": group.protocol_type,
        "protocol_name": group.protocol_name,
        "assignment": assignment,
    }


class GroupCoordinatorState(ConsumerGroupsMixin):
    """All groups and offsets of this coordinator (every ``__consumer_offsets`` partition)."""

    def __init__(self, config: GroupConfig | None = None, *, new_uuid: Callable[[], str] | None = None):
        self.config = config or GroupConfig()
        self.groups: dict[str, ClassicGroup] = {}
        # group id -> topic -> partition -> OffsetAndMetadata
        self.offsets: dict[str, dict[str, dict[int, OffsetAndMetadata]]] = {}
        self.timers = Timers()
        self.now = 0
        self._res = Result()
        self._new_uuid = new_uuid or (lambda: str(uuid.uuid4()))

    # -- plumbing ---------------------------------------------------------------------
    def _begin(self, now: int) -> Result:
        self.now = now
        self._res = Result()
        return self._res

    def _record(self, record: CoordinatorRecord) -> None:
        self._res.records.append(record)

    def _after_write(self, effect: Callable[[], None]) -> None:
        self._res.effects.append(effect)

    def next_deadline(self) -> int | None:
        return self.timers.next_deadline()

    def tick(self, now: int) -> Result:
        """Run every timer due at ``now``, earliest first, applying each one's effects at once.

        For callers that write nothing (tests of the state machine); a caller
        that appends records runs :meth:`run_timer` step by step instead.
        """
        res = self._begin(now)
        while (step := self.run_timer(now)) is not None:
            step.apply()
            res.extend(step)
        self._res = res
        return res

    def timer_scope(self, now: int) -> tuple | None:
        """The groups the next due timer may change (for :meth:`checkpoint`), or None if none is due.

        A group's timers touch only that group.  The coordinator-wide
        offset-retention timer touches many, but it changes nothing before
        its records are written (its changes are effects), so it needs no
        checkpoint: its scope is empty.
        """
        key = self.timers.peek_due(now)
        if key is None:
            return None
        gid = Timers.group_of(key)
        return () if gid is None else (gid,)

    def run_timer(self, now: int) -> Result | None:
        """Run the earliest timer due at ``now`` as one step, or return None if none is due."""
        due = self.timers.pop_due(now)
        if due is None:
            return None
        res = self._begin(now)
        _key, action = due
        action()
        return res

    # -- undo for membership steps ---------------------------------------------------
    def checkpoint(self, group_ids: Iterable[str]) -> Checkpoint:
        """Copy what a step over ``group_ids`` may change, so :meth:`restore` can undo it.

        Parked requests' waiters are shared, not copied: they are the
        caller's handles, and a restored group must still hold the very
        waiters its parked requests are waiting on.
        """
        groups: dict = {}
        offsets: dict = {}
        for gid in group_ids:
            group = self.groups.get(gid)
            if group is None:
                groups[gid] = None
            else:
                memo: dict = {}
                if isinstance(group, ClassicGroup):
                    for m in group.members.values():
                        for w in (m.join_waiter, m.sync_waiter):
                            if w is not None:
                                memo[id(w)] = w
                groups[gid] = copy.deepcopy(group, memo)
            by_topic = self.offsets.get(gid)
            # OffsetAndMetadata is immutable: copying the two dict levels is enough.
            offsets[gid] = None if by_topic is None else {t: dict(ps) for t, ps in by_topic.items()}
        return Checkpoint(groups, offsets, self.timers.snapshot(groups))

    def restore(self, cp: Checkpoint) -> None:
        """Undo a step: its groups, their offsets and timers are as at :meth:`checkpoint`."""
        for gid, group in cp.groups.items():
            if group is None:
                self.groups.pop(gid, None)
            else:
                self.groups[gid] = group
        for gid, by_topic in cp.offsets.items():
            if by_topic is None:
                self.offsets.pop(gid, None)
            else:
                self.offsets[gid] = by_topic
        self.timers.restore(cp.timers)

    def _classic(self, group_id: str) -> ClassicGroup | None:
        g = self.groups.get(group_id)
        return g if isinstance(g, ClassicGroup) else None

    def _hb_key(self, group: ClassicGroup, member_id: str):
        return ("heartbeat", group.group_id, member_id)

    def _reschedule_heartbeat(self, group: ClassicGroup, member: Member, timeout_ms: int | None = None) -> None:
        gid, mid = group.group_id, member.member_id
        timeout = member.session_timeout_ms if timeout_ms is None else timeout_ms
        self.timers.schedule(("heartbeat", gid, mid), self.now + timeout, lambda: self._expire_heartbeat(gid, mid))

    # ================================================================== JoinGroup
    def join(self, req: JoinRequest, now: int, waiter: Any) -> Result:
        res = self._begin(now)
        cfg = self.config
        if not req.group_id:
            res.response = join_error(ErrorCode.INVALID_GROUP_ID, req.member_id)
            return res
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            res.response = join_error(ErrorCode.INVALID_SESSION_TIMEOUT, req.member_id)
            return res
        unknown_member = req.member_id == ""
        group = self.groups.get(req.group_id)
        if isinstance(group, ConsumerGroup):
            if group.members:
                # Classic members cannot join a group run by the consumer protocol (no online migration).
                res.response = join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, req.member_id)
                return res
            self._delete_consumer_group_records(group)
            del self.groups[req.group_id]
            group = None
        records_before = len(res.records)
        is_new_group = group is None
        if group is None:
            if not unknown_member:
                res.response = join_error(ErrorCode.UNKNOWN_MEMBER_ID, req.member_id)
                return res
            group = ClassicGroup(req.group_id, EMPTY, state_timestamp=now)
            self.groups[req.group_id] = group
        if not self._accept_joining_member(group, req.member_id):
            self._remove_member_quietly(group, req.member_id)
            res.response = join_error(ErrorCode.GROUP_MAX_SIZE_REACHED, "")
        elif unknown_member:
            self._join_new_member(group, req, waiter)
        else:
            self._join_existing_member(group, req, waiter)
        if is_new_group and len(res.records) == records_before:
            # Persist the new (empty) group so it survives a restart.
            self._record(empty_group_metadata_record(group))
        return res

    def _respond(self, response: dict) -> None:
        self._res.response = response

    def _accept_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        max_size = self.config.max_size
        if group.state in (EMPTY, DEAD):
            return True
        if group.state is PREPARING_REBALANCE:
            m = group.members.get(member_id)
            return (m is not None and m.awaiting_join) or group.num_awaiting_join < max_size
        return group.has_member(member_id) or len(group.members) < max_size

    def _join_new_member(self, group: ClassicGroup, req: JoinRequest, waiter: Any) -> None:
        if group.state is DEAD:
            self._respond(join_error(ErrorCode.COORDINATOR_NOT_AVAILABLE, ""))
            return
        names = [name for name, _ in req.protocols]
        if not group.supports_protocols(req.protocol_type, names):
            self._respond(join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, ""))
            return
        prefix = req.group_instance_id if req.group_instance_id is not None else req.client_id
        new_member_id = f"{prefix}-{self._new_uuid()}"
        if req.group_instance_id is not None:
            existing = group.static_members.get(req.group_instance_id)
            if existing is not None:
                self._update_static_member(group, req, existing, new_member_id, waiter)
            else:
                self._add_member_then_rebalance(group, req, new_member_id, waiter)
        elif req.requires_known_member_id:
            # KIP-394: hand out the id and wait for the member to come back with it.
            group.pending_members.add(new_member_id)
            gid = group.group_id
            self.timers.schedule(
                ("heartbeat", gid, new_member_id),
                self.now + req.session_timeout_ms,
                lambda: self._expire_heartbeat(gid, new_member_id),
            )
            self._respond(join_error(ErrorCode.MEMBER_ID_REQUIRED, new_member_id))
        else:
            self._add_member_then_rebalance(group, req, new_member_id, waiter)

    def _current_generation_response(self, group: ClassicGroup, member_id: str, *, with_members: bool,
                                     leader: str | None = None, skip_assignment: bool = False) -> dict:
        return {
            "error_code": ErrorCode.NONE,
            "generation_id": group.generation_id,
            "protocol_type": group.protocol_type,
            "protocol_name": group.protocol_name,
            "leader": (group.leader_id if leader is None else leader) or "",
            "skip_assignment": skip_assignment,
            "member_id": member_id,
            "members": group.join_members() if with_members else [],
        }

    def _join_existing_member(self, group: ClassicGroup, req: JoinRequest, waiter: Any) -> None:
        member_id = req.member_id
        names = [name for name, _ in req.protocols]
        if group.state is DEAD:
            self._respond(join_error(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id))
            return
        if not group.supports_protocols(req.protocol_type, names):
            self._respond(join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id))
            return
        if member_id in group.pending_members:
            if req.group_instance_id is not None:
                # Pending members are dynamic by construction.
                self._respond(join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
                return
            self._add_member_then_rebalance(group, req, member_id, waiter)
            return
        err = group.validate_member(member_id, req.group_instance_id)
        if err:
            self._respond(join_error(err, member_id))
            return
        member = group.members[member_id]
        if group.state is PREPARING_REBALANCE:
            self._update_member_then_rebalance(group, member, req, waiter)
        elif group.state is COMPLETING_REBALANCE:
            if member.matches(req.protocols):
                # A retry of a join whose answer was lost: answer again.
                self._respond(self._current_generation_response(
                    group, member_id, with_members=group.is_leader(member_id)))
            else:
                self._update_member_then_rebalance(group, member, req, waiter)
        elif group.state is STABLE:
            if group.is_leader(member_id) or not member.matches(req.protocols):
                # The leader rejoining asks for a rebalance (e.g. topic metadata changed).
                self._update_member_then_rebalance(group, member, req, waiter)
            else:
                self._respond(self._current_generation_response(group, member_id, with_members=False))
        else:
            self._respond(join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id))

    def _update_member_then_rebalance(self, group, member, req: JoinRequest, waiter) -> None:
        # A member never has two joins parked; an older one (its connection is
        # gone) is released rather than left hanging.
        group.complete_join(member, join_error(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id),
                            self._res.completions)
        group.update_member(member, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms, waiter, True)
        self._maybe_prepare_rebalance_or_complete_join(group)

    def _add_member_then_rebalance(self, group: ClassicGroup, req: JoinRequest, member_id: str, waiter) -> None:
        member = Member(
            member_id, req.group_instance_id, req.client_id, req.client_host, req.rebalance_timeout_ms,
            req.session_timeout_ms, req.protocol_type, list(req.protocols),
        )
        member.is_new = True
        if group.state is PREPARING_REBALANCE and group.previous_state is EMPTY:
            group.new_member_added = True
        group.add(member, waiter, awaiting=True)
        # A parked new member cannot heartbeat; bound how long it may stay parked.
        self._reschedule_heartbeat(group, member, self.config.new_member_join_timeout_ms)
        self._maybe_prepare_rebalance_or_complete_join(group)

    def _update_static_member(self, group: ClassicGroup, req: JoinRequest, old_id: str, new_id: str, waiter) -> None:
        current_leader = group.leader_id
        out = self._res.completions
        member = group.replace_static_member(req.group_instance_id, old_id, new_id, out)
        self.timers.cancel(("heartbeat", group.group_id, old_id))
        self._reschedule_heartbeat(group, member)
        group.update_member(member, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms, waiter, True)
        if group.state is STABLE:
            if group.protocol_name == group.select_protocol():
                # Same protocol next generation: keep the assignment, no rebalance.
                self._record(group_metadata_record(group, group.assignments()))
                if req.supports_skip_assignment:
                    leader = group.is_leader(new_id)
                    response = self._current_generation_response(
                        group, new_id, with_members=leader, skip_assignment=leader)
                else:
                    response = self._current_generation_response(
                        group, new_id, with_members=False, leader=current_leader)
                group.complete_join(member, response, out)
            else:
                self._maybe_prepare_rebalance_or_complete_join(group)
        elif group.state is COMPLETING_REBALANCE:
            # The leader may already be assigning to the old member id: start over.
            self._prepare_rebalance(group)
        else:
            self._maybe_complete_join_phase(group)

    # -- rebalance ------------------------------------------------------------------------
    def _maybe_prepare_rebalance_or_complete_join(self, group: ClassicGroup) -> None:
        if group.can_rebalance():
            self._prepare_rebalance(group)
        else:
            self._maybe_complete_join_phase(group)

    def _maybe_complete_join_phase(self, group: ClassicGroup) -> None:
        if group.state is not PREPARING_REBALANCE:
            return
        if group.previous_state is EMPTY:
            return  # the initial rebalance waits for its delay
        if not group.has_all_members_joined():
            return
        self._complete_join(group)

    def _prepare_rebalance(self, group: ClassicGroup) -> None:
        if group.state is COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment(group, ErrorCode.REBALANCE_IN_PROGRESS)
        self._remove_sync_expiration(group)
        initial = group.state is EMPTY
        gid = group.group_id
        if initial:
            delay = self.config.initial_rebalance_delay_ms
            remaining = max(group.rebalance_timeout_ms() - delay, 0)
            self.timers.schedule(
                ("join", gid), self.now + delay, lambda: self._try_complete_initial_rebalance(gid, delay, remaining)
            )
        log.info("preparing to rebalance group %s in state %s with old generation %d",
                 gid, group.state, group.generation_id)
        group.transition(PREPARING_REBALANCE, self.now)
        if not initial:
            if group.has_all_members_joined():
                self._complete_join(group)
            else:
                self.timers.schedule(
                    ("join", gid), self.now + group.rebalance_timeout_ms(), lambda: self._complete_join_by_id(gid)
                )

    def _try_complete_initial_rebalance(self, group_id: str, delay: int, remaining: int) -> None:
        group = self._classic(group_id)
        if group is None:
            return
        if group.new_member_added and remaining != 0:
            group.new_member_added = False
            new_delay = min(self.config.initial_rebalance_delay_ms, remaining)
            new_remaining = max(remaining - delay, 0)
            self.timers.schedule(
                ("join", group_id), self.now + new_delay,
                lambda: self._try_complete_initial_rebalance(group_id, new_delay, new_remaining),
            )
        else:
            self._complete_join(group)

    def _complete_join_by_id(self, group_id: str) -> None:
        group = self._classic(group_id)
        if group is not None:
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        gid = group.group_id
        self.timers.cancel(("join", gid))
        for m in group.not_yet_rejoined():
            if not m.is_static:
                self._remove_member_quietly(group, m.member_id)
                self.timers.cancel(("heartbeat", gid, m.member_id))
        if group.state is DEAD:
            return
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Nobody rejoined: wait another round for session timeouts to clear the group.
            self.timers.schedule(("join", gid), self.now + group.rebalance_timeout_ms(),
                                 lambda: self._complete_join_by_id(gid))
            return
        group.init_next_generation(self.now)
        if group.state is EMPTY:
            log.info("group %s with generation %d is now empty", gid, group.generation_id)
            self._record(group_metadata_record(group, {}))
            return
        log.info("stabilized group %s generation %d (protocol %s) with %d members",
                 gid, group.generation_id, group.protocol_name, len(group.members))
        out = self._res.completions
        for m in list(group.members.values()):
            response = self._current_generation_response(group, m.member_id, with_members=group.is_leader(m.member_id))
            group.complete_join(m, response, out)
            self._reschedule_heartbeat(group, m)
            m.is_new = False
            group.pending_sync.add(m.member_id)
        generation = group.generation_id
        self.timers.schedule(("sync", gid), self.now + group.rebalance_timeout_ms(),
                             lambda: self._expire_pending_sync(gid, generation))

    def _remove_sync_expiration(self, group: ClassicGroup) -> None:
        group.pending_sync.clear()
        self.timers.cancel(("sync", group.group_id))

    def _expire_pending_sync(self, group_id: str, generation: int) -> None:
        group = self._classic(group_id)
        if group is None or generation != group.generation_id:
            return
        if group.state in (COMPLETING_REBALANCE, STABLE) and group.pending_sync:
            for mid in list(group.pending_sync):
                self._remove_member_quietly(group, mid)
                self.timers.cancel(("heartbeat", group_id, mid))
            self._prepare_rebalance(group)

    def _reset_and_propagate_assignment(self, group: ClassicGroup, error: ErrorCode) -> None:
        for m in group.members.values():
            m.assignment = b""
        self._propagate_assignment(group, error)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode) -> None:
        out = self._res.completions
        for m in group.members.values():
            if error == ErrorCode.NONE:
                response = _sync_ok(group, m.assignment)
            else:
                response = sync_error(error)
            if group.complete_sync(m, response, out):
                self._reschedule_heartbeat(group, m)

    def _remove_member_quietly(self, group: ClassicGroup, member_id: str) -> None:
        """Remove a member; a request of it still parked gets UNKNOWN_MEMBER_ID."""
        m = group.members.get(member_id)
        if m is not None:
            out = self._res.completions
            group.complete_join(m, join_error(ErrorCode.UNKNOWN_MEMBER_ID, ""), out)
            group.complete_sync(m, sync_error(ErrorCode.UNKNOWN_MEMBER_ID), out)
        group.remove(member_id)

    def _expire_heartbeat(self, group_id: str, member_id: str) -> None:
        group = self._classic(group_id)
        if group is None or group.state is DEAD:
            return
        if member_id in group.pending_members:
            group.remove(member_id)
            if group.state is PREPARING_REBALANCE and group.has_all_members_joined():
                self._complete_join(group)
            return
        member = group.members.get(member_id)
        if member is None or member.has_satisfied_heartbeat():
            return
        self._remove_member_and_update_group(group, member)

    def _remove_member_and_update_group(self, group: ClassicGroup, member: Member) -> None:
        log.info("member %s in group %s has failed (session timeout), removing it", member.member_id, group.group_id)
        self._remove_member_quietly(group, member.member_id)
        if group.state in (STABLE, COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance_or_complete_join(group)
        elif group.state is PREPARING_REBALANCE and group.has_all_members_joined():
            self._complete_join(group)

    # ================================================================== SyncGroup
    def sync(self, req: SyncRequest, now: int, waiter: Any) -> Result:
        res = self._begin(now)
        if not req.group_id:
            res.response = sync_error(ErrorCode.INVALID_GROUP_ID)
            return res
        group = self._classic(req.group_id)
        if group is None or group.state is EMPTY:
            res.response = sync_error(ErrorCode.UNKNOWN_MEMBER_ID)
            return res
        err = self._validate_sync(group, req)
        if err:
            res.response = sync_error(err)
        elif group.state is PREPARING_REBALANCE:
            res.response = sync_error(ErrorCode.REBALANCE_IN_PROGRESS)
        elif group.state is COMPLETING_REBALANCE:
            member = group.members[req.member_id]
            group.complete_sync(member, sync_error(ErrorCode.REBALANCE_IN_PROGRESS), self._res.completions)
            member.awaiting_sync = True
            member.sync_waiter = waiter
            self._remove_pending_sync_member(group, req.member_id)
            if group.is_leader(req.member_id):
                assignment = {mid: bytes(a) for mid, a in req.assignments.items()}
                for mid in group.members:
                    assignment.setdefault(mid, b"")
                self._record(group_metadata_record(group, assignment))
                # The record is appended before any of these answers leaves.
                for m in group.members.values():
                    m.assignment = assignment.get(m.member_id, b"")
                self._propagate_assignment(group, ErrorCode.NONE)
                group.transition(STABLE, self.now)
                log.info("assignment received from leader %s for group %s generation %d",
                         req.member_id, group.group_id, group.generation_id)
        elif group.state is STABLE:
            self._remove_pending_sync_member(group, req.member_id)
            res.response = _sync_ok(group, group.members[req.member_id].assignment)
        return res

    def _validate_sync(self, group: ClassicGroup, req: SyncRequest) -> ErrorCode:
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        err = group.validate_member(req.member_id, req.group_instance_id)
        if err:
            return err
        if req.generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if req.protocol_type is not None and req.protocol_type != group.protocol_type:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if req.protocol_name is not None and req.protocol_name != group.protocol_name:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return ErrorCode.NONE

    def _remove_pending_sync_member(self, group: ClassicGroup, member_id: str) -> None:
        group.pending_sync.discard(member_id)
        if group.state in (DEAD, EMPTY, PREPARING_REBALANCE) or not group.pending_sync:
            self.timers.cancel(("sync", group.group_id))

    # ================================================================== Heartbeat
    def heartbeat(self, req: HeartbeatRequest, now: int) -> Result:
        res = self._begin(now)
        res.response = {"error_code": self._heartbeat(req)}
        return res

    def _heartbeat(self, req: HeartbeatRequest) -> ErrorCode:
        if not req.group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._classic(req.group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        err = group.validate_member(req.member_id, req.group_instance_id)
        if err:
            return err
        if req.generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state is EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._reschedule_heartbeat(group, group.members[req.member_id])
        if group.state is PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    # ================================================================== LeaveGroup
    def leave(self, req: LeaveRequest, now: int) -> Result:
        res = self._begin(now)
        if not req.group_id:
            res.response = {"error_code": ErrorCode.INVALID_GROUP_ID, "members": []}
            return res
        group = self._classic(req.group_id)
        if group is None:
            res.response = {"error_code": ErrorCode.UNKNOWN_MEMBER_ID, "members": []}
            return res
        if group.state is DEAD:
            res.response = {"error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE, "members": []}
            return res
        answers = []
        left = False
        for ident in req.members:
            code = ErrorCode.NONE
            if ident.member_id == "":
                if ident.group_instance_id is not None and ident.group_instance_id in group.static_members:
                    self._remove_current_member(group, group.static_members[ident.group_instance_id])
                else:
                    code = ErrorCode.UNKNOWN_MEMBER_ID
            elif ident.member_id in group.pending_members:
                group.remove(ident.member_id)
                self.timers.cancel(("heartbeat", group.group_id, ident.member_id))
            else:
                code = group.validate_member(ident.member_id, ident.group_instance_id)
                if not code:
                    self._remove_current_member(group, ident.member_id)
            left = left or code == ErrorCode.NONE
            answers.append(
                {"member_id": ident.member_id, "group_instance_id": ident.group_instance_id, "error_code": code}
            )
        if left:
            if group.state in (STABLE, COMPLETING_REBALANCE):
                self._maybe_prepare_rebalance_or_complete_join(group)
            elif group.state is PREPARING_REBALANCE:
                self._maybe_complete_join_phase(group)
        res.response = {"error_code": ErrorCode.NONE, "members": answers}
        return res

    def _remove_current_member(self, group: ClassicGroup, member_id: str) -> None:
        self.timers.cancel(("heartbeat", group.group_id, member_id))
        self._remove_member_quietly(group, member_id)

    # ================================================================== offsets
    def commit_offsets(self, req: CommitRequest, now: int) -> Result:
        """Answer: {topic: {partition: error code}}."""
        res = self._begin(now)

        def all_failed(code):
            return {t: {p.partition: code for p in parts} for t, parts in req.topics.items()}

        if not req.group_id:
            res.response = all_failed(ErrorCode.INVALID_GROUP_ID)
            return res
        group = self.groups.get(req.group_id)
        if group is None:
            if req.generation_id < 0:
                # A "simple" group: offsets only, no membership.  It exists once its offsets do.
                group = ClassicGroup(req.group_id, EMPTY, state_timestamp=now)
                self._after_write(lambda gid=req.group_id, g=group: self.groups.setdefault(gid, g))
            else:
                code = ErrorCode.GROUP_ID_NOT_FOUND if req.version >= 9 else ErrorCode.ILLEGAL_GENERATION
                res.response = all_failed(code)
                return res
        err = group.validate_offset_commit(req.member_id, req.group_instance_id, req.generation_id)
        if err == ErrorCode.STALE_MEMBER_EPOCH and req.version < 9:
            err = ErrorCode.UNSUPPORTED_VERSION
        if err:
            res.response = all_failed(err)
            return res
        if isinstance(group, ClassicGroup) and group.state in (STABLE, PREPARING_REBALANCE):
            member = group.members.get(req.member_id)
            if member is not None:
                self._reschedule_heartbeat(group, member)
        expire = now + req.retention_time_ms if req.retention_time_ms != -1 else None
        answer: dict = {}
        max_meta = self.config.offset_metadata_max_bytes
        for topic, parts in req.topics.items():
            out = answer.setdefault(topic, {})
            for p in parts:
                meta = p.metadata if p.metadata is not None else ""
                if len(meta) > max_meta:
                    out[p.partition] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                    continue
                om = OffsetAndMetadata(p.offset, p.leader_epoch, meta, now, expire)
                self._record(offset_commit_record(req.group_id, topic, p.partition, om))
                self._after_write(lambda gid=req.group_id, t=topic, part=p.partition, om=om:
                                  self._put_offset(gid, t, part, om))
                out[p.partition] = ErrorCode.NONE
        res.response = answer
        return res

    def _put_offset(self, group_id: str, topic: str, partition: int, om: OffsetAndMetadata) -> None:
        self.offsets.setdefault(group_id, {}).setdefault(topic, {})[partition] = om

    def _drop_offset(self, group_id: str, topic: str, partition: int) -> bool:
        by_topic = self.offsets.get(group_id)
        if not by_topic or topic not in by_topic or partition not in by_topic[topic]:
            return False
        del by_topic[topic][partition]
        if not by_topic[topic]:
            del by_topic[topic]
        if not by_topic:
            del self.offsets[group_id]
        return True

    def fetch_offsets(self, group_id: str, topics: list | None, now: int, *, require_stable: bool = False,
                      member_id: str | None = None, member_epoch: int = -1):
        """(error, [(topic, [(partition, offset, leader epoch, metadata, error)])]).

        ``topics`` None asks for every committed offset of the group.  A
        group that does not exist has no offsets (not an error).  With no
        transactions, no offset is ever pending, so ``require_stable``
        changes nothing.
        """
        self.now = now
        group = self.groups.get(group_id)
        known = group is not None and group.state is not DEAD
        if isinstance(group, ConsumerGroup):
            err = group.validate_offset_fetch(member_id, member_epoch)
            if err:
                return err, []
        stored = self.offsets.get(group_id, {}) if known else {}
        result = []
        if topics is None:
            for topic, parts in stored.items():
                result.append(
                    (topic, [(p, om.offset, om.leader_epoch, om.metadata, ErrorCode.NONE) for p, om in sorted(parts.items())])
                )
            return ErrorCode.NONE, result
        for topic, partitions in topics:
            parts = stored.get(topic, {})
            rows = []
            for p in partitions:
                om = parts.get(p)
                if om is None:
                    rows.append((p, NO_OFFSET, -1, "", ErrorCode.NONE))
                else:
                    rows.append((p, om.offset, om.leader_epoch, om.metadata, ErrorCode.NONE))
            result.append((topic, rows))
        return ErrorCode.NONE, result

    def delete_offsets(self, group_id: str, topics: list, now: int) -> Result:
        """``topics``: [(topic, [partitions])]; answer (error, {topic: {partition: error}})."""
        res = self._begin(now)
        if not group_id:
            res.response = (ErrorCode.INVALID_GROUP_ID, {})
            return res
        group = self.groups.get(group_id)
        if group is None:
            res.response = (ErrorCode.GROUP_ID_NOT_FOUND, {})
            return res
        err = group.validate_offset_delete()
        if err:
            res.response = (err, {})
            return res
        answer: dict = {}
        for topic, partitions in topics:
            out = answer.setdefault(topic, {})
            subscribed = group.is_subscribed_to_topic(topic)
            for p in partitions:
                if subscribed:
                    out[p] = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
                    continue
                if p in self.offsets.get(group_id, {}).get(topic, {}):
                    self._record(offset_tombstone(group_id, topic, p))
                    self._after_write(lambda t=topic, part=p: self._drop_offset(group_id, t, part))
                out[p] = ErrorCode.NONE
        res.response = (ErrorCode.NONE, answer)
        return res

    def start(self, now: int) -> None:
        """Arm the periodic offset-expiry check (called once the log is loaded)."""
        self.now = now
        self._schedule_offset_expiry()

    def _schedule_offset_expiry(self) -> None:
        self.timers.schedule(("expire-offsets",), self.now + self.config.offsets_retention_check_interval_ms,
                             self._run_offset_expiry)

    def _run_offset_expiry(self) -> None:
        self.expire_offsets_now()
        self._schedule_offset_expiry()

    def expire_offsets_now(self) -> None:
        """Tombstone expired offsets; delete empty groups left with no offsets."""
        for gid in list(self.groups):
            group = self.groups[gid]
            all_gone = self._cleanup_expired_offsets(gid)
            if not all_gone:
                continue
            if isinstance(group, ClassicGroup) and group.state is EMPTY:
                self._record(group_tombstone(gid))
                self._after_write(lambda gid=gid, group=group: self._forget_expired_group(gid, group, dead=True))
            elif isinstance(group, ConsumerGroup) and not group.members:
                for rec in tombstones_for_group(gid):
                    self._record(rec)
                self._after_write(lambda gid=gid, group=group: self._forget_expired_group(gid, group))

    def _forget_expired_group(self, gid: str, group, dead: bool = False) -> None:
        # Only the object the expiry looked at: nothing runs between the decision and
        # this effect today, but a group re-created in between must not be deleted.
        if self.groups.get(gid) is group:
            if dead:
                group.state = DEAD
            del self.groups[gid]

    def _cleanup_expired_offsets(self, group_id: str) -> bool:
        by_topic = self.offsets.get(group_id)
        if not by_topic:
            return True
        group = self.groups[group_id]
        base = group.offset_expiration_base()
        if base is None:
            return False
        retention = self.config.offsets_retention_ms
        now = self.now
        all_expired = True
        for topic in list(by_topic):
            if group.is_subscribed_to_topic(topic):
                all_expired = False
                continue
            for p, om in list(by_topic[topic].items()):
                if om.expire_timestamp is not None:
                    expired = now >= om.expire_timestamp
                else:
                    expired = now - base(om) >= retention
                if expired:
                    self._record(offset_tombstone(group_id, topic, p))
                    self._after_write(lambda t=topic, part=p: self._drop_offset(group_id, t, part))
                else:
                    all_expired = False
        return all_expired

    # ================================================================== admin
    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()) -> list[dict]:
        states = {s.lower() for s in states}
        types = {t.lower() for t in types}
        out = []
        for g in self.groups.values():
            if g.state is DEAD:
                continue
            if states and g.state.value.lower() not in states:
                continue
            if types and g.type_name not in types:
                continue
            out.append(
                {
                    "group_id": g.group_id,
                    "protocol_type": g.protocol_type or "",
                    "group_state": g.state.value,
                    "group_type": g.type_name,
                }
            )
        return out

    def describe_group(self, group_id: str) -> dict | None:
        """A DescribeGroups entry, or None when the group does not exist."""
        g = self._classic(group_id)
        if g is None or g.state is DEAD:
            return None
        stable = g.state is STABLE
        members = []
        for m in g.members.values():
            members.append(
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "member_metadata": (m.metadata(g.protocol_name) or b"") if stable else b"",
                    "member_assignment": m.assignment if stable else b"",
                }
            )
        return {
            "error_code": ErrorCode.NONE,
            "group_id": group_id,
            "group_state": g.state.value,
            "protocol_type": g.protocol_type or "",
            "protocol_data": (g.protocol_name or "") if stable else "",
            "members": members,
        }

    def delete_groups(self, group_ids: list[str], now: int) -> Result:
        """Answer: [(group id, error)]."""
        res = self._begin(now)
        answers = []
        for gid in group_ids:
            group = self.groups.get(gid)
            if group is None:
                answers.append((gid, ErrorCode.GROUP_ID_NOT_FOUND))
                continue
            err = group.validate_delete()
            if err:
                answers.append((gid, err))
                continue
            for topic, parts in list(self.offsets.get(gid, {}).items()):
                for p in list(parts):
                    self._record(offset_tombstone(gid, topic, p))
            self.offsets.pop(gid, None)
            if isinstance(group, ConsumerGroup):
                self._delete_consumer_group_records(group)
            else:
                self._record(group_tombstone(gid))
                self._drop_group_timers(gid, group)
                group.state = DEAD
            del self.groups[gid]
            answers.append((gid, ErrorCode.NONE))
        res.response = answers
        return res

    def _drop_group_timers(self, gid: str, group: ClassicGroup) -> None:
        self.timers.cancel(("join", gid))
        self.timers.cancel(("sync", gid))
        for mid in list(group.members) + list(group.pending_members):
            self.timers.cancel(("heartbeat", gid, mid))

    # ================================================================== loading
    def replay(self, key_name: str, key, value) -> None:
        """Apply one stored record (decoded); used when loading ``__consumer_offsets``."""
        if self._replay_consumer(key_name, key, value):
            return
        if key_name in ("OffsetCommitKey", "LegacyOffsetCommitKey"):
            gid, topic, partition = key.group, key.topic, key.partition
            if value is None:
                self._drop_offset(gid, topic, partition)
                return
            if gid not in self.groups:
                self.groups[gid] = ClassicGroup(gid, EMPTY)
            expire = getattr(value, "expire_timestamp", -1)
            om = OffsetAndMetadata(
                value.offset,
                getattr(value, "leader_epoch", -1),
                value.metadata or "",
                value.commit_timestamp,
                expire if expire is not None and expire >= 0 else None,
            )
            self._put_offset(gid, topic, partition, om)
        elif key_name == "GroupMetadataKey":
            gid = key.group
            if value is None:
                self.groups.pop(gid, None)
                return
            group = ClassicGroup(
                gid,
                STABLE if value.members else EMPTY,
                state_timestamp=value.current_state_timestamp if value.current_state_timestamp != -1 else None,
                generation_id=value.generation,
                protocol_type=value.protocol_type or None,
                protocol_name=value.protocol,
                leader_id=value.leader,
            )
            for mm in value.members:
                rebalance_timeout = mm.rebalance_timeout if mm.rebalance_timeout != -1 else mm.session_timeout
                member = Member(
                    mm.member_id, mm.group_instance_id, mm.client_id, mm.client_host, rebalance_timeout,
                    mm.session_timeout, value.protocol_type, [(value.protocol, bytes(mm.subscription))],
                    bytes(mm.assignment),
                )
                group.add(member)
            group.leader_id = value.leader
            group.subscribed_topics = group.compute_subscribed_topics()
            self.groups[gid] = group
        # Records of other group types (streams, share) are not served: skipped.

    def on_loaded(self, now: int) -> Result:
        """After replay: start session timers; shrink groups above group.max.size."""
        res = self._begin(now)
        for group in list(self.groups.values()):
            if isinstance(group, ConsumerGroup):
                for m in group.members.values():
                    self._schedule_consumer_session(group, m)
                    if m.state.name == "UNREVOKED_PARTITIONS":
                        gid, mid, epoch = group.group_id, m.member_id, m.member_epoch
                        self.timers.schedule(("consumer-rebalance", gid, mid), now + max(m.rebalance_timeout_ms, 0),
                                             lambda gid=gid, mid=mid, epoch=epoch:
                                             self._consumer_rebalance_timeout(gid, mid, epoch))
                continue
            if not isinstance(group, ClassicGroup):
                continue
            for m in group.members.values():
                self._reschedule_heartbeat(group, m)
            if len(group.members) > self.config.max_size:
                self._prepare_rebalance(group)
        self._schedule_offset_expiry()
        return res


__all__ = [
    "GroupConfig",
    "GroupCoordinatorState",
    "GroupState",
    "JoinRequest",
    "SyncRequest",
    "HeartbeatRequest",
    "LeaveRequest",
    "LeaveMember",
    "CommitRequest",
    "CommitPartition",
    "Result",
    "ConsumerHeartbeatRequest",
    "StaticTopics",
]
