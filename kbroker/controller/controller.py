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

Record = tuple  # (schema name, body dict)

MAX_TOPIC_NAME = 249
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


def _collision_key(name: str) -> str:
    # '.' and '_' collide in metric names, so Kafka refuses topics differing only by them.
    return name.replace(".", "_")


@dataclass
class TopicResult:
    name: str
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    topic_id: uuid.UUID = field(default_factory=lambda: uuid.UUID(int=0))
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict = field(default_factory=dict)


class Controller:
    """Turns admin requests into metadata records (a quorum of one, for now)."""

    def __init__(self, image: MetadataImage, *, validate_topic_config, defaults: dict):
        self.image = image
        self.validate_topic_config = validate_topic_config
        self.defaults = defaults  # num.partitions, default.replication.factor

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

    # -- topics ----------------------------------------------------------------
    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        assignments: dict[int, list[int]] | None = None,
        configs: dict[str, str | None] | None = None,
        pending: set[str] | None = None,
    ) -> tuple[list[Record], TopicResult]:
        """Records creating one topic, or an error result and no records."""
        res = TopicResult(name)

        def fail(code, msg):
            res.error, res.message = code, msg
            return [], res

        err = topic_name_error(name)
        if err:
            return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, err)
        if name in self.image.topics or (pending and name in pending):
            return fail(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        key = _collision_key(name)
        for other in self.image.topics:
            if _collision_key(other) == key:
                return fail(
                    ErrorCode.INVALID_TOPIC_EXCEPTION,
                    f"Topic '{name}' collides with existing topic: {other}",
                )
        live = sorted(b.broker_id for b in self.image.live_brokers())
        if assignments:
            if num_partitions != -1 or replication_factor != -1:
                return fail(
                    ErrorCode.INVALID_REQUEST,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. "
                    "Both cannot be used at the same time.",
                )
            parts = sorted(assignments)
            if parts != list(range(len(parts))):
                return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "Partitions must be numbered from 0 without gaps.")
            sizes = {len(r) for r in assignments.values()}
            if len(sizes) != 1 or 0 in sizes:
                return fail(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    "All partitions must have the same, non-zero number of replicas.",
                )
            for p, replicas in assignments.items():
                if len(set(replicas)) != len(replicas):
                    return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"Duplicate brokers in the assignment of partition {p}.")
                unknown = [r for r in replicas if r not in self.image.brokers]
                if unknown:
                    return fail(
                        ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                        f"The manual partition assignment includes broker {unknown[0]}, but no broker with that id is registered.",
                    )
            plan = {p: list(r) for p, r in assignments.items()}
            replication_factor = sizes.pop()
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
        for p, replicas in sorted(plan.items()):
            records.append(self._partition_record(topic_id, p, replicas))
        res.topic_id = topic_id
        res.num_partitions = len(plan)
        res.replication_factor = replication_factor
        res.configs = final_configs
        return records, res

    def _partition_record(self, topic_id, p: int, replicas: list[int]) -> Record:
        live = {b.broker_id for b in self.image.live_brokers()}
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

    def delete_topic(self, name: str | None = None, topic_id: uuid.UUID | None = None):
        """(records, error code, message, name, topic id) for deleting one topic."""
        t = self.image.topics.get(name) if name is not None else self.image.topics_by_id.get(topic_id)
        if t is None:
            if name is None:
                return [], ErrorCode.UNKNOWN_TOPIC_ID, "This server does not host this topic ID.", None, topic_id
            return [], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition.", name, uuid.UUID(int=0)
        return [("RemoveTopicRecord", {"topic_id": t.topic_id})], ErrorCode.NONE, None, t.name, t.topic_id

    def create_partitions(self, name: str, count: int, assignments: list[list[int]] | None, pending=None):
        """(records, error code, message) for growing a topic to ``count`` partitions."""
        t = self.image.topics.get(name)
        if t is None:
            return [], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist."
        current = len(t.partitions)
        if count < current:
            return [], ErrorCode.INVALID_PARTITIONS, (
                f"The topic {name} currently has {current} partition(s); {count} would not be an increase."
            )
        if count == current:
            return [], ErrorCode.INVALID_PARTITIONS, f"Topic already has {current} partition(s)."
        rf = len(t.partitions[0].replicas) if t.partitions else 1
        live = sorted(b.broker_id for b in self.image.live_brokers())
        if assignments is not None:
            if len(assignments) != count - current:
                return [], ErrorCode.INVALID_REPLICA_ASSIGNMENT, (
                    f"Attempted to add {count - current} additional partition(s), but only "
                    f"{len(assignments)} assignment(s) were specified."
                )
            for a in assignments:
                if any(r not in self.image.brokers for r in a):
                    return [], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "The assignment names an unregistered broker."
        elif rf > len(live):
            return [], ErrorCode.INVALID_REPLICATION_FACTOR, (
                f"Unable to replicate the partition {rf} time(s): only {len(live)} broker(s) are registered."
            )
        records = []
        for i, p in enumerate(range(current, count)):
            replicas = list(assignments[i]) if assignments is not None else [live[(p + k) % len(live)] for k in range(rf)]
            records.append(self._partition_record(t.topic_id, p, replicas))
        return records, ErrorCode.NONE, None

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


__all__ = ["Controller", "TopicResult", "topic_name_error", "TOPIC_RESOURCE", "BROKER_RESOURCE"]
