"""kafka-python against a real kbroker: 1,000 keyed messages with headers, manual assignment."""

from compat.clients import check_roundtrip, consume_kafka_python, make_messages, produce_kafka_python


def test_produce_consume_1000_keyed(broker, topic):
    msgs = make_messages(1000)
    placements = produce_kafka_python(broker.bootstrap, topic.name, msgs)
    got = consume_kafka_python(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)


def test_metadata(broker, topic):
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert topic.name in c.topics()
        assert c.partitions_for_topic(topic.name) == set(range(topic.partitions))
    finally:
        c.close()


def test_end_offsets(broker, topic):
    from kafka import KafkaConsumer, TopicPartition

    placements = produce_kafka_python(broker.bootstrap, topic.name, make_messages(40))
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ends = c.end_offsets(tps)
        begins = c.beginning_offsets(tps)
        for tp in tps:
            assert begins[tp] == 0
            assert ends[tp] == sum(1 for p, _ in placements if p == tp.partition)
    finally:
        c.close()
