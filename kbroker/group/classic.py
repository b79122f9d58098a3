"""Classic (pre-KIP-848) consumer groups: the group and member objects.

A classic group moves through five states::

    Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
      ^                    ^    |                                  |  leader's SyncGroup
      |                    |    +-- no member left --> Empty       v
      +--------------------+------ member joins/leaves/fails --- Stable
    (any) --deleted/unloaded--> Dead

This module holds the data and the small rules that only look at one group
(who may join, which protocol wins, how members are validated).  The
request handling that ties groups to timers and records lives in
:mod:`kbroker.group.state`.  Waiting requests are represented by opaque
*waiter* objects supplied by the caller; completing one produces a
``(waiter, response)`` pair for the caller to deliver.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from protocol import ErrorCode

from .records import subscription_topics

CONSUMER_PROTOCOL_TYPE = "consumer"


class GroupState(str, enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"

    def __str__(self) -> str:
        return self.value


EMPTY = GroupState.EMPTY
PREPARING_REBALANCE = GroupState.PREPARING_REBALANCE
COMPLETING_REBALANCE = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

_VALID_PREVIOUS = {
    PREPARING_REBALANCE: {STABLE, COMPLETING_REBALANCE, EMPTY},
    COMPLETING_REBALANCE: {PREPARING_REBALANCE},
    STABLE: {COMPLETING_REBALANCE},
    EMPTY: {PREPARING_REBALANCE},
    DEAD: {STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, DEAD},
}


class IllegalTransition(RuntimeError):
    pass


@dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]  # (name, metadata), in the member's preference order
    assignment: bytes = b""
    is_new: bool = False
    awaiting_join: bool = False
    join_waiter: Any = None
    awaiting_sync: bool = False
    sync_waiter: Any = None

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str | None) -> bytes | None:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return None

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        """Same protocols, same metadata, same order."""
        if len(protocols) != len(self.protocols):
            return False
        return all(a[0] == b[0] and bytes(a[1]) == bytes(b[1]) for a, b in zip(protocols, self.protocols))

    def vote(self, candidates: set[str]) -> str:
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} does not support any of {sorted(candidates)}")

    def has_satisfied_heartbeat(self) -> bool:
        """Whether an expiring session leaves this member alone.

        New members may expire even while their join is parked; members that
        are parked in a rebalance (join or sync) count as alive.
        """
        if self.is_new:
            return False
        return self.awaiting_join or self.awaiting_sync


@dataclass
class ClassicGroup:
    group_id: str
    state: GroupState = EMPTY
    state_timestamp: int | None = None
    previous_state: GroupState = EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending_members: set[str] = field(default_factory=set)  # got MEMBER_ID_REQUIRED, not joined yet
    pending_sync: set[str] = field(default_factory=set)  # joined this generation, no SyncGroup yet
    supported_protocols: Counter = field(default_factory=Counter)
    num_awaiting_join: int = 0
    new_member_added: bool = False
    subscribed_topics: set[str] | None = None

    type_name = "classic"

    # -- state ---------------------------------------------------------------------
    def transition(self, new: GroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[new]:
            raise IllegalTransition(f"group {self.group_id}: {self.state} -> {new} is not allowed")
        self.previous_state = self.state
        self.state = new
        self.state_timestamp = now_ms

    def is_in(self, *states: GroupState) -> bool:
        return self.state in states

    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[PREPARING_REBALANCE]

    @property
    def is_simple(self) -> bool:
        """A group that only stores offsets: no protocol, no members."""
        return not self.protocol_type and not self.members and self.state is EMPTY

    # -- members ---------------------------------------------------------------------
    def has_member(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id is not None and self.leader_id == member_id

    def add(self, member: Member, waiter: Any = None, awaiting: bool = False) -> None:
        if member.group_instance_id is not None:
            if member.group_instance_id in self.static_members:
                raise ValueError(f"static member {member.group_instance_id} is already in group {self.group_id}")
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        self.supported_protocols.update(member.protocol_names())
        if awaiting:
            member.awaiting_join = True
            member.join_waiter = waiter
            self.num_awaiting_join += 1
        self.pending_members.discard(member.member_id)

    def remove(self, member_id: str) -> Member | None:
        member = self.members.pop(member_id, None)
        if member is not None:
            self.supported_protocols.subtract(member.protocol_names())
            if member.awaiting_join:
                self.num_awaiting_join -= 1
            if member.group_instance_id is not None:
                self.static_members.pop(member.group_instance_id, None)
        if self.is_leader(member_id):
            self.leader_id = next(iter(self.members), None)
        self.pending_members.discard(member_id)
        self.pending_sync.discard(member_id)
        return member

    def update_member(self, member: Member, protocols, rebalance_timeout_ms: int, session_timeout_ms: int,
                      waiter: Any = None, awaiting: bool = False) -> None:
        self.supported_protocols.subtract(member.protocol_names())
        member.protocols = list(protocols)
        self.supported_protocols.update(member.protocol_names())
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        if awaiting and not member.awaiting_join:
            self.num_awaiting_join += 1
        elif not awaiting and member.awaiting_join:
            self.num_awaiting_join -= 1
        member.awaiting_join = awaiting
        member.join_waiter = waiter if awaiting else None

    def complete_join(self, member: Member, response: dict, out: list) -> bool:
        if not member.awaiting_join:
            return False
        out.append((member.join_waiter, response))
        member.awaiting_join = False
        member.join_waiter = None
        self.num_awaiting_join -= 1
        return True

    def complete_sync(self, member: Member, response: dict, out: list) -> bool:
        if not member.awaiting_sync:
            return False
        out.append((member.sync_waiter, response))
        member.awaiting_sync = False
        member.sync_waiter = None
        return True

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str, out: list) -> Member:
        """Give a static member a new member id; parked requests of the old id are fenced."""
        old = self.members.pop(old_id)
        self.complete_join(old, join_error(ErrorCode.FENCED_INSTANCE_ID, old_id), out)
        self.complete_sync(old, sync_error(ErrorCode.FENCED_INSTANCE_ID), out)
        new = Member(
            new_id, old.group_instance_id, old.client_id, old.client_host, old.rebalance_timeout_ms,
            old.session_timeout_ms, old.protocol_type, list(old.protocols), old.assignment,
        )
        self.members[new_id] = new
        if self.is_leader(old_id):
            self.leader_id = new_id
        self.static_members[instance_id] = new_id
        return new

    def maybe_elect_new_joined_leader(self) -> bool:
        """Keep a leader that rejoined, else pick a member that did; False if none did."""
        if self.leader_id is None:
            return False
        leader = self.members.get(self.leader_id)
        if leader is not None and leader.awaiting_join:
            return True
        for m in self.members.values():
            if m.awaiting_join:
                self.leader_id = m.member_id
                return True
        return False

    def not_yet_rejoined(self) -> list[Member]:
        return [m for m in self.members.values() if not m.awaiting_join]

    def has_all_members_joined(self) -> bool:
        return len(self.members) == self.num_awaiting_join and not self.pending_members

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def validate_member(self, member_id: str, instance_id: str | None) -> ErrorCode:
        if instance_id is not None:
            existing = self.static_members.get(instance_id)
            if existing is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if existing != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    # -- protocols ---------------------------------------------------------------------
    def candidate_protocols(self) -> set[str]:
        n = len(self.members)
        return {name for name, count in self.supported_protocols.items() if count == n and n > 0}

    def supports_protocols(self, protocol_type: str, names: list[str]) -> bool:
        if self.state is EMPTY:
            return bool(protocol_type) and bool(names)
        n = len(self.members)
        return self.protocol_type == protocol_type and any(self.supported_protocols.get(x, 0) == n for x in names)

    def select_protocol(self) -> str:
        if not self.members:
            raise ValueError(f"cannot select a protocol for empty group {self.group_id}")
        candidates = self.candidate_protocols()
        votes: Counter = Counter()
        order: list[str] = []
        for m in self.members.values():
            choice = m.vote(candidates)
            if choice not in votes:
                order.append(choice)
            votes[choice] += 1
        # Most votes wins; ties go to the protocol voted for first.
        return max(order, key=lambda name: (votes[name], -order.index(name)))

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(EMPTY, now_ms)
        self.pending_sync.clear()

    def uses_consumer_protocol(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    def compute_subscribed_topics(self) -> set[str] | None:
        if not self.protocol_type or self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return set()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            meta = m.metadata(self.protocol_name)
            parsed = subscription_topics(meta) if meta is not None else None
            if parsed is None:
                return None
            topics |= parsed
        return topics

    def is_subscribed_to_topic(self, topic: str) -> bool:
        if self.subscribed_topics is None:
            return self.uses_consumer_protocol()
        return topic in self.subscribed_topics

    def join_members(self) -> list[dict]:
        """The member list a leader's JoinGroup response carries."""
        return [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata(self.protocol_name) or b"",
            }
            for m in self.members.values()
        ]

    def assignments(self) -> dict[str, bytes]:
        return {m.member_id: m.assignment for m in self.members.values()}

    # -- offsets ---------------------------------------------------------------------------
    def validate_offset_commit(self, member_id: str, instance_id: str | None, generation_id: int) -> ErrorCode:
        if self.state is DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation_id < 0 and self.state is EMPTY:
            # Admin clients and consumers that assign partitions themselves.
            return ErrorCode.NONE
        if generation_id >= 0 or member_id or instance_id is not None:
            err = self.validate_member(member_id, instance_id)
            if err:
                return err
            if generation_id != self.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
        elif self.state is not EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self.state is COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def offset_expiration_base(self):
        """A function offset -> timestamp retention counts from, or None: keep all offsets."""
        if self.protocol_type:
            if self.state is EMPTY:
                since = self.state_timestamp
                return lambda om: since if since is not None else om.commit_timestamp
            if self.uses_consumer_protocol() and self.subscribed_topics is not None and self.state is STABLE:
                return lambda om: om.commit_timestamp
            return None
        return lambda om: om.commit_timestamp

    def validate_offset_delete(self) -> ErrorCode:
        if self.state is DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if self.state is not EMPTY and not self.uses_consumer_protocol():
            return ErrorCode.NON_EMPTY_GROUP
        return ErrorCode.NONE

    def validate_delete(self) -> ErrorCode:
        if self.state is DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if self.state is not EMPTY:
            return ErrorCode.NON_EMPTY_GROUP
        return ErrorCode.NONE


def join_error(code: ErrorCode, member_id: str = "") -> dict:
    return {
        "error_code": code,
        "generation_id": -1,
        "protocol_type": None,
        "protocol_name": None,
        "leader": "",
        "skip_assignment": False,
        "member_id": member_id,
        "members": [],
    }


def sync_error(code: ErrorCode) -> dict:
    return {"error_code": code, "protocol_type": None, "protocol_name": None, "assignment": b""}
