"""One produce and one consume function per real client, with a common shape.

``produce_<client>(bootstrap, topic, messages, **options)`` sends the
messages in order and returns, per message, ``(partition, offset)`` as the
client reported it (offset -1 when the client cannot know, e.g. acks=0), or
``None`` when the client does not report placements at all (kcat).

``consume_<client>(bootstrap, topic, count, timeout=...)`` reads every
partition from offset 0 with MANUAL assignment (no consumer group) until it
has ``count`` records or the deadline passes, and returns :class:`Rec` s.

:func:`check_roundtrip` is the shared verdict.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

JS_DIR = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node") or "node"
KCAT = shutil.which("kcat") or shutil.which("kafkacat") or "kcat"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Msg:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Rec:
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: Optional[int] = None


def make_messages(n: int = 1000, nkeys: int = 23, tag: str = "", per_message_headers: bool = True,
                  value_size: int = 0) -> list[Msg]:
    """Keyed messages; key i % nkeys; headers carry the index (or are constant)."""
    tag = tag or uuid.uuid4().hex[:6]
    out = []
    for i in range(n):
        value = f"{tag}-value-{i}".encode()
        if value_size > len(value):
            value += b"." * (value_size - len(value))
        headers = (("idx", str(i).encode()), ("src", tag.encode())) if per_message_headers else (("src", tag.encode()),)
        out.append(Msg(f"key-{i % nkeys}".encode(), value, headers))
    return out


def check_roundtrip(sent: Sequence[Msg], placements: Optional[Sequence[Optional[tuple[int, int]]]],
                    got: Sequence[Rec], partitions: Optional[int] = None) -> None:
    """Everything sent came back once: same key -> same partition, per-key order
    kept, offsets contiguous from 0 in every partition, headers intact, and
    (if the producer reported them) at the offsets the producer was told."""
    assert len(got) == len(sent), f"sent {len(sent)} messages, consumed {len(got)}"
    by_partition: dict[int, list[Rec]] = defaultdict(list)
    for r in got:
        by_partition[r.partition].append(r)
    if partitions is not None:
        assert set(by_partition) <= set(range(partitions)), sorted(by_partition)
    for p, recs in by_partition.items():
        offsets = [r.offset for r in recs]
        assert offsets == list(range(len(recs))), f"partition {p}: offsets not contiguous from 0: {offsets[:20]}..."
    key_partition: dict[Optional[bytes], int] = {}
    for r in got:
        assert key_partition.setdefault(r.key, r.partition) == r.partition, \
            f"key {r.key!r} in partitions {key_partition[r.key]} and {r.partition}"
    # Per key, values arrive in send order.
    sent_by_key: dict[Optional[bytes], list[Msg]] = defaultdict(list)
    for m in sent:
        sent_by_key[m.key].append(m)
    got_by_key: dict[Optional[bytes], list[Rec]] = defaultdict(list)
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        got_by_key[r.key].append(r)
    assert set(sent_by_key) == set(got_by_key)
    for k, msgs in sent_by_key.items():
        recs = got_by_key[k]
        assert [r.value for r in recs] == [m.value for m in msgs], f"key {k!r}: values out of order or changed"
        for m, r in zip(msgs, recs):
            assert tuple(r.headers) == tuple(m.headers), f"key {k!r}: headers {r.headers} != {m.headers}"
    if placements is not None:
        assert len(placements) == len(sent)
        at = {(r.partition, r.offset): r for r in got}
        for m, pl in zip(sent, placements):
            assert pl is not None, "a message has no delivery report"
            p, off = pl
            if off < 0:
                continue  # the client was not told (acks=0)
            r = at.get((p, off))
            assert r is not None and r.value == m.value, f"{m.value!r} reported at {p}/{off}, found {r}"


def partition_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka)
# ---------------------------------------------------------------------------


def produce_confluent(bootstrap: str, topic: str, messages: Sequence[Msg], *, acks="all",
                      compression: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                      extra: Optional[dict] = None) -> list[Optional[tuple[int, int]]]:
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "acks": str(acks), "linger.ms": 5,
            "message.timeout.ms": int(timeout * 1000 * 0.8), "enable.idempotence": False}
    if compression:
        conf["compression.type"] = compression
    conf.update(extra or {})
    p = Producer(conf)
    placements: list[Optional[tuple[int, int]]] = [None] * len(messages)
    errors: list = []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                placements[i] = (msg.partition(), msg.offset())
        return cb

    for i, m in enumerate(messages):
        while True:
            try:
                p.produce(topic, value=m.value, key=m.key, headers=list(m.headers), on_delivery=report(i))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, f"confluent producer: {left} messages not delivered within {timeout}s"
    assert not errors, f"confluent producer delivery errors: {errors[:5]}"
    unknown = str(acks) == "0"  # with acks=0 nobody tells the client
    return [(pp, -1 if unknown or off is None or off < 0 else off) for pp, off in placements]  # type: ignore[misc]


def consume_confluent(bootstrap: str, topic: str, count: int, *, timeout: float = DEFAULT_TIMEOUT,
                      extra: Optional[dict] = None) -> list[Rec]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    conf = {"bootstrap.servers": bootstrap,
            # librdkafka insists on a group.id even for assign(); no group is joined.
            "group.id": f"compat-unused-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100}
    conf.update(extra or {})
    c = Consumer(conf)
    out: list[Rec] = []
    try:
        n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for msg in c.consume(num_messages=500, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"confluent consumer error: {msg.error()}")
                out.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value(),
                               tuple(msg.headers() or ()), msg.timestamp()[1]))
    finally:
        c.close()
    return out


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------


def produce_kafka_python(bootstrap: str, topic: str, messages: Sequence[Msg], *, acks="all",
                         compression: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                         extra: Optional[dict] = None) -> list[Optional[tuple[int, int]]]:
    from kafka import KafkaProducer

    acks_value = acks if acks == "all" else int(acks)
    kw = dict(bootstrap_servers=bootstrap, acks=acks_value, linger_ms=5, compression_type=compression,
              request_timeout_ms=int(timeout * 1000 / 2))
    kw.update(extra or {})
    p = KafkaProducer(**kw)
    try:
        futures = [p.send(topic, key=m.key, value=m.value, headers=list(m.headers)) for m in messages]
        p.flush(timeout)
        out = []
        for f in futures:
            md = f.get(timeout=timeout)
            known = acks_value != 0 and md.offset is not None  # with acks=0 nobody tells the client
            out.append((md.partition, md.offset if known else -1))
        return out
    finally:
        p.close(timeout=10)


def consume_kafka_python(bootstrap: str, topic: str, count: int, *, timeout: float = DEFAULT_TIMEOUT,
                         extra: Optional[dict] = None) -> list[Rec]:
    from kafka import KafkaConsumer, TopicPartition

    kw = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
              auto_offset_reset="earliest", fetch_max_wait_ms=100)
    kw.update(extra or {})
    c = KafkaConsumer(**kw)
    out: list[Rec] = []
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while parts is None and time.monotonic() < deadline:
            parts = c.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.1)
        assert parts, f"kafka-python: no metadata for {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        while len(out) < count and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    out.append(Rec(r.partition, r.offset, r.key, r.value,
                                   tuple((k, bytes(v)) for k, v in (r.headers or ())), r.timestamp))
    finally:
        c.close()
    return out


# ---------------------------------------------------------------------------
# aiokafka (asyncio; run in a fresh event loop: pytest here runs trio)
# ---------------------------------------------------------------------------


def produce_aiokafka(bootstrap: str, topic: str, messages: Sequence[Msg], *, acks="all",
                     compression: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                     extra: Optional[dict] = None) -> list[Optional[tuple[int, int]]]:
    from aiokafka import AIOKafkaProducer

    async def run():
        kw = dict(bootstrap_servers=bootstrap, acks=acks if acks == "all" else int(acks), linger_ms=5,
                  compression_type=compression, request_timeout_ms=int(timeout * 1000 / 2))
        kw.update(extra or {})
        p = AIOKafkaProducer(**kw)
        await p.start()
        try:
            futs = [await p.send(topic, key=m.key, value=m.value, headers=list(m.headers)) for m in messages]
            out = []
            for f in futs:
                md = await f
                known = acks != 0 and md.offset is not None  # with acks=0 nobody tells the client
                out.append((md.partition, md.offset if known else -1))
            return out
        finally:
            await p.stop()

    return asyncio.run(asyncio.wait_for(run(), timeout))


def consume_aiokafka(bootstrap: str, topic: str, count: int, *, timeout: float = DEFAULT_TIMEOUT,
                     extra: Optional[dict] = None) -> list[Rec]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        kw = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                  auto_offset_reset="earliest", fetch_max_wait_ms=100)
        kw.update(extra or {})
        c = AIOKafkaConsumer(**kw)
        await c.start()
        out: list[Rec] = []
        try:
            deadline = time.monotonic() + timeout
            parts = None
            while not parts and time.monotonic() < deadline:
                await c._client.add_topic(topic)  # aiokafka's own metadata refresh for one topic
                parts = c.partitions_for_topic(topic)
                if not parts:
                    await asyncio.sleep(0.1)
            assert parts, f"aiokafka: no metadata for {topic}"
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            while len(out) < count and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for tp, recs in batch.items():
                    for r in recs:
                        out.append(Rec(r.partition, r.offset, r.key, r.value,
                                       tuple((k, bytes(v)) for k, v in (r.headers or ())), r.timestamp))
            return out
        finally:
            await c.stop()

    return asyncio.run(asyncio.wait_for(run(), timeout + 15))


# ---------------------------------------------------------------------------
# kcat (librdkafka's command-line client)
# ---------------------------------------------------------------------------


def kcat(*args: str, input: Optional[bytes] = None, timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout)


def produce_kcat(bootstrap: str, topic: str, messages: Sequence[Msg], *, acks="all",
                 compression: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                 extra: Optional[dict] = None) -> None:
    """kcat -P: one line per message, key and value split by a tab; the same
    headers for every message (kcat's -H applies to all)."""
    headers = {m.headers for m in messages}
    assert len(headers) == 1, "kcat sets the same headers on every message: use per_message_headers=False"
    args = ["-b", bootstrap, "-P", "-t", topic, "-K", "\t", "-X", f"acks={acks}", "-X", "linger.ms=5"]
    for k, v in next(iter(headers)):
        args += ["-H", f"{k}={v.decode()}"]
    if compression:
        args += ["-z", compression]
    for k, v in (extra or {}).items():
        args += ["-X", f"{k}={v}"]
    lines = b"".join(m.key + b"\t" + m.value + b"\n" for m in messages)  # type: ignore[operator]
    r = kcat(*args, input=lines, timeout=timeout)
    assert r.returncode == 0, f"kcat -P failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
    return None


def consume_kcat(bootstrap: str, topic: str, count: int, *, timeout: float = DEFAULT_TIMEOUT,
                 extra: Optional[dict] = None) -> list[Rec]:
    """kcat -C on all partitions (kcat assigns them itself, no group), JSON out."""
    args = ["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q", "-c", str(count)]
    for k, v in (extra or {}).items():
        args += ["-X", f"{k}={v}"]
    r = kcat(*args, timeout=timeout)
    assert r.returncode == 0, f"kcat -C failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
    out = []
    for line in r.stdout.decode().splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        h = j.get("headers") or []
        headers = tuple((h[i], (h[i + 1] or "").encode()) for i in range(0, len(h), 2))
        key = j.get("key")
        payload = j.get("payload")
        out.append(Rec(j["partition"], j["offset"], None if key is None else key.encode(),
                       None if payload is None else payload.encode(), headers, j.get("ts")))
    return out


def kcat_metadata(bootstrap: str, topic: Optional[str] = None) -> dict:
    args = ["-b", bootstrap, "-L", "-J"] + (["-t", topic] if topic else [])
    r = kcat(*args, timeout=30)
    assert r.returncode == 0, f"kcat -L failed: {r.stderr.decode(errors='replace')}"
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------
# kafkajs (node scripts in compat/js)
# ---------------------------------------------------------------------------


def _b64(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else base64.b64encode(b).decode()


def _unb64(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else base64.b64decode(s)


def kafkajs_available() -> bool:
    return shutil.which(NODE) is not None and (JS_DIR / "node_modules" / "kafkajs").is_dir()


def run_js(script: str, spec: dict, timeout: float = DEFAULT_TIMEOUT):
    spec = {**spec, "deadlineMs": int(timeout * 1000)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    try:
        r = subprocess.run([NODE, str(JS_DIR / script), path], capture_output=True, timeout=timeout + 15,
                           cwd=JS_DIR)
    finally:
        os.unlink(path)
    assert r.returncode == 0, f"node {script} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-3000:]}"
    return json.loads(r.stdout)


def produce_kafkajs(bootstrap: str, topic: str, messages: Sequence[Msg], *, acks="all",
                    compression: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                    extra: Optional[dict] = None) -> list[Optional[tuple[int, int]]]:
    spec = {"bootstrap": bootstrap, "topic": topic, "acks": -1 if acks == "all" else int(acks),
            "compression": compression,
            "messages": [{"key": _b64(m.key), "value": _b64(m.value),
                          "headers": [[k, _b64(v)] for k, v in m.headers]} for m in messages]}
    spec.update(extra or {})
    out = run_js("produce.js", spec, timeout)
    return [(o["partition"], o["offset"]) for o in out]


def _recs_from_js(out) -> list[Rec]:
    return [Rec(o["partition"], o["offset"], _unb64(o["key"]), _unb64(o["value"]),
                tuple((k, _unb64(v) or b"") for k, v in o["headers"]), o.get("timestamp")) for o in out]


def consume_kafkajs(bootstrap: str, topic: str, count: int, *, timeout: float = DEFAULT_TIMEOUT,
                    extra: Optional[dict] = None) -> list[Rec]:
    spec = {"bootstrap": bootstrap, "topic": topic, "count": count, "timeoutMs": int(timeout * 1000)}
    spec.update(extra or {})
    return _recs_from_js(run_js("consume.js", spec, timeout + 10))


PRODUCERS: dict[str, Callable] = {
    "confluent": produce_confluent,
    "kafka_python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
    "kcat": produce_kcat,
    "kafkajs": produce_kafkajs,
}
CONSUMERS: dict[str, Callable] = {
    "confluent": consume_confluent,
    "kafka_python": consume_kafka_python,
    "aiokafka": consume_aiokafka,
    "kcat": consume_kcat,
    "kafkajs": consume_kafkajs,
}
