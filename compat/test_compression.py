"""Compressed batches from several producers come back intact through other clients."""

from pathlib import Path

import pytest

from compat.clients import (
    check_roundtrip,
    consume_confluent,
    consume_kafka_python,
    kafkajs_available,
    make_messages,
    produce_confluent,
    produce_kafka_python,
    produce_kafkajs,
)

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def _stored_bytes(broker, topic: str) -> int:
    """Bytes in the topic's segment files, if the data dir uses Kafka's layout."""
    if broker.data_dir is None:
        return -1
    total = 0
    for d in Path(broker.data_dir).glob(f"{topic}-*"):
        total += sum(f.stat().st_size for f in d.glob("*.log"))
    return total


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_compressed(broker, topic, codec):
    msgs = make_messages(500, value_size=300)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs, compression=codec,
                                   extra={"linger.ms": 20, "batch.num.messages": 200})
    check_roundtrip(msgs, placements, consume_kafka_python(broker.bootstrap, topic.name, len(msgs)),
                    topic.partitions)
    check_roundtrip(msgs, placements, consume_confluent(broker.bootstrap, topic.name, len(msgs)), topic.partitions)
    stored = _stored_bytes(broker, topic.name)
    raw = sum(len(m.value) for m in msgs)
    if stored > 0:
        assert stored < raw / 2, f"{codec}: {stored} bytes stored for {raw} bytes of values: kept compressed?"


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_compressed(broker, topic, codec):
    msgs = make_messages(500, value_size=300)
    placements = produce_kafka_python(broker.bootstrap, topic.name, msgs, compression=codec,
                                      extra={"linger_ms": 20})
    check_roundtrip(msgs, placements, consume_confluent(broker.bootstrap, topic.name, len(msgs)), topic.partitions)


@pytest.mark.skipif(not kafkajs_available(), reason="kafkajs not installed")
def test_kafkajs_gzip(broker, topic):
    msgs = make_messages(300, value_size=300)
    placements = produce_kafkajs(broker.bootstrap, topic.name, msgs, compression="gzip")
    check_roundtrip(msgs, placements, consume_confluent(broker.bootstrap, topic.name, len(msgs)), topic.partitions)
    check_roundtrip(msgs, placements, consume_kafka_python(broker.bootstrap, topic.name, len(msgs)),
                    topic.partitions)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_topic_compression_type(broker, make_topic, codec):
    """compression.type on the topic: the broker recompresses; readers see the same records."""
    t = make_topic(1, config={"compression.type": codec})
    msgs = make_messages(200, value_size=300)
    placements = produce_confluent(broker.bootstrap, t.name, msgs, compression="lz4")
    check_roundtrip(msgs, placements, consume_confluent(broker.bootstrap, t.name, len(msgs)), 1)
    check_roundtrip(msgs, placements, consume_kafka_python(broker.bootstrap, t.name, len(msgs)), 1)
