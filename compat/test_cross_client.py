"""Produce with one client, consume with another: the bytes on disk are the contract."""

import pytest

from compat.clients import CONSUMERS, PRODUCERS, check_roundtrip, kafkajs_available, make_messages

PAIRS = [
    ("kafka_python", "confluent"),
    ("confluent", "kafka_python"),
    ("aiokafka", "kcat"),
    ("kcat", "aiokafka"),
    ("kafkajs", "kafka_python"),
    ("confluent", "kafkajs"),
    ("kafka_python", "aiokafka"),
    ("aiokafka", "kafkajs"),
]


@pytest.mark.parametrize("producer, consumer", PAIRS, ids=[f"{p}-to-{c}" for p, c in PAIRS])
def test_cross_client(broker, topic, producer, consumer):
    if "kafkajs" in (producer, consumer) and not kafkajs_available():
        pytest.skip("kafkajs not installed (npm ci --prefix compat/js)")
    msgs = make_messages(300, per_message_headers=(producer != "kcat"))
    placements = PRODUCERS[producer](broker.bootstrap, topic.name, msgs)
    got = CONSUMERS[consumer](broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)
