"""The controller's decisions: admin requests in, metadata records and results out.

Pure logic over a :class:`~kbroker.metadata.image.MetadataImage`: nothing
here writes a file or touches a socket.  A decision returns the KRaft records
that carry it out (``(schema name, body)`` pairs) together with the per-item
results the API answers with; the caller appends the records to the metadata
log and applies them to the image.  Today the quorum is this one node; the
cluster work replaces the caller with Raft, not this module.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from protocol import ErrorCode

from ..metadata.image import BROKER_RESOURCE, TOPIC_RESOURCE, MetadataImage
from ..metadata.image import collision_key as _collision_key

Record = tuple  # (schema name, body dict)

MAX_TOPIC_NAME = 249

# Kafka's QuorumController refuses any user operation that would write more
# than this many metadata records (MAX_RECORDS_PER_USER_OP = the largest batch
# it writes): one request must not be able to hold the controller, the
# metadata log and every broker's image hostage.  CreateTopics and
# CreatePartitions also refuse more new partitions than this before building
# a single record, so a 1,000,000-partition request costs a sum, not a plan.
MAX_RECORDS_PER_USER_OP = 10_000
MAX_PARTITIONS_PER_BATCH = 10_000
TOO_MANY_PARTITIONS = "Excessively large number of partitions per request."
TOO_MANY_RECORDS = "Unable to perform excessively large batch operation."
# kbroker does not copy partitions between brokers yet (issue 9): the broker
# builds its Controller with max_replication_factor=1.
NO_REPLICATION = ("kbroker does not replicate partitions yet: the replication factor must be 1 "
                  "(replication is issue 9)")
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")


def topic_name_error(name: str) -> str | None:
    """Why ``name`` is not a legal topic name (Kafka's rules), or None."""
    if not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return "Topic name cannot be \".\" or \"..\""
    if len(name) > MAX_TOPIC_NAME:
        return f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME} characters"
    if not _LEGAL.match(name):
        return (
            f"Topic name \"{name}\" is illegal, it contains a character other than ASCII "
            "alphanumerics, '.', '_' and '-'"
        )
    return None


def rack_alternated(brokers) -> list[int]:
    """Broker ids in the order placement walks them: racks taken in turn (Kafka's rack-aware order).

    Replicas of a partition are consecutive brokers of this list, and
    consecutive partitions start one broker further on, so with racks set
    (``broker.rack``) a partition's replicas land on different racks and
    leaders spread over racks too.  Without racks it is simply the sorted ids.
    """
    by_rack: dict = {}
    for b in sorted(brokers, key=lambda b: b.broker_id):
        by_rack.setdefault(b.rack or "", []).append(b.broker_id)
    if len(by_rack) <= 1:
        return [i for ids in by_rack.values() for i in ids]
    racks = [by_rack[r] for r in sorted(by_rack)]
    out = []
    for i in range(max(len(ids) for ids in racks)):
        out.extend(ids[i] for ids in racks if i < len(ids))
    return out


@dataclass
class TopicResult:
    name: str
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    topic_id: uuid.UUID = field(default_factory=lambda: uuid.UUID(int=0))
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict = field(default_factory=dict)


def requested_partitions(num_partitions: int, assignments: int, default_partitions: int) -> int:
    """The partitions one CreateTopics entry asks for, given its partition
    count and how many manual assignments it lists (Kafka's upper-bound
    count: invalid counts add nothing, -1 means the default)."""
    if assignments:
        return assignments
    if num_partitions == -1:
        return default_partitions
    return max(num_partitions, 0)


