"""kafkajs (node) against a real kbroker, through the scripts in compat/js.

kafkajs has no manual-assignment consumer; compat/js/consume.js drives the
client's own metadata, connection and Fetch code per partition instead.
"""

import pytest

from compat.clients import (
    check_roundtrip,
    consume_confluent,
    consume_kafkajs,
    kafkajs_available,
    make_messages,
    produce_kafkajs,
    run_js,
)

pytestmark = pytest.mark.skipif(not kafkajs_available(),
                                reason="node or compat/js/node_modules missing (npm ci --prefix compat/js)")


def test_produce_consume_1000_keyed(broker, topic):
    msgs = make_messages(1000)
    placements = produce_kafkajs(broker.bootstrap, topic.name, msgs)
    got = consume_kafkajs(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)


def test_kafkajs_partitioner_matches_librdkafka_murmur2(broker, topic):
    """kafkajs's default partitioner is Java's murmur2; librdkafka's murmur2_random agrees."""
    msgs = make_messages(100)
    placements = produce_kafkajs(broker.bootstrap, topic.name, msgs)
    got = consume_confluent(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)


def test_admin_metadata(broker, topic):
    out = run_js("metadata.js", {"bootstrap": broker.bootstrap, "topic": topic.name})
    assert out["cluster"]["brokers"]
    (t,) = out["topics"]
    assert t["name"] == topic.name and len(t["partitions"]) == topic.partitions
    assert sorted(int(o["partition"]) for o in out["offsets"]) == list(range(topic.partitions))
    assert all(o["offset"] == "0" for o in out["offsets"])
