"""Admin requests against an in-process broker: Kafka's 10,000-records cap per
operation, linear request handling, manual assignments and InitProducerId."""

from __future__ import annotations

import types
import uuid

import trio

from kbroker.apis import configs as configs_api
from kbroker.apis import topics as topics_api
from kbroker.broker import Broker
from kbroker.controller.controller import TOO_MANY_PARTITIONS, TOO_MANY_RECORDS
from protocol import ApiKey, ErrorCode
from test_server import Client, broker, create_topic, make_config, start  # noqa: F401 (broker: fixture)

ZERO = uuid.UUID(int=0)


def ns(**kw):
    return types.SimpleNamespace(**kw)


def topics_body(*topics, validate_only=False):
    return {"topics": list(topics), "timeout_ms": 1000, "validate_only": validate_only}


def topic(name, partitions=1, rf=1, assignments=()):
    return {"name": name, "num_partitions": partitions, "replication_factor": rf,
            "assignments": list(assignments), "configs": []}


async def test_create_topics_caps_and_duplicates(broker):
    c = await Client.connect(broker.port)
    r = await c.call(ApiKey.CREATE_TOPICS, 7, topics_body(topic("huge", 1_000_000), validate_only=True))
    assert (r.topics[0].error_code, r.topics[0].error_message) == (ErrorCode.POLICY_VIOLATION, TOO_MANY_PARTITIONS)
    r = await c.call(ApiKey.CREATE_TOPICS, 7, topics_body(topic("huge", 1_000_000)))
    assert r.topics[0].error_code == ErrorCode.POLICY_VIOLATION and "huge" not in broker.image.topics
    # Duplicates are found in one pass (names.count made 40,000 names take 18 s).
    many = [topic(f"bad name {i}", 0) for i in range(20_000)] * 2
    r = await c.call(ApiKey.CREATE_TOPICS, 7, topics_body(*many))
    assert {x.error_code for x in r.topics} == {ErrorCode.INVALID_REQUEST} and len(r.topics) == 40_000


async def test_metadata_auto_creation_is_capped(broker):
    c = await Client.connect(broker.port)
    names = [{"name": f"auto-{i}"} for i in range(5_001)]  # 10,002 records at one partition each
    r = await c.call(ApiKey.METADATA, 12, {"topics": names, "allow_auto_topic_creation": True})
    assert {t.error_code for t in r.topics} == {ErrorCode.POLICY_VIOLATION}
    assert not any(n.startswith("auto-") for n in broker.image.topics)
    r = await c.call(ApiKey.METADATA, 12, {"topics": names[:3], "allow_auto_topic_creation": True})
    assert [t.error_code for t in r.topics] == [0, 0, 0]


async def test_create_partitions_refuses_bad_assignments_and_huge_counts(broker):
    c = await Client.connect(broker.port)
    await create_topic(c, "grow")

    async def grow(count, assignments):
        body = {"topics": [{"name": "grow", "count": count,
                            "assignments": None if assignments is None else [{"broker_ids": a} for a in assignments]}],
                "timeout_ms": 1000, "validate_only": False}
        return (await c.call(ApiKey.CREATE_PARTITIONS, 3, body)).results[0]

    assert (await grow(2, [[]])).error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert (await grow(2, [[1, 1]])).error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    assert (await grow(2, [[7]])).error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    r = await grow(2**31 - 1, None)
    assert (r.error_code, r.error_message) == (ErrorCode.POLICY_VIOLATION, TOO_MANY_RECORDS)
    assert len(broker.image.topics["grow"].partitions) == 1
    assert (await grow(2, [[1]])).error_code == 0
    assert len(broker.image.topics["grow"].partitions) == 2
    # A topic named twice is refused in both entries, and not grown.
    body = {"topics": [{"name": "grow", "count": 3, "assignments": None}] * 2, "timeout_ms": 1000, "validate_only": False}
    r = await c.call(ApiKey.CREATE_PARTITIONS, 3, body)
    assert [x.error_code for x in r.results] == [ErrorCode.INVALID_REQUEST] * 2
    assert len(broker.image.topics["grow"].partitions) == 2


