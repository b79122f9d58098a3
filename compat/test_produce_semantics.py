"""acks, size limits and the idempotent producer."""

import time

import pytest

from compat.clients import (
    Msg,
    check_roundtrip,
    consume_confluent,
    make_messages,
    produce_aiokafka,
    produce_confluent,
    produce_kafka_python,
)

MAX = 1048588  # message.max.bytes default


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks_confluent(broker, topic, acks):
    msgs = make_messages(300)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs, acks=acks)
    got = consume_confluent(broker.bootstrap, topic.name, len(msgs))
    check_roundtrip(msgs, placements, got, topic.partitions)
    if acks == 0:
        assert all(off == -1 for _, off in placements)
    else:
        assert all(off >= 0 for _, off in placements)


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks_kafka_python(broker, topic, acks):
    msgs = make_messages(300)
    placements = produce_kafka_python(broker.bootstrap, topic.name, msgs, acks=acks)
    if acks == 0:
        # With acks=0 nobody tells kafka-python an offset, yet it reports
        # base offset -1 plus the record's index in its batch: meaningless.
        placements = None
    check_roundtrip(msgs, placements, consume_confluent(broker.bootstrap, topic.name, len(msgs)), topic.partitions)


def test_acks_zero_then_acks_all_on_same_connection(broker, make_topic):
    """acks=0 requests get no answer; the next answered request must still match its own."""
    from kafka import KafkaProducer

    t = make_topic(1)
    p0 = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=0, linger_ms=0)
    try:
        for i in range(50):
            p0.send(t.name, key=b"k", value=b"zero-%d" % i)
        p0.flush(20)
    finally:
        p0.close(10)
    placements = produce_confluent(broker.bootstrap, t.name, [Msg(b"k", b"after")])
    assert placements == [(0, 50)]


def test_900kb_message(broker, topic):
    big = Msg(b"big", b"x" * 900_000)
    placements = produce_confluent(broker.bootstrap, topic.name, [big])
    got = consume_confluent(broker.bootstrap, topic.name, 1, extra={"fetch.max.bytes": 2_000_000,
                                                                   "max.partition.fetch.bytes": 2_000_000})
    assert len(got) == 1 and got[0].value == big.value and (got[0].partition, got[0].offset) == placements[0]
    placements = produce_kafka_python(broker.bootstrap, topic.name, [Msg(b"big2", b"y" * 900_000)])
    assert placements[0][1] >= 0


def test_oversize_confluent(broker, topic):
    """Above message.max.bytes: MSG_SIZE_TOO_LARGE from the broker, promptly; the producer keeps working."""
    from confluent_kafka import KafkaError, Producer

    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 10_000_000, "acks": "all",
                  "message.timeout.ms": 20000, "retries": 0})
    reports = []
    t0 = time.monotonic()
    p.produce(topic.name, key=b"huge", value=b"z" * (MAX + 200_000), on_delivery=lambda e, m: reports.append(e))
    assert p.flush(25) == 0
    elapsed = time.monotonic() - t0
    assert reports and reports[0] is not None
    assert reports[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, reports[0]
    assert elapsed < 15, f"took {elapsed:.1f}s"
    reports.clear()
    p.produce(topic.name, key=b"small", value=b"ok", on_delivery=lambda e, m: reports.append(e))
    assert p.flush(20) == 0 and reports == [None]


def test_oversize_kafka_python(broker, topic):
    import kafka.errors as E
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=10_000_000, retries=0,
                      request_timeout_ms=20000)
    try:
        fut = p.send(topic.name, key=b"huge", value=b"z" * (MAX + 200_000))
        with pytest.raises(E.MessageSizeTooLargeError):
            fut.get(timeout=25)
        md = p.send(topic.name, key=b"small", value=b"ok").get(timeout=20)
        assert md.offset >= 0
    finally:
        p.close(10)


def test_oversize_topic_max_message_bytes(broker, make_topic):
    from confluent_kafka import KafkaError, Producer

    t = make_topic(1, config={"max.message.bytes": "2000"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0, "message.timeout.ms": 20000})
    reports = []
    # Separate flushes: the limit applies to a whole batch, so keep them apart.
    p.produce(t.name, value=b"q" * 5000, on_delivery=lambda e, m: reports.append(e))
    assert p.flush(25) == 0
    p.produce(t.name, value=b"q" * 100, on_delivery=lambda e, m: reports.append(e))
    assert p.flush(25) == 0
    assert [e.code() if e else 0 for e in reports] == [KafkaError.MSG_SIZE_TOO_LARGE, 0]


def test_idempotent_confluent(broker, topic):
    msgs = make_messages(1000)
    placements = produce_confluent(broker.bootstrap, topic.name, msgs,
                                   extra={"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})
    check_roundtrip(msgs, placements, consume_confluent(broker.bootstrap, topic.name, len(msgs)), topic.partitions)


def test_idempotent_kafka_python_and_aiokafka(broker, topic):
    m1 = make_messages(200, tag="kp")
    m2 = make_messages(200, tag="aio")
    produce_kafka_python(broker.bootstrap, topic.name, m1, extra={"enable_idempotence": True})
    produce_aiokafka(broker.bootstrap, topic.name, m2, extra={"enable_idempotence": True})
    got = consume_confluent(broker.bootstrap, topic.name, 400)
    assert sorted(r.value for r in got) == sorted(m.value for m in m1 + m2)
