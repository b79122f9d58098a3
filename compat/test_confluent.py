"""confluent-kafka (librdkafka) against a real kbroker: 1,000 keyed messages with headers, manual assignment."""

from compat.clients import check_roundtrip, consume_confluent, make_messages, produce_confluent


def test_produce_consume_1000_keyed(broker, topic):
    msgs = make_messages(1000)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    got = consume_confluent(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)


def test_null_keys_and_values(broker, topic):
    """Unkeyed messages and null values (tombstones) survive the trip."""
    from compat.clients import Msg

    msgs = [Msg(None, f"unkeyed-{i}".encode()) for i in range(50)] + [Msg(b"tomb", None)]
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    got = consume_confluent(broker.bootstrap, topic.name, len(msgs))
    assert len(got) == len(msgs)
    assert sorted((r.key, r.value) for r in got if r.key) == [(b"tomb", None)]
    assert sorted(r.value for r in got if r.key is None) == sorted(m.value for m in msgs if m.key is None)
    at = {(r.partition, r.offset): r.value for r in got}
    assert [at[p] for p in placements] == [m.value for m in msgs]


def test_metadata_and_watermarks(broker, topic):
    from confluent_kafka import Consumer, TopicPartition

    msgs = make_messages(30)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compat-unused"})
    try:
        md = c.list_topics(topic.name, timeout=10)
        t = md.topics[topic.name]
        assert sorted(t.partitions) == list(range(topic.partitions))
        assert all(p.leader in md.brokers for p in t.partitions.values())
        counts = {}
        for p, _ in placements:
            counts[p] = counts.get(p, 0) + 1
        for p in range(topic.partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic.name, p), timeout=10)
            assert (lo, hi) == (0, counts.get(p, 0))
    finally:
        c.close()
