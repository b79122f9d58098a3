"""SIGKILL during acks=all production loses nothing that was acknowledged."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Producer

from compat.clients import consume_confluent
from compat.conftest import create_topic, unique_name


def test_sigkill_keeps_every_acknowledged_record(start_broker):
    b = start_broker()
    name = unique_name()
    create_topic(b.bootstrap, name, 3)
    p = Producer({
        "bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2,
        "enable.idempotence": False, "max.in.flight.requests.per.connection": 1,  # keeps order on retry
        "message.timeout.ms": 60000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
        "socket.timeout.ms": 10000,
    })
    acked: dict[int, tuple[int, int]] = {}
    failed: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    sent = [0]

    def report(i):
        def cb(err, msg):
            with lock:
                if err is None:
                    acked[i] = (msg.partition(), msg.offset())
                else:
                    failed.append(i)
        return cb

    def run():
        i = 0
        while not stop.is_set() and i < 200_000:
            try:
                p.produce(name, key=b"k%d" % (i % 17), value=b"value-%d" % i, on_delivery=report(i))
                i += 1
            except BufferError:
                p.poll(0.01)
            p.poll(0)
            if i % 200 == 0:
                time.sleep(0.005)
        sent[0] = i

    th = threading.Thread(target=run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while len(acked) < 10000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(acked) >= 10000, f"only {len(acked)} acknowledged in 30s before the kill"
    b.kill()
    time.sleep(0.5)
    stop.set()
    th.join(10)
    b.start()
    assert p.flush(60) == 0, "producer could not finish after the restart"

    with lock:
        acked_now = dict(acked)
    assert acked_now, "nothing acknowledged"
    hi = max(off for _, off in acked_now.values())
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "compat-unused"})
    try:
        ends = [c.get_watermark_offsets(TopicPartition(name, part), timeout=15)[1] for part in range(3)]
    finally:
        c.close()
    got = consume_confluent(b.bootstrap, name, sum(ends), timeout=30)  # everything, duplicates included
    assert len(got) == sum(ends)
    at = {(r.partition, r.offset): r.value for r in got}
    missing = [(i, pl) for i, pl in acked_now.items() if at.get(pl) != b"value-%d" % i]
    assert not missing, f"{len(missing)} acknowledged records missing or changed, e.g. {missing[:5]}"
    # per partition, acknowledged records keep send order
    for part in range(3):
        offs = [acked_now[i][1] for i in sorted(acked_now) if acked_now[i][0] == part]
        assert offs == sorted(offs), f"partition {part}: acknowledged order differs from log order"
    assert hi >= 0
