"""Admin APIs through confluent-kafka's AdminClient and kafka-python's KafkaAdminClient."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from compat.clients import Msg, consume_confluent, make_messages, produce_confluent
from compat.conftest import unique_name, wait_for_topic

T = 20  # seconds for any single admin call


@pytest.fixture
def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def error_code(fut) -> int:
    with pytest.raises(KafkaException) as ei:
        fut.result(T)
    return ei.value.args[0].code()


def topic_names(admin) -> set[str]:
    return set(admin.list_topics(timeout=T).topics)


def wait_gone(admin, name: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while name in topic_names(admin):
        assert time.monotonic() < deadline, f"topic {name} still listed after {timeout}s"
        time.sleep(0.1)


def describe_topic_configs(admin, name: str) -> dict:
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([res], request_timeout=T)[res].result(T)


# -- confluent-kafka: topics ------------------------------------------------------------


def test_create_topic_and_describe(broker, admin):
    name = unique_name()
    admin.create_topics([NewTopic(name, 3, 1)], operation_timeout=T)[name].result(T)
    wait_for_topic(broker.bootstrap, name, 3)
    assert name in topic_names(admin)
    desc = admin.describe_topics(TopicCollection([name]), request_timeout=T)[name].result(T)
    assert desc.name == name and not desc.is_internal
    assert sorted(p.id for p in desc.partitions) == [0, 1, 2]
    for p in desc.partitions:
        assert p.leader is not None and [n.id for n in p.replicas] == [p.leader.id]
        assert [n.id for n in p.isr] == [p.leader.id]


def test_create_topic_validate_only(broker, admin):
    name = unique_name()
    admin.create_topics([NewTopic(name, 2, 1)], validate_only=True, operation_timeout=T)[name].result(T)
    time.sleep(0.3)
    assert name not in topic_names(admin)


def test_create_topic_errors(broker, admin, make_topic):
    existing = make_topic(1)
    bad_rf, bad_name, dup, too_long = unique_name(), "bad/name", existing.name, "x" * 250
    futs = admin.create_topics([NewTopic(bad_rf, 1, 2), NewTopic(dup, 1, 1)], operation_timeout=T)
    assert error_code(futs[bad_rf]) == KafkaError.INVALID_REPLICATION_FACTOR
    assert error_code(futs[dup]) == KafkaError.TOPIC_ALREADY_EXISTS
    for name in (bad_name, too_long):
        fut = admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=T)[name]
        assert error_code(fut) == KafkaError.TOPIC_EXCEPTION  # INVALID_TOPIC_EXCEPTION (17)
    assert bad_rf not in topic_names(admin)


def test_create_topic_with_configs_and_defaults(broker, admin):
    name = unique_name()
    admin.create_topics([NewTopic(name, 1, 1, config={"retention.ms": "123456", "cleanup.policy": "compact"})],
                        operation_timeout=T)[name].result(T)
    configs = describe_topic_configs(admin, name)
    assert configs["retention.ms"].value == "123456"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "compact"
    assert configs["segment.bytes"].value == "1073741824"
    assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["max.message.bytes"].value == "1048588"


def test_create_topic_bad_config(broker, admin):
    name = unique_name()
    fut = admin.create_topics([NewTopic(name, 1, 1, config={"retention.ms": "soon"})], operation_timeout=T)[name]
    assert error_code(fut) == KafkaError.INVALID_CONFIG
    fut = admin.create_topics([NewTopic(name, 1, 1, config={"no.such.config": "1"})], operation_timeout=T)[name]
    assert error_code(fut) == KafkaError.INVALID_CONFIG


def test_create_partitions(broker, admin, make_topic):
    t = make_topic(2)
    admin.create_partitions([NewPartitions(t.name, 5)], operation_timeout=T)[t.name].result(T)
    wait_for_topic(broker.bootstrap, t.name, 5)
    fut = admin.create_partitions([NewPartitions(t.name, 3)], operation_timeout=T)[t.name]
    assert error_code(fut) == KafkaError.INVALID_PARTITIONS
    fut = admin.create_partitions([NewPartitions(unique_name(), 3)], operation_timeout=T)
    (f,) = fut.values()
    assert error_code(f) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # new partitions take data
    msgs = [Msg(None, b"p4")]
    placements = produce_confluent(broker.bootstrap, t.name, msgs, extra={"partitioner": "random"})
    assert placements[0][0] in range(5)


def test_delete_topic(broker, admin, make_topic):
    t = make_topic(2)
    produce_confluent(broker.bootstrap, t.name, make_messages(10))
    admin.delete_topics([t.name], operation_timeout=T)[t.name].result(T)
    wait_gone(admin, t.name)
    assert error_code(admin.delete_topics([t.name], operation_timeout=T)[t.name]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # the name can be used again, and starts from offset 0
    admin.create_topics([NewTopic(t.name, 1, 1)], operation_timeout=T)[t.name].result(T)
    wait_for_topic(broker.bootstrap, t.name, 1)
    assert produce_confluent(broker.bootstrap, t.name, [Msg(b"k", b"again")]) == [(0, 0)]


# -- confluent-kafka: configs -------------------------------------------------------------


def test_describe_broker_configs(broker, admin):
    md = admin.list_topics(timeout=T)
    node = str(next(iter(md.brokers)))
    res = ConfigResource(ResourceType.BROKER, node)
    configs = admin.describe_configs([res], request_timeout=T)[res].result(T)
    assert configs["message.max.bytes"].value == "1048588"
    assert configs["num.partitions"].value == "1"
    assert configs["num.partitions"].is_read_only
    assert configs["log.retention.ms"].value == str(168 * 3600 * 1000) or configs["log.retention.ms"].value is None
    assert configs["group.initial.rebalance.delay.ms"].value == "0"
    assert configs["group.initial.rebalance.delay.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value


def test_alter_configs(broker, admin, make_topic):
    t = make_topic(1)
    res = ConfigResource(ResourceType.TOPIC, t.name, set_config={"retention.ms": "3600000"})
    admin.alter_configs([res], request_timeout=T)[res].result(T)
    assert describe_topic_configs(admin, t.name)["retention.ms"].value == "3600000"
    bad = ConfigResource(ResourceType.TOPIC, t.name, set_config={"retention.ms": "not-a-number"})
    assert error_code(admin.alter_configs([bad], request_timeout=T)[bad]) == KafkaError.INVALID_CONFIG


def test_incremental_alter_configs(broker, admin, make_topic):
    t = make_topic(1)
    res = ConfigResource(ResourceType.TOPIC, t.name, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
    ])
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(T)
    configs = describe_topic_configs(admin, t.name)
    assert configs["retention.ms"].value == "7200000"
    assert configs["cleanup.policy"].value == "compact"
    res = ConfigResource(ResourceType.TOPIC, t.name, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND),
    ])
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(T)
    configs = describe_topic_configs(admin, t.name)
    assert configs["retention.ms"].value == str(168 * 3600 * 1000)
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["cleanup.policy"].value == "compact,delete"


# -- confluent-kafka: cluster, records, offsets ----------------------------------------------


def test_describe_cluster(broker, admin):
    desc = admin.describe_cluster(request_timeout=T).result(T)
    assert desc.cluster_id
    assert len(desc.nodes) == 1
    (node,) = desc.nodes
    assert node.port == broker.port
    assert desc.controller is not None and desc.controller.id == node.id


def test_delete_records_moves_log_start(broker, admin, make_topic):
    t = make_topic(1)
    produce_confluent(broker.bootstrap, t.name, [Msg(b"k", b"v%d" % i) for i in range(10)])
    tp = TopicPartition(t.name, 0, 5)
    result = admin.delete_records([tp], request_timeout=T)
    (fut,) = result.values()
    assert fut.result(T).low_watermark == 5
    earliest = admin.list_offsets({TopicPartition(t.name, 0): OffsetSpec.earliest()}, request_timeout=T)
    assert next(iter(earliest.values())).result(T).offset == 5
    got = consume_confluent(broker.bootstrap, t.name, 5, timeout=15)
    assert [r.offset for r in got] == [5, 6, 7, 8, 9]
    # beyond the high watermark -> OFFSET_OUT_OF_RANGE
    (fut,) = admin.delete_records([TopicPartition(t.name, 0, 50)], request_timeout=T).values()
    assert error_code(fut) == KafkaError.OFFSET_OUT_OF_RANGE


def test_list_offsets(broker, admin, make_topic):
    from confluent_kafka import Producer

    t = make_topic(1)
    base = int(time.time() * 1000) - 600_000
    stamps = [base + 1000 * i for i in range(10)]
    stamps[6] = base + 50_000  # the maximum is not the last one
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i, ts in enumerate(stamps):
        p.produce(t.name, value=b"v%d" % i, key=b"k", partition=0, timestamp=ts)
        p.flush(T)  # one batch per record: timestamps per batch are then exact
    tp = TopicPartition(t.name, 0)

    def ask(spec):
        return admin.list_offsets({tp: spec}, request_timeout=T)[tp].result(T)

    assert ask(OffsetSpec.earliest()).offset == 0
    assert ask(OffsetSpec.latest()).offset == 10
    r = ask(OffsetSpec.for_timestamp(base + 3500))
    assert (r.offset, r.timestamp) == (4, base + 4000)
    assert ask(OffsetSpec.for_timestamp(base + 10_000_000)).offset == -1
    r = ask(OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == (6, base + 50_000)


# -- kafka-python KafkaAdminClient -----------------------------------------------------------


@pytest.fixture
def kp_admin(broker):
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=T * 1000)
    yield a
    a.close()


def test_kafka_python_topic_lifecycle(broker, kp_admin):
    import kafka.errors as E

    name = unique_name("kp")
    kp_admin.create_topics({name: {"num_partitions": 3, "replication_factor": 1,
                                   "configs": {"retention.ms": "86400000"}}})
    wait_for_topic(broker.bootstrap, name, 3)
    assert name in kp_admin.list_topics()
    (desc,) = kp_admin.describe_topics([name])
    assert desc["name"] == name and len(desc["partitions"]) == 3

    with pytest.raises(E.TopicAlreadyExistsError):
        kp_admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1}})
    with pytest.raises(E.InvalidReplicationFactorError):
        kp_admin.create_topics({unique_name("kp"): {"num_partitions": 1, "replication_factor": 2}})
    with pytest.raises(E.InvalidTopicError):
        kp_admin.create_topics({"bad topic name": {"num_partitions": 1, "replication_factor": 1}})
    other = unique_name("kp")
    kp_admin.create_topics({other: {"num_partitions": 1, "replication_factor": 1}}, validate_only=True)
    assert other not in kp_admin.list_topics()

    kp_admin.create_partitions({name: 4})
    wait_for_topic(broker.bootstrap, name, 4)
    with pytest.raises(E.InvalidPartitionsError):
        kp_admin.create_partitions({name: 2})

    kp_admin.delete_topics([name])
    deadline = time.monotonic() + T
    while name in kp_admin.list_topics():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_kafka_python_configs(broker, kp_admin, make_topic):
    from kafka.admin import ConfigResource, ConfigResourceType

    t = make_topic(1)
    kp_admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t.name, configs={"retention.ms": "5000000"})])
    out = kp_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name)], config_filter="all")
    entry = out["topic"][t.name]["retention.ms"]
    assert entry["value"] == "5000000" and entry["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert out["topic"][t.name]["cleanup.policy"]["value"] == "delete"
    node = kp_admin.describe_cluster()["brokers"][0]["broker_id"]
    out = kp_admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(node))], config_filter="all")
    assert out["broker"][str(node)]["message.max.bytes"]["value"] == "1048588"


def test_kafka_python_cluster_records_logdirs(broker, kp_admin, make_topic):
    from kafka import TopicPartition as KTP
    from kafka.admin import OffsetSpec as KOffsetSpec

    md = kp_admin.describe_cluster()
    assert md["cluster_id"] and len(md["brokers"]) == 1 and md["controller_id"] == md["brokers"][0]["broker_id"]
    assert md["brokers"][0]["port"] == broker.port

    t = make_topic(1)
    produce_confluent(broker.bootstrap, t.name, [Msg(b"k", b"v%d" % i) for i in range(8)])
    tp = KTP(t.name, 0)
    res = kp_admin.delete_records({tp: 3})
    assert "3" in repr(res)
    offs = kp_admin.list_partition_offsets({tp: KOffsetSpec.EARLIEST})
    assert offs[tp].offset == 3
    offs = kp_admin.list_partition_offsets({tp: KOffsetSpec.LATEST})
    assert offs[tp].offset == 8

    (entry,) = kp_admin.describe_log_dirs()
    (logdir,) = entry["log_dirs"]
    assert logdir["error_code"] == 0
    if broker.data_dir is not None:
        assert logdir["log_dir"] == str(broker.data_dir)
    (topic_entry,) = [x for x in logdir["topics"] if x["name"] == t.name]
    (part,) = topic_entry["partitions"]
    assert part["partition_index"] == 0 and part["partition_size"] > 0
