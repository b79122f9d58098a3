"""KIP-848 consumer groups: the ConsumerGroupHeartbeat protocol, without IO.

The broker owns the assignment.  Each heartbeat of a member may:

1. create or update the member (subscription, rebalance timeout, assignor);
   a changed subscription, or a change in the subscribed topics' partitions,
   bumps the **group epoch**;
2. when the group epoch is ahead of the **target assignment epoch**, run the
   group's assignor (uniform or range) to compute a new target assignment;
3. reconcile the member towards its target, one step at a time: partitions
   it must give up are first revoked (state UNREVOKED_PARTITIONS, member
   epoch unchanged) and only once the member reports that it no longer owns
   them does it move to the target epoch; partitions still owned by another
   member are held back (UNRELEASED_PARTITIONS) until that member released
   them.

A member that stops heartbeating for ``group.consumer.session.timeout.ms``
is fenced (removed, group epoch bumped); one that does not revoke within its
rebalance timeout is fenced too.  Epoch -1 leaves; -2 is a static member's
temporary leave, keeping its assignment for its instance id until the
session expires.  Everything is persisted as Kafka's ConsumerGroup* records.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from protocol import ErrorCode

from . import assignors as A
from .records import CoordinatorRecord

LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2
CONSUMER_PROTOCOL_TYPE = "consumer"

Assignment = dict[uuid.UUID, set[int]]


class MemberState(enum.IntEnum):
    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127


class ConsumerGroupState(str, enum.Enum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


class TopicsView(Protocol):
    """What the state machine needs to know about topics (the metadata image)."""

    def lookup(self, name: str) -> tuple[uuid.UUID, int] | None: ...

    def name_of(self, topic_id: uuid.UUID) -> str | None: ...

    def names(self) -> Iterable[str]: ...


class StaticTopics:
    """A :class:`TopicsView` over a plain dict, for tests: name -> (topic id, partitions)."""

    def __init__(self, topics: dict[str, tuple[uuid.UUID, int]]):
        self.topics = topics

    def lookup(self, name):
        return self.topics.get(name)

    def name_of(self, topic_id):
        for name, (tid, _n) in self.topics.items():
            if tid == topic_id:
                return name
        return None

    def names(self):
        return list(self.topics)


def new_member_id() -> str:
    """A random id in Kafka's ``Uuid.toString`` form (url-safe base64, no padding)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def copy_assignment(a: Assignment) -> Assignment:
    return {t: set(ps) for t, ps in a.items() if ps}


def assignment_wire(a: Assignment) -> list[dict]:
    return [{"topic_id": t, "partitions": sorted(ps)} for t, ps in sorted(a.items(), key=lambda kv: str(kv[0])) if ps]


@dataclass
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: list[str] = field(default_factory=list)
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    rebalance_timeout_ms: int = -1
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)

    def subscription_key(self):
        return (self.instance_id, self.rack_id, self.client_id, self.client_host,
                tuple(self.subscribed_topic_names), self.subscribed_topic_regex, self.server_assignor,
                self.rebalance_timeout_ms)

    def assignment_key(self):
        return (self.member_epoch, self.previous_member_epoch, self.state,
                {t: frozenset(p) for t, p in self.assigned.items()},
                {t: frozenset(p) for t, p in self.pending_revocation.items()})

    def is_reconciled_to(self, epoch: int) -> bool:
        return self.state is MemberState.STABLE and self.member_epoch == epoch


