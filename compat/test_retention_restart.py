"""Retention moves the log start forward; restarts keep messages, offsets and topics."""

from __future__ import annotations

import time

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec, ResourceType

from compat.clients import Msg, check_roundtrip, consume_confluent, make_messages, produce_confluent
from compat.conftest import create_topic, unique_name, wait_for_topic

MB = 1024 * 1024


def offsets(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(earliest, latest) through ListOffsets."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, partition)
    lo = admin.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=15)[tp].result(15).offset
    hi = admin.list_offsets({tp: OffsetSpec.latest()}, request_timeout=15)[tp].result(15).offset
    return lo, hi


def produce_old(bootstrap: str, topic: str, n: int, size: int, age_ms: int) -> None:
    """n records of `size` bytes to partition 0, stamped `age_ms` in the past."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    ts = int(time.time() * 1000) - age_ms
    errors = []
    for i in range(n):
        p.produce(topic, value=b"%08d" % i + b"r" * (size - 8), partition=0, timestamp=ts,
                  on_delivery=lambda e, m: e and errors.append(e))
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors


def test_retention_moves_log_start_and_offsets_continue(start_broker):
    b = start_broker(log_retention_check_interval_ms=200)
    name = unique_name()
    create_topic(b.bootstrap, name, 1, {"segment.bytes": MB, "retention.ms": 600_000})
    # ~3.5 MB stamped an hour ago, then a few fresh records: every segment but the
    # last is past retention.ms.  (If everything were expired, Kafka would roll and
    # delete the active segment too.)
    produce_old(b.bootstrap, name, 345, 10_000, age_ms=3_600_000)
    produce_old(b.bootstrap, name, 5, 10_000, age_ms=0)

    deadline = time.monotonic() + 20
    lo, hi = offsets(b.bootstrap, name)
    while lo == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        lo, hi = offsets(b.bootstrap, name)
    assert 0 < lo <= 345, f"log start offset did not move as expected (earliest={lo}, latest={hi})"
    assert hi == 350

    # A new record takes the next offset, never a reused one.
    assert produce_confluent(b.bootstrap, name, [Msg(b"k", b"fresh")]) == [(0, 350)]
    got = consume_confluent(b.bootstrap, name, 351 - lo, timeout=20, extra={"fetch.max.bytes": 5 * MB})
    assert [r.offset for r in got] == list(range(lo, 351))
    assert got[-1].value == b"fresh"

    # Restart: the log start offset and the end stay where they were.
    b.restart()
    assert offsets(b.bootstrap, name) == (lo, 351)
    assert produce_confluent(b.bootstrap, name, [Msg(b"k", b"after-restart")]) == [(0, 351)]


def test_retention_bytes(start_broker):
    b = start_broker(log_retention_check_interval_ms=200)
    name = unique_name()
    create_topic(b.bootstrap, name, 1, {"segment.bytes": MB, "retention.bytes": MB})
    produce_old(b.bootstrap, name, 400, 10_000, age_ms=0)
    deadline = time.monotonic() + 20
    lo, hi = offsets(b.bootstrap, name)
    while lo == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        lo, hi = offsets(b.bootstrap, name)
    assert lo > 0 and hi == 400
    # at most retention.bytes plus the active segment remain
    assert (hi - lo) * 10_000 <= 2 * MB + 100_000


def test_restart_keeps_messages_offsets_and_topics(start_broker):
    b = start_broker()
    name = unique_name()
    t = create_topic(b.bootstrap, name, 3, {"retention.ms": 123_456_789})
    gone = create_topic(b.bootstrap, unique_name(), 1)
    msgs = make_messages(1000)
    placements = produce_confluent(b.bootstrap, name, msgs)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics([gone.name], operation_timeout=15)[gone.name].result(15)

    code = b.stop()
    assert code == 0, f"kbroker exited with {code} on SIGTERM"
    b.start()

    wait_for_topic(b.bootstrap, name, 3)
    got = consume_confluent(b.bootstrap, name, len(msgs))
    check_roundtrip(msgs, placements, got, t.partitions)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert gone.name not in admin.list_topics(timeout=15).topics
    res = ConfigResource(ResourceType.TOPIC, name)
    assert admin.describe_configs([res])[res].result(15)["retention.ms"].value == "123456789"
    cluster_before = admin.describe_cluster().result(15).cluster_id

    # offsets continue per partition
    counts = {p: 0 for p in range(3)}
    for p, _ in placements:
        counts[p] += 1
    more = make_messages(100, tag="more")
    for (p, off) in produce_confluent(b.bootstrap, name, more):
        assert off == counts[p]
        counts[p] += 1

    # and once more, with the cluster id kept
    b.restart()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert admin.describe_cluster().result(15).cluster_id == cluster_before
    got = consume_confluent(b.bootstrap, name, 1100)
    assert len(got) == 1100
