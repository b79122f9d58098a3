"""The metadata image: what the cluster looks like, rebuilt from KRaft records.

Every change to cluster metadata (a broker registers, a topic is created, a
partition gains a leader, a config changes) is a record in the
``__cluster_metadata`` log; the image is what you get by applying them in
order.  Brokers answer Metadata, DescribeConfigs and friends from the image,
and the controller decides from it what records a request turns into.

The image is plain data with one entry point, :meth:`MetadataImage.apply`,
and no IO, so replaying a log, a snapshot or a test's hand-made records all go
through the same code.  Readers take what they need within one trio step, so
they never see a half-applied change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

# ConfigRecord resource types (DescribeConfigs / AlterConfigs resource types).
TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4


def collision_key(name: str) -> str:
    """Topics whose names differ only by '.' vs '_' collide in metric names, so
    Kafka refuses to create the second one; this key identifies the clash."""
    return name.replace(".", "_")


@dataclass
class Endpoint:
    name: str
    host: str
    port: int
    security_protocol: int = 0  # PLAINTEXT


@dataclass
class BrokerImage:
    broker_id: int
    incarnation_id: uuid.UUID
    epoch: int
    endpoints: list[Endpoint]
    rack: str | None = None
    fenced: bool = False


@dataclass
class PartitionImage:
    partition_id: int
    replicas: list[int]
    isr: list[int]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0


@dataclass
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: dict[int, PartitionImage] = field(default_factory=dict)
    # Bumped whenever a partition of this topic is added or changed, so what
    # is derived from one topic (its encoded Metadata entry) outlives changes
    # to other topics; the image's own ``version`` covers everything else.
    version: int = field(default=0, compare=False)

    @property
    def is_internal(self) -> bool:
        return self.name.startswith("__")


class MetadataImage:
    """Brokers, topics, partitions and configs, as of ``offset`` in the metadata log."""

    def __init__(self):
        self.cluster_id: str | None = None
        self.offset = -1
        # Bumped by every :meth:`apply`, so whatever is derived from the image
        # (the encoded Metadata answers of kbroker.apis.metadata) can be kept
        # while it equals the version it was derived at, and is never served
        # after a change.  Code that changes the image must go through apply.
        self.version = 0
        self.brokers: dict[int, BrokerImage] = {}
        self.topics: dict[str, TopicImage] = {}
        self.topics_by_id: dict[uuid.UUID, TopicImage] = {}
        # collision key -> a topic name with that key; kept so that creating a
        # topic is a lookup, not a scan of every topic name.
        self._collision_keys: dict[str, str] = {}
        # (resource type, resource name) -> {config name: value}
        self.configs: dict[tuple[int, str], dict[str, str]] = {}
        self.features: dict[str, int] = {}
        self.next_producer_id = 0

    # -- reading -------------------------------------------------------------
    def topic(self, name: str) -> TopicImage | None:
        return self.topics.get(name)

    def topic_configs(self, name: str) -> dict[str, str]:
        return self.configs.get((TOPIC_RESOURCE, name), {})

    def broker_configs(self, broker_id: int | str = "") -> dict[str, str]:
        return self.configs.get((BROKER_RESOURCE, str(broker_id)), {})

    def colliding_topic(self, name: str) -> str | None:
        """An existing topic whose name collides with ``name`` (see :func:`collision_key`)."""
        return self._collision_keys.get(collision_key(name))

    def live_brokers(self) -> list[BrokerImage]:
        return [b for b in self.brokers.values() if not b.fenced]

    # -- writing a snapshot ------------------------------------------------------
    def to_records(self) -> list[tuple[str, dict]]:
        """The KRaft records that rebuild this image from an empty one: what a
        metadata snapshot (``<offset>-<epoch>.checkpoint``) holds.

        ``(schema name, body)`` pairs for
        :func:`protocol.envelopes.encode_metadata_record`, in Kafka's snapshot
        order: feature levels, brokers (each with its fenced flag), each topic
        followed by its partitions, configs, then the producer id block.
        Dict order is kept throughout, so replaying the records and writing
        again gives the same list.  ``offset``, ``version`` and ``cluster_id``
        are not metadata records and are not written.
        """
        records: list[tuple[str, dict]] = []
        for name, level in self.features.items():
            records.append(("FeatureLevelRecord", {"name": name, "feature_level": level}))
        for b in self.brokers.values():
            records.append(self._broker_record(b))
        for t in self.topics.values():
            records.append(("TopicRecord", {"name": t.name, "topic_id": t.topic_id}))
            for p in t.partitions.values():
                records.append(self._partition_record(t.topic_id, p))
        for (rtype, rname), cfg in self.configs.items():
            for cname, value in cfg.items():
                records.append(
                    ("ConfigRecord", {"resource_type": rtype, "resource_name": rname, "name": cname, "value": value})
                )
        if self.next_producer_id > 0:
            # As Kafka's snapshot does: the block's owner is not part of the image.
            records.append(
                ("ProducerIdsRecord", {"broker_id": -1, "broker_epoch": -1, "next_producer_id": self.next_producer_id})
            )
        return records

    @staticmethod
    def _broker_record(b: BrokerImage) -> tuple[str, dict]:
        return (
            "RegisterBrokerRecord",
            {
                "broker_id": b.broker_id,
                "incarnation_id": b.incarnation_id,
                "broker_epoch": b.epoch,
                "end_points": [
                    {"name": e.name, "host": e.host, "port": e.port, "security_protocol": e.security_protocol}
                    for e in b.endpoints
                ],
                "features": [],
                "rack": b.rack,
                "fenced": b.fenced,
            },
        )

    @staticmethod
    def _partition_record(topic_id: uuid.UUID, p: PartitionImage) -> tuple[str, dict]:
        return (
            "PartitionRecord",
            {
                "partition_id": p.partition_id,
                "topic_id": topic_id,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "removing_replicas": [],
                "adding_replicas": [],
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "partition_epoch": p.partition_epoch,
            },
        )

    # -- applying records ------------------------------------------------------
    def apply(self, name: str, record, offset: int | None = None) -> None:
        """Apply one decoded KRaft record (``name`` is its schema name)."""
        self.version += 1
        handler = getattr(self, "_apply_" + name, None)
        if handler is not None:
            handler(record)
        if offset is not None:
            self.offset = offset

    def _apply_RegisterBrokerRecord(self, r) -> None:
        self.brokers[r.broker_id] = BrokerImage(
            broker_id=r.broker_id,
            incarnation_id=r.incarnation_id,
            epoch=r.broker_epoch,
            endpoints=[Endpoint(e.name, e.host, e.port, e.security_protocol) for e in r.end_points],
            rack=r.rack,
            fenced=r.fenced,
        )

    def _apply_UnregisterBrokerRecord(self, r) -> None:
        self.brokers.pop(r.broker_id, None)

    def _apply_FenceBrokerRecord(self, r) -> None:
        b = self.brokers.get(r.id)
        if b is not None:
            b.fenced = True

    def _apply_UnfenceBrokerRecord(self, r) -> None:
        b = self.brokers.get(r.id)
        if b is not None:
            b.fenced = False

    def _apply_TopicRecord(self, r) -> None:
        t = TopicImage(r.name, r.topic_id)
        self.topics[r.name] = t
        self.topics_by_id[r.topic_id] = t
        self._collision_keys.setdefault(collision_key(r.name), r.name)

    def _apply_PartitionRecord(self, r) -> None:
        t = self.topics_by_id.get(r.topic_id)
        if t is None:
            return
        t.partitions[r.partition_id] = PartitionImage(
            r.partition_id, list(r.replicas), list(r.isr), r.leader, r.leader_epoch, r.partition_epoch
        )
        t.version += 1

    def _apply_PartitionChangeRecord(self, r) -> None:
        t = self.topics_by_id.get(r.topic_id)
        p = t.partitions.get(r.partition_id) if t else None
        if p is None:
            return
        t.version += 1
        if r.isr is not None:
            p.isr = list(r.isr)
        if r.replicas is not None:
            p.replicas = list(r.replicas)
        # Leader -2 means "unchanged"; any leader change bumps the leader epoch.
        if r.leader != -2:
            p.leader = r.leader
            p.leader_epoch += 1
        p.partition_epoch += 1

    def _apply_RemoveTopicRecord(self, r) -> None:
        t = self.topics_by_id.pop(r.topic_id, None)
        if t is not None:
            self.topics.pop(t.name, None)
            self.configs.pop((TOPIC_RESOURCE, t.name), None)
            # The controller never lets two topics share a key, so the key is free again.
            key = collision_key(t.name)
            if self._collision_keys.get(key) == t.name:
                del self._collision_keys[key]

    def _apply_ConfigRecord(self, r) -> None:
        key = (r.resource_type, r.resource_name)
        if r.value is None:
            cfg = self.configs.get(key)
            if cfg is not None:
                cfg.pop(r.name, None)
                if not cfg:
                    del self.configs[key]
        else:
            self.configs.setdefault(key, {})[r.name] = r.value

    def _apply_FeatureLevelRecord(self, r) -> None:
        if r.feature_level == 0:
            self.features.pop(r.name, None)
        else:
            self.features[r.name] = r.feature_level

    def _apply_ProducerIdsRecord(self, r) -> None:
        self.next_producer_id = max(self.next_producer_id, r.next_producer_id)