@dataclass
class ConsumerGroup:
    group_id: str
    group_epoch: int = 0
    assignment_epoch: int = 0
    metadata_hash: int = 0
    members: dict[str, ConsumerMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    # Partitions' current owners' epochs: (topic id, partition) -> member epoch.
    owners: dict[tuple, int] = field(default_factory=dict)
    # Topic names the members subscribe to, regular expressions resolved (as of the last heartbeat).
    resolved_topics: set[str] | None = None

    type_name = "consumer"
    protocol_type = CONSUMER_PROTOCOL_TYPE

    @property
    def state(self) -> ConsumerGroupState:
        if not self.members:
            return ConsumerGroupState.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return ConsumerGroupState.ASSIGNING
        for m in self.members.values():
            if m.member_epoch != self.assignment_epoch or m.state is not MemberState.STABLE:
                return ConsumerGroupState.RECONCILING
        return ConsumerGroupState.STABLE

    def is_empty(self) -> bool:
        return not self.members

    def rebuild_owners(self) -> None:
        self.owners = {}
        for m in self.members.values():
            for src in (m.assigned, m.pending_revocation):
                for t, ps in src.items():
                    for p in ps:
                        self.owners[(t, p)] = m.member_epoch

    def subscribed_topic_names(self, topics: TopicsView | None = None) -> set[str]:
        names: set[str] = set()
        for m in self.members.values():
            names.update(m.subscribed_topic_names)
            if m.subscribed_topic_regex and topics is not None:
                names.update(resolve_regex(m.subscribed_topic_regex, topics))
        return names

    # -- offsets (validations mirror Kafka's ConsumerGroup) ---------------------------
    def validate_offset_commit(self, member_id: str, instance_id: str | None, epoch: int) -> ErrorCode:
        if epoch < 0 and not member_id and not self.members:
            return ErrorCode.NONE
        return self._member_epoch_error(member_id, epoch)

    def validate_offset_fetch(self, member_id: str | None, epoch: int) -> ErrorCode:
        if member_id is None or (epoch < 0 and not member_id):
            return ErrorCode.NONE
        return self._member_epoch_error(member_id, epoch)

    def _member_epoch_error(self, member_id: str, epoch: int) -> ErrorCode:
        m = self.members.get(member_id)
        if m is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if epoch != m.member_epoch:
            return ErrorCode.STALE_MEMBER_EPOCH
        return ErrorCode.NONE

    def is_subscribed_to_topic(self, topic: str) -> bool:
        if topic in self.subscribed_topic_names():
            return True
        return self.resolved_topics is not None and topic in self.resolved_topics

    def offset_expiration_base(self):
        return lambda om: om.commit_timestamp

    def validate_offset_delete(self) -> ErrorCode:
        return ErrorCode.NONE

    def validate_delete(self) -> ErrorCode:
        return ErrorCode.NONE if not self.members else ErrorCode.NON_EMPTY_GROUP


_regex_cache: dict[str, Any] = {}


def resolve_regex(regex: str, topics: TopicsView) -> set[str]:
    """Topic names fully matching ``regex`` (Kafka matches the whole name)."""
    pattern = _regex_cache.get(regex)
    if pattern is None:
        try:
            pattern = re.compile(regex)
        except re.error:
            return set()
        _regex_cache[regex] = pattern
    return {n for n in topics.names() if not n.startswith("__") and pattern.fullmatch(n)}


def metadata_signature(names: Iterable[str], topics: TopicsView) -> dict[str, tuple[uuid.UUID, int]]:
    out = {}
    for n in sorted(names):
        info = topics.lookup(n)
        if info is not None:
            out[n] = info
    return out


def signature_hash(sig: dict[str, tuple[uuid.UUID, int]]) -> int:
    h = hashlib.blake2b(digest_size=8)
    for name, (tid, n) in sorted(sig.items()):
        h.update(f"{name}\0{tid}\0{n}\n".encode())
    v = int.from_bytes(h.digest(), "big", signed=True)
    return v or 1


# -- records ------------------------------------------------------------------------------


def _tp_list(a: Assignment) -> list[dict]:
    return [{"topic_id": t, "partitions": sorted(ps)} for t, ps in sorted(a.items(), key=lambda kv: str(kv[0])) if ps]


def rec_group_epoch(group: ConsumerGroup) -> CoordinatorRecord:
    return CoordinatorRecord(group.group_id, "ConsumerGroupMetadataKey", {"group_id": group.group_id},
                             "ConsumerGroupMetadataValue",
                             {"epoch": group.group_epoch, "metadata_hash": group.metadata_hash}, 0)


def rec_member_subscription(gid: str, m: ConsumerMember) -> CoordinatorRecord:
    return CoordinatorRecord(
        gid, "ConsumerGroupMemberMetadataKey", {"group_id": gid, "member_id": m.member_id},
        "ConsumerGroupMemberMetadataValue",
        {
            "instance_id": m.instance_id,
            "rack_id": m.rack_id,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "subscribed_topic_names": list(m.subscribed_topic_names),
            "subscribed_topic_regex": m.subscribed_topic_regex,
            "rebalance_timeout_ms": m.rebalance_timeout_ms,
            "server_assignor": m.server_assignor,
        },
        0,
    )


def rec_target_member(gid: str, member_id: str, a: Assignment) -> CoordinatorRecord:
    return CoordinatorRecord(gid, "ConsumerGroupTargetAssignmentMemberKey", {"group_id": gid, "member_id": member_id},
                             "ConsumerGroupTargetAssignmentMemberValue", {"topic_partitions": _tp_list(a)}, 0)


def rec_target_epoch(group: ConsumerGroup) -> CoordinatorRecord:
    return CoordinatorRecord(group.group_id, "ConsumerGroupTargetAssignmentMetadataKey", {"group_id": group.group_id},
                             "ConsumerGroupTargetAssignmentMetadataValue",
                             {"assignment_epoch": group.assignment_epoch}, 0)


def rec_current_assignment(gid: str, m: ConsumerMember) -> CoordinatorRecord:
    return CoordinatorRecord(
        gid, "ConsumerGroupCurrentMemberAssignmentKey", {"group_id": gid, "member_id": m.member_id},
        "ConsumerGroupCurrentMemberAssignmentValue",
        {
            "member_epoch": m.member_epoch,
            "previous_member_epoch": m.previous_member_epoch,
            "state": int(m.state),
            "assigned_partitions": _tp_list(m.assigned),
            "partitions_pending_revocation": _tp_list(m.pending_revocation),
        },
        0,
    )


def tombstones_for_member(gid: str, member_id: str) -> list[CoordinatorRecord]:
    key = {"group_id": gid, "member_id": member_id}
    return [
        CoordinatorRecord(gid, "ConsumerGroupCurrentMemberAssignmentKey", key,
                          "ConsumerGroupCurrentMemberAssignmentValue", None),
        CoordinatorRecord(gid, "ConsumerGroupTargetAssignmentMemberKey", key,
                          "ConsumerGroupTargetAssignmentMemberValue", None),
        CoordinatorRecord(gid, "ConsumerGroupMemberMetadataKey", key, "ConsumerGroupMemberMetadataValue", None),
    ]


def tombstones_for_group(gid: str) -> list[CoordinatorRecord]:
    key = {"group_id": gid}
    return [
        CoordinatorRecord(gid, "ConsumerGroupTargetAssignmentMetadataKey", key,
                          "ConsumerGroupTargetAssignmentMetadataValue", None),
        CoordinatorRecord(gid, "ConsumerGroupMetadataKey", key, "ConsumerGroupMetadataValue", None),
    ]


def _from_tp_list(items) -> Assignment:
    return {tp.topic_id: set(tp.partitions) for tp in items if tp.partitions}


# -- reconciliation -------------------------------------------------------------------------


def next_assignment(member: ConsumerMember, target_epoch: int, target: Assignment, owners: dict,
                    owned: Assignment | None) -> ConsumerMember:
    """One reconciliation step of ``member`` towards ``target`` (Kafka's CurrentAssignmentBuilder)."""

    def owns_any(pending: Assignment) -> bool:
        if owned is None:
            return True  # the member did not say: assume it still owns them
        return any(owned.get(t, set()) & ps for t, ps in pending.items())

    def compute(epoch: int, assigned_now: Assignment) -> ConsumerMember:
        new_assigned: Assignment = {}
        pending_revocation: Assignment = {}
        pending_assignment: Assignment = {}
        unreleased = False
        for t in set(target) | set(assigned_now):
            tgt = target.get(t, set())
            cur = assigned_now.get(t, set())
            keep = cur & tgt
            revoke = cur - tgt
            add = set()
            for p in tgt - keep:
                owner_epoch = owners.get((t, p), -1)
                if owner_epoch != -1 and p not in cur:
                    unreleased = True
                else:
                    add.add(p)
            if keep:
                new_assigned[t] = keep
            if revoke:
                pending_revocation[t] = revoke
            if add:
                pending_assignment[t] = add
        m = ConsumerMember(**{**member.__dict__})
        if pending_revocation and owns_any(pending_revocation):
            m.state = MemberState.UNREVOKED_PARTITIONS
            m.previous_member_epoch = member.member_epoch
            m.member_epoch = epoch
            m.assigned = new_assigned
            m.pending_revocation = pending_revocation
            return m
        if pending_assignment:
            for t, ps in pending_assignment.items():
                new_assigned.setdefault(t, set()).update(ps)
        m.state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
        m.previous_member_epoch = member.member_epoch
        m.member_epoch = target_epoch
        m.assigned = new_assigned
        m.pending_revocation = {}
        return m

    if member.state is MemberState.UNREVOKED_PARTITIONS:
        if owns_any(member.pending_revocation):
            return member
        return compute(member.member_epoch, member.assigned)
    if member.state is MemberState.UNRELEASED_PARTITIONS or member.member_epoch != target_epoch:
        return compute(member.member_epoch, member.assigned)
    return member


# -- the heartbeat, as a mixin of GroupCoordinatorState ----------------------------------------


@dataclass
class ConsumerHeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: list | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: list | None = None  # [(topic id, [partitions])] or None
    client_id: str = ""
    client_host: str = ""
    version: int = 1


class _Fail(Exception):
    def __init__(self, code: ErrorCode, message: str | None = None):
        self.code = code
        self.message = message


class ConsumerGroupsMixin:
    """KIP-848 handling; mixed into :class:`~kbroker.group.state.GroupCoordinatorState`."""

    def _hb_response(self, code=ErrorCode.NONE, message=None, member_id=None, epoch=0, assignment=None):
        return {
            "error_code": code,
            "error_message": message,
            "member_id": member_id,
            "member_epoch": epoch,
            "heartbeat_interval_ms": self.config.consumer_heartbeat_interval_ms if code == ErrorCode.NONE else 0,
            "assignment": assignment,
        }

    def consumer_heartbeat(self, req: ConsumerHeartbeatRequest, now: int, topics: TopicsView):
        res = self._begin(now)
        try:
            self._validate_consumer_heartbeat(req)
            if req.member_epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
                res.response = self._consumer_leave(req, topics)
            else:
                res.response = self._consumer_heartbeat(req, topics)
        except _Fail as f:
            res.response = self._hb_response(f.code, f.message)
        return res

    def _validate_consumer_heartbeat(self, req: ConsumerHeartbeatRequest) -> None:
        if req.version >= 1 or req.member_epoch > 0 or req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH:
            if not req.member_id:
                raise _Fail(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
        if not req.group_id:
            raise _Fail(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
        if req.instance_id == "":
            raise _Fail(ErrorCode.INVALID_REQUEST, "InstanceId can't be empty.")
        if req.rack_id == "":
            raise _Fail(ErrorCode.INVALID_REQUEST, "RackId can't be empty.")
        if req.member_epoch == 0:
            if req.rebalance_timeout_ms == -1:
                raise _Fail(ErrorCode.INVALID_REQUEST, "RebalanceTimeoutMs must be provided in first request.")
            if req.owned is None or req.owned:
                raise _Fail(ErrorCode.INVALID_REQUEST, "TopicPartitions must be empty when (re-)joining.")
            if req.subscribed_topic_names is None and req.subscribed_topic_regex is None:
                raise _Fail(ErrorCode.INVALID_REQUEST,
                            "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.")
        elif req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            if req.instance_id is None:
                raise _Fail(ErrorCode.INVALID_REQUEST, "InstanceId can't be null.")
        elif req.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            raise _Fail(ErrorCode.INVALID_REQUEST, "MemberEpoch is invalid.")
        if req.server_assignor is not None and req.server_assignor not in self.config.consumer_assignors:
            raise _Fail(ErrorCode.UNSUPPORTED_ASSIGNOR,
                        f"ServerAssignor {req.server_assignor} is not supported. Supported assignors: "
                        f"{', '.join(self.config.consumer_assignors)}.")
        if req.subscribed_topic_regex:
            try:
                re.compile(req.subscribed_topic_regex)
            except re.error as e:
                raise _Fail(ErrorCode.INVALID_REGULAR_EXPRESSION,
                            f"SubscribedTopicRegex `{req.subscribed_topic_regex}` is not a valid regular expression: {e}.")

    def _consumer_group(self, group_id: str, create: bool) -> ConsumerGroup:
        g = self.groups.get(group_id)
        if isinstance(g, ConsumerGroup):
            return g
        if g is None:
            if not create:
                raise _Fail(ErrorCode.GROUP_ID_NOT_FOUND, f"Consumer group {group_id} not found.")
        elif create and g.state.value == "Empty" and not g.members:
            # An empty classic group (possibly only holding offsets) becomes a consumer group.
            self._record_classic_group_tombstone_if_persisted(g)
        else:
            raise _Fail(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group.")
        group = ConsumerGroup(group_id)
        self.groups[group_id] = group
        return group

    def _record_classic_group_tombstone_if_persisted(self, g) -> None:
        from .records import group_tombstone

        if g.protocol_type or g.generation_id:
            self._record(group_tombstone(g.group_id))

    def _consumer_heartbeat(self, req: ConsumerHeartbeatRequest, topics: TopicsView) -> dict:
        cfg = self.config
        joining = req.member_epoch == 0
        group = self._consumer_group(req.group_id, joining)
        gid = group.group_id
        member_id = req.member_id or new_member_id()
        if len(group.members) >= cfg.consumer_max_size and member_id not in group.members and (
                req.instance_id is None or req.instance_id not in group.static_members):
            raise _Fail(ErrorCode.GROUP_MAX_SIZE_REACHED,
                        f"The consumer group has reached its maximum capacity of {cfg.consumer_max_size} members.")
        owned = None if req.owned is None else {t: set(ps) for t, ps in req.owned}

        # -- the member ---------------------------------------------------------------
        if req.instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                if not joining:
                    raise _Fail(ErrorCode.UNKNOWN_MEMBER_ID,
                                f"Member {member_id} is not a member of group {gid}.")
                member = ConsumerMember(member_id)
            else:
                self._check_member_epoch(member, req.member_epoch, owned)
        else:
            existing_id = group.static_members.get(req.instance_id)
            existing = group.members.get(existing_id) if existing_id else None
            if joining:
                if existing is None:
                    member = group.members.get(member_id) or ConsumerMember(member_id)
                else:
                    if existing.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH and existing.member_id != member_id:
                        raise _Fail(ErrorCode.UNRELEASED_INSTANCE_ID,
                                    f"Static member {member_id} with instance id {req.instance_id} cannot join the "
                                    f"group because the instance id is owned by {existing.member_id} member.")
                    member = self._replace_static_member(group, existing, member_id)
            else:
                if existing is None:
                    raise _Fail(ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {req.instance_id} is unknown.")
                if existing.member_id != member_id:
                    raise _Fail(ErrorCode.FENCED_INSTANCE_ID,
                                f"Static member {member_id} with instance id {req.instance_id} was fenced by member "
                                f"{existing.member_id}.")
                self._check_member_epoch(existing, req.member_epoch, owned)
                member = existing

        updated = ConsumerMember(**{**member.__dict__})
        if req.instance_id is not None:
            updated.instance_id = req.instance_id
        if req.rack_id is not None:
            updated.rack_id = req.rack_id
        if req.rebalance_timeout_ms != -1:
            updated.rebalance_timeout_ms = req.rebalance_timeout_ms
        if req.server_assignor is not None:
            updated.server_assignor = req.server_assignor
        if req.subscribed_topic_names is not None:
            updated.subscribed_topic_names = list(req.subscribed_topic_names)
        if req.subscribed_topic_regex is not None:
            updated.subscribed_topic_regex = req.subscribed_topic_regex or None
        updated.client_id = req.client_id
        updated.client_host = req.client_host

        is_new = member.member_id not in group.members
        bump = group.group_epoch == 0
        if is_new or updated.subscription_key() != member.subscription_key():
            self._record(rec_member_subscription(gid, updated))
            if (is_new or updated.subscribed_topic_names != member.subscribed_topic_names
                    or updated.subscribed_topic_regex != member.subscribed_topic_regex):
                bump = True
        group.members[updated.member_id] = updated
        if updated.instance_id is not None:
            group.static_members[updated.instance_id] = updated.member_id

        # -- group epoch: subscriptions and the subscribed topics' partitions ----------------
        names = group.subscribed_topic_names(topics)
        group.resolved_topics = names
        sig_hash = signature_hash(metadata_signature(names, topics))
        if sig_hash != group.metadata_hash:
            group.metadata_hash = sig_hash
            bump = True
        if bump:
            group.group_epoch += 1
            self._record(rec_group_epoch(group))

        # -- target assignment -------------------------------------------------------------
        if group.group_epoch > group.assignment_epoch:
            self._compute_target_assignment(group, topics)

        # -- reconcile ----------------------------------------------------------------------
        before = group.members[updated.member_id]
        after = self._reconcile(group, before, owned)
        self._schedule_consumer_session(group, after)

        full_request = joining or (req.rebalance_timeout_ms != -1 and req.subscribed_topic_names is not None
                                   and req.owned is not None)
        assignment = None
        if full_request or after.assigned != member.assigned:
            assignment = {"topic_partitions": assignment_wire(after.assigned)}
        return self._hb_response(member_id=after.member_id, epoch=after.member_epoch, assignment=assignment)

    def _check_member_epoch(self, member: ConsumerMember, epoch: int, owned: Assignment | None) -> None:
        if epoch > member.member_epoch:
            raise _Fail(ErrorCode.FENCED_MEMBER_EPOCH,
                        f"The consumer group member has a greater member epoch ({epoch}) than the one known by "
                        f"the group coordinator ({member.member_epoch}). The member must abandon all its "
                        f"partitions and rejoin.")
        if epoch < member.member_epoch:
            subset = owned is not None and all(
                t in member.assigned and ps <= member.assigned[t] for t, ps in owned.items() if ps)
            if epoch != member.previous_member_epoch or not subset:
                raise _Fail(ErrorCode.FENCED_MEMBER_EPOCH,
                            f"The consumer group member has a smaller member epoch ({epoch}) than the one known by "
                            f"the group coordinator ({member.member_epoch}). The member must abandon all its "
                            f"partitions and rejoin.")

    def _replace_static_member(self, group: ConsumerGroup, old: ConsumerMember, new_id: str) -> ConsumerMember:
        gid = group.group_id
        new = ConsumerMember(**{**old.__dict__})
        new.member_id = new_id
        new.member_epoch = 0
        new.previous_member_epoch = 0
        for rec in tombstones_for_member(gid, old.member_id):
            self._record(rec)
        self.timers.cancel(("consumer-session", gid, old.member_id))
        self.timers.cancel(("consumer-rebalance", gid, old.member_id))
        del group.members[old.member_id]
        target = group.target.pop(old.member_id, None)
        group.members[new_id] = new
        self._record(rec_member_subscription(gid, new))
        if target is not None:
            group.target[new_id] = target
            self._record(rec_target_member(gid, new_id, target))
        self._record(rec_current_assignment(gid, new))
        group.rebuild_owners()
        return new

    def _compute_target_assignment(self, group: ConsumerGroup, topics: TopicsView) -> None:
        gid = group.group_id
        assignor = self._group_assignor(group)
        subs: dict[str, set[uuid.UUID]] = {}
        parts: dict[uuid.UUID, int] = {}
        for m in group.members.values():
            names = set(m.subscribed_topic_names)
            if m.subscribed_topic_regex:
                names |= resolve_regex(m.subscribed_topic_regex, topics)
            ids = set()
            for n in names:
                info = topics.lookup(n)
                if info is not None:
                    ids.add(info[0])
                    parts[info[0]] = info[1]
            subs[m.member_id] = ids
        new_target = A.ASSIGNORS[assignor](subs, parts, group.target)
        for mid in group.members:
            a = new_target.get(mid, {})
            a = {t: ps for t, ps in a.items() if ps}
            if group.target.get(mid) != a or mid not in group.target:
                self._record(rec_target_member(gid, mid, a))
            group.target[mid] = a
        group.assignment_epoch = group.group_epoch
        self._record(rec_target_epoch(group))

    def _group_assignor(self, group: ConsumerGroup) -> str:
        votes: dict[str, int] = {}
        for m in group.members.values():
            if m.server_assignor:
                votes[m.server_assignor] = votes.get(m.server_assignor, 0) + 1
        if votes:
            return max(sorted(votes), key=lambda a: votes[a])
        return self.config.consumer_assignors[0]

    def _reconcile(self, group: ConsumerGroup, member: ConsumerMember, owned: Assignment | None) -> ConsumerMember:
        gid = group.group_id
        target = group.target.get(member.member_id, {})
        if member.is_reconciled_to(group.assignment_epoch):
            updated = member
        else:
            others = {tp: e for tp, e in group.owners.items()}
            for src in (member.assigned, member.pending_revocation):
                for t, ps in src.items():
                    for p in ps:
                        others.pop((t, p), None)
            updated = next_assignment(member, group.assignment_epoch, target, others, owned)
            if updated.assignment_key() != member.assignment_key():
                self._record(rec_current_assignment(gid, updated))
                group.members[updated.member_id] = updated
                group.rebuild_owners()
        key = ("consumer-rebalance", gid, updated.member_id)
        if updated.state is MemberState.UNREVOKED_PARTITIONS:
            if not self.timers.is_scheduled(key):
                epoch, mid = updated.member_epoch, updated.member_id
                self.timers.schedule(key, self.now + max(updated.rebalance_timeout_ms, 0),
                                     lambda: self._consumer_rebalance_timeout(gid, mid, epoch))
        else:
            self.timers.cancel(key)
        return updated

    def _schedule_consumer_session(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        gid, mid = group.group_id, member.member_id
        self.timers.schedule(("consumer-session", gid, mid), self.now + self.config.consumer_session_timeout_ms,
                             lambda: self._consumer_session_timeout(gid, mid))

    def _consumer_session_timeout(self, gid: str, mid: str) -> None:
        group = self.groups.get(gid)
        if isinstance(group, ConsumerGroup) and mid in group.members:
            self._fence_consumer_member(group, group.members[mid], "session timeout")

    def _consumer_rebalance_timeout(self, gid: str, mid: str, epoch: int) -> None:
        group = self.groups.get(gid)
        if not isinstance(group, ConsumerGroup):
            return
        m = group.members.get(mid)
        if m is not None and m.member_epoch == epoch and m.state is MemberState.UNREVOKED_PARTITIONS:
            self._fence_consumer_member(group, m, "rebalance timeout")

    def _fence_consumer_member(self, group: ConsumerGroup, member: ConsumerMember, why: str) -> None:
        import logging

        logging.getLogger("kbroker.group").info("fencing member %s of consumer group %s (%s)",
                                                member.member_id, group.group_id, why)
        self._remove_consumer_member(group, member)

    def _remove_consumer_member(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        gid = group.group_id
        for rec in tombstones_for_member(gid, member.member_id):
            self._record(rec)
        self.timers.cancel(("consumer-session", gid, member.member_id))
        self.timers.cancel(("consumer-rebalance", gid, member.member_id))
        group.members.pop(member.member_id, None)
        group.target.pop(member.member_id, None)
        if member.instance_id is not None and group.static_members.get(member.instance_id) == member.member_id:
            del group.static_members[member.instance_id]
        group.rebuild_owners()
        group.group_epoch += 1
        self._record(rec_group_epoch(group))

    def _consumer_leave(self, req: ConsumerHeartbeatRequest, topics: TopicsView) -> dict:
        group = self._consumer_group(req.group_id, False)
        if req.instance_id is None:
            member = group.members.get(req.member_id)
            if member is None:
                raise _Fail(ErrorCode.UNKNOWN_MEMBER_ID, f"Member {req.member_id} is not a member of group {group.group_id}.")
        else:
            mid = group.static_members.get(req.instance_id)
            member = group.members.get(mid) if mid else None
            if member is None:
                raise _Fail(ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {req.instance_id} is unknown.")
            if member.member_id != req.member_id:
                raise _Fail(ErrorCode.FENCED_INSTANCE_ID,
                            f"Static member {req.member_id} with instance id {req.instance_id} was fenced by member "
                            f"{member.member_id}.")
        if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            # Keep the assignment for the instance id until the session times out.
            updated = ConsumerMember(**{**member.__dict__})
            updated.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH
            updated.previous_member_epoch = member.member_epoch
            group.members[member.member_id] = updated
            self._record(rec_current_assignment(group.group_id, updated))
            group.rebuild_owners()
            self._schedule_consumer_session(group, updated)
            return self._hb_response(member_id=member.member_id, epoch=LEAVE_GROUP_STATIC_MEMBER_EPOCH)
        self._remove_consumer_member(group, member)
        return self._hb_response(member_id=member.member_id, epoch=LEAVE_GROUP_MEMBER_EPOCH)

    # -- describe / admin ------------------------------------------------------------------------
    def consumer_group_describe(self, group_id: str, topics: TopicsView) -> dict | None:
        g = self.groups.get(group_id)
        if not isinstance(g, ConsumerGroup):
            return None

        def wire(a: Assignment):
            out = []
            for t, ps in sorted(a.items(), key=lambda kv: str(kv[0])):
                if ps:
                    out.append({"topic_id": t, "topic_name": topics.name_of(t) or "", "partitions": sorted(ps)})
            return {"topic_partitions": out}

        members = []
        for m in g.members.values():
            members.append({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "rack_id": m.rack_id,
                "member_epoch": m.member_epoch,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "subscribed_topic_names": list(m.subscribed_topic_names),
                "subscribed_topic_regex": m.subscribed_topic_regex,
                "assignment": wire(m.assigned),
                "target_assignment": wire(g.target.get(m.member_id, {})),
                "member_type": 1,  # 1: consumer protocol, 0: classic
            })
        return {
            "error_code": ErrorCode.NONE,
            "error_message": None,
            "group_id": group_id,
            "group_state": g.state.value,
            "group_epoch": g.group_epoch,
            "assignment_epoch": g.assignment_epoch,
            "assignor_name": self._group_assignor(g),
            "members": members,
        }

    def _delete_consumer_group_records(self, group: ConsumerGroup) -> None:
        gid = group.group_id
        for mid in list(group.members):
            for rec in tombstones_for_member(gid, mid):
                self._record(rec)
            self.timers.cancel(("consumer-session", gid, mid))
            self.timers.cancel(("consumer-rebalance", gid, mid))
        for rec in tombstones_for_group(gid):
            self._record(rec)

    # -- loading ----------------------------------------------------------------------------------
    def _replay_consumer(self, key_name: str, key, value) -> bool:
        """Apply a ConsumerGroup* record; False if ``key_name`` is not one."""
        if not key_name.startswith("ConsumerGroup"):
            return False
        gid = key.group_id
        g = self.groups.get(gid)
        if not isinstance(g, ConsumerGroup):
            if value is None:
                return True
            g = ConsumerGroup(gid)
            self.groups[gid] = g  # replaces a simple (offsets-only) classic group
        if key_name == "ConsumerGroupMetadataKey":
            if value is None:
                if not g.members:
                    del self.groups[gid]
            else:
                g.group_epoch = value.epoch
                g.metadata_hash = getattr(value, "metadata_hash", 0) or 0
        elif key_name == "ConsumerGroupTargetAssignmentMetadataKey":
            g.assignment_epoch = value.assignment_epoch if value is not None else 0
        elif key_name == "ConsumerGroupMemberMetadataKey":
            mid = key.member_id
            if value is None:
                m = g.members.pop(mid, None)
                if m is not None and m.instance_id is not None and g.static_members.get(m.instance_id) == mid:
                    del g.static_members[m.instance_id]
            else:
                m = g.members.get(mid) or ConsumerMember(mid)
                m.instance_id = value.instance_id
                m.rack_id = value.rack_id
                m.client_id = value.client_id
                m.client_host = value.client_host
                m.subscribed_topic_names = list(value.subscribed_topic_names)
                m.subscribed_topic_regex = value.subscribed_topic_regex
                m.rebalance_timeout_ms = value.rebalance_timeout_ms
                m.server_assignor = value.server_assignor
                g.members[mid] = m
                if m.instance_id is not None:
                    g.static_members[m.instance_id] = mid
        elif key_name == "ConsumerGroupTargetAssignmentMemberKey":
            if value is None:
                g.target.pop(key.member_id, None)
            else:
                g.target[key.member_id] = _from_tp_list(value.topic_partitions)
        elif key_name == "ConsumerGroupCurrentMemberAssignmentKey":
            m = g.members.get(key.member_id)
            if value is not None:
                if m is None:
                    m = ConsumerMember(key.member_id)
                    g.members[key.member_id] = m
                m.member_epoch = value.member_epoch
                m.previous_member_epoch = value.previous_member_epoch
                try:
                    m.state = MemberState(value.state)
                except ValueError:
                    m.state = MemberState.UNKNOWN
                m.assigned = _from_tp_list(value.assigned_partitions)
                m.pending_revocation = _from_tp_list(value.partitions_pending_revocation)
            elif m is not None:
                m.member_epoch = LEAVE_GROUP_MEMBER_EPOCH
                m.assigned, m.pending_revocation = {}, {}
        g.rebuild_owners()
        return True