async def test_init_producer_id_never_echoes_the_client(broker):
    c = await Client.connect(broker.port)

    async def init(pid, epoch, txn=None):
        return await c.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": txn, "transaction_timeout_ms": 1000,
                                                         "producer_id": pid, "producer_epoch": epoch})

    first = await init(-1, -1)
    assert first.error_code == 0 and first.producer_epoch == 0
    # A client-supplied pair (KIP-360 reset, or made up) gets a fresh id, as Kafka's "blind accept" does.
    for pid, epoch in ((2**62, -4), (first.producer_id, 5), (first.producer_id, 32767)):
        r = await init(pid, epoch)
        assert r.error_code == 0 and r.producer_epoch == 0
        assert r.producer_id not in (pid, first.producer_id)
    assert (await init(-1, -1, txn="")).error_code == ErrorCode.INVALID_REQUEST


def offline_broker(tmp_path, n_topics: int) -> Broker:
    """A Broker whose image holds ``n_topics`` one-partition topics, never started:
    handlers are called directly and ``submit`` only records what it is given
    (what a decision function returns), writing nothing."""
    b = Broker(make_config(tmp_path))
    for i in range(n_topics):
        tid = uuid.uuid4()
        b.image.apply("TopicRecord", ns(name=f"t{i}", topic_id=tid))
        b.image.apply("PartitionRecord", ns(partition_id=0, topic_id=tid, replicas=[1], isr=[1], leader=1,
                                            leader_epoch=0, partition_epoch=0))
    b.submitted = []

    async def submit(records):
        if callable(records):  # decided under the lock, as Broker.submit does
            records = records()
        if records:
            b.submitted.append(records)

    b.submit = submit
    return b


def test_delete_topics_over_the_cap_is_refused_whole(tmp_path):
    b = offline_broker(tmp_path, 10_001)
    body = ns(topics=[ns(name=f"t{i}", topic_id=ZERO) for i in range(10_001)])
    r = trio.run(topics_api.delete_topics, b, ns(api_version=6, client_id="t"), body)
    assert {x["error_code"] for x in r["responses"]} == {ErrorCode.POLICY_VIOLATION}
    assert b.submitted == []
    body = ns(topics=[ns(name=f"t{i}", topic_id=ZERO) for i in range(10_000)])
    r = trio.run(topics_api.delete_topics, b, ns(api_version=6, client_id="t"), body)
    assert {x["error_code"] for x in r["responses"]} == {0} and len(b.submitted[0]) == 10_000


def test_alter_configs_over_the_cap_is_refused_whole(tmp_path):
    b = offline_broker(tmp_path, 10_001)

    def body(n):
        return ns(validate_only=False, resources=[
            ns(resource_type=2, resource_name=f"t{i}",
               configs=[ns(name="retention.ms", value="1000", config_operation=0)])
            for i in range(n)])

    r = trio.run(configs_api.incremental_alter_configs, b, ns(api_version=1, client_id="t"), body(10_001))
    assert {x["error_code"] for x in r["responses"]} == {ErrorCode.POLICY_VIOLATION}
    assert len(r["responses"]) == 10_001 and b.submitted == []
    r = trio.run(configs_api.incremental_alter_configs, b, ns(api_version=1, client_id="t"), body(10_000))
    assert {x["error_code"] for x in r["responses"]} == {0} and len(b.submitted[0]) == 10_000


def test_list_append_and_subtract_are_linear():
    items = ",".join(f"v{i}" for i in range(50_000))
    assert configs_api._list_op(items, configs_api.OP_APPEND, items + ",new") == items + ",new"
    assert configs_api._list_op(items + ",new", configs_api.OP_SUBTRACT, items) == "new"
