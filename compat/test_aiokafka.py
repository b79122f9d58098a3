"""aiokafka against a real kbroker: 1,000 keyed messages with headers, manual assignment."""

from compat.clients import check_roundtrip, consume_aiokafka, make_messages, produce_aiokafka


def test_produce_consume_1000_keyed(broker, topic):
    msgs = make_messages(1000)
    placements = produce_aiokafka(broker.bootstrap, topic.name, msgs)
    got = consume_aiokafka(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)
