"""Consumer groups (classic protocol, and KIP-848 where the client supports it).

Marked ``groups``: deselect with ``-m "not groups"`` while the coordinator is incomplete.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from compat.clients import (
    Rec,
    _recs_from_js,
    check_roundtrip,
    kafkajs_available,
    make_messages,
    produce_confluent,
    run_js,
)

pytestmark = pytest.mark.groups


def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def confluent_group_consume(bootstrap, topic, group, count, timeout=40, extra=None, classic_timeouts=True):
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    if classic_timeouts:  # the KIP-848 protocol takes these from the broker instead
        conf.update({"session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
    conf.update(extra or {})
    c = Consumer(conf)
    out: list[Rec] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                assert not m.error(), m.error()
                out.append(Rec(m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ())))
        if out:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return out


def test_confluent_group_commit_and_resume(broker, topic):
    g = group_id()
    msgs = make_messages(300)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    got = confluent_group_consume(broker.bootstrap, topic.name, g, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)
    more = make_messages(60, tag="more")
    produce_confluent(broker.bootstrap, topic.name, more)
    got2 = confluent_group_consume(broker.bootstrap, topic.name, g, len(more))
    assert sorted(r.value for r in got2) == sorted(m.value for m in more), "resumed from the committed offsets"


def test_confluent_two_members_split_partitions(broker, make_topic):
    from confluent_kafka import Consumer

    t = make_topic(4)
    g = group_id()
    produce_confluent(broker.bootstrap, t.name, make_messages(200))
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": g, "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
    a, b = Consumer(conf), Consumer(conf)
    try:
        a.subscribe([t.name])
        b.subscribe([t.name])
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            a.poll(0.2)
            b.poll(0.2)
            pa = {p.partition for p in a.assignment()}
            pb = {p.partition for p in b.assignment()}
            if pa and pb and not (pa & pb) and pa | pb == set(range(4)):
                break
        assert pa and pb and not (pa & pb) and pa | pb == set(range(4)), (pa, pb)
    finally:
        a.close()
        b.close()


def test_kafka_python_group(broker, topic):
    from kafka import KafkaConsumer

    msgs = make_messages(200)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    c = KafkaConsumer(topic.name, bootstrap_servers=broker.bootstrap, group_id=group_id(),
                      auto_offset_reset="earliest", enable_auto_commit=False)
    out = []
    try:
        deadline = time.monotonic() + 40
        while len(out) < len(msgs) and time.monotonic() < deadline:
            for _, recs in c.poll(timeout_ms=500).items():
                out += [Rec(r.partition, r.offset, r.key, r.value, tuple(r.headers or ())) for r in recs]
        c.commit()
        committed = {p: c.committed(tp) for p, tp in ((tp.partition, tp) for tp in c.assignment())}
    finally:
        c.close()
    check_roundtrip(msgs, placements, out, topic.partitions)
    per_part = {}
    for p, _ in placements:
        per_part[p] = per_part.get(p, 0) + 1
    assert {p: v for p, v in committed.items() if v} == per_part


def test_aiokafka_group(broker, topic):
    from aiokafka import AIOKafkaConsumer

    msgs = make_messages(200)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)

    async def run():
        c = AIOKafkaConsumer(topic.name, bootstrap_servers=broker.bootstrap, group_id=group_id(),
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        out = []
        try:
            deadline = time.monotonic() + 40
            while len(out) < len(msgs) and time.monotonic() < deadline:
                for _, recs in (await c.getmany(timeout_ms=500)).items():
                    out += [Rec(r.partition, r.offset, r.key, r.value, tuple(r.headers or ())) for r in recs]
            await c.commit()
        finally:
            await c.stop()
        return out

    out = asyncio.run(asyncio.wait_for(run(), 60))
    check_roundtrip(msgs, placements, out, topic.partitions)


@pytest.mark.skipif(not kafkajs_available(), reason="kafkajs not installed")
def test_kafkajs_group(broker, topic):
    msgs = make_messages(200)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    out = run_js("group_consume.js", {"bootstrap": broker.bootstrap, "topic": topic.name, "groupId": group_id(),
                                      "count": len(msgs), "timeoutMs": 40000}, timeout=60)
    check_roundtrip(msgs, placements, _recs_from_js(out), topic.partitions)


def test_confluent_kip848_consumer_protocol(broker, topic):
    msgs = make_messages(200)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    got = confluent_group_consume(broker.bootstrap, topic.name, group_id(), len(msgs),
                                  extra={"group.protocol": "consumer"}, classic_timeouts=False)
    check_roundtrip(msgs, placements, got, topic.partitions)


def test_admin_groups(broker, topic):
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    g = group_id()
    produce_confluent(broker.bootstrap, topic.name, make_messages(30))
    confluent_group_consume(broker.bootstrap, topic.name, g, 30)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups(request_timeout=15).result(15)
    assert g in {x.group_id for x in listed.valid}
    desc = admin.describe_consumer_groups([g], request_timeout=15)[g].result(15)
    assert desc.group_id == g
    offs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)], request_timeout=15)[g].result(15)
    total = sum(tp.offset for tp in offs.topic_partitions if tp.topic == topic.name)
    assert total == 30
    admin.delete_consumer_groups([g], request_timeout=15)[g].result(15)
