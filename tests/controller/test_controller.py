"""The controller's decisions, pure: Kafka's per-operation record cap, manual
assignments, and checks that must stay linear in the size of the request."""

from __future__ import annotations

import types
import uuid

from kbroker.controller.controller import (
    MAX_RECORDS_PER_USER_OP,
    TOO_MANY_PARTITIONS,
    TOO_MANY_RECORDS,
    Controller,
)
from kbroker.metadata.image import MetadataImage
from protocol import ErrorCode


def ns(**kw):
    return types.SimpleNamespace(**kw)


def image_with_brokers(*ids) -> MetadataImage:
    image = MetadataImage()
    for b in ids:
        image.apply("RegisterBrokerRecord", ns(broker_id=b, incarnation_id=uuid.uuid4(), broker_epoch=0,
                                               end_points=[], rack=None, fenced=False))
    return image


def controller(image=None) -> Controller:
    return Controller(image or image_with_brokers(1), validate_topic_config=lambda k, v: v,
                      defaults={"num.partitions": 1, "default.replication.factor": 1})


def apply_all(image, records):
    for name, body in records:
        image.apply(name, ns(**body))


def spec(name, partitions=1, **kw):
    return {"name": name, "num_partitions": partitions, "replication_factor": kw.pop("rf", 1), **kw}


# -- the 10,000-records cap -------------------------------------------------------


def test_a_million_partitions_is_refused_before_any_record_is_built():
    c = controller()
    records, results = c.create_topics([spec("big", 1_000_000), spec("small")])
    assert records == []
    assert [(r.error, r.message) for r in results] == [(ErrorCode.POLICY_VIOLATION, TOO_MANY_PARTITIONS)] * 2


def test_the_record_cap_counts_topic_and_config_records_too():
    c = controller()
    # 9,999 partitions + 1 TopicRecord = 10,000 records: allowed.
    records, results = c.create_topics([spec("edge", 9_999)])
    assert results[0].error == ErrorCode.NONE and len(records) == MAX_RECORDS_PER_USER_OP
    # One config record more is one too many: the whole request is refused.
    records, results = c.create_topics([spec("edge", 9_999, configs={"retention.ms": "1"}), spec("other")])
    assert records == []
    assert [(r.error, r.message) for r in results] == [(ErrorCode.POLICY_VIOLATION, TOO_MANY_RECORDS)] * 2
    # 5,000 one-partition topics are exactly 10,000 records (what an 80 KB Metadata
    # request can auto-create); one topic more is refused.
    assert c.create_topics([spec(f"t{i}") for i in range(5_000)])[1][0].error == ErrorCode.NONE
    assert c.create_topics([spec(f"t{i}") for i in range(5_001)])[1][0].error == ErrorCode.POLICY_VIOLATION


def test_create_partitions_cap_is_checked_before_building():
    image = image_with_brokers(1)
    c = controller(image)
    records, _ = c.create_topics([spec("t")])
    apply_all(image, records)
    records, results = c.create_partitions([("t", 2**31 - 1, None)])
    assert records == [] and results == [(ErrorCode.POLICY_VIOLATION, TOO_MANY_RECORDS)]
    records, results = c.create_partitions([("t", 10_001, None)])
    assert results == [(ErrorCode.NONE, None)] and len(records) == 10_000


def test_forty_thousand_invalid_names_are_linear():
    c = controller()
    # 0 partitions each: under the partition cap, so every name is really checked.
    records, results = c.create_topics([spec(f"bad name {i}", 0) for i in range(40_000)])
    assert records == [] and {r.error for r in results} == {ErrorCode.INVALID_TOPIC_EXCEPTION}
    # With a partition each, Kafka refuses the request by its partition count alone.
    assert c.create_topics([spec(f"bad name {i}") for i in range(40_000)])[1][0].error == ErrorCode.POLICY_VIOLATION


# -- manual assignments --------------------------------------------------------------