class Controller:
    """Turns admin requests into metadata records (a quorum of one, for now)."""

    def __init__(self, image: MetadataImage, *, validate_topic_config, defaults: dict,
                 max_replication_factor: int | None = None):
        self.image = image
        self.validate_topic_config = validate_topic_config
        self.defaults = defaults  # num.partitions, default.replication.factor
        self.max_replication_factor = max_replication_factor

    # -- brokers -------------------------------------------------------------
    def register_broker(self, broker_id: int, endpoints: list, rack=None, epoch: int = 0) -> list[Record]:
        return [
            (
                "RegisterBrokerRecord",
                {
                    "broker_id": broker_id,
                    "incarnation_id": uuid.uuid4(),
                    "broker_epoch": epoch,
                    "end_points": [
                        {"name": e.name, "host": e.host, "port": e.port, "security_protocol": 0}
                        for e in endpoints
                    ],
                    "rack": rack,
                    "fenced": False,
                },
            )
        ]

    def fence_broker(self, broker_id: int, epoch: int) -> list[Record]:
        """Fence a broker and move the leadership of every partition it leads.

        As Kafka's controller does: the new leader is another in-sync replica
        that is not fenced; with none (a single replica) the partition has no
        leader (-1) until that broker is back, and clients are told
        LEADER_NOT_AVAILABLE rather than sent to a dead broker.  The ISR is
        left as it is (never empty), so the last replica can lead again.
        """
        live = {b.broker_id for b in self.image.live_brokers()} - {broker_id}
        records: list[Record] = [("FenceBrokerRecord", {"id": broker_id, "epoch": epoch})]
        for t in self.image.topics.values():
            for p in t.partitions.values():
                if p.leader == broker_id:
                    leader = next((r for r in p.isr if r in live), -1)
                    records.append(self._leader_change(t.topic_id, p.partition_id, leader))
        return records

    def unfence_broker(self, broker_id: int, epoch: int) -> list[Record]:
        return [("UnfenceBrokerRecord", {"id": broker_id, "epoch": epoch}), *self.leaderless_for(broker_id)]

    def leaderless_for(self, broker_id: int) -> list[Record]:
        """Leadership, for a broker coming back, of the leaderless partitions it is in sync for."""
        return [self._leader_change(t.topic_id, p.partition_id, broker_id)
                for t in self.image.topics.values() for p in t.partitions.values()
                if p.leader < 0 and broker_id in p.isr]

    @staticmethod
    def _leader_change(topic_id, partition_id: int, leader: int) -> Record:
        return ("PartitionChangeRecord", {"partition_id": partition_id, "topic_id": topic_id, "leader": leader})

    # -- topics ----------------------------------------------------------------
    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        assignments: list[tuple[int, list[int]]] | dict[int, list[int]] | None = None,
        configs: dict[str, str | None] | None = None,
        pending: set[str] | None = None,
        pending_keys: dict[str, str] | None = None,
    ) -> tuple[list[Record], TopicResult]:
        """Records creating one topic, or an error result and no records.

        ``pending`` / ``pending_keys`` are the names (and their collision keys)
        of topics created earlier in the same request, so that one request
        cannot create a topic twice or two colliding topics."""
        res = TopicResult(name)

        def fail(code, msg):
            res.error, res.message = code, msg
            return [], res

        err = topic_name_error(name)
        if err:
            return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, err)
        if name in self.image.topics or (pending and name in pending):
            return fail(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        # An index lookup, not a scan of every topic: a request naming
        # thousands of topics on a cluster with thousands must stay linear.
        other = self.image.colliding_topic(name) or (pending_keys or {}).get(_collision_key(name))
        if other is not None:
            return fail(
                ErrorCode.INVALID_TOPIC_EXCEPTION,
                f"Topic '{name}' collides with existing topic: {other}",
            )
        live = rack_alternated(self.image.live_brokers())
        if assignments:
            if replication_factor != -1:
                return fail(
                    ErrorCode.INVALID_REQUEST,
                    "A manual partition assignment was specified, but replication factor was not set to -1.",
                )
            if num_partitions != -1:
                return fail(
                    ErrorCode.INVALID_REQUEST,
                    "A manual partition assignment was specified, but numPartitions was not set to -1.",
                )
            # A list of (partition, replicas) pairs as the request carries them:
            # a dict would silently keep the last of two entries for one partition.
            by_partition: dict[int, list[int]] = {}
            for p, replicas in assignments.items() if isinstance(assignments, dict) else assignments:
                if p in by_partition:
                    return fail(
                        ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                        f"Found multiple manual partition assignments for partition {p}",
                    )
                by_partition[p] = list(replicas)
            assignments = by_partition
            parts = sorted(assignments)
            if parts != list(range(len(parts))):
                return fail(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    "partitions should be a consecutive 0-based integer sequence",
                )
            rf = None
            for p in parts:
                err = self.assignment_error(assignments[p], rf)
                if err:
                    return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, err)
                rf = len(assignments[p])
            plan = {p: list(r) for p, r in assignments.items()}
            replication_factor = rf
        else:
            if num_partitions == -1:
                num_partitions = self.defaults["num.partitions"]
            if replication_factor == -1:
                replication_factor = self.defaults["default.replication.factor"]
            if num_partitions <= 0:
                return fail(ErrorCode.INVALID_PARTITIONS, "Number of partitions was set to an invalid non-positive value.")
            if replication_factor <= 0:
                return fail(
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    "Replication factor must be larger than 0, or -1 to use the default value.",
                )
            if replication_factor > len(live):
                return fail(
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"Unable to replicate the partition {replication_factor} time(s): The target "
                    f"replication factor of {replication_factor} cannot be reached because only "
                    f"{len(live)} broker(s) are registered.",
                )
            plan = {p: [live[(p + i) % len(live)] for i in range(replication_factor)] for p in range(num_partitions)}
        if self.max_replication_factor is not None and replication_factor > self.max_replication_factor:
            # Followers do not fetch yet (issue 9): a second replica would be
            # listed in sync while empty, and electing it would lose data.
            return fail(ErrorCode.INVALID_REPLICATION_FACTOR, NO_REPLICATION)
        cfg_records = []
        final_configs = {}
        for cname, cvalue in (configs or {}).items():
            if cvalue is None:
                return fail(ErrorCode.INVALID_CONFIG, f"Null value not supported for topic configs: {cname}")
            try:
                self.validate_topic_config(cname, cvalue)
            except Exception as e:  # the validator's message is the answer
                return fail(ErrorCode.INVALID_CONFIG, str(e))
            final_configs[cname] = cvalue
            cfg_records.append(
                ("ConfigRecord", {"resource_type": TOPIC_RESOURCE, "resource_name": name, "name": cname, "value": cvalue})
            )
        topic_id = uuid.uuid4()
        records: list[Record] = [("TopicRecord", {"name": name, "topic_id": topic_id})]
        records += cfg_records
        live_set = set(live)
        for p, replicas in sorted(plan.items()):
            records.append(self._partition_record(topic_id, p, replicas, live_set))
        res.topic_id = topic_id
        res.num_partitions = len(plan)
        res.replication_factor = replication_factor
        res.configs = final_configs
        return records, res

    def assignment_error(self, replicas: list[int], rf: int | None) -> str | None:
        """Why a manual replica list is refused (Kafka's INVALID_REPLICA_ASSIGNMENT
        messages), or None.  ``rf`` is the replica count the other partitions have."""
        if not replicas:
            return "The manual partition assignment includes an empty replica list."
        prev = None
        for b in sorted(replicas):
            if b not in self.image.brokers:
                return f"The manual partition assignment includes broker {b}, but no such broker is registered."
            if b == prev:
                return f"The manual partition assignment includes the broker {b} more than once."
            prev = b
        if rf is not None and len(replicas) != rf:
            return (
                f"The manual partition assignment includes a partition with {len(replicas)} replica(s), "
                f"but this is not consistent with previous partitions, which have {rf} replica(s)."
            )
        return None

    def _partition_record(self, topic_id, p: int, replicas: list[int], live: set[int]) -> Record:
        isr = [r for r in replicas if r in live] or list(replicas)
        leader = isr[0] if isr and isr[0] in live else -1
        return (
            "PartitionRecord",
            {
                "partition_id": p,
                "topic_id": topic_id,
                "replicas": replicas,
                "isr": isr,
                "removing_replicas": [],
                "adding_replicas": [],
                "leader": leader,
                "leader_epoch": 0,
                "partition_epoch": 0,
            },
        )

    def create_topics(self, specs: list[dict]) -> tuple[list[Record], list[TopicResult]]:
        """Records and per-topic results for one CreateTopics request (or a
        Metadata request's auto-creation), all or nothing with respect to the
        record cap.

        Kafka counts the partitions asked for before deciding anything and
        refuses the whole request above :data:`MAX_PARTITIONS_PER_BATCH`;
        then the records of every valid topic must fit in
        :data:`MAX_RECORDS_PER_USER_OP` (configs count too), else the whole
        request is refused.  Both answer POLICY_VIOLATION for every topic.
        ``validate_only`` gets the same answer: the caller just does not
        submit the records.
        """
        default = self.defaults["num.partitions"]
        asked = (requested_partitions(s.get("num_partitions", -1), len(s.get("assignments") or ()), default)
                 for s in specs)
        if sum(asked) > MAX_PARTITIONS_PER_BATCH:
            return [], [TopicResult(s["name"], ErrorCode.POLICY_VIOLATION, TOO_MANY_PARTITIONS) for s in specs]
        records: list[Record] = []
        results: list[TopicResult] = []
        pending: set[str] = set()
        pending_keys: dict[str, str] = {}
        for spec in specs:
            recs, res = self.create_topic(pending=pending, pending_keys=pending_keys, **spec)
            results.append(res)
            if res.error == ErrorCode.NONE:
                pending.add(res.name)
                pending_keys.setdefault(_collision_key(res.name), res.name)
                records.extend(recs)
                if len(records) > MAX_RECORDS_PER_USER_OP:
                    return [], [TopicResult(s["name"], ErrorCode.POLICY_VIOLATION, TOO_MANY_RECORDS) for s in specs]
        return records, results

    def delete_topic(self, name: str | None = None, topic_id: uuid.UUID | None = None):
        """(records, error code, message, name, topic id) for deleting one topic."""
        t = self.image.topics.get(name) if name is not None else self.image.topics_by_id.get(topic_id)
        if t is None:
            if name is None:
                return [], ErrorCode.UNKNOWN_TOPIC_ID, "This server does not host this topic ID.", None, topic_id
            return [], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition.", name, uuid.UUID(int=0)
        return [("RemoveTopicRecord", {"topic_id": t.topic_id})], ErrorCode.NONE, None, t.name, t.topic_id

    def create_partitions(self, requests: list[tuple[str, int, list[list[int]] | None]]):
        """(records, [(error code, message)]) for growing topics: ``requests``
        holds ``(name, new total count, assignments or None)``.

        Every topic is validated first and the new partitions are counted;
        above :data:`MAX_RECORDS_PER_USER_OP` the whole request is refused
        (POLICY_VIOLATION, as Kafka's bounded record list does) before one
        record is built -- a count of 2^31-1 costs a subtraction, not a plan.
        """
        planned = []  # (index, topic, current, count, assignments)
        results: list[tuple[ErrorCode, str | None]] = []
        total = 0
        for i, (name, count, assignments) in enumerate(requests):
            code, msg, t = self._check_create_partitions(name, count, assignments)
            results.append((code, msg))
            if code == ErrorCode.NONE:
                total += count - len(t.partitions)
                planned.append((t, count, assignments))
        if total > MAX_RECORDS_PER_USER_OP:
            return [], [(ErrorCode.POLICY_VIOLATION, TOO_MANY_RECORDS)] * len(requests)
        live = rack_alternated(self.image.live_brokers())
        live_set = set(live)
        records: list[Record] = []
        for t, count, assignments in planned:
            current = len(t.partitions)
            rf = len(t.partitions[0].replicas) if t.partitions else 1
            for i, p in enumerate(range(current, count)):
                replicas = list(assignments[i]) if assignments is not None else [live[(p + k) % len(live)] for k in range(rf)]
                records.append(self._partition_record(t.topic_id, p, replicas, live_set))
        return records, results

    def _check_create_partitions(self, name: str, count: int, assignments):
        t = self.image.topics.get(name)
        if t is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.", None
        current = len(t.partitions)
        if count < current:
            return ErrorCode.INVALID_PARTITIONS, (
                f"The topic {name} currently has {current} partition(s); {count} would not be an increase."
            ), t
        if count == current:
            return ErrorCode.INVALID_PARTITIONS, f"Topic already has {current} partition(s).", t
        rf = len(t.partitions[0].replicas) if t.partitions else 1
        if assignments is not None:
            if len(assignments) != count - current:
                return ErrorCode.INVALID_REPLICA_ASSIGNMENT, (
                    f"Attempted to add {count - current} additional partition(s), but only "
                    f"{len(assignments)} assignment(s) were specified."
                ), t
            for a in assignments:
                err = self.assignment_error(a, rf)
                if err:
                    return ErrorCode.INVALID_REPLICA_ASSIGNMENT, err, t
        else:
            live = sum(1 for _ in self.image.live_brokers())
            if rf > live:
                return ErrorCode.INVALID_REPLICATION_FACTOR, (
                    f"Unable to replicate the partition {rf} time(s): only {live} broker(s) are registered."
                ), t
        return ErrorCode.NONE, None, t

    # -- configs ---------------------------------------------------------------
    def config_records(self, resource_type: int, resource_name: str, changes: dict[str, str | None]) -> list[Record]:
        return [
            ("ConfigRecord", {"resource_type": resource_type, "resource_name": resource_name, "name": k, "value": v})
            for k, v in changes.items()
        ]

    # -- producer ids ------------------------------------------------------------
    def allocate_producer_ids(self, broker_id: int, broker_epoch: int, count: int = 1000):
        """(records, first id) for a block of ``count`` producer ids."""
        first = self.image.next_producer_id
        return [
            (
                "ProducerIdsRecord",
                {"broker_id": broker_id, "broker_epoch": broker_epoch, "next_producer_id": first + count},
            )
        ], first


__all__ = [
    "Controller",
    "TopicResult",
    "topic_name_error",
    "MAX_RECORDS_PER_USER_OP",
    "TOO_MANY_RECORDS",
    "TOPIC_RESOURCE",
    "BROKER_RESOURCE",
]
