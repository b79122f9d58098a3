"""MetadataImage.to_records: the records of a metadata snapshot rebuild the image.

Images are built the way the broker builds them -- the controller's records,
encoded and decoded as KRaft metadata records, applied in order -- then
written with ``to_records``, encoded, decoded and replayed into an empty
image, which must equal the original in everything but its offset and
version counters.
"""

from __future__ import annotations

import uuid

from kbroker.controller.controller import Controller
from kbroker.metadata.image import BROKER_RESOURCE, TOPIC_RESOURCE, Endpoint, MetadataImage
from protocol import ErrorCode
from protocol.envelopes import decode_metadata_record, encode_metadata_record


def apply_encoded(image: MetadataImage, records) -> None:
    """Apply ``(name, body)`` records as a broker replaying its log does: through the wire format."""
    for name, body in records:
        decoded_name, _version, decoded = decode_metadata_record(encode_metadata_record(name, body))
        assert decoded_name == name
        image.apply(decoded_name, decoded, image.offset + 1)


def encoded(records) -> list[bytes]:
    return [encode_metadata_record(name, body) for name, body in records]


def rebuild(image: MetadataImage) -> MetadataImage:
    fresh = MetadataImage()
    apply_encoded(fresh, image.to_records())
    return fresh


def assert_same_image(a: MetadataImage, b: MetadataImage) -> None:
    """Field by field, every piece of metadata (not the offset or version counters)."""
    assert list(a.brokers) == list(b.brokers)
    for bid, ba in a.brokers.items():
        bb = b.brokers[bid]
        assert (ba.broker_id, ba.incarnation_id, ba.epoch, ba.rack, ba.fenced) == (
            bb.broker_id, bb.incarnation_id, bb.epoch, bb.rack, bb.fenced)
        assert [(e.name, e.host, e.port, e.security_protocol) for e in ba.endpoints] == [
            (e.name, e.host, e.port, e.security_protocol) for e in bb.endpoints]
    assert list(a.topics) == list(b.topics)
    assert list(a.topics_by_id) == list(b.topics_by_id)
    for tid, ta in a.topics_by_id.items():
        tb = b.topics_by_id[tid]
        assert b.topics[tb.name] is tb
        assert (ta.name, ta.topic_id) == (tb.name, tb.topic_id)
        assert list(ta.partitions) == list(tb.partitions)
        for pid, pa in ta.partitions.items():
            pb = tb.partitions[pid]
            assert (pa.partition_id, pa.replicas, pa.isr, pa.leader, pa.leader_epoch, pa.partition_epoch) == (
                pb.partition_id, pb.replicas, pb.isr, pb.leader, pb.leader_epoch, pb.partition_epoch)
    for name, ta in a.topics.items():
        assert a.topics_by_id[ta.topic_id] is ta
    assert a.configs == b.configs
    assert list(a.configs) == list(b.configs)
    assert a.features == b.features
    assert a.next_producer_id == b.next_producer_id
    assert a._collision_keys == b._collision_keys


def assert_round_trips(image: MetadataImage) -> MetadataImage:
    records = image.to_records()
    again = rebuild(image)
    assert_same_image(image, again)
    # A second round trip writes the very same snapshot.
    assert encoded(again.to_records()) == encoded(records)
    assert_same_image(again, rebuild(again))
    return again


def controller(image: MetadataImage) -> Controller:
    return Controller(image, validate_topic_config=lambda k, v: v,
                      defaults={"num.partitions": 2, "default.replication.factor": 2})


def create(c: Controller, *specs) -> list:
    records, results = c.create_topics(list(specs))
    assert [r.error for r in results] == [ErrorCode.NONE] * len(specs)
    apply_encoded(c.image, records)
    return results