def test_create_partitions_refuses_bad_assignments():
    image = image_with_brokers(1, 2)
    c = controller(image)
    records, _ = c.create_topics([spec("t", 1, rf=2)])
    apply_all(image, records)
    cases = {
        "empty": ([[]], "empty replica list"),
        "duplicate": ([[1, 1]], "includes the broker 1 more than once"),
        "unknown": ([[1, 9]], "includes broker 9, but no such broker is registered"),
        "inconsistent": ([[1]], "a partition with 1 replica(s), but this is not consistent with previous partitions, "
                                "which have 2 replica(s)"),
    }
    for assignments, fragment in cases.values():
        records, results = c.create_partitions([("t", 2, assignments)])
        assert records == []
        assert results[0][0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT and fragment in results[0][1]
    records, results = c.create_partitions([("t", 2, [[2, 1]])])
    assert results == [(ErrorCode.NONE, None)] and records[0][1]["replicas"] == [2, 1]


def test_create_topics_refuses_bad_assignments():
    c = controller(image_with_brokers(1, 2))

    def create(assignments):
        return c.create_topics([{"name": "t", "num_partitions": -1, "replication_factor": -1,
                                 "assignments": assignments}])[1][0]

    assert "multiple manual partition assignments for partition 0" in create([(0, [1]), (0, [2])]).message
    assert "empty replica list" in create([(0, [])]).message
    assert "more than once" in create([(0, [2, 2])]).message
    assert "no such broker" in create([(0, [3])]).message
    assert "not consistent" in create([(0, [1]), (1, [1, 2])]).message
    assert "consecutive" in create([(0, [1]), (2, [1])]).message
    assert {create(a).error for a in ([(0, [])], [(0, [2, 2])], [(0, [3])])} == {ErrorCode.INVALID_REPLICA_ASSIGNMENT}
    ok = create([(1, [2, 1]), (0, [1, 2])])
    assert ok.error == ErrorCode.NONE and ok.num_partitions == 2 and ok.replication_factor == 2


# -- name collisions (an index, not a scan) --------------------------------------------


def test_collisions_with_existing_and_pending_topics():
    image = image_with_brokers(1)
    c = controller(image)
    records, results = c.create_topics([spec("a.b"), spec("a_b")])
    assert [r.error for r in results] == [ErrorCode.NONE, ErrorCode.INVALID_TOPIC_EXCEPTION]
    apply_all(image, records)
    assert c.create_topics([spec("a_b")])[1][0].message == "Topic 'a_b' collides with existing topic: a.b"
    apply_all(image, [("RemoveTopicRecord", {"topic_id": image.topics["a.b"].topic_id})])
    assert c.create_topics([spec("a_b")])[1][0].error == ErrorCode.NONE


def _leaders(image, name):
    t = image.topics[name]
    return {i: (p.leader, p.leader_epoch) for i, p in sorted(t.partitions.items())}


def test_fencing_a_broker_moves_leadership_or_leaves_the_partition_leaderless_until_it_returns():
    image = image_with_brokers(1, 2, 3)
    c = controller(image)
    records, results = c.create_topics([
        {"name": "one", "num_partitions": 3, "replication_factor": 1},
        {"name": "three", "num_partitions": -1, "replication_factor": -1, "assignments": [(0, [1, 2, 3])]},
    ])
    assert [r.error for r in results] == [ErrorCode.NONE, ErrorCode.NONE]
    apply_all(image, records)
    before = _leaders(image, "one")
    led_by_1 = [i for i, (leader, _) in before.items() if leader == 1]
    assert led_by_1 and _leaders(image, "three") == {0: (1, 0)}

    fence = c.fence_broker(1, epoch=0)
    assert fence[0] == ("FenceBrokerRecord", {"id": 1, "epoch": 0})
    apply_all(image, [(n, {"isr": None, "replicas": None, **b}) if n == "PartitionChangeRecord" else (n, b)
                      for n, b in fence])
    assert image.brokers[1].fenced
    after = _leaders(image, "one")
    for i in led_by_1:  # one replica: no one else may lead, and no one is sent to the dead broker
        assert after[i] == (-1, 1)
    assert {i: v for i, v in after.items() if i not in led_by_1} == \
        {i: v for i, v in before.items() if i not in led_by_1}  # untouched
    assert _leaders(image, "three") == {0: (2, 1)}  # the next live in-sync replica leads
    assert image.topics["three"].partitions[0].isr == [1, 2, 3]  # the ISR is left alone

    back = c.unfence_broker(1, epoch=0)
    apply_all(image, [(n, {"isr": None, "replicas": None, **b}) if n == "PartitionChangeRecord" else (n, b)
                      for n, b in back])
    assert not image.brokers[1].fenced
    for i in led_by_1:
        assert _leaders(image, "one")[i] == (1, 2)
    assert _leaders(image, "three") == {0: (2, 1)}  # it has a leader: not taken back


def test_a_replication_factor_above_the_limit_is_refused_until_replication_exists():
    image = image_with_brokers(1, 2, 3)
    c = Controller(image, validate_topic_config=lambda k, v: v,
                   defaults={"num.partitions": 1, "default.replication.factor": 1}, max_replication_factor=1)
    records, results = c.create_topics([
        {"name": "rf3", "num_partitions": 2, "replication_factor": 3},
        {"name": "manual", "num_partitions": -1, "replication_factor": -1, "assignments": [(0, [1, 2])]},
        {"name": "rf1", "num_partitions": 3, "replication_factor": 1},
    ])
    assert [r.error for r in results] == [ErrorCode.INVALID_REPLICATION_FACTOR, ErrorCode.INVALID_REPLICATION_FACTOR,
                                          ErrorCode.NONE]
    assert "does not replicate partitions yet" in results[0].message
    assert {b["name"] for n, b in records if n == "TopicRecord"} == {"rf1"}


def test_placement_takes_racks_in_turn():
    from kbroker.controller.controller import rack_alternated

    brokers = [ns(broker_id=i, rack=r) for i, r in ((1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"))]
    assert rack_alternated(brokers) == [1, 3, 5, 2, 4]
    assert rack_alternated([ns(broker_id=i, rack=None) for i in (3, 1, 2)]) == [1, 2, 3]
    image = MetadataImage()
    for b in brokers:
        image.apply("RegisterBrokerRecord", ns(broker_id=b.broker_id, incarnation_id=uuid.uuid4(), broker_epoch=0,
                                               end_points=[], rack=b.rack, fenced=False))
    c = controller(image)
    records, results = c.create_topics([{"name": "t", "num_partitions": 5, "replication_factor": 1}])
    assert results[0].error == ErrorCode.NONE
    leaders = [b["leader"] for n, b in records if n == "PartitionRecord"]
    assert leaders == [1, 3, 5, 2, 4]  # consecutive partitions lead on different racks