def busy_image() -> MetadataImage:
    """Everything the image tracks, reached through the records that really change it."""
    image = MetadataImage()
    c = controller(image)
    apply_encoded(image, [("FeatureLevelRecord", {"name": "metadata.version", "feature_level": 21}),
                          ("FeatureLevelRecord", {"name": "kraft.version", "feature_level": 1}),
                          ("FeatureLevelRecord", {"name": "group.version", "feature_level": 1}),
                          # Level 0 removes a feature again.
                          ("FeatureLevelRecord", {"name": "group.version", "feature_level": 0})])
    for bid in (1, 2, 3):
        eps = [Endpoint("PLAINTEXT", f"host{bid}", 9092 + bid)]
        if bid == 2:
            eps.append(Endpoint("EXTERNAL", "public.example.com", 19092))
        apply_encoded(image, c.register_broker(bid, eps, rack="rack-a" if bid != 3 else None, epoch=10 * bid))
    # A broker registered by another controller, with a SASL_SSL listener, fenced as registered.
    apply_encoded(image, [("RegisterBrokerRecord", {
        "broker_id": 4, "incarnation_id": uuid.uuid4(), "broker_epoch": 40,
        "end_points": [{"name": "SECURE", "host": "host4", "port": 9096, "security_protocol": 3}],
        "rack": "rack-b", "fenced": True})])
    # Broker 2 is fenced and unfenced again; broker 3 stays fenced.
    apply_encoded(image, [("FenceBrokerRecord", {"id": 2, "epoch": 20}),
                          ("FenceBrokerRecord", {"id": 3, "epoch": 30}),
                          ("UnfenceBrokerRecord", {"id": 2, "epoch": 20})])
    # Broker 1 registers again with a new incarnation and epoch.
    apply_encoded(image, c.register_broker(1, [Endpoint("PLAINTEXT", "host1b", 9192)], epoch=11))
    create(c,
           {"name": "orders", "num_partitions": 3, "replication_factor": 2,
            "configs": {"retention.ms": "3600000", "cleanup.policy": "compact"}},
           {"name": "a.b", "num_partitions": -1, "replication_factor": -1},
           {"name": "manual", "num_partitions": -1, "replication_factor": -1,
            "assignments": [(0, [2, 1]), (1, [1, 2])]},
           {"name": "doomed", "num_partitions": 1, "replication_factor": 1, "configs": {"segment.ms": "1000"}},
           {"name": "__internal", "num_partitions": 1, "replication_factor": 1})
    records, results = c.create_partitions([("orders", 5, None), ("manual", 3, [[1, 2]])])
    assert results == [(ErrorCode.NONE, None)] * 2
    apply_encoded(image, records)
    # Leadership and ISR changes (the leader and partition epochs move).
    orders = image.topics["orders"].topic_id
    apply_encoded(image, [
        ("PartitionChangeRecord", {"topic_id": orders, "partition_id": 0, "isr": [2], "leader": 2}),
        ("PartitionChangeRecord", {"topic_id": orders, "partition_id": 0, "isr": [2, 1]}),
        ("PartitionChangeRecord", {"topic_id": orders, "partition_id": 1, "leader": -1, "isr": [1]}),
        ("PartitionChangeRecord", {"topic_id": orders, "partition_id": 4, "replicas": [1, 2, 3],
                                   "isr": [1, 2, 3]}),
    ])
    # A topic config changed and one deleted.
    apply_encoded(image, c.config_records(TOPIC_RESOURCE, "orders", {"retention.ms": "7200000",
                                                                     "cleanup.policy": None,
                                                                     "max.message.bytes": "2097152"}))
    # Dynamic broker configs: cluster-wide and per broker, some set, some deleted.
    apply_encoded(image, c.config_records(BROKER_RESOURCE, "", {"log.retention.ms": "100",
                                                                "num.io.threads": "16"}))
    apply_encoded(image, c.config_records(BROKER_RESOURCE, "1", {"log.cleaner.threads": "2"}))
    apply_encoded(image, c.config_records(BROKER_RESOURCE, "2", {"log.cleaner.threads": "3"}))
    apply_encoded(image, c.config_records(BROKER_RESOURCE, "", {"num.io.threads": None}))
    apply_encoded(image, c.config_records(BROKER_RESOURCE, "2", {"log.cleaner.threads": None}))
    # A deleted topic takes its configs with it.
    records, code, *_ = c.delete_topic("doomed")
    assert code == ErrorCode.NONE
    apply_encoded(image, records)
    # Two producer id blocks handed out.
    for bid in (1, 2):
        records, _first = c.allocate_producer_ids(bid, 10 * bid)
        apply_encoded(image, records)
    return image


def test_empty_image_writes_no_records():
    image = MetadataImage()
    assert image.to_records() == []
    assert_round_trips(image)


def test_busy_image_round_trips():
    image = busy_image()
    # The scenario really reached the states worth checking.
    assert image.brokers[3].fenced and not image.brokers[2].fenced
    assert [e.name for e in image.brokers[2].endpoints] == ["PLAINTEXT", "EXTERNAL"]
    assert image.brokers[1].epoch == 11 and image.brokers[3].rack is None
    assert image.brokers[4].fenced and image.brokers[4].endpoints[0].security_protocol == 3
    assert image.features == {"metadata.version": 21, "kraft.version": 1}
    assert "doomed" not in image.topics and (TOPIC_RESOURCE, "doomed") not in image.configs
    p0 = image.topics["orders"].partitions[0]
    assert (p0.leader, p0.isr, p0.leader_epoch, p0.partition_epoch) == (2, [2, 1], 1, 2)
    p1 = image.topics["orders"].partitions[1]
    assert (p1.leader, p1.leader_epoch) == (-1, 1)
    assert image.topics["orders"].partitions[4].replicas == [1, 2, 3]
    assert len(image.topics["orders"].partitions) == 5 and len(image.topics["manual"].partitions) == 3
    assert image.topic_configs("orders") == {"retention.ms": "7200000", "max.message.bytes": "2097152"}
    assert image.broker_configs() == {"log.retention.ms": "100"}
    assert image.broker_configs(1) == {"log.cleaner.threads": "2"}
    assert (BROKER_RESOURCE, "2") not in image.configs
    assert image.next_producer_id == 2000
    assert image.colliding_topic("a_b") == "a.b"

    again = assert_round_trips(image)
    # What is derived from the image answers the same.
    assert [b.broker_id for b in again.live_brokers()] == [1, 2]
    assert again.colliding_topic("a_b") == "a.b"
    assert again.topics["__internal"].is_internal
    c = controller(again)
    assert c.create_topics([{"name": "a_b"}])[1][0].error == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert c.create_topics([{"name": "orders"}])[1][0].error == ErrorCode.TOPIC_ALREADY_EXISTS
    assert c.allocate_producer_ids(1, 11)[1] == 2000


def test_snapshot_order_is_kafkas():
    records = busy_image().to_records()
    names = [name for name, _ in records]
    kinds = ["FeatureLevelRecord", "RegisterBrokerRecord", "TopicRecord", "ConfigRecord", "ProducerIdsRecord"]
    # Features, brokers, topics (partitions among them), configs, producer ids: in that order.
    rank = [kinds.index("TopicRecord" if n == "PartitionRecord" else n) for n in names]
    assert rank == sorted(rank)
    assert names[0] == "FeatureLevelRecord" and names[-1] == "ProducerIdsRecord"
    assert names.count("ProducerIdsRecord") == 1 and names.count("RegisterBrokerRecord") == 4
    # Each topic is followed by its own partitions.
    current = None
    for name, body in records:
        if name == "TopicRecord":
            current = body["topic_id"]
        elif name == "PartitionRecord":
            assert body["topic_id"] == current
    fenced = {body["broker_id"]: body["fenced"] for name, body in records if name == "RegisterBrokerRecord"}
    assert fenced == {1: False, 2: False, 3: True, 4: True}
    # Deleted topics and deleted configs leave nothing behind.
    assert not any(body.get("name") == "doomed" or body.get("resource_name") == "doomed" for _, body in records)
    assert all(body["value"] is not None for name, body in records if name == "ConfigRecord")


def test_no_producer_ids_record_until_ids_are_handed_out():
    image = MetadataImage()
    c = controller(image)
    apply_encoded(image, c.register_broker(1, [Endpoint("PLAINTEXT", "localhost", 9092)]))
    assert [name for name, _ in image.to_records()] == ["RegisterBrokerRecord"]
    records, first = c.allocate_producer_ids(1, 0, count=5)
    assert first == 0
    apply_encoded(image, records)
    assert image.to_records()[-1] == ("ProducerIdsRecord",
                                      {"broker_id": -1, "broker_epoch": -1, "next_producer_id": 5})
    assert rebuild(image).next_producer_id == 5


def test_deleted_topics_round_trip():
    image = MetadataImage()
    c = controller(image)
    for bid in (1, 2):
        apply_encoded(image, c.register_broker(bid, [Endpoint("PLAINTEXT", "localhost", 9090 + bid)]))
    create(c, {"name": "a.b", "configs": {"retention.ms": "1"}}, {"name": "keep"})
    gone_id = image.topics["a.b"].topic_id
    apply_encoded(image, c.delete_topic("a.b")[0])
    again = assert_round_trips(image)
    assert list(again.topics) == ["keep"] and gone_id not in again.topics_by_id
    assert again.colliding_topic("a_b") is None and again.topic_configs("a.b") == {}
    # The name (and its collision key) is free again; a recreated topic gets a new id.
    create(controller(again), {"name": "a_b"})
    create(c, {"name": "a.b"})
    assert image.topics["a.b"].topic_id != gone_id
    assert_round_trips(image)
    assert_round_trips(again)

    # Every topic deleted: only the brokers are left.
    for name in list(image.topics):
        apply_encoded(image, c.delete_topic(name)[0])
    assert [name for name, _ in image.to_records()] == ["RegisterBrokerRecord"] * 2
    empty = assert_round_trips(image)
    assert empty.topics == {} and empty.topics_by_id == {} and empty.configs == {}
    assert empty._collision_keys == {}


def test_records_encode_in_every_version_that_carries_the_fields():
    """The oldest record versions carry everything the image keeps, too."""
    from protocol.messages import metadata_records

    image = busy_image()
    for low in (0, 1):
        fresh = MetadataImage()
        for name, body in image.to_records():
            schema = getattr(metadata_records, name)
            version = max(schema.valid[0], min(low, schema.valid[1]))
            decoded_name, _, decoded = decode_metadata_record(encode_metadata_record(name, body, version))
            fresh.apply(decoded_name, decoded)
        assert_same_image(image, fresh)


def test_snapshot_does_not_share_state_with_the_image():
    image = busy_image()
    records = image.to_records()
    for name, body in records:
        if name == "PartitionRecord":
            body["replicas"].append(99)
            body["isr"].clear()
    assert all(99 not in p.replicas and p.isr for t in image.topics.values() for p in t.partitions.values())
